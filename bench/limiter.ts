/**
 * Micro-benchmark: the cost of a rate-limit decision, in process.
 *
 *   node bench/limiter.ts [--iterations 200000] [--concurrency 1] [--redis [URL]] [--redis-iterations 5000]
 *
 * Cases, each a `tools/call` on a session:
 *   unlimited        a route without limits (the stage returns at once, no await)
 *   one limit        session only
 *   typical          key + session + tenant + tool override + in-flight cap (five counters, all or
 *                    nothing), with the slot given back as the gateway does when the call ends
 *   refused          the same five, when the session limit refuses (the 429 path: refund + error)
 *   auth check       the failed-authentication check for an address without failures (one Map lookup)
 *
 * With `--redis` (URL default redis://127.0.0.1:6379) the typical and refused cases run again with
 * the counters in Redis (RedisCounterStore, distributed mode; keys under a prefix of this run,
 * removed at the end), and the Redis commands each decision costs are counted in an untimed pass
 * with MONITOR: those the client sent (round trips, when one at a time) and those the scripts ran.
 *
 * Prints µs per decision (median of 5 rounds after a warm-up round) and heap growth per decision.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { Writable } from "node:stream";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import type { Principal } from "../src/auth/types.ts";
import { parseConfig } from "../src/config/load.ts";
import type { RequestContext, Route } from "../src/context.ts";
import type { RpcMessage } from "../src/mcp/jsonrpc.ts";
import { createLogger } from "../src/observability/logger.ts";
import { AuthFailureLimiter } from "../src/ratelimit/auth-failures.ts";
import { CallLimiter } from "../src/ratelimit/limiter.ts";
import { RedisCounterStore } from "../src/store/redis/counters.ts";
import type { CounterStore } from "../src/store/types.ts";

const { values } = parseArgs({
  options: {
    iterations: { type: "string", default: "200000" },
    concurrency: { type: "string", default: "1" },
    redis: { type: "string" },
    "redis-iterations": { type: "string", default: "5000" },
  },
  // `--redis` alone: the default URL.
  args: process.argv
    .slice(2)
    .map((a, i, all) =>
      a === "--redis" && (all[i + 1] === undefined || all[i + 1]?.startsWith("--")) ? "--redis=" : a,
    ),
});
const ITERATIONS = Number(values.iterations);
const CONCURRENCY = Number(values.concurrency);
const REDIS_URL = values.redis === "" ? "redis://127.0.0.1:6379" : values.redis;
const REDIS_ITERATIONS = Number(values["redis-iterations"]);

const log = createLogger({ level: "silent", destination: new Writable({ write: (_c, _e, cb) => cb() }) });

function limiterFor(limits: unknown, store?: CounterStore): CallLimiter {
  const cfg = parseConfig(
    { servers: { a: { route: "/a", upstream: { urls: ["http://127.0.0.1:9/mcp"] }, limits } } },
    {},
  );
  return new CallLimiter(cfg.servers, log, store);
}

const principal: Principal = {
  id: "key:a:acme:bench",
  method: "apiKey",
  tenant: "acme",
  subject: "bench",
  scopes: [],
};
const route = { name: "a", config: { auth: ["apiKey"] }, upstream: {} } as unknown as Route;
const message = {
  jsonrpc: "2.0",
  id: 1,
  method: "tools/call",
  params: { name: "search", arguments: {} },
} as RpcMessage;

function ctx(sessionId: string): RequestContext {
  return {
    requestId: "r",
    startedAt: 0,
    req: {
      headers: { "mcp-session-id": sessionId },
      socket: { remoteAddress: "203.0.113.9" },
    } as unknown as IncomingMessage,
    res: {} as ServerResponse,
    route,
    endpoint: "mcp",
    log,
    clientGone: new AbortController().signal,
    principal,
    messages: [message],
  } as unknown as RequestContext;
}

const HUGE = "1000000000/d";
const TYPICAL = {
  key: HUGE,
  session: HUGE,
  tenant: HUGE,
  tools: { search: HUGE },
  concurrency: { session: 1_000_000 },
};
const REFUSED = { ...TYPICAL, session: "1/d" };

interface Case {
  name: string;
  limiter: CallLimiter;
  sessions: number;
  release: boolean;
  /** Counters in Redis: fewer iterations, and the commands per decision counted. */
  redis?: RedisCounterStore;
}

const cases: Case[] = [
  { name: "unlimited", limiter: new CallLimiter({}, log), sessions: 1, release: false },
  { name: "one limit", limiter: limiterFor({ session: HUGE }), sessions: 1, release: false },
  { name: "typical (5 counters)", limiter: limiterFor(TYPICAL), sessions: 64, release: true },
  { name: "refused (429 path)", limiter: limiterFor(REFUSED), sessions: 1, release: true },
];

const redisPrefix = `bench:limiter:${process.pid}:${Date.now().toString(36)}:`;
const redisStores: RedisCounterStore[] = [];
if (REDIS_URL !== undefined) {
  for (const [name, limits, sessions] of [
    ["typical (5 counters), Redis", TYPICAL, 64],
    ["refused (429 path), Redis", REFUSED, 1],
  ] as const) {
    const store = new RedisCounterStore({
      // A slow answer must not turn into a local decision here (the edge's timeout is 250 ms).
      client: { url: REDIS_URL, commandTimeoutMs: 5000 },
      keyPrefix: `${redisPrefix}${redisStores.length}:`,
    });
    await store.ready();
    redisStores.push(store);
    cases.push({ name, limiter: limiterFor(limits, store), sessions, release: true, redis: store });
  }
}

/**
 * Redis commands per decision, counted with MONITOR (untimed): sent by the client, and run inside
 * scripts (MONITOR shows those with source "lua"). Gives still pending at the end are flushed first.
 */
async function redisCommands(c: Case, n: number): Promise<{ sent: number; scripted: number }> {
  const monitor = new Redis(REDIS_URL as string);
  const watch = await monitor.monitor();
  let sent = 0;
  let scripted = 0;
  watch.on("monitor", (_time: string, args: string[], source: string) => {
    if (!args.some((a) => a.startsWith(redisPrefix))) return;
    if (source === "lua") scripted++;
    else sent++;
  });
  await new Promise((r) => setTimeout(r, 100));
  await run(c.limiter, n, c.sessions, c.release);
  await new Promise((r) => setTimeout(r, 200));
  watch.disconnect();
  monitor.disconnect();
  return { sent: sent / n, scripted: scripted / n };
}

async function run(limiter: CallLimiter, n: number, sessions: number, release: boolean): Promise<void> {
  const contexts = Array.from({ length: sessions }, (_, i) => ctx(`session-${i}`));
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const c = contexts[next++ % sessions] as RequestContext;
      try {
        const p = limiter.admit(c);
        if (p) await p;
      } catch {
        // the refused case
      }
      if (release) limiter.release(c);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

const rows: string[] = [];
for (const c of cases) {
  const n = c.redis ? REDIS_ITERATIONS : ITERATIONS;
  await run(c.limiter, Math.min(n, 20_000), c.sessions, c.release); // warm-up
  const times: number[] = [];
  const heap: number[] = [];
  for (let round = 0; round < 5; round++) {
    globalThis.gc?.();
    const before = process.memoryUsage().heapUsed;
    const t0 = performance.now();
    await run(c.limiter, n, c.sessions, c.release);
    times.push(((performance.now() - t0) * 1000) / n);
    heap.push((process.memoryUsage().heapUsed - before) / n);
  }
  let commands = "–";
  if (c.redis) {
    const fallbacks = c.redis.fallbackDecisions;
    const { sent, scripted } = await redisCommands(c, Math.min(n, 2000));
    commands = `${sent.toFixed(2)} sent; ${scripted.toFixed(2)} in scripts`;
    if (fallbacks > 0) commands += ` (warning: ${fallbacks} decisions used the local fallback)`;
  }
  rows.push(`| ${c.name} | ${median(times).toFixed(2)} | ${median(heap).toFixed(0)} | ${commands} |`);
}

{
  const auth = new AuthFailureLimiter({ text: "5/min", quota: 5, windowSec: 60 }, false, log);
  // Some other address has failures, so the check does its Map lookup.
  auth.failed({ headers: {}, socket: { remoteAddress: "198.51.100.1" } } as unknown as IncomingMessage);
  for (let i = 0; i < 5; i++)
    auth.failed({ headers: {}, socket: { remoteAddress: "198.51.100.1" } } as unknown as IncomingMessage);
  await new Promise((r) => setTimeout(r, 10));
  const c = ctx("s");
  const times: number[] = [];
  for (let round = 0; round < 5; round++) {
    const t0 = performance.now();
    for (let i = 0; i < ITERATIONS; i++) auth.check(c);
    times.push(((performance.now() - t0) * 1000) / ITERATIONS);
  }
  rows.push(`| auth check (address without failures) | ${median(times).toFixed(3)} | – | – |`);
}

if (redisStores.length > 0) {
  const admin = new Redis(REDIS_URL as string);
  for (const store of redisStores) await store.close();
  let cursor = "0";
  do {
    const [next, keys] = await admin.scan(cursor, "MATCH", `${redisPrefix}*`, "COUNT", 1000);
    cursor = next;
    if (keys.length > 0) await admin.unlink(...keys);
  } while (cursor !== "0");
  admin.disconnect();
}

process.stdout.write(
  [
    `Rate-limit decision cost, Node ${process.version}, ${ITERATIONS} decisions per round (Redis: ${REDIS_ITERATIONS}), ${CONCURRENCY} in flight`,
    "",
    "| case | µs / decision | heap bytes / decision (GC noise) | Redis commands / decision |",
    "|---|---:|---:|---|",
    ...rows,
    "",
  ].join("\n"),
);
