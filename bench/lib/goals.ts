/**
 * The performance goals of the benchmark (issue "Performance"), each evaluated from the figures of
 * one run: met, missed, or not measured (with the reason: a cell not run, a path unavailable).
 */
import type { E2EResult, MemoryResult, Row } from "./types.ts";

export interface Goal {
  id: string;
  /** What the goal asks, in words. */
  text: string;
  /** The measured figure, with what it was computed from. */
  figure: string;
  /** The threshold, as a comparison ("≤ 1.30×"). */
  threshold: string;
  status: "met" | "missed" | "not measured";
}

const KB = 1000;

function row(
  e2e: E2EResult | undefined,
  scenario: string,
  connections: number,
  path: string,
): Row | undefined {
  return e2e?.rows.find(
    (r) => r.scenario === scenario && r.connections === connections && r.path === path && r.trials.length > 0,
  );
}

/** Why a figure is missing: the path was unavailable, or the cell was not run. */
function missing(e2e: E2EResult | undefined, scenario: string, connections: number, paths: string[]): string {
  if (!e2e) return "end-to-end benchmark not run";
  for (const p of paths) {
    const why = e2e.unavailable[p];
    if (why) return `${p} unavailable: ${why}`;
  }
  for (const p of paths) {
    const r = e2e.rows.find((x) => x.scenario === scenario && x.connections === connections && x.path === p);
    if (r && r.trials.length === 0) return `${p}: ${r.firstError ?? "no trial ran"}`;
    if (!r) return `${scenario} at ${connections} connections through ${p} was not run`;
  }
  return "not run";
}

function status(ok: boolean): Goal["status"] {
  return ok ? "met" : "missed";
}

const f0 = (v: number) => v.toFixed(0);
const f2 = (v: number) => v.toFixed(2);

export function evaluateGoals(input: { e2e?: E2EResult; memory?: MemoryResult }): Goal[] {
  const { e2e, memory } = input;
  const goals: Goal[] = [];

  // 1. CPU per call, full pipeline, embedded, trivial upstream, 16 connections, vs the minimal proxy.
  {
    const text =
      "Full pipeline (API key), embedded, trivial upstream, 16 connections: edge CPU per call vs the minimal proxy";
    const threshold = "≤ 1.30×";
    const e = row(e2e, "trivial-json", 16, "edge-full");
    const m = row(e2e, "trivial-json", 16, "minimal");
    if (e && m) {
      const r = e.proxyCpuUsPerReq / m.proxyCpuUsPerReq;
      goals.push({
        id: "cpu-16",
        text,
        threshold,
        figure: `${f2(r)}× (edge-full ${f0(e.proxyCpuUsPerReq)} µs/call, minimal ${f0(m.proxyCpuUsPerReq)} µs/call)`,
        status: status(r <= 1.3),
      });
    } else {
      goals.push({
        id: "cpu-16",
        text,
        threshold,
        figure: missing(e2e, "trivial-json", 16, ["edge-full", "minimal"]),
        status: "not measured",
      });
    }
  }

  // 2–3. Official SDK server at 64 connections: share of direct calls/s, embedded and distributed.
  for (const [id, path, min, mode] of [
    ["sdk-64-embedded", "edge-full", 0.85, "embedded"],
    ["sdk-64-distributed", "edge-distributed", 0.75, "distributed"],
  ] as const) {
    const text = `Full pipeline in front of the official SDK server, 64 connections, ${mode} mode: calls/s vs direct`;
    const threshold = `≥ ${(min * 100).toFixed(0)}%`;
    const e = row(e2e, "sdk-json", 64, path);
    const d = row(e2e, "sdk-json", 64, "direct");
    if (e && d) {
      const r = e.rps / d.rps;
      goals.push({
        id,
        text,
        threshold,
        figure: `${(r * 100).toFixed(0)}% (${path} ${f0(e.rps)} calls/s, direct ${f0(d.rps)} calls/s)`,
        status: status(r >= min),
      });
    } else {
      goals.push({
        id,
        text,
        threshold,
        figure: missing(e2e, "sdk-json", 64, [path, "direct"]),
        status: "not measured",
      });
    }
  }

  // 4. Added latency at 1 connection, full pipeline, embedded.
  {
    const text = "Full pipeline (API key), embedded, trivial upstream, 1 connection: p50 added over direct";
    const threshold = "≤ 0.40 ms";
    const e = row(e2e, "trivial-json", 1, "edge-full");
    const d = row(e2e, "trivial-json", 1, "direct");
    const m = row(e2e, "trivial-json", 1, "minimal");
    if (e && d) {
      const added = e.p50Ms - d.p50Ms;
      goals.push({
        id: "p50-1",
        text,
        threshold,
        figure:
          `${f2(added)} ms (edge-full p50 ${f2(e.p50Ms)} ms, direct ${f2(d.p50Ms)} ms` +
          `${m ? `; the minimal proxy adds ${f2(m.p50Ms - d.p50Ms)} ms` : ""})`,
        status: status(added <= 0.4),
      });
    } else {
      goals.push({
        id: "p50-1",
        text,
        threshold,
        figure: missing(e2e, "trivial-json", 1, ["edge-full", "direct"]),
        status: "not measured",
      });
    }
  }

  // 5. Stdio: at least 1.3× the calls/s of the better of mcp-proxy and supergateway (16 connections).
  for (const [id, path, mode] of [
    ["stdio-shared", "edge-stdio-shared", "shared process"],
    ["stdio-session", "edge-stdio-session", "a process per session"],
  ] as const) {
    const text = `Stdio upstream, 16 connections, mcp-edge (${mode}; auth, limits, audit on): calls/s vs the better of mcp-proxy and supergateway`;
    const threshold = "≥ 1.30×";
    const e = row(e2e, "stdio", 16, path);
    const peers = (["mcp-proxy", "supergateway"] as const)
      .map((p) => ({ p, r: row(e2e, "stdio", 16, p) }))
      .filter((x): x is { p: "mcp-proxy" | "supergateway"; r: Row } => x.r !== undefined);
    if (e && peers.length === 2) {
      const best = peers.reduce((a, b) => (b.r.rps > a.r.rps ? b : a));
      const r = e.rps / best.r.rps;
      goals.push({
        id,
        text,
        threshold,
        figure: `${f2(r)}× (${path} ${f0(e.rps)} calls/s; ${peers.map((x) => `${x.p} ${f0(x.r.rps)}`).join(", ")})`,
        status: status(r >= 1.3),
      });
    } else {
      goals.push({
        id,
        text,
        threshold,
        figure: missing(e2e, "stdio", 16, [path, "mcp-proxy", "supergateway"]),
        status: "not measured",
      });
    }
  }

  // 6. Memory: 10 000 open SSE streams at most 20 KB each; idle sessions at most 2 KB each.
  {
    const text = "10 000 open SSE streams (standalone GET): edge RSS growth per stream";
    const threshold = "≤ 20 KB";
    const step = memory?.steps.filter((s) => s.streams).sort((a, b) => b.count - a.count)[0];
    if (step?.streams && step.count >= 10_000) {
      const per = step.streams.perItemBytes / KB;
      goals.push({
        id: "streams-10k",
        text,
        threshold,
        figure:
          `${per.toFixed(1)} KB/stream (${step.streamCount} streams held${step.streamCount < step.count ? ` of ${step.count}, the most the open-file limit allows` : ""}; ` +
          `heap ${(step.streams.heapPerItemBytes / KB).toFixed(1)} KB/stream)`,
        status: status(per <= 20),
      });
    } else {
      goals.push({
        id: "streams-10k",
        text,
        threshold,
        figure: memory ? `not measured at 10 000 (largest: ${step?.count ?? 0})` : "memory benchmark not run",
        status: "not measured",
      });
    }
  }
  {
    const text = "Idle sessions: edge RSS growth per session (the largest count held)";
    const threshold = "≤ 2 KB";
    const step = memory?.steps.slice().sort((a, b) => b.count - a.count)[0];
    if (step) {
      const per = step.sessions.perItemBytes / KB;
      goals.push({
        id: "sessions-idle",
        text,
        threshold,
        figure: `${per.toFixed(2)} KB/session at ${step.count} sessions (heap ${(step.sessions.heapPerItemBytes / KB).toFixed(2)} KB/session)`,
        status: status(per <= 2),
      });
    } else {
      goals.push({
        id: "sessions-idle",
        text,
        threshold,
        figure: "memory benchmark not run",
        status: "not measured",
      });
    }
  }
  return goals;
}

/** The goals as console lines: `met     text: figure (threshold)`. */
export function goalsConsole(goals: Goal[]): string {
  const tag = (s: Goal["status"]) => s.padEnd(12);
  return [
    "Goals:",
    ...goals.map((g) => `  ${tag(g.status)} ${g.text}: ${g.figure} (goal ${g.threshold})`),
  ].join("\n");
}
