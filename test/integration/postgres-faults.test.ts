/**
 * Distributed mode, PostgreSQL unreachable, through a fault-injecting TCP proxy
 * in front of the real database: key checks use the bounded cache (a key seen recently keeps
 * working; a key never seen fails closed with 503, never 401), key administration answers 503,
 * tool calls go on and their audit records wait in the spool; when the database is back, the spool
 * is written in order, the chain verifies, and no record is missing — with no restart.
 *
 * PostgreSQL hung (it accepts connections and never answers: the proxy black-holes every byte):
 *   - a key read recently keeps working without waiting for the database: its re-read runs in the
 *     background (each answered call comes back well inside `queryTimeout`, the hang guard);
 *   - a key the instance never read waits at most `queryTimeout`, then fails closed (503 with
 *     Retry-After, never 401);
 *   - repeated timeouts open the pool's circuit breaker: such keys then fail at once, the breaker's
 *     state is in /metrics and its opening in the log;
 *   - a revocation broadcast drops the copy at once: the revoked key is not served from it while the
 *     database hangs (503, fail closed);
 *   - when the database answers again a probe closes the breaker, with no restart.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Redis } from "ioredis";
import { type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { INITIALIZE, mcpPost, timed, toolCall } from "../helpers/mcp.ts";
import { postgresFixture, postgresSkipReason, proxiedPostgres } from "../helpers/postgres.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import type { TcpProxy } from "../helpers/tcp-proxy.ts";
import { waitFor } from "../helpers/wait.ts";

const ADMIN_TOKEN = "postgres-faults-admin-token-0123456789abcdef";
const QUERY_TIMEOUT_MS = 2000;
const INIT = INITIALIZE;
const call = (id: number) => toolCall(id, "whoami");

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
    const proxied = await proxiedPostgres();
    proxy = proxied.proxy;
    schema = pg.schema();
    edge = await startEdge({
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      log: { level: "info" },
      store: {
        sqlite: `${tempDir()}/edge.db`,
        redis: { url: REDIS_URL, keyPrefix: prefix },
        postgres: {
          url: proxied.url,
          schema,
          queryTimeout: `${QUERY_TIMEOUT_MS}ms`,
          breaker: { failures: 3, openFor: "1s" },
        },
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

  async function metric(name: string): Promise<string> {
    const text = await (await fetch(`${edge.gw.adminUrl}/metrics`)).text();
    return text.split("\n").find((l) => l.startsWith(name)) ?? `${name} (absent)`;
  }

  test("PostgreSQL hung: recent keys are served without waiting, others wait at most queryTimeout, the breaker fails them fast, revocation still applies", async () => {
    const made = [];
    for (const name of ["hung-known", "hung-other", "hung-unseen"]) {
      const r = await adminApi("POST", "/api/keys", { name });
      assert.equal(r.status, 201);
      made.push(r.json as { key: string; id: string });
    }
    const [known, other, unseen] = made as [(typeof made)[0], (typeof made)[0], (typeof made)[0]];
    const sessions: string[] = [];
    for (const k of [known, other]) {
      const init = await mcpPost(edge.url(), INIT, { credential: k.key });
      assert.equal(init.status, 200);
      sessions.push(init.sessionId as string);
    }
    const [sid, otherSid] = sessions as [string, string];
    assert.equal((await mcpPost(edge.url(), call(2), { credential: known.key, sessionId: sid })).status, 200);
    assert.match(await metric('mcp_edge_store_breaker_state{store="postgres"}'), / 0$/);

    proxy.hang();
    // Past the records' 1 s freshness: every key check below would read PostgreSQL first.
    await new Promise((r) => setTimeout(r, 1100));

    const served: number[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await timed(() =>
        mcpPost(edge.url(), call(10 + i), { credential: known.key, sessionId: sid }),
      );
      assert.equal(r.value.status, 200, JSON.stringify(r.value.body));
      served.push(r.ms);
    }
    assert.ok(
      Math.max(...served) < QUERY_TIMEOUT_MS,
      `a recently read key never waits the query timeout (slowest ${Math.max(...served).toFixed(0)} ms)`,
    );

    // A key this instance never read needs the store: it waits, bounded, and fails closed.
    const waits = await Promise.all(
      [0, 1, 2].map(() => timed(() => mcpPost(edge.url(), INIT, { credential: unseen.key }))),
    );
    for (const w of waits) {
      assert.equal(w.value.status, 503, JSON.stringify(w.value.body));
      assert.equal(w.value.body.error.data.code, "EDGE_STORE_UNAVAILABLE");
      assert.ok(w.value.headers.get("retry-after"));
      assert.ok(w.ms < QUERY_TIMEOUT_MS + 1500, `bounded by queryTimeout (${w.ms.toFixed(0)} ms)`);
    }

    // Three timeouts in a row: the breaker is open, the same check now fails at once.
    await waitFor(
      async () => (await metric('mcp_edge_store_breaker_state{store="postgres"}')).endsWith(" 2"),
      {
        what: "the PostgreSQL breaker to open",
      },
    );
    const fast = await timed(() => mcpPost(edge.url(), INIT, { credential: unseen.key }));
    assert.equal(fast.value.status, 503);
    assert.ok(fast.value.headers.get("retry-after"));
    assert.ok(fast.ms < QUERY_TIMEOUT_MS, `fails fast with the breaker open (${fast.ms.toFixed(0)} ms)`);
    assert.ok(
      edge.logs().some((l) => l.includes("postgres: circuit breaker open")),
      "the breaker's opening is logged",
    );
    // Recent keys still work while it is open.
    assert.equal(
      (await mcpPost(edge.url(), call(30), { credential: known.key, sessionId: sid })).status,
      200,
    );

    // A revocation broadcast by another instance (its write went through before the hang) drops
    // the copy at once: the key is never served from it again, it needs the store (503).
    const bus = new Redis(REDIS_URL);
    try {
      await bus.publish(`${prefix}bus`, JSON.stringify({ k: "key", id: other.id, from: "elsewhere" }));
    } finally {
      bus.disconnect();
    }
    await waitFor(
      async () =>
        (await mcpPost(edge.url(), call(40), { credential: other.key, sessionId: otherSid })).status === 503,
      { what: "the broadcast key to fail closed" },
    );

    proxy.restore();
    await waitFor(async () => (await mcpPost(edge.url(), INIT, { credential: unseen.key })).status === 200, {
      what: "a key check through PostgreSQL once it answers",
      timeout: 10_000,
      interval: 200,
    });
    assert.match(await metric('mcp_edge_store_breaker_state{store="postgres"}'), / 0$/);
    assert.ok(edge.logs().some((l) => l.includes("postgres: circuit breaker closed")));
    assert.equal(
      (await mcpPost(edge.url(), call(50), { credential: other.key, sessionId: otherSid })).status,
      200,
    );
    process.stdout.write(
      `# PostgreSQL hung: recent key served in ≤ ${Math.max(...served).toFixed(0)} ms; unseen key ${waits.map((w) => w.ms.toFixed(0)).join("/")} ms, then ${fast.ms.toFixed(0)} ms with the breaker open\n`,
    );
  });
}
