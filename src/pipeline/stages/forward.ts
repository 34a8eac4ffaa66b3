import { CACHE_HEADER, type ListCache } from "../../cache/list-cache.ts";
import type { Authenticated, EraKnown, Parsed, Sessioned } from "../../context.ts";
import type { LegacyBridge } from "../../forward/legacy.ts";
import { answerFromCache } from "../../forward/respond.ts";
import type { Forwarder } from "../../forward/streamable.ts";
import { isRequest, type RpcRequest } from "../../mcp/jsonrpc.ts";
import type { SessionRecord } from "../../store/types.ts";
import type { Stage } from "../compose.ts";

const FILE = "src/pipeline/stages/forward.ts";

/**
 * List-result cache (src/cache): a hit is answered here, without the upstream (the session was
 * checked already); a miss is handed to the forward stage, which stores the upstream's answer on
 * its way. `x-mcp-edge-cache: hit|miss` marks the requests the cache takes part in.
 */
export function cache(
  listCache: ListCache | undefined,
): Stage<EraKnown & { session: SessionRecord | undefined }> {
  return {
    name: "cache",
    does: "Answers a list request (tools/list, resources/list, …) from the cache when it may; a miss is stored on its way back.",
    codes: [],
    file: FILE,
    around: listCache
      ? (ctx, next) => {
          if (ctx.req.method !== "POST") return next();
          const lookup = listCache.lookup(ctx);
          if (!lookup) return next();
          ctx.res.setHeader(CACHE_HEADER, lookup.hit ? "hit" : "miss");
          if (lookup.answer !== undefined) return answerFromCache(ctx, lookup.answer);
          ctx.cached = lookup;
          return next();
        }
      : undefined,
  };
}

function initializeOf(ctx: Parsed): RpcRequest | undefined {
  const first = ctx.messages[0];
  return first && isRequest(first) && first.method === "initialize" ? first : undefined;
}

function hasSession(ctx: EraKnown & { session: SessionRecord | undefined }): ctx is Sessioned {
  return ctx.session !== undefined;
}

/**
 * Forward (session era): initialize opens an upstream session and the edge's own; other POSTs,
 * GET streams and DELETE go to the session's upstream (src/forward/streamable.ts).
 */
export function forwardSession(
  forwarder: Forwarder,
): Stage<EraKnown & { session: SessionRecord | undefined }> {
  return {
    name: "forward",
    does: "Sends the request to the session's upstream and relays the answer (JSON or a resumable SSE stream); initialize creates the session; GET holds the standalone stream; DELETE ends the session.",
    codes: [
      "EDGE_UPSTREAM_UNAVAILABLE",
      "EDGE_UPSTREAM_ERROR",
      "EDGE_UPSTREAM_BAD_RESPONSE",
      "EDGE_UPSTREAM_TIMEOUT",
      "EDGE_SESSION_BACKEND_LOST",
      "EDGE_STREAM_EXPIRED",
      "EDGE_STREAM_CONFLICT",
      "EDGE_EVENT_ID_INVALID",
      "EDGE_RESULT_TOO_LARGE",
      "EDGE_PROCESS_LIMIT",
    ],
    file: FILE,
    run: (ctx) => {
      const init = ctx.req.method === "POST" ? initializeOf(ctx) : undefined;
      if (init) return forwarder.initialize(ctx, init);
      if (!hasSession(ctx)) throw new Error("forward: the session stage did not run");
      if (ctx.req.method === "POST") return forwarder.post(ctx);
      if (ctx.req.method === "GET") return forwarder.get(ctx);
      return forwarder.delete(ctx);
    },
  };
}

/**
 * Forward (2026-07-28): no session, any healthy instance; a client that goes away cancels the
 * request (closing the response stream is cancellation), so the upstream request is aborted.
 */
export function forwardStateless(forwarder: Forwarder): Stage<EraKnown> {
  return {
    name: "forward",
    does: "Sends the request to a healthy upstream instance and relays the answer; the client closing its stream cancels the upstream request.",
    codes: [
      "EDGE_UPSTREAM_UNAVAILABLE",
      "EDGE_UPSTREAM_ERROR",
      "EDGE_UPSTREAM_BAD_RESPONSE",
      "EDGE_UPSTREAM_TIMEOUT",
    ],
    file: FILE,
    run: (ctx) => forwarder.stateless(ctx),
  };
}

/** Legacy HTTP+SSE (2024-11-05): `GET {route}/sse` opens the stream and names the messages URL. */
export function legacyOpen(legacy: LegacyBridge): Stage<Authenticated> {
  return {
    name: "legacy-open",
    does: "Opens the legacy SSE stream and sends its `endpoint` event (the session's messages URL).",
    codes: [],
    file: FILE,
    run: (ctx) => legacy.open(ctx),
  };
}

/** Legacy `POST {route}/messages?sessionId=…`: 202, the answer on the connection's stream. */
export function legacyMessage(legacy: LegacyBridge): Stage<Parsed> {
  return {
    name: "legacy-forward",
    does: "Finds the legacy connection of `sessionId` (this route, this principal), answers 202 and sends the upstream's answer on the connection's stream.",
    codes: ["EDGE_SESSION_NOT_FOUND", "EDGE_SESSION_REQUIRED", "EDGE_UPSTREAM_ERROR"],
    file: FILE,
    run: (ctx) => legacy.message(ctx),
  };
}
