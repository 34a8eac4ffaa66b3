/** What a report says about where it ran. */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import os from "node:os";
import { NODE_BIN, REPO_ROOT } from "./proc.ts";
import type { Machine } from "./types.ts";

export function machine(): Machine {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? "unknown";
  let nproc = os.availableParallelism();
  try {
    nproc = Number(execFileSync("nproc", { encoding: "utf8" }).trim());
  } catch {
    // os.availableParallelism() stands
  }
  const node = execFileSync(NODE_BIN, ["--version"], { encoding: "utf8" }).trim();
  let commit = "unknown";
  try {
    commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], {
      cwd: REPO_ROOT,
      encoding: "utf8",
    }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src", "bench", "package.json"], {
      cwd: REPO_ROOT,
      encoding: "utf8",
    }).trim();
    if (dirty) commit += " (with uncommitted changes in src/, bench/ or package.json)";
  } catch {
    // not a git checkout
  }
  return {
    nproc,
    model,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node,
    commit,
    loadStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export function loadNow(): number[] {
  return os.loadavg().map((x) => Math.round(x * 100) / 100);
}

/** The command line that ran, as a user would type it. */
export function commandLine(): string {
  const script = process.argv[1] ?? "";
  const rel = script.startsWith(REPO_ROOT) ? script.slice(REPO_ROOT.length + 1) : script;
  return `node ${rel} ${process.argv.slice(2).join(" ")}`.trim();
}
