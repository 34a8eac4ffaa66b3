/**
 * The AsStore contract (src/store/types.ts): the authorization server's records, read back as
 * written by either handle; expired records are not found; `add` and `consume` have exactly one
 * winner when many race on one record (the refresh single-flight and single-use codes across
 * instances); revoking a grant deletes every record of it and is remembered; listings filter by
 * tenant, subject and client. The factory gives two handles on the same storage.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { AsRecord, AsStore } from "../../src/store/types.ts";

export interface AsStores {
  a: AsStore;
  b: AsStore;
}

export function asRecord(over: Partial<AsRecord> = {}): AsRecord {
  return {
    kind: "RefreshToken",
    id: `h-${Math.random().toString(36).slice(2)}`,
    payload: '{"scope":"mcp:tools"}',
    grantId: "g1",
    uid: null,
    tenant: "acme",
    subject: "alice",
    clientId: "c1",
    expiresAt: Date.now() + 60_000,
    consumedAt: null,
    ...over,
  };
}

export function asStoreContract(name: string, open: () => Promise<AsStores>): void {
  describe(`AsStore contract: ${name}`, () => {
    test("put then get from either handle, as written; replaced by a second put", async () => {
      const { a, b } = await open();
      const rec = asRecord({ uid: "u1" });
      await a.put(rec);
      assert.deepEqual(await b.get(rec.kind, rec.id), rec);
      assert.deepEqual(await b.getByUid(rec.kind, "u1"), rec);
      assert.equal(await b.get("Grant", rec.id), undefined, "kind is part of the key");
      await b.put({ ...rec, payload: '{"scope":"x"}' });
      assert.equal((await a.get(rec.kind, rec.id))?.payload, '{"scope":"x"}');
      assert.equal(await a.delete(rec.kind, rec.id), true);
      assert.equal(await b.get(rec.kind, rec.id), undefined);
      assert.equal(await a.delete(rec.kind, rec.id), false);
    });

    test("an expired record is not found, nor listed, and is swept", async () => {
      const { a, b } = await open();
      const old = asRecord({ expiresAt: Date.now() - 1, uid: "u-old", tenant: "t-exp" });
      await a.put(old);
      assert.equal(await b.get(old.kind, old.id), undefined);
      assert.equal(await b.getByUid(old.kind, "u-old"), undefined);
      assert.deepEqual(await b.list(old.kind, { tenant: "t-exp" }, 10), []);
      assert.ok((await b.sweep(Date.now())) >= 1);
    });

    test("add: of 20 concurrent adds of one key over two handles, exactly one wins", async () => {
      const { a, b } = await open();
      const rec = asRecord({ kind: "Rotation" });
      const wins = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).add({ ...rec, payload: String(i) })),
      );
      assert.equal(wins.filter(Boolean).length, 1);
      const stored = await a.get(rec.kind, rec.id);
      assert.equal(stored?.payload, String(wins.indexOf(true)));
    });

    test("add replaces an expired record of the same key", async () => {
      const { a, b } = await open();
      const rec = asRecord({ kind: "Rotation", expiresAt: Date.now() - 5 });
      await a.put(rec);
      assert.equal(await b.add({ ...rec, payload: "new", expiresAt: Date.now() + 60_000 }), true);
      assert.equal((await a.get(rec.kind, rec.id))?.payload, "new");
    });

    test("consume: once; 20 concurrent consumers over two handles, one winner; the time is kept", async () => {
      const { a, b } = await open();
      const rec = asRecord({ kind: "AuthorizationCode" });
      await a.put(rec);
      const wins = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).consume(rec.kind, rec.id, 1234)),
      );
      assert.equal(wins.filter(Boolean).length, 1);
      assert.equal((await b.get(rec.kind, rec.id))?.consumedAt, 1234);
      assert.equal(await a.consume(rec.kind, "absent", 1), false);
    });

    test("revokeGrant deletes every record of the grant and is remembered until its end", async () => {
      const { a, b } = await open();
      const gid = `g-${Math.random().toString(36).slice(2)}`;
      const recs = [
        asRecord({ grantId: gid }),
        asRecord({ kind: "AuthorizationCode", grantId: gid }),
        asRecord({ kind: "Grant", id: gid, grantId: null }),
      ];
      const other = asRecord({ grantId: "other" });
      for (const r of [...recs, other]) await a.put(r);
      const before = Date.now();
      assert.equal(await b.revokeGrant(gid, before, before + 60_000), 3);
      for (const r of recs) assert.equal(await a.get(r.kind, r.id), undefined);
      assert.ok(await a.get(other.kind, other.id), "another grant's records stay");
      await a.revokeToken("jti-1", before, before + 60_000);
      const revs = await a.revocations(before);
      assert.deepEqual(
        revs.map((r) => r.id).filter((id) => id === `grant:${gid}` || id === "jti:jti-1"),
        [`grant:${gid}`, "jti:jti-1"].sort((x, y) => (x < y ? -1 : 1)),
      );
      assert.equal((await b.revocations(before + 1)).filter((r) => r.id === `grant:${gid}`).length, 0);
      await b.revokeToken("jti-old", 1, 2);
      await a.sweep(Date.now());
      assert.equal(
        (await a.revocations(0)).some((r) => r.id === "jti:jti-old"),
        false,
        "swept after its end",
      );
    });

    test("list filters by kind, tenant, subject and client, newest first", async () => {
      const { a, b } = await open();
      const t = `t-${Math.random().toString(36).slice(2)}`;
      const g1 = asRecord({ kind: "Grant", tenant: t, subject: "alice", clientId: "c1" });
      const g2 = asRecord({ kind: "Grant", tenant: t, subject: "bob", clientId: "c2" });
      await a.put(g1);
      await a.put(g2);
      assert.deepEqual(
        (await b.list("Grant", { tenant: t }, 10)).map((r) => r.id),
        [g2.id, g1.id],
      );
      assert.deepEqual(
        (await b.list("Grant", { tenant: t, subject: "alice" }, 10)).map((r) => r.id),
        [g1.id],
      );
      assert.deepEqual(
        (await b.list("Grant", { clientId: "c2", tenant: t }, 10)).map((r) => r.id),
        [g2.id],
      );
      assert.equal((await b.list("Grant", { tenant: t }, 1)).length, 1);
    });
  });
}
