/**
 * The bounded LRU under the list cache, and the ListCache on top of it (lookups, scopes, tenants,
 * invalidation, the in-flight fill race), with a frozen clock and no network.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Principal } from "../../src/auth/types.ts";
import type { CachePolicy } from "../../src/cache/key.ts";
import { ListCache, observeUpstream } from "../../src/cache/list-cache.ts";
import { BoundedLru } from "../../src/cache/lru.ts";
import type { RequestContext } from "../../src/context.ts";
import type { RpcMessage } from "../../src/mcp/jsonrpc.ts";
import type { SessionRecord } from "../../src/store/types.ts";
import type { Upstream, UpstreamEvent, UpstreamReply } from "../../src/upstream/types.ts";

const v = (bytes: number, expiresAt = Infinity) => ({ bytes, expiresAt });

describe("BoundedLru", () => {
  test("evicts the least recently used past maxEntries; get refreshes recency", () => {
    const lru = new BoundedLru<ReturnType<typeof v>>({ maxEntries: 2, maxBytes: 1000 });
    lru.set("a", v(1));
    lru.set("b", v(1));
    assert.ok(lru.get("a", 0)); // a is now the most recent
    lru.set("c", v(1));
    assert.equal(lru.get("b", 0), undefined);
    assert.ok(lru.get("a", 0));
    assert.ok(lru.get("c", 0));
    assert.equal(lru.size, 2);
  });

  test("evicts past maxBytes; bytes are accounted on replace, delete and eviction", () => {
    const lru = new BoundedLru<ReturnType<typeof v>>({ maxEntries: 100, maxBytes: 10 });
    lru.set("a", v(4));
    lru.set("b", v(4));
    assert.equal(lru.bytes, 8);
    lru.set("a", v(2)); // replace: 2 + 4
    assert.equal(lru.bytes, 6);
    lru.set("c", v(6)); // 12 > 10: b (least recent) goes
    assert.equal(lru.get("b", 0), undefined);
    assert.equal(lru.bytes, 8);
    lru.delete("c");
    assert.equal(lru.bytes, 2);
  });

  test("a value larger than maxBytes is refused, and does not flush the cache", () => {
    const lru = new BoundedLru<ReturnType<typeof v>>({ maxEntries: 10, maxBytes: 10 });
    lru.set("a", v(5));
    assert.equal(lru.set("big", v(11)), false);
    assert.ok(lru.get("a", 0));
    assert.equal(lru.bytes, 5);
  });

  test("expired entries are not served and are dropped when found", () => {
    const lru = new BoundedLru<ReturnType<typeof v>>({ maxEntries: 10, maxBytes: 10 });
    lru.set("a", v(3, 100));
    assert.ok(lru.get("a", 99));
    assert.equal(lru.get("a", 100), undefined);
    assert.equal(lru.size, 0);
    assert.equal(lru.bytes, 0);
  });

  test("deleteWhere removes matching entries and their bytes", () => {
    const lru = new BoundedLru<{ bytes: number; expiresAt: number; k: string }>({
      maxEntries: 10,
      maxBytes: 100,
    });
    lru.set("1", { bytes: 1, expiresAt: Infinity, k: "tools" });
    lru.set("2", { bytes: 2, expiresAt: Infinity, k: "prompts" });
    lru.set("3", { bytes: 3, expiresAt: Infinity, k: "tools" });
    assert.equal(
      lru.deleteWhere((e) => e.k === "tools"),
      2,
    );
    assert.equal(lru.size, 1);
    assert.equal(lru.bytes, 2);
  });

  test("bounds below 1 are a boot error", () => {
    assert.throws(() => new BoundedLru({ maxEntries: 0, maxBytes: 1 }), RangeError);
  });
});

// ------------------------------------------------------------------------------------ ListCache

const POLICY: CachePolicy = {
  enabled: true,
  maxTtl: 600_000,
  sessionTtl: 0,
  sharePublic: true,
  maxEntries: 100,
  maxBytes: 1 << 20,
  maxEntryBytes: 1 << 20,
};
const META = {
  "io.modelcontextprotocol/protocolVersion": "2026-07-28",
  "io.modelcontextprotocol/clientCapabilities": {},
};

function principal(name: string, tenant = "acme", tools?: string[]): Principal {
  return {
    id: `key:s:${tenant}:${name}`,
    method: "apiKey",
    tenant,
    subject: name,
    scopes: [],
    ...(tools ? { tools } : {}),
  };
}

function ctx(
  p: Principal,
  method = "tools/list",
  id: string | number = 1,
  opts: { params?: Record<string, unknown>; session?: SessionRecord } = {},
): RequestContext {
  const headers: Record<string, string> = {};
  const message = { jsonrpc: "2.0", id, method, params: opts.params ?? { _meta: META } } as RpcMessage;
  return {
    route: { name: "s" },
    principal: p,
    messages: [message],
    batch: false,
    era: opts.session ? "session" : "stateless",
    ...(opts.session ? { session: opts.session } : {}),
    res: { setHeader: (k: string, val: string) => (headers[k] = val) },
  } as unknown as RequestContext;
}

const answer = (id: string | number, result: Record<string, unknown>) => {
  const message = { jsonrpc: "2.0", id, result } as RpcMessage;
  return { message, data: JSON.stringify(message) };
};

function clock(start = 1_000_000) {
  const c = { t: start, now: () => c.t };
  return c;
}

describe("ListCache", () => {
  test("miss, fill, hit under the new id; expiry after ttlMs", () => {
    const c = clock();
    const cache = new ListCache({ servers: { s: { cache: POLICY } }, now: c.now });
    const first = cache.lookup(ctx(principal("alice"), "tools/list", 1));
    assert.ok(first && !first.hit);
    const a = answer(1, { tools: [{ name: "x" }], ttlMs: 1000, cacheScope: "private" });
    assert.ok(first.fill(a.message, a.data));
    c.t += 400;
    const second = cache.lookup(ctx(principal("alice"), "tools/list", "second"));
    assert.ok(second?.hit);
    assert.deepEqual(JSON.parse(second.answer as string), {
      jsonrpc: "2.0",
      id: "second",
      result: { ttlMs: 600, tools: [{ name: "x" }], cacheScope: "private" },
    });
    c.t += 600;
    assert.equal(cache.lookup(ctx(principal("alice")))?.hit, false);
  });

  test("private entries are per authorization context; public ones per tenant", () => {
    const cache = new ListCache({ servers: { s: { cache: POLICY } } });
    const priv = answer(1, { tools: [], ttlMs: 60_000, cacheScope: "private" });
    cache.lookup(ctx(principal("alice")))?.fill(priv.message, priv.data);
    assert.equal(cache.lookup(ctx(principal("alice")))?.hit, true);
    assert.equal(cache.lookup(ctx(principal("bob")))?.hit, false);
    assert.equal(cache.lookup(ctx(principal("alice", "acme", ["x"])))?.hit, false); // other allow-list

    const pub = answer(1, { prompts: [], ttlMs: 60_000, cacheScope: "public" });
    cache.lookup(ctx(principal("alice"), "prompts/list"))?.fill(pub.message, pub.data);
    assert.equal(cache.lookup(ctx(principal("bob"), "prompts/list"))?.hit, true);
    assert.equal(cache.lookup(ctx(principal("alice", "globex"), "prompts/list"))?.hit, false);
  });

  test("an answer to another id, or a fill after a list-changed notification, is not stored", () => {
    const cache = new ListCache({ servers: { s: { cache: POLICY } } });
    const wrong = answer(2, { tools: [], ttlMs: 60_000 });
    assert.equal(
      cache.lookup(ctx(principal("alice"), "tools/list", 1))?.fill(wrong.message, wrong.data),
      false,
    );
    const lookup = cache.lookup(ctx(principal("alice")));
    cache.see("s", { jsonrpc: "2.0", method: "notifications/tools/list_changed" });
    const a = answer(1, { tools: [], ttlMs: 60_000 });
    assert.equal(lookup?.fill(a.message, a.data), false);
    assert.equal(cache.stats("s").entries, 0);
  });

  test("list_changed drops that kind for every tenant, and only that kind", () => {
    const cache = new ListCache({ servers: { s: { cache: POLICY } } });
    for (const [who, m] of [
      [principal("alice"), "tools/list"],
      [principal("bob", "globex"), "tools/list"],
      [principal("alice"), "prompts/list"],
      [principal("alice"), "resources/templates/list"],
    ] as const) {
      const a = answer(1, { ttlMs: 60_000 });
      cache.lookup(ctx(who, m))?.fill(a.message, a.data);
    }
    assert.equal(cache.stats("s").entries, 4);
    assert.equal(cache.invalidate("s", "tools"), 2);
    assert.equal(cache.lookup(ctx(principal("alice"), "prompts/list"))?.hit, true);
    cache.see("s", { jsonrpc: "2.0", method: "notifications/resources/list_changed" });
    assert.equal(cache.lookup(ctx(principal("alice"), "resources/templates/list"))?.hit, false);
    assert.equal(cache.stats("s").entries, 1);
  });

  test("session era: off without sessionTtl; keyed by initialize capabilities", () => {
    const rec = (caps: unknown): SessionRecord =>
      ({
        id: "x",
        protocolVersion: "2025-11-25",
        initParams: { capabilities: caps },
      }) as unknown as SessionRecord;
    const off = new ListCache({ servers: { s: { cache: POLICY } } });
    assert.equal(off.lookup(ctx(principal("alice"), "tools/list", 1, { session: rec({}) })), undefined);
    const on = new ListCache({ servers: { s: { cache: { ...POLICY, sessionTtl: 5000 } } } });
    const a = answer(1, { tools: [] });
    on.lookup(ctx(principal("alice"), "tools/list", 1, { params: {}, session: rec({}) }))?.fill(
      a.message,
      a.data,
    );
    const hit = on.lookup(ctx(principal("alice"), "tools/list", 9, { params: {}, session: rec({}) }));
    assert.deepEqual(JSON.parse(hit?.answer as string), { jsonrpc: "2.0", id: 9, result: { tools: [] } });
    const other = on.lookup(
      ctx(principal("alice"), "tools/list", 9, { params: {}, session: rec({ sampling: {} }) }),
    );
    assert.equal(other?.hit, false);
  });

  test("the LRU bounds hold through the cache", () => {
    const cache = new ListCache({ servers: { s: { cache: { ...POLICY, maxEntries: 3 } } } });
    for (let i = 0; i < 10; i++) {
      const a = answer(1, { tools: [], ttlMs: 60_000 });
      cache
        .lookup(ctx(principal("alice"), "tools/list", 1, { params: { cursor: `${i}`, _meta: META } }))
        ?.fill(a.message, a.data);
    }
    assert.equal(cache.stats("s").entries, 3);
  });
});

describe("observeUpstream", () => {
  test("notifications on stream replies reach the observer; early exit closes the source", async () => {
    const seen: string[] = [];
    let returned = false;
    const events: UpstreamEvent[] = [
      { data: "", message: { jsonrpc: "2.0", method: "notifications/tools/list_changed" } },
      { data: "", message: { jsonrpc: "2.0", id: 1, result: {} } },
      { data: "", message: { jsonrpc: "2.0", method: "notifications/prompts/list_changed" } },
    ];
    const source: AsyncIterable<UpstreamEvent> = {
      [Symbol.asyncIterator]() {
        let i = 0;
        return {
          next: async () =>
            i < events.length
              ? { done: false, value: events[i++] as UpstreamEvent }
              : { done: true, value: undefined },
          return: async () => {
            returned = true;
            return { done: true, value: undefined };
          },
        };
      },
    };
    const reply: UpstreamReply = { kind: "stream", events: source, close: () => {} };
    const inner = { kind: "http", stateless: async () => reply } as unknown as Upstream;
    const up = observeUpstream(inner, (m) => seen.push("method" in m ? m.method : "response"));
    const r = await up.stateless("", [], {} as never);
    assert.equal(r.kind, "stream");
    for await (const ev of (r as UpstreamReply & { kind: "stream" }).events) {
      if (ev.message && !("method" in ev.message)) break;
    }
    assert.deepEqual(seen, ["notifications/tools/list_changed", "response"]);
    assert.equal(returned, true);
  });
});
