/**
 * The CounterStore contract against real Redis (REDIS_URL): two RedisCounterStore instances, each
 * with its own client, share one key prefix, as two edge instances share one Redis.
 */
import assert from "node:assert/strict";
import { after } from "node:test";
import { Redis } from "ioredis";
import { RedisCounterStore } from "../../src/ratelimit/redis-store.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { counterStoreContract } from "./counter-store.contract.ts";

if (await redisReady("RedisCounterStore contract")) {
  const admin = new Redis(REDIS_URL);
  const prefixes: string[] = [];
  after(async () => {
    for (const p of prefixes) await dropPrefix(admin, p);
    admin.disconnect();
  });

  counterStoreContract("redis (two instances)", async () => {
    const keyPrefix = testPrefix();
    prefixes.push(keyPrefix);
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
}
