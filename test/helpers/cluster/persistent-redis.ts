/**
 * A private redis-server with persistence, as production runs it: `appendonly yes`, `appendfsync
 * always`, its files in a temp dir. It can be SIGKILLed and restarted on the same port with its
 * data (a SIGKILL loses nothing that was acknowledged).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { connect as netConnect } from "node:net";
import { freePort, tempDir } from "../edge.ts";
import { waitFor } from "../wait.ts";

export interface PersistentRedis {
  url: string;
  port: number;
  /** SIGKILL: gone mid-traffic, no shutdown save (the append-only file has every write). */
  kill(): Promise<void>;
  /** Starts again on the same port and data dir; resolves once it answers PING. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

async function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(port, "127.0.0.1");
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.on("error", () => done(false));
    s.on("connect", () => s.write("PING\r\n"));
    s.on("data", (d) => done(d.toString().startsWith("+PONG")));
  });
}

/**
 * A redis-server of one test, persistent as in production: `appendonly yes`, `appendfsync always`,
 * its files in a temp dir. A SIGKILL loses nothing that was acknowledged.
 */
export async function startPersistentRedis(): Promise<PersistentRedis> {
  const port = await freePort();
  const dir = tempDir("mcp-edge-redis-");
  let child: ChildProcess | undefined;
  const start = async () => {
    const c = spawn(
      "redis-server",
      [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        dir,
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--daemonize",
        "no",
      ],
      { stdio: "ignore" },
    );
    child = c;
    await waitFor(
      async () => {
        if (c.exitCode !== null) throw new Error(`redis-server on port ${port} exited with ${c.exitCode}`);
        return redisPing(port);
      },
      { what: `redis-server on port ${port} to answer PING`, timeout: 5000, interval: 25 },
    );
  };
  const kill = async () => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    const exited = once(c, "exit");
    c.kill("SIGKILL");
    await exited;
  };
  await start();
  return { url: `redis://127.0.0.1:${port}`, port, kill, restart: start, stop: kill };
}
