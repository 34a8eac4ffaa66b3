/**
 * The audit log with a memory store: batching, spool on store failure and in-order replay, spool
 * cap → accepting() false, restart (heads and spool picked up), tamper detection.
 */
import assert from "node:assert/strict";
import { appendFileSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { Writable } from "node:stream";
import { test } from "node:test";
import { draftsFromRequestEnd } from "../../src/audit/events.ts";
import { AuditLog } from "../../src/audit/log.ts";
import type { RequestFacts } from "../../src/observability/channels.ts";
import type { Route } from "../../src/upstream/types.ts";
import { argsPolicy, type AuditDraft } from "../../src/audit/record.ts";
import { MemoryAuditStore } from "../../src/store/memory/audit.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { tempDir } from "../helpers/edge.ts";

const log = createLogger({
  level: "silent",
  destination: new Writable({ write: (_c, _e, cb) => cb() }),
});

function draft(i: number, tenant: string | null = "acme"): AuditDraft {
  return {
    time: new Date(1_700_000_000_000 + i).toISOString(),
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
    rawArgs: { i },
  };
}

async function open(store: MemoryAuditStore, spoolPath: string, extra: { spoolMaxBytes?: number } = {}) {
  return AuditLog.open({
    store,
    spoolPath,
    flushInterval: 60_000,
    retryInterval: 0,
    args: argsPolicy({ mode: "digest" }),
    log,
    ...extra,
  });
}

const targets = async (store: MemoryAuditStore) =>
  (await store.query({}, { limit: 1000 })).records.map((r) => r.target);

test("records are written in order per flush and chained per tenant", async () => {
  const store = new MemoryAuditStore();
  const audit = await open(store, path.join(tempDir(), "spool.jsonl"));
  for (let i = 0; i < 5; i++) audit.enqueue(draft(i, i % 2 ? "globex" : "acme"));
  assert.equal((await store.query({}, { limit: 10 })).records.length, 0, "nothing before a flush");
  await audit.flush();
  assert.deepEqual(await targets(store), ["t0", "t1", "t2", "t3", "t4"]);
  const report = await audit.verify();
  assert.equal(report.ok, true);
  assert.deepEqual(
    report.chains.map((c) => [c.chain, c.records]),
    [
      ["acme", 3],
      ["globex", 2],
    ],
  );
  await audit.close();
});

test("store down: batches spool (fsynced JSON lines); back up: replayed in order, then new ones", async () => {
  const store = new MemoryAuditStore();
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
  const lines = readFileSync(spoolPath, "utf8").trim().split("\n");
  assert.equal(lines.length, 3);
  for (const l of lines) JSON.parse(l);
  store.failing = false;
  audit.enqueue(draft(4));
  await audit.flush();
  assert.deepEqual(await targets(store), ["t0", "t1", "t2", "t3", "t4"]);
  assert.equal(audit.stats().spooled, 0);
  assert.equal(readFileSync(spoolPath, "utf8"), "");
  assert.equal((await audit.verify()).ok, true);
  await audit.close();
});

test("spool full and store down: accepting() is false; nothing is lost once the store returns", async () => {
  const store = new MemoryAuditStore();
  const audit = await open(store, path.join(tempDir(), "spool.jsonl"), { spoolMaxBytes: 2000 });
  store.failing = true;
  let i = 0;
  while (audit.accepting() && i < 100) {
    audit.enqueue(draft(i++));
    await audit.flush();
  }
  assert.ok(i < 100, "the spool filled up");
  assert.equal(audit.accepting(), false);
  // Refusal records still queue (in memory) while the spool is full.
  for (let j = 0; j < 3; j++) audit.enqueue(draft(i++));
  await audit.flush();
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

test("restart: a new log continues the chains from the store and replays a spool left behind", async () => {
  const store = new MemoryAuditStore();
  const spoolPath = path.join(tempDir(), "spool.jsonl");
  const first = await open(store, spoolPath);
  first.enqueue(draft(0));
  await first.flush();
  store.failing = true;
  first.enqueue(draft(1));
  await first.close(); // spooled, store still down
  assert.equal((await targets(store)).length, 1);
  // A crash mid-append leaves a torn line: it is dropped.
  appendFileSync(spoolPath, '{"hash":"abc","text":"{\\"v\\":1');
  store.failing = false;
  const second = await open(store, spoolPath);
  second.enqueue(draft(2));
  await second.flush();
  assert.deepEqual(await targets(store), ["t0", "t1", "t2"]);
  assert.equal((await second.verify()).ok, true);
  await second.close();
});

test("verify names the record that was edited or deleted, and a truncated tail", async () => {
  const store = new MemoryAuditStore();
  const audit = await open(store, path.join(tempDir(), "spool.jsonl"));
  for (let i = 0; i < 6; i++) audit.enqueue(draft(i));
  await audit.flush();
  const rows = store.rows();
  const original = rows[2]!.text;
  rows[2]!.text = original.replace('"t2"', '"tX"');
  let report = await audit.verify();
  assert.equal(report.ok, false);
  assert.equal(report.chains[0]?.break?.seq, 3);
  assert.match(report.chains[0]?.break?.reason ?? "", /altered/);
  rows[2]!.text = original;
  rows.splice(3, 1); // delete seq 4
  report = await audit.verify();
  assert.equal(report.chains[0]?.break?.seq, 4);
  assert.match(report.chains[0]?.break?.reason ?? "", /missing/);
  rows.splice(3); // keep seq 1..3: the tail the edge wrote is gone
  report = await audit.verify();
  assert.equal(report.ok, false);
  assert.match(report.chains[0]?.break?.reason ?? "", /records 4\.\.6 missing/);
  await audit.close();
});

test("the spool file is created 0600 and only ever appended to", async () => {
  const dir = tempDir();
  const spoolPath = path.join(dir, "spool.jsonl");
  const store = new MemoryAuditStore();
  const audit = await open(store, spoolPath);
  store.failing = true;
  audit.enqueue(draft(0));
  await audit.flush();
  const before = readFileSync(spoolPath, "utf8");
  audit.enqueue(draft(1));
  await audit.flush();
  assert.ok(readFileSync(spoolPath, "utf8").startsWith(before));
  assert.equal(statSync(spoolPath).mode & 0o777, 0o600);
  await audit.close();
});

/** What the pipeline knows of a tools/call about to be forwarded (the write-ahead entry's source). */
function callFacts(requestId: string, id: number): RequestFacts {
  return {
    requestId,
    startedAt: performance.now(),
    route: { name: "github" } as Route,
    httpMethod: "POST",
    headers: {},
    principal: undefined,
    messages: [{ jsonrpc: "2.0", id, method: "tools/call", params: { name: "deploy", arguments: { id } } }],
    session: undefined,
    outcomes: undefined,
    upstream: undefined,
    upstreamAt: undefined,
    egress: undefined,
    clientLeft: false,
  };
}

test("write-ahead: an entry before the call, removed by its record; store down: both spooled, in order", async () => {
  const store = new MemoryAuditStore();
  const spool = path.join(tempDir(), "spool.jsonl");
  const audit = await open(store, spool);
  await audit.ahead(callFacts("req-a", 1));
  assert.deepEqual(
    store.openEntries().map((e) => e.key),
    ["req-a 1"],
  );
  for (const d of draftsFromRequestEnd({
    request: callFacts("req-a", 1),
    status: 200,
    error: undefined,
    durationMs: 3,
  }))
    audit.enqueue(d);
  await audit.flush();
  assert.deepEqual(store.openEntries(), []);
  assert.deepEqual(await targets(store), ["deploy"]);

  store.failing = true;
  await audit.ahead(callFacts("req-b", 2));
  assert.match(readFileSync(spool, "utf8"), /"open":\{"key":"req-b 2"/, "the entry is spooled");
  for (const d of draftsFromRequestEnd({
    request: callFacts("req-b", 2),
    status: 200,
    error: undefined,
    durationMs: 3,
  }))
    audit.enqueue(d);
  await audit.flush();
  store.failing = false;
  await audit.flush();
  assert.deepEqual(store.openEntries(), [], "the replayed record removed the replayed entry");
  assert.deepEqual(await targets(store), ["deploy", "deploy"]);
  assert.equal((await audit.verify()).ok, true);
  await audit.close();
});

test("write-ahead: entries a stopped process left (stored or spooled) become records with outcome unknown", async () => {
  const store = new MemoryAuditStore();
  const spool = path.join(tempDir(), "spool.jsonl");
  const first = await open(store, spool);
  await first.ahead(callFacts("req-c", 3));
  store.failing = true;
  await first.ahead(callFacts("req-d", 4));
  // The process dies here: no record of either call, one entry stored, one spooled.
  first.unsubscribe();
  store.failing = false;
  const second = await open(store, spool);
  const records = (await store.query({}, { limit: 10 })).records;
  assert.deepEqual(
    records.map((r) => [r.requestId, r.outcome]),
    [
      ["req-c", { kind: "unknown" }],
      ["req-d", { kind: "unknown" }],
    ],
  );
  assert.deepEqual(store.openEntries(), []);
  assert.equal((await second.verify()).ok, true);
  await second.close();
});
