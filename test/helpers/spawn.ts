/**
 * Start a fixture (or any program) as a child process and wait for its `LISTENING <url>` line.
 *
 *   const fx = await spawnFixture("test/fixtures/conformance-server.ts", ["--instance", "a"]);
 *   ... fx.url ...
 *   await fx.stop();
 */
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { onceWithin } from "./wait.ts";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** Node 24 from the devDependency; system node is too old for type stripping. */
export const NODE_BIN = path.join(REPO_ROOT, "node_modules", ".bin", "node");

export interface SpawnedFixture {
  url: string;
  child: ChildProcess;
  /** Everything the child wrote to stderr so far (for failure messages). */
  stderr(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnOptions {
  /** How long to wait for the LISTENING line. Default 15 s. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

const LISTENING = /^LISTENING (\S+)\s*$/;

/** Spawns `node <script> ...args` (script relative to the repo root) and waits for LISTENING. */
export function spawnFixture(
  script: string,
  args: string[] = [],
  options: SpawnOptions = {},
): Promise<SpawnedFixture> {
  return spawnListening(NODE_BIN, [path.resolve(REPO_ROOT, script), ...args], options);
}

/** Spawns any command that prints `LISTENING <url>` on stdout once ready. */
export async function spawnListening(
  command: string,
  args: string[],
  options: SpawnOptions = {},
): Promise<SpawnedFixture> {
  const child = spawn(command, args, {
    cwd: options.cwd ?? REPO_ROOT,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    stderr += chunk;
  });

  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once("exit", () => resolve());
  });

  const stop = async (graceMs = 3000): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    } else {
      await exited;
    }
  };

  const timeoutMs = options.timeoutMs ?? 15_000;
  const lines = createInterface({ input: child.stdout! });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no LISTENING line within ${timeoutMs} ms from ${command} ${args.join(" ")}`)),
        timeoutMs,
      );
      lines.on("line", (line) => {
        const match = LISTENING.exec(line);
        if (match?.[1]) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      child.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`process exited (code ${code}, signal ${signal}) before LISTENING`));
      });
    });
    // Keep draining stdout so the child never blocks on a full pipe.
    child.stdout?.resume();
    return { url, child, stderr: () => stderr, stop };
  } catch (error) {
    await stop(500);
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(`${message}\n--- stderr ---\n${stderr}`, { cause: error });
  } finally {
    lines.removeAllListeners("line");
  }
}

/** Convenience for `await once(child, "exit")` with a bound. */
export async function waitForExit(child: ChildProcess, timeoutMs = 5000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const [code] = (await onceWithin(child, "exit", {
    what: `process ${child.pid} to exit`,
    timeout: timeoutMs,
  })) as [number | null];
  return code;
}
