/**
 * The SessionStore contract: every implementation (memory, SQLite, and later Redis/PostgreSQL)
 * runs this same suite (DESIGN.md convention 2).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
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

export function sessionStoreContract(name: string, open: () => Promise<SessionStore>): void {
  describe(`SessionStore contract: ${name}`, () => {
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
