import type { ServerResponse } from "node:http";
import type { GatewayError } from "../errors/errors.ts";
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

/** Upstream error answers go to the client as they came: status, content type and body. */
export function sendPassthrough(
  res: ServerResponse,
  reply: Extract<UpstreamReply, { kind: "passthrough" }>,
): void {
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
