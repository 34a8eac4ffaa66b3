/**
 * The whole benchmark suite: end to end (bench/e2e.ts), micro-benchmarks (bench/micro.ts) and memory
 * (bench/memory.ts), one after the other, each in its own process; then the goals, evaluated from
 * this run's figures, in the console and in one report.
 *
 *   npm run bench          node bench/run.ts           → bench/RESULTS.md (~20 min)
 *   npm run bench:quick    node bench/run.ts --quick   → bench/results/RESULTS-quick.md (< 2 min)
 *
 * Options: --quick  --out FILE  --only e2e,micro,memory  -- anything after `--` goes to e2e.ts
 * (e.g. `-- --edge-ref HEAD~1`).
 *
 * The figures of every run are kept in bench/results/run[-quick]-<date>.json (git-ignored);
 * `--render FILE.json` writes the report again from such a file, without running anything.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { evaluateGoals, goalsConsole } from "./lib/goals.ts";
import { loadNow, machine } from "./lib/machine.ts";
import { NODE_BIN, REPO_ROOT } from "./lib/proc.ts";
import { renderE2E, renderGoals, renderMachine, renderMemory, renderMicro } from "./lib/report.ts";
import { median } from "./lib/stats.ts";
import type { E2EResult, Machine, MemoryResult, MicroResult } from "./lib/types.ts";

const { values: opt, positionals } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    out: { type: "string" },
    only: { type: "string" },
    render: { type: "string" },
  },
  allowPositionals: true,
});
const quick = opt.quick;
const only = (opt.only ?? "e2e,micro,memory").split(",");

let current: ReturnType<typeof spawn> | undefined;
let interrupted = false;
const onSignal = () => {
  // The child stops its own processes (and removes its Redis keys and schemas) on SIGINT: wait for
  // it, then stop without running the next part.
  interrupted = true;
  if (current && current.exitCode === null) current.kill("SIGINT");
  else process.exit(130);
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

/** Runs one benchmark script; its progress goes to our stderr, its JSON to `json`. */
function run(script: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    process.stderr.write(`\n== node ${script} ${args.join(" ")}\n`);
    const child = spawn(NODE_BIN, [path.join(REPO_ROOT, script), ...args], {
      cwd: REPO_ROOT,
      stdio: ["ignore", "ignore", "inherit"],
    });
    current = child;
    child.once("exit", (code, signal) => {
      current = undefined;
      if (interrupted) process.exit(130);
      resolve(code ?? (signal ? 128 : 1));
    });
  });
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as T;
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  const started = new Date();
  const t0 = performance.now();
  const mc = machine();
  const tmp = mkdtempSync(path.join(os.tmpdir(), "mcp-edge-bench-run-"));
  const q = quick ? ["--quick"] : [];
  const suffix = quick ? "-quick" : "";
  const failures: string[] = [];
  let e2e: E2EResult | undefined;
  let micro: MicroResult | undefined;
  let memory: MemoryResult | undefined;
  try {
    if (only.includes("e2e")) {
      const json = path.join(tmp, "e2e.json");
      const code = await run("bench/e2e.ts", [
        ...q,
        "--json",
        json,
        "--out",
        `bench/results/e2e${suffix}.md`,
        ...positionals,
      ]);
      e2e = readJson<E2EResult>(json);
      if (code !== 0 || !e2e) failures.push(`bench/e2e.ts exited with ${code}`);
    }
    if (only.includes("micro")) {
      const json = path.join(tmp, "micro.json");
      const code = await run("bench/micro.ts", [
        ...q,
        "--json",
        json,
        "--out",
        `bench/results/micro${suffix}.md`,
      ]);
      micro = readJson<MicroResult>(json);
      if (code !== 0 || !micro) failures.push(`bench/micro.ts exited with ${code}`);
    }
    if (only.includes("memory")) {
      const json = path.join(tmp, "memory.json");
      // Quick: 1 000 sessions and streams only (10 000 takes about a minute by itself).
      const counts = quick ? ["--counts", "1000"] : [];
      const code = await run("bench/memory.ts", [
        ...q,
        ...counts,
        "--json",
        json,
        "--out",
        `bench/results/memory${suffix}.md`,
      ]);
      memory = readJson<MemoryResult>(json);
      if (code !== 0 || !memory) failures.push(`bench/memory.ts exited with ${code}`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  mc.loadEnd = loadNow();
  const bundle: Bundle = {
    started: started.toISOString(),
    elapsedS: (performance.now() - t0) / 1000,
    argv: process.argv.slice(2),
    quick,
    machine: mc,
    failures,
    ...(e2e ? { e2e } : {}),
    ...(micro ? { micro } : {}),
    ...(memory ? { memory } : {}),
  };
  const resultsDir = path.join(REPO_ROOT, "bench/results");
  mkdirSync(resultsDir, { recursive: true });
  const saved = path.join(resultsDir, `run${suffix}-${bundle.started.replace(/[:.]/g, "-")}.json`);
  writeFileSync(saved, JSON.stringify(bundle, null, 2));
  process.stderr.write(`figures kept in ${path.relative(REPO_ROOT, saved)}\n`);
  render(bundle);
  if (failures.length) {
    process.stderr.write(`bench: ${failures.join("; ")}\n`);
    process.exit(1);
  }
}

/** Everything one run measured (bench/results/run-*.json). */
interface Bundle {
  started: string;
  elapsedS: number;
  argv: string[];
  quick: boolean;
  machine: Machine;
  failures: string[];
  e2e?: E2EResult;
  micro?: MicroResult;
  memory?: MemoryResult;
}

/** The report and the console goals of a run. */
function render(b: Bundle): void {
  const { e2e, micro, memory, failures } = b;
  const mc = b.machine;
  const quick = b.quick;
  const outFile = path.resolve(
    REPO_ROOT,
    opt.out ?? (quick ? "bench/results/RESULTS-quick.md" : "bench/RESULTS.md"),
  );
  const elapsedS = b.elapsedS;
  const goals = evaluateGoals({ ...(e2e ? { e2e } : {}), ...(memory ? { memory } : {}) });
  const bg = e2e?.rows.flatMap((r) => r.trials.map((t) => t.backgroundCpuPct)) ?? [];
  const med = median(bg);
  const max = Math.max(0, ...bg);
  const share = `other processes used a median ${med.toFixed(0)}% (max ${max.toFixed(0)}%) of one CPU during the end-to-end trials (per row: the "other CPU %" column)`;
  const quiet =
    bg.length === 0
      ? ""
      : med < 5 && max < 50
        ? `quiet: ${share}`
        : med < 25
          ? `**mostly quiet**: ${share}; rows with a high "other CPU %" are noisier`
          : `**busy**: ${share} — figures are noisier than on an idle machine`;
  const md = [
    `# mcp-edge benchmark results${quick ? " (quick run)" : ""}`,
    "",
    `Generated by \`npm run bench${quick ? ":quick" : ""}\` (\`node bench/run.ts${b.argv.length ? ` ${b.argv.join(" ")}` : ""}\`) on ${b.started}, in ${elapsedS.toFixed(0)} s.`,
    "",
    renderMachine(mc),
    ...(quiet ? [`- Machine load during the run: ${quiet}`] : []),
    "- Commands: `npm run bench` (everything, this report in bench/RESULTS.md), `npm run bench:quick` (fewer cells, short trials, 1 000 sessions/streams: bench/results/RESULTS-quick.md), and each part alone: `npm run bench:e2e`, `npm run bench:micro`, `npm run bench:memory` (reports in bench/results/). Peers compared: nginx when installed; `mcp-proxy` 6 and `supergateway` 4 installed on first use into bench/.peers (git-ignored).",
    ...(failures.length ? ["", `**Failed parts**: ${failures.join("; ")}`] : []),
    "",
    renderGoals(goals),
    "",
    ...(e2e ? [renderE2E(e2e, { heading: "##", machine: false })] : []),
    ...(micro ? [renderMicro(micro, { heading: "##", machine: false })] : []),
    ...(memory ? [renderMemory(memory, { heading: "##", machine: false })] : []),
  ].join("\n");
  mkdirSync(path.dirname(outFile), { recursive: true });
  writeFileSync(outFile, md);
  process.stdout.write(
    `\n${goalsConsole(goals)}\n\nwrote ${path.relative(REPO_ROOT, outFile)} (${elapsedS.toFixed(0)} s)\n`,
  );
}

if (opt.render) {
  render(JSON.parse(readFileSync(path.resolve(opt.render), "utf8")) as Bundle);
} else {
  main().catch((err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
