/**
 * Redis dies mid-test (SIGKILL of a private redis-server) and comes back:
 * session store calls fail fast with EDGE_STORE_UNAVAILABLE (503, never "no such session"), the
 * counter store answers from its local fallback (never a store error, never a 429 for the outage
 * itself) and counts those decisions, and both work again after the restart without being made
 * anew. The 2 s bounds are hang guards, not latency claims.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { GatewayError } from "../../src/errors/errors.ts";
import { RedisCounterStore } from "../../src/store/redis/counters.ts";
import { createRedisClient, guardOf } from "../../src/store/redis/client.ts";
import { RedisSessionStore } from "../../src/store/redis/sessions.ts";
import { record } from "./session-store.contract.ts";
import { type PrivateRedis, redisReady, startRedisServer } from "../helpers/redis.ts";

const HANG_GUARD_MS = 2000;

async function failsFast(what: string, op: () => Promise<unknown>): Promise<void> {
  const started = performance.now();
  await assert.rejects(op(), (err: unknown) => {
    assert.ok(err instanceof GatewayError, `${what}: ${String(err)}`);
    assert.equal(err.code, "EDGE_STORE_UNAVAILABLE", what);
    assert.equal(err.status, 503, what);
    return true;
  });
  const ms = performance.now() - started;
  assert.ok(ms < HANG_GUARD_MS, `${what} took ${ms.toFixed(0)} ms`);
}

/** Retries `op` until it stops throwing (the client reconnects on its own). */
async function eventually<T>(op: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await op();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

// redisReady checks the shared server: the suites run together, and CI must have Redis at all.
if (await redisReady("Redis fault tests")) {
  let server: PrivateRedis | undefined;
  after(async () => {
    await server?.stop();
  });

  test("Redis killed and restarted: sessions fail closed and fast, limits fall back, both recover", async () => {
    server = await startRedisServer();
    const client = createRedisClient({ url: server.url, commandTimeoutMs: 100 });
    const sessions = new RedisSessionStore({ client, keyPrefix: "faults:" });
    const counters = new RedisCounterStore({ client, keyPrefix: "faults:rl:", fallbackDivisor: 4 });
    await counters.ready();
    const limit = counters.counter({ quota: 40, windowSec: 60 }, "key");
    const take = () => counters.take([{ counter: limit, key: "k", points: 1 }]);

    const r = record();
    await sessions.put(r);
    assert.deepEqual(await sessions.get(r.id), r);
    assert.equal(await take(), undefined);
    assert.equal(counters.fallbackDecisions, 0);

    await server.kill();

    // Sessions: closed, as 503, quickly; a pending touch survives the failed flush.
    sessions.touch(r.id, r.lastSeenAt + 10);
    await failsFast("get", () => sessions.get(r.id));
    await failsFast("put", () => sessions.put(record()));
    await failsFast("rebind", () => sessions.rebind(r.id, { instance: "x", sessionId: null }, "2025-06-18"));
    await failsFast("delete", () => sessions.delete("nope"));
    await failsFast("listIdle", () => sessions.listIdle("github", Date.now(), 10));
    await failsFast("list", () => sessions.list({}, 10));
    await failsFast("countByInstance", () => sessions.countByInstance("github"));
    await failsFast("flush", () => sessions.flush());

    // Limits: the local fallback answers (quota 40 / divisor 4 = 10 per instance), no throw.
    const started = performance.now();
    const local = [];
    for (let i = 0; i < 12; i++) local.push(await take());
    assert.ok(performance.now() - started < HANG_GUARD_MS);
    assert.equal(local.filter((x) => x === undefined).length, 10, "the local cap holds");
    assert.equal(local[11]?.index, 0, "a local refusal, shaped like any other");
    assert.equal(counters.fallbackDecisions, 12);

    await server.restart();

    // Same objects, no re-creation: the client reconnects by itself.
    const r2 = record();
    await eventually(() => sessions.put(r2));
    assert.deepEqual(await sessions.get(r2.id), r2);
    await sessions.flush(); // the touch kept from the outage; its record is gone with the data
    assert.equal(await sessions.get(r.id), undefined, "the restarted server is empty (no persistence)");
    await eventually(async () => {
      const before = counters.fallbackDecisions;
      assert.equal(await take(), undefined);
      assert.equal(counters.fallbackDecisions, before, "counted in Redis again");
    });
    assert.ok(Number(await client.get("faults:rl:key:40:60:k")) >= 1, "the count is in Redis");

    await sessions.close();
    await counters.close();
    client.disconnect();
  });
}

if (await redisReady("Redis slow and stalled-loop tests")) {
  const TIMEOUT_MS = 1000;
  const stores = (url: string, prefix: string) => {
    const client = createRedisClient({ url, commandTimeoutMs: TIMEOUT_MS, breaker: { failures: 1000 } });
    return {
      client,
      sessions: new RedisSessionStore({ client, keyPrefix: prefix }),
      counters: new RedisCounterStore({ client, keyPrefix: `${prefix}rl:` }),
    };
  };

  test("Redis hung: a command queued behind an unanswered one waits one timeout from its call, not two", async () => {
    const server = await startRedisServer();
    const { client, sessions, counters } = stores(server.url, "slow:");
    try {
      await counters.ready();
      const limit = counters.counter({ quota: 100, windowSec: 60 }, "key");
      server.pause();
      const first = sessions.get("a").catch((err: unknown) => err);
      await new Promise((r) => setTimeout(r, 300)); // its pipeline is out and unanswered
      const started = performance.now();
      const decision = await counters.take([{ counter: limit, key: "k", points: 1 }]);
      const ms = performance.now() - started;
      assert.equal(decision, undefined, "the local fallback admitted it");
      assert.equal(counters.fallbackDecisions, 1);
      assert.ok(ms < 1.5 * TIMEOUT_MS, `one timeout from the call (${ms.toFixed(0)} ms; two would be ~1700)`);
      const err = await first;
      assert.ok(err instanceof GatewayError && err.code === "EDGE_STORE_UNAVAILABLE");
    } finally {
      server.resume();
      await sessions.close().catch(() => undefined);
      await counters.close();
      client.disconnect();
      await server.stop();
    }
  });

  test("an event-loop stall longer than the command timeout is not a store failure", async () => {
    const server = await startRedisServer();
    const { client, sessions, counters } = stores(server.url, "stall:");
    const block = (ms: number) => {
      const end = performance.now() + ms;
      while (performance.now() < end) {
        // a synchronous stall (start-up compilation, a long task)
      }
    };
    try {
      await counters.ready();
      const limit = counters.counter({ quota: 100, windowSec: 60 }, "key");
      const r = record();
      await sessions.put(r);
      // Stalled before the commands are written...
      const read = sessions.get(r.id);
      const take = counters.take([{ counter: limit, key: "k", points: 1 }]);
      block(2.5 * TIMEOUT_MS);
      assert.deepEqual(await read, r);
      assert.equal(await take, undefined);
      // ...and after they were written, their answers waiting on the socket.
      const read2 = sessions.get(r.id);
      const take2 = counters.take([{ counter: limit, key: "k", points: 1 }]);
      await new Promise((resolve) => setImmediate(resolve)); // the auto-pipeline writes them
      block(2.5 * TIMEOUT_MS);
      assert.deepEqual(await read2, r);
      assert.equal(await take2, undefined);
      assert.equal(counters.fallbackDecisions, 0, "decided in Redis, not by the fallback");
      assert.equal(guardOf(client).breaker.state, "closed");
    } finally {
      await sessions.close().catch(() => undefined);
      await counters.close();
      client.disconnect();
      await server.stop();
    }
  });
}
