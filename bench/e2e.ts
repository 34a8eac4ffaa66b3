/**
 * End-to-end benchmark: requests/s, p50/p99 latency and proxy CPU per request, direct to an upstream
 * vs through reference proxies (the minimal Node proxy, nginx) vs through mcp-edge (no auth; the
 * full pipeline with an API key, with JWTs, in distributed mode), for session-era calls with JSON
 * answers, with SSE answers, and stateless-era (2026-07-28) calls, in front of a trivial upstream
 * and of the official SDK servers; and a stdio MCP server served by mcp-edge (shared and
 * per-session processes) vs by `mcp-proxy` and `supergateway`.
 *
 *   node bench/e2e.ts            every cell (part of `npm run bench`, bench/run.ts)
 *   node bench/e2e.ts --quick    the cells the goals need, short trials (part of `npm run bench:quick`)
 *
 * Options: --trials N  --duration MS  --warmup MS  --process-warmup MS  --connections 1,16,64
 *          --scenarios a,b  --paths a,b  --out FILE (markdown; default bench/results/e2e[-quick].md)  --json FILE
 *          --profile-edge (V8 CPU profile of each edge, summarised in the report)
 *          --edge-ref REF (run mcp-edge from a git commit, not the working tree)
 *
 * Every process is a separate child bound to 127.0.0.1: the upstreams (bench/upstream.ts), the
 * proxies, and one load generator (bench/load.ts) per path. Trials are interleaved across the paths
 * of a cell (trial 1 of every path, then trial 2, ...) so that drift on the machine hits every path
 * alike; each figure is the median over the trials. CPU per request is read from /proc/<pid>/stat
 * before and after each trial: the proxy process for "proxy CPU", the upstream process — for stdio
 * paths every process the proxy spawned — for "upstream CPU".
 *
 * A path that cannot start (nginx not installed, Redis/PostgreSQL down, distributed mode not wired
 * in this tree, the stdio bridges not installable) is reported as unavailable, with the reason, and
 * the run goes on without it.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { summarizeProfile } from "./lib/cpuprofile.ts";
import {
  type DistributedStore,
  removeAllStores,
  removeStore,
  servicesDown,
  uniqueStore,
  usage,
} from "./lib/distributed.ts";
import { ADMIN_TOKEN, createKeys, edgeAnnouncement, FULL_LIMITS } from "./lib/edge.ts";
import { evaluateGoals, goalsConsole } from "./lib/goals.ts";
import { type LocalIssuer, startIssuer } from "./lib/jwt.ts";
import { commandLine, loadNow, machine } from "./lib/machine.ts";
import { nginxBinary, writeNginxConfig } from "./lib/nginx.ts";
import { ensurePeers } from "./lib/peers.ts";
import {
  cpuDelta,
  cpuMicros,
  cpuOf,
  descendants,
  freePort,
  pidsNamed,
  listeningLine,
  machineBusyMicros,
  NODE_BIN,
  REPO_ROOT,
  rssBytes,
  type Started,
  start,
  track,
  waitForPort,
} from "./lib/proc.ts";
import { renderE2E, renderGoals } from "./lib/report.ts";
import { median } from "./lib/stats.ts";
import type { E2EResult, Row, Trial } from "./lib/types.ts";
import type { TrialResult } from "./load.ts";

// ---------------------------------------------------------------- what is measured

interface Scenario {
  id: string;
  title: string;
  /** bench/upstream.ts --mode; none for the stdio scenario (each path spawns its own server). */
  upstreamMode?: string;
  /** bench/load.ts --scenario */
  load: "session" | "stateless";
  /** The route of this scenario on the proxies (each scenario has its own upstream). */
  route: string;
  /** Paths the full run measures in this scenario. */
  paths: string[];
  /** The two reference paths of the ratio columns. */
  refs: [string, string];
}

const HTTP_ALL = ["direct", "minimal", "nginx", "edge", "edge-full", "edge-jwt", "edge-distributed"];
const HTTP_SECONDARY = ["direct", "minimal", "nginx", "edge-full", "edge-distributed"];
const STDIO_ALL = ["edge-stdio-shared", "edge-stdio-session", "mcp-proxy", "supergateway"];

const SCENARIOS: Scenario[] = [
  {
    id: "trivial-json",
    title: "Trivial upstream, session era (2025-11-25), tools/call, JSON answers",
    upstreamMode: "trivial-json",
    load: "session",
    route: "/trivial-json/mcp",
    paths: HTTP_ALL,
    refs: ["direct", "minimal"],
  },
  {
    id: "trivial-sse",
    title: "Trivial upstream, session era, tools/call, SSE answers",
    upstreamMode: "trivial-sse",
    load: "session",
    route: "/trivial-sse/mcp",
    paths: HTTP_SECONDARY,
    refs: ["direct", "minimal"],
  },
  {
    id: "trivial-stateless",
    title: "Trivial upstream, stateless era (2026-07-28), tools/call",
    upstreamMode: "trivial-stateless",
    load: "stateless",
    route: "/trivial-stateless/mcp",
    paths: HTTP_SECONDARY,
    refs: ["direct", "minimal"],
  },
  {
    id: "sdk-json",
    title:
      "Official SDK server (v1 McpServer + StreamableHTTPServerTransport, sessions), session era, tools/call, JSON answers",
    upstreamMode: "json",
    load: "session",
    route: "/sdk-json/mcp",
    paths: HTTP_ALL,
    refs: ["direct", "minimal"],
  },
  {
    id: "sdk-sse",
    title: "Official SDK server (v1, sessions), session era, tools/call, SSE answers",
    upstreamMode: "sse",
    load: "session",
    route: "/sdk-sse/mcp",
    paths: HTTP_SECONDARY,
    refs: ["direct", "minimal"],
  },
  {
    id: "sdk-stateless",
    title: "Official SDK server (v2 createMcpHandler), stateless era (2026-07-28), tools/call",
    upstreamMode: "stateless",
    load: "stateless",
    route: "/sdk-stateless/mcp",
    paths: HTTP_SECONDARY,
    refs: ["direct", "minimal"],
  },
  {
    id: "stdio",
    title:
      "Stdio upstream (SDK v1 McpServer + StdioServerTransport, bench/stdio-server.ts), session era, tools/call",
    load: "session",
    route: "/stdio/mcp",
    paths: STDIO_ALL,
    refs: ["mcp-proxy", "supergateway"],
  },
];

/** The cells of `--quick`: what the goals need, and every path at least once. */
const QUICK_CELLS: { scenario: string; connections: number; paths: string[] }[] = [
  { scenario: "trivial-json", connections: 1, paths: ["direct", "minimal", "edge-full"] },
  {
    scenario: "trivial-json",
    connections: 16,
    paths: ["direct", "minimal", "nginx", "edge-full", "edge-jwt", "edge-distributed"],
  },
  { scenario: "sdk-json", connections: 64, paths: ["direct", "edge-full", "edge-distributed"] },
  { scenario: "stdio", connections: 16, paths: STDIO_ALL },
];

/** A running path: where the load generator sends a scenario's calls, and which process to meter. */
interface RunningPath {
  url(s: Scenario): string;
  /** Headers the load generator sends with every request of a scenario (a credential). */
  headers?(s: Scenario): Record<string, string>;
  /** The proxy process whose CPU is charged to the path (none for direct). */
  proc?: Started;
  /** Processes that serve as this path's upstream, when it spawns its own (stdio). */
  upstreamPids?(): number[];
  /** Store servers the path uses on this machine (Redis, PostgreSQL): their CPU is the path's too. */
  storePids?(): number[];
  stop(): Promise<void>;
}

interface StartContext {
  upstreams: Map<string, Started>;
  /** The HTTP scenarios (with an upstream) this run measures. */
  scenarios: Scenario[];
  tmp: string;
  profileDir?: string;
  issuer: () => Promise<LocalIssuer>;
  versions: Record<string, string>;
}

/** Paths whose process is given a port picked beforehand by freePort (see the start of main). */
const FIXED_PORT_PATHS: ReadonlySet<string> = new Set(["nginx", "mcp-proxy", "supergateway", "edge-jwt"]);

interface PathSpec {
  id: string;
  title: string;
  start(ctx: StartContext): Promise<RunningPath>;
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
    title: "minimal Node proxy (bench/minimal-proxy.ts: node:http + undici, keep-alive; the Node limit)",
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
    id: "nginx",
    title:
      "nginx, plain reverse proxy (one worker, no master, HTTP/1.1 keep-alive upstream, no buffering, no access log; the C limit)",
    async start({ upstreams, scenarios, tmp, versions }) {
      const bin = nginxBinary();
      if (!bin) throw new Error("nginx not installed");
      const v = spawnSync(bin, ["-v"], { encoding: "utf8" });
      versions.nginx = `${v.stdout}${v.stderr}`.trim().replace(/^nginx version: nginx\//, "");
      const dir = path.join(tmp, "nginx");
      const port = await freePort();
      const conf = writeNginxConfig(
        dir,
        port,
        scenarios.map((s) => ({ path: s.route, upstream: upstreams.get(s.id)!.announced.url as string })),
      );
      const proc = await start({
        name: "nginx",
        command: bin,
        args: ["-p", dir, "-c", conf, "-e", "stderr"],
        parse: () => undefined,
        expect: [],
        ready: async () => {
          await waitForPort(port);
          return { url: `http://127.0.0.1:${port}` };
        },
      });
      return { url: (s) => `${proc.announced.url}${s.route}`, proc, stop: () => proc.stop() };
    },
  },
  {
    id: "edge",
    title: "mcp-edge, `auth: [none]` (no key, no limits; metrics and audit at their defaults), embedded mode",
    start: (ctx) => startHttpEdge(ctx, "edge", "none"),
  },
  {
    id: "edge-full",
    title:
      "mcp-edge, full pipeline, embedded mode (SQLite): API key auth (a key per server made through the admin API), limits per key, session and tool plus an in-flight cap per session (set high: never refused), audit on, metrics on",
    start: (ctx) => startHttpEdge(ctx, "edge-full", "apiKey"),
  },
  {
    id: "edge-jwt",
    title:
      "mcp-edge, full pipeline with OAuth instead of the key: ES256 access tokens (jose) from a local issuer, JWKS from a node:http server on 127.0.0.1; same limits, audit and metrics",
    start: (ctx) => startHttpEdge(ctx, "edge-jwt", "oauth"),
  },
  {
    id: "edge-distributed",
    title:
      "mcp-edge, full pipeline (API key, limits, audit, metrics) in distributed mode: sessions and counters in Redis, keys and audit in PostgreSQL (a key prefix and a schema of this run, removed after)",
    start: (ctx) => startHttpEdge(ctx, "edge-distributed", "apiKey"),
  },
  {
    id: "edge-stdio-shared",
    title:
      "mcp-edge over the stdio server, `mode: shared` (one process for every session), with API key auth, limits, audit and metrics",
    start: (ctx) => startStdioEdge(ctx, "edge-stdio-shared", "shared"),
  },
  {
    id: "edge-stdio-session",
    title:
      "mcp-edge over the stdio server, `mode: session` (one process per MCP session), with API key auth, limits, audit and metrics",
    start: (ctx) => startStdioEdge(ctx, "edge-stdio-session", "session"),
  },
  {
    id: "mcp-proxy",
    title:
      "`mcp-proxy` 6 (`--server stream`: Streamable HTTP, one shared stdio process, defaults otherwise), no auth, limits or audit",
    async start({ versions }) {
      const { mcpProxy } = await ensurePeers(note);
      versions["mcp-proxy"] = mcpProxy.version;
      const port = await freePort();
      const proc = await start({
        name: "mcp-proxy",
        command: NODE_BIN,
        args: [
          mcpProxy.bin,
          "--host",
          "127.0.0.1",
          "--port",
          String(port),
          "--server",
          "stream",
          "--",
          NODE_BIN,
          path.join(REPO_ROOT, "bench/stdio-server.ts"),
        ],
        parse: () => undefined,
        expect: [],
        ready: async () => {
          await waitForPort(port);
          return { url: `http://127.0.0.1:${port}/mcp` };
        },
      });
      return {
        url: () => proc.announced.url as string,
        proc,
        upstreamPids: () => descendants(proc.pid),
        stop: () => proc.stop(),
      };
    },
  },
  {
    id: "supergateway",
    title:
      "`supergateway` 4 (`--outputTransport streamableHttp --stateful`: one stdio process per session), no auth, limits or audit; bound to 127.0.0.1 by bench/lib/loopback-only.ts",
    async start({ versions }) {
      const { supergateway } = await ensurePeers(note);
      versions.supergateway = supergateway.version;
      const port = await freePort();
      const proc = await start({
        name: "supergateway",
        command: NODE_BIN,
        args: [
          "--import",
          path.join(REPO_ROOT, "bench/lib/loopback-only.ts"),
          supergateway.bin,
          "--stdio",
          `${NODE_BIN} ${path.join(REPO_ROOT, "bench/stdio-server.ts")}`,
          "--outputTransport",
          "streamableHttp",
          "--stateful",
          "--port",
          String(port),
          "--streamableHttpPath",
          "/mcp",
          "--logLevel",
          "none",
        ],
        parse: () => undefined,
        expect: [],
        ready: async () => {
          await waitForPort(port);
          return { url: `http://127.0.0.1:${port}/mcp` };
        },
      });
      return {
        url: () => proc.announced.url as string,
        proc,
        upstreamPids: () => descendants(proc.pid),
        stop: () => proc.stop(),
      };
    },
  },
];

const T0 = performance.now();
/** Progress on stderr, with the time since the start. */
function note(line: string): void {
  process.stderr.write(`[${((performance.now() - T0) / 1000).toFixed(1).padStart(6)} s] ${line}\n`);
}

/** Starts `src/main.ts serve` with a config document (JSON is YAML). */
async function startEdgeProcess(
  name: string,
  doc: Record<string, unknown>,
  servers: string[],
  dir: string,
  profileDir: string | undefined,
): Promise<Started> {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "edge.yaml");
  writeFileSync(file, JSON.stringify(doc, null, 2));
  const prof = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${path.join(profileDir, name)}`] : [];
  return start({
    name: `mcp-edge (${name})`,
    command: NODE_BIN,
    args: [...prof, path.join(edgeRoot, "src/main.ts"), "serve", "-c", file],
    cwd: dir,
    parse: edgeAnnouncement,
    expect: [...servers, "admin:"],
    timeoutMs: 30_000,
  });
}

/**
 * mcp-edge over every HTTP scenario's upstream. `none`: `auth: [none]`, no limits. `apiKey` /
 * `oauth`: the full pipeline a production route runs — that credential, limits per key, session and
 * tool and an in-flight cap (high enough never to refuse: the cost of counting is what is
 * measured), audit and metrics on (their defaults). `edge-distributed` adds Redis and PostgreSQL.
 */
async function startHttpEdge(
  { upstreams, scenarios, tmp, profileDir, issuer }: StartContext,
  name: string,
  auth: "none" | "apiKey" | "oauth",
): Promise<RunningPath> {
  const dir = path.join(tmp, name);
  let store: DistributedStore | undefined;
  if (name === "edge-distributed") {
    const down = await servicesDown();
    if (down) throw new Error(down);
    store = uniqueStore("e2e");
  }
  let iss: LocalIssuer | undefined;
  let publicUrl: string | undefined;
  let port = 0;
  if (auth === "oauth") {
    iss = await issuer();
    // The token audience is publicUrl + route (RFC 8707): the port must be known before the start.
    port = await freePort();
    publicUrl = `http://127.0.0.1:${port}`;
  }
  const doc = {
    listen: { host: "127.0.0.1", port },
    ...(publicUrl ? { publicUrl } : {}),
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    store: { sqlite: path.join(dir, "edge.db"), ...(store ?? {}) },
    log: { level: "warn" },
    metrics: { enabled: true },
    ...(iss
      ? { auth: { oauth: [{ issuer: iss.issuer, jwksUri: iss.jwksUri, algorithms: ["ES256"] }] } }
      : {}),
    servers: Object.fromEntries(
      scenarios.map((s) => [
        s.id,
        {
          route: s.route,
          upstream: { urls: [upstreams.get(s.id)!.announced.url] },
          auth: [auth],
          ...(auth !== "none" ? { limits: FULL_LIMITS } : {}),
        },
      ]),
    ),
  };
  const ids = scenarios.map((s) => s.id);
  let proc: Started | undefined;
  try {
    proc = await startEdgeProcess(name, doc, ids, dir, profileDir);
    const headers = new Map<string, Record<string, string>>();
    if (auth === "apiKey") {
      for (const [server, key] of await createKeys(proc.announced["admin:"] as string, ids))
        headers.set(server, { "x-api-key": key });
    } else if (auth === "oauth" && iss && publicUrl) {
      for (const s of scenarios)
        headers.set(s.id, { authorization: `Bearer ${await iss.mint(`${publicUrl}${s.route}`)}` });
    }
    if (store) await checkDistributed(proc, store, scenarios, headers);
    const running = proc;
    return {
      url: (s) => running.announced[s.id] as string,
      headers: (s) => headers.get(s.id) ?? {},
      proc,
      ...(store ? { storePids: () => pidsNamed(["redis-server", "postgres"]) } : {}),
      stop: async () => {
        await running.stop(30_000);
        if (store) await removeStore(store, note);
      },
    };
  } catch (err) {
    await proc?.stop(5000);
    if (store) await removeStore(store, note);
    throw err;
  }
}

/**
 * A tree without the distributed wiring starts anyway (in embedded mode): the path counts as
 * distributed only when the edge made its tables in the run's PostgreSQL schema and, after one
 * session, wrote keys under the run's Redis prefix.
 */
async function checkDistributed(
  proc: Started,
  store: DistributedStore,
  scenarios: Scenario[],
  headers: Map<string, Record<string, string>>,
): Promise<void> {
  const s = scenarios.find((x) => x.load === "session");
  if (s) {
    const url = proc.announced[s.id] as string;
    const res = await fetch(url, {
      method: "POST",
      headers: {
        ...headers.get(s.id),
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "bench", version: "1" },
        },
      }),
    });
    await res.text();
    const sid = res.headers.get("mcp-session-id");
    if (res.status !== 200 || !sid) throw new Error(`initialize through the distributed edge: ${res.status}`);
    const u = await usage(store);
    await fetch(url, { method: "DELETE", headers: { ...headers.get(s.id), "mcp-session-id": sid } }).then(
      (r) => r.text(),
    );
    if (u.pgTables === 0 || u.redisKeys === 0) {
      throw new Error(
        `the edge started but did not use the distributed stores (PostgreSQL tables in ${store.postgres.schema}: ${u.pgTables}, Redis keys under ${store.redis.keyPrefix}: ${u.redisKeys}): distributed mode is not wired in this tree`,
      );
    }
  }
}

/** mcp-edge over the stdio server: API key, limits, audit and metrics on, one server `stdio`. */
async function startStdioEdge(
  { tmp, profileDir }: StartContext,
  name: string,
  mode: "shared" | "session",
): Promise<RunningPath> {
  const dir = path.join(tmp, name);
  const doc = {
    listen: { host: "127.0.0.1", port: 0 },
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    store: { sqlite: path.join(dir, "edge.db") },
    log: { level: "warn" },
    metrics: { enabled: true },
    servers: {
      stdio: {
        route: "/stdio/mcp",
        upstream: {
          // One principal opens every connection's session: caps and the initialize limit set high
          // (a process per session is what is measured).
          stdio: {
            command: NODE_BIN,
            args: [path.join(REPO_ROOT, "bench/stdio-server.ts")],
            mode,
            maxProcesses: 1024,
            maxProcessesPerPrincipal: 1024,
          },
        },
        auth: ["apiKey"],
        limits: { ...FULL_LIMITS, initialize: "100000000/min" },
      },
    },
  };
  const proc = await startEdgeProcess(name, doc, ["stdio"], dir, profileDir);
  try {
    const keys = await createKeys(proc.announced["admin:"] as string, ["stdio"]);
    return {
      url: () => proc.announced.stdio as string,
      headers: () => ({ "x-api-key": keys.get("stdio") as string }),
      proc,
      upstreamPids: () => descendants(proc.pid),
      stop: () => proc.stop(30_000),
    };
  } catch (err) {
    await proc.stop(5000);
    throw err;
  }
}

// ---------------------------------------------------------------- options

const { values: opt } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    trials: { type: "string" },
    duration: { type: "string" },
    warmup: { type: "string" },
    "process-warmup": { type: "string" },
    connections: { type: "string" },
    scenarios: { type: "string" },
    paths: { type: "string" },
    out: { type: "string" },
    json: { type: "string" },
    "profile-edge": { type: "boolean", default: false },
    "edge-ref": { type: "string" },
  },
});
const quick = opt.quick;
const settings = {
  trials: Number(opt.trials ?? (quick ? 3 : 5)),
  durationMs: Number(opt.duration ?? (quick ? 500 : 1500)),
  warmupMs: Number(opt.warmup ?? (quick ? 300 : 1000)),
  /**
   * Before the first cell, each proxy process serves this long of calls at 16 connections, not
   * measured: the JIT warm-up of a process that has just started (an edge reaches its steady cost
   * per call after tens of thousands of calls: 300 → 110 µs over its first 6 s here). Every path
   * gets the same; "direct" has no proxy to warm.
   */
  processWarmupMs: Number(opt["process-warmup"] ?? (quick ? 1500 : 5000)),
  /** Quick: a cell's load generators open their sessions and warm up at once, not one by one. */
  parallelWarmup: quick,
};
const onlyScenarios = opt.scenarios?.split(",");
const onlyPaths = opt.paths?.split(",");
const onlyConnections = opt.connections?.split(",").map(Number);
for (const id of onlyScenarios ?? [])
  if (!SCENARIOS.some((s) => s.id === id)) throw new Error(`unknown scenario ${id}`);
for (const id of onlyPaths ?? []) if (!PATHS.some((p) => p.id === id)) throw new Error(`unknown path ${id}`);

/** The (scenario, connections, paths) cells of this run. */
function plan(): { scenario: Scenario; connections: number; paths: string[] }[] {
  const cells =
    quick && !onlyConnections
      ? QUICK_CELLS.map((c) => ({ ...c, scenario: SCENARIOS.find((s) => s.id === c.scenario) as Scenario }))
      : SCENARIOS.flatMap((s) =>
          (onlyConnections ?? [1, 16, 64]).map((connections) => ({
            scenario: s,
            connections,
            paths: s.paths,
          })),
        );
  return cells
    .filter((c) => !onlyScenarios || onlyScenarios.includes(c.scenario.id))
    .map((c) => ({ ...c, paths: c.paths.filter((p) => !onlyPaths || onlyPaths.includes(p)) }))
    .filter((c) => c.paths.length > 0);
}

const outFile = path.resolve(
  REPO_ROOT,
  opt.out ?? (quick ? "bench/results/e2e-quick.md" : "bench/results/e2e.md"),
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
  only?: { warmupMs: number; trials: number },
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
      String(only?.warmupMs ?? settings.warmupMs),
      "--trials",
      String(only?.trials ?? settings.trials),
      ...Object.entries(headers).flatMap(([k, v]) => ["--header", `${k}: ${v}`]),
    ],
    { cwd: REPO_ROOT, stdio: ["pipe", "pipe", "pipe"] },
  );
  track(child);
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    if (stderr.length < 16_384) stderr += d.toString();
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
  const stop = async () => {
    child.stdin.end();
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  };
  const ready = await nextLine().catch((err: unknown) => `${(err as Error).message}`);
  if (ready !== "READY") {
    await stop();
    throw new Error(`load generator: expected READY, got ${ready}\n${stderr}`);
  }
  if (stderr.trim()) note(`  ${s.id} c=${connections} ${url}: ${stderr.trim()}`);
  return {
    pid: child.pid as number,
    async trial() {
      const pending = nextLine();
      child.stdin.write("go\n");
      const line = await pending;
      if (!line.startsWith("RESULT ")) throw new Error(`load generator: ${line}\n${stderr}`);
      return JSON.parse(line.slice(7)) as TrialResult;
    },
    stop,
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
    ...(trials.some((t) => t.storeCpuUsPerReq !== undefined)
      ? { storeCpuUsPerReq: m((t) => t.storeCpuUsPerReq ?? Number.NaN) }
      : {}),
    backgroundCpuPct: m((t) => t.backgroundCpuPct),
    proxyRssMiB,
    errors: trials.reduce((a, t) => a + t.errors, 0),
    ...(firstError ? { firstError } : {}),
  };
}

/**
 * The process warm-up (settings.processWarmupMs): each proxy path, one at a time, serves calls of
 * the first scenario it is measured in, at 16 connections, before any trial.
 */
async function warmUpProcesses(
  cells: { scenario: Scenario; paths: string[] }[],
  running: Map<string, RunningPath>,
): Promise<void> {
  if (settings.processWarmupMs <= 0) return;
  const done = new Set<string>();
  for (const c of cells) {
    for (const id of c.paths) {
      const rp = running.get(id);
      if (!rp?.proc || done.has(id)) continue;
      done.add(id);
      try {
        const gen = await spawnLoad(rp.url(c.scenario), c.scenario, 16, rp.headers?.(c.scenario), {
          warmupMs: settings.processWarmupMs,
          trials: 0,
        });
        await gen.stop();
      } catch (err) {
        // The path's own cells report it; the warm-up only notes it.
        note(`  warm-up of ${id} failed: ${(err as Error).message.split("\n")[0]}`);
      }
    }
  }
  if (done.size > 0)
    note(`warmed up ${[...done].join(", ")}: ${settings.processWarmupMs} ms of calls each at 16 connections`);
}

async function measure(
  s: Scenario,
  connections: number,
  pathIds: string[],
  running: Map<string, RunningPath>,
  upstream: Started | undefined,
): Promise<Row[]> {
  const gens = new Map<string, LoadGen>();
  const trials = new Map<string, Trial[]>();
  const failedPaths = new Map<string, string>();
  try {
    // One load generator per path, started (and warmed up) one after the other (quick: at once).
    const spawnOne = async (id: string) => {
      const rp = running.get(id)!;
      try {
        const gen = await spawnLoad(rp.url(s), s, connections, rp.headers?.(s));
        gens.set(id, gen);
        trials.set(id, []);
      } catch (err) {
        failedPaths.set(id, (err as Error).message.split("\n").slice(0, 3).join(" "));
        note(`  ${s.id} c=${connections} ${id}: the load generator failed: ${failedPaths.get(id)}`);
      }
    };
    if (settings.parallelWarmup) await Promise.all(pathIds.map(spawnOne));
    else for (const id of pathIds) await spawnOne(id);
    const order = pathIds.filter((id) => gens.has(id));
    for (let t = 0; t < settings.trials; t++) {
      for (const id of order) {
        const rp = running.get(id)!;
        const proxy = rp.proc;
        const gen = gens.get(id)!;
        const upPids = rp.upstreamPids ? rp.upstreamPids() : upstream ? [upstream.pid] : [];
        const storePids = rp.storePids?.() ?? [];
        const pids = [...(proxy ? [proxy.pid] : []), gen.pid, ...upPids, ...storePids];
        const m0 = machineBusyMicros();
        const all0 = cpuOf(pids);
        const p0 = proxy ? cpuMicros(proxy.pid) : 0;
        const u0 = cpuOf(upPids);
        const s0 = cpuOf(storePids);
        const r = await gen.trial();
        const s1 = cpuOf(storePids);
        const u1 = cpuOf(upPids);
        const p1 = proxy ? cpuMicros(proxy.pid) : 0;
        const all1 = cpuOf(pids);
        const m1 = machineBusyMicros();
        const n = Math.max(1, r.requests);
        trials.get(id)!.push({
          ...r,
          proxyCpuUsPerReq: proxy ? (p1 - p0) / n : Number.NaN,
          upstreamCpuUsPerReq: cpuDelta(u0, u1) / n,
          ...(storePids.length ? { storeCpuUsPerReq: cpuDelta(s0, s1) / n } : {}),
          backgroundCpuPct: Math.max(0, (100 * (m1 - m0 - cpuDelta(all0, all1))) / (r.elapsedMs * 1000)),
        });
        note(
          `  ${s.id} c=${connections} ${id.padEnd(18)} trial ${t + 1}/${settings.trials}: ` +
            `${r.rps.toFixed(0)} req/s p50 ${r.p50Ms.toFixed(2)} ms p99 ${r.p99Ms.toFixed(2)} ms` +
            `${r.errors ? ` ERRORS ${r.errors}: ${r.firstError}` : ""}`,
        );
      }
    }
  } finally {
    await Promise.all([...gens.values()].map((g) => g.stop()));
  }
  const rows = pathIds
    .filter((id) => gens.has(id))
    .map((id) => {
      const proxy = running.get(id)!.proc;
      let rss = Number.NaN;
      try {
        rss = proxy ? rssBytes(proxy.pid) / 2 ** 20 : Number.NaN;
      } catch {
        // exited
      }
      return aggregate(s.id, id, connections, trials.get(id)!, rss);
    });
  for (const [id, why] of failedPaths) {
    rows.push({
      ...aggregate(s.id, id, connections, [], Number.NaN),
      errors: 1,
      firstError: `no trial ran: ${why}`,
    });
  }
  return rows;
}

// ---------------------------------------------------------------- main

/** Set by SIGINT/SIGTERM: the run stops, every process is stopped, nothing more is reported. */
let stopping = false;

async function main(): Promise<void> {
  const started = new Date();
  const t0 = performance.now();
  const mc = machine();
  const cells = plan();
  const scenarioIds = [...new Set(cells.map((c) => c.scenario.id))];
  const usedScenarios = SCENARIOS.filter((s) => scenarioIds.includes(s.id));
  const httpScenarios = usedScenarios.filter((s) => s.upstreamMode !== undefined);
  const pathIds = [...new Set(cells.flatMap((c) => c.paths))];
  const usedPaths = PATHS.filter((p) => pathIds.includes(p.id));
  const tmp = mkdtempSync(path.join(os.tmpdir(), "mcp-edge-bench-"));
  const profileDir = opt["profile-edge"] ? path.join(resultsDir, `profile-${Date.now()}`) : undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const upstreams = new Map<string, Started>();
  const running = new Map<string, RunningPath>();
  const unavailable: Record<string, string> = {};
  const versions: Record<string, string> = {};
  const rows: Row[] = [];
  let issuer: Promise<LocalIssuer> | undefined;
  const cleanup = async () => {
    await Promise.allSettled([...running.values()].map((p) => p.stop()));
    running.clear();
    await Promise.allSettled([...upstreams.values()].map((u) => u.stop()));
    upstreams.clear();
    if (issuer) await (await issuer.catch(() => undefined))?.close();
  };
  const onSignal = () => {
    // A second signal (Ctrl-C reaches the whole process group, bench/run.ts forwards it) is ignored.
    if (stopping) return;
    stopping = true;
    note("interrupted: stopping every process of the benchmark");
    void cleanup()
      .then(() => removeAllStores(note))
      .finally(() => {
        rmSync(tmp, { recursive: true, force: true });
        process.exit(130);
      });
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    await Promise.all(
      httpScenarios.map(async (s) => {
        upstreams.set(
          s.id,
          await start({
            name: `upstream(${s.upstreamMode})`,
            command: NODE_BIN,
            args: [path.join(REPO_ROOT, "bench/upstream.ts"), "--mode", s.upstreamMode as string],
            parse: listeningLine,
            expect: ["url"],
          }),
        );
      }),
    );
    if (opt["edge-ref"]) exportEdge(opt["edge-ref"], tmp);
    const ctx: StartContext = {
      upstreams,
      scenarios: httpScenarios,
      tmp,
      ...(profileDir ? { profileDir } : {}),
      issuer: () => (issuer ??= startIssuer()),
      versions,
    };
    // One that fails is reported, not fatal.
    const startPath = async (p: PathSpec) => {
      try {
        running.set(p.id, await p.start(ctx));
      } catch (err) {
        const [msg = "", output = ""] = (err as Error).message.split("\n--- output ---");
        // The reason, and the last lines the process wrote (usually the explanation).
        const tail = output.trim().split("\n").slice(-3).join(" | ").slice(0, 400);
        unavailable[p.id] = `${msg.trim()}${tail ? ` (${tail})` : ""}`;
        note(`path ${p.id} unavailable: ${unavailable[p.id]}`);
      }
    };
    // Paths told a port picked in advance (freePort) start first, one by one, each bound before the
    // next starts: started beside the port-0 listeners, an edge once took the port picked for
    // supergateway, whose load generator then reached the edge (404). The others start at once.
    for (const p of usedPaths.filter((x) => FIXED_PORT_PATHS.has(x.id))) await startPath(p);
    await Promise.all(usedPaths.filter((x) => !FIXED_PORT_PATHS.has(x.id)).map(startPath));
    note(
      `mcp-edge e2e bench: ${cells.length} cells, ${settings.trials} trials of ${settings.durationMs} ms ` +
        `(${settings.warmupMs} ms warm-up); paths ${[...running.keys()].join(", ")}`,
    );
    await warmUpProcesses(cells, running);
    for (const c of cells) {
      const ids = c.paths.filter((id) => running.has(id));
      if (ids.length === 0) continue;
      rows.push(...(await measure(c.scenario, c.connections, ids, running, upstreams.get(c.scenario.id))));
    }
  } catch (err) {
    if (stopping) return new Promise<never>(() => undefined); // the signal handler exits
    // What the servers said is usually the explanation.
    for (const proc of [...upstreams.values(), ...[...running.values()].flatMap((r) => r.proc ?? [])]) {
      const out = proc.output().trim();
      if (out) note(`--- ${proc.name} output ---\n${out.slice(-4000)}`);
    }
    throw err;
  } finally {
    await cleanup();
    await removeAllStores(note);
    rmSync(tmp, { recursive: true, force: true });
  }
  let profile = "";
  if (profileDir) {
    // One profile per edge path (each writes into its own directory when it exits).
    const parts: string[] = [];
    for (const id of pathIds.filter((x) => x.startsWith("edge"))) {
      let files: string[];
      try {
        files = readdirSync(path.join(profileDir, id)).filter((f) => f.endsWith(".cpuprofile"));
      } catch {
        files = [];
      }
      parts.push(
        `### ${id}\n\n${
          files.length
            ? summarizeProfile(path.join(profileDir, id, files[0] as string), 25)
            : "(no profile was written: the edge did not exit cleanly)"
        }`,
      );
    }
    profile = parts.join("\n\n");
  }
  mc.loadEnd = loadNow();
  const result: E2EResult = {
    kind: "e2e",
    started: started.toISOString(),
    elapsedS: (performance.now() - t0) / 1000,
    command: commandLine(),
    quick,
    settings,
    scenarios: usedScenarios.map((s) => ({ id: s.id, title: s.title, refs: s.refs })),
    paths: usedPaths.map((p) => ({ id: p.id, title: p.title })),
    cells: cells.map((c) => ({ scenario: c.scenario.id, connections: c.connections, paths: c.paths })),
    unavailable,
    versions,
    rows,
    machine: mc,
    edgeLabel,
    profile,
  };
  const goals = evaluateGoals({ e2e: result });
  const md = [
    "# mcp-edge end-to-end benchmark",
    "",
    renderGoals(goals),
    "",
    renderE2E(result, { heading: "##" }),
  ].join("\n");
  mkdirSync(path.dirname(outFile), { recursive: true });
  writeFileSync(outFile, md);
  mkdirSync(resultsDir, { recursive: true });
  const jsonFile = opt.json
    ? path.resolve(opt.json)
    : path.join(resultsDir, `e2e-${started.toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(jsonFile, JSON.stringify(result, null, 2));
  process.stdout.write(`${goalsConsole(goals)}\n`);
  note(`wrote ${path.relative(REPO_ROOT, outFile)} and ${path.relative(REPO_ROOT, jsonFile)}`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
