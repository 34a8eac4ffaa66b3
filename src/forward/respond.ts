import type { ServerResponse } from "node:http";
import { GatewayError } from "../errors/errors.ts";
import type { Logger } from "../observability/logger.ts";
import { ERROR_CODES } from "../errors/codes.ts";
import { errorBody } from "../errors/wire.ts";
import type { RequestContext } from "../context.ts";
import { isRequest, isResponse, type RpcId, type RpcMessage, requestIdKey } from "../mcp/jsonrpc.ts";
import type { CallOutcome } from "../observability/channels.ts";
import type { UpstreamReply } from "../upstream/types.ts";

/** Response headers of every SSE answer. `X-Accel-Buffering: no` keeps proxies in front from buffering. */
export function sseHeaders(sessionId?: string): Record<string, string> {
  const h: Record<string, string> = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  };
  if (sessionId) h["mcp-session-id"] = sessionId;
  return h;
}

/** How much of an upstream 5xx body the log keeps (characters, after redaction). */
export const LOGGED_5XX_BODY_CHARS = 2048;

/**
 * What of an upstream error body may reach a log line: credentials blanked (Authorization schemes,
 * JWTs, mcp-edge keys, passwords in URLs, `secret`/`token`/`password`-like fields in JSON, forms and
 * query strings),
 * then cut to LOGGED_5XX_BODY_CHARS.
 */
export function redactedBody(body: Buffer): string {
  const text = body.toString("utf8", 0, Math.min(body.length, 4 * LOGGED_5XX_BODY_CHARS));
  const redacted = text
    .replace(/\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]+/gi, "$1 [redacted]")
    .replace(/eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g, "[redacted]")
    .replace(/mcpe_[A-Za-z0-9_-]+/g, "[redacted]")
    .replace(/\b([a-z][a-z0-9+.-]*:\/\/[^:/\s@]*:)[^@\s/]+@/gi, "$1[redacted]@")
    .replace(
      /((?:\\?")?[A-Za-z_-]*(?:password|passwd|secret|token|api[_-]?key|authorization|cookie|credential)[A-Za-z_-]*(?:\\?")?\s*[:=]\s*)(\\?"(?:[^"\\]|\\.)*?\\?"|[^\s,;&}\]"\\]+)/gi,
      "$1[redacted]",
    );
  return redacted.length > LOGGED_5XX_BODY_CHARS ? `${redacted.slice(0, LOGGED_5XX_BODY_CHARS)}…` : redacted;
}

/**
 * Upstream 4xx answers go to the client as they came: status, content type and body (clients read
 * them to detect the protocol era). A 5xx body is never relayed — it carries stack traces and
 * secrets: the client gets EDGE_UPSTREAM_SERVER_ERROR naming the status (thrown, so the one error
 * answer carries the request's id), the log a bounded, redacted copy.
 */
export function sendPassthrough(
  ctx: { readonly res: ServerResponse; readonly log: Logger },
  reply: Extract<UpstreamReply, { kind: "passthrough" }>,
): void {
  const res = ctx.res;
  if (reply.status >= 500) {
    ctx.log.warn(
      { upstreamStatus: reply.status, upstreamBody: redactedBody(reply.body) },
      "upstream answered a server error; its body is not relayed",
    );
    throw new GatewayError("EDGE_UPSTREAM_SERVER_ERROR", `The upstream answered HTTP ${reply.status}.`, {
      data: { upstreamStatus: reply.status },
    });
  }
  const headers: Record<string, string | number> = { "content-length": reply.body.length };
  if (reply.contentType) headers["content-type"] = reply.contentType;
  res.writeHead(reply.status, headers);
  res.end(reply.body);
}

export function sendAccepted(res: ServerResponse, sessionId?: string): void {
  res.writeHead(202, sessionId ? { "mcp-session-id": sessionId } : {});
  res.end();
}

export function sendJson(res: ServerResponse, data: string, sessionId?: string): void {
  const headers: Record<string, string | number> = {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(data),
  };
  if (sessionId) headers["mcp-session-id"] = sessionId;
  res.writeHead(200, headers);
  res.end(data);
}

/** The JSON-RPC error response that stands in for an answer the upstream never gave. */
export function errorResponseData(id: RpcId, err: GatewayError): string {
  return errorBody(err.withRpcId(id));
}

/**
 * The edge's own JSON-RPC error standing in for an answer (the upstream failed, or its answer was
 * over the result maximum): its outcome is noted with the edge's code, for the audit record.
 */
export function answerError(ctx: RequestContext, id: RpcId, err: GatewayError): string {
  const data = errorResponseData(id, err);
  (ctx.outcomes ??= new Map()).set(requestIdKey(id), {
    kind: "rpc_error",
    code: ERROR_CODES[err.code].rpc ?? -32000,
    edgeCode: err.code,
  });
  return data;
}

/** How a response ended its request, as the client sees it (audit and metrics read it). */
export function outcomeOf(msg: RpcMessage): CallOutcome | undefined {
  if (!isResponse(msg)) return undefined;
  const error = (msg as { error?: { code?: unknown } }).error;
  if (error) return { kind: "rpc_error", code: typeof error.code === "number" ? error.code : -32603 };
  const result = (msg as { result?: { isError?: unknown } }).result;
  return { kind: "result", isError: result?.isError === true };
}

/**
 * Every answer the client receives passes here: its outcome is noted on the context, and it is
 * rewritten when the principal needs it (tools/list filtered to the tools it may call).
 */
export function answer(ctx: RequestContext, data: string, msg: RpcMessage | null | undefined): string {
  const outcome = msg ? outcomeOf(msg) : undefined;
  const id = msg && isResponse(msg) ? msg.id : undefined;
  if (outcome && (typeof id === "string" || typeof id === "number")) {
    (ctx.outcomes ??= new Map()).set(requestIdKey(id), outcome);
  }
  return ctx.rewrite?.(data) ?? data;
}

/** Answers a request from the list cache: JSON, filtered like any upstream answer, outcomes noted. */
export function answerFromCache(ctx: RequestContext, cached: string): void {
  for (const m of ctx.messages ?? []) {
    if (isRequest(m))
      (ctx.outcomes ??= new Map()).set(requestIdKey(m.id), { kind: "result", isError: false });
  }
  sendJson(ctx.res, ctx.rewrite?.(cached) ?? cached);
}
