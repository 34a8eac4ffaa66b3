/**
 * The StreamEventLog contract over every implementation. Distributed mode: RedisEventLog, two
 * instances (one client each) on one key prefix. Embedded mode has no implementation: a stream
 * lives in its process (StreamRegistry without a log), and a resume on the same instance is tested
 * by test/unit/streams.test.ts.
 */
import { after, test } from "node:test";
import { Redis } from "ioredis";
import { createRedisClient } from "../../src/store/redis/client.ts";
import { RedisEventLog } from "../../src/store/redis/event-log.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { eventLogContract, eventLogLimits } from "./event-log.contract.ts";

test(
  "StreamEventLog contract: embedded mode",
  {
    skip: "no implementation to run it over: embedded mode keeps streams in their process (no log)",
  },
  () => {},
);

if (await redisReady("StreamEventLog contract (redis)")) {
  const admin = new Redis(REDIS_URL);
  const prefixes: string[] = [];
  after(async () => {
    for (const p of prefixes) await dropPrefix(admin, p);
    admin.disconnect();
  });

  eventLogContract("redis (two instances)", async () => {
    const keyPrefix = testPrefix();
    prefixes.push(keyPrefix);
    const ca = createRedisClient({ url: REDIS_URL });
    const cb = createRedisClient({ url: REDIS_URL });
    const a = new RedisEventLog({ client: ca, keyPrefix, limits: eventLogLimits });
    const b = new RedisEventLog({ client: cb, keyPrefix, limits: eventLogLimits });
    return {
      a,
      b,
      async written() {
        // A's batch goes out on the next turn; a PING on A's (ordered) connection queues behind it.
        await new Promise((r) => setImmediate(r));
        a.flush();
        await ca.ping();
      },
      async close() {
        await a.close();
        await b.close();
        ca.disconnect();
        cb.disconnect();
      },
    };
  });
}
