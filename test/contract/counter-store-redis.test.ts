/**
 * The CounterStore contract against real Redis (REDIS_URL): two RedisCounterStore instances, each
 * with its own client, share one key prefix, as two edge instances share one Redis. Then what only
 * the Redis store has: one command per decision (issue 8), slots given back while Redis is away,
 * the local fallback's own slots, key expiry, and counts shared with the previous version's
 * rate-limiter-flexible scripts (a rolling upgrade).
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { Redis } from "ioredis";
import { RateLimiterRedis } from "rate-limiter-flexible";
import { RedisCounterStore } from "../../src/store/redis/counters.ts";
import type { Take } from "../../src/store/types.ts";
import { dropPrefix, REDIS_URL, redisReady, startRedisServer, testPrefix } from "../helpers/redis.ts";
import { startTcpProxy } from "../helpers/tcp-proxy.ts";
import { counterStoreContract } from "./counter-store.contract.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Retries `check` until it passes (gives are not awaited: they land soon after). */
async function eventually(check: () => Promise<void>, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(20);
    }
  }
}

if (await redisReady("RedisCounterStore contract")) {
  const admin = new Redis(REDIS_URL);
  const prefixes: string[] = [];
  const prefix = () => {
    const p = testPrefix();
    prefixes.push(p);
    return p;
  };
  after(async () => {
    for (const p of prefixes) await dropPrefix(admin, p);
    admin.disconnect();
  });

  counterStoreContract("redis (two instances)", async () => {
    const keyPrefix = prefix();
    const a = new RedisCounterStore({ client: { url: REDIS_URL }, keyPrefix });
    const b = new RedisCounterStore({ client: { url: REDIS_URL }, keyPrefix });
    await Promise.all([a.ready(), b.ready()]);
    return {
      a,
      b,
      close: async () => {
        // Every decision was Redis's: none fell back to the local limiter.
        assert.equal(a.fallbackDecisions + b.fallbackDecisions, 0, "no fallback decision");
        await a.close();
        await b.close();
      },
    };
  });

  describe("RedisCounterStore", () => {
    test("one command per decision, whatever the number of limits; gives ride with the next one", async () => {
      const keyPrefix = prefix();
      const store = new RedisCounterStore({ client: { url: REDIS_URL }, keyPrefix });
      await store.ready();
      const key = store.counter({ quota: 1000, windowSec: 60 }, "key");
      const session = store.counter({ quota: 1000, windowSec: 60 }, "session");
      const tenant = store.counter({ quota: 1000, windowSec: 60 }, "tenant");
      const tool = store.counter({ quota: 1000, windowSec: 60 }, "tool.search");
      const inflight = store.counter({ quota: 64, windowSec: 0 }, "concurrency");
      const call: Take[] = [
        { counter: key, key: "p", points: 1 },
        { counter: session, key: "p|s", points: 1 },
        { counter: tenant, key: "t", points: 1 },
        { counter: tool, key: "p|search", points: 1 },
        { counter: inflight, key: "p|s", points: 1 },
      ];
      await store.take(call); // the script is loaded (EVAL) on this connection
      store.give(inflight, "p|s", 1);
      const monitor = new Redis(REDIS_URL);
      const watch = await monitor.monitor();
      const sent: string[] = [];
      watch.on("monitor", (_time: string, args: string[], source: string) => {
        // Commands a script runs are shown with source "lua": only what the client sent counts.
        if (source !== "lua" && args.some((a) => a.includes(keyPrefix))) sent.push(args[0] as string);
      });
      await sleep(100);
      try {
        const n = 20;
        for (let i = 0; i < n; i++) {
          assert.equal(await store.take(call), undefined);
          store.give(inflight, "p|s", 1); // the call ended
        }
        await sleep(100); // the last give goes alone, at the end of its event-loop turn
        assert.deepEqual(
          sent,
          Array<string>(n + 1).fill("evalsha"),
          "one EVALSHA per decision, one for the last give",
        );

        // 64 in flight: each decision carries the gives of the calls that ended before it.
        sent.length = 0;
        await Promise.all(
          Array.from({ length: 64 }, async () => {
            for (let i = 0; i < 10; i++) {
              assert.equal(await store.take(call), undefined);
              store.give(inflight, "p|s", 1);
            }
          }),
        );
        await sleep(100);
        assert.ok(sent.length <= 640 + 1, `${sent.length} commands for 640 decisions`);
      } finally {
        watch.disconnect();
        monitor.disconnect();
      }
      // Every slot came back: the in-flight count is gone (deleted at zero).
      await eventually(async () => {
        assert.equal(await admin.exists(`${keyPrefix}concurrency:64:0:p|s`), 0);
      });
      assert.equal(Number(await admin.get(`${keyPrefix}key:1000:60:p`)), 661);
      assert.equal(store.fallbackDecisions, 0);
      await store.close();
    });

    test("the script is loaded once, then run by EVALSHA; after SCRIPT FLUSH it is loaded again", async () => {
      // A private server: SCRIPT FLUSH on the shared one would touch other suites' scripts.
      const server = await startRedisServer();
      const store = new RedisCounterStore({ client: { url: server.url }, keyPrefix: "noscript:" });
      const admin2 = new Redis(server.url);
      try {
        await store.ready();
        const c = store.counter({ quota: 10, windowSec: 60 }, "key");
        const take = () => store.take([{ counter: c, key: "k", points: 1 }]);
        const calls = async () => {
          const info = await admin2.info("commandstats");
          const n = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
          return { eval: n("eval"), evalsha: n("evalsha") };
        };
        assert.equal(await take(), undefined);
        assert.equal(await take(), undefined);
        assert.deepEqual(await calls(), { eval: 1, evalsha: 1 }, "EVAL once on the connection, then EVALSHA");
        await admin2.script("FLUSH");
        assert.equal(await take(), undefined, "NOSCRIPT: sent again, decided by Redis");
        assert.equal(Number(await admin2.get("noscript:key:10:60:k")), 3);
        assert.equal(store.fallbackDecisions, 0);
      } finally {
        admin2.disconnect();
        await store.close();
        await server.stop();
      }
    });

    test("counts expire with their window; in-flight counts inflightTtlSec after creation", async () => {
      const keyPrefix = prefix();
      const store = new RedisCounterStore({ client: { url: REDIS_URL }, keyPrefix, inflightTtlSec: 120 });
      await store.ready();
      const minute = store.counter({ quota: 10, windowSec: 60 }, "key");
      const inflight = store.counter({ quota: 10, windowSec: 0 }, "concurrency");
      assert.equal(
        await store.take([
          { counter: minute, key: "k", points: 1 },
          { counter: inflight, key: "k", points: 1 },
        ]),
        undefined,
      );
      const wttl = await admin.pttl(`${keyPrefix}key:10:60:k`);
      const ittl = await admin.pttl(`${keyPrefix}concurrency:10:0:k`);
      assert.ok(wttl > 55_000 && wttl <= 60_000, `window ${wttl}`);
      assert.ok(ittl > 115_000 && ittl <= 120_000, `in-flight ${ittl}`);
      // A later point does not move the window's end.
      await sleep(50);
      assert.equal(await store.take([{ counter: minute, key: "k", points: 1 }]), undefined);
      assert.ok((await admin.pttl(`${keyPrefix}key:10:60:k`)) < wttl);
      await store.close();
    });

    test("slots given back while Redis is unreachable are written when it is back", async () => {
      const keyPrefix = prefix();
      const proxy = await startTcpProxy(Number(new URL(REDIS_URL).port || 6379), new URL(REDIS_URL).hostname);
      const a = new RedisCounterStore({
        client: { url: `redis://127.0.0.1:${proxy.port}`, commandTimeoutMs: 500 },
        keyPrefix,
      });
      const b = new RedisCounterStore({ client: { url: REDIS_URL }, keyPrefix });
      try {
        await Promise.all([a.ready(), b.ready()]);
        const [ia, ib] = [a, b].map((s) => s.counter({ quota: 2, windowSec: 0 }, "concurrency")) as [
          ReturnType<RedisCounterStore["counter"]>,
          ReturnType<RedisCounterStore["counter"]>,
        ];
        assert.equal(await a.take([{ counter: ia, key: "s", points: 2 }]), undefined);
        assert.deepEqual(await b.take([{ counter: ib, key: "s", points: 1 }]), {
          index: 0,
          msBeforeNext: -1,
        });
        await proxy.cut();
        await eventually(async () => assert.notEqual(a.client.status, "ready"));
        a.give(ia, "s", 2); // the two calls ended while instance a was cut off
        await sleep(100);
        assert.equal(Number(await admin.get(`${keyPrefix}concurrency:2:0:s`)), 2, "not written yet");
        await proxy.restore();
        await eventually(async () => {
          assert.equal(
            await b.take([{ counter: ib, key: "s", points: 2 }]),
            undefined,
            "both slots are back",
          );
        }, 5000);
        assert.equal(a.fallbackDecisions, 0);
      } finally {
        await a.close();
        await b.close();
        await proxy.stop();
      }
    });

    test("slots the local fallback admitted go back to it, never to Redis (no count below zero)", async () => {
      const keyPrefix = prefix();
      const proxy = await startTcpProxy(Number(new URL(REDIS_URL).port || 6379), new URL(REDIS_URL).hostname);
      const store = new RedisCounterStore({
        client: { url: `redis://127.0.0.1:${proxy.port}`, commandTimeoutMs: 500 },
        keyPrefix,
        fallbackDivisor: 2,
      });
      try {
        await store.ready();
        const inflight = store.counter({ quota: 4, windowSec: 0 }, "concurrency");
        const take = () => store.take([{ counter: inflight, key: "s", points: 1 }]);
        assert.equal(await take(), undefined, "one slot held in Redis");
        await proxy.cut();
        await eventually(async () => assert.notEqual(store.client.status, "ready"));
        // Redis is away: the fallback allows 4 / 2 = 2 in flight.
        assert.equal(await take(), undefined);
        assert.equal(await take(), undefined);
        assert.deepEqual(await take(), { index: 0, msBeforeNext: -1 });
        assert.equal(store.fallbackDecisions, 3);
        await proxy.restore();
        await store.ready();
        // The two calls the fallback admitted end, then the one Redis admitted.
        store.give(inflight, "s", 1);
        store.give(inflight, "s", 1);
        await sleep(100);
        assert.equal(
          Number(await admin.get(`${keyPrefix}concurrency:4:0:s`)),
          1,
          "Redis's slot is still held",
        );
        store.give(inflight, "s", 1);
        await eventually(async () => {
          assert.equal(await admin.exists(`${keyPrefix}concurrency:4:0:s`), 0, "back to zero, deleted");
        });
        // Regression: the previous version gave the fallback's slots back to Redis (the count went
        // to -2 and the session had two in-flight slots too many for up to an hour).
        for (let i = 0; i < 4; i++) assert.equal(await take(), undefined, `slot ${i}`);
        assert.deepEqual(await take(), { index: 0, msBeforeNext: -1 }, "exactly the quota");
      } finally {
        await store.close();
        await proxy.stop();
      }
    });

    test("a rolling upgrade: counts are shared with the previous version's rate-limiter-flexible", async () => {
      const keyPrefix = prefix();
      const store = new RedisCounterStore({ client: { url: REDIS_URL }, keyPrefix });
      await store.ready();
      const c = store.counter({ quota: 5, windowSec: 60 }, "key");
      // What the previous version made for the same policy (src/ratelimit/redis-store.ts before issue 8).
      const old = new RateLimiterRedis({
        storeClient: admin,
        points: 5,
        duration: 60,
        keyPrefix: `${keyPrefix}key:5:60`,
      });
      await old.consume("k", 2);
      assert.equal(await store.take([{ counter: c, key: "k", points: 3 }]), undefined, "2 + 3 fit");
      const refused = await store.take([{ counter: c, key: "k", points: 1 }]);
      assert.equal(refused?.index, 0, "the old instance's points count");
      await assert.rejects(old.consume("k", 1), "and the new instance's count for the old one");
      await store.close();
    });
  });
}
