/**
 * PostgresApiKeyStore against a real PostgreSQL: the ApiKeyStore contract, and what distributed
 * mode adds (two instances over one database). Skipped, loudly, when PostgreSQL is absent outside CI.
 */
import assert from "node:assert/strict";
import { mock, test } from "node:test";
import { PostgresApiKeyStore } from "../../src/store/postgres/api-keys.ts";
import { postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { apiKey, apiKeyStoreContract } from "./api-key-store.contract.ts";

const pg = postgresFixture();
const skip = await postgresSkipReason();

if (skip !== undefined) {
  test("ApiKeyStore contract: postgres", { skip }, () => {});
} else {
  apiKeyStoreContract("postgres", async () => new PostgresApiKeyStore(await pg.open()));

  test("postgres: two instances share keys; a revocation on one applies on the other within the cache TTL", async () => {
    const schema = pg.schema();
    const a = new PostgresApiKeyStore(await pg.open(schema));
    const b = new PostgresApiKeyStore(await pg.open(schema));
    const r = apiKey();
    await a.insert(r);
    assert.deepEqual(await b.get(r.id), r);
    await a.update(r.id, { revokedAt: 1234 });
    await new Promise((res) => setTimeout(res, 1050));
    assert.equal((await b.get(r.id))?.revokedAt, 1234);
    await a.close();
    await b.close();
  });

  test("postgres: a flush is one multi-row UPDATE; times from two instances only move forward", async () => {
    const schema = pg.schema();
    const dbA = await pg.open(schema);
    const a = new PostgresApiKeyStore(dbA, { touchFlushMs: 60_000 });
    const b = new PostgresApiKeyStore(await pg.open(schema), { touchFlushMs: 60_000 });
    const keys = Array.from({ length: 20 }, (_, i) => apiKey({ createdAt: i }));
    for (const k of keys) await a.insert(k);
    keys.forEach((k, i) => a.touch(k.id, 5000 + i));
    keys.forEach((k) => b.touch(k.id, 1000)); // older uses seen by another instance
    const spy = mock.method(dbA.pool, "query");
    await a.flush();
    assert.equal(spy.mock.callCount(), 1);
    spy.mock.restore();
    await b.flush();
    const used = new Map((await b.list({})).map((k) => [k.id, k.lastUsedAt]));
    assert.deepEqual(
      keys.map((k) => used.get(k.id)),
      keys.map((_, i) => 5000 + i),
    );
    await a.close();
    await b.close();
  });
}
