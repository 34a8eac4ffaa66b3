/**
 * The IdentityKeyStore contract (src/store/types.ts): every implementation (SQLite for one
 * instance, PostgreSQL shared by a fleet) stores identity-signing keys as given, lists them newest
 * first, and serializes rotation: of the instances that find it due from the same view, one stores
 * its key. The factory gives two handles on the same storage (two instances when the store is
 * shared; the same file twice for SQLite).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { IdentityKey, IdentityKeyStore } from "../../src/store/types.ts";

export interface IdentityKeyStores {
  a: IdentityKeyStore;
  b: IdentityKeyStore;
}

export function identityKey(kid: string, createdAt: number): IdentityKey {
  return {
    kid,
    privateJwk: JSON.stringify({ kty: "EC", crv: "P-256", kid, d: `d-${kid}`, x: "x", y: "y" }),
    publicJwk: JSON.stringify({ kty: "EC", crv: "P-256", kid, x: "x", y: "y" }),
    createdAt,
  };
}

export function identityKeyStoreContract(
  name: string,
  shared: boolean,
  open: () => Promise<IdentityKeyStores>,
): void {
  describe(`IdentityKeyStore contract: ${name}`, () => {
    test("`shared` says whether other instances use the same keys", async () => {
      const { a } = await open();
      assert.equal(a.shared, shared);
    });

    test("insertIfDue stores a key unless one newer than `since` exists; list is newest first", async () => {
      const { a: store } = await open();
      assert.deepEqual(await store.list(), []);
      assert.equal(await store.insertIfDue(identityKey("a", 1000), 0), true);
      // Another instance finds rotation due from the same view: a key newer than its `since` exists.
      assert.equal(await store.insertIfDue(identityKey("b", 1001), 500), false);
      assert.equal(await store.insertIfDue(identityKey("c", 5000), 1000), true);
      assert.deepEqual(
        (await store.list()).map((k) => [k.kid, k.createdAt]),
        [
          ["c", 5000],
          ["a", 1000],
        ],
      );
    });

    test("a key reads back exactly as stored (JWK text included), through the other handle too", async () => {
      const { a, b } = await open();
      const k = identityKey("k1", 1_700_000_000_123);
      assert.equal(await a.insertIfDue(k, 0), true);
      assert.deepEqual(await a.list(), [k]);
      assert.deepEqual(await b.list(), [k]);
    });

    test("rotation is serialized: of two handles that find it due from the same view, one stores", async () => {
      const { a, b } = await open();
      assert.equal(await a.insertIfDue(identityKey("first", 1000), 0), true);
      const results = await Promise.all([
        a.insertIfDue(identityKey("from-a", 9000), 1000),
        b.insertIfDue(identityKey("from-b", 9001), 1000),
      ]);
      assert.equal(results.filter(Boolean).length, 1, `exactly one stored: ${JSON.stringify(results)}`);
      const listed = (await b.list()).map((k) => k.kid);
      assert.equal(listed.length, 2);
      assert.equal(listed[1], "first");
      assert.equal(listed[0], results[0] ? "from-a" : "from-b");
    });

    test("a key older than the newest is still stored when nothing newer than `since` exists", async () => {
      const { a } = await open();
      assert.equal(await a.insertIfDue(identityKey("new", 5000), 0), true);
      // `since` is the caller's view: 6000 is after every stored key, so this one goes in.
      assert.equal(await a.insertIfDue(identityKey("late", 4000), 6000), true);
      assert.deepEqual(
        (await a.list()).map((k) => k.kid),
        ["new", "late"],
      );
    });
  });
}
