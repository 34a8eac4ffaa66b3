import type { ToolCatalog, ToolView } from "../../cache/tool-catalog.ts";
import { toolPage } from "../../cache/tool-catalog.ts";
import type { EraKnown, Parsed, Route } from "../../context.ts";
import { GatewayError } from "../../errors/errors.ts";
import type { LegacyBridge } from "../../forward/legacy.ts";
import type { Forwarder } from "../../forward/streamable.ts";
import { fetchToolList, type SendOwn } from "../../forward/tool-list.ts";
import { isRequest, isResponse, type RpcRequest } from "../../mcp/jsonrpc.ts";
import { toolNameProblem, ToolNameIndex } from "../../mcp/tool-names.ts";
import type { Stage } from "../compose.ts";

const FILE = "src/pipeline/stages/tools.ts";

/** The `_meta` keys a 2026-07-28 request of the edge's own copies from the call. */
const LIST_META = [
  "io.modelcontextprotocol/protocolVersion",
  "io.modelcontextprotocol/clientCapabilities",
  "io.modelcontextprotocol/clientInfo",
];

/** Per route: the names its config gives a meaning to (per-tool scopes and limits). */
const indexes = new WeakMap<Route, ToolNameIndex>();
function indexOf(route: Route): ToolNameIndex {
  let idx = indexes.get(route);
  if (!idx) {
    const c = route.config;
    idx = new ToolNameIndex([...Object.keys(c.scopes.tools), ...Object.keys(c.limits?.tools ?? {})]);
    indexes.set(route, idx);
  }
  return idx;
}

function invalidName(call: RpcRequest, why: string): GatewayError {
  return new GatewayError("EDGE_TOOL_NAME_INVALID", `Invalid tool name: ${why}.`, { rpcId: call.id });
}

/** What the stage needs to fetch a list on the call's own path. */
export interface ToolListDeps {
  tools: ToolCatalog;
  forwarder: Forwarder;
  legacy: LegacyBridge;
}

type Where = "mcp" | "legacy";

/**
 * The context a view belongs to, and how to send the edge's own tools/list in it; undefined when
 * there is none yet (a legacy connection not initialized: the bridge refuses the call).
 */
function contextOf(
  ctx: Parsed,
  where: Where,
  d: ToolListDeps,
): { key: string; send: SendOwn; meta?: Record<string, unknown> } | undefined {
  if (where === "legacy") {
    const rec = d.legacy.sessionOf(ctx);
    if (!rec) return undefined;
    return { key: `s:${rec.id}`, send: (body, req) => d.legacy.sendOwn(ctx, rec, body, req) };
  }
  const c = ctx as EraKnown;
  if (c.era === "session") {
    if (!c.session) return undefined;
    return { key: `s:${c.session.id}`, send: (body, req) => d.forwarder.sendOwn(c, body, req) };
  }
  // 2026-07-28: the principal's authorization context and the call's protocol version.
  const p = c.principal;
  const first = c.messages[0] as RpcRequest;
  const callMeta = (first.params as { _meta?: Record<string, unknown> } | undefined)?._meta ?? {};
  const meta: Record<string, unknown> = {};
  for (const k of LIST_META) if (Object.hasOwn(callMeta, k)) meta[k] = callMeta[k];
  const key = JSON.stringify([
    p.tenant,
    p.id,
    p.scopes,
    p.tools ?? null,
    meta[LIST_META[0] as string] ?? null,
  ]);
  return { key: `p:${key}`, send: (body, req) => d.forwarder.sendOwn(c, body, req), meta };
}

/**
 * Tool names (after `rate-limit`, so a refused call still counts against the caller's limits;
 * after `connection`, so the edge's own tools/list carries the user's upstream token as the call
 * would). Each `tools/call` names a tool by a string without control, format or invisible
 * characters or white space at either end, that is no variant (case, NFKC, look-alike letters) of a
 * name the config or the credential's allow-list gives a meaning to; and, unless the server opts out
 * (`tools.enforceList: false`), that the server's `tools/list` holds, as the edge last saw it for
 * this context (src/cache/tool-catalog.ts). With no complete view the edge fetches the list first;
 * a complete view older than `tools.refreshAfter` is refetched once before a name is refused. A
 * `tools/list` the client makes fills the view on its way back.
 */
export function toolList(d: ToolListDeps, where: Where): Stage<Parsed> {
  const catalog = d.tools;
  return {
    name: "tool-list",
    does: "`tools/call`: the name is a string with no invisible or control characters, no variant of a configured or allowed name (case, NFKC, look-alikes), and a tool the server's `tools/list` holds as the edge last saw it for this session or authorization context (fetched first when unknown; `tools.enforceList: false` opts out). Counted against the limits already. A client's own `tools/list` answer updates the view.",
    codes: [
      "EDGE_TOOL_NAME_INVALID",
      "EDGE_TOOL_UNKNOWN",
      "EDGE_UPSTREAM_ERROR",
      "EDGE_UPSTREAM_BAD_RESPONSE",
    ],
    file: FILE,
    run: (ctx) => {
      const route = ctx.route;
      const enforce = route.config.tools.enforceList;
      let calls: RpcRequest[] | undefined;
      for (const m of ctx.messages) {
        if (!isRequest(m)) continue;
        if (m.method === "tools/call") (calls ??= []).push(m);
        else if (m.method === "tools/list" && enforce && ctx.messages.length === 1) observe(ctx, m, where, d);
      }
      if (!calls) return;
      const index = indexOf(route);
      const names: string[] = [];
      for (const call of calls) {
        const name = (call.params as { name?: unknown } | undefined)?.name;
        if (typeof name !== "string") throw invalidName(call, "params.name must be a string");
        const problem = toolNameProblem(name);
        if (problem) throw invalidName(call, problem);
        const variant = index.variantOf(name, ctx.principal.tools);
        if (variant !== undefined)
          throw invalidName(
            call,
            `${JSON.stringify(name.slice(0, 128))} is a variant of the tool ${JSON.stringify(variant)}`,
          );
        names.push(name);
      }
      if (!enforce) return;
      const context = contextOf(ctx, where, d);
      if (!context) return;
      const server = route.name;
      const view = catalog.view(server, context.key);
      const judge = (v: ToolView) => {
        for (let i = 0; i < calls.length; i++) {
          const name = names[i] as string;
          if (!v.names.has(name))
            throw new GatewayError(
              "EDGE_TOOL_UNKNOWN",
              `Unknown tool: the server lists no tool ${JSON.stringify(name.slice(0, 128))}.`,
              { rpcId: (calls[i] as RpcRequest).id },
            );
        }
      };
      if (
        view &&
        (names.every((n) => view.names.has(n)) ||
          (view.complete && catalog.now() - view.at < route.config.tools.refreshAfter))
      )
        return judge(view);
      return catalog
        .fill(server, context.key, () =>
          fetchToolList(catalog, server, context.key, context.send, context.meta),
        )
        .then(judge);
    },
  };
}

/** A client's `tools/list`: its answer (unfiltered, as the upstream gave it) fills the view. */
function observe(ctx: Parsed, request: RpcRequest, where: Where, d: ToolListDeps): void {
  const context = contextOf(ctx, where, d);
  if (!context) return;
  const server = ctx.route.name;
  const generation = d.tools.generation(server);
  const cursor = (request.params as { cursor?: unknown } | undefined)?.cursor;
  const prev = ctx.rewrite;
  ctx.rewrite = (data) => {
    try {
      const msg = JSON.parse(data) as { id?: unknown; result?: unknown };
      if (isResponse(msg as never) && msg.id === request.id) {
        const page = toolPage(msg.result);
        if (page)
          d.tools.page(
            server,
            context.key,
            typeof cursor === "string" ? cursor : undefined,
            page,
            generation,
          );
      }
    } catch {
      // not JSON: nothing to learn
    }
    return prev?.(data);
  };
}
