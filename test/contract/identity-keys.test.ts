/**
 * Identity-signing keys: the IdentityKeyStore contract
 * (identity-key-store.contract.ts) against SQLite and a real PostgreSQL, and IdentitySigner over them. With PostgreSQL, several signers (one
 * pool each: several instances) share the keys: instances starting at once create one key, all
 * publish the same JWKS, a token of one verifies against another's JWKS, a rotation made by one is
 * signed with by all at the same moment (after every instance published it).
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { type IdentityOptions, IdentitySigner } from "../../src/auth/identity.ts";
import { SqliteIdentityKeyStore } from "../../src/store/sqlite/identity-keys.ts";
import { PostgresIdentityKeyStore } from "../../src/store/postgres/identity-keys.ts";
import type { Principal } from "../../src/auth/types.ts";
import { postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { identityKeyStoreContract } from "./identity-key-store.contract.ts";

const pg = postgresFixture();
const skip = await postgresSkipReason();

const principal = {
  id: "key:github:acme:ci",
  method: "apiKey",
  tenant: "acme",
  subject: "ci",
  scopes: ["mcp:tools"],
  keyId: "k1",
} as unknown as Principal;

const DAY = 86_400_000;
const options: IdentityOptions = { issuer: "https://edge.example", ttl: 120_000, rotateEvery: 7 * DAY };

async function verifies(token: string, signer: IdentitySigner, now = Date.now()): Promise<void> {
  const { payload } = await jwtVerify(token, createLocalJWKSet(signer.jwks(now)), {
    issuer: options.issuer,
    audience: "github",
    currentDate: new Date(now),
  });
  assert.equal(payload.tenant, "acme");
  assert.equal(payload.sub, "ci");
}

const kidOf = (token: string) => decodeProtectedHeader(token).kid;
const kids = (signer: IdentitySigner, now?: number) => signer.jwks(now).keys.map((k) => k.kid);

identityKeyStoreContract("sqlite", false, async () => {
  const db = new DatabaseSync(":memory:");
  return { a: new SqliteIdentityKeyStore(db), b: new SqliteIdentityKeyStore(db) };
});

test("sqlite signer: the first start creates a key, a restart keeps it, rotation signs with the new key at once", async () => {
  const db = new DatabaseSync(":memory:");
  const first = await IdentitySigner.open(new SqliteIdentityKeyStore(db), options);
  const [kid] = kids(first);
  const token = await first.token(principal, "github", "s1");
  assert.equal(kidOf(token), kid);
  await verifies(token, first);
  const second = await IdentitySigner.open(new SqliteIdentityKeyStore(db), options);
  assert.deepEqual(kids(second), [kid]);
  await verifies(token, second);
  // A week later: a new key, used at once (one instance: nobody else has to publish it first).
  const later = Date.now() + 7 * DAY + 1000;
  const rotated = await second.token(principal, "github", "s1", later);
  assert.notEqual(kidOf(rotated), kid);
  assert.deepEqual(kids(second, later), [kidOf(rotated), kid], "the old key stays published");
  await verifies(rotated, second, later);
  assert.equal((await new SqliteIdentityKeyStore(db).list()).length, 2);
});

if (skip !== undefined) {
  test("identity keys on PostgreSQL", { skip }, () => {});
} else {
  identityKeyStoreContract("postgres", true, async () => {
    // Two pools on one schema: two instances of a fleet.
    const schema = pg.schema();
    const [a, b] = await Promise.all([pg.open(schema, { max: 2 }), pg.open(schema, { max: 2 })]);
    return { a: new PostgresIdentityKeyStore(a), b: new PostgresIdentityKeyStore(b) };
  });

  test("postgres: instances starting at once on an empty schema create one key; all publish the same JWKS", async () => {
    const schema = pg.schema();
    const dbs = await Promise.all(Array.from({ length: 6 }, () => pg.open(schema, { max: 2 })));
    const signers = await Promise.all(
      dbs.map((db) => IdentitySigner.open(new PostgresIdentityKeyStore(db), options)),
    );
    assert.equal((await new PostgresIdentityKeyStore(dbs[0]!).list()).length, 1);
    const jwks = JSON.stringify(signers[0]!.jwks());
    for (const s of signers) assert.equal(JSON.stringify(s.jwks()), jwks);
    for (const s of signers) s.close();
  });

  test("postgres: a token signed by one instance verifies against another instance's JWKS", async () => {
    const schema = pg.schema();
    const a = await IdentitySigner.open(new PostgresIdentityKeyStore(await pg.open(schema)), options);
    const b = await IdentitySigner.open(new PostgresIdentityKeyStore(await pg.open(schema)), options);
    assert.deepEqual(a.jwks(), b.jwks());
    const fromA = await a.token(principal, "github", "s1");
    const fromB = await b.token(principal, "github", "s2");
    assert.equal(kidOf(fromA), kidOf(fromB), "both sign with the same key");
    await verifies(fromA, b);
    await verifies(fromB, a);
    a.close();
    b.close();
  });

  test("postgres: rotation — one instance creates the key, all publish it before any signs with it, then all switch", async () => {
    const schema = pg.schema();
    const rotateEvery = 10_000;
    // reloadEvery 1 s: a new key is published 2 s before it signs.
    const o = { ...options, rotateEvery, reloadEvery: 1000 };
    const a = await IdentitySigner.open(new PostgresIdentityKeyStore(await pg.open(schema)), o);
    const b = await IdentitySigner.open(new PostgresIdentityKeyStore(await pg.open(schema)), o);
    const store = new PostgresIdentityKeyStore(await pg.open(schema));
    const [k1] = await store.list();
    assert.ok(k1);
    // 8 s after the first key: rotation is due (10 s, less the 2 s of publishing ahead).
    const t = k1.createdAt + 8000;
    const tokA = await a.token(principal, "github", "s1", t);
    assert.equal(kidOf(tokA), k1.kid, "the new key is not used yet");
    const tokB = await b.token(principal, "github", "s1", t);
    assert.equal(kidOf(tokB), k1.kid);
    const stored = await store.list();
    assert.equal(stored.length, 2, "b found rotation due too, but a's key was there: one new key");
    const k2 = stored[0]!;
    assert.deepEqual(kids(a, t), [k2.kid, k1.kid]);
    assert.deepEqual(a.jwks(t), b.jwks(t), "both publish the new key before it signs");
    // 2 s later both sign with it; tokens of either verify against the other's JWKS.
    const t2 = t + 2000;
    const newA = await a.token(principal, "github", "s1", t2);
    const newB = await b.token(principal, "github", "s1", t2);
    assert.equal(kidOf(newA), k2.kid);
    assert.equal(kidOf(newB), k2.kid);
    await verifies(newA, b, t2);
    await verifies(tokA, b, t2 + 1000);
    assert.deepEqual(a.jwks(t2), b.jwks(t2));
    a.close();
    b.close();
  });

  test("postgres: an instance that signs nothing picks up another's new key on its periodic reload", async () => {
    const schema = pg.schema();
    const o = { ...options, rotateEvery: 60_000, reloadEvery: 100 };
    const a = await IdentitySigner.open(new PostgresIdentityKeyStore(await pg.open(schema)), o);
    const idle = await IdentitySigner.open(new PostgresIdentityKeyStore(await pg.open(schema)), o);
    const [k1] = kids(a);
    // a rotates (its clock says the key is due).
    await a.token(principal, "github", "s1", Date.now() + 60_000);
    const [k2] = kids(a, Date.now() + 60_000);
    assert.notEqual(k2, k1);
    assert.deepEqual(kids(idle), [k1]);
    const end = Date.now() + 5000;
    while (!kids(idle).includes(k2) && Date.now() < end) await sleep(50);
    assert.deepEqual(kids(idle), [k2, k1]);
    assert.deepEqual(idle.jwks(), a.jwks());
    a.close();
    idle.close();
  });

  test("postgres: rotation while the database is down keeps signing with the current key", async () => {
    const schema = pg.schema();
    const db = await pg.open(schema, { onError: () => undefined });
    const errors: unknown[] = [];
    const signer = await IdentitySigner.open(new PostgresIdentityKeyStore(db), {
      ...options,
      onError: (err) => errors.push(err),
    });
    const [k1] = kids(signer);
    await db.close(); // the pool is gone: every call fails
    const later = Date.now() + 7 * DAY;
    const token = await signer.token(principal, "github", "s1", later);
    assert.equal(kidOf(token), k1);
    assert.equal(errors.length, 1);
    await assert.rejects(signer.reload());
    assert.deepEqual(kids(signer), [k1], "a failed reload keeps the keys");
    signer.close();
  });
}
