/**
 * Traffic while a shared store is slow or hung: answers/s and latency percentiles of tool calls
 * through one edge process in distributed mode, before, during and after the fault.
 *
 *   node bench/store-faults.ts --fault redis-slow     Redis stalls 2 s, answers 0.3 s, stalls again...
 *   node bench/store-faults.ts --fault redis-hung     Redis hung (SIGSTOP) for the whole fault window
 *   node bench/store-faults.ts --fault postgres-hung  PostgreSQL accepts connections, answers nothing
 *
 * Options: --workers N (clients, each with its own key and session; default 16)
 *          --before MS --during MS --after MS (phase lengths; default 3000, 10000, 4000)
 *
 * The edge gets a private redis-server (SIGSTOP / SIGCONT make it slow or hung) and reaches
 * PostgreSQL through a TCP proxy that can black-hole it. Every call is rate limited (per key,
 * session and tool, quotas high enough never to refuse) so each one asks Redis for a decision.
 * Every worker sends one call at a time; an answer of any status counts (a fast 503 is an answer).
 */
import { execFileSync } from "node:child_process";
import path from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { postTool, rawSession } from "../test/helpers/cluster/clients.ts";
import { type SpawnedEdge, spawnEdge, tempDir } from "../test/helpers/edge.ts";
import { startRedisServer } from "../test/helpers/redis.ts";
import { REPO_ROOT, spawnFixture } from "../test/helpers/spawn.ts";
import { startTcpProxy } from "../test/helpers/tcp-proxy.ts";
import { POSTGRES_URL, servicesDown } from "./lib/distributed.ts";
import { ADMIN_TOKEN, FULL_LIMITS } from "./lib/edge.ts";
import { Samples } from "./lib/stats.ts";

const { values: opts } = parseArgs({
  options: {
    fault: { type: "string", default: "redis-slow" },
    workers: { type: "string", default: "16" },
    before: { type: "string", default: "3000" },
    during: { type: "string", default: "10000" },
    after: { type: "string", default: "4000" },
  },
});
const FAULTS = ["redis-slow", "redis-hung", "postgres-hung"];
if (!FAULTS.includes(opts.fault)) throw new Error(`--fault: one of ${FAULTS.join(", ")}`);
const WORKERS = Number(opts.workers);
const PHASES = { before: Number(opts.before), during: Number(opts.during), after: Number(opts.after) };

const down = await servicesDown();
if (down) throw new Error(down);

const cleanups: (() => Promise<unknown> | unknown)[] = [];
const schema = `bench_faults_${process.pid}_${Date.now().toString(36)}`;

try {
  const redis = await startRedisServer();
  cleanups.push(() => redis.stop());
  const target = new URL(POSTGRES_URL);
  const proxy = await startTcpProxy(Number(target.port || 5432), target.hostname);
  cleanups.push(() => proxy.stop());
  const viaProxy = new URL(POSTGRES_URL);
  viaProxy.hostname = "127.0.0.1";
  viaProxy.port = String(proxy.port);
  const upstream = await spawnFixture("test/fixtures/conformance-server.ts");
  cleanups.push(() => upstream.stop());
  const doc = {
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    store: {
      sqlite: path.join(tempDir(), "edge.db"),
      redis: { url: redis.url, keyPrefix: "bench:" },
      postgres: { url: viaProxy.toString(), schema },
    },
    servers: {
      api: { route: "/mcp", upstream: { urls: [upstream.url] }, auth: ["apiKey"], limits: FULL_LIMITS },
    },
  };
  const edge: SpawnedEdge = await spawnEdge(doc);
  cleanups.push(() => edge.stop());
  const mcp = `${edge.baseUrl}/mcp`;

  const sessions = await Promise.all(
    Array.from({ length: WORKERS }, async (_, i) => {
      const res = await fetch(`${edge.adminUrl}/api/keys`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ name: `w${i}` }),
      });
      const key = ((await res.json()) as { key: string }).key;
      return { key, sid: await rawSession(mcp, key) };
    }),
  );

  type Phase = keyof typeof PHASES;
  const stats: Record<Phase, { samples: Samples; statuses: Record<string, number>; ms: number }> = {
    before: { samples: new Samples(), statuses: {}, ms: PHASES.before },
    during: { samples: new Samples(), statuses: {}, ms: PHASES.during },
    after: { samples: new Samples(), statuses: {}, ms: PHASES.after },
  };
  let phase: Phase | undefined;
  let stop = false;
  const workers = sessions.map(async ({ key, sid }) => {
    for (let id = 1; !stop; id++) {
      const at = performance.now();
      const started = phase;
      let status: string;
      try {
        const res = await postTool(mcp, key, sid, id, "test_simple_text", AbortSignal.timeout(30_000));
        await res.arrayBuffer();
        status = String(res.status);
      } catch (err) {
        status = (err as Error).name;
      }
      // An answer counts in the phase its call started in.
      if (started !== undefined && phase === started) {
        const s = stats[started];
        s.samples.push(performance.now() - at);
        s.statuses[status] = (s.statuses[status] ?? 0) + 1;
      }
    }
  });
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  await sleep(500); // warm-up, not counted
  phase = "before";
  await sleep(PHASES.before);
  phase = "during";
  const faultEnd = Date.now() + PHASES.during;
  if (opts.fault === "postgres-hung") proxy.hang();
  if (opts.fault === "redis-hung") redis.pause();
  if (opts.fault === "redis-slow") {
    while (Date.now() < faultEnd) {
      redis.pause();
      await sleep(Math.min(2000, faultEnd - Date.now()));
      redis.resume();
      await sleep(Math.min(300, Math.max(0, faultEnd - Date.now())));
    }
  }
  await sleep(Math.max(0, faultEnd - Date.now()));
  phase = "after";
  redis.resume();
  await proxy.restore();
  await sleep(PHASES.after);
  phase = undefined;
  stop = true;
  await Promise.all(workers);

  const lines = [
    `# ${opts.fault}, ${WORKERS} workers, commit ${commit()}`,
    "| phase | answers/s | p50 ms | p99 ms | max ms | statuses |",
    "|---|---|---|---|---|---|",
  ];
  for (const [name, s] of Object.entries(stats)) {
    const [p50, p99, max] = s.samples.percentiles([50, 99, 100]).map((v) => v.toFixed(0));
    const rate = (s.samples.count / (s.ms / 1000)).toFixed(0);
    lines.push(`| ${name} | ${rate} | ${p50} | ${p99} | ${max} | ${JSON.stringify(s.statuses)} |`);
  }
  process.stdout.write(`${lines.join("\n")}\n`);
} finally {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  const c = new pg.Client({ connectionString: POSTGRES_URL });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
  await c.end();
}

/** The commit measured (with `+` when the tree has changes). */
function commit(): string {
  const head = execFileSync("git", ["-C", REPO_ROOT, "rev-parse", "--short", "HEAD"]).toString().trim();
  const dirty = execFileSync("git", ["-C", REPO_ROOT, "status", "--porcelain", "src"]).toString().trim();
  return dirty ? `${head}+` : head;
}
