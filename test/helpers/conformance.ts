/**
 * Run the official MCP conformance CLI against a server URL as a child process and collect
 * its per-check results.
 *
 * - 0.1.16 (`@modelcontextprotocol/conformance`): `server --url U [--scenario S] -o DIR`
 * - 0.2.0-alpha.12 (`conformance-next`):        `server --url U --requirements REV -o DIR`
 *
 * Each scenario writes `<DIR>/server-<scenario>-<timestamp>/checks.json`; we parse all of them
 * into a sorted `{scenario, id, status}` list.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { NODE_BIN, REPO_ROOT } from "./spawn.ts";

export const CONFORMANCE_0_1 = path.join(
  REPO_ROOT,
  "node_modules/@modelcontextprotocol/conformance/dist/index.js",
);
export const CONFORMANCE_0_2 = path.join(REPO_ROOT, "node_modules/conformance-next/dist/index.js");

export type CheckStatus = "SUCCESS" | "FAILURE" | "WARNING" | "SKIPPED" | "INFO";

export interface ConformanceCheck {
  scenario: string;
  id: string;
  status: CheckStatus;
  /** Present for FAILURE/WARNING checks when the suite gave one. */
  errorMessage?: string;
}

export interface ConformanceRun {
  exitCode: number | null;
  /** From the console summary line `Total: N passed, M failed` (undefined if absent). */
  passed: number | undefined;
  failed: number | undefined;
  /** Sorted by scenario, then id, then status. */
  checks: ConformanceCheck[];
  outputDir: string;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Where to write results; a fresh temp dir by default (never reused: runs would mix). */
  outputDir?: string;
  /** Kill the CLI after this long. Default 5 minutes. */
  timeoutMs?: number;
  extraArgs?: string[];
}

/** 0.1.16, all active scenarios (or one with `scenario`). */
export function runConformance016(
  url: string,
  scenario?: string,
  options: RunOptions = {},
): Promise<ConformanceRun> {
  const args = ["server", "--url", url, ...(scenario ? ["--scenario", scenario] : [])];
  return runCli(CONFORMANCE_0_1, args, options);
}

/** 0.2.0-alpha.12, exactly the scenarios a spec revision requires. */
export function runConformanceRequirements(
  url: string,
  requirements: "2025-11-25" | "2026-07-28",
  options: RunOptions = {},
): Promise<ConformanceRun> {
  return runCli(CONFORMANCE_0_2, ["server", "--url", url, "--requirements", requirements], options);
}

async function runCli(cli: string, args: string[], options: RunOptions): Promise<ConformanceRun> {
  const outputDir = options.outputDir ?? (await mkdtemp(path.join(tmpdir(), "mcp-conformance-")));
  const child = spawn(NODE_BIN, [cli, ...args, "-o", outputDir, ...(options.extraArgs ?? [])], {
    cwd: REPO_ROOT,
    env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => {
    stdout += c;
  });
  child.stderr.setEncoding("utf8").on("data", (c: string) => {
    stderr += c;
  });
  const timeoutMs = options.timeoutMs ?? 300_000;
  const exitCode = await new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`conformance CLI timed out after ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });

  const totals = parseTotals(stdout);
  return { exitCode, ...totals, checks: await readChecks(outputDir), outputDir, stdout, stderr };
}

// ANSI colour codes would break the regex if a TTY-ish env slipped through.
const ANSI = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");

export function parseTotals(stdout: string): { passed: number | undefined; failed: number | undefined } {
  const matches = [...stdout.replace(ANSI, "").matchAll(/Total:\s*(\d+)\s*passed,\s*(\d+)\s*failed/g)];
  const last = matches.at(-1);
  return last
    ? { passed: Number(last[1]), failed: Number(last[2]) }
    : { passed: undefined, failed: undefined };
}

/** Reads every `server-<scenario>-<timestamp>/checks.json` under `outputDir`. */
export async function readChecks(outputDir: string): Promise<ConformanceCheck[]> {
  const checks: ConformanceCheck[] = [];
  let entries: string[];
  try {
    entries = await readdir(outputDir);
  } catch {
    return checks;
  }
  for (const entry of entries) {
    const match = /^(?:server|client)-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/.exec(entry);
    if (!match?.[1]) continue;
    const scenario = match[1];
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(path.join(outputDir, entry, "checks.json"), "utf8"));
    } catch {
      continue;
    }
    if (!Array.isArray(parsed)) continue;
    for (const raw of parsed as Array<Record<string, unknown>>) {
      const check: ConformanceCheck = { scenario, id: String(raw.id), status: raw.status as CheckStatus };
      if (typeof raw.errorMessage === "string") check.errorMessage = raw.errorMessage;
      checks.push(check);
    }
  }
  return checks.sort(
    (a, b) =>
      a.scenario.localeCompare(b.scenario) || a.id.localeCompare(b.id) || a.status.localeCompare(b.status),
  );
}

/** Counts by status, e.g. `{SUCCESS: 40}` — handy for assertions and reports. */
export function countByStatus(checks: ConformanceCheck[]): Partial<Record<CheckStatus, number>> {
  const counts: Partial<Record<CheckStatus, number>> = {};
  for (const c of checks) counts[c.status] = (counts[c.status] ?? 0) + 1;
  return counts;
}

/** Scored checks only (SUCCESS/FAILURE), as the console summary counts them. */
export function scored(checks: ConformanceCheck[]): ConformanceCheck[] {
  return checks.filter((c) => c.status === "SUCCESS" || c.status === "FAILURE");
}
