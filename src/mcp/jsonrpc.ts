/**
 * JSON-RPC 2.0 message parsing and classification for MCP.
 *
 * Client bodies are read by the strict reader (strict-json.ts): duplicate member names,
 * `__proto__` members, lone surrogates and shapes over `limits.json` are refused, so the message
 * judged here is the message the upstream reads from the same bytes. Messages from upstreams are
 * read with JSON.parse. Either way the value is used as data only: fields are read as own
 * properties, and nothing here merges it into other objects.
 *
 * Stricter than plain JSON-RPC where MCP is stricter (schema `RequestId = string | integer`; SDK v2
 * `z.number().int()`, safe integers only): a numeric id must be a safe integer. That also keeps
 * `requestIdKey` collision-free, since two different wire ids beyond 2^53 would parse to one number.
 * Error responses may have no id (or `null`): JSON-RPC 2.0 §5 and MCP allow that for errors that
 * cannot be tied to a request. Pure: no I/O.
 */
import { GatewayError } from "../errors/errors.ts";
import { DEFAULT_JSON_LIMITS, type JsonLimits, parseStrictJson } from "./strict-json.ts";

export type RpcId = string | number;
export type RpcParams = Record<string, unknown> | unknown[];

export interface RpcRequest {
  jsonrpc: "2.0";
  id: RpcId;
  method: string;
  params?: RpcParams;
}

export interface RpcNotification {
  jsonrpc: "2.0";
  method: string;
  params?: RpcParams;
}

export interface RpcErrorObject {
  code: number;
  message: string;
  data?: unknown;
}

export interface RpcResultResponse {
  jsonrpc: "2.0";
  id: RpcId;
  result: unknown;
}

export interface RpcErrorResponse {
  jsonrpc: "2.0";
  /** Absent or `null` when the error could not be tied to a request. */
  id?: RpcId | null;
  error: RpcErrorObject;
}

export type RpcResponse = RpcResultResponse | RpcErrorResponse;
export type RpcMessage = RpcRequest | RpcNotification | RpcResponse;

export function isRequest(msg: RpcMessage): msg is RpcRequest {
  return "method" in msg && "id" in msg;
}

export function isNotification(msg: RpcMessage): msg is RpcNotification {
  return "method" in msg && !("id" in msg);
}

export function isResponse(msg: RpcMessage): msg is RpcResponse {
  return !("method" in msg);
}

export function isErrorResponse(msg: RpcMessage): msg is RpcErrorResponse {
  return "error" in msg && !("method" in msg);
}

export interface ParseBodyOptions {
  /** Accept a JSON array (2025-03-26 batching). When false an array is EDGE_BATCH_REJECTED. */
  allowBatch: boolean;
  /** Largest accepted batch (elements). Default 100. */
  maxBatchSize?: number;
  /** Bounds of the body's JSON (config `limits.json`). Default DEFAULT_JSON_LIMITS. */
  limits?: JsonLimits;
}

export interface ParsedBody {
  messages: RpcMessage[];
  batch: boolean;
}

export const DEFAULT_MAX_BATCH_SIZE = 100;

/** Fatal on invalid UTF-8; keeps a BOM so JSON.parse rejects it as it does for a string body. */
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * A body's text. Invalid UTF-8 (encoded surrogates and overlong forms included) →
 * EDGE_INVALID_UNICODE. Strict: U+FFFD replacement here could read differently from the upstream's
 * decoder. For valid UTF-8 the same text as `toString("utf8")`.
 */
export function decodeBody(body: Buffer): string {
  try {
    return strictUtf8.decode(body);
  } catch (err) {
    throw new GatewayError("EDGE_INVALID_UNICODE", "The body is not valid UTF-8.", { cause: err });
  }
}

/**
 * Parses a POST body with the strict reader. Invalid UTF-8 or a lone surrogate →
 * EDGE_INVALID_UNICODE; invalid JSON → EDGE_PARSE_ERROR; a repeated member name →
 * EDGE_JSON_DUPLICATE_MEMBER; `__proto__` → EDGE_JSON_FORBIDDEN_MEMBER; over `opts.limits` →
 * EDGE_JSON_LIMIT; an array when `!allowBatch` →
 * EDGE_BATCH_REJECTED; anything that is not a valid JSON-RPC 2.0 message (or an empty or oversized
 * batch) → EDGE_INVALID_REQUEST, echoing the id when it was readable (single messages only).
 */
export function parseBody(body: Buffer | string, opts: ParseBodyOptions): ParsedBody {
  const text = typeof body === "string" ? body : decodeBody(body);
  const value = parseStrictJson(text, opts.limits ?? DEFAULT_JSON_LIMITS);
  if (Array.isArray(value)) {
    if (!opts.allowBatch) {
      throw new GatewayError(
        "EDGE_BATCH_REJECTED",
        "JSON-RPC batches are not accepted on this protocol version.",
      );
    }
    const n = value.length;
    if (n === 0) throw new GatewayError("EDGE_INVALID_REQUEST", "Empty JSON-RPC batch.");
    const max = opts.maxBatchSize ?? DEFAULT_MAX_BATCH_SIZE;
    if (n > max)
      throw new GatewayError("EDGE_INVALID_REQUEST", `JSON-RPC batch has more than ${max} messages.`);
    const messages = new Array<RpcMessage>(n);
    for (let i = 0; i < n; i++) {
      messages[i] = check(value[i], `batch element ${i}: `, false);
    }
    return { messages, batch: true };
  }
  return { messages: [check(value, "", true)], batch: false };
}

/** Parses one message from upstream (a JSON body or an SSE `data` payload). Arrays are EDGE_BATCH_REJECTED. */
export function parseMessage(text: string): RpcMessage {
  const value = parseJson(text);
  if (Array.isArray(value))
    throw new GatewayError("EDGE_BATCH_REJECTED", "Expected one JSON-RPC message, got an array.");
  return check(value, "", true);
}

/** Validates an already-parsed JSON value as one JSON-RPC message (throws like `parseMessage`). */
export function toMessage(value: unknown): RpcMessage {
  return check(value, "", true);
}

/** `echo`: put the message's id on the error (not for batch elements: the whole batch is rejected). */
function check(value: unknown, where: string, echo: boolean): RpcMessage {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw invalid(`${where}a JSON-RPC message must be an object.`, null);
  }
  const o = value as Record<string, unknown>;
  const hasId = Object.hasOwn(o, "id");
  const rawId = hasId ? o["id"] : undefined;
  const idOk = hasId && isValidId(rawId);
  const id = echo && idOk ? (rawId as RpcId) : null;
  if (o["jsonrpc"] !== "2.0") {
    throw invalid(`${where}"jsonrpc" must be "2.0".`, id);
  }
  const hasResult = Object.hasOwn(o, "result");
  const hasError = Object.hasOwn(o, "error");

  if (Object.hasOwn(o, "method")) {
    const method = o["method"];
    if (typeof method !== "string" || method.length === 0)
      throw invalid(`${where}"method" must be a non-empty string.`, id);
    if (hasResult || hasError)
      throw invalid(`${where}a message cannot have both "method" and "result"/"error".`, id);
    if (hasId && !idOk) throw invalid(`${where}"id" must be a string or an integer.`, null);
    if (Object.hasOwn(o, "params")) {
      const params = o["params"];
      if (params === null || typeof params !== "object") {
        throw invalid(`${where}"params" must be an object or an array.`, id);
      }
    }
    return o as unknown as RpcRequest | RpcNotification;
  }

  if (hasResult) {
    if (hasError) throw invalid(`${where}a response cannot have both "result" and "error".`, id);
    if (!hasId) throw invalid(`${where}a response must have an "id".`, null);
    if (!idOk) throw invalid(`${where}"id" must be a string or an integer.`, null);
    return o as unknown as RpcResultResponse;
  }
  if (hasError) {
    if (hasId && rawId !== null && !idOk)
      throw invalid(`${where}"id" must be a string, an integer or null.`, null);
    const err = o["error"];
    if (err === null || typeof err !== "object" || Array.isArray(err)) {
      throw invalid(`${where}"error" must be an object.`, id);
    }
    const e = err as Record<string, unknown>;
    if (!Number.isSafeInteger(e["code"])) {
      throw invalid(`${where}"error.code" must be an integer.`, id);
    }
    if (typeof e["message"] !== "string") {
      throw invalid(`${where}"error.message" must be a string.`, id);
    }
    return o as unknown as RpcErrorResponse;
  }
  throw invalid(`${where}a JSON-RPC message needs "method", "result" or "error".`, id);
}

/**
 * A collision-free map key for a request id: numbers and strings never collide (`n:1` vs `s:1`).
 * Numbers are safe integers after `parseBody`, so equal keys mean equal wire ids.
 */
export function requestIdKey(id: RpcId): string {
  return typeof id === "number" ? `n:${id}` : `s:${id}`;
}

function isValidId(v: unknown): boolean {
  return typeof v === "string" || Number.isSafeInteger(v);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new GatewayError("EDGE_PARSE_ERROR", undefined, { cause: err });
  }
}

function invalid(message: string, id: RpcId | null): GatewayError {
  return new GatewayError("EDGE_INVALID_REQUEST", `Invalid JSON-RPC message: ${message}`, { rpcId: id });
}
