/**
 * Memory of the edge per idle session and per open SSE stream (standalone GET streams), with 1 000
 * and 10 000 of them held.
 *
 *   node bench/memory.ts [--quick] [--counts 1000,10000] [--out FILE] [--json FILE]
 *
 * Per count, a fresh edge (full pipeline, embedded: API key, limits, audit, metrics) in front of
 * trivial upstreams (bench/upstream.ts --mode trivial-json, one per 3 000 streams), run with
 * `--expose-gc --import bench/lib/gc-signal.ts`, so that a SIGUSR2 makes it collect garbage and
 * report `process.memoryUsage()`. Then:
 *   1. warm-up: 200 sessions and streams opened and closed (JIT, pools), then the baseline;
 *   2. N sessions opened (initialize + notifications/initialized), left idle: RSS and heap again;
 *   3. one standalone GET stream opened on each session, each on its own connection, held open:
 *      RSS and heap again;
 *   (sessions and streams are opened 1 000 at a time, with a full GC in the edge after each batch);
 *   4. streams and sessions closed: RSS and heap again (what is not given back was churn).
 * Each reading is taken after a full GC and a pause, median of three. Per session = (2 − 1) / N;
 * per stream = (3 − 2) / streams. RSS is read from /proc/<pid>/status (VmRSS); heap from the
 * edge's own report.
 *
 * The edge holds two descriptors per stream (the client's connection and its upstream GET): with
 * an open-file hard limit L, at most (L − 200) / 2 streams are opened, and the report says so.
 * The clients (sessions and streams) are held by this process.
 */
import { request as httpRequest, type ClientRequest } from "node:http";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Pool } from "undici";
import { createKeys, edgeAnnouncement, FULL_LIMITS, ADMIN_TOKEN } from "./lib/edge.ts";
import { commandLine, loadNow, machine } from "./lib/machine.ts";
import { listeningLine, NODE_BIN, REPO_ROOT, rssBytes, type Started, start } from "./lib/proc.ts";
import { renderMemory } from "./lib/report.ts";
import { median } from "./lib/stats.ts";
import type { MemoryDelta, MemoryResult, MemoryStep } from "./lib/types.ts";

const { values: opt } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    counts: { type: "string" },
    out: { type: "string" },
    json: { type: "string" },
  },
});
const counts = (opt.counts ?? "1000,10000").split(",").map(Number);
const outFile = path.resolve(
  REPO_ROOT,
  opt.out ?? (opt.quick ? "bench/results/memory-quick.md" : "bench/results/memory.md"),
);
const SESSION_VERSION = "2025-11-25";
const STREAMS_PER_UPSTREAM = 3000;
/**
 * Sessions and streams are opened this many at a time, with a full GC in the edge after each
 * chunk: what opening them churns is collected as it would be over time in a running edge, instead
 * of piling up into the process's high-water mark (which made the RSS figures vary several-fold
 * from run to run).
 */
const FILL_CHUNK = 1000;

function note(line: string): void {
  process.stderr.write(`${line}\n`);
}

function fdLimits(): { soft: number; hard: number } {
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((l) => l.startsWith("Max open files"));
  const [soft, hard] = (line ?? "").replace("Max open files", "").trim().split(/\s+/);
  const n = (v: string | undefined) => (v === "unlimited" ? Number.POSITIVE_INFINITY : Number(v));
  return { soft: n(soft), hard: n(hard) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Reading {
  rss: number;
  /** V8 heapUsed after GC: the JavaScript objects retained. */
  heap: number;
  /** V8 heapTotal: what V8 has committed for its heap. */
  heapTotal: number;
  /** Memory of C++ objects bound to JavaScript ones (Buffers, sockets' native parts). */
  external: number;
  /** RSS split from /proc/<pid>/status: anonymous, file-backed, shared memory (kB → bytes). */
  rssAnon: number;
  rssFile: number;
  rssShmem: number;
}

function rssSplit(pid: number): { rssAnon: number; rssFile: number; rssShmem: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN) * 1024;
  return { rssAnon: kb("RssAnon"), rssFile: kb("RssFile"), rssShmem: kb("RssShmem") };
}

type Usage = { rss: number; heapUsed: number; heapTotal: number; external: number };

/** The edge with the GC hook, and what it reports. */
interface Edge {
  proc: Started;
  url: string;
  key: string;
  /** Full GC in the edge, a pause, then RSS (from /proc) and its report; medians of 3. */
  settle(): Promise<Reading>;
  /** One full GC in the edge (while filling: see FILL_CHUNK). */
  gc(): Promise<void>;
  stop(): Promise<void>;
}

async function startEdge(dir: string, upstreams: string[]): Promise<Edge> {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "edge.yaml");
  const doc = {
    listen: { host: "127.0.0.1", port: 0 },
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    store: { sqlite: path.join(dir, "edge.db") },
    log: { level: "warn" },
    metrics: { enabled: true },
    servers: {
      mem: {
        route: "/mem/mcp",
        upstream: { urls: upstreams },
        auth: ["apiKey"],
        limits: FULL_LIMITS,
      },
    },
  };
  writeFileSync(file, JSON.stringify(doc, null, 2));
  const reports: ((m: Usage) => void)[] = [];
  const proc = await start({
    name: "mcp-edge (memory)",
    command: NODE_BIN,
    args: [
      "--expose-gc",
      "--import",
      path.join(REPO_ROOT, "bench/lib/gc-signal.ts"),
      path.join(REPO_ROOT, "src/main.ts"),
      "serve",
      "-c",
      file,
    ],
    cwd: dir,
    parse: edgeAnnouncement,
    expect: ["mem", "admin:"],
    timeoutMs: 30_000,
    onLine: (line) => {
      if (line.startsWith("BENCH-MEM ")) reports.shift()?.(JSON.parse(line.slice(10)) as Usage);
    },
  });
  const keys = await createKeys(proc.announced["admin:"] as string, ["mem"]);
  const gcOnce = () =>
    new Promise<Usage>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the edge did not report its memory")), 10_000);
      reports.push((m) => {
        clearTimeout(timer);
        resolve(m);
      });
      proc.child.kill("SIGUSR2");
    });
  return {
    proc,
    url: proc.announced.mem as string,
    key: keys.get("mem") as string,
    async settle() {
      const all: Reading[] = [];
      for (let i = 0; i < 3; i++) {
        const m = await gcOnce();
        await sleep(i === 0 ? (opt.quick ? 500 : 1000) : opt.quick ? 200 : 400);
        all.push({
          rss: rssBytes(proc.pid),
          ...rssSplit(proc.pid),
          heap: m.heapUsed,
          heapTotal: m.heapTotal,
          external: m.external,
        });
      }
      const med = (f: (r: Reading) => number) => median(all.map(f));
      return {
        rss: med((r) => r.rss),
        rssAnon: med((r) => r.rssAnon),
        rssFile: med((r) => r.rssFile),
        rssShmem: med((r) => r.rssShmem),
        heap: med((r) => r.heap),
        heapTotal: med((r) => r.heapTotal),
        external: med((r) => r.external),
      };
    },
    gc: async () => {
      await gcOnce();
    },
    stop: () => proc.stop(30_000),
  };
}

function delta(a: Reading, b: Reading, items: number): MemoryDelta {
  const per = (x: number) => x / Math.max(1, items);
  return {
    rssDeltaBytes: b.rss - a.rss,
    perItemBytes: per(b.rss - a.rss),
    heapDeltaBytes: b.heap - a.heap,
    heapPerItemBytes: per(b.heap - a.heap),
    heapTotalPerItemBytes: per(b.heapTotal - a.heapTotal),
    externalPerItemBytes: per(b.external - a.external),
    rssAnonPerItemBytes: per(b.rssAnon - a.rssAnon),
    rssFilePerItemBytes: per(b.rssFile - a.rssFile + (b.rssShmem - a.rssShmem)),
  };
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
function show(r: Reading): string {
  return (
    `RSS ${mib(r.rss)} (anon ${mib(r.rssAnon)}, file ${mib(r.rssFile)}, shmem ${mib(r.rssShmem)}), ` +
    `heap used ${mib(r.heap)} of ${mib(r.heapTotal)}, external ${mib(r.external)}`
  );
}

/** Sessions opened through the edge, over a small keep-alive pool. */
class Clients {
  readonly #pool: Pool;
  readonly #url: URL;
  readonly #key: string;
  readonly ids: string[] = [];

  constructor(url: string, key: string) {
    this.#url = new URL(url);
    this.#key = key;
    this.#pool = new Pool(this.#url.origin, { connections: 32, pipelining: 1 });
  }

  #headers(sid?: string): Record<string, string> {
    return {
      "x-api-key": this.#key,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...(sid ? { "mcp-session-id": sid, "mcp-protocol-version": SESSION_VERSION } : {}),
    };
  }

  async #open(): Promise<string> {
    const init = await this.#pool.request({
      path: this.#url.pathname,
      method: "POST",
      headers: this.#headers(),
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 0,
        method: "initialize",
        params: {
          protocolVersion: SESSION_VERSION,
          capabilities: {},
          clientInfo: { name: "mcp-edge-memory-bench", version: "1.0.0" },
        },
      }),
    });
    const text = await init.body.text();
    const sid = init.headers["mcp-session-id"];
    if (init.statusCode !== 200 || typeof sid !== "string")
      throw new Error(`initialize: ${init.statusCode} ${text.slice(0, 200)}`);
    const ack = await this.#pool.request({
      path: this.#url.pathname,
      method: "POST",
      headers: this.#headers(sid),
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    });
    await ack.body.dump();
    if (ack.statusCode !== 202) throw new Error(`notifications/initialized: ${ack.statusCode}`);
    return sid;
  }

  async open(n: number): Promise<void> {
    let left = n;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (left-- > 0) this.ids.push(await this.#open());
      }),
    );
  }

  async closeAll(): Promise<void> {
    const ids = this.ids.splice(0);
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        for (let id = ids.pop(); id !== undefined; id = ids.pop()) {
          const res = await this.#pool.request({
            path: this.#url.pathname,
            method: "DELETE",
            headers: this.#headers(id),
          });
          await res.body.dump();
        }
      }),
    );
  }

  /** A standalone GET stream on each of `ids`, each on its own connection; resolves once all are open. */
  async streams(ids: string[]): Promise<ClientRequest[]> {
    const held: ClientRequest[] = [];
    let i = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (i < ids.length) {
          const sid = ids[i++] as string;
          held.push(await this.#stream(sid));
        }
      }),
    );
    return held;
  }

  #stream(sid: string): Promise<ClientRequest> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        {
          host: this.#url.hostname,
          port: this.#url.port,
          path: this.#url.pathname,
          method: "GET",
          agent: false,
          headers: { ...this.#headers(sid), accept: "text/event-stream" },
        },
        (res) => {
          res.on("data", () => undefined);
          res.on("error", () => undefined);
          if (res.statusCode !== 200) {
            req.destroy();
            reject(new Error(`GET stream: ${res.statusCode}`));
            return;
          }
          resolve(req);
        },
      );
      req.on("error", reject);
      req.end();
    });
  }

  async close(): Promise<void> {
    await this.#pool.close();
  }
}

async function step(n: number, tmp: string, fdHard: number): Promise<MemoryStep> {
  const streamCap = Math.max(0, Math.floor((fdHard - 200) / 2));
  const streamsWanted = Math.min(n, streamCap);
  const upstreams: Started[] = [];
  let edge: Edge | undefined;
  let held: ClientRequest[] = [];
  try {
    const k = Math.max(1, Math.ceil(n / STREAMS_PER_UPSTREAM));
    for (let i = 0; i < k; i++) {
      upstreams.push(
        await start({
          name: "upstream(trivial-json)",
          command: NODE_BIN,
          args: [path.join(REPO_ROOT, "bench/upstream.ts"), "--mode", "trivial-json"],
          parse: listeningLine,
          expect: ["url"],
        }),
      );
    }
    edge = await startEdge(
      path.join(tmp, `edge-${n}`),
      upstreams.map((u) => u.announced.url as string),
    );
    const clients = new Clients(edge.url, edge.key);
    // Warm-up: the code paths and pools of sessions and streams (JIT), then everything closed.
    // Small on purpose: the readings are RSS growth over a lightly warmed edge, as an operator
    // sees it — the transient garbage of opening n sessions and streams is part of it (heap
    // figures beside it show what is retained).
    const warm = Math.min(200, n);
    await clients.open(warm);
    for (const r of await clients.streams(clients.ids.slice())) r.destroy();
    await sleep(300);
    await clients.closeAll();
    await sleep(500);
    const base = await edge.settle();
    note(`  ${n}: baseline: ${show(base)}`);
    const t0 = performance.now();
    for (let done = 0; done < n; done += FILL_CHUNK) {
      await clients.open(Math.min(FILL_CHUNK, n - done));
      await edge.gc();
    }
    note(`  ${n}: ${n} sessions open in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const withSessions = await edge.settle();
    note(`  ${n}: with the sessions: ${show(withSessions)}`);
    const t1 = performance.now();
    for (let done = 0; done < streamsWanted; done += FILL_CHUNK) {
      held.push(
        ...(await clients.streams(clients.ids.slice(done, Math.min(streamsWanted, done + FILL_CHUNK)))),
      );
      await edge.gc();
    }
    note(`  ${n}: ${held.length} streams open in ${((performance.now() - t1) / 1000).toFixed(1)} s`);
    await sleep(500);
    const withStreams = await edge.settle();
    note(`  ${n}: with the streams: ${show(withStreams)}`);
    const result: MemoryStep = {
      count: n,
      streamCount: held.length,
      baselineRssBytes: base.rss,
      sessions: delta(base, withSessions, n),
      streams: delta(withSessions, withStreams, held.length),
      ...(held.length < n
        ? {
            note: `${held.length} streams (of ${n}): open-file hard limit ${fdHard}, 2 descriptors per stream in the edge`,
          }
        : {}),
    };
    note(
      `  ${n}: ${(result.sessions.perItemBytes / 1000).toFixed(2)} KB/session, ${(result.streams!.perItemBytes / 1000).toFixed(2)} KB/stream (RSS)`,
    );
    // Everything closed again: how much of the growth the process gives back (what stays was
    // churn the allocators keep, not memory held per session or stream).
    for (const r of held) r.destroy();
    held = [];
    await sleep(300);
    await clients.closeAll();
    await sleep(500);
    const after = await edge.settle();
    note(`  ${n}: everything closed: ${show(after)}`);
    result.afterCloseRssDeltaBytes = after.rss - base.rss;
    result.afterCloseHeapDeltaBytes = after.heap - base.heap;
    await clients.close();
    return result;
  } finally {
    for (const r of held) r.destroy();
    await edge?.stop();
    await Promise.allSettled(upstreams.map((u) => u.stop()));
  }
}

async function main(): Promise<void> {
  const started = new Date();
  const t0 = performance.now();
  const mc = machine();
  const fd = fdLimits();
  const tmp = mkdtempSync(path.join(os.tmpdir(), "mcp-edge-memory-"));
  const steps: MemoryStep[] = [];
  let stopping = false;
  const onSignal = () => {
    // A second signal (Ctrl-C reaches the whole process group, bench/run.ts forwards it) is ignored.
    if (stopping) return;
    stopping = true;
    note("interrupted");
    rmSync(tmp, { recursive: true, force: true });
    process.exit(130); // the children are killed by bench/lib/proc.ts on exit
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  note(
    `mcp-edge memory bench: ${counts.join(", ")} sessions and streams; open files: soft ${fd.soft}, hard ${fd.hard}`,
  );
  try {
    for (const n of counts) steps.push(await step(n, tmp, fd.hard));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  mc.loadEnd = loadNow();
  const result: MemoryResult = {
    kind: "memory",
    started: started.toISOString(),
    elapsedS: (performance.now() - t0) / 1000,
    command: commandLine(),
    steps,
    fdLimit: fd,
    notes: [
      "The edge: full pipeline, embedded (API key, limits per key/session/tool + in-flight cap, audit, metrics), trivial upstreams (bench/upstream.ts --mode trivial-json, one per 3 000 streams: the edge bounds its stream connections per upstream origin).",
      "Per session: idle sessions (initialize + notifications/initialized, then nothing); RSS growth of the edge process over the warm baseline, divided by the sessions. Per stream: one standalone GET SSE stream per session, each on its own client connection (the edge opens the matching GET upstream); RSS growth over the sessions-only reading, divided by the streams.",
      "Readings: after a full GC in the edge (SIGUSR2 → gc() via bench/lib/gc-signal.ts, --expose-gc) and a pause; median of three. 1 KB = 1 000 bytes.",
      "RSS growth includes what opening the sessions and streams churned and the process kept (V8 and malloc do not give every freed page back): it is what an operator sees, an upper bound of what is retained. The heap columns (V8 heapUsed after GC) are the JavaScript objects retained per item.",
    ],
    machine: mc,
  };
  const md = `# mcp-edge memory benchmark\n\n${renderMemory(result, { heading: "##" })}`;
  mkdirSync(path.dirname(outFile), { recursive: true });
  writeFileSync(outFile, md);
  if (opt.json) writeFileSync(path.resolve(opt.json), JSON.stringify(result, null, 2));
  process.stdout.write(`${md}\n`);
  note(`wrote ${path.relative(REPO_ROOT, outFile)}`);
}

main().catch((err: unknown) => {
  process.stderr.write(`memory: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
