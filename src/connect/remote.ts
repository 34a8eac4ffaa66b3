/**
 * What the bridge's transports toward the remote server share: the exchange of one client request,
 * the errors a transport reports, the auth hook, retry timing and an SSE reader.
 */
import { ERROR_CODES, type ErrorCode } from "../errors/codes.ts";
import { SseParser, type SseEvent } from "../mcp/sse.ts";
import type { RpcErrorObject, RpcMessage, RpcRequest } from "../mcp/jsonrpc.ts";
import type { HttpResponse } from "./http.ts";
import type { ConnectLog } from "./log.ts";

/** One client request on its way to the server; `answered` flips when its response was delivered. */
export interface Exchange {
  readonly msg: RpcRequest;
  readonly key: string;
  answered: boolean;
  /** Resolves when the response was delivered to the client (by whatever stream carried it). */
  readonly done: Promise<void>;
}

/**
 * The request may have reached the server, and its answer is lost (the connection broke after it
 * was sent, or the server lost the session while it ran). The bridge re-sends it only when it is
 * safe to repeat (RFC 9110 §9.2.2); a `tools/call` is answered with an error instead.
 */
export class LostError extends Error {
  override readonly name = "LostError";
}

/**
 * The bridge's own error for the desktop client: the JSON-RPC code of `code` in the one table
 * (src/errors/codes.ts) and `data.code` = the stable code, as the edge's wire errors carry it.
 */
export function bridgeError(
  code: ErrorCode,
  message: string,
  data: Record<string, unknown> = {},
): AnswerError {
  return new AnswerError({ code: ERROR_CODES[code].rpc ?? -32000, message, data: { code, ...data } });
}

/** Answer the client's request with this JSON-RPC error (the server's, or the bridge's own). */
export class AnswerError extends Error {
  override readonly name = "AnswerError";
  readonly rpc: RpcErrorObject;
  constructor(rpc: RpcErrorObject) {
    super(rpc.message);
    this.rpc = rpc;
  }
}

export interface AuthHook {
  /** Headers for the next request (`Authorization` when there is a token; may wait for a login). */
  headers(): Promise<Record<string, string>>;
  /**
   * A 401 came back for a request sent with `sent` (the Authorization value, if any). Refreshes
   * (once per token) or logs in. Resolves true when a retry may succeed, false when auth is not
   * something the bridge can fix (no OAuth offered): the 401 is then the answer.
   */
  onUnauthorized(res: HttpResponse, sent: string | undefined): Promise<boolean>;
  /** A 403; true when a step-up authorization happened and a retry may succeed. */
  onForbidden(res: HttpResponse): Promise<boolean>;
}

export const NO_AUTH: AuthHook = {
  headers: async () => ({}),
  onUnauthorized: async () => false,
  onForbidden: async () => false,
};

export interface TransportHooks {
  /** Every message the server sends (responses, requests, notifications), in order. */
  deliver(msg: RpcMessage): void;
  log: ConnectLog;
}

/** Reconnect timing: exponential backoff with jitter, bounded. */
export interface RetryPolicy {
  /** First delay (ms). Default 250. */
  initialDelay: number;
  /** Largest delay (ms). Default 5000. */
  maxDelay: number;
  /** How long one request keeps trying to reach an unreachable server before it fails (ms). Default 60 s. */
  giveUpAfter: number;
}

export const DEFAULT_RETRY: RetryPolicy = { initialDelay: 250, maxDelay: 5000, giveUpAfter: 60_000 };

export function backoff(policy: RetryPolicy, attempt: number): number {
  const base = Math.min(policy.maxDelay, policy.initialDelay * 2 ** Math.min(attempt, 16));
  return Math.round(base / 2 + (Math.random() * base) / 2);
}

export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Errors where nothing reached the server: safe to retry any request. */
export function isConnectFailure(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  return (
    code === "ECONNREFUSED" ||
    code === "EHOSTUNREACH" ||
    code === "ENETUNREACH" ||
    code === "ENOTFOUND" ||
    code === "EAI_AGAIN" ||
    code === "UND_ERR_CONNECT_TIMEOUT"
  );
}

/**
 * Requests that may be repeated without a second effect (reads, lists, the handshake). A
 * `tools/call` is not: a tool may write. Unknown methods are treated as unsafe.
 */
const SAFE_METHODS = new Set([
  "initialize",
  "ping",
  "tools/list",
  "resources/list",
  "resources/templates/list",
  "resources/read",
  "resources/subscribe",
  "resources/unsubscribe",
  "prompts/list",
  "prompts/get",
  "completion/complete",
  "logging/setLevel",
  "server/discover",
  "tasks/get",
  "tasks/list",
  "tasks/result",
]);

export function isSafeToRepeat(method: string): boolean {
  return SAFE_METHODS.has(method);
}

/** Parsed SSE events of a response body, as they arrive. */
export async function* sseEvents(res: HttpResponse): AsyncGenerator<SseEvent> {
  const parser = new SseParser();
  for await (const chunk of res.body) {
    for (const ev of parser.push(chunk)) yield ev;
  }
}

/** The JSON-RPC error object of a JSON body, when it is one. */
export function rpcErrorOf(text: string): RpcErrorObject | undefined {
  try {
    const v = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; data?: unknown } };
    const e = v?.error;
    if (e && typeof e.code === "number" && typeof e.message === "string") {
      return { code: e.code, message: e.message, ...(e.data !== undefined ? { data: e.data } : {}) };
    }
  } catch {
    // not JSON
  }
  return undefined;
}

/** A JSON-RPC error for an HTTP answer that is not the request's answer. */
export function httpError(status: number, text: string): AnswerError {
  const rpc = rpcErrorOf(text);
  if (rpc) return new AnswerError(rpc);
  return bridgeError("EDGE_CONNECT_HTTP_ERROR", `The server answered HTTP ${status}.`, {
    status,
    body: text.slice(0, 500),
  });
}
