/**
 * The audit log over a store that chains on its side (`appendChained`, as PostgreSQL does for
 * several writers), with a memory store: several logs on one store, the spool holding unchained
 * records and its replay, a commit the writer did not hear about, spools of the other mode.
 * The same against a real PostgreSQL: test/integration/audit-postgres.test.ts.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Writable } from "node:stream";
import { test } from "node:test";
import { chainRecord } from "../../src/audit/chain.ts";
import { AuditLog } from "../../src/audit/log.ts";
import { argsPolicy, type AuditDraft, finalizeDraft } from "../../src/audit/record.ts";
import { MemoryAuditStore, MemoryChainingAuditStore } from "../../src/store/memory/audit.ts";
import { recordOf } from "../../src/store/audit-rows.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { tempDir } from "../helpers/edge.ts";

const log = createLogger({
  level: "silent",
  destination: new Writable({ write: (_c, _e, cb) => cb() }),
});

function draft(i: number | string, tenant: string | null = "acme"): AuditDraft {
  return {
    time: new Date(1_700_000_000_000 + (typeof i === "number" ? i : 0)).toISOString(),
    type: "call",
    tenant,
    subject: "ci",
    principal: null,
    auth: "apiKey",
    clientId: null,
    keyId: null,
    session: null,
    server: "github",
    instance: null,
    method: "tools/call",
    target: `t${i}`,
    rpcId: String(i),
    decision: "allowed",
    code: null,
    status: 200,
    outcome: { kind: "result", isError: false },
    latencyMs: 1,
    upstreamMs: null,
    requestId: `r${i}`,
    traceId: null,
    detail: null,
    rawArgs: { i, nested: { b: [1, -0, 2.5e-7, "é\u0000"], a: null } },
  };
}

async function open(
  store: MemoryAuditStore,
  spoolPath: string | undefined,
  extra: { spoolMaxBytes?: number } = {},
) {
  return AuditLog.open({
    store,
    ...(spoolPath !== undefined ? { spoolPath } : {}),
    flushInterval: 60_000,
    retryInterval: 0,
    args: argsPolicy({ mode: "full" }),
    log,
    ...extra,
  });
}

const targets = async (store: MemoryAuditStore) =>
  (await store.query({}, { limit: 10_000 })).records.map((r) => r.target);

test("store-side chaining: two logs on one store interleave in the same chains; both verify", async () => {
  const store = new MemoryChainingAuditStore();
  const a = await open(store, path.join(tempDir(), "a.jsonl"));
  const b = await open(store, path.join(tempDir(), "b.jsonl"));
  for (let i = 0; i < 10; i++) {
    a.enqueue(draft(`a${i}`, i % 3 ? "acme" : "globex"));
    b.enqueue(draft(`b${i}`, i % 3 ? "acme" : "globex"));
    await (i % 2 ? a : b).flush();
    await (i % 2 ? b : a).flush();
  }
  const all = await targets(store);
  assert.equal(all.length, 20);
  assert.equal(new Set(all).size, 20);
  for (const audit of [a, b]) {
    const report = await audit.verify();
    assert.equal(report.ok, true, JSON.stringify(report));
    assert.deepEqual(
      report.chains.map((c) => [c.chain, c.records]),
      [
        ["acme", 12],
        ["globex", 8],
      ],
    );
  }
  // head(): the last record this log stored (the other may have appended since).
  const byB = store.rows().filter((r) => r.chain === "acme" && r.text.includes('"requestId":"rb'));
  assert.equal(b.head("acme"), byB.at(-1)?.hash);
  assert.equal(a.stats().written, 10);
  await a.close();
  await b.close();
});

test("store down: the spool holds finalized, unchained records; replayed after what the other writer stored", async () => {
  const store = new MemoryChainingAuditStore();
  const spoolPath = path.join(tempDir(), "spool.jsonl");
  const audit = await open(store, spoolPath);
  audit.enqueue(draft(0));
  await audit.flush();
  store.failing = true;
  for (let i = 1; i <= 3; i++) {
    audit.enqueue(draft(i));
    await audit.flush();
  }
  assert.equal(audit.stats().spooled, 3);
  assert.equal(audit.stats().storeUp, false);
  const lines = readFileSync(spoolPath, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(lines.length, 3);
  for (const l of lines) {
    assert.equal(typeof l.key, "string");
    assert.equal((l.final as { target: string }).target.startsWith("t"), true);
    assert.equal("hash" in l || "seq" in (l.final as object), false, "not chained");
  }
  store.failing = false;
  // Another instance wrote to the chain while this one was cut off.
  const other = await open(store, undefined);
  other.enqueue(draft("x"));
  await other.flush();
  audit.enqueue(draft(4));
  await audit.flush();
  assert.deepEqual(await targets(store), ["t0", "tx", "t1", "t2", "t3", "t4"]);
  assert.equal(audit.stats().spooled, 0);
  assert.equal(readFileSync(spoolPath, "utf8"), "");
  const report = await audit.verify();
  assert.equal(report.ok, true, JSON.stringify(report));
  // Arguments went through the spool as JSON and were hashed after: the stored digest matches.
  const t1 = (await store.query({ tool: "t1" }, { limit: 1 })).records[0];
  const expected = finalizeDraft(draft(1), argsPolicy({ mode: "full" }));
  assert.deepEqual(t1?.args, JSON.parse(JSON.stringify(expected.args)));
  await audit.close();
  await other.close();
});

test("a commit the writer did not hear about (connection lost at COMMIT): the retry stores each record once", async () => {
  for (const spooled of [true, false]) {
    const store = new MemoryChainingAuditStore();
    const audit = await open(store, spooled ? path.join(tempDir(), "spool.jsonl") : undefined);
    for (let i = 0; i < 3; i++) audit.enqueue(draft(i));
    store.failAfterCommit = true;
    await audit.flush();
    assert.equal(audit.stats().storeUp, false);
    assert.equal(spooled ? audit.stats().spooled : audit.stats().queued, 3);
    audit.enqueue(draft(3));
    await audit.flush();
    assert.deepEqual(await targets(store), ["t0", "t1", "t2", "t3"], `spool: ${spooled}`);
    assert.equal(audit.stats().queued + audit.stats().spooled, 0);
    assert.equal((await audit.verify()).ok, true);
    await audit.close();
  }
});

test("spool full while the store is down: accepting() is false; everything lands once it is back", async () => {
  const store = new MemoryChainingAuditStore();
  const audit = await open(store, path.join(tempDir(), "spool.jsonl"), { spoolMaxBytes: 3000 });
  store.failing = true;
  let i = 0;
  while (audit.accepting() && i < 100) {
    audit.enqueue(draft(i++));
    await audit.flush();
  }
  assert.ok(i < 100, "the spool filled up");
  assert.equal(audit.accepting(), false);
  for (let j = 0; j < 3; j++) audit.enqueue(draft(i++));
  await audit.flush();
  assert.equal(audit.stats().queued, 3, "drafts wait in memory while the spool is full");
  store.failing = false;
  await audit.flush();
  assert.equal(audit.accepting(), true);
  assert.deepEqual(
    await targets(store),
    Array.from({ length: i }, (_, k) => `t${k}`),
  );
  assert.equal((await audit.verify()).ok, true);
  await audit.close();
});

test("close flushes what is queued; records left in the spool are replayed at the next start", async () => {
  const store = new MemoryChainingAuditStore();
  const spoolPath = path.join(tempDir(), "spool.jsonl");
  const first = await open(store, spoolPath);
  first.enqueue(draft(0));
  await first.close();
  assert.deepEqual(await targets(store), ["t0"]);
  const second = await open(store, spoolPath);
  store.failing = true;
  second.enqueue(draft(1));
  await second.close(); // spooled, store still down
  store.failing = false;
  const third = await open(store, spoolPath);
  assert.deepEqual(await targets(store), ["t0", "t1"]);
  assert.equal((await third.verify()).ok, true);
  await third.close();
});

test("a spool of chained records (an older version, or one writer) is replayed into a chaining store", async () => {
  const spoolPath = path.join(tempDir(), "spool.jsonl");
  // An embedded run spooled records 2 and 3 of acme (record 1 is stored).
  const embedded = new MemoryAuditStore();
  const writer = await open(embedded, spoolPath);
  writer.enqueue(draft(1));
  await writer.flush();
  embedded.failing = true;
  writer.enqueue(draft(2));
  writer.enqueue(draft(3, "globex"));
  await writer.close();
  // The same records land in a store that chains: the chained lines go in as they were, after
  // the stored record 1; none is lost or doubled.
  const store = new MemoryChainingAuditStore();
  await store.append(embedded.rows().map((r) => ({ record: recordOf(r), text: r.text })));
  const audit = await open(store, spoolPath);
  audit.enqueue(draft(4));
  await audit.flush();
  assert.deepEqual(await targets(store), ["t1", "t2", "t3", "t4"]);
  const report = await audit.verify();
  assert.equal(report.ok, true, JSON.stringify(report));
  await audit.close();
});

test("a spooled chained record whose chain moved on meanwhile is chained again after the stored head", async () => {
  const spoolPath = path.join(tempDir(), "spool.jsonl");
  const store = new MemoryChainingAuditStore();
  const policy = argsPolicy({ mode: "full" });
  // A stale writer chained record 1 of acme in memory and spooled it ...
  const stale = chainRecord(new Map(), finalizeDraft(draft("stale"), policy));
  writeFileSync(spoolPath, `${JSON.stringify({ hash: stale.record.hash, text: stale.text })}\n`);
  // ... while another writer stored record 1 and 2 of acme.
  await store.appendChained([finalizeDraft(draft("a"), policy), finalizeDraft(draft("b"), policy)]);
  const audit = await open(store, spoolPath);
  assert.deepEqual(await targets(store), ["ta", "tb", "tstale"]);
  const rows = store.rows();
  assert.equal(rows.at(-1)?.seq, 3);
  assert.equal((await audit.verify()).ok, true);
  assert.equal(audit.stats().spooled, 0);
  await audit.close();
});

test("one writer reading a spool of unchained records (after a distributed run): chained at start, in order", async () => {
  const spoolPath = path.join(tempDir(), "spool.jsonl");
  const shared = new MemoryChainingAuditStore();
  const first = await open(shared, spoolPath);
  shared.failing = true;
  first.enqueue(draft(1));
  first.enqueue(draft(2, "globex"));
  await first.close();
  assert.match(readFileSync(spoolPath, "utf8"), /"key":/);
  // Embedded now, its store down at start: the spool is rewritten chained, new records follow.
  const store = new MemoryAuditStore();
  store.failing = true;
  const audit = await open(store, spoolPath);
  const lines = readFileSync(spoolPath, "utf8").trim().split("\n");
  assert.equal(lines.length, 2);
  for (const l of lines) assert.equal(typeof (JSON.parse(l) as { hash: unknown }).hash, "string");
  audit.enqueue(draft(3));
  await audit.flush();
  store.failing = false;
  await audit.flush();
  assert.deepEqual(await targets(store), ["t1", "t2", "t3"]);
  const report = await audit.verify();
  assert.equal(report.ok, true, JSON.stringify(report));
  assert.deepEqual(
    report.chains.map((c) => [c.chain, c.records]),
    [
      ["acme", 2],
      ["globex", 1],
    ],
  );
  await audit.close();
});

test("verify while another flush stores more: records stored after a chain was read are not reported missing", async () => {
  const ref: { audit?: AuditLog } = {};
  let once = true;
  class Busy extends MemoryChainingAuditStore {
    override async scan(chain: string, afterSeq: number, limit: number) {
      const rows = await super.scan(chain, afterSeq, limit);
      if (once && ref.audit) {
        once = false;
        ref.audit.enqueue(draft("during"));
        await ref.audit.flush(); // the timer's flush, while verification reads
      }
      return rows;
    }
  }
  const audit = await open(new Busy(), path.join(tempDir(), "spool.jsonl"));
  ref.audit = audit;
  audit.enqueue(draft(0));
  const report = await audit.verify();
  assert.equal(report.ok, true, JSON.stringify(report));
  assert.equal((await audit.verify()).chains[0]?.records, 2);
  await audit.close();
});
