import type { IdentitySigner } from "../auth/identity.ts";
import type { EraKnown } from "../context.ts";
import { GatewayError } from "../errors/errors.ts";
import { single } from "../mcp/hygiene.ts";
import { isResponse, type RpcId, requestIdKey } from "../mcp/jsonrpc.ts";
import { formatEvent } from "../mcp/sse.ts";
import { Sink } from "../session/streams.ts";
import { abortedWith, type Deadlines } from "../upstream/deadline.ts";
import { forwardContext, requestIds, requestKeys } from "./exchange.ts";
import { upstreamHeaders } from "./identity.ts";
import { answer, answerError, sendAccepted, sendJson, sendPassthrough, sseHeaders } from "./respond.ts";

/**
 * 2026-07-28: no session, any healthy instance, and a client that goes away cancels the request
 * (closing the response stream is cancellation), so the upstream request is aborted with it.
 */
export async function forwardStateless(
  ctx: EraKnown,
  identity: IdentitySigner | undefined,
  deadlines: Deadlines,
): Promise<void> {
  const messages = ctx.messages;
  // List-result cache (2026-07-28 `ttlMs` / `cacheScope`, looked up by the `cache` stage): a miss
  // stores the upstream's answer on its way.
  const cached = ctx.cached;
  const abort = new AbortController();
  const onGone = () => abort.abort(new GatewayError("EDGE_UPSTREAM_ERROR", "client went away"));
  ctx.clientGone.addEventListener("abort", onGone, { once: true });
  // `subscriptions/listen` is the long-lived notification stream of 2026-07-28: it lasts as long
  // as the client keeps it open, so the per-request deadline does not apply to it.
  const longLived =
    messages.length === 1 && (messages[0] as { method?: string }).method === "subscriptions/listen";
  const signal = longLived
    ? abort.signal
    : AbortSignal.any([abort.signal, deadlines.signal(ctx.route.config.upstream.timeout)]);
  const fctx = forwardContext(
    ctx,
    single(ctx.req, "mcp-protocol-version"),
    signal,
    await upstreamHeaders(ctx, identity),
  );
  const keys = requestKeys(messages);
  try {
    const first = await ctx.route.upstream.stateless(ctx.body, messages, fctx);
    const reply = cached && first.kind === "stream" ? cached.tap(first) : first;
    if (reply.kind === "passthrough") return sendPassthrough(ctx, reply);
    if (reply.kind === "accepted") return sendAccepted(ctx.res);
    if (reply.kind === "json") {
      if (isResponse(reply.message) && !keys.has(requestIdKey(reply.message.id as RpcId))) {
        throw new GatewayError("EDGE_UPSTREAM_BAD_RESPONSE", "The upstream answered another request.");
      }
      cached?.fill(reply.message, reply.data);
      return sendJson(ctx.res, answer(ctx, reply.data, reply.message));
    }
    ctx.res.writeHead(200, sseHeaders());
    const sink = new Sink(ctx.res);
    ctx.clientGone.addEventListener("abort", () => reply.close(), { once: true });
    try {
      for await (const ev of reply.events) {
        if (ev.message && isResponse(ev.message) && !keys.has(requestIdKey(ev.message.id as RpcId))) continue;
        // No resumability in 2026-07-28: upstream ids are not passed on, so id-only events carry nothing.
        if (ev.data === "" && ev.retry === undefined) continue;
        const data = ev.message && isResponse(ev.message) ? answer(ctx, ev.data, ev.message) : ev.data;
        const frame = formatEvent({
          ...(data !== "" ? { data } : {}),
          ...(ev.retry !== undefined ? { retry: ev.retry } : {}),
        });
        if (!sink.write(frame)) {
          break;
        }
      }
    } catch (err) {
      if (!abort.signal.aborted) {
        const ge =
          abortedWith(signal, err) ??
          (err instanceof GatewayError
            ? err
            : new GatewayError("EDGE_UPSTREAM_ERROR", undefined, { cause: err }));
        for (const id of requestIds(messages)) {
          if (ctx.outcomes?.has(requestIdKey(id))) continue;
          sink.write(formatEvent({ data: answerError(ctx, id, ge) }));
          // The drain ended the call: recorded as aborted by the edge.
          if (ge.code === "EDGE_DRAINED")
            (ctx.outcomes ??= new Map()).set(requestIdKey(id), { kind: "aborted", code: ge.code });
        }
      }
    } finally {
      reply.close();
      sink.end();
    }
  } finally {
    ctx.clientGone.removeEventListener("abort", onGone);
    // 2026-07-28: a client that went away cancelled its requests.
    if (abort.signal.aborted) {
      for (const id of requestIds(messages)) {
        const key = requestIdKey(id);
        if (!ctx.outcomes?.has(key)) (ctx.outcomes ??= new Map()).set(key, { kind: "aborted" });
      }
    }
  }
}
