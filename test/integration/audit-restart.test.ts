/**
 * Audit under load with real processes:
 *   (a) CALLS tool calls from CLIENTS concurrent clients, with a SIGTERM restart of the edge in the
 *       middle: the audit holds exactly one record per call the clients got an answer to, matched by
 *       the edge's request id and by a unique argument (through its digest), no record the clients
 *       did not cause, and the hash chain verifies across the restart.
 *   SIGKILL: after a kill, every call answered more than one flush interval before it is recorded,
 *       and the chain continues after the restart.
 * The product's target, 10 000 calls from 200 clients, runs by default (about 8 s here);
 * AUDIT_CALLS and AUDIT_CLIENTS scale it.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { AuditRecord } from "../../src/audit/record.ts";
import { type EdgeConfigDoc, freePort, type SpawnedEdge, spawnEdge, tempDir } from "../helpers/edge.ts";
import { type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

/** A load client's pause before it retries a refused call (its backoff, not a wait for an event). */
const retryPause = () => sleep(50);

const CALLS = Number(process.env.AUDIT_CALLS ?? 10_000);
const CLIENTS = Number(process.env.AUDIT_CLIENTS ?? 200);
const ADMIN_TOKEN = "test-admin-token-0123456789abcdef-0123456789";

let upstream: SpawnedFixture;
let edge: SpawnedEdge;
let doc: EdgeConfigDoc;
let dir: string;
let base: string;
let admin: string;
let key: string;

before(async () => {
  upstream = await spawnFixture("test/fixtures/conformance-server.ts");
  dir = tempDir();
  const [port, adminPort] = [await freePort(), await freePort()];
  doc = {
    listen: { host: "127.0.0.1", port },
    admin: { listen: { host: "127.0.0.1", port: adminPort }, token: ADMIN_TOKEN },
    drain: { timeout: "10s" },
    servers: { github: { route: "/mcp", upstream: { urls: [upstream.url] }, auth: ["apiKey"] } },
  };
  edge = await spawnEdge(doc, dir);
  base = edge.baseUrl;
  admin = edge.adminUrl;
  const res = await fetch(`${admin}/api/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "load", server: "github", tenant: "acme" }),
  });
  assert.equal(res.status, 201);
  key = ((await res.json()) as { key: string }).key;
});

after(async () => {
  await edge?.stop();
  await upstream?.stop();
});

const digest = (arg: string) =>
  `sha256:${createHash("sha256")
    .update(JSON.stringify({ k: arg }))
    .digest("hex")}`;

async function post(body: object, sessionId?: string) {
  const res = await fetch(`${base}/mcp`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      authorization: `Bearer ${key}`,
      ...(sessionId ? { "mcp-session-id": sessionId, "mcp-protocol-version": "2025-11-25" } : {}),
    },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
  await res.text();
  return {
    status: res.status,
    requestId: res.headers.get("x-mcp-edge-request-id"),
    sid: res.headers.get("mcp-session-id"),
  };
}

function initialize(): Promise<string> {
  return waitFor(
    async () => {
      const r = await post({
        jsonrpc: "2.0",
        id: 0,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "load", version: "1" },
        },
      });
      if (r.status !== 200 || !r.sid) return undefined; // the edge is restarting
      await post({ jsonrpc: "2.0", method: "notifications/initialized" }, r.sid);
      return r.sid;
    },
    { what: "an initialized session (the edge may be restarting)", timeout: 60_000, interval: 100 },
  );
}

/** The client's own log: every attempt, with what it saw. */
interface Attempt {
  arg: string;
  status: number | null;
  requestId: string | null;
}

async function allRecords(filter = ""): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  let cursor: string | undefined;
  for (;;) {
    const res = await fetch(`${admin}/api/audit?limit=1000${filter}${cursor ? `&cursor=${cursor}` : ""}`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(res.status, 200);
    const page = (await res.json()) as { records: AuditRecord[]; next: string; more: boolean };
    out.push(...page.records);
    if (!page.more) return out;
    cursor = page.next;
  }
}

async function verify(): Promise<{ ok: boolean; chains: unknown[] }> {
  const res = await fetch(`${admin}/api/audit/verify`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  return (await res.json()) as { ok: boolean; chains: unknown[] };
}

test(`(a) ${CALLS} calls from ${CLIENTS} clients with a SIGTERM restart: one record per call, chain verifies`, async () => {
  const log: Attempt[] = [];
  let done = 0;
  let restarted: Promise<void> | undefined;
  const restartAt = Math.floor(CALLS * 0.4);
  const client = async (c: number, calls: number) => {
    let sid = await initialize();
    for (let n = 0; n < calls;) {
      const arg = `c${c}-n${n}-a${log.length}`;
      const attempt: Attempt = { arg, status: null, requestId: null };
      log.push(attempt);
      try {
        const r = await post(
          {
            jsonrpc: "2.0",
            id: n + 1,
            method: "tools/call",
            params: { name: "test_simple_text", arguments: { k: arg } },
          },
          sid,
        );
        attempt.status = r.status;
        attempt.requestId = r.requestId;
        if (r.status === 200) {
          n++;
          if (++done === restartAt) {
            restarted = (async () => {
              assert.equal(await edge.stop(), 0);
              edge = await spawnEdge(doc, dir);
            })();
          }
        } else if (r.status === 404) sid = await initialize();
        else await retryPause(); // a 503 while the edge drains
      } catch {
        await retryPause(); // no answer: the edge is restarting
      }
    }
  };
  const share = Math.floor(CALLS / CLIENTS);
  await Promise.all(
    Array.from({ length: CLIENTS }, (_, c) =>
      client(c, c === CLIENTS - 1 ? CALLS - share * (CLIENTS - 1) : share),
    ),
  );
  await restarted;
  assert.equal(done, CALLS);

  const records = (await allRecords("&tool=test_simple_text")).filter((r) => r.type === "call");
  const byDigest = new Map<string, AuditRecord[]>();
  for (const r of records) {
    const d = r.args?.digest as string;
    byDigest.set(d, [...(byDigest.get(d) ?? []), r]);
  }
  const known = new Set(log.map((a) => digest(a.arg)));
  let answered = 0;
  for (const a of log) {
    const got = byDigest.get(digest(a.arg)) ?? [];
    if (a.status !== null) {
      answered++;
      assert.equal(got.length, 1, `exactly one record for ${a.arg} (status ${a.status})`);
      assert.equal(got[0]?.requestId, a.requestId);
      assert.equal(got[0]?.status, a.status);
    } else {
      assert.ok(got.length <= 1, `at most one record for ${a.arg} (no answer)`);
    }
  }
  for (const r of records)
    assert.ok(known.has(r.args?.digest as string), "no record the clients did not cause");
  assert.ok(answered >= CALLS);
  assert.ok(records.length >= CALLS);
  const v = await verify();
  assert.equal(v.ok, true, JSON.stringify(v));
  // Both runs wrote to the same chain: the restart continued it.
  assert.ok(edge.output().includes("mcp-edge listening"));
});

test("SIGKILL: every call answered more than a flush interval before the kill is recorded", async () => {
  const sid = await initialize();
  const args: string[] = [];
  for (let i = 0; i < 100; i++) {
    const arg = `kill-${i}`;
    const r = await post(
      {
        jsonrpc: "2.0",
        id: i + 1,
        method: "tools/call",
        params: { name: "test_simple_text", arguments: { k: arg } },
      },
      sid,
    );
    assert.equal(r.status, 200);
    args.push(arg);
  }
  // Under test: a call answered more than one flush interval (100 ms) before a SIGKILL is on disk.
  await sleep(300);
  await edge.kill();
  edge = await spawnEdge(doc, dir);
  const digests = new Set((await allRecords("&tool=test_simple_text")).map((r) => r.args?.digest));
  for (const a of args) assert.ok(digests.has(digest(a)), `${a} recorded`);
  const after = await post(
    {
      jsonrpc: "2.0",
      id: 999,
      method: "tools/call",
      params: { name: "test_simple_text", arguments: { k: "after-kill" } },
    },
    sid,
  );
  assert.equal(after.status, 200);
  assert.equal((await verify()).ok, true);
});
