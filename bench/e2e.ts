/**
 * End-to-end overhead benchmark (DESIGN.md convention 8): requests/s, p50/p99 latency and proxy CPU
 * per request, direct to an upstream vs through the minimal Node proxy vs through mcp-edge, for
 * session-era calls with JSON answers, with SSE answers, and stateless-era (2026-07-28) calls.
 *
 *   npm run bench          full run, writes bench/RESULTS.md
 *   npm run bench:quick    1 and 16 connections, 3 short trials, writes bench/results/RESULTS-quick.md
 *
 * Options: --trials N  --duration MS  --warmup MS  --connections 1,16,64  --scenarios a,b
 *          --paths direct,minimal,edge,edge-full  --out FILE  --profile-edge (V8 CPU profile of the edge,
 *          summarised in the report)  --edge-ref REF (run mcp-edge from a git commit, not the working tree)
 *
 * Every process is a separate child bound to 127.0.0.1: the upstreams (bench/upstream.ts), the
 * proxies, and one load generator (bench/load.ts) per path. Trials are interleaved across paths
 * (trial 1 of direct, minimal, edge, edge-full, then trial 2, ...) so that drift on the machine hits every path
 * alike; each figure is the median over the trials. A proxy's CPU per request is read from
 * /proc/<pid>/stat just before and after each trial.
 *
 * To add a path (nginx, distributed mode, ...): add a PathSpec to PATHS. To add a scenario: add a
 * Scenario to SCENARIOS (and a mode to bench/upstream.ts if it needs another upstream).
 */
import { execFileSync, spawn } from "node:child_process";
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { summarizeProfile } from "./lib/cpuprofile.ts";
import {
  CLK_TCK,
  cpuMicros,
  listeningLine,
  machineBusyMicros,
  NODE_BIN,
  REPO_ROOT,
  rssBytes,
  type Started,
  start,
} from "./lib/proc.ts";
import { median } from "./lib/stats.ts";
import type { TrialResult } from "./load.ts";

// ---------------------------------------------------------------- what is measured

interface Scenario {
  id: string;
  title: string;
  /** bench/upstream.ts --mode */
  upstreamMode: "json" | "sse" | "stateless";
  /** bench/load.ts --scenario */
  load: "session" | "stateless";
  /** The route of this scenario on the proxies (each scenario has its own upstream). */
  route: string;
}

const SCENARIOS: Scenario[] = [
  {
    id: "session-json",
    title: "Session era (2025-11-25), tools/call, JSON answers",
    upstreamMode: "json",
    load: "session",
    route: "/session-json/mcp",
  },
  {
    id: "session-sse",
    title: "Session era (2025-11-25), tools/call, SSE answers",
    upstreamMode: "sse",
    load: "session",
    route: "/session-sse/mcp",
  },
  {
    id: "stateless",
    title: "Stateless era (2026-07-28), tools/call",
    upstreamMode: "stateless",
    load: "stateless",
    route: "/stateless/mcp",
  },
];

/** A running path: where the load generator sends a scenario's calls, and which process to meter. */
interface RunningPath {
  url(s: Scenario): string;
  /** Headers the load generator sends with every request of a scenario (a credential). */
  headers?(s: Scenario): Record<string, string>;
  /** The proxy process whose CPU is charged to the path (none for direct). */
  proc?: Started;
  stop(): Promise<void>;
}

interface PathSpec {
  id: string;
  title: string;
  start(ctx: {
    upstreams: Map<string, Started>;
    scenarios: Scenario[];
    tmp: string;
    profileDir?: string;
  }): Promise<RunningPath>;
}

const PATHS: PathSpec[] = [
  {
    id: "direct",
    title: "direct to the upstream",
    async start({ upstreams }) {
      return { url: (s) => upstreams.get(s.id)!.announced.url as string, stop: async () => {} };
    },
  },
  {
    id: "minimal",
    title: "minimal Node proxy (node:http + undici)",
    async start({ upstreams, scenarios }) {
      const maps = scenarios.flatMap((s) => ["--map", `${s.route}=${upstreams.get(s.id)!.announced.url}`]);
      const proc = await start({
        name: "minimal-proxy",
        command: NODE_BIN,
        args: [path.join(REPO_ROOT, "bench/minimal-proxy.ts"), ...maps],
        parse: listeningLine,
        expect: ["url"],
      });
      return { url: (s) => `${proc.announced.url}${s.route}`, proc, stop: () => proc.stop() };
    },
  },
  {
    id: "edge",
    title: "mcp-edge, `auth: [none]` (no key, no limits; metrics and audit at their defaults)",
    start: (ctx) => startEdge(ctx, false),
  },
  {
    id: "edge-full",
    title:
      "mcp-edge, full pipeline: API key auth (a key per server made through the admin API), limits per key, session and tool plus an in-flight cap per session (set high: never refused), audit on, metrics on",
    start: (ctx) => startEdge(ctx, true),
  },
];

/** Admin token of the benchmark's edge (the full-pipeline path creates its keys with it). */
const ADMIN_TOKEN = "bench-admin-token-0123456789abcdef0123456789";

/** A free TCP port on 127.0.0.1 (the admin listener's, so the benchmark knows where it is). */
async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/**
 * mcp-edge over every scenario's upstream. `full`: what a production route runs — API keys (one per
 * server, created through the admin API as an operator would), limits per key, session and tool and
 * an in-flight cap (high enough never to refuse: the cost of counting is what is measured), audit
 * and metrics on (their defaults). Otherwise `auth: [none]` and no limits.
 */
async function startEdge(
  { upstreams, scenarios, tmp, profileDir }: Parameters<PathSpec["start"]>[0],
  full: boolean,
): Promise<RunningPath> {
  const name = full ? "edge-full" : "edge";
  const dir = path.join(tmp, name);
  mkdirSync(dir, { recursive: true });
  const adminPort = full ? await freePort() : 0;
  const doc = {
    listen: { host: "127.0.0.1", port: 0 },
    admin: { listen: { host: "127.0.0.1", port: adminPort }, ...(full ? { token: ADMIN_TOKEN } : {}) },
    store: { sqlite: path.join(dir, "edge.db") },
    log: { level: "warn" },
    metrics: { enabled: true },
    servers: Object.fromEntries(
      scenarios.map((s) => [
        s.id,
        {
          route: s.route,
          upstream: { urls: [upstreams.get(s.id)!.announced.url] },
          auth: full ? ["apiKey"] : ["none"],
          ...(full
            ? {
                limits: {
                  key: "100000000/min",
                  session: "100000000/min",
                  tool: "100000000/min",
                  concurrency: { session: 64 },
                },
              }
            : {}),
        },
      ]),
    ),
  };
  const file = path.join(dir, "edge.yaml");
  writeFileSync(file, JSON.stringify(doc, null, 2)); // JSON is YAML
  const prof = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${path.join(profileDir, name)}`] : [];
  const proc = await start({
    name: `mcp-edge (${name})`,
    command: NODE_BIN,
    args: [...prof, path.join(edgeRoot, "src/main.ts"), "serve", "-c", file],
    cwd: dir,
    parse: edgeAnnouncement,
    expect: scenarios.map((s) => s.id),
  });
  const keys = new Map<string, string>();
  if (full) {
    for (const s of scenarios) {
      const res = await fetch(`http://127.0.0.1:${adminPort}/api/keys`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ name: "bench", server: s.id, tenant: "bench", consumer: "load" }),
      });
      const body = (await res.json()) as { key?: string };
      if (res.status !== 201 || !body.key) throw new Error(`creating a key for ${s.id}: ${res.status}`);
      keys.set(s.id, body.key);
    }
  }
  return {
    url: (s) => proc.announced[s.id] as string,
    headers: (s): Record<string, string> => {
      const key = keys.get(s.id);
      return key ? { "x-api-key": key } : {};
    },
    proc,
    stop: () => proc.stop(30_000),
  };
}

/**
 * Where the edge listens, per route name: from the JSON log line `mcp-edge listening` (written at
 * log level info or below) or from the banner on stderr (`MCP endpoint (name):  url`), whichever
 * comes; at log level warn only the banner does.
 */
function edgeAnnouncement(line: string): Record<string, string> | undefined {
  const banner = /MCP endpoint \(([^)]+)\):\s+(\S+)/.exec(line);
  if (banner?.[1] && banner[2]) return { [banner[1]]: banner[2] };
  if (!line.startsWith("{")) return undefined;
  try {
    const rec = JSON.parse(line) as { msg?: string; url?: string; routes?: string[] };
    if (rec.msg !== "mcp-edge listening" || !rec.url) return undefined;
    const out: Record<string, string> = {};
    for (const s of SCENARIOS) if (rec.routes?.includes(s.id)) out[s.id] = `${rec.url}${s.route}`;
    return out;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- options

const { values: opt } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    trials: { type: "string" },
    duration: { type: "string" },
    warmup: { type: "string" },
    connections: { type: "string" },
    scenarios: { type: "string" },
    paths: { type: "string" },
    out: { type: "string" },
    "profile-edge": { type: "boolean", default: false },
    "edge-ref": { type: "string" },
  },
});
const quick = opt.quick;
const settings = {
  trials: Number(opt.trials ?? (quick ? 3 : 5)),
  durationMs: Number(opt.duration ?? (quick ? 1000 : 3000)),
  warmupMs: Number(opt.warmup ?? (quick ? 500 : 1500)),
  connections: (opt.connections ?? (quick ? "1,16" : "1,16,64")).split(",").map(Number),
};
const scenarios = opt.scenarios
  ? SCENARIOS.filter((s) => opt.scenarios!.split(",").includes(s.id))
  : SCENARIOS;
const pathSpecs = opt.paths ? PATHS.filter((p) => opt.paths!.split(",").includes(p.id)) : PATHS;
const outFile = path.resolve(
  REPO_ROOT,
  opt.out ?? (quick ? "bench/results/RESULTS-quick.md" : "bench/RESULTS.md"),
);
const resultsDir = path.join(REPO_ROOT, "bench/results");

/**
 * The mcp-edge under test: this working tree, or with --edge-ref a git commit exported to a temp
 * directory (`git archive`, read-only for the repository), sharing this tree's node_modules. That
 * keeps a run reproducible while the working tree changes, and lets two commits be compared.
 */
let edgeRoot = REPO_ROOT;
let edgeLabel = "";
function exportEdge(ref: string, tmp: string): void {
  const sha = execFileSync("git", ["rev-parse", "--short", `${ref}^{commit}`], {
    cwd: REPO_ROOT,
    encoding: "utf8",
  }).trim();
  edgeRoot = path.join(tmp, `edge-${sha}`);
  mkdirSync(edgeRoot, { recursive: true });
  execFileSync("sh", ["-c", `git archive ${sha} | tar -x -C '${edgeRoot}'`], { cwd: REPO_ROOT });
  symlinkSync(path.join(REPO_ROOT, "node_modules"), path.join(edgeRoot, "node_modules"));
  edgeLabel = `${ref} (${sha})`;
}

// ---------------------------------------------------------------- running

interface Trial extends TrialResult {
  proxyCpuUsPerReq: number;
  upstreamCpuUsPerReq: number;
  /**
   * CPU used on the machine during the trial by anything but the load generator, the upstream and
   * the proxy, in % of one CPU: other work sharing the machine, which makes a trial noisier.
   */
  backgroundCpuPct: number;
}

interface Row {
  scenario: string;
  path: string;
  connections: number;
  trials: Trial[];
  /** Medians over the trials, per figure. */
  rps: number;
  p50Ms: number;
  p99Ms: number;
  proxyCpuUsPerReq: number;
  upstreamCpuUsPerReq: number;
  loadgenCpuUsPerReq: number;
  backgroundCpuPct: number;
  /** Resident memory of the proxy after the row's trials, MiB (NaN for direct). */
  proxyRssMiB: number;
  errors: number;
  firstError?: string;
}

/** A load generator child, driven trial by trial over stdin/stdout. */
interface LoadGen {
  pid: number;
  trial(): Promise<TrialResult>;
  stop(): Promise<void>;
}

async function spawnLoad(
  url: string,
  s: Scenario,
  connections: number,
  headers: Record<string, string> = {},
): Promise<LoadGen> {
  const child = spawn(
    NODE_BIN,
    [
      path.join(REPO_ROOT, "bench/load.ts"),
      "--url",
      url,
      "--scenario",
      s.load,
      "--connections",
      String(connections),
      "--duration",
      String(settings.durationMs),
      "--warmup",
      String(settings.warmupMs),
      "--trials",
      String(settings.trials),
      ...Object.entries(headers).flatMap(([k, v]) => ["--header", `${k}: ${v}`]),
    ],
    { cwd: REPO_ROOT, stdio: ["pipe", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const waiters: ((line: string) => void)[] = [];
  let failed: Error | undefined;
  createInterface({ input: child.stdout }).on("line", (line) => waiters.shift()?.(line));
  void exited.then(() => {
    failed = new Error(`load generator exited (${child.exitCode}):\n${stderr}`);
    for (const w of waiters.splice(0)) w("");
  });
  const nextLine = () =>
    new Promise<string>((resolve, reject) => {
      if (failed) return reject(failed);
      waiters.push((line) => (failed && line === "" ? reject(failed) : resolve(line)));
    });
  const ready = await nextLine();
  if (ready !== "READY") throw new Error(`load generator: expected READY, got ${ready}\n${stderr}`);
  return {
    pid: child.pid as number,
    async trial() {
      const pending = nextLine();
      child.stdin.write("go\n");
      const line = await pending;
      if (!line.startsWith("RESULT ")) throw new Error(`load generator: ${line}\n${stderr}`);
      return JSON.parse(line.slice(7)) as TrialResult;
    },
    async stop() {
      child.stdin.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

function aggregate(
  scenario: string,
  pathId: string,
  connections: number,
  trials: Trial[],
  proxyRssMiB: number,
): Row {
  const m = (f: (t: Trial) => number) => median(trials.map(f));
  const firstError = trials.find((t) => t.firstError)?.firstError;
  return {
    scenario,
    path: pathId,
    connections,
    trials,
    rps: m((t) => t.rps),
    p50Ms: m((t) => t.p50Ms),
    p99Ms: m((t) => t.p99Ms),
    proxyCpuUsPerReq: m((t) => t.proxyCpuUsPerReq),
    upstreamCpuUsPerReq: m((t) => t.upstreamCpuUsPerReq),
    loadgenCpuUsPerReq: m((t) => t.loadgenCpuUsPerReq),
    backgroundCpuPct: m((t) => t.backgroundCpuPct),
    proxyRssMiB,
    errors: trials.reduce((a, t) => a + t.errors, 0),
    ...(firstError ? { firstError } : {}),
  };
}

async function measure(
  s: Scenario,
  connections: number,
  running: Map<string, RunningPath>,
  upstream: Started,
): Promise<Row[]> {
  const gens = new Map<string, LoadGen>();
  const trials = new Map<string, Trial[]>();
  try {
    // One load generator per path, started (and warmed up) one after the other.
    for (const p of pathSpecs) {
      const rp = running.get(p.id)!;
      gens.set(p.id, await spawnLoad(rp.url(s), s, connections, rp.headers?.(s)));
      trials.set(p.id, []);
    }
    for (let t = 0; t < settings.trials; t++) {
      for (const p of pathSpecs) {
        const proxy = running.get(p.id)!.proc;
        const gen = gens.get(p.id)!;
        const ours = () => (proxy ? cpuMicros(proxy.pid) : 0) + cpuMicros(upstream.pid) + cpuMicros(gen.pid);
        const m0 = machineBusyMicros();
        const o0 = ours();
        const p0 = proxy ? cpuMicros(proxy.pid) : 0;
        const u0 = cpuMicros(upstream.pid);
        const r = await gen.trial();
        const u1 = cpuMicros(upstream.pid);
        const p1 = proxy ? cpuMicros(proxy.pid) : 0;
        const o1 = ours();
        const m1 = machineBusyMicros();
        const n = Math.max(1, r.requests);
        trials.get(p.id)!.push({
          ...r,
          proxyCpuUsPerReq: proxy ? (p1 - p0) / n : Number.NaN,
          upstreamCpuUsPerReq: (u1 - u0) / n,
          backgroundCpuPct: Math.max(0, (100 * (m1 - m0 - (o1 - o0))) / (r.elapsedMs * 1000)),
        });
        process.stderr.write(
          `  ${s.id} c=${connections} ${p.id.padEnd(8)} trial ${t + 1}/${settings.trials}: ` +
            `${r.rps.toFixed(0)} req/s p50 ${r.p50Ms.toFixed(2)} ms p99 ${r.p99Ms.toFixed(2)} ms` +
            `${r.errors ? ` ERRORS ${r.errors}: ${r.firstError}` : ""}\n`,
        );
      }
    }
  } finally {
    await Promise.all([...gens.values()].map((g) => g.stop()));
  }
  return pathSpecs.map((p) => {
    const proxy = running.get(p.id)!.proc;
    const rss = proxy ? rssBytes(proxy.pid) / 2 ** 20 : Number.NaN;
    return aggregate(s.id, p.id, connections, trials.get(p.id)!, rss);
  });
}

// ---------------------------------------------------------------- report

function machine() {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? "unknown";
  let nproc = os.availableParallelism();
  try {
    nproc = Number(execFileSync("nproc", { encoding: "utf8" }).trim());
  } catch {
    // os.availableParallelism() stands
  }
  const nodeVersion = execFileSync(NODE_BIN, ["--version"], { encoding: "utf8" }).trim();
  let commit = "unknown";
  try {
    commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], {
      cwd: REPO_ROOT,
      encoding: "utf8",
    }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain"], { cwd: REPO_ROOT, encoding: "utf8" }).trim();
    if (dirty) commit += " (with uncommitted changes)";
  } catch {
    // not a git checkout
  }
  return {
    nproc,
    model,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node: nodeVersion,
    commit,
  };
}

const fmt = (v: number, digits: number) => (Number.isFinite(v) ? v.toFixed(digits) : "–");
const ratio = (a: number, b: number) =>
  Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : "–";

function table(rows: Row[], s: Scenario): string {
  const out = [
    `### ${s.title}`,
    "",
    "| conns | path | req/s | p50 ms | p99 ms | proxy CPU µs/req | upstream CPU µs/req | req/s vs direct | p50 vs direct | p99 vs direct | req/s vs minimal | p50 vs minimal | CPU vs minimal | proxy RSS MiB | errors | other CPU % |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const c of settings.connections) {
    const at = rows.filter((r) => r.scenario === s.id && r.connections === c);
    const direct = at.find((r) => r.path === "direct");
    const minimal = at.find((r) => r.path === "minimal");
    for (const r of at) {
      const vsDirect = r.path !== "direct" && direct;
      const vsMinimal = r.path !== "minimal" && r.path !== "direct" && minimal;
      out.push(
        `| ${c} | ${r.path} | ${fmt(r.rps, 0)} | ${fmt(r.p50Ms, 2)} | ${fmt(r.p99Ms, 2)} | ${fmt(r.proxyCpuUsPerReq, 0)} | ${fmt(r.upstreamCpuUsPerReq, 0)} | ` +
          `${vsDirect ? ratio(r.rps, direct.rps) : ""} | ${vsDirect ? ratio(r.p50Ms, direct.p50Ms) : ""} | ${vsDirect ? ratio(r.p99Ms, direct.p99Ms) : ""} | ` +
          `${vsMinimal ? ratio(r.rps, minimal.rps) : ""} | ${vsMinimal ? ratio(r.p50Ms, minimal.p50Ms) : ""} | ${vsMinimal ? ratio(r.proxyCpuUsPerReq, minimal.proxyCpuUsPerReq) : ""} | ${fmt(r.proxyRssMiB, 0)} | ${r.errors} | ${fmt(r.backgroundCpuPct, 0)} |`,
      );
    }
  }
  return out.join("\n");
}

/** Each edge path against the minimal proxy, per scenario and concurrency: what the MCP awareness costs. */
function summary(rows: Row[]): string {
  const out = [
    "### mcp-edge against the minimal proxy",
    "",
    "| scenario | conns | path | edge CPU µs/req | minimal CPU µs/req | extra CPU µs/req | CPU vs minimal | edge p50 − direct p50 (ms) | minimal p50 − direct p50 (ms) |",
    "|---|---:|---|---:|---:|---:|---:|---:|---:|",
  ];
  for (const s of scenarios) {
    for (const c of settings.connections) {
      const get = (p: string) => rows.find((r) => r.scenario === s.id && r.connections === c && r.path === p);
      const m = get("minimal");
      const d = get("direct");
      if (!m || !d) continue;
      for (const id of ["edge", "edge-full"]) {
        const e = get(id);
        if (!e) continue;
        out.push(
          `| ${s.id} | ${c} | ${id} | ${fmt(e.proxyCpuUsPerReq, 0)} | ${fmt(m.proxyCpuUsPerReq, 0)} | ${fmt(e.proxyCpuUsPerReq - m.proxyCpuUsPerReq, 0)} | ${ratio(e.proxyCpuUsPerReq, m.proxyCpuUsPerReq)} | ` +
            `${fmt(e.p50Ms - d.p50Ms, 2)} | ${fmt(m.p50Ms - d.p50Ms, 2)} |`,
        );
      }
    }
  }
  return out.length > 4 ? out.join("\n") : "";
}

function report(rows: Row[], started: Date, elapsedS: number, profile: string): string {
  const mc = machine();
  const command =
    `node ${path.relative(REPO_ROOT, process.argv[1] as string)} ${process.argv.slice(2).join(" ")}`.trim();
  const errors = rows.filter((r) => r.errors > 0);
  const allTrials = rows.flatMap((r) => r.trials);
  return [
    "# mcp-edge end-to-end benchmark",
    "",
    `Generated by \`${command}\`${quick ? " (`npm run bench:quick`)" : opt.out || opt.scenarios || opt.paths ? "" : " (`npm run bench`)"} on ${started.toISOString()}, in ${elapsedS.toFixed(0)} s.`,
    "",
    `- Machine: ${mc.nproc} CPUs (${mc.model}), ${mc.memory} RAM, ${mc.kernel}`,
    `- Node ${mc.node} for every process; benchmark at commit ${mc.commit}; mcp-edge ${edgeLabel ? `exported from ${edgeLabel} (--edge-ref)` : "from the working tree"}`,
    `- Per path and concurrency: ${settings.trials} trials of ${settings.durationMs} ms after ${settings.warmupMs} ms of warm-up, interleaved across paths; figures are medians over the trials.`,
    `- Connections: ${settings.connections.join(", ")} (one MCP session and one call in flight per connection; the next call leaves when the answer is in).`,
    "- Proxy RSS: resident memory of the proxy process right after the row's trials (it accumulates over the run: rows run in table order).",
    `- CPU per request: user + system time of the process from /proc/<pid>/stat (CLK_TCK ${CLK_TCK}) over the trial, divided by the calls answered.`,
    `- Other CPU: machine CPU used during a trial by anything but the load generator, upstream and proxy (other work on a shared machine), in % of one CPU: median ${fmt(median(allTrials.map((t) => t.backgroundCpuPct)), 0)}%, max ${fmt(Math.max(...allTrials.map((t) => t.backgroundCpuPct)), 0)}% over ${allTrials.length} trials (column "other CPU %": the row's median). High values mean a noisier row.`,
    "",
    "## What runs",
    "",
    '- **Upstreams** (`bench/upstream.ts`), one process per scenario, tool `echo`: session era on SDK v1 (`@modelcontextprotocol/sdk` McpServer + StreamableHTTPServerTransport, stateful sessions, `enableJsonResponse` on for JSON answers, off for SSE answers); stateless era on SDK v2 (`@modelcontextprotocol/server` `createMcpHandler`, `legacy: "reject"`).',
    "- **Paths**: " +
      pathSpecs.map((p) => `\`${p.id}\`: ${p.title}`).join("; ") +
      ". mcp-edge runs `src/main.ts serve` in embedded mode (the SQLite store), log level warn.",
    "- **Load** (`bench/load.ts`): a separate Node process per path; undici Pool, N connections, N clients, each answer checked (status, JSON-RPC id, `result`; SSE parsed). Stateless calls carry `MCP-Protocol-Version: 2026-07-28`, `Mcp-Method`, `Mcp-Name` and `_meta` protocol version + client capabilities.",
    `- Everything shares this machine's ${mc.nproc} CPUs over loopback: the load generator, the upstream and the proxy compete for them, so at 16+ connections req/s is bounded by total CPU, not by any one process. Read the CPU µs/req columns for the cost of a path, req/s and latency for what a client sees here.`,
    "",
    "## Results",
    "",
    ...scenarios.map((s) => `${table(rows, s)}\n`),
    summary(rows),
    "",
    errors.length
      ? `## Errors\n\n${errors.map((r) => `- ${r.scenario} / ${r.path} / ${r.connections}: ${r.errors} errors, first: ${r.firstError}`).join("\n")}\n`
      : "All answers were checked: no errors.\n",
    profile ? `## mcp-edge CPU profile (--profile-edge)\n\n${profile}\n` : "",
  ].join("\n");
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const started = new Date();
  const t0 = performance.now();
  const tmp = mkdtempSync(path.join(os.tmpdir(), "mcp-edge-bench-"));
  const profileDir = opt["profile-edge"] ? path.join(resultsDir, `profile-${Date.now()}`) : undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const upstreams = new Map<string, Started>();
  const running = new Map<string, RunningPath>();
  const rows: Row[] = [];
  let profile = "";
  const cleanup = async () => {
    await Promise.allSettled([...running.values()].map((p) => p.stop()));
    await Promise.allSettled([...upstreams.values()].map((u) => u.stop()));
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    for (const s of scenarios) {
      upstreams.set(
        s.id,
        await start({
          name: `upstream(${s.upstreamMode})`,
          command: NODE_BIN,
          args: [path.join(REPO_ROOT, "bench/upstream.ts"), "--mode", s.upstreamMode],
          parse: listeningLine,
          expect: ["url"],
        }),
      );
    }
    if (opt["edge-ref"]) exportEdge(opt["edge-ref"], tmp);
    for (const p of pathSpecs) {
      running.set(p.id, await p.start({ upstreams, scenarios, tmp, ...(profileDir ? { profileDir } : {}) }));
    }
    process.stderr.write(
      `mcp-edge bench: ${scenarios.length} scenarios × ${pathSpecs.length} paths × connections ${settings.connections.join(",")}, ` +
        `${settings.trials} trials of ${settings.durationMs} ms\n`,
    );
    for (const s of scenarios) {
      for (const c of settings.connections) {
        rows.push(...(await measure(s, c, running, upstreams.get(s.id)!)));
      }
    }
  } catch (err) {
    // What the servers said is usually the explanation.
    for (const proc of [...upstreams.values(), ...[...running.values()].flatMap((r) => r.proc ?? [])]) {
      const out = proc.output().trim();
      if (out) process.stderr.write(`--- ${proc.name} output ---\n${out.slice(-4000)}\n`);
    }
    throw err;
  } finally {
    await cleanup();
    rmSync(tmp, { recursive: true, force: true });
  }
  if (profileDir) {
    // One profile per edge path (each writes into its own directory when it exits).
    const parts: string[] = [];
    for (const id of ["edge", "edge-full"]) {
      const dir = path.join(profileDir, id);
      if (!pathSpecs.some((p) => p.id === id)) continue;
      let files: string[];
      try {
        files = readdirSync(dir).filter((f) => f.endsWith(".cpuprofile"));
      } catch {
        files = [];
      }
      parts.push(
        `### ${id}\n\n${
          files.length
            ? summarizeProfile(path.join(dir, files[0] as string), 25)
            : "(no profile was written: the edge did not exit cleanly)"
        }`,
      );
    }
    profile = parts.join("\n\n");
  }
  const md = report(rows, started, (performance.now() - t0) / 1000, profile);
  mkdirSync(path.dirname(outFile), { recursive: true });
  writeFileSync(outFile, md);
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(
    path.join(resultsDir, `e2e-${started.toISOString().replace(/[:.]/g, "-")}.json`),
    JSON.stringify({ started, settings, machine: machine(), rows }, null, 2),
  );
  process.stdout.write(`${md}\n`);
  process.stderr.write(`wrote ${path.relative(REPO_ROOT, outFile)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
