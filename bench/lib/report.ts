/** Markdown for the benchmark results: the goals, the end-to-end tables, micro-benchmarks, memory. */
import { median } from "./stats.ts";
import type { Goal } from "./goals.ts";
import { CLK_TCK } from "./proc.ts";
import type { E2EResult, Machine, MemoryDelta, MemoryResult, MicroResult, Row } from "./types.ts";

export const fmt = (v: number, digits: number) => (Number.isFinite(v) ? v.toFixed(digits) : "–");
export const ratio = (a: number, b: number) =>
  Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : "–";

export function renderMachine(mc: Machine): string {
  return [
    `- Machine: ${mc.nproc} CPUs (${mc.model}), ${mc.memory} RAM, ${mc.kernel}`,
    `- Node ${mc.node} for every Node process; mcp-edge at commit ${mc.commit}`,
    `- Load average (1/5/15 min) at the start: ${mc.loadStart.join(" / ")}${mc.loadEnd ? `; at the end: ${mc.loadEnd.join(" / ")}` : ""}`,
  ].join("\n");
}

export function renderGoals(goals: Goal[], heading = "##"): string {
  const mark = (s: Goal["status"]) =>
    s === "met" ? "**met**" : s === "missed" ? "**missed**" : "not measured";
  return [
    `${heading} Goals`,
    "",
    "| goal | figure | threshold | result |",
    "|---|---|---|---|",
    ...goals.map((g) => `| ${g.text} | ${g.figure} | ${g.threshold} | ${mark(g.status)} |`),
  ].join("\n");
}

function scenarioTable(result: E2EResult, scenarioId: string, heading: string): string {
  const s = result.scenarios.find((x) => x.id === scenarioId);
  if (!s) return "";
  const [ref1, ref2] = s.refs;
  const refCols = (ref: string, first: boolean) => [
    `req/s vs ${ref}`,
    `p50 vs ${ref}`,
    ...(first ? [`p50 − ${ref} ms`] : []),
    ...(ref !== "direct" ? [`CPU vs ${ref}`] : []),
  ];
  const withStore = result.rows.some((r) => r.scenario === s.id && r.storeCpuUsPerReq !== undefined);
  const cols = [
    "conns",
    "path",
    "req/s",
    "p50 ms",
    "p99 ms",
    "proxy CPU µs/req",
    "upstream CPU µs/req",
    ...(withStore ? ["Redis + PG CPU µs/req"] : []),
    ...refCols(ref1, true),
    ...refCols(ref2, false),
    "proxy RSS MiB",
    "errors",
    "other CPU %",
  ];
  const out = [
    `${heading} ${s.title}`,
    "",
    `| ${cols.join(" | ")} |`,
    `|${cols.map((c) => (c === "path" ? "---" : "---:")).join("|")}|`,
  ];
  const conns = [...new Set(result.cells.filter((c) => c.scenario === s.id).map((c) => c.connections))];
  for (const c of conns) {
    const at = result.rows.filter((r) => r.scenario === s.id && r.connections === c);
    const ref = (id: string) => at.find((r) => r.path === id && r.trials.length > 0);
    const vs = (r: Row, refId: string, first: boolean) => {
      const x = ref(refId);
      // The second reference is not compared with the first (minimal vs direct is in its own row).
      const self = r.path === refId || r.path === ref1 || !x;
      return [
        self ? "" : ratio(r.rps, x.rps),
        self ? "" : ratio(r.p50Ms, x.p50Ms),
        ...(first ? [self ? "" : fmt(r.p50Ms - x.p50Ms, 2)] : []),
        ...(refId !== "direct" ? [self ? "" : ratio(r.proxyCpuUsPerReq, x.proxyCpuUsPerReq)] : []),
      ];
    };
    for (const r of at) {
      if (r.trials.length === 0) {
        out.push(`| ${c} | ${r.path} | ${r.firstError ?? "no trial ran"} |${" |".repeat(cols.length - 3)}`);
        continue;
      }
      const cells = [
        String(c),
        r.path,
        fmt(r.rps, 0),
        fmt(r.p50Ms, 2),
        fmt(r.p99Ms, 2),
        fmt(r.proxyCpuUsPerReq, 0),
        fmt(r.upstreamCpuUsPerReq, 0),
        ...(withStore ? [r.storeCpuUsPerReq !== undefined ? fmt(r.storeCpuUsPerReq, 0) : ""] : []),
        ...vs(r, ref1, true),
        ...vs(r, ref2, false),
        fmt(r.proxyRssMiB, 0),
        String(r.errors),
        fmt(r.backgroundCpuPct, 0),
      ];
      out.push(`| ${cells.join(" | ")} |`);
    }
  }
  return out.join("\n");
}

/** Each edge path against the minimal proxy, per HTTP scenario and concurrency: what the MCP awareness costs. */
function edgeSummary(result: E2EResult, heading: string): string {
  const out = [
    `${heading} mcp-edge against the minimal proxy`,
    "",
    "| scenario | conns | path | edge CPU µs/req | minimal CPU µs/req | extra CPU µs/req | CPU vs minimal | req/s vs direct | edge p50 − direct p50 (ms) | minimal p50 − direct p50 (ms) |",
    "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const cell of result.cells) {
    const get = (p: string) =>
      result.rows.find(
        (r) =>
          r.scenario === cell.scenario &&
          r.connections === cell.connections &&
          r.path === p &&
          r.trials.length > 0,
      );
    const m = get("minimal");
    const d = get("direct");
    if (!m || !d) continue;
    for (const id of cell.paths.filter((p) => p.startsWith("edge"))) {
      const e = get(id);
      if (!e) continue;
      out.push(
        `| ${cell.scenario} | ${cell.connections} | ${id} | ${fmt(e.proxyCpuUsPerReq, 0)} | ${fmt(m.proxyCpuUsPerReq, 0)} | ${fmt(e.proxyCpuUsPerReq - m.proxyCpuUsPerReq, 0)} | ${ratio(e.proxyCpuUsPerReq, m.proxyCpuUsPerReq)} | ${ratio(e.rps, d.rps)} | ` +
          `${fmt(e.p50Ms - d.p50Ms, 2)} | ${fmt(m.p50Ms - d.p50Ms, 2)} |`,
      );
    }
  }
  return out.length > 4 ? out.join("\n") : "";
}

export function renderE2E(result: E2EResult, o: { heading: string; machine?: boolean }): string {
  const h = o.heading;
  const allTrials = result.rows.flatMap((r) => r.trials);
  const errors = result.rows.filter((r) => r.errors > 0);
  const bg = allTrials.map((t) => t.backgroundCpuPct);
  const st = result.settings;
  const versions = Object.entries(result.versions)
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");
  return [
    `${h} End to end`,
    "",
    `\`${result.command}\`, started ${result.started}, ${result.elapsedS.toFixed(0)} s.`,
    "",
    ...(o.machine === false ? [] : [renderMachine(result.machine)]),
    `- mcp-edge ${result.edgeLabel ? `exported from ${result.edgeLabel} (--edge-ref)` : "from the working tree"}${versions ? `; peers: ${versions}` : ""}`,
    ...(st.processWarmupMs
      ? [
          `- Process warm-up: before the first cell, each proxy process (every path but direct) served ${st.processWarmupMs} ms of calls at 16 connections, not measured, one path at a time: a freshly started Node process runs its first tens of thousands of calls cold (the JIT has not compiled the hot code yet; an edge measured here went from about 300 to 110 µs per call over its first 6 s of load), and a production edge runs for days.`,
        ]
      : []),
    `- Per path and cell: ${st.trials} trials of ${st.durationMs} ms after ${st.warmupMs} ms of warm-up, interleaved across the cell's paths; figures are medians over the trials.`,
    "- Connections: one MCP session (session era) and one call in flight per connection; the next call leaves when the answer is in.",
    "- Proxy RSS: resident memory of the proxy process right after the row's trials (it accumulates over the run: rows run in table order).",
    `- CPU per request: user + system time from /proc/<pid>/stat (CLK_TCK ${CLK_TCK}) over the trial, divided by the calls answered: the proxy process ("proxy"), the upstream process or, for stdio, every process the proxy spawned ("upstream").`,
    ...(result.rows.some((r) => r.storeCpuUsPerReq !== undefined)
      ? [
          "- Distributed mode: Redis and PostgreSQL run on this machine; their servers' CPU per request is the \"Redis + PG CPU\" column (all redis-server and postgres processes), part of that path's cost.",
        ]
      : result.rows.some((r) => r.path === "edge-distributed")
        ? [
            '- Distributed mode: Redis and PostgreSQL run on this machine; this run did not meter them, so their CPU is counted in "other CPU %" of the edge-distributed rows (about 10–20% of a CPU).',
          ]
        : []),
    `- Other CPU: machine CPU used during a trial by anything but the load generator, upstream and proxy (other work on a shared machine), in % of one CPU: median ${fmt(median(bg), 0)}%, max ${fmt(Math.max(0, ...bg), 0)}% over ${allTrials.length} trials (column "other CPU %": the row's median). High values mean a noisier row.`,
    "",
    `${h}# What runs`,
    "",
    "- **Upstreams** (`bench/upstream.ts`), one process per scenario, tool `echo`: the trivial one (hand-written node:http, the least a correct MCP server does); the official SDK servers: session era on SDK v1 (`@modelcontextprotocol/sdk` McpServer + StreamableHTTPServerTransport, a server and transport per session, `enableJsonResponse` on for JSON answers, off for SSE), stateless era on SDK v2 (`@modelcontextprotocol/server` `createMcpHandler`); for stdio, `bench/stdio-server.ts` (SDK v1 McpServer + StdioServerTransport), spawned by each stdio path.",
    `- **Paths**: ${result.paths.map((p) => `\`${p.id}\`: ${p.title}`).join("; ")}. mcp-edge runs \`src/main.ts serve\`, log level warn.`,
    ...(Object.keys(result.unavailable).length
      ? [
          `- **Not measured**: ${Object.entries(result.unavailable)
            .map(([p, why]) => `\`${p}\`: unavailable: ${why}`)
            .join("; ")}`,
        ]
      : []),
    "- **Load** (`bench/load.ts`): a separate Node process per path; undici Pool, N connections, N clients, each answer checked (status, JSON-RPC id, `result`; SSE parsed). Stateless calls carry `MCP-Protocol-Version: 2026-07-28`, `Mcp-Method`, `Mcp-Name` and `_meta`.",
    `- Everything shares this machine's ${result.machine.nproc} CPUs over loopback: the load generator, the upstream and the proxy compete for them, so at 16+ connections req/s is bounded by total CPU, not by any one process. Read the CPU µs/req columns for the cost of a path, req/s and latency for what a client sees here.`,
    "",
    ...result.scenarios.map((s) => `${scenarioTable(result, s.id, `${h}#`)}\n`),
    edgeSummary(result, `${h}#`),
    "",
    errors.length
      ? `${h}# Errors\n\n${errors.map((r) => `- ${r.scenario} / ${r.path} / ${r.connections}: ${r.errors} errors, first: ${r.firstError}`).join("\n")}\n`
      : "All answers were checked: no errors.\n",
    result.profile ? `${h}# mcp-edge CPU profile (--profile-edge)\n\n${result.profile}\n` : "",
  ].join("\n");
}

export function renderMicro(result: MicroResult, o: { heading: string; machine?: boolean }): string {
  const h = o.heading;
  const groups = [...new Set(result.cases.map((c) => c.group))];
  return [
    `${h} Micro-benchmarks`,
    "",
    `\`${result.command}\`, started ${result.started}, ${result.elapsedS.toFixed(0)} s. The real classes from \`src/\`, in one process; ns per operation, median of ${result.rounds} rounds after a warm-up round. "in flight": operations started before the first is awaited (1: one after the other; for Redis, concurrency shows what auto-pipelining buys).`,
    "",
    ...(o.machine === false ? [] : [renderMachine(result.machine), ""]),
    "| group | case | in flight | ns/op | ops/s | note |",
    "|---|---|---:|---:|---:|---|",
    ...groups.flatMap((g) =>
      result.cases
        .filter((c) => c.group === g)
        .map(
          (c) =>
            `| ${c.group} | ${c.name} | ${c.concurrency} | ${fmt(c.nsPerOp, 0)} | ${fmt(1e9 / c.nsPerOp, 0)} | ${c.note ?? ""} |`,
        ),
    ),
    ...(Object.keys(result.skipped).length
      ? ["", ...Object.entries(result.skipped).map(([g, why]) => `- ${g}: not measured (${why})`)]
      : []),
    "",
  ].join("\n");
}

export function renderMemory(result: MemoryResult, o: { heading: string; machine?: boolean }): string {
  const h = o.heading;
  const kb = (b: number) => fmt(b / 1000, 2);
  const mib = (b: number) => fmt(b / 2 ** 20, 1);
  return [
    `${h} Memory`,
    "",
    `\`${result.command}\`, started ${result.started}, ${result.elapsedS.toFixed(0)} s.`,
    "",
    ...(o.machine === false ? [] : [renderMachine(result.machine), ""]),
    ...result.notes.map((n) => `- ${n}`),
    `- File descriptors: soft limit ${result.fdLimit.soft}, hard limit ${result.fdLimit.hard} (the edge holds 2 per stream: the client's connection and its upstream GET).`,
    "",
    "| sessions | edge RSS before MiB | sessions: RSS Δ MiB | **RSS per session KB** | anon / file RSS; heap used / committed; external per session KB | streams | streams: RSS Δ MiB | **RSS per stream KB** | anon / file RSS; heap used / committed; external per stream KB | all closed again: RSS / heap Δ over the baseline MiB | note |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ...result.steps.map((s) => {
      const detail = (d: MemoryDelta) =>
        `${kb(d.rssAnonPerItemBytes)} / ${kb(d.rssFilePerItemBytes)}; ${kb(d.heapPerItemBytes)} / ${kb(d.heapTotalPerItemBytes)}; ${kb(d.externalPerItemBytes)}`;
      return (
        `| ${s.count} | ${mib(s.baselineRssBytes)} | ${mib(s.sessions.rssDeltaBytes)} | ${kb(s.sessions.perItemBytes)} | ${detail(s.sessions)} | ` +
        `${s.streamCount} | ${s.streams ? mib(s.streams.rssDeltaBytes) : "–"} | ${s.streams ? kb(s.streams.perItemBytes) : "–"} | ${s.streams ? detail(s.streams) : "–"} | ${s.afterCloseRssDeltaBytes !== undefined ? `${mib(s.afterCloseRssDeltaBytes)} / ${mib(s.afterCloseHeapDeltaBytes ?? Number.NaN)}` : "–"} | ${s.note ?? ""} |`
      );
    }),
    "",
  ].join("\n");
}
