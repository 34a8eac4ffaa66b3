import type { RequestContext } from "../context.ts";
import { isRequest, type RpcId, type RpcMessage, requestIdKey } from "../mcp/jsonrpc.ts";
import type { ForwardContext } from "../upstream/types.ts";

/** The forward context of a call, its upstream headers (upstreamHeaders) already made. */
export function forwardContext(
  ctx: RequestContext,
  protocolVersion: string | undefined,
  signal: AbortSignal,
  headers: Record<string, string>,
): ForwardContext {
  const fctx: ForwardContext = {
    requestId: ctx.requestId,
    protocolVersion,
    headers,
    signal,
    tenant: ctx.principal?.tenant ?? null,
    principal: ctx.principal?.id ?? null,
    egress: undefined,
    credentials: ctx.credentials,
  };
  // The route's interceptors, composed once at boot (src/boot/): tracing marks the start of the
  // upstream exchange and, when on, puts its `traceparent` in the headers; on a route that spawns
  // processes behind the egress proxy, the recorder notes their outbound requests on the call.
  for (const intercept of ctx.route.interceptors) intercept(ctx, fctx);
  return fctx;
}

/** Request ids of the requests in a POST: the answers the stream must carry, and only those. */
export function requestKeys(messages: RpcMessage[]): Set<string> {
  const keys = new Set<string>();
  for (const m of messages) if (isRequest(m)) keys.add(requestIdKey(m.id));
  return keys;
}

/**
 * Whether `id` is the id of a request of the POST (same test as comparing `requestIdKey`s,
 * without building the keys): an answer must be to one of them.
 */
export function asksFor(messages: RpcMessage[], id: RpcId): boolean {
  for (const m of messages) {
    if (!isRequest(m)) continue;
    const own = m.id;
    if (typeof own === "number" ? own === id : typeof id !== "number" && `${own}` === `${id}`) return true;
  }
  return false;
}

/** Whether the POST holds a request (not only notifications and responses). */
export function hasRequest(messages: RpcMessage[]): boolean {
  for (const m of messages) if (isRequest(m)) return true;
  return false;
}

export function requestIds(messages: RpcMessage[]): RpcId[] {
  return messages.filter(isRequest).map((m) => m.id);
}
