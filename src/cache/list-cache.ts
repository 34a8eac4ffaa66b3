/**
 * The response cache for list results (`tools/list`, `resources/list`, `resources/templates/list`,
 * `prompts/list`), one bounded LRU per server.
 *
 * What is stored is the upstream's own, unfiltered answer; the per-principal `tools/list` filter
 * (`ctx.rewrite`, set by the authorize stage) runs on every answer, cached or not, so a hit is
 * filtered for the caller exactly like a miss. Keys (src/cache/key.ts) always hold the server and
 * the tenant: entries are never shared between tenants, although caching.mdx would let a shared
 * gateway serve `"public"` results "to any user" — tenants are the edge's isolation boundary, and
 * per-tenant upstream credentials or identity claims may make answers differ. Private entries add the
 * principal's whole authorization context; `"public"` entries are shared by the principals of one
 * tenant (config `cache.sharePublic`).
 *
 * Eras:
 * - 2026-07-28: the upstream's `ttlMs` (capped by `cache.maxTtl`) and `cacheScope` decide; `ttlMs`
 *   0 or absent is "immediately stale" and nothing is stored.
 * - Session era (no hints on the wire): off unless `cache.sessionTtl` is set. A session-era server
 *   may shape its lists by the session (its client capabilities, or state built up in it), so
 *   entries are private and keyed by the negotiated version and the initialize capabilities too:
 *   another session of the same principal with the same capabilities reuses them. A server whose
 *   lists depend on anything else in the session must keep `sessionTtl` at 0.
 *
 * Invalidation: a `notifications/{tools,resources,prompts}/list_changed` seen on any stream from the
 * server (POST streams, GET streams, 2026-07-28 request and `subscriptions/listen` streams, legacy
 * HTTP+SSE, stdio — `observeUpstream` sees them all) drops every entry of that kind of that server,
 * for every tenant and principal: the notification says the server's list changed, and the edge
 * cannot tell whose view of it did. A fill that started before the notification is discarded
 * (generation check), so an answer read before the change is never stored after it.
 */
import type { Principal } from "../auth/types.ts";
import { metaProtocolVersion } from "../mcp/era.ts";
import { isResponse, type RpcMessage, type RpcRequest, requestIdKey } from "../mcp/jsonrpc.ts";
import type { Logger } from "../observability/logger.ts";
import type { SessionRecord } from "../store/types.ts";
import type {
  ForwardContext,
  InitializeOutcome,
  InstanceHealth,
  Upstream,
  UpstreamEvent,
  UpstreamReply,
  UpstreamSession,
} from "../upstream/types.ts";
import {
  type CachePolicy,
  cacheableRequest,
  cacheKey,
  decideStore,
  type EraTag,
  hitAnswer,
  type KeyInput,
  LIST_CHANGED,
  LIST_METHODS,
  type ListKind,
  type ListMethod,
} from "./key.ts";
import { BoundedLru } from "./lru.ts";

/** The response header naming what the cache did for a cacheable request. */
export const CACHE_HEADER = "x-mcp-edge-cache";

interface Entry {
  readonly resultText: string;
  /** When the upstream's own `ttlMs` runs out (2026-07-28), for the `ttlMs` sent on hits. */
  readonly freshUntil: number | undefined;
  readonly expiresAt: number;
  readonly bytes: number;
  readonly kind: ListKind;
  readonly scope: "public" | "private";
}

interface ServerCache {
  readonly policy: CachePolicy;
  readonly lru: BoundedLru<Entry>;
  /** Bumped by every list-changed notification of that kind. */
  readonly generation: Record<ListKind, number>;
}

export interface ListCacheOptions {
  /** Per server name, its `cache` settings (config `servers.<name>.cache`). */
  servers: Readonly<Record<string, { cache: CachePolicy }>>;
  log?: Logger;
  /** Told of every list-changed notification seen (the tool catalog makes its views stale). */
  onListChanged?: (server: string, kind: ListKind) => void;
  /** Clock (ms since epoch); tests freeze it. */
  now?: () => number;
}

/** What a lookup reads of a request (the pipeline's context has these fields). */
export interface CacheQuery {
  readonly route: { readonly name: string };
  readonly messages: readonly RpcMessage[] | undefined;
  readonly batch: boolean | undefined;
  readonly era: "session" | "stateless" | undefined;
  readonly session: SessionRecord | undefined;
  readonly principal: Principal | undefined;
}

/**
 * One cacheable request in flight: `answer` is the hit (under the client's request id) or
 * undefined; on a miss, `fill` / `tap` store the upstream's answer when it may be stored.
 */
export class CacheLookup {
  readonly answer: string | undefined;
  readonly #cache: ListCache;
  readonly #server: ServerCache;
  readonly #request: RpcRequest;
  readonly #era: "session" | "stateless";
  readonly #keys: { private: string; public: string };
  readonly #kind: ListKind;
  readonly #generation: number;

  constructor(
    cache: ListCache,
    server: ServerCache,
    request: RpcRequest,
    era: "session" | "stateless",
    keys: { private: string; public: string },
    answer: string | undefined,
  ) {
    this.#cache = cache;
    this.#server = server;
    this.#request = request;
    this.#era = era;
    this.#keys = keys;
    this.#kind = LIST_METHODS[request.method as ListMethod];
    this.#generation = server.generation[this.#kind];
    this.answer = answer;
  }

  get hit(): boolean {
    return this.answer !== undefined;
  }

  /** Stores the upstream's answer (`data` = its text as received) when the rules allow. */
  fill(message: RpcMessage, data: string): boolean {
    if (!isResponse(message) || message.id === undefined || message.id === null) return false;
    if (requestIdKey(message.id) !== requestIdKey(this.#request.id)) return false;
    // A list-changed notification arrived while this request was upstream: its answer may predate it.
    if (this.#server.generation[this.#kind] !== this.#generation) return false;
    const d = decideStore(message, this.#era, this.#server.policy, Buffer.byteLength(data));
    if (!d) return false;
    const now = this.#cache.now();
    const key = d.scope === "public" ? this.#keys.public : this.#keys.private;
    // The other scope's entry for this request goes: the server has just said how it scopes it.
    this.#server.lru.delete(d.scope === "public" ? this.#keys.private : this.#keys.public);
    return this.#server.lru.set(key, {
      resultText: d.resultText,
      freshUntil: d.freshMs === undefined ? undefined : now + d.freshMs,
      expiresAt: now + d.ttlMs,
      bytes: Buffer.byteLength(d.resultText),
      kind: this.#kind,
      scope: d.scope,
    });
  }

  /** A stream reply whose answer to this request is stored as it passes (nothing else changes). */
  tap(reply: UpstreamReply & { kind: "stream" }): UpstreamReply & { kind: "stream" } {
    return {
      kind: "stream",
      events: tapEvents(reply.events, (ev) => {
        if (ev.message && isResponse(ev.message)) this.fill(ev.message, ev.data);
      }),
      close: () => reply.close(),
    };
  }
}

export class ListCache {
  readonly #servers = new Map<string, ServerCache>();
  readonly #log: Logger | undefined;
  readonly #onListChanged: ((server: string, kind: ListKind) => void) | undefined;
  readonly now: () => number;

  constructor(opts: ListCacheOptions) {
    this.#log = opts.log;
    this.#onListChanged = opts.onListChanged;
    this.now = opts.now ?? Date.now;
    this.configure(opts.servers);
  }

  /**
   * Sets the servers and their policies (boot, and a config reload): a server whose policy is
   * unchanged keeps its entries; a changed policy starts empty; a server no longer configured goes.
   */
  configure(servers: ListCacheOptions["servers"]): void {
    for (const name of this.#servers.keys()) if (!(name in servers)) this.#servers.delete(name);
    for (const [name, cfg] of Object.entries(servers)) {
      const policy = cfg.cache;
      const known = this.#servers.get(name);
      if (known && JSON.stringify(known.policy) === JSON.stringify(policy)) continue;
      this.#servers.set(name, {
        policy,
        lru: new BoundedLru<Entry>({ maxEntries: policy.maxEntries, maxBytes: policy.maxBytes }),
        generation: { tools: 0, resources: 0, prompts: 0 },
      });
    }
  }

  /**
   * The lookup for a request, or undefined when the cache has no part in it (not a single list
   * request, an MRTR retry, caching off for the server or, in the session era, no `sessionTtl`).
   */
  lookup(ctx: CacheQuery): CacheLookup | undefined {
    const server = this.#servers.get(ctx.route.name);
    if (!server?.policy.enabled || !ctx.messages) return undefined;
    const request = cacheableRequest(ctx.messages, ctx.batch ?? false);
    if (!request) return undefined;
    let era: EraTag;
    if (ctx.era === "stateless") {
      era = { era: "stateless", version: metaProtocolVersion(request) ?? "" };
    } else {
      const rec = ctx.session;
      if (!rec || server.policy.sessionTtl <= 0) return undefined;
      era = { era: "session", version: rec.protocolVersion, capabilities: rec.initParams["capabilities"] };
    }
    const principal = ctx.principal;
    if (!principal) return undefined;
    const base: Omit<KeyInput, "principal"> = {
      server: ctx.route.name,
      tenant: principal.tenant,
      era,
      method: request.method as ListMethod,
      params: request.params as Record<string, unknown> | undefined,
    };
    const keys = {
      private: cacheKey({ ...base, principal }),
      public: cacheKey({ ...base, principal: undefined }),
    };
    const now = this.now();
    // The caller's own context first; then what the tenant's principals share.
    const entry =
      server.lru.get(keys.private, now) ??
      (server.policy.sharePublic ? server.lru.get(keys.public, now) : undefined);
    const answer = entry ? hitAnswer(request.id, entry, now) : undefined;
    return new CacheLookup(this, server, request, era.era, keys, answer);
  }

  /** Drops every entry of `kind` of `server` (all tenants); returns how many. */
  invalidate(server: string, kind: ListKind): number {
    const s = this.#servers.get(server);
    if (!s) return 0;
    s.generation[kind]++;
    const n = s.lru.deleteWhere((e) => e.kind === kind);
    this.#log?.debug({ server, kind, dropped: n }, "list cache invalidated");
    return n;
  }

  /** Entries and bytes held for a server (tests, admin). */
  stats(server: string): { entries: number; bytes: number } {
    const s = this.#servers.get(server);
    return { entries: s?.lru.size ?? 0, bytes: s?.lru.bytes ?? 0 };
  }

  /** Calls `invalidate` for a message when it is a list-changed notification. */
  see(server: string, message: RpcMessage): void {
    if (!("method" in message) || "id" in message) return;
    const kind = Object.hasOwn(LIST_CHANGED, message.method) ? LIST_CHANGED[message.method] : undefined;
    if (!kind) return;
    this.invalidate(server, kind);
    this.#onListChanged?.(server, kind);
  }

  /**
   * The upstream of `server`, with every message it sends on any stream shown to `see` (so
   * list-changed notifications invalidate whichever transport or edge endpoint reads them).
   */
  observe(server: string, upstream: Upstream): Upstream {
    return observeUpstream(upstream, (m) => this.see(server, m));
  }
}

/** Wraps an event iterable; `seen` runs on every event read. Early exit (`return`) reaches the source. */
function tapEvents(
  events: AsyncIterable<UpstreamEvent>,
  seen: (ev: UpstreamEvent) => void,
): AsyncIterable<UpstreamEvent> {
  return {
    [Symbol.asyncIterator](): AsyncIterator<UpstreamEvent> {
      const it = events[Symbol.asyncIterator]();
      return {
        async next() {
          const r = await it.next();
          if (!r.done) seen(r.value);
          return r;
        },
        async return(value?: unknown) {
          return it.return ? it.return(value) : { done: true, value: undefined };
        },
      };
    },
  };
}

function observeReply(reply: UpstreamReply, seen: (m: RpcMessage) => void): UpstreamReply {
  if (reply.kind === "json") {
    seen(reply.message);
    return reply;
  }
  if (reply.kind !== "stream") return reply;
  return {
    kind: "stream",
    events: tapEvents(reply.events, (ev) => {
      if (ev.message) seen(ev.message);
    }),
    close: () => reply.close(),
  };
}

function observeSession(session: UpstreamSession, seen: (m: RpcMessage) => void): UpstreamSession {
  return {
    binding: session.binding,
    post: async (body, messages, ctx) => observeReply(await session.post(body, messages, ctx), seen),
    listen: async (ctx, last) => observeReply(await session.listen(ctx, last), seen),
    terminate: () => session.terminate(),
  };
}

/** An Upstream that shows every message read from it to `seen`; behaviour is otherwise unchanged. */
export function observeUpstream(upstream: Upstream, seen: (m: RpcMessage) => void): Upstream {
  return {
    kind: upstream.kind,
    start: () => upstream.start(),
    stop: () => upstream.stop(),
    async initialize(request: RpcRequest, body: string, ctx: ForwardContext): Promise<InitializeOutcome> {
      const out = await upstream.initialize(request, body, ctx);
      return {
        session: out.session ? observeSession(out.session, seen) : null,
        reply: observeReply(out.reply, seen),
      };
    },
    attach: (binding, key) => observeSession(upstream.attach(binding, key), seen),
    stateless: async (body, messages, ctx) =>
      observeReply(await upstream.stateless(body, messages, ctx), seen),
    health: (): InstanceHealth[] => upstream.health(),
    ready: () => upstream.ready(),
  };
}
