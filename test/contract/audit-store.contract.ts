/**
 * The AuditStore contract: every implementation (memory, SQLite, and later PostgreSQL) runs this
 * same suite.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { chainRecord, verifyChains } from "../../src/audit/chain.ts";
import { type Heads } from "../../src/store/types.ts";
import type { FinalRecord } from "../../src/audit/record.ts";
import type { AuditStore, ChainedRecord, OpenCall } from "../../src/store/types.ts";

let clock = Date.parse("2026-01-01T00:00:00Z");

export function final(overrides: Partial<FinalRecord> = {}): FinalRecord {
  clock += 1000;
  return {
    time: new Date(clock).toISOString(),
    type: "call",
    tenant: "acme",
    subject: "ci",
    principal: "key:github:acme:ci",
    auth: "apiKey",
    clientId: null,
    keyId: "k1",
    session: "abc",
    server: "github",
    instance: "http://10.0.0.5:3000/mcp",
    method: "tools/call",
    target: "search",
    rpcId: "1",
    args: { digest: "sha256:00" },
    decision: "allowed",
    code: null,
    status: 200,
    outcome: { kind: "result", isError: false },
    latencyMs: 3.2,
    upstreamMs: 2.1,
    requestId: "r1",
    traceId: null,
    detail: null,
    ...overrides,
  };
}

export function chained(heads: Heads, list: Partial<FinalRecord>[]): ChainedRecord[] {
  return list.map((o) => chainRecord(heads, final(o)));
}

export function auditStoreContract(name: string, open: () => Promise<AuditStore>): void {
  describe(`AuditStore contract: ${name}`, () => {
    test("append then query returns the records in order, as hashed", async () => {
      const store = await open();
      const batch = chained(new Map(), [{ target: "a" }, { target: "b" }, { tenant: "globex", target: "c" }]);
      await store.append(batch);
      const page = await store.query({}, { limit: 10 });
      assert.deepEqual(
        page.records,
        batch.map((c) => c.record),
      );
      assert.equal(page.more, false);
      await store.close();
    });

    test("heads are the last record of every chain; chains are listed", async () => {
      const store = await open();
      const heads: Heads = new Map();
      const batch = chained(heads, [{}, {}, { tenant: null }, { tenant: "globex" }, {}]);
      await store.append(batch);
      assert.deepEqual(await store.heads(), heads);
      assert.deepEqual(await store.chains(), ["", "acme", "globex"]);
      await store.close();
    });

    test("a record already stored (same chain and seq) is skipped: replay is idempotent", async () => {
      const store = await open();
      const batch = chained(new Map(), [{}, {}, {}]);
      await store.append(batch.slice(0, 2));
      await store.append(batch);
      assert.equal((await store.query({}, { limit: 10 })).records.length, 3);
      assert.equal((await verifyChains(store)).ok, true);
      await store.close();
    });

    test("filters: tenant, subject, tool, type, since/until", async () => {
      const store = await open();
      const batch = chained(new Map(), [
        { target: "search", subject: "alice" },
        { target: "delete", subject: "bob" },
        { tenant: "globex", target: "search" },
        { type: "session.start", method: null, target: null },
      ]);
      await store.append(batch);
      const q = async (f: Parameters<AuditStore["query"]>[0]) =>
        (await store.query(f, { limit: 10 })).records.map((r) => r.seq + (r.tenant ?? "") + (r.target ?? ""));
      assert.deepEqual(await q({ tenant: "acme" }), ["1acmesearch", "2acmedelete", "3acme"]);
      assert.deepEqual(await q({ tool: "search" }), ["1acmesearch", "1globexsearch"]);
      assert.deepEqual(await q({ subject: "bob" }), ["2acmedelete"]);
      assert.deepEqual(await q({ type: "session.start" }), ["3acme"]);
      const t1 = Date.parse(batch[1]!.record.time);
      assert.deepEqual(await q({ since: t1, until: t1 + 1 }), ["2acmedelete"]);
      await store.close();
    });

    test("cursor paging (asc and desc) visits every record once; asc resumes after new writes", async () => {
      const store = await open();
      const heads: Heads = new Map();
      await store.append(
        chained(
          heads,
          Array.from({ length: 25 }, (_, i) => ({ target: `t${i}` })),
        ),
      );
      const seen: string[] = [];
      let cursor: string | undefined;
      for (;;) {
        const page = await store.query({}, { limit: 10, ...(cursor !== undefined ? { cursor } : {}) });
        seen.push(...page.records.map((r) => r.target as string));
        if (!page.more) {
          cursor = page.next ?? undefined;
          break;
        }
        cursor = page.next ?? undefined;
      }
      assert.deepEqual(
        seen,
        Array.from({ length: 25 }, (_, i) => `t${i}`),
      );
      await store.append(chained(heads, [{ target: "later" }]));
      const after = await store.query({}, { limit: 10, ...(cursor !== undefined ? { cursor } : {}) });
      assert.deepEqual(
        after.records.map((r) => r.target),
        ["later"],
      );
      const desc: string[] = [];
      let dc: string | undefined;
      for (;;) {
        const page = await store.query(
          {},
          { limit: 7, order: "desc", ...(dc !== undefined ? { cursor: dc } : {}) },
        );
        desc.push(...page.records.map((r) => r.target as string));
        if (!page.more || page.next === null) break;
        dc = page.next;
      }
      assert.equal(desc.length, 26);
      assert.equal(desc[0], "later");
      assert.equal(desc.at(-1), "t0");
      await store.close();
    });

    test("write-ahead entries: stored once, removed by the call's record, other writers' listed", async () => {
      const store = await open();
      const opened = (requestId: string, rpcId: string, instance: string): OpenCall => ({
        key: `${requestId} ${rpcId}`,
        instance,
        at: Date.now(),
        record: JSON.stringify(final({ requestId, rpcId, outcome: { kind: "unknown" } })),
      });
      await store.openCalls([opened("q1", "1", "w1"), opened("q1", "2", "w1"), opened("q2", "1", "w2")]);
      // Stored again (a spool replay): kept once.
      await store.openCalls([opened("q1", "1", "w1")]);
      const keys = async (instance: string) =>
        (await store.orphanCalls(instance, 0, 100)).map((o) => o.key).sort();
      // A writer never lists its own entries as orphans.
      assert.deepEqual(await keys("w1"), ["q2 1"]);
      assert.deepEqual(await keys("w3"), ["q1 1", "q1 2", "q2 1"]);
      // The record of call q1/1 replaces its entry; a record of another type or call does not.
      await store.append(
        chained(new Map(), [
          { requestId: "q1", rpcId: "1" },
          { requestId: "q2", rpcId: "1", type: "request" },
        ]),
      );
      assert.deepEqual(await keys("w3"), ["q1 2", "q2 1"]);
      const entry = (await store.orphanCalls("w3", 0, 100)).find((o) => o.key === "q1 2");
      assert.equal(entry?.instance, "w1");
      assert.equal((JSON.parse(entry?.record ?? "{}") as FinalRecord).rpcId, "2");
      assert.equal((await store.orphanCalls("w3", 0, 1)).length, 1, "at most `limit`");
      // A request's entries move to the writer that took its stream over (and only that request's).
      const adopted = await store.adoptCalls("q1", "w9");
      assert.deepEqual(
        adopted.map((o) => [o.key, o.instance]),
        [["q1 2", "w9"]],
      );
      assert.deepEqual(await keys("w9"), ["q2 1"]);
    });

    test("scan returns one chain's rows by seq with the exact hashed text", async () => {
      const store = await open();
      const batch = chained(new Map(), [{}, { tenant: "globex" }, {}]);
      await store.append(batch);
      const rows = await store.scan("acme", 0, 10);
      assert.deepEqual(
        rows.map((r) => [r.seq, r.text, r.hash]),
        [batch[0]!, batch[2]!].map((c) => [c.record.seq, c.text, c.record.hash]),
      );
      assert.deepEqual(
        (await store.scan("acme", 1, 10)).map((r) => r.seq),
        [2],
      );
      assert.equal((await verifyChains(store)).ok, true);
      await store.close();
    });
  });
}

/**
 * The chaining contract: stores that chain on their side (`appendChained`, several writers) run
 * this suite besides the one above.
 */
export function auditChainingContract(name: string, open: () => Promise<AuditStore>): void {
  const appendChained = (store: AuditStore) => {
    assert.ok(store.appendChained, `${name} chains on the store side`);
    return store.appendChained.bind(store);
  };

  describe(`AuditStore chaining contract: ${name}`, () => {
    test("write-ahead entries of a writer with a fresh heartbeat are not orphans; its record removes them", async () => {
      const store = await open();
      const record = final({ requestId: "live", rpcId: "7", outcome: { kind: "unknown" } });
      await store.openCalls([
        { key: "live 7", instance: "alive", at: Date.now(), record: JSON.stringify(record) },
      ]);
      await store.seen("alive");
      assert.deepEqual(await store.orphanCalls("other", 60_000, 10), []);
      // Gone (a clean stop), or not seen for longer than the bound: its entries are orphans.
      await store.gone("alive");
      assert.deepEqual(
        (await store.orphanCalls("other", 60_000, 10)).map((o) => o.key),
        ["live 7"],
      );
      await appendChained(store)([final({ requestId: "live", rpcId: "7" })], { keys: ["k-live"] });
      assert.deepEqual(await store.orphanCalls("other", 0, 10), []);
    });

    test("appendChained chains after the committed heads, per tenant, and returns the records as stored", async () => {
      const store = await open();
      const append = appendChained(store);
      const first = await append([final({ target: "a" }), final({ tenant: "globex", target: "b" })]);
      assert.deepEqual(
        first.map((c) => [c.record.chain, c.record.seq]),
        [
          ["acme", 1],
          ["globex", 1],
        ],
      );
      // Records stored chained by someone else (append) are the heads the next ones follow.
      const heads: Heads = await store.heads();
      await store.append(chained(heads, [{ target: "c" }]));
      const next = await append([final({ target: "d" }), final({ tenant: null, target: "e" })]);
      assert.deepEqual(
        next.map((c) => [c.record.chain, c.record.seq]),
        [
          ["acme", 3],
          ["", 1],
        ],
      );
      const page = await store.query({}, { limit: 10 });
      assert.deepEqual(
        page.records.map((r) => r.target),
        ["a", "b", "c", "d", "e"],
      );
      assert.deepEqual(
        page.records.filter((r) => r.target === "d"),
        [next[0]?.record],
      );
      assert.equal((await verifyChains(store)).ok, true);
      await store.close();
    });

    test("a retried batch with write keys stores each record once, in order, after what came between", async () => {
      const store = await open();
      const append = appendChained(store);
      const batch = [final({ target: "a" }), final({ target: "b" })];
      const first = await append(batch, { keys: ["w.1", "w.2"] });
      await append([final({ target: "other" })], { keys: ["x.1"] });
      // The caller did not learn that the first call committed: it retries, with one record more.
      const again = await append([...batch, final({ target: "c" })], {
        keys: ["w.1", "w.2", "w.3"],
        retry: true,
      });
      assert.deepEqual(
        again.slice(0, 2).map((c) => c.record),
        first.map((c) => c.record),
      );
      assert.deepEqual(
        again.map((c) => c.record.seq),
        [1, 2, 4],
      );
      const targets = (await store.query({}, { limit: 10 })).records.map((r) => r.target);
      assert.deepEqual(targets, ["a", "b", "other", "c"]);
      // All stored already: nothing is written, everything is returned.
      const none = await append(batch, { keys: ["w.1", "w.2"], retry: true });
      assert.deepEqual(
        none.map((c) => c.record.hash),
        first.map((c) => c.record.hash),
      );
      assert.equal((await store.query({}, { limit: 10 })).records.length, 4);
      assert.equal((await verifyChains(store)).ok, true);
      await store.close();
    });
  });
}
