/**
 * Distributed mode, PostgreSQL unreachable, through a fault-injecting TCP proxy
 * in front of the real database: key checks use the bounded cache (a key seen recently keeps
 * working; a key never seen fails closed with 503, never 401), key administration answers 503,
 * tool calls go on and their audit records wait in the spool; when the database is back, the spool
 * is written in order, the chain verifies, and no record is missing — with no restart.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Redis } from "ioredis";
import { type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { mcpPost } from "../helpers/mcp.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.ts";
import { waitFor } from "../helpers/wait.ts";

const ADMIN_TOKEN = "postgres-faults-admin-token-0123456789abcdef";
const INIT = {
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "1" } },
};
const call = (id: number) => ({
  jsonrpc: "2.0",
  id,
  method: "tools/call",
  params: { name: "whoami", arguments: {} },
});

const skip = await postgresSkipReason();
const ready = skip === undefined && (await redisReady("PostgreSQL faults"));
if (skip !== undefined) process.stderr.write(`\n*** SKIPPING PostgreSQL faults: ${skip} ***\n\n`);

if (ready) {
  const prefix = testPrefix();
  let upstream: SpawnedFixture;
  let proxy: TcpProxy;
  let edge: InProcessEdge;
  let schema: string;

  before(async () => {
    upstream = await spawnFixture("test/fixtures/conformance-server.ts");
    proxy = await startTcpProxy(Number(new URL(POSTGRES_URL).port || 5432), new URL(POSTGRES_URL).hostname);
    const viaProxy = new URL(POSTGRES_URL);
    viaProxy.hostname = "127.0.0.1";
    viaProxy.port = String(proxy.port);
    schema = pg.schema();
    edge = await startEdge({
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      store: {
        sqlite: `${tempDir()}/edge.db`,
        redis: { url: REDIS_URL, keyPrefix: prefix },
        postgres: { url: viaProxy.toString(), schema, queryTimeout: "2s" },
      },
      audit: { flushInterval: "50ms" },
      servers: { api: { route: "/mcp", upstream: { urls: [upstream.url] }, auth: ["apiKey"] } },
    });
  });
  after(async () => {
    await edge?.stop();
    await proxy?.stop();
    await upstream?.stop();
    const c = new Redis(REDIS_URL);
    await dropPrefix(c, prefix);
    c.disconnect();
  });
  // After the hook above (hooks run in order): the schema is dropped once the edge is stopped.
  const pg = postgresFixture();

  async function adminApi(method: string, p: string, body?: unknown) {
    const res = await fetch(`${edge.gw.adminUrl}${p}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, json: (await res.json()) as any };
  }

  test("PostgreSQL down: cached keys work, unknown keys 503, key admin 503, audit spools and replays", async () => {
    const key = (await adminApi("POST", "/api/keys", { name: "known" })).json.key as string;
    const unseen = (await adminApi("POST", "/api/keys", { name: "unseen" })).json.key as string;
    const init = await mcpPost(edge.url(), INIT, { credential: key });
    assert.equal(init.status, 200);
    const sid = init.sessionId as string;
    await mcpPost(
      edge.url(),
      { jsonrpc: "2.0", method: "notifications/initialized" },
      { credential: key, sessionId: sid },
    );
    let answered = 0;
    for (let i = 0; i < 5; i++) {
      assert.equal(
        (await mcpPost(edge.url(), call(10 + i), { credential: key, sessionId: sid })).status,
        200,
      );
      answered++;
    }

    await proxy.cut();
    // Under test: past the 1 s freshness of the key cache, the lookups fail and the stale copy answers.
    await new Promise((r) => setTimeout(r, 1100));
    for (let i = 0; i < 5; i++) {
      const r = await mcpPost(edge.url(), call(20 + i), { credential: key, sessionId: sid });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      answered++;
    }
    const never = await mcpPost(edge.url(), INIT, { credential: unseen });
    assert.equal(never.status, 503, "a key this instance never read fails closed");
    assert.equal(never.body.error.data.code, "EDGE_STORE_UNAVAILABLE");
    assert.ok(never.headers.get("retry-after"));
    const adminDown = await adminApi("POST", "/api/keys", { name: "during-outage" });
    assert.equal(adminDown.status, 503, JSON.stringify(adminDown.json));
    // The audit store is down: records wait in the spool.
    const during = await waitFor(
      () => {
        const st = edge.gw.audit.stats();
        return !st.storeUp && st.spooled > 0 ? st : undefined;
      },
      { what: "the audit records to be spooled" },
    ).catch(() => edge.gw.audit.stats());
    assert.equal(during.storeUp, false);
    assert.ok(during.spooled > 0, JSON.stringify(during));

    await proxy.restore();
    await waitFor(
      () => {
        const s = edge.gw.audit.stats();
        return s.storeUp && s.spooled === 0 && s.queued === 0;
      },
      { what: "the spool to be written to the store", interval: 100 },
    ).catch(() => undefined); // the assertions below say what is missing
    const after = edge.gw.audit.stats();
    assert.equal(after.storeUp, true, JSON.stringify(after));
    assert.equal(after.spooled, 0);
    assert.equal((await adminApi("GET", "/api/keys")).status, 200, "key admin is back, no restart");
    assert.equal((await mcpPost(edge.url(), INIT, { credential: unseen })).status, 200);

    // Every tools/call answered is one record in PostgreSQL, and the chains verify.
    const db = await pg.open(schema);
    const rows = await db.pool.query(`SELECT count(*)::int AS n FROM ${db.schema}.audit WHERE type = 'call'`);
    assert.equal(rows.rows[0].n, answered);
    const verified = await adminApi("GET", "/api/audit/verify");
    assert.equal(verified.status, 200);
    assert.equal(verified.json.ok, true, JSON.stringify(verified.json));
  });
}
