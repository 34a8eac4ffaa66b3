/**
 * PostgresAuditStore against a real PostgreSQL: the AuditStore contract unchanged, a restart, and
 * several writers on one chain (two edge instances appending to the same tenant's chain at once).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { chainRecord, verifyChains } from "../../src/audit/chain.ts";
import { type Heads } from "../../src/store/types.ts";
import { AuditChainConflictError } from "../../src/store/audit-rows.ts";
import { PostgresAuditStore } from "../../src/store/postgres/audit.ts";
import type { FinalRecord } from "../../src/audit/record.ts";
import { postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { auditChainingContract, auditStoreContract, chained, final } from "./audit-store.contract.ts";

const pg = postgresFixture();
const skip = await postgresSkipReason();

if (skip !== undefined) {
  test("AuditStore contract: postgres", { skip }, () => {});
} else {
  auditStoreContract("postgres", async () => new PostgresAuditStore(await pg.open()));
  auditChainingContract("postgres", async () => new PostgresAuditStore(await pg.open()));

  test("postgres: records and chain heads survive closing the pool and reopening (a restart)", async () => {
    const schema = pg.schema();
    const db = await pg.open(schema);
    const first = new PostgresAuditStore(db);
    const heads: Heads = new Map();
    await first.append(chained(heads, [{}, {}, { tenant: "globex" }]));
    await first.close();
    await db.close();
    const second = new PostgresAuditStore(await pg.open(schema));
    assert.deepEqual(await second.heads(), heads);
    assert.equal((await verifyChains(second)).ok, true);
  });

  test("postgres: two writers appending to the same chains at once produce one valid chain per tenant", async () => {
    const schema = pg.schema();
    // Two pools: two edge instances.
    const writers = [
      new PostgresAuditStore(await pg.open(schema)),
      new PostgresAuditStore(await pg.open(schema)),
    ];
    const tenants = ["acme", "globex", null];
    const expected = new Map<string, number>();
    const written: string[][] = [[], []];
    await Promise.all(
      writers.map(async (store, w) => {
        for (let i = 0; i < 40; i++) {
          const batch: FinalRecord[] = Array.from({ length: 1 + ((i * 7 + w) % 5) }, (_, j) => {
            const tenant = tenants[(i + j + w) % tenants.length] ?? null;
            expected.set(tenant ?? "", (expected.get(tenant ?? "") ?? 0) + 1);
            return final({ tenant, requestId: `w${w}-${i}-${j}` });
          });
          const out = await store.appendChained(batch);
          assert.deepEqual(
            out.map((c) => c.record.requestId),
            batch.map((r) => r.requestId),
          );
          written[w]?.push(...out.map((c) => c.record.hash));
        }
      }),
    );
    const reader = writers[0] as PostgresAuditStore;
    const report = await verifyChains(reader);
    assert.equal(report.ok, true, JSON.stringify(report.chains.filter((c) => !c.ok)));
    assert.deepEqual(
      new Map(report.chains.map((c) => [c.chain, c.records])),
      new Map([...expected].sort(([a], [b]) => (a < b ? -1 : 1))),
    );
    // Both writers' records are in the chains, interleaved, each exactly once.
    const stored = new Set<string>();
    for (const chain of await reader.chains()) {
      for (const row of await reader.scan(chain, 0, 10_000)) stored.add(row.hash);
    }
    assert.equal(stored.size, (written[0]?.length ?? 0) + (written[1]?.length ?? 0));
    for (const h of [...(written[0] ?? []), ...(written[1] ?? [])]) assert.ok(stored.has(h));
    const acme = await reader.scan("acme", 0, 10_000);
    const authors = acme.map((r) => (JSON.parse(r.text) as { requestId: string }).requestId.slice(0, 2));
    assert.ok(
      authors.some((a, i) => i > 0 && a !== authors[i - 1]),
      "the writers interleaved",
    );
  });

  test("postgres: records chained in memory from a stale head are refused, not skipped or forked", async () => {
    const schema = pg.schema();
    const a = new PostgresAuditStore(await pg.open(schema));
    const b = new PostgresAuditStore(await pg.open(schema));
    const staleHeads = await b.heads(); // b loaded its heads at start ...
    await a.appendChained([final(), final()]); // ... then a wrote to the same chain
    const mine = [chainRecord(staleHeads, final({ requestId: "from-b" }))];
    await assert.rejects(b.append(mine), AuditChainConflictError);
    const rows = await a.scan("acme", 0, 100);
    assert.equal(rows.length, 2);
    assert.equal((await verifyChains(a)).ok, true);
    // The same records chained after the committed head are taken.
    await b.append([chainRecord(await b.heads(), final({ requestId: "from-b" }))]);
    assert.equal((await a.scan("acme", 0, 100)).length, 3);
    assert.equal((await verifyChains(a)).ok, true);
  });
}
