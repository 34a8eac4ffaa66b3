/**
 * Real Redis for the distributed-mode suites.
 *
 *   if (await redisReady("RedisSessionStore contract")) { ... define the tests ... }
 *
 * `REDIS_URL` (default redis://127.0.0.1:6379) is the shared server; every test works under its own
 * key prefix and removes only that prefix (never FLUSHALL: the server may be someone else's too).
 * Under CI=true an unreachable Redis is a failed test, never a skip (.ci/run starts one).
 * `startRedisServer` runs a private redis-server on a free port, for tests that kill it.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { createServer } from "node:net";
import { test } from "node:test";
import { Redis } from "ioredis";
import { waitFor } from "./wait.ts";

export const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

async function ping(url: string): Promise<unknown> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 1000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  let cause: unknown;
  client.on("error", (err: unknown) => {
    cause ??= err;
  });
  try {
    await client.connect();
    await client.ping();
    return undefined;
  } catch (err) {
    return cause ?? err;
  } finally {
    client.disconnect();
  }
}

/**
 * Whether the suite can run. When Redis is unreachable: under CI=true registers a failing test;
 * otherwise prints a loud skip notice. Call at the top level of a test file.
 */
export async function redisReady(suite: string): Promise<boolean> {
  const err = await ping(REDIS_URL);
  if (err === undefined) return true;
  const why = `Redis at ${REDIS_URL} is unreachable (${String(err)})`;
  if (process.env.CI === "true") {
    test(`${suite}: Redis is reachable`, () => {
      assert.fail(`${why} under CI=true: .ci/run starts redis-server; never skip this suite in CI`);
    });
  } else {
    process.stderr.write(
      `\n*** SKIPPING ${suite}: ${why}. Start one with ` +
        '`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no` ***\n\n',
    );
  }
  return false;
}

/** A key prefix of its own for one test (hash-tagged, so it also works on Redis Cluster). */
export function testPrefix(): string {
  return `{mcp-edge-test:${randomBytes(6).toString("hex")}}:`;
}

/** Removes every key under `prefix` (SCAN + UNLINK), and nothing else. */
export async function dropPrefix(client: Redis, prefix: string): Promise<void> {
  const pattern = `${prefix.replace(/[*?[\]\\]/g, "\\$&")}*`;
  let cursor = "0";
  do {
    const [next, keys] = await client.scan(cursor, "MATCH", pattern, "COUNT", 500);
    cursor = next;
    if (keys.length > 0) await client.unlink(...keys);
  } while (cursor !== "0");
}

/** `dropPrefix` on the test Redis, with a connection of its own (for `after` hooks); errors ignored. */
export async function dropTestPrefix(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL);
  await dropPrefix(redis, prefix).catch(() => undefined);
  redis.disconnect();
}

/** A free TCP port on loopback (closed again before it is returned). */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  await once(server, "close");
  assert.ok(address !== null && typeof address === "object");
  return address.port;
}

export interface PrivateRedis {
  url: string;
  port: number;
  /** SIGKILL: the server vanishes mid-traffic; resolves once the process is gone. */
  kill(): Promise<void>;
  /** Starts the server again on the same port (empty: no persistence). */
  restart(): Promise<void>;
  /** SIGSTOP: the server hangs (connections stay open, nothing is answered) until `resume`. */
  pause(): void;
  /** SIGCONT: a paused server answers again, the commands it held included. */
  resume(): void;
  stop(): Promise<void>;
}

/** A redis-server of this test alone, on a free port, in the foreground (no disk state). */
export async function startRedisServer(): Promise<PrivateRedis> {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  const start = async () => {
    const c = spawn(
      "redis-server",
      [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
      ],
      { stdio: "ignore" },
    );
    child = c;
    await waitFor(
      async () => {
        if (c.exitCode !== null) throw new Error(`redis-server on port ${port} exited with ${c.exitCode}`);
        return (await ping(url)) === undefined;
      },
      { what: `redis-server on port ${port} to answer`, timeout: 5000, interval: 50 },
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
  const signal = (s: NodeJS.Signals) => () => {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill(s);
  };
  await start();
  return { url, port, kill, restart: start, pause: signal("SIGSTOP"), resume: signal("SIGCONT"), stop: kill };
}
