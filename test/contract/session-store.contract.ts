/**
 * The SessionStore contract: every implementation (memory, SQLite, and later Redis/PostgreSQL)
 * runs this same suite.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, test } from "node:test";
import type { SessionRecord, SessionStore } from "../../src/store/types.ts";

export function record(overrides: Partial<SessionRecord> = {}): SessionRecord {
  const now = Date.now();
  return {
    id: randomBytes(32).toString("base64url"),
    server: "github",
    principal: "anonymous",
    tenant: null,
    transport: "streamable",
    protocolVersion: "2025-11-25",
    initParams: {
      protocolVersion: "2025-11-25",
      capabilities: { sampling: {} },
      clientInfo: { name: "c", version: "1" },
    },
    upstream: { instance: "http://10.0.0.5:3000/mcp", sessionId: "up-1" },
    createdAt: now,
    lastSeenAt: now,
    ...overrides,
  };
}

export function sessionStoreContract(name: string, openStore: () => Promise<SessionStore>): void {
  describe(`SessionStore contract: ${name}`, () => {
    // Stores a failed test left open are closed here: an open client would keep the process alive.
    const opened: SessionStore[] = [];
    const open = async (): Promise<SessionStore> => {
      const store = await openStore();
      opened.push(store);
      return store;
    };
    after(async () => {
      for (const store of opened) await store.close().catch(() => undefined);
    });

    test("put then get returns an equal record; unknown ids are undefined", async () => {
      const store = await open();
      const r = record({ tenant: "acme", principal: "key:acme:ci" });
      await store.put(r);
      assert.deepEqual(await store.get(r.id), r);
      assert.equal(await store.get("nope"), undefined);
      await store.close();
    });

    test("a returned record is a copy: mutating it changes nothing stored", async () => {
      const store = await open();
      const r = record();
      await store.put(r);
      const got = (await store.get(r.id)) as SessionRecord;
      got.upstream.instance = "changed";
      (got.initParams as { clientInfo: { name: string } }).clientInfo.name = "changed";
      assert.deepEqual(await store.get(r.id), r);
      await store.close();
    });

    test("rebind replaces the upstream binding and the negotiated version only", async () => {
      const store = await open();
      const r = record();
      await store.put(r);
      await store.rebind(r.id, { instance: "http://10.0.0.6:3000/mcp", sessionId: null }, "2025-06-18");
      const got = (await store.get(r.id)) as SessionRecord;
      assert.deepEqual(got.upstream, { instance: "http://10.0.0.6:3000/mcp", sessionId: null });
      assert.equal(got.protocolVersion, "2025-06-18");
      assert.deepEqual(got.initParams, r.initParams);
      await store.close();
    });

    test("touch moves lastSeenAt forward, never back; visible before and after flush", async () => {
      const store = await open();
      const r = record({ lastSeenAt: 1000 });
      await store.put(r);
      store.touch(r.id, 5000);
      store.touch(r.id, 3000);
      assert.equal((await store.get(r.id))?.lastSeenAt, 5000);
      await store.flush();
      assert.equal((await store.get(r.id))?.lastSeenAt, 5000);
      store.touch("unknown", 9000); // no error, no record
      await store.flush();
      assert.equal(await store.get("unknown"), undefined);
      await store.close();
    });

    test("delete removes and reports whether something was there", async () => {
      const store = await open();
      const r = record();
      await store.put(r);
      assert.equal(await store.delete(r.id), true);
      assert.equal(await store.get(r.id), undefined);
      assert.equal(await store.delete(r.id), false);
      await store.close();
    });

    test("listIdle returns only this server's sessions older than the cutoff, up to the limit", async () => {
      const store = await open();
      const old1 = record({ lastSeenAt: 100 });
      const old2 = record({ lastSeenAt: 200 });
      const fresh = record({ lastSeenAt: 10_000 });
      const otherServer = record({ server: "other", lastSeenAt: 100 });
      const touchedFresh = record({ lastSeenAt: 100 });
      for (const r of [old1, old2, fresh, otherServer, touchedFresh]) await store.put(r);
      store.touch(touchedFresh.id, 20_000);
      const idle = await store.listIdle("github", 1000, 10);
      assert.deepEqual(idle.map((r) => r.id).sort(), [old1.id, old2.id].sort());
      assert.equal((await store.listIdle("github", 1000, 1)).length, 1);
      await store.close();
    });

    test("countByInstance counts this server's sessions per upstream instance", async () => {
      const store = await open();
      await store.put(record({ upstream: { instance: "a", sessionId: null } }));
      await store.put(record({ upstream: { instance: "a", sessionId: null } }));
      await store.put(record({ upstream: { instance: "b", sessionId: null } }));
      await store.put(record({ server: "other", upstream: { instance: "a", sessionId: null } }));
      const counts = await store.countByInstance("github");
      assert.equal(counts.get("a"), 2);
      assert.equal(counts.get("b"), 1);
      await store.close();
    });
  });
}

/**
 * More of the contract: the indexes (`list`, `countByInstance`) follow every write. Stores that
 * keep indexes beside the records (Redis: sorted sets and count hashes) can drift where a store
 * that computes them per query cannot, so every implementation runs these too.
 */
export function sessionStoreIndexContract(name: string, openStore: () => Promise<SessionStore>): void {
  describe(`SessionStore contract (indexes): ${name}`, () => {
    // Stores a failed test left open are closed here: an open client would keep the process alive.
    const opened: SessionStore[] = [];
    const open = async (): Promise<SessionStore> => {
      const store = await openStore();
      opened.push(store);
      return store;
    };
    after(async () => {
      for (const store of opened) await store.close().catch(() => undefined);
    });

    test("list: newest first, filtered by server and tenant, up to the limit", async () => {
      const store = await open();
      const a = record({ createdAt: 1000, tenant: "acme" });
      const b = record({ createdAt: 3000, tenant: "globex" });
      const c = record({ createdAt: 2000, tenant: "acme" });
      const d = record({ createdAt: 4000, server: "other", tenant: "acme" });
      for (const r of [a, b, c, d]) await store.put(r);
      const ids = (rs: SessionRecord[]) => rs.map((r) => r.id);
      assert.deepEqual(ids(await store.list({}, 10)), [d.id, b.id, c.id, a.id]);
      assert.deepEqual(ids(await store.list({ server: "github" }, 10)), [b.id, c.id, a.id]);
      assert.deepEqual(ids(await store.list({ tenant: "acme" }, 10)), [d.id, c.id, a.id]);
      assert.deepEqual(ids(await store.list({ server: "github", tenant: "acme" }, 1)), [c.id]);
      assert.deepEqual(await store.list({ server: "github" }, 10), [b, c, a]);
      await store.delete(b.id);
      assert.deepEqual(ids(await store.list({ server: "github" }, 10)), [c.id, a.id]);
      await store.close();
    });

    test("countByInstance follows put, replacing put, rebind and delete", async () => {
      const store = await open();
      const on = (instance: string) => ({ upstream: { instance, sessionId: null } });
      const r1 = record(on("a"));
      const r2 = record(on("a"));
      await store.put(r1);
      await store.put(r2);
      await store.put({ ...r1, ...on("b") }); // replaces r1: moves it, does not add one
      assert.deepEqual(
        await store.countByInstance("github"),
        new Map([
          ["a", 1],
          ["b", 1],
        ]),
      );
      await store.rebind(r2.id, { instance: "c", sessionId: "x" }, "2025-06-18");
      await store.rebind("unknown", { instance: "c", sessionId: null }, "2025-06-18");
      assert.deepEqual(
        await store.countByInstance("github"),
        new Map([
          ["b", 1],
          ["c", 1],
        ]),
      );
      assert.equal(await store.delete(r1.id), true);
      assert.equal(await store.delete(r1.id), false);
      assert.deepEqual(await store.countByInstance("github"), new Map([["c", 1]]));
      await store.put({ ...r2, server: "other" }); // moves to another server
      assert.equal((await store.countByInstance("github")).size, 0);
      assert.deepEqual(await store.countByInstance("other"), new Map([["a", 1]]));
      assert.equal(await store.get("unknown"), undefined, "rebind never creates a record");
      await store.close();
    });
  });
}
