import type { EraKnown, Parsed } from "../../context.ts";
import { GatewayError } from "../../errors/errors.ts";
import type { GetOrder } from "../../forward/get-order.ts";
import { checkSessionId, single, validSessionId } from "../../mcp/hygiene.ts";
import { isRequest } from "../../mcp/jsonrpc.ts";
import { type SessionManager, sessionOwner } from "../../session/manager.ts";
import type { SessionRecord } from "../../store/types.ts";
import type { Stage } from "../compose.ts";

const FILE = "src/pipeline/stages/session.ts";

function isInitialize(ctx: Parsed): boolean {
  const first = ctx.messages[0];
  return first !== undefined && isRequest(first) && first.method === "initialize";
}

/**
 * Distributed mode: a session record this instance has no fresh copy of starts loading now, so its
 * read leaves with the rate-limit decision in one Redis round trip. A read only: `session` decides.
 */
export function prefetchSession(sessions: SessionManager, distributed: boolean): Stage<EraKnown> {
  return {
    name: "session-prefetch",
    does: "Distributed mode: starts reading the session record so that it shares the rate-limit decision's round trip (a read; nothing is decided).",
    codes: [],
    file: FILE,
    run: distributed
      ? (ctx) => {
          if (isInitialize(ctx)) return;
          const id = ctx.req.headers["mcp-session-id"];
          if (typeof id === "string" && validSessionId(id)) sessions.prefetch(id);
        }
      : undefined,
  };
}

/** While the instance drains, no new session starts here (503: the client retries elsewhere). */
export function drain(isDraining: () => boolean): Stage<Parsed> {
  return {
    name: "drain",
    does: "While the instance drains: a new session (initialize, legacy SSE stream) is refused with 503.",
    codes: ["EDGE_DRAINING"],
    file: FILE,
    run: (ctx) => {
      if (!isDraining()) return;
      if (ctx.endpoint === "legacy-sse" || isInitialize(ctx)) throw new GatewayError("EDGE_DRAINING");
    },
  };
}

/**
 * Session (session era): the id must name a live session of this route owned by this principal;
 * anything else is 404, a missing id 400 (MCP transports, "Session Management"). An initialize has
 * none yet: a session that could not be stored would be lost, so it is refused (503) before the
 * upstream opens one.
 */
export function session(sessions: SessionManager): Stage<EraKnown, { session: SessionRecord | undefined }> {
  return {
    name: "session",
    does: "Loads the session named by Mcp-Session-Id (this route, this principal, not idle) or, for initialize, checks that a new one can be stored; a batch on a session whose version has no batches is refused.",
    codes: [
      "EDGE_SESSION_REQUIRED",
      "EDGE_SESSION_ID_INVALID",
      "EDGE_SESSION_NOT_FOUND",
      "EDGE_STORE_UNAVAILABLE",
      "EDGE_BATCH_REJECTED",
    ],
    file: FILE,
    run: (ctx) => {
      if (isInitialize(ctx)) {
        sessions.assertCanOpen();
        return;
      }
      const id = single(ctx.req, "mcp-session-id");
      if (id === undefined) throw new GatewayError("EDGE_SESSION_REQUIRED");
      checkSessionId(id);
      return sessions.load(ctx.route, id, sessionOwner(ctx.principal)).then((rec) => {
        // JSON-RPC batches exist only in 2025-03-26 (removed by 2025-06-18).
        if (ctx.batch && rec.protocolVersion >= "2025-06-18") throw new GatewayError("EDGE_BATCH_REJECTED");
        ctx.session = rec;
      });
    },
  };
}

/** A POST of a session whose standalone GET is being opened upstream waits for it (bounded). */
export function getOrder(order: GetOrder): Stage<EraKnown & { session: SessionRecord | undefined }> {
  return {
    name: "get-order",
    does: "A POST waits (≤ 2 s) while its session's GET stream is still opening upstream, so the server sees them in the client's order.",
    codes: [],
    file: FILE,
    run: (ctx) => {
      if (ctx.req.method !== "POST" || !ctx.session) return;
      return order.wait(ctx.session.id);
    },
  };
}
