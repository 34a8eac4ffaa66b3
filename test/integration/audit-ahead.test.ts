/**
 * Write-ahead audit with real processes and real SIGKILLs: a call that reached the upstream has
 * an audit record even when its edge dies before the answer.
 *   (a) embedded (SQLite): CALLS slow tool calls in flight (each has received a progress
 *       notification from the upstream) when the edge is SIGKILLed; at the next start every one
 *       of them has a record, outcome `unknown`, and the calls answered before the kill keep
 *       theirs; the chain verifies.
 *   (b) distributed (Redis + PostgreSQL): the same on edge A of two; edge B, alive, records A's
 *       calls once A's heartbeat is stale, without a restart of A; the chains verify.
 * The figures (calls in flight, records found, time from the SIGKILL to the records) go to the
 * test's diagnostics.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import type { AuditRecord } from "../../src/audit/record.ts";
import { ADMIN_TOKEN, type Cluster, startCluster } from "../helpers/cluster/edges.ts";
import { JSON_SSE, sse } from "../helpers/cluster/clients.ts";
import { startUpstreams, type Upstream } from "../helpers/cluster/upstream-fleet.ts";
import { type SpawnedEdge, spawnEdge, tempDir } from "../helpers/edge.ts";
import { postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { waitFor } from "../helpers/wait.ts";

const CALLS = 20;
const TOKEN = "ahead-admin-token-0123456789abcdef-0123456789";

let upstreams: Upstream[] = [];
before(async () => {
  upstreams = await startUpstreams(["a"]);
});
after(async () => {
  await Promise.allSettled(upstreams.map((u) => u.stop()));
});

async function post(url: string, headers: Record<string, string>, body: unknown): Promise<Response> {
  return fetch(url, { method: "POST", headers: { ...JSON_SSE, ...headers }, body: JSON.stringify(body) });
}

/** A session-era session on `url`; returns the headers of its requests. */
async function session(url: string, auth: Record<string, string>): Promise<Record<string, string>> {
  const init = await post(url, auth, {
    jsonrpc: "2.0",
    id: 0,
    method: "initialize",
    params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "ahead", version: "1" } },
  });
  await init.text();
  assert.equal(init.status, 200);
  const sid = init.headers.get("mcp-session-id");
  assert.ok(sid);
  const headers = { ...auth, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" };
  const ack = await post(url, headers, { jsonrpc: "2.0", method: "notifications/initialized" });
  await ack.arrayBuffer();
  return headers;
}

/**
 * Starts `n` slow calls (`steps`, 30 s) and resolves once each has received its first progress
 * notification: each call is then running upstream. The bodies keep being read until they fail.
 */
async function callsInFlight(url: string, headers: Record<string, string>, n: number): Promise<void> {
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const res = await post(url, headers, {
        jsonrpc: "2.0",
        id: 100 + i,
        method: "tools/call",
        params: { name: "steps", arguments: { count: 100, delayMs: 300 }, _meta: { progressToken: `p${i}` } },
      });
      assert.equal(res.status, 200);
      const events = sse(res.body as unknown as AsyncIterable<Uint8Array>);
      for await (const ev of events) {
        if (ev.data.includes("notifications/progress")) break;
      }
      // Read on (and drop) until the edge dies.
      void (async () => {
        try {
          for await (const _ of events);
        } catch {
          // the edge was killed
        }
      })();
    }),
  );
}

async function answered(url: string, headers: Record<string, string>, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const res = await post(url, headers, {
      jsonrpc: "2.0",
      id: 1 + i,
      method: "tools/call",
      params: { name: "where", arguments: { i } },
    });
    assert.equal(res.status, 200);
    assert.match(await res.text(), /"result"/);
  }
}

async function records(adminUrl: string, tool: string): Promise<AuditRecord[]> {
  const res = await fetch(`${adminUrl}/api/audit?tool=${tool}&limit=1000`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { records: AuditRecord[] }).records;
}

async function verified(adminUrl: string, token: string): Promise<boolean> {
  const res = await fetch(`${adminUrl}/api/audit/verify`, { headers: { authorization: `Bearer ${token}` } });
  return ((await res.json()) as { ok: boolean }).ok;
}

function assertUnknown(recs: AuditRecord[], n: number): void {
  assert.equal(recs.length, n, JSON.stringify(recs.map((r) => r.outcome)));
  for (const r of recs) {
    assert.deepEqual(r.outcome, { kind: "unknown" });
    assert.equal(r.decision, "allowed");
    assert.equal(r.method, "tools/call");
    assert.equal(r.detail?.reason, "the instance stopped before the call was answered");
  }
  assert.equal(new Set(recs.map((r) => r.rpcId)).size, n, "one record per call");
}

describe("write-ahead audit, embedded", () => {
  let edge: SpawnedEdge | undefined;
  after(async () => {
    await edge?.kill();
  });

  test("(a) SIGKILL with calls in flight: every call has a record after the restart", async (t) => {
    const dir = tempDir();
    const doc = {
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: TOKEN },
      servers: { up: { route: "/mcp", upstream: { urls: [upstreams[0]?.url] }, auth: ["none"] } },
    };
    edge = await spawnEdge(doc, dir);
    const url = `${edge.baseUrl}/mcp`;
    const headers = await session(url, {});
    await answered(url, headers, 3);
    await callsInFlight(url, headers, CALLS);
    await edge.kill();

    edge = await spawnEdge(doc, dir);
    const unknown = await records(edge.adminUrl, "steps");
    assertUnknown(unknown, CALLS);
    const where = await records(edge.adminUrl, "where");
    assert.equal(where.length, 3);
    for (const r of where) assert.equal(r.outcome?.kind, "result");
    assert.equal(await verified(edge.adminUrl, TOKEN), true);
    t.diagnostic(
      `embedded: ${CALLS} calls in flight at SIGKILL, ${unknown.length} records (outcome unknown)`,
    );
    // Recovered once: a second restart adds nothing.
    await edge.stop();
    edge = await spawnEdge(doc, dir);
    assert.equal((await records(edge.adminUrl, "steps")).length, CALLS);
  });
});

describe("write-ahead audit, distributed", async () => {
  const skip =
    (await postgresSkipReason()) ?? ((await redisReady("write-ahead audit")) ? undefined : "no Redis");
  let cluster: Cluster | undefined;
  const prefix = testPrefix();
  // Registered before the PostgreSQL fixture's, so it runs first: the edges stop before the schema goes.
  after(async () => {
    await cluster?.stop();
    const redis = new Redis(REDIS_URL);
    await dropPrefix(redis, prefix).catch(() => undefined);
    redis.disconnect();
  });
  const pg = postgresFixture();

  test("(b) SIGKILL of edge A with calls in flight: edge B records them", { skip }, async (t) => {
    const schema = pg.schema();
    cluster = await startCluster({
      edges: 2,
      redisUrl: REDIS_URL,
      keyPrefix: prefix,
      pgSchema: schema,
      upstreams,
    });
    const { key } = await cluster.createKey("ahead");
    const auth = { authorization: `Bearer ${key}` };
    const url = cluster.edgeUrl(0);
    const headers = await session(url, auth);
    await answered(url, headers, 3);
    await callsInFlight(url, headers, CALLS);
    const killedAt = performance.now();
    await cluster.edges[0]?.kill();

    const adminB = cluster.edges[1]?.adminUrl as string;
    const read = async (tool: string) => {
      const r = await cluster?.admin(1, "GET", `/api/audit?tool=${tool}&limit=1000`);
      return (r?.json as { records: AuditRecord[] }).records;
    };
    const unknown = await waitFor(
      async () => {
        const recs = await read("steps");
        return recs.length >= CALLS ? recs : undefined;
      },
      { what: `${CALLS} records of the calls in flight on A`, timeout: 60_000, interval: 250 },
    );
    const ms = performance.now() - killedAt;
    assertUnknown(unknown, CALLS);
    assert.equal((await read("where")).length, 3);
    assert.equal(await verified(adminB, ADMIN_TOKEN), true);
    t.diagnostic(
      `distributed: ${CALLS} calls in flight on A at SIGKILL, ${unknown.length} records written by B ` +
        `${Math.round(ms)} ms after the kill`,
    );
  });
});
