import type { Attributes } from "@opentelemetry/api";
import { ERROR_CODES } from "../errors/codes.ts";
import { isRequest, type RpcMessage, requestIdKey } from "../mcp/jsonrpc.ts";
import { sessionHash } from "../lib/session-hash.ts";
import type { CallOutcome, RequestEndEvent, RequestFacts, SessionEvent } from "./channels.ts";

/**
 * The OpenTelemetry semantic conventions for MCP (semantic-conventions, docs/gen-ai/mcp.md): the
 * names of spans, attributes and histograms, and how one request to an MCP route maps onto them.
 * Tracing (spans), the Prometheus page and the OpenTelemetry meter all take them from here, so the
 * three agree on every name and value.
 *
 * The edge is the MCP server its clients talk to (SERVER spans, `mcp.server.*` metrics) and an MCP
 * client of its upstream (the CLIENT span of the upstream exchange).
 */

/** Explicit bucket boundaries (seconds) the conventions give both MCP duration histograms. */
export const MCP_DURATION_BUCKETS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300];

export const OPERATION_DURATION = "mcp.server.operation.duration";
export const SESSION_DURATION = "mcp.server.session.duration";

/** One MCP operation of a request: a JSON-RPC request or notification the client sent. */
export interface Operation {
  /** `mcp.method.name`. */
  method: string;
  /** `jsonrpc.request.id` (requests only, never for a null id). */
  requestId?: string;
  /** The request's id as a key of the request's outcomes (requests only). */
  key?: string;
  /** `gen_ai.tool.name` (tools/call) or `gen_ai.prompt.name` (prompts/get). */
  tool?: string;
  prompt?: string;
  /** `error.type`, when the operation failed: see `errorOf`. */
  errorType?: string;
  /** `rpc.response.status_code`: the JSON-RPC error code of the answer, when it was an error. */
  rpcCode?: string;
  /** The error's message, for the span status description. */
  errorMessage?: string;
}

function nameParam(m: RpcMessage): string | undefined {
  const name = (m as { params?: { name?: unknown } }).params?.name;
  return typeof name === "string" ? name : undefined;
}

/**
 * How an operation ended, as `error.type`: the JSON-RPC error code of an upstream error answer
 * (as a string, per the conventions), `tool_error` for a CallToolResult with `isError`, the
 * edge's own code (EDGE_RATE_LIMITED, ...: docs/errors.md) when the edge refused or failed the
 * request, `aborted` when the client went away, the HTTP status of an upstream's non-JSON-RPC
 * error answer; undefined when it succeeded.
 */
function errorOf(
  ev: RequestEndEvent,
  outcome: CallOutcome | undefined,
): Pick<Operation, "errorType" | "rpcCode" | "errorMessage"> {
  if (outcome?.kind === "result") return outcome.isError ? { errorType: "tool_error" } : {};
  if (outcome?.kind === "rpc_error")
    return { errorType: String(outcome.code), rpcCode: String(outcome.code) };
  if (outcome?.kind === "aborted") return { errorType: "aborted" };
  const e = ev.error;
  if (e) {
    const rpc = ERROR_CODES[e.code].rpc;
    return { errorType: e.code, ...(rpc !== null ? { rpcCode: String(rpc) } : {}), errorMessage: e.message };
  }
  if (ev.status === 0) return { errorType: "aborted" };
  if (ev.status >= 400) return { errorType: String(ev.status) };
  return {};
}

/** The operations of a body, named (method, request id, tool or prompt), before their outcome is known. */
export function namedOperations(messages: readonly RpcMessage[] | undefined): Operation[] {
  const ops: Operation[] = [];
  for (const m of messages ?? []) {
    if (!("method" in m) || typeof m.method !== "string") continue; // a response the client posted
    const op: Operation = { method: m.method };
    if (isRequest(m)) {
      op.key = requestIdKey(m.id);
      if (m.id !== null) op.requestId = String(m.id);
    }
    const name = nameParam(m);
    if (name !== undefined && m.method === "tools/call") op.tool = name;
    if (name !== undefined && m.method === "prompts/get") op.prompt = name;
    ops.push(op);
  }
  return ops;
}

/** The operations of a request that is over: one per JSON-RPC request or notification of its body. */
export function operationsOf(ev: RequestEndEvent): Operation[] {
  const facts = ev.request;
  const ops = namedOperations(facts.messages);
  const failed = ev.error !== undefined || ev.status >= 400 || ev.status === 0;
  for (const op of ops) {
    // A request's own outcome (what the client read for it); a notification fails with the POST.
    const outcome = op.key !== undefined ? facts.outcomes?.get(op.key) : undefined;
    if (op.key !== undefined || failed) Object.assign(op, errorOf(ev, outcome));
  }
  return ops;
}

/** `{mcp.method.name} {target}`: the target is the tool or prompt name when there is one. */
export function spanName(op: Operation): string {
  const target = op.tool ?? op.prompt;
  return target === undefined ? op.method : `${op.method} ${target}`;
}

/** The MCP protocol version a request speaks: its session's, its header, or what initialize asks. */
export function protocolVersionOf(facts: RequestFacts): string | undefined {
  if (facts.session) return facts.session.protocolVersion;
  const header = facts.headers["mcp-protocol-version"];
  if (typeof header === "string") return header;
  const first = facts.messages?.[0] as
    { method?: string; params?: { protocolVersion?: unknown } } | undefined;
  const asked = first?.method === "initialize" ? first.params?.protocolVersion : undefined;
  return typeof asked === "string" ? asked : undefined;
}

/** The session id a request is part of (its record's, else the one it presented). */
function sessionIdOf(facts: RequestFacts): string | undefined {
  if (facts.session) return facts.session.id;
  const h = facts.headers["mcp-session-id"];
  return typeof h === "string" && h.length > 0 && h.length <= 256 ? h : undefined;
}

/**
 * The attributes every operation of a request shares (the SERVER span's, the operation metric's):
 * protocol version, the session as its hash (`mcp.session.id`: the id itself is a bearer secret),
 * and the network the request came on. Names of things, never arguments or credentials.
 */
export function requestAttributes(facts: RequestFacts): Attributes {
  const a: Attributes = { "network.transport": "tcp", "network.protocol.name": "http" };
  if (facts.httpVersion) a["network.protocol.version"] = facts.httpVersion;
  const version = protocolVersionOf(facts);
  if (version) a["mcp.protocol.version"] = version;
  const sid = sessionIdOf(facts);
  if (sid) a["mcp.session.id"] = sessionHash(sid);
  return a;
}

/** The attributes of one operation (span and metric): method, tool or prompt, request id, error. */
export function operationAttributes(op: Operation, withRequestId: boolean): Attributes {
  const a: Attributes = { "mcp.method.name": op.method };
  if (op.tool !== undefined) {
    a["gen_ai.tool.name"] = op.tool;
    a["gen_ai.operation.name"] = "execute_tool";
  }
  if (op.prompt !== undefined) a["gen_ai.prompt.name"] = op.prompt;
  if (withRequestId && op.requestId !== undefined) a["jsonrpc.request.id"] = op.requestId;
  if (op.errorType !== undefined) a["error.type"] = op.errorType;
  if (op.rpcCode !== undefined) a["rpc.response.status_code"] = op.rpcCode;
  return a;
}

/**
 * `server.address` / `server.port` of the upstream instance that served a call (its URL's host;
 * never the path or credentials), `network.transport` `pipe` for a spawned stdio server.
 */
export function upstreamAttributes(facts: RequestFacts): Attributes {
  const kind = facts.route.upstream.kind;
  if (kind === "stdio") return { "network.transport": "pipe" };
  const a: Attributes = { "network.transport": "tcp", "network.protocol.name": "http" };
  const instance = facts.upstream?.instance;
  if (!instance) return a;
  try {
    const u = new URL(instance);
    a["server.address"] = u.hostname.replace(/^\[|\]$/g, "");
    a["server.port"] = Number(u.port || (u.protocol === "https:" ? 443 : 80));
  } catch {
    // not a URL: no address
  }
  return a;
}

/** Session ends that are errors (`error.type` of the session metric); the others are normal ends. */
export function sessionErrorType(ev: SessionEvent): string | undefined {
  return ev.reason === "backend lost" ? "backend_lost" : undefined;
}
