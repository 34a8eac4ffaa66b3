/**
 * SessionManager.prefetch (distributed mode): a session without a fresh local copy is read while
 * the call's rate-limit decision is made, in the same round trip, and `load` joins that read
 * instead of making a second one. Real Redis; the store is counted, not replaced.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { Redis } from "ioredis";
import type { Route } from "../../src/context.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { SessionManager, type SessionSharing } from "../../src/session/manager.ts";
import { StreamRegistry } from "../../src/session/streams.ts";
import { RedisSessionStore } from "../../src/store/redis/sessions.ts";
import { record } from "../contract/session-store.contract.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";

if (await redisReady("SessionManager.prefetch")) {
  describe("SessionManager.prefetch (distributed mode)", () => {
    const prefix = testPrefix();
    const admin = new Redis(REDIS_URL);
    const store = new RedisSessionStore({ client: { url: REDIS_URL }, keyPrefix: prefix });
    let reads = 0;
    const get = store.get.bind(store);
    store.get = (id: string) => {
      reads++;
      return get(id);
    };
    const sharing: SessionSharing = {
      hotTtlMs: 5000,
      ready: () => true,
      available: () => true,
      tryLock: async () => true,
      announce: () => undefined,
    };
    const limits = { bufferEvents: 3, bufferBytes: 1 << 20, ttl: 60_000, keepAlive: 15_000, retry: 1000 };
    const route = { name: "s", config: { sessions: { idleTtl: 3_600_000 } } } as unknown as Route;
    const streams = new StreamRegistry(limits);
    const manager = new SessionManager(
      store,
      streams,
      new Map([["s", route]]),
      createLogger({ level: "silent" }),
      sharing,
    );
    after(async () => {
      manager.close();
      streams.close();
      await store.close();
      await dropPrefix(admin, prefix);
      admin.disconnect();
    });

    test("a record without a fresh local copy is read once: prefetch starts the read, load joins it", async () => {
      const r = record({ server: "s", principal: "p" });
      await store.put(r);
      reads = 0;
      manager.prefetch(r.id);
      assert.equal(reads, 1, "the read left at once (with whatever else this turn sends)");
      manager.prefetch(r.id);
      assert.equal(reads, 1, "a second prefetch joins the first");
      const loaded = await manager.load(route, r.id, "p");
      assert.equal(loaded.id, r.id);
      assert.equal(reads, 1, "load took the prefetched record");
      // The copy is fresh now: neither a prefetch nor a load reads again.
      manager.prefetch(r.id);
      await manager.load(route, r.id, "p");
      assert.equal(reads, 1);
    });

    test("a prefetch never answers for the session: another principal still gets 404", async () => {
      const r = record({ server: "s", principal: "owner" });
      await store.put(r);
      manager.prefetch(r.id);
      await assert.rejects(manager.load(route, r.id, "someone-else"), { code: "EDGE_SESSION_NOT_FOUND" });
      assert.equal((await manager.load(route, r.id, "owner")).id, r.id);
    });

    test("a prefetch of an unknown id: load still answers 404", async () => {
      manager.prefetch("no-such-session");
      await assert.rejects(manager.load(route, "no-such-session", "p"), { code: "EDGE_SESSION_NOT_FOUND" });
    });
  });
}
