/**
 * Rate limits, the pure and in-process parts: the `N/unit burst B` syntax and its boot validation,
 * all-or-nothing counting in the memory store, the stage on hand-built request contexts (what is
 * counted, keys per tenant, `ctx.refusal`), the 429's headers, and client address keys.
 */
import assert from "node:assert/strict";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Writable } from "node:stream";
import { test } from "node:test";
import type { Principal } from "../../src/auth/types.ts";
import { parseConfig } from "../../src/config/load.ts";
import type { ServerConfig } from "../../src/config/schema.ts";
import type { RequestContext, Route } from "../../src/context.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import type { RpcMessage } from "../../src/mcp/jsonrpc.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { addressKey } from "../../src/ratelimit/auth-failures.ts";
import { CallLimiter, makePolicy, refusalError } from "../../src/ratelimit/limiter.ts";
import { parseRate } from "../../src/config/rate.ts";
import { MemoryCounterStore } from "../../src/store/memory/counters.ts";

// ---------------------------------------------------------------------------------------- syntax

test("parseRate: N/unit, durations as units, burst narrows the window", () => {
  const cases: [string, number, number][] = [
    ["600/min", 600, 60],
    ["600/minute", 600, 60],
    ["5/s", 5, 1],
    ["100/h", 100, 3600],
    ["1000/day", 1000, 86_400],
    ["50/10s", 50, 10],
    ["300/5m", 300, 300],
    [" 600 / min ", 600, 60],
    ["600/min burst 100", 100, 10],
    ["120/min burst 20", 20, 10],
    ["7/min burst 2", 2, 18], // 17.1 s, rounded up to whole seconds
    ["600/min burst 600", 600, 60],
    ["5/s burst 5", 5, 1],
  ];
  for (const [text, quota, windowSec] of cases) {
    const r = parseRate(text);
    assert.deepEqual([r.quota, r.windowSec], [quota, windowSec], text);
  }
});

test("parseRate: bad rates fail with a message that says what is wrong", () => {
  const cases: [string, RegExp][] = [
    ["", /is not a rate/],
    ["600", /is not a rate/],
    ["600/minn", /is not a time unit/],
    ["0/min", /between 1 and/],
    ["-1/min", /is not a rate/],
    ["1.5/min", /is not a rate/],
    ["10/1.5s", /whole number of seconds/],
    ["10/500ms", /whole number of seconds/],
    ["600/min burst 0", /burst must be between 1 and the count/],
    ["600/min burst 601", /burst must be between 1 and the count/],
    ["5/s burst 2", /under a second/],
    ["600/min burst", /is not a rate/],
  ];
  for (const [text, message] of cases) assert.throws(() => parseRate(text), message, text);
});

function config(limits: unknown, extra: Record<string, unknown> = {}) {
  return {
    servers: { a: { route: "/a/mcp", upstream: { urls: ["http://127.0.0.1:9/mcp"] }, limits } },
    ...extra,
  };
}

test("config: limits are validated at boot, with the path of the bad one", () => {
  const cfg = parseConfig(
    config({
      key: "600/min",
      session: "120/min burst 20",
      tools: { search: "30/min" },
      concurrency: { session: 8 },
    }),
    {},
  );
  const limits = cfg.servers["a"]?.limits;
  assert.deepEqual(limits?.key, { text: "600/min", quota: 600, windowSec: 60 });
  assert.deepEqual(limits?.session, { text: "120/min burst 20", quota: 20, windowSec: 10 });
  assert.equal(limits?.tools["search"]?.quota, 30);
  assert.equal(limits?.concurrency.session, 8);
  assert.equal(cfg.rateLimits.authFailures !== "off" && cfg.rateLimits.authFailures.quota, 60);
  const bad: [unknown, RegExp][] = [
    [{ key: "lots" }, /servers\.a\.limits\.key: "lots" is not a rate/],
    [{ tools: { "bad name": "1/s" } }, /servers\.a\.limits\.tools/],
    [{ tools: { search: "1/fortnight" } }, /servers\.a\.limits\.tools\.search/],
    [{ concurrency: { session: 0 } }, /servers\.a\.limits\.concurrency\.session/],
    [{ sessions: "10/min" }, /servers\.a\.limits/],
  ];
  for (const [limits, message] of bad) {
    assert.throws(
      () => parseConfig(config(limits), {}),
      (err: unknown) =>
        err instanceof GatewayError && err.code === "EDGE_CONFIG_INVALID" && message.test(err.message),
      JSON.stringify(limits),
    );
  }
  assert.equal(
    parseConfig(config(undefined, { rateLimits: { authFailures: "off" } }), {}).rateLimits.authFailures,
    "off",
  );
  assert.throws(
    () => parseConfig(config(undefined, { rateLimits: { authFailures: "many" } }), {}),
    /rateLimits\.authFailures/,
  );
});

// ----------------------------------------------------------------------------------------- store

test("memory store: a refused take consumes from no counter; concurrent takes are exact", async () => {
  const store = new MemoryCounterStore();
  const roomy = store.counter({ quota: 10, windowSec: 60 });
  const tight = store.counter({ quota: 2, windowSec: 60 });
  const both = () => [
    { counter: roomy, key: "k", points: 1 },
    { counter: tight, key: "k", points: 1 },
  ];
  const results = await Promise.all(Array.from({ length: 6 }, () => store.take(both())));
  assert.deepEqual(
    results.map((r) => r?.index),
    [undefined, undefined, 1, 1, 1, 1],
  );
  assert.ok((results[2]?.msBeforeNext ?? 0) > 59_000);
  // roomy was charged only for the two admitted takes: 8 more fit.
  for (let i = 0; i < 8; i++)
    assert.equal(await store.take([{ counter: roomy, key: "k", points: 1 }]), undefined);
  assert.equal((await store.take([{ counter: roomy, key: "k", points: 1 }]))?.index, 0);
  // Other keys are other counters.
  assert.equal(await store.take(both().map((t) => ({ ...t, key: "other" }))), undefined);
});

test("memory store: in-flight counters give back, and forget idle keys", async () => {
  const store = new MemoryCounterStore();
  const inflight = store.counter({ quota: 2, windowSec: 0 });
  const take = () => store.take([{ counter: inflight, key: "s", points: 1 }]);
  assert.equal(await take(), undefined);
  assert.equal(await take(), undefined);
  const refused = await take();
  assert.deepEqual(refused, { index: 0, msBeforeNext: -1 });
  store.give(inflight, "s", 1);
  assert.equal(await take(), undefined, "a slot came back");
  store.give(inflight, "s", 1);
  store.give(inflight, "s", 1);
  await take(); // runs after the gives (one chain)
  const rl = (inflight as unknown as { rl: { get(k: string): Promise<{ consumedPoints: number } | null> } })
    .rl;
  assert.equal((await rl.get("s"))?.consumedPoints, 1);
  store.give(inflight, "s", 1);
  await store.take([]);
  assert.equal(await rl.get("s"), null, "an idle key is dropped");
});

// ----------------------------------------------------------------------------------------- stage

const lines: string[] = [];
const log = createLogger({
  level: "debug",
  destination: new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  }),
});

function limiterFor(limits: unknown): CallLimiter {
  const cfg = parseConfig(config(limits), {});
  return new CallLimiter(cfg.servers, log);
}

const ROUTE = { name: "a", config: {} as ServerConfig, upstream: {} } as unknown as Route;

function principal(id: string, tenant: string | null): Principal {
  return { id, method: "apiKey", tenant, subject: id, scopes: [] };
}

function ctxFor(messages: RpcMessage[], p: Principal, sessionId?: string): RequestContext {
  return {
    requestId: "r",
    startedAt: 0,
    req: { headers: sessionId ? { "mcp-session-id": sessionId } : {}, url: "/a/mcp" } as IncomingMessage,
    res: {} as ServerResponse,
    route: ROUTE,
    endpoint: "mcp",
    log,
    clientGone: new AbortController().signal,
    principal: p,
    messages,
  } as unknown as RequestContext;
}

const toolCall = (name: unknown, id = 1): RpcMessage =>
  ({ jsonrpc: "2.0", id, method: "tools/call", params: { name, arguments: {} } }) as RpcMessage;

async function outcome(limiter: CallLimiter, ctx: RequestContext): Promise<string> {
  try {
    await limiter.admit(ctx);
    return "ok";
  } catch (err) {
    assert.ok(err instanceof GatewayError && err.code === "EDGE_RATE_LIMITED", String(err));
    return String((err.data as { limit: string }).limit);
  }
}

test("stage: notifications, responses and requests without a body are not calls", async () => {
  const limiter = limiterFor({ key: "1/min" });
  const alice = principal("alice", "t");
  const note = { jsonrpc: "2.0", method: "notifications/progress" } as RpcMessage;
  const response = { jsonrpc: "2.0", id: 5, result: {} } as RpcMessage;
  assert.equal(limiter.admit(ctxFor([note], alice)), undefined, "no await for a notification");
  assert.equal(limiter.admit(ctxFor([response], alice)), undefined);
  const get = ctxFor([], alice);
  delete get.messages;
  assert.equal(limiter.admit(get), undefined);
  assert.equal(await outcome(limiter, ctxFor([toolCall("x")], alice)), "ok");
  assert.equal(await outcome(limiter, ctxFor([toolCall("x")], alice)), "key");
  // A route without limits costs nothing.
  assert.equal(new CallLimiter({}, log).admit(ctxFor([toolCall("x")], alice)), undefined);
});

test("stage: a batch counts each request; all or nothing", async () => {
  const limiter = limiterFor({ key: "3/min" });
  const bob = principal("bob", "t");
  assert.equal(await outcome(limiter, ctxFor([toolCall("x", 1), toolCall("y", 2)], bob)), "ok");
  assert.equal(await outcome(limiter, ctxFor([toolCall("x", 1), toolCall("y", 2)], bob)), "key");
  assert.equal(
    await outcome(limiter, ctxFor([toolCall("x", 3)], bob)),
    "ok",
    "the refused batch took nothing",
  );
});

test("stage: counters are per tenant; the same principal id in another tenant has its own", async () => {
  const limiter = limiterFor({ key: "1/min", tenant: "2/min" });
  assert.equal(await outcome(limiter, ctxFor([toolCall("x")], principal("p", "acme"))), "ok");
  assert.equal(await outcome(limiter, ctxFor([toolCall("x")], principal("p", "globex"))), "ok");
  assert.equal(await outcome(limiter, ctxFor([toolCall("x")], principal("p", "acme"))), "key");
  assert.equal(await outcome(limiter, ctxFor([toolCall("x")], principal("q", "acme"))), "ok");
  assert.equal(await outcome(limiter, ctxFor([toolCall("x")], principal("r", "acme"))), "tenant");
});

test("stage: tool names come from the body, validated; odd names share one bucket", async () => {
  const limiter = limiterFor({ tool: "1/min", tools: { search: "2/min" } });
  const p = principal("tools", "t");
  const ctx = ctxFor([toolCall("search")], p);
  assert.equal(await outcome(limiter, ctx), "ok");
  assert.equal(await outcome(limiter, ctxFor([toolCall("search")], p)), "ok");
  const refused = ctxFor([toolCall("search")], p);
  assert.equal(await outcome(limiter, refused), "tool");
  assert.deepEqual(refused.refusal, {
    limit: "tool",
    tool: "search",
    retryAfterMs: refused.refusal?.retryAfterMs,
    policy: '"tool.search";q=2;w=60',
  });
  assert.equal(ctx.refusal, undefined, "an admitted call carries no refusal");
  assert.equal(await outcome(limiter, ctxFor([toolCall("other")], p)), "ok");
  assert.equal(await outcome(limiter, ctxFor([toolCall("other")], p)), "tool");
  // Invalid names: one shared bucket, no tool named in the answer.
  assert.equal(await outcome(limiter, ctxFor([toolCall("bad name")], p)), "ok");
  const odd = ctxFor([toolCall({ not: "a string" })], p);
  assert.equal(await outcome(limiter, odd), "tool");
  assert.equal(odd.refusal?.tool, undefined);
  assert.equal(odd.refusal?.policy, '"tool";q=1;w=60');
});

test("stage: session counters belong to the principal; in-flight slots are released", async () => {
  const limiter = limiterFor({ session: "1/min", concurrency: { session: 1 } });
  const mallory = principal("mallory", "t");
  const victim = principal("victim", "t");
  // Mallory naming the victim's session id spends only her own counter.
  assert.equal(await outcome(limiter, ctxFor([toolCall("x")], mallory, "sid-1")), "ok");
  const held = ctxFor([toolCall("x")], victim, "sid-1");
  assert.equal(await outcome(limiter, held), "ok");
  assert.ok(held.inflightSlot);
  const limiter2 = limiterFor({ concurrency: { session: 1 } });
  const a = ctxFor([toolCall("x")], victim, "s");
  assert.equal(await outcome(limiter2, a), "ok");
  const b = ctxFor([toolCall("x")], victim, "s");
  assert.equal(await outcome(limiter2, b), "concurrency");
  assert.equal(b.refusal?.retryAfterMs, 1000);
  limiter2.release(a);
  limiter2.release(a); // idempotent
  assert.equal(await outcome(limiter2, ctxFor([toolCall("x")], victim, "s")), "ok");
  assert.equal(await outcome(limiter2, ctxFor([toolCall("x")], victim, "s")), "concurrency");
  // Initialize counts against `initialize` (and key/tenant), never the session.
  const limiter3 = limiterFor({ initialize: "1/min", session: "1/min" });
  const init = { jsonrpc: "2.0", id: 0, method: "initialize", params: {} } as RpcMessage;
  assert.equal(await outcome(limiter3, ctxFor([init], victim)), "ok");
  assert.equal(await outcome(limiter3, ctxFor([init], victim)), "initialize");
});

// --------------------------------------------------------------------------------------- answer

test("the 429: Retry-After, RateLimit-Policy, RateLimit (draft-ietf-httpapi-ratelimit-headers-11)", () => {
  const store = new MemoryCounterStore();
  const session = makePolicy(store, "session", { quota: 120, windowSec: 60 });
  const { error, refusal } = refusalError(session, 11_200, undefined);
  assert.equal(error.status, 429);
  assert.deepEqual(error.headers, {
    "retry-after": "12",
    "ratelimit-policy": '"session";q=120;w=60',
    ratelimit: '"session";r=0;t=12',
  });
  assert.deepEqual(refusal, { limit: "session", retryAfterMs: 11_200, policy: '"session";q=120;w=60' });
  assert.deepEqual(error.data, refusal);
  assert.equal(
    error.message,
    'Rate limit "session" exceeded: 120 calls per session per 60s. Retry after 12s.',
  );
  const tool = makePolicy(store, "tool", { quota: 30, windowSec: 60 }, "search");
  const t = refusalError(tool, 300, "search");
  assert.equal(t.error.headers?.["retry-after"], "1", "never 0");
  assert.equal(t.error.headers?.["ratelimit"], '"tool.search";r=0;t=1');
  assert.match(
    t.error.message,
    /Rate limit "tool" \(search\) exceeded: 30 calls of this tool per principal per 60s/,
  );
});

// -------------------------------------------------------------------------------------- addresses

test("client address keys: IPv4 as is, IPv4-mapped as IPv4, IPv6 per /64", () => {
  assert.equal(addressKey("203.0.113.7"), "203.0.113.7");
  assert.equal(addressKey("::ffff:203.0.113.7"), "203.0.113.7");
  assert.equal(addressKey("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:DB8:1:2::9"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(addressKey("fe80::1%eth0"), "fe80:0:0:0::/64");
  assert.equal(addressKey("2001:0db8:0001:0002::1"), "2001:db8:1:2::/64");
  assert.equal(addressKey("64:ff9b::198.51.100.1"), "64:ff9b:0:0::/64");
});
