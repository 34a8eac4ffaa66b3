/**
 * Micro-benchmarks of the edge's hot functions, with the real classes from src/ in one process:
 *
 * - credential check: an API key through `Authenticator` (header parsing, `ApiKeyChecker`,
 *   the SQLite key store behind its record cache; the key made by `KeyService`, as the admin API
 *   does); a JWT through `Authenticator` + `OAuthVerifier` with warm JWKS (the verified-token cache
 *   hit a session's next calls take, and a new token each time: the ES256 verification itself);
 * - limiter decision: `CallLimiter.admit` + `release` with the e2e full pipeline's limits (key,
 *   session, tool, in-flight cap), counters in memory (embedded) and in Redis (distributed);
 * - session lookup: `SessionManager.load` over the memory and SQLite stores (the hot cache hit of
 *   every call), `SqliteSessionStore.get` (a miss), `RedisSessionStore.get`, and
 *   `SessionManager.load` in distributed mode (the hot copy while fresh);
 * - audit enqueue: a `requestEndChannel.publish` of a tools/call with `AuditLog` subscribed (the
 *   draft copy and queue push on the request path), and the flush per record (finalize, chain,
 *   SQLite batch insert: off the request path).
 *
 *   node bench/micro.ts [--quick] [--rounds N] [--ops N] [--out FILE] [--json FILE]
 *
 * ns/op: median over rounds (after a warm-up round) of the wall time of `ops` operations divided by
 * `ops`. Async operations are awaited one after the other (in flight 1), or `in flight` at once.
 * Redis groups need Redis at BENCH_REDIS_URL (default redis://127.0.0.1:6379); they are skipped,
 * with the reason, when it does not answer. Their keys live under a prefix of this run, removed at
 * the end.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { parseArgs } from "node:util";
import { KeyService } from "../src/admin/keys.ts";
import { AuditLog } from "../src/audit/log.ts";
import { argsPolicy } from "../src/audit/record.ts";
import { SqliteAuditStore } from "../src/store/sqlite/audit.ts";
import { Authenticator } from "../src/auth/authenticate.ts";
import { OAuthVerifier } from "../src/auth/oauth.ts";
import type { Principal } from "../src/auth/types.ts";
import { parseConfig } from "../src/config/load.ts";
import type { Config } from "../src/config/schema.ts";
import type { RequestContext, Route } from "../src/context.ts";
import { Egress } from "../src/egress/index.ts";
import type { RpcMessage } from "../src/mcp/jsonrpc.ts";
import { type RequestEndEvent, requestEndChannel } from "../src/observability/channels.ts";
import { createLogger } from "../src/observability/logger.ts";
import { CallLimiter } from "../src/ratelimit/limiter.ts";
import { RedisCounterStore } from "../src/store/redis/counters.ts";
import { mintSessionId, SessionManager } from "../src/session/manager.ts";
import { StreamRegistry } from "../src/session/streams.ts";
import { MemorySessionStore } from "../src/store/memory/sessions.ts";
import { RedisSessionStore } from "../src/store/redis/sessions.ts";
import { openDatabase } from "../src/store/sqlite/db.ts";
import { SqliteApiKeyStore } from "../src/store/sqlite/api-keys.ts";
import { SqliteSessionStore } from "../src/store/sqlite/sessions.ts";
import type { SessionRecord, SessionStore } from "../src/store/types.ts";
import type { Upstream } from "../src/upstream/types.ts";
import { REDIS_URL, removeAllStores, removeStore, servicesDown, uniqueStore } from "./lib/distributed.ts";
import { startIssuer } from "./lib/jwt.ts";
import { commandLine, loadNow, machine } from "./lib/machine.ts";
import { REPO_ROOT } from "./lib/proc.ts";
import { renderMicro } from "./lib/report.ts";
import { median } from "./lib/stats.ts";
import type { MicroCase, MicroResult } from "./lib/types.ts";

const { values: opt } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    rounds: { type: "string" },
    ops: { type: "string" },
    out: { type: "string" },
    json: { type: "string" },
  },
});
const ROUNDS = Number(opt.rounds ?? (opt.quick ? 3 : 7));
/** Operations per round for cheap (in-memory) cases; network and crypto cases take fewer. */
const OPS = Number(opt.ops ?? (opt.quick ? 10_000 : 100_000));
const outFile = path.resolve(
  REPO_ROOT,
  opt.out ?? (opt.quick ? "bench/results/micro-quick.md" : "bench/results/micro.md"),
);

const log = createLogger({ level: "silent", destination: new Writable({ write: (_c, _e, cb) => cb() }) });
const cases: MicroCase[] = [];
const skipped: Record<string, string> = {};

function note(line: string): void {
  process.stderr.write(`${line}\n`);
}

/**
 * Times `ops` calls of `fn(i)` per round, `inFlight` at once (1: awaited one by one; a synchronous
 * fn is not awaited at all). Records the median ns/op.
 */
async function bench(
  group: string,
  name: string,
  fn: (i: number) => unknown,
  o: { ops?: number; inFlight?: number; note?: string; between?: () => Promise<void> } = {},
): Promise<void> {
  const ops = o.ops ?? OPS;
  const inFlight = o.inFlight ?? 1;
  let next = 0;
  const runRound = async (n: number): Promise<number> => {
    await o.between?.();
    const t0 = process.hrtime.bigint();
    if (inFlight === 1) {
      for (let i = 0; i < n; i++) {
        const r = fn(next++);
        if (r instanceof Promise) await r;
      }
    } else {
      let left = n;
      await Promise.all(
        Array.from({ length: inFlight }, async () => {
          while (left-- > 0) await fn(next++);
        }),
      );
    }
    return Number(process.hrtime.bigint() - t0) / n;
  };
  await runRound(Math.max(100, Math.floor(ops / 4))); // warm-up: JIT, caches
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) times.push(await runRound(ops));
  const ns = median(times);
  cases.push({ group, name, nsPerOp: ns, concurrency: inFlight, ops, ...(o.note ? { note: o.note } : {}) });
  note(`  ${group} / ${name} (in flight ${inFlight}): ${ns.toFixed(0)} ns/op`);
}

// ---------------------------------------------------------------- shared fixtures

const LIMITS = {
  key: "100000000/min",
  session: "100000000/min",
  tool: "100000000/min",
  concurrency: { session: 64 },
};

function config(issuer?: { issuer: string; jwksUri: string }): Config {
  return parseConfig(
    {
      publicUrl: "http://127.0.0.1:8787",
      ...(issuer ? { auth: { oauth: [{ ...issuer, algorithms: ["ES256"] }] } } : {}),
      servers: {
        bench: {
          route: "/bench/mcp",
          upstream: { urls: ["http://127.0.0.1:9/mcp"] },
          auth: issuer ? ["oauth", "apiKey"] : ["apiKey"],
          limits: LIMITS,
        },
      },
    },
    {},
  );
}

function routeOf(cfg: Config): Route {
  return { name: "bench", config: cfg.servers.bench!, upstream: {} as Upstream, interceptors: [] };
}

function fakeReq(headers: Record<string, string>): IncomingMessage {
  return {
    method: "POST",
    headers,
    headersDistinct: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, [v]])),
    rawHeaders: Object.entries(headers).flat(),
    socket: { remoteAddress: "127.0.0.1" },
  } as unknown as IncomingMessage;
}

const principal: Principal = {
  id: "key:bench:bench:load",
  method: "apiKey",
  tenant: "bench",
  subject: "load",
  keyId: "abcdefghijkl",
  scopes: [],
};

const callMessage = {
  jsonrpc: "2.0",
  id: 7,
  method: "tools/call",
  params: { name: "echo", arguments: { text: "hello from the benchmark" } },
} as RpcMessage;

function sessionRecord(id: string): SessionRecord {
  const now = Date.now();
  return {
    id,
    server: "bench",
    principal: principal.id,
    tenant: "bench",
    transport: "streamable",
    protocolVersion: "2025-11-25",
    initParams: {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "bench", version: "1" },
    },
    upstream: { instance: "http://127.0.0.1:9/mcp", sessionId: "0f5be6b8-78fc-4c66-9862-5eaf64499cd2" },
    createdAt: now,
    lastSeenAt: now,
  };
}

function ctxFor(route: Route, sessionId: string, rec?: SessionRecord): RequestContext {
  return {
    requestId: "bench-request-0001",
    startedAt: performance.now(),
    req: fakeReq({ "mcp-session-id": sessionId, "content-type": "application/json" }),
    httpMethod: "POST",
    headers: { "mcp-session-id": sessionId, "content-type": "application/json" },
    clientLeft: false,
    res: {} as ServerResponse,
    route,
    endpoint: "mcp",
    log,
    clientGone: new AbortController().signal,
    principal,
    messages: [callMessage],
    body: JSON.stringify(callMessage),
    era: "session",
    outcomes: new Map([["n:7", { kind: "result", isError: false }]]),
    upstream: { instance: "http://127.0.0.1:9/mcp", ms: 0.4 },
    ...(rec ? { session: rec } : {}),
  } as unknown as RequestContext;
}

// ---------------------------------------------------------------- groups

async function credentials(tmp: string): Promise<void> {
  const group = "credential check";
  const cfg = config();
  const route = routeOf(cfg);
  const db = openDatabase(path.join(tmp, "keys.db"));
  const store = new SqliteApiKeyStore(db);
  const keys = new KeyService(store, ["bench"]);
  const { key } = await keys.create({ name: "bench", server: "bench", tenant: "bench", consumer: "load" });
  const auth = new Authenticator({
    keys: store,
    oauth: undefined,
    publicUrl: cfg.publicUrl,
    tenancy: cfg.tenancy,
  });
  const req = fakeReq({ "x-api-key": key });
  await bench(group, "API key (X-API-Key), SQLite key store", () => auth.authenticate(req, route), {
    note: "Authenticator → ApiKeyChecker (a key that matched before: no SHA-256 again) → key-record cache",
  });
  const bearer = fakeReq({ authorization: `Bearer ${key}` });
  await bench(group, "API key (Authorization: Bearer), SQLite key store", () =>
    auth.authenticate(bearer, route),
  );
  await store.close();
  db.close();

  const issuer = await startIssuer();
  try {
    const jcfg = config({ issuer: issuer.issuer, jwksUri: issuer.jwksUri });
    const jroute = routeOf(jcfg);
    const egress = new Egress({ connectTimeout: 5000, rules: { allowPrivate: false } });
    const oauth = OAuthVerifier.create({ issuers: jcfg.auth.oauth, leeway: jcfg.auth.leeway, egress, log });
    await oauth.start(); // warm JWKS
    if (issuer.fetches() === 0) throw new Error("the verifier did not fetch the JWKS");
    const jauth = new Authenticator({
      keys: new SqliteApiKeyStore(":memory:"),
      oauth,
      publicUrl: jcfg.publicUrl,
      tenancy: jcfg.tenancy,
    });
    const audience = `${jcfg.publicUrl}${jroute.config.route}`;
    const token = await issuer.mint(audience);
    const one = fakeReq({ authorization: `Bearer ${token}` });
    await bench(
      group,
      "JWT ES256, verified-token cache hit (warm JWKS)",
      () => jauth.authenticate(one, jroute),
      {
        note: "a session's calls after its first: SHA-256 of the token, one Map lookup",
      },
    );
    // A new token each time: the verification itself (jose ES256 with the cached key).
    const n = opt.quick ? 500 : 2000;
    const tokens: IncomingMessage[] = [];
    const rounds = ROUNDS + 1;
    for (let i = 0; i < n * rounds + Math.max(100, Math.floor(n / 4)); i++)
      tokens.push(fakeReq({ authorization: `Bearer ${await issuer.mint(audience)}` }));
    const before = oauth.jwtVerifications;
    await bench(
      group,
      "JWT ES256, new token each call (warm JWKS)",
      (i) => jauth.authenticate(tokens[i]!, jroute),
      {
        ops: n,
        note: "jose jwtVerify: signature, iss/aud/exp/typ; then cached",
      },
    );
    if (oauth.jwtVerifications - before < n) note("  (warning: fewer verifications than calls)");
    await oauth.stop();
    await egress.destroy();
  } finally {
    await issuer.close();
  }
}

async function limiter(): Promise<void> {
  const group = "limiter decision";
  const cfg = config();
  const route = routeOf(cfg);
  const contexts = Array.from({ length: 64 }, (_, i) => ctxFor(route, `session-${i}`));
  const decide = (l: CallLimiter) => (i: number) => {
    const c = contexts[i % contexts.length] as RequestContext;
    const p = l.admit(c);
    return p ? p.then(() => l.release(c)) : l.release(c);
  };
  const mem = new CallLimiter(cfg.servers, log);
  await bench(group, "key + session + tool + in-flight cap, memory counters (embedded)", decide(mem), {
    note: "admit (4 counters, all or nothing) + release",
  });
  const down = await servicesDown();
  if (down) {
    skipped["limiter decision (Redis)"] = down;
    return;
  }
  const store = uniqueStore("micro");
  const counters = new RedisCounterStore({
    // The edge's command timeout is 100 ms; here a slow answer must not turn into a local decision.
    client: { url: REDIS_URL, commandTimeoutMs: 2000 },
    keyPrefix: `${store.redis.keyPrefix}rl:`,
  });
  try {
    await counters.ready();
    const red = new CallLimiter(cfg.servers, log, counters);
    const ops = opt.quick ? 1000 : 2000;
    /** Decisions answered by the local fallback (Redis slow or away) make a case look faster: said. */
    const fallbacks = () => {
      const n = counters.fallbackDecisions;
      counters.fallbackDecisions = 0;
      const last = cases[cases.length - 1];
      if (n > 0 && last) {
        last.note = `${last.note ?? ""}; ${n} decisions used the local fallback (Redis slower than its command timeout)`;
        note(`  (warning: ${n} decisions used the local fallback)`);
      }
    };
    await bench(group, "the same, Redis counters (distributed)", decide(red), {
      ops,
      note: "one script decides every limit (one round trip), then the release",
    });
    fallbacks();
    await bench(group, "the same, Redis counters (distributed)", decide(red), {
      ops: ops * 4,
      inFlight: 64,
      note: "64 decisions in flight (ioredis auto-pipelining)",
    });
    fallbacks();
  } finally {
    await counters.close();
    await removeStore(store, note);
  }
}

async function sessions(tmp: string): Promise<void> {
  const group = "session lookup";
  const cfg = config();
  const route = routeOf(cfg);
  const routes = new Map([["bench", route]]);
  const streams = new StreamRegistry(cfg.streams);
  const ids = Array.from({ length: 1000 }, () => mintSessionId());
  const viaManager = async (
    name: string,
    store: SessionStore,
    sharing?: ConstructorParameters<typeof SessionManager>[4],
  ) => {
    await Promise.all(ids.map((id) => store.put(sessionRecord(id))));
    const mgr = new SessionManager(store, streams, routes, log, sharing);
    await bench(group, name, (i) => mgr.load(route, ids[i % ids.length] as string, principal.id), {
      note: sharing
        ? "hot copy younger than hotTtlMs: no Redis read"
        : "hot cache hit (every call after the session's first)",
    });
    mgr.close();
  };
  await viaManager("SessionManager.load, memory store", new MemorySessionStore());
  const sqlite = new SqliteSessionStore(path.join(tmp, "sessions.db"));
  await viaManager("SessionManager.load, SQLite store", sqlite);
  await bench(
    group,
    "SqliteSessionStore.get (a miss of the hot cache)",
    (i) => sqlite.get(ids[i % ids.length] as string),
    {
      ops: Math.ceil(OPS / 5),
      note: "prepared statement, row → record",
    },
  );
  await sqlite.close();

  const down = await servicesDown();
  if (down) {
    skipped["session lookup (Redis)"] = down;
    streams.close();
    return;
  }
  const store = uniqueStore("micro");
  const redis = new RedisSessionStore({
    client: { url: REDIS_URL, commandTimeoutMs: 2000 },
    keyPrefix: store.redis.keyPrefix,
  });
  try {
    const ops = opt.quick ? 1000 : 2000;
    await bench(group, "RedisSessionStore.get", (i) => redis.get(ids[i % ids.length] as string), {
      ops,
      note: "one HGETALL round trip",
    });
    await bench(group, "RedisSessionStore.get", (i) => redis.get(ids[i % ids.length] as string), {
      ops: ops * 4,
      inFlight: 64,
      note: "64 in flight (auto-pipelining)",
    });
    await viaManager("SessionManager.load, Redis store (distributed)", redis, {
      hotTtlMs: 60_000,
      ready: () => true,
      available: () => true,
      tryLock: async () => true,
      announce: () => undefined,
    });
  } finally {
    await redis.close();
    streams.close();
    await removeStore(store, note);
  }
}

async function audit(tmp: string): Promise<void> {
  const group = "audit";
  const cfg = config();
  const route = routeOf(cfg);
  const log2 = new AuditLogFixture(tmp);
  const a = await log2.open();
  a.restrict(new Set([route]));
  a.subscribe();
  const rec = sessionRecord(mintSessionId());
  const contexts = Array.from({ length: 64 }, () => ctxFor(route, rec.id, rec));
  const event = (i: number): RequestEndEvent => ({
    request: contexts[i % contexts.length] as RequestContext,
    status: 200,
    error: undefined,
    durationMs: 0.8,
  });
  // Batches below the queue cap, flushed between rounds (untimed): the request path only.
  const batch = Math.min(OPS, 5000);
  await bench(
    group,
    "enqueue: requestEndChannel.publish of a tools/call (AuditLog subscribed)",
    (i) => requestEndChannel.publish(event(i)),
    {
      ops: batch,
      between: () => a.flush(),
      note: "on the request path: draft (field copies) + queue push",
    },
  );
  // The flush per record: finalize (argument digest), chain (SHA-256), one SQLite transaction.
  const flushTimes: number[] = [];
  for (let r = 0; r < ROUNDS + 1; r++) {
    for (let i = 0; i < batch; i++) requestEndChannel.publish(event(i));
    const t0 = process.hrtime.bigint();
    await a.flush();
    if (r > 0) flushTimes.push(Number(process.hrtime.bigint() - t0) / batch);
  }
  cases.push({
    group,
    name: `flush per record (batches of ${batch}, SQLite store)`,
    nsPerOp: median(flushTimes),
    concurrency: 1,
    ops: batch,
    note: "off the request path (timer, every flushInterval)",
  });
  note(`  ${group} / flush per record: ${median(flushTimes).toFixed(0)} ns/op`);
  await a.close(); // unsubscribes, flushes
}

/** The AuditLog as the gateway opens it (SQLite store, spool beside it, digest of arguments). */
class AuditLogFixture {
  readonly #dir: string;
  constructor(dir: string) {
    this.#dir = dir;
  }
  open(): Promise<AuditLog> {
    return AuditLog.open({
      store: new SqliteAuditStore(path.join(this.#dir, "audit.db")),
      spoolPath: path.join(this.#dir, "audit-spool.jsonl"),
      flushInterval: 3_600_000, // flushed by the benchmark, not by the timer
      queueMax: 1_000_000,
      args: argsPolicy({ mode: "digest" }),
      log,
    });
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const started = new Date();
  const t0 = performance.now();
  const mc = machine();
  const tmp = mkdtempSync(path.join(os.tmpdir(), "mcp-edge-micro-"));
  let stopping = false;
  const onSignal = () => {
    // A second signal (Ctrl-C reaches the whole process group, bench/run.ts forwards it) is ignored.
    if (stopping) return;
    stopping = true;
    note("interrupted: removing the Redis keys of this run");
    void removeAllStores(note).finally(() => {
      rmSync(tmp, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  note(`mcp-edge micro-benchmarks: ${ROUNDS} rounds, ${OPS} ops per round (fewer for crypto and network)`);
  try {
    await credentials(tmp);
    await limiter();
    await sessions(tmp);
    await audit(tmp);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  mc.loadEnd = loadNow();
  const result: MicroResult = {
    kind: "micro",
    started: started.toISOString(),
    elapsedS: (performance.now() - t0) / 1000,
    command: commandLine(),
    rounds: ROUNDS,
    cases,
    skipped,
    machine: mc,
  };
  const md = `# mcp-edge micro-benchmarks\n\n${renderMicro(result, { heading: "##" })}`;
  mkdirSync(path.dirname(outFile), { recursive: true });
  writeFileSync(outFile, md);
  if (opt.json) writeFileSync(path.resolve(opt.json), JSON.stringify(result, null, 2));
  process.stdout.write(`${md}\n`);
  note(`wrote ${path.relative(REPO_ROOT, outFile)}`);
  // Timers of the classes under test (reapers, flushers) are unref'd; sockets are closed above.
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`micro: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
