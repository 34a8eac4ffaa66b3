/**
 * openPostgres against a real PostgreSQL: versioned migrations (idempotent, and race-free when
 * several instances start at once), and failure: an unreachable, hung or lost database turns every
 * call into EDGE_STORE_UNAVAILABLE within its timeout, never a hang.
 */
import assert from "node:assert/strict";
import { waitFor } from "../helpers/wait.ts";
import { createServer, type Server, type Socket, connect } from "node:net";
import { test } from "node:test";
import { PostgresAuditStore } from "../../src/store/postgres/audit.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import { openPostgres, SCHEMA_VERSION } from "../../src/store/postgres/db.ts";
import { PostgresApiKeyStore } from "../../src/store/postgres/api-keys.ts";
import { freePort } from "../helpers/edge.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { final } from "./audit-store.contract.ts";
import { apiKey } from "./api-key-store.contract.ts";

const pg = postgresFixture();
const skip = await postgresSkipReason();

/** Resolves with the error `p` rejects with, and how long that took (ms). */
async function failure(p: Promise<unknown>): Promise<{ err: unknown; ms: number }> {
  const t0 = performance.now();
  try {
    await p;
  } catch (err) {
    return { err, ms: performance.now() - t0 };
  }
  assert.fail("expected a rejection");
}

function assertUnavailable(f: { err: unknown; ms: number }, withinMs: number): void {
  assert.ok(f.err instanceof GatewayError, `a GatewayError, got ${String(f.err)}`);
  assert.equal(f.err.code, "EDGE_STORE_UNAVAILABLE");
  assert.ok(f.ms < withinMs, `failed in ${Math.round(f.ms)} ms, over ${withinMs} ms`);
}

function urlWithPort(port: number): string {
  const u = new URL(POSTGRES_URL);
  u.hostname = "127.0.0.1";
  u.port = String(port);
  return u.toString();
}

async function listen(server: Server, port = 0): Promise<number> {
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", () => r()));
  return (server.address() as { port: number }).port;
}

test("a schema name that is not a plain identifier is refused at start", async () => {
  const f = await failure(openPostgres(POSTGRES_URL, { schema: 'x"; DROP TABLE y; --' }));
  assert.ok(f.err instanceof GatewayError);
  assert.equal(f.err.code, "EDGE_CONFIG_INVALID");
});

test("PostgreSQL unreachable (nothing listens on the port): open fails fast with a coded error", async () => {
  const port = await freePort();
  assertUnavailable(await failure(openPostgres(urlWithPort(port), { schema: "mcp_edge_unused" })), 2000);
});

test("PostgreSQL hung (accepts, never answers): open fails within the connect timeout", async () => {
  const sockets = new Set<Socket>();
  const server = createServer((s) => sockets.add(s));
  const port = await listen(server);
  try {
    const f = await failure(
      openPostgres(urlWithPort(port), { schema: "mcp_edge_unused", connectTimeoutMs: 300 }),
    );
    assertUnavailable(f, 2000);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  }
});

if (skip !== undefined) {
  test("PostgreSQL migrations and lost connections", { skip }, () => {});
} else {
  test("migrations: applied once, recorded by version; a second open changes nothing", async () => {
    const schema = pg.schema();
    const first = await pg.open(schema);
    assert.equal(first.version, SCHEMA_VERSION);
    const before = await first.pool.query<{ version: number; applied_at: Date }>(
      `SELECT version, applied_at FROM ${first.schema}.mcp_edge_migrations ORDER BY version`,
    );
    assert.deepEqual(
      before.rows.map((r) => r.version),
      Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1),
    );
    const second = await pg.open(schema);
    assert.equal(second.version, SCHEMA_VERSION);
    const after = await second.pool.query(
      `SELECT version, applied_at FROM ${second.schema}.mcp_edge_migrations ORDER BY version`,
    );
    assert.deepEqual(after.rows, before.rows);
  });

  test("migrations: instances starting at once on an empty schema apply each version exactly once", async () => {
    const schema = pg.schema();
    const dbs = await Promise.all(Array.from({ length: 6 }, () => pg.open(schema, { max: 2 })));
    for (const db of dbs) assert.equal(db.version, SCHEMA_VERSION);
    const { rows } = await (dbs[0] as (typeof dbs)[number]).pool.query<{ version: number }>(
      `SELECT version FROM "${schema}".mcp_edge_migrations ORDER BY version`,
    );
    assert.deepEqual(
      rows.map((r) => r.version),
      Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1),
    );
    // Every instance can use the tables.
    await Promise.all(dbs.map((db) => new PostgresApiKeyStore(db).insert(apiKey())));
    assert.equal((await new PostgresApiKeyStore(dbs[1] as (typeof dbs)[number]).list({})).length, 6);
  });

  test("database lost after start: calls fail fast with a coded error; pending uses survive until it is back", async () => {
    // A TCP relay in front of PostgreSQL that the test can cut and bring back on the same port.
    const target = new URL(POSTGRES_URL);
    const sockets = new Set<Socket>();
    const relay = () =>
      createServer((client) => {
        const upstream = connect(Number(target.port || 5432), target.hostname);
        sockets.add(client).add(upstream);
        client.pipe(upstream).pipe(client);
        client.on("error", () => upstream.destroy());
        upstream.on("error", () => client.destroy());
      });
    let server = relay();
    const port = await listen(server);
    const cut = () =>
      new Promise((r) => {
        server.close(r);
        for (const s of sockets) s.destroy();
      });
    const idleErrors: Error[] = [];
    const db = pg.track(
      await openPostgres(urlWithPort(port), {
        schema: pg.schema(),
        connectTimeoutMs: 500,
        onError: (e) => idleErrors.push(e),
      }),
    );
    const keys = new PostgresApiKeyStore(db, { touchFlushMs: 60_000 });
    const audit = new PostgresAuditStore(db);
    try {
      const k = apiKey({ lastUsedAt: 1 });
      await keys.insert(k);
      await audit.appendChained([final()]);

      await cut();
      keys.touch(k.id, 9000);
      const failures = await Promise.all(
        [
          keys.get(apiKey().id),
          keys.list({}),
          keys.insert(apiKey()),
          keys.flush(),
          audit.appendChained([final()]),
          audit.query({}, { limit: 10 }),
          audit.heads(),
        ].map(failure),
      );
      for (const f of failures) assertUnavailable(f, 2000);

      server = relay();
      await listen(server, port);
      // The failures opened the pool's breaker: calls fail fast until its open time is over and a
      // probe succeeds. The use kept from the failed flushes is written then.
      assert.equal(db.breaker.state, "open");
      await waitFor(() => keys.flush().then(() => true), {
        what: "a flush once the breaker lets a probe through",
        timeout: 5000,
        interval: 100,
      });
      assert.equal(db.breaker.state, "closed");
      const reader = new PostgresApiKeyStore(await pg.open(db.schema.slice(1, -1)));
      assert.equal((await reader.get(k.id))?.lastUsedAt, 9000);
      assert.equal((await audit.heads()).get("acme")?.seq, 1);
      await reader.close();
    } finally {
      await keys.close().catch(() => {});
      await db.close();
      await cut();
    }
  });
}
