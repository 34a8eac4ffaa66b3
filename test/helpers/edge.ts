/**
 * Start mcp-edge for a test: in process (`startEdge`, fast, direct access to the Gateway) or as a
 * real child process (`spawnEdge`, for SIGKILL/SIGTERM tests and the CLI). Every listener binds
 * 127.0.0.1; state goes to a fresh temp dir unless the test passes one (to survive a restart).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { Writable } from "node:stream";
import { parseConfig } from "../../src/config/load.ts";
import { Gateway } from "../../src/gateway.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { NODE_BIN, REPO_ROOT } from "./spawn.ts";

/** A config document as a test writes it (before validation). */
export type EdgeConfigDoc = Record<string, unknown> & { servers: Record<string, unknown> };

export function tempDir(prefix = "mcp-edge-test-"): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

/** Fills in loopback listeners on free ports, a temp store and a quiet log, unless given. */
export function withTestDefaults(doc: EdgeConfigDoc, dir = tempDir()): EdgeConfigDoc {
  return {
    listen: { host: "127.0.0.1", port: 0 },
    admin: { listen: { host: "127.0.0.1", port: 0 } },
    store: { sqlite: path.join(dir, "edge.db") },
    log: { level: "warn" },
    // A test that stops its edge must not wait the production drain (30 s) for a call it abandoned.
    // No readiness grace either (distributed mode defaults to 5 s): no balancer watches these edges.
    drain: { timeout: "5s", delay: "0s" },
    ...doc,
  };
}

export interface InProcessEdge {
  gw: Gateway;
  /** The MCP URL of a server (the first one by default). */
  url(server?: string): string;
  /** Log lines written so far (JSON strings). */
  logs(): string[];
  stop(): Promise<void>;
}

/** Starts a Gateway in this process; its log lines are captured, not printed. */
export async function startEdge(doc: EdgeConfigDoc, dir?: string): Promise<InProcessEdge> {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split("\n")) if (l) lines.push(l);
      cb();
    },
  });
  const config = parseConfig(withTestDefaults(doc, dir));
  const logger = createLogger({ level: config.log.level, destination: sink });
  const gw = await Gateway.start(config, { logger });
  return { gw, url: (s) => gw.url(s), logs: () => lines, stop: () => gw.stop() };
}

/** A free TCP port on 127.0.0.1 (for a process that must come back on the same port). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

export interface SpawnedEdge {
  child: ChildProcess;
  /** Base URL of the public listener, e.g. http://127.0.0.1:41234 */
  baseUrl: string;
  adminUrl: string;
  output(): string;
  /** SIGTERM (drain) and wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  exited: Promise<number | null>;
}

/** Runs `mcp-edge serve -c <file>` as a child process and waits until it listens. */
export async function spawnEdge(
  doc: EdgeConfigDoc,
  dir = tempDir(),
  timeoutMs = 15_000,
): Promise<SpawnedEdge> {
  const file = path.join(dir, `edge-${Date.now()}-${Math.random().toString(36).slice(2)}.yaml`);
  // JSON is YAML: the document is written as is.
  writeFileSync(file, JSON.stringify({ ...withTestDefaults(doc, dir), log: { level: "info" } }));
  const child = spawn(NODE_BIN, [path.join(REPO_ROOT, "src/main.ts"), "serve", "-c", file], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stderr?.on("data", (d: Buffer) => {
    output += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const ready = await new Promise<{ url: string; admin: string }>((resolve, reject) => {
    // An edge that does not start in time is killed with the failure: never left running to hold
    // the test process open.
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`edge did not start within ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      output += `${line}\n`;
      try {
        const rec = JSON.parse(line) as { msg?: string; url?: string; admin?: string };
        if (rec.msg === "mcp-edge listening" && rec.url && rec.admin) {
          clearTimeout(timer);
          resolve({ url: rec.url, admin: rec.admin });
        }
      } catch {
        // not a log line
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`edge exited (${code}) before listening:\n${output}`));
    });
  });
  return {
    child,
    baseUrl: ready.url,
    adminUrl: ready.admin,
    output: () => output,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}
