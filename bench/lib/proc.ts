/**
 * Child processes for the benchmarks: spawn a program that announces where it listens, read its
 * CPU time from /proc (works for any child, Node or not: nginx and HAProxy later), stop it.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** Node 24 from the devDependency: the system node is too old for type stripping. */
export const NODE_BIN = path.join(REPO_ROOT, "node_modules", ".bin", "node");

/** Clock ticks per second of /proc/<pid>/stat utime and stime (usually 100). */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * User + system CPU time of a process, in microseconds, from /proc/<pid>/stat (fields 14 and 15,
 * counted after the parenthesised command name, which may itself contain spaces). Resolution is
 * one clock tick (10 ms at CLK_TCK 100): trials of a few seconds keep the error under 1%.
 */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): utime is field 14 → index 11, stime field 15 → index 12.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1e6) / CLK_TCK;
}

/** Resident set size of a process in bytes (VmRSS), or NaN. */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : Number.NaN;
}

export interface Started {
  name: string;
  child: ChildProcess;
  pid: number;
  /** What the process announced: a URL, or for the edge its route URLs. */
  announced: Record<string, string>;
  output(): string;
  stop(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  name: string;
  command: string;
  args: string[];
  /**
   * Reads one output line (stdout or stderr); returns what it announces, or undefined. The process
   * is ready when the result holds every key of `expect`.
   */
  parse: (line: string) => Record<string, string> | undefined;
  expect: string[];
  /**
   * For programs that announce nothing (nginx, the stdio bridges): the process is ready when this
   * resolves (e.g. its port accepts connections), with what to merge into `announced`.
   */
  ready?: () => Promise<Record<string, string>>;
  /** Every output line, also after the process is ready (the memory benchmark reads reports). */
  onLine?: (line: string) => void;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** Every child started here: killed when the benchmark process exits, whatever the reason. */
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

/** Adds a child spawned elsewhere (the load generators) to those killed at exit. */
export function track(child: ChildProcess): void {
  live.add(child);
  child.once("exit", () => live.delete(child));
}

/** Spawns a process and waits until its output has announced every expected key. */
export async function start(o: StartOptions): Promise<Started> {
  const child = spawn(o.command, o.args, {
    cwd: o.cwd ?? REPO_ROOT,
    env: { ...process.env, ...o.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(child);
  let output = "";
  const announced: Record<string, string> = {};
  const exited = new Promise<void>((resolve) =>
    child.once("exit", () => {
      live.delete(child);
      resolve();
    }),
  );
  const stop = async (graceMs = 5000): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    }
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${o.name}: not ready within ${o.timeoutMs ?? 20_000} ms`)),
        o.timeoutMs ?? 20_000,
      );
      let ready = false;
      const onLine = (line: string) => {
        // Keep only the head of the output: enough for a failure message, bounded under load.
        if (output.length < 64 * 1024) output += `${line}\n`;
        o.onLine?.(line);
        if (ready) return;
        const got = o.parse(line);
        if (!got) return;
        Object.assign(announced, got);
        if (o.expect.every((k) => k in announced)) {
          ready = true;
          clearTimeout(timer);
          resolve();
        }
      };
      if (o.ready) {
        o.ready().then(
          (got) => {
            Object.assign(announced, got);
            ready = true;
            clearTimeout(timer);
            resolve();
          },
          (err: unknown) => {
            clearTimeout(timer);
            reject(err as Error);
          },
        );
      }
      createInterface({ input: child.stdout! }).on("line", onLine);
      createInterface({ input: child.stderr! }).on("line", onLine);
      child.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`${o.name}: exited (${child.exitCode ?? child.signalCode}) before it was ready`));
      });
    });
  } catch (err) {
    await stop(500);
    throw new Error(`${(err as Error).message}\n--- output ---\n${output}`, { cause: err });
  }
  return { name: o.name, child, pid: child.pid as number, announced, output: () => output, stop };
}

/** The `LISTENING <url>` convention of the fixtures and bench servers. */
export function listeningLine(line: string): Record<string, string> | undefined {
  const m = /^LISTENING (\S+)\s*$/.exec(line);
  return m?.[1] ? { url: m[1] } : undefined;
}

/**
 * CPU time the whole machine (all CPUs) spent in processes, plus time stolen by the hypervisor, in
 * microseconds, from the `cpu` line of /proc/stat. Interrupt and softirq time are left out: loopback
 * networking of the benchmark's own traffic is accounted there, not to any process.
 */
export function machineBusyMicros(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] as string;
  // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
  const [user, nice, system, , , , , steal] = line.trim().split(/\s+/).slice(1).map(Number);
  const ticks = (user ?? 0) + (nice ?? 0) + (system ?? 0) + (steal ?? 0);
  return (ticks * 1e6) / CLK_TCK;
}

/** A free TCP port on 127.0.0.1 (for programs that cannot listen on port 0 and report it). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** Resolves once 127.0.0.1:port accepts a connection (polling), rejects after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: "127.0.0.1", port }, () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Parent pid of every process, from /proc/<pid>/stat. */
function parents(): Map<number, number[]> {
  const byParent = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // gone
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    const list = byParent.get(ppid) ?? [];
    list.push(Number(name));
    byParent.set(ppid, list);
  }
  return byParent;
}

/** Every descendant of a process (children, their children, ...). */
export function descendants(pid: number): number[] {
  const byParent = parents();
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const c of byParent.get(queue.shift() as number) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/** CPU of several processes in µs, per pid (a process that is gone is left out). */
export function cpuOf(pids: number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const p of pids) {
    try {
      out.set(p, cpuMicros(p));
    } catch {
      // exited
    }
  }
  return out;
}

/** CPU used between two `cpuOf` readings by the processes present in both. */
export function cpuDelta(before: Map<number, number>, after: Map<number, number>): number {
  let sum = 0;
  for (const [p, a] of after) {
    const b = before.get(p);
    if (b !== undefined) sum += a - b;
  }
  return sum;
}

/** Pids of the processes whose command name (/proc/<pid>/comm) is one of `names`. */
export function pidsNamed(names: string[]): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (names.includes(readFileSync(`/proc/${name}/comm`, "utf8").trim())) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}
