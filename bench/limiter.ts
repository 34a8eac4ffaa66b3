/**
 * Micro-benchmark: the cost of a rate-limit decision (DESIGN.md convention 8), in process.
 *
 *   node bench/limiter.ts [--iterations 200000] [--concurrency 1]
 *
 * Cases, each a `tools/call` on a session:
 *   unlimited        a route without limits (the stage returns at once, no await)
 *   one limit        session only
 *   typical          key + session + tenant + tool override + in-flight cap (five counters, all or
 *                    nothing), with the slot given back as the gateway does when the call ends
 *   refused          the same five, when the session limit refuses (the 429 path: refund + error)
 *   auth check       the failed-authentication check for an address without failures (one Map lookup)
 *
 * Prints µs per decision (median of 5 rounds after a warm-up round) and heap growth per decision.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { Writable } from "node:stream";
import { parseArgs } from "node:util";
import type { Principal } from "../src/auth/types.ts";
import { parseConfig } from "../src/config/load.ts";
import type { RequestContext, Route } from "../src/context.ts";
import type { RpcMessage } from "../src/listen/jsonrpc.ts";
import { createLogger } from "../src/observability/logger.ts";
import { AuthFailureLimiter } from "../src/ratelimit/auth-failures.ts";
import { CallLimiter } from "../src/ratelimit/limiter.ts";

const { values } = parseArgs({
  options: {
    iterations: { type: "string", default: "200000" },
    concurrency: { type: "string", default: "1" },
  },
});
const ITERATIONS = Number(values.iterations);
const CONCURRENCY = Number(values.concurrency);

const log = createLogger({ level: "silent", destination: new Writable({ write: (_c, _e, cb) => cb() }) });

function limiterFor(limits: unknown): CallLimiter {
  const cfg = parseConfig(
    { servers: { a: { route: "/a", upstream: { urls: ["http://127.0.0.1:9/mcp"] }, limits } } },
    {},
  );
  return new CallLimiter(cfg.servers, log);
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
  };
}

const HUGE = "1000000000/d";
const cases: { name: string; limiter: CallLimiter; sessions: number; release: boolean }[] = [
  { name: "unlimited", limiter: new CallLimiter({}, log), sessions: 1, release: false },
  { name: "one limit", limiter: limiterFor({ session: HUGE }), sessions: 1, release: false },
  {
    name: "typical (5 counters)",
    limiter: limiterFor({
      key: HUGE,
      session: HUGE,
      tenant: HUGE,
      tools: { search: HUGE },
      concurrency: { session: 1_000_000 },
    }),
    sessions: 64,
    release: true,
  },
  {
    name: "refused (429 path)",
    limiter: limiterFor({
      key: HUGE,
      session: "1/d",
      tenant: HUGE,
      tools: { search: HUGE },
      concurrency: { session: 1_000_000 },
    }),
    sessions: 1,
    release: true,
  },
];

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
  await run(c.limiter, Math.min(ITERATIONS, 20_000), c.sessions, c.release); // warm-up
  const times: number[] = [];
  const heap: number[] = [];
  for (let round = 0; round < 5; round++) {
    globalThis.gc?.();
    const before = process.memoryUsage().heapUsed;
    const t0 = performance.now();
    await run(c.limiter, ITERATIONS, c.sessions, c.release);
    times.push(((performance.now() - t0) * 1000) / ITERATIONS);
    heap.push((process.memoryUsage().heapUsed - before) / ITERATIONS);
  }
  rows.push(`| ${c.name} | ${median(times).toFixed(2)} | ${median(heap).toFixed(0)} |`);
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
  rows.push(`| auth check (address without failures) | ${median(times).toFixed(3)} | – |`);
}

process.stdout.write(
  [
    `Rate-limit decision cost, Node ${process.version}, ${ITERATIONS} decisions per round, ${CONCURRENCY} in flight`,
    "",
    "| case | µs / decision | heap bytes / decision (GC noise) |",
    "|---|---:|---:|",
    ...rows,
    "",
  ].join("\n"),
);
