/**
 * The list cache's pure parts: which requests it takes part in, how keys are built (params, era,
 * tenant, authorization context), and the store decision from `ttlMs` / `cacheScope`
 * (2026-07-28 server/utilities/caching.mdx) or the session-era TTL. Frozen time, fixed vectors.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Principal } from "../../src/auth/types.ts";
import {
  authorizationContext,
  type CachePolicy,
  cacheableRequest,
  cacheKey,
  canonicalJson,
  decideStore,
  hitAnswer,
  type KeyInput,
  keyParams,
  LIST_CHANGED,
  LIST_METHODS,
} from "../../src/cache/key.ts";
import type { RpcMessage } from "../../src/mcp/jsonrpc.ts";

const POLICY: CachePolicy = {
  enabled: true,
  maxTtl: 600_000,
  sessionTtl: 0,
  sharePublic: true,
  maxEntries: 1000,
  maxBytes: 16 << 20,
  maxEntryBytes: 1 << 20,
};

const alice: Principal = {
  id: "key:s:acme:alice",
  method: "apiKey",
  tenant: "acme",
  subject: "alice",
  keyId: "k1",
  scopes: ["read", "write"],
  tools: ["a", "b"],
};

const req = (method: string, params?: unknown, id: string | number = 1): RpcMessage =>
  ({ jsonrpc: "2.0", id, method, ...(params !== undefined ? { params } : {}) }) as RpcMessage;

const META = {
  "io.modelcontextprotocol/protocolVersion": "2026-07-28",
  "io.modelcontextprotocol/clientCapabilities": {},
};

const base = (over: Partial<KeyInput> = {}): KeyInput => ({
  server: "s",
  tenant: "acme",
  principal: alice,
  era: { era: "stateless", version: "2026-07-28" },
  method: "tools/list",
  params: { _meta: META },
  ...over,
});

describe("cacheableRequest", () => {
  test("one list request of each cached method", () => {
    for (const m of Object.keys(LIST_METHODS)) assert.ok(cacheableRequest([req(m, { _meta: META })], false));
  });

  const refused: [string, RpcMessage[], boolean][] = [
    ["tools/call", [req("tools/call", { name: "a" })], false],
    ["resources/read", [req("resources/read", { uri: "x" })], false],
    ["a batch", [req("tools/list")], true],
    ["two messages", [req("tools/list"), req("prompts/list", undefined, 2)], false],
    ["a notification", [{ jsonrpc: "2.0", method: "tools/list" } as RpcMessage], false],
    ["MRTR retry with inputResponses", [req("tools/list", { inputResponses: {} })], false],
    ["MRTR retry with requestState", [req("prompts/list", { requestState: "s" })], false],
    ["array params", [req("tools/list", [1])], false],
  ];
  for (const [name, messages, batch] of refused) {
    test(`not ${name}`, () => assert.equal(cacheableRequest(messages, batch), undefined));
  }
});

describe("keys", () => {
  test("canonical JSON ignores key order, keeps array order", () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [2, 1], c: null } }), '{"a":{"c":null,"d":[2,1]},"b":1}');
    assert.equal(canonicalJson({ a: undefined, b: 1 }), '{"b":1}');
  });

  test("volatile _meta keys (progress token, trace context) are not part of the key; the rest is", () => {
    const a = keyParams({ cursor: "c", _meta: { ...META, progressToken: 7, traceparent: "00-x" } });
    const b = keyParams({ _meta: { ...META, tracestate: "t", baggage: "b" }, cursor: "c" });
    assert.equal(a, b);
    assert.notEqual(
      keyParams({ _meta: { ...META, "io.modelcontextprotocol/clientCapabilities": { sampling: {} } } }),
      keyParams({ _meta: META }),
    );
  });

  test("same request, same key; the key is a fixed-length hash", () => {
    assert.equal(cacheKey(base()), cacheKey(base()));
    assert.match(cacheKey(base({ params: { cursor: "x".repeat(10_000) } })), /^[A-Za-z0-9_-]{43}$/);
  });

  const differs: [string, Partial<KeyInput>][] = [
    ["server", { server: "t" }],
    ["tenant", { tenant: "globex" }],
    ["no tenant", { tenant: null }],
    ["method", { method: "prompts/list" }],
    ["cursor (each page its own entry)", { params: { cursor: "p2", _meta: META } }],
    ["protocol version", { era: { era: "stateless", version: "2026-12-01" } }],
    ["era", { era: { era: "session", version: "2026-07-28", capabilities: {} } }],
    ["public (no principal)", { principal: undefined }],
    ["another principal", { principal: { ...alice, id: "key:s:acme:bob", subject: "bob" } }],
    ["other scopes", { principal: { ...alice, scopes: ["read"] } }],
    ["another tool allow-list", { principal: { ...alice, tools: ["a"] } }],
    ["no tool allow-list", { principal: { ...alice, tools: undefined } }],
    ["a rotated key (new key id)", { principal: { ...alice, keyId: "k2" } }],
    ["another OAuth client", { principal: { ...alice, clientId: "other" } }],
  ];
  for (const [name, over] of differs) {
    test(`differs by ${name}`, () => assert.notEqual(cacheKey(base(over)), cacheKey(base())));
  }

  test("session era: other initialize capabilities, other key", () => {
    const s = (capabilities: unknown) =>
      cacheKey(base({ era: { era: "session", version: "2025-11-25", capabilities }, params: undefined }));
    assert.equal(s({ roots: {}, sampling: {} }), s({ sampling: {}, roots: {} }));
    assert.notEqual(s({ sampling: {} }), s({}));
  });

  test("the same authorization context in another order is the same context", () => {
    assert.equal(
      authorizationContext(alice),
      authorizationContext({ ...alice, scopes: ["write", "read"], tools: ["b", "a"] }),
    );
  });

  test("the public key of a request is the same for every principal of the tenant", () => {
    const bob: Principal = { ...alice, id: "key:s:acme:bob", subject: "bob", tools: ["a"] };
    assert.equal(cacheKey(base({ principal: undefined })), cacheKey({ ...base(), principal: undefined }));
    assert.notEqual(cacheKey(base({ principal: bob })), cacheKey(base()));
  });
});

describe("decideStore", () => {
  const ok = (result: unknown, id: string | number = 1): RpcMessage =>
    ({ jsonrpc: "2.0", id, result }) as RpcMessage;
  const d = (m: RpcMessage, era: "session" | "stateless" = "stateless", p: Partial<CachePolicy> = {}) =>
    decideStore(m, era, { ...POLICY, ...p }, 100);

  test("ttlMs > 0 private: stored private for ttlMs, ttlMs removed from the stored text", () => {
    const r = d(ok({ tools: [], ttlMs: 30_000, cacheScope: "private" }));
    assert.deepEqual(r, {
      ttlMs: 30_000,
      scope: "private",
      freshMs: 30_000,
      resultText: '{"tools":[],"cacheScope":"private"}',
    });
  });

  test('"public" is shared (tenant-wide) unless sharePublic is off', () => {
    assert.equal(d(ok({ tools: [], ttlMs: 1, cacheScope: "public" }))?.scope, "public");
    assert.equal(
      d(ok({ tools: [], ttlMs: 1, cacheScope: "public" }), "stateless", { sharePublic: false })?.scope,
      "private",
    );
  });

  test("missing or unknown cacheScope is private", () => {
    assert.equal(d(ok({ tools: [], ttlMs: 5 }))?.scope, "private");
    assert.equal(d(ok({ tools: [], ttlMs: 5, cacheScope: "shared" }))?.scope, "private");
  });

  const notStored: [string, RpcMessage][] = [
    ["ttlMs 0 (immediately stale)", ok({ tools: [], ttlMs: 0, cacheScope: "public" })],
    ["ttlMs absent (assume 0)", ok({ tools: [], cacheScope: "public" })],
    ["ttlMs negative (treat as 0)", ok({ tools: [], ttlMs: -5 })],
    ["ttlMs not a number", ok({ tools: [], ttlMs: "60000" })],
    ["an error response", { jsonrpc: "2.0", id: 1, error: { code: -32603, message: "x" } } as RpcMessage],
    ["input_required", ok({ resultType: "input_required", inputRequests: {}, ttlMs: 9 })],
    ["a non-object result", ok([1, 2])],
    ["a request", req("tools/list")],
  ];
  for (const [name, m] of notStored) {
    test(`not stored: ${name}`, () => assert.equal(d(m), undefined));
  }

  test('resultType "complete" is stored', () => {
    assert.ok(d(ok({ resultType: "complete", tools: [], ttlMs: 5 })));
  });

  test("maxTtl caps the store time, not the freshness the upstream gave", () => {
    const r = d(ok({ tools: [], ttlMs: 3_600_000 }), "stateless", { maxTtl: 60_000 });
    assert.equal(r?.ttlMs, 60_000);
    assert.equal(r?.freshMs, 3_600_000);
  });

  test("over maxEntryBytes: not stored; caching off: not stored", () => {
    const m = ok({ tools: [], ttlMs: 5 });
    assert.equal(decideStore(m, "stateless", { ...POLICY, maxEntryBytes: 99 }, 100), undefined);
    assert.equal(decideStore(m, "stateless", { ...POLICY, enabled: false }, 100), undefined);
  });

  test("session era: only with sessionTtl, always private, upstream hints ignored", () => {
    assert.equal(d(ok({ tools: [] }), "session"), undefined);
    const r = d(ok({ tools: [], cacheScope: "public" }), "session", { sessionTtl: 5000 });
    assert.equal(r?.ttlMs, 5000);
    assert.equal(r?.scope, "private");
    assert.equal(r?.freshMs, undefined);
  });
});

describe("hitAnswer", () => {
  test("the client's own id, and the upstream freshness left as ttlMs", () => {
    const text = hitAnswer("abc", { resultText: '{"tools":[]}', freshUntil: 10_500 }, 10_000);
    assert.deepEqual(JSON.parse(text), { jsonrpc: "2.0", id: "abc", result: { ttlMs: 500, tools: [] } });
    assert.deepEqual(JSON.parse(hitAnswer(7, { resultText: "{}", freshUntil: 9_000 }, 10_000)), {
      jsonrpc: "2.0",
      id: 7,
      result: { ttlMs: 0 },
    });
  });

  test("session era: no ttlMs added", () => {
    const text = hitAnswer(3, { resultText: '{"prompts":[]}', freshUntil: undefined }, 0);
    assert.deepEqual(JSON.parse(text), { jsonrpc: "2.0", id: 3, result: { prompts: [] } });
  });
});

test("list-changed notifications map to the kinds they drop", () => {
  assert.deepEqual(LIST_CHANGED, {
    "notifications/tools/list_changed": "tools",
    "notifications/resources/list_changed": "resources",
    "notifications/prompts/list_changed": "prompts",
  });
  assert.equal(LIST_METHODS["resources/templates/list"], "resources");
});
