/**
 * Drive `mcp-edge connect` the way a desktop client does: the official SDK v1 Client over
 * StdioClientTransport, which spawns the bridge as a real child process and speaks
 * newline-delimited JSON-RPC on its stdin/stdout. The bridge's stderr is captured (logs, the
 * login URL).
 */
import type { ChildProcess } from "node:child_process";
import path from "node:path";
import type { Readable } from "node:stream";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { NODE_BIN, REPO_ROOT, spawnListening, type SpawnedFixture } from "../helpers/spawn.ts";

export const MAIN = path.join(REPO_ROOT, "src/main.ts");

export interface BridgeClient {
  client: Client;
  transport: StdioClientTransport;
  /** Everything the bridge wrote to stderr so far. */
  stderr(): string;
  /** Resolves with the first stderr text matching `re` (bounded). */
  waitForStderr(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  pid: number | null;
  close(): Promise<void>;
}

export interface BridgeClientOptions {
  env?: Record<string, string>;
  /** Client capabilities (e.g. elicitation). */
  capabilities?: Record<string, unknown>;
  /** Connect (initialize) right away. Default true. */
  connect?: boolean;
}

/** Spawns `mcp-edge connect <url> ...args` under an SDK v1 stdio client. */
export async function bridgeClient(
  url: string,
  args: string[] = [],
  options: BridgeClientOptions = {},
): Promise<BridgeClient> {
  const transport = new StdioClientTransport({
    command: NODE_BIN,
    args: [MAIN, "connect", url, ...args],
    env: { ...(process.env as Record<string, string>), ...options.env },
    stderr: "pipe",
    cwd: REPO_ROOT,
  });
  let stderr = "";
  const waiters: Array<() => void> = [];
  (transport.stderr as Readable | null)?.setEncoding("utf8");
  (transport.stderr as Readable | null)?.on("data", (d: string) => {
    stderr += d;
    for (const w of waiters.splice(0)) w();
  });
  const client = new Client(
    { name: "desktop-test", version: "1.0.0" },
    { capabilities: options.capabilities ?? {} },
  );
  const waitForStderr = (re: RegExp, timeoutMs = 20_000) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no ${re} on the bridge's stderr:\n${stderr}`)),
        timeoutMs,
      );
      const check = () => {
        const m = re.exec(stderr);
        if (m) {
          clearTimeout(timer);
          resolve(m);
        } else waiters.push(check);
      };
      check();
    });
  if (options.connect !== false) await client.connect(transport);
  return {
    client,
    transport,
    stderr: () => stderr,
    waitForStderr,
    get pid() {
      return transport.pid;
    },
    async close() {
      await client.close().catch(() => undefined);
      // A client that never connected does not own the transport: close it too (ends the bridge's stdin).
      await transport.close().catch(() => undefined);
    },
  };
}

/** server-everything (Streamable HTTP) bound to loopback. */
export function startEverything(port = 0): Promise<SpawnedFixture> {
  return spawnListening(
    NODE_BIN,
    [
      "--import",
      `${REPO_ROOT}/test/helpers/bind-loopback.ts`,
      `${REPO_ROOT}/node_modules/@modelcontextprotocol/server-everything/dist/index.js`,
      "streamableHttp",
    ],
    { env: { PORT: String(port), MCP_EDGE_ANNOUNCE: "1" } },
  );
}

/** True while a process with this pid exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits (bounded) until `pid` is gone. */
export async function waitGone(pid: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (alive(pid)) {
    if (Date.now() > deadline) throw new Error(`process ${pid} still running after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export type { ChildProcess };
