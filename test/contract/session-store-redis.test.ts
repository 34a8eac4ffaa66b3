/**
 * The SessionStore contract against real Redis (REDIS_URL), each store on its own key prefix, plus
 * what only a shared store has: two edge instances' views, touches written in one batch, records
 * that expire on their own without their counts drifting.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { Redis } from "ioredis";
import { RedisSessionStore } from "../../src/store/redis/sessions.ts";
import type { SessionRecord, SessionStore } from "../../src/store/types.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { record, sessionStoreContract, sessionStoreIndexContract } from "./session-store.contract.ts";

if (await redisReady("RedisSessionStore contract")) {
  const admin = new Redis(REDIS_URL);
  const prefixes: string[] = [];
  // Every store is closed after the file, also when a failed test left it open (an open client
  // keeps the process alive).
  const stores: RedisSessionStore[] = [];
  const open = async (prefix = testPrefix()): Promise<RedisSessionStore> => {
    prefixes.push(prefix);
    const store = new RedisSessionStore({ client: { url: REDIS_URL }, keyPrefix: prefix });
    stores.push(store);
    return store;
  };
  after(async () => {
    for (const s of stores) await s.close().catch(() => undefined);
    for (const p of prefixes) await dropPrefix(admin, p);
    admin.disconnect();
  });

  sessionStoreContract("redis", (): Promise<SessionStore> => open());
  sessionStoreIndexContract("redis", (): Promise<SessionStore> => open());

  describe("RedisSessionStore", () => {
    test("two instances on one prefix see each other's sessions, rebinds, touches and deletes", async () => {
      const prefix = testPrefix();
      const a = await open(prefix);
      const b = await open(prefix);
      const r = record({ lastSeenAt: 1000 });
      await a.put(r);
      assert.deepEqual(await b.get(r.id), r);
      await b.rebind(r.id, { instance: "http://10.0.0.9/mcp", sessionId: "z" }, "2025-06-18");
      assert.equal((await a.get(r.id))?.upstream.instance, "http://10.0.0.9/mcp");
      a.touch(r.id, 7000);
      assert.equal((await b.get(r.id))?.lastSeenAt, 1000, "not written yet: batched");
      await a.flush();
      assert.equal((await b.get(r.id))?.lastSeenAt, 7000);
      assert.deepEqual(await b.countByInstance("github"), new Map([["http://10.0.0.9/mcp", 1]]));
      assert.equal(await b.delete(r.id), true);
      assert.equal(await a.get(r.id), undefined);
      await a.close();
      await b.close();
    });

    test("records expire after the route's idle TTL; touch restarts it", async () => {
      const prefix = testPrefix();
      prefixes.push(prefix);
      const store = new RedisSessionStore({
        client: { url: REDIS_URL },
        keyPrefix: prefix,
        idleTtlMs: (server) => (server === "github" ? 60_000 : 5_000),
      });
      const r = record();
      const other = record({ server: "other" });
      await store.put(r);
      await store.put(other);
      const ttl = await admin.pttl(`${prefix}s:${r.id}`);
      assert.ok(ttl > 55_000 && ttl <= 60_000, String(ttl));
      assert.ok((await admin.pttl(`${prefix}s:${other.id}`)) <= 5_000);
      await admin.pexpire(`${prefix}s:${r.id}`, 10_000);
      store.touch(r.id, r.lastSeenAt + 1);
      await store.flush();
      assert.ok((await admin.pttl(`${prefix}s:${r.id}`)) > 55_000, "touch refreshed the TTL");
      await store.close();
    });

    test("an expired record leaves no count behind once the reaper's listIdle has run", async () => {
      const prefix = testPrefix();
      const store = await open(prefix);
      const gone = record({ lastSeenAt: 100, upstream: { instance: "a", sessionId: null } });
      const kept = record({ lastSeenAt: 100, upstream: { instance: "a", sessionId: null } });
      await store.put(gone);
      await store.put(kept);
      await admin.del(`${prefix}s:${gone.id}`); // what Redis does when the TTL runs out
      assert.equal(await store.get(gone.id), undefined);
      const idle = await store.listIdle("github", 1000, 10);
      assert.deepEqual(
        idle.map((x) => x.id),
        [kept.id],
      );
      assert.deepEqual(await store.countByInstance("github"), new Map([["a", 1]]));
      assert.deepEqual(
        (await store.list({}, 10)).map((x) => x.id),
        [kept.id],
      );
      assert.equal(await admin.hexists(`${prefix}bind`, gone.id), 0);
      await store.close();
    });

    test("counts stay exact under concurrent puts, rebinds and deletes from two instances", async () => {
      const prefix = testPrefix();
      const a = await open(prefix);
      const b = await open(prefix);
      const recs = Array.from({ length: 200 }, (_, i) =>
        record({ upstream: { instance: `i${i % 3}`, sessionId: null } }),
      );
      await Promise.all(recs.map((r, i) => (i % 2 ? a : b).put(r)));
      await Promise.all(
        recs.map((r, i) =>
          i % 4 === 0
            ? (i % 8 ? a : b).delete(r.id)
            : (i % 8 ? b : a).rebind(r.id, { instance: `i${i % 5}`, sessionId: null }, "2025-06-18"),
        ),
      );
      const expected = new Map<string, number>();
      recs.forEach((_, i) => {
        if (i % 4 !== 0) expected.set(`i${i % 5}`, (expected.get(`i${i % 5}`) ?? 0) + 1);
      });
      assert.deepEqual(await a.countByInstance("github"), expected);
      assert.equal((await b.list({ server: "github" }, 1000)).length, 150);
      await a.close();
      await b.close();
    });

    test("touches are written in one round trip, one script per 256 sessions, latest time wins", async () => {
      const prefix = testPrefix();
      const store = await open(prefix);
      const recs = Array.from({ length: 300 }, () => record({ lastSeenAt: 1000 }));
      for (const r of recs) await store.put(r);
      const gone = recs[7] as SessionRecord;
      await store.delete(gone.id);
      const monitor = await admin.monitor();
      const seen: string[] = [];
      monitor.on("monitor", (_time: string, args: string[], source: string) => {
        // Only what the client sent (a script's own commands have source "lua"), of this test.
        if (source !== "lua" && args.some((a) => a.startsWith(prefix))) seen.push(args[0] as string);
      });
      for (const r of recs) {
        store.touch(r.id, 5000);
        store.touch(r.id, 4000);
      }
      await store.flush();
      await new Promise((r) => setTimeout(r, 100));
      monitor.disconnect();
      // EVAL the first time on a connection (the script is loaded), EVALSHA after.
      assert.deepEqual(
        seen.map((c) => c.toLowerCase().replace("evalsha", "eval")),
        ["eval", "eval"],
        "300 sessions: two script calls (256 + 44)",
      );
      assert.equal(await store.get(gone.id), undefined, "a touch does not bring back a deleted record");
      assert.equal(await admin.exists(`${prefix}s:${gone.id}`), 0);
      const live = recs.filter((r) => r !== gone);
      for (const r of live) {
        assert.equal(
          Number(await admin.zscore(`${prefix}idle:${r.server}`, r.id)),
          5000,
          "the idle index moved",
        );
      }
      for (const r of live) assert.equal((await store.get(r.id))?.lastSeenAt, 5000);
      await store.close();
    });
  });
}
