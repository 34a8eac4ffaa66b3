/**
 * The edge's view of each server's tools: the names its `tools/list` gave, per server and context,
 * as the edge last saw them. A `tools/call` of a name not in the view is refused at the edge
 * (the `tool-list` stage), so the name judged by the allow-lists, scopes, limits and audit is a
 * tool the server listed, byte for byte.
 *
 * Contexts: a session (session era and legacy HTTP+SSE: a server may shape its list by the
 * session), or, in 2026-07-28, the principal's authorization context (tenant, principal, scopes,
 * allow-list) and protocol version — the same split as the list cache's private entries.
 *
 * Views come from `tools/list` answers: the client's own (every page it reads, the unfiltered
 * upstream answer) and the edge's fetch when it has no complete view. A view is complete when it
 * holds every page from the first to one without `nextCursor`. `notifications/tools/list_changed`
 * seen on any stream of the server makes every view of that server stale (the notification does
 * not say whose list changed), so the next call refetches; an answer read before the notification
 * is never stored after it (generation check). Views are bounded per server (oldest dropped).
 */
import type { RpcMessage } from "../mcp/jsonrpc.ts";

/** What the edge knows of one context's tools. */
export interface ToolView {
  readonly names: ReadonlySet<string>;
  /** Every page was read. */
  readonly complete: boolean;
  /** When the view was last filled from the upstream (ms). */
  readonly at: number;
}

interface MutableView {
  names: Set<string>;
  complete: boolean;
  at: number;
  generation: number;
}

interface ServerViews {
  generation: number;
  readonly views: Map<string, MutableView>;
  readonly inflight: Map<string, Promise<ToolView>>;
}

export interface ToolCatalogOptions {
  /** Views kept per server (the oldest go first). Default 10 000. */
  maxViews?: number;
  now?: () => number;
}

/** One page of a `tools/list` answer: the names, and whether another page follows. */
export interface ToolPage {
  readonly names: readonly string[];
  readonly nextCursor: string | undefined;
}

/** The page in a `tools/list` result (`{ tools: [{ name }], nextCursor? }`), or undefined when it is none. */
export function toolPage(result: unknown): ToolPage | undefined {
  if (result === null || typeof result !== "object") return undefined;
  const r = result as { tools?: unknown; nextCursor?: unknown };
  if (!Array.isArray(r.tools)) return undefined;
  const names: string[] = [];
  for (const t of r.tools) {
    const name = (t as { name?: unknown } | null)?.name;
    if (typeof name === "string") names.push(name);
  }
  return {
    names,
    nextCursor: typeof r.nextCursor === "string" && r.nextCursor !== "" ? r.nextCursor : undefined,
  };
}

export class ToolCatalog {
  readonly #servers = new Map<string, ServerViews>();
  readonly #max: number;
  readonly now: () => number;

  constructor(opts: ToolCatalogOptions = {}) {
    this.#max = opts.maxViews ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  #server(server: string): ServerViews {
    let s = this.#servers.get(server);
    if (!s) {
      s = { generation: 0, views: new Map(), inflight: new Map() };
      this.#servers.set(server, s);
    }
    return s;
  }

  /** The current view of a context, or undefined when there is none or it is stale. */
  view(server: string, context: string): ToolView | undefined {
    const s = this.#servers.get(server);
    const v = s?.views.get(context);
    return v && v.generation === s?.generation ? v : undefined;
  }

  /** The generation a fill starts from: pass it back to `page`. */
  generation(server: string): number {
    return this.#server(server).generation;
  }

  /**
   * Records one page read from the upstream at `generation`: a first page (`cursor` undefined)
   * starts the view afresh, a later one adds to it. Ignored when the list changed since.
   */
  page(
    server: string,
    context: string,
    cursor: string | undefined,
    page: ToolPage,
    generation: number,
  ): void {
    const s = this.#server(server);
    if (generation !== s.generation) return;
    let v = s.views.get(context);
    if (cursor === undefined || !v || v.generation !== generation) {
      if (cursor !== undefined) return; // a later page without its first one: not a view
      s.views.delete(context);
      v = { names: new Set(), complete: false, at: this.now(), generation };
      s.views.set(context, v);
      if (s.views.size > this.#max) s.views.delete(s.views.keys().next().value as string);
    }
    for (const n of page.names) v.names.add(n);
    v.at = this.now();
    if (page.nextCursor === undefined) v.complete = true;
  }

  /**
   * Fills a context's view with `fetch` (every page), one fetch at a time per context: callers
   * that arrive meanwhile share it.
   */
  fill(server: string, context: string, fetch: () => Promise<ToolView>): Promise<ToolView> {
    const s = this.#server(server);
    const running = s.inflight.get(context);
    if (running) return running;
    const p = fetch().finally(() => s.inflight.delete(context));
    s.inflight.set(context, p);
    return p;
  }

  /** Makes every view of `server` stale. */
  invalidate(server: string): void {
    const s = this.#server(server);
    s.generation++;
    s.views.clear();
  }

  /** Calls `invalidate` for a `notifications/tools/list_changed` of `server`. */
  see(server: string, message: RpcMessage): void {
    if ("method" in message && !("id" in message) && message.method === "notifications/tools/list_changed")
      this.invalidate(server);
  }
}
