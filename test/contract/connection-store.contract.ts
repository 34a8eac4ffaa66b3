/**
 * The ConnectionStore contract (src/store/types.ts): every implementation (SQLite for one
 * instance, PostgreSQL shared by a fleet) keeps one record per (tenant, subject, connection), as
 * written; a new connect replaces the record (new id, higher version); a refresh writes only over
 * the version it read (compare-and-swap), so of two writers that refreshed the same record one
 * stores and the other learns it lost; deletes can be conditional the same way. The factory gives
 * two handles on the same storage (two instances when the store is shared).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { ConnectionStore, ConnectionWrite } from "../../src/store/types.ts";

export interface ConnectionStores {
  a: ConnectionStore;
  b: ConnectionStore;
}

export function connectionWrite(over: Partial<ConnectionWrite> = {}): ConnectionWrite {
  return {
    tenant: "acme",
    subject: "oauth|https://idp.example|alice",
    connection: "github",
    sealed: "v1.k.iv.ct",
    expiresAt: 1_000_000,
    scope: "repo",
    at: 1000,
    ...over,
  };
}

export function connectionStoreContract(name: string, open: () => Promise<ConnectionStores>): void {
  describe(`ConnectionStore contract: ${name}`, () => {
    test("put creates a record at version 1, read back as written by either handle", async () => {
      const { a, b } = await open();
      const rec = await a.put(connectionWrite());
      assert.ok(rec);
      assert.equal(rec.version, 1);
      assert.equal(rec.createdAt, 1000);
      assert.equal(rec.updatedAt, 1000);
      for (const s of [a, b]) {
        const got = await s.get("acme", "oauth|https://idp.example|alice", "github");
        assert.deepEqual(got, rec);
        assert.deepEqual(await s.getById(rec.id), rec);
      }
      assert.equal(await a.get("acme", "oauth|https://idp.example|alice", "slack"), undefined);
      assert.equal(await a.get("other", "oauth|https://idp.example|alice", "github"), undefined);
      assert.equal(await a.getById("no-such-id"), undefined);
    });

    test("a new connect replaces the record: a new id and a higher version, one record per key", async () => {
      const { a, b } = await open();
      const first = await a.put(connectionWrite({ subject: "s-replace" }));
      const second = await b.put(connectionWrite({ subject: "s-replace", sealed: "v1.k.iv.new", at: 2000 }));
      assert.ok(first && second);
      assert.notEqual(second.id, first.id);
      assert.ok(second.version > first.version);
      assert.equal(second.sealed, "v1.k.iv.new");
      assert.equal(second.createdAt, 2000);
      assert.equal(await a.getById(first.id), undefined);
      assert.equal((await a.list({ subject: "s-replace" })).length, 1);
    });

    test("compare-and-swap: a refresh stores over the version it read; a stale writer gets undefined", async () => {
      const { a, b } = await open();
      const rec = await a.put(connectionWrite({ subject: "s-cas" }));
      assert.ok(rec);
      const w1 = connectionWrite({
        subject: "s-cas",
        sealed: "from-a",
        expiresAt: 2_000_000,
        scope: "repo user",
        at: 3000,
      });
      const w2 = connectionWrite({ subject: "s-cas", sealed: "from-b", at: 3001 });
      const [ra, rb] = await Promise.all([a.put(w1, rec.version), b.put(w2, rec.version)]);
      const winners = [ra, rb].filter((r) => r !== undefined);
      assert.equal(winners.length, 1, "exactly one of two writers at the same version stores");
      const stored = await a.get("acme", "s-cas", "github");
      assert.deepEqual(stored, winners[0]);
      assert.equal(stored?.id, rec.id, "a refresh keeps the record's id");
      assert.equal(stored?.createdAt, rec.createdAt);
      assert.equal(stored?.version, rec.version + 1);
      // The loser, retrying with what it reads now, stores.
      assert.ok(stored);
      const again = await b.put(
        connectionWrite({ subject: "s-cas", sealed: "retry", at: 4000 }),
        stored.version,
      );
      assert.equal(again?.sealed, "retry");
      assert.equal(again?.updatedAt, 4000);
      // A CAS on a record that is gone stores nothing (a disconnect won).
      assert.ok(again);
      assert.equal(await a.delete(again.id), true);
      assert.equal(await b.put(connectionWrite({ subject: "s-cas" }), again.version), undefined);
      assert.equal(await a.get("acme", "s-cas", "github"), undefined);
    });

    test("a refresh racing a reconnect loses: the reconnect's record stands", async () => {
      const { a, b } = await open();
      const old = await a.put(connectionWrite({ subject: "s-race" }));
      assert.ok(old);
      const fresh = await b.put(connectionWrite({ subject: "s-race", sealed: "reconnected", at: 5000 }));
      assert.equal(
        await a.put(connectionWrite({ subject: "s-race", sealed: "stale refresh" }), old.version),
        undefined,
      );
      assert.deepEqual(await a.get("acme", "s-race", "github"), fresh);
    });

    test("delete: unconditional, or only at a version; false when nothing was deleted", async () => {
      const { a, b } = await open();
      const rec = await a.put(connectionWrite({ subject: "s-del" }));
      assert.ok(rec);
      assert.equal(await b.delete(rec.id, rec.version + 1), false);
      assert.ok(await a.getById(rec.id));
      assert.equal(await b.delete(rec.id, rec.version), true);
      assert.equal(await a.delete(rec.id), false);
      assert.equal(await a.getById(rec.id), undefined);
    });

    test("list filters by tenant, subject and connection; tenants never mix", async () => {
      const { a, b } = await open();
      const t = `t-${Math.random().toString(36).slice(2)}`;
      await a.put(connectionWrite({ tenant: t, subject: "u1", connection: "github", at: 1 }));
      await a.put(connectionWrite({ tenant: t, subject: "u1", connection: "slack", at: 2 }));
      await b.put(connectionWrite({ tenant: t, subject: "u2", connection: "github", at: 3 }));
      await b.put(connectionWrite({ tenant: `${t}-other`, subject: "u1", connection: "github", at: 4 }));
      assert.deepEqual(
        (await b.list({ tenant: t })).map((r) => `${r.subject}/${r.connection}`),
        ["u1/github", "u1/slack", "u2/github"],
      );
      assert.deepEqual(
        (await a.list({ tenant: t, subject: "u1" })).map((r) => r.connection),
        ["github", "slack"],
      );
      assert.deepEqual(
        (await a.list({ tenant: t, connection: "github" })).map((r) => r.subject),
        ["u1", "u2"],
      );
      assert.equal((await a.list({ tenant: `${t}-other` })).length, 1);
      assert.equal((await a.list({ tenant: `${t}-none` })).length, 0);
    });

    test("the empty tenant is a tenant of its own", async () => {
      const { a } = await open();
      await a.put(connectionWrite({ tenant: "", subject: "s-empty" }));
      await a.put(connectionWrite({ tenant: "x", subject: "s-empty" }));
      assert.equal((await a.list({ tenant: "", subject: "s-empty" })).length, 1);
      assert.equal((await a.get("", "s-empty", "github"))?.tenant, "");
    });
  });
}
