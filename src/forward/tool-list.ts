/**
 * The edge's own `tools/list` to an upstream, for the `tool-list` stage when it has no complete
 * view of the server's tools for the call's context: every page, through the same path the call
 * will take (the session's upstream session, or a 2026-07-28 request with the call's `_meta`), with
 * the same identity and credentials. The answer fills the tool catalog (src/cache/tool-catalog.ts).
 */
import { randomUUID } from "node:crypto";
import { type ToolCatalog, type ToolView, toolPage } from "../cache/tool-catalog.ts";
import { GatewayError } from "../errors/errors.ts";
import { isErrorResponse, isResponse, type RpcMessage, type RpcRequest } from "../mcp/jsonrpc.ts";
import type { Route } from "../context.ts";
import type { SessionManager } from "../session/manager.ts";
import type { SessionRecord } from "../store/types.ts";
import { type ForwardContext, type UpstreamReply, UpstreamSessionLost } from "../upstream/types.ts";

/** Pages read at most; a longer list stays incomplete (names past it are unknown). */
const MAX_PAGES = 100;

/** Sends one request of the edge's own (its JSON text and parsed form) on the call's path. */
export type SendOwn = (body: string, request: RpcRequest) => Promise<UpstreamReply>;

/**
 * Posts the edge's own request on a session's upstream session; a session lost upstream is
 * re-established by the route's policy and the request sent once more (nothing reached the lost one).
 */
export async function sendInSession(
  sessions: SessionManager,
  route: Route,
  rec: SessionRecord,
  body: string,
  request: RpcRequest,
  fctx: ForwardContext,
): Promise<UpstreamReply> {
  const upstream = await sessions.upstreamOf(route, rec, undefined, fctx.headers);
  try {
    return await upstream.post(body, [request], fctx);
  } catch (err) {
    if (!(err instanceof UpstreamSessionLost)) throw err;
    const again = await sessions.upstreamOf(route, rec, err, fctx.headers);
    return again.post(body, [request], fctx);
  }
}

/** Headers of the call that do not describe a tools/list: the edge's own request drops them. */
export function listHeaders(headers: Record<string, string>, stateless: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (k === "mcp-method" || k === "mcp-name" || k.startsWith("mcp-param-")) continue;
    out[k] = v;
  }
  // 2026-07-28: the headers mirror the body (basic/transports/streamable-http).
  if (stateless) out["mcp-method"] = "tools/list";
  return out;
}

/** The answer to request `id` in a reply; the stream is closed once it is read. */
async function responseTo(reply: UpstreamReply, id: string): Promise<RpcMessage> {
  if (reply.kind === "passthrough")
    throw new GatewayError(
      "EDGE_UPSTREAM_ERROR",
      `The upstream answered HTTP ${reply.status} to tools/list.`,
    );
  if (reply.kind === "json") {
    if (isResponse(reply.message) && reply.message.id === id) return reply.message;
  } else if (reply.kind === "stream") {
    try {
      for await (const ev of reply.events) {
        if (ev.message && isResponse(ev.message) && ev.message.id === id) return ev.message;
      }
    } finally {
      reply.close();
    }
  }
  throw new GatewayError("EDGE_UPSTREAM_BAD_RESPONSE", "The upstream did not answer tools/list.");
}

/**
 * Reads the upstream's whole tool list for `context` into `catalog` and returns what was read. A
 * JSON-RPC error answer means the server lists no tools (an empty, complete view); a result that
 * is not a tool list is EDGE_UPSTREAM_BAD_RESPONSE.
 */
export async function fetchToolList(
  catalog: ToolCatalog,
  server: string,
  context: string,
  send: SendOwn,
  meta: Record<string, unknown> | undefined,
): Promise<ToolView> {
  const generation = catalog.generation(server);
  const names = new Set<string>();
  let cursor: string | undefined;
  for (let n = 0; n < MAX_PAGES; n++) {
    const id = `mcp-edge-tools-${randomUUID()}`;
    const params: Record<string, unknown> = {};
    if (cursor !== undefined) params["cursor"] = cursor;
    if (meta !== undefined) params["_meta"] = meta;
    const request: RpcRequest = {
      jsonrpc: "2.0",
      id,
      method: "tools/list",
      ...(cursor !== undefined || meta !== undefined ? { params } : {}),
    };
    const answer = await responseTo(await send(JSON.stringify(request), request), id);
    const page = isErrorResponse(answer)
      ? { names: [], nextCursor: undefined }
      : toolPage((answer as { result?: unknown }).result);
    if (!page)
      throw new GatewayError(
        "EDGE_UPSTREAM_BAD_RESPONSE",
        "The upstream's tools/list answer holds no tools.",
      );
    catalog.page(server, context, cursor, page, generation);
    for (const name of page.names) names.add(name);
    if (page.nextCursor === undefined) return { names, complete: true, at: catalog.now() };
    cursor = page.nextCursor;
  }
  return { names, complete: false, at: catalog.now() };
}
