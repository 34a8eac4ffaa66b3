/**
 * Regression: in distributed mode an in-flight count (limits.concurrency) could go below zero in
 * Redis, and a session then had that many calls in flight above its cap. rate-limiter-flexible's
 * `reward` (the release of a slot) ran its consume script with negative points, which creates a
 * missing key: a release after the count had expired (`inflightTtlSec` after it was created) left
 * -N, and so did releasing slots the local fallback had admitted while Redis was unreachable (the
 * second case is in test/contract/counter-store-redis.test.ts). Fixed in
 * src/store/redis/counters.ts: a give to a key that is gone is dropped, a count that reaches zero
 * is deleted, and the fallback's slots go back to the fallback.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { Redis } from "ioredis";
import { RedisCounterStore } from "../../src/store/redis/counters.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { waitFor } from "../helpers/wait.ts";

if (await redisReady("in-flight counts below zero (regression)")) {
  const admin = new Redis(REDIS_URL);
  const prefix = testPrefix();
  after(async () => {
    await dropPrefix(admin, prefix);
    admin.disconnect();
  });

  test("releases after an in-flight count expired do not open slots above the cap", async () => {
    const store = new RedisCounterStore({ client: { url: REDIS_URL }, keyPrefix: prefix, inflightTtlSec: 1 });
    try {
      await store.ready();
      const cap = store.counter({ quota: 2, windowSec: 0 }, "concurrency");
      const take = (points = 1) => store.take([{ counter: cap, key: "s", points }]);
      assert.equal(await take(2), undefined, "two long calls in flight");
      // Their count expires (TTL 1 s) while they run.
      await waitFor(async () => (await admin.exists(`${prefix}concurrency:2:0:s`)) === 0, {
        what: "the in-flight count to expire",
        timeout: 3000,
        interval: 50,
      });
      store.give(cap, "s", 2); // both end
      await new Promise((r) => setTimeout(r, 100)); // under test: nothing appears after the gives
      assert.equal(await admin.exists(`${prefix}concurrency:2:0:s`), 0, "no count below zero was made");
      assert.equal(await take(2), undefined);
      assert.deepEqual(await take(), { index: 0, msBeforeNext: -1 }, "the cap is 2, not 4");
    } finally {
      await store.close();
    }
  });
}
