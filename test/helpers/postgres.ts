/**
 * PostgreSQL for tests. Every test database is a fresh schema (`mcp_edge_test_<random>`) dropped
 * when the file's tests end, so files running in parallel (and reruns) never see each other's rows.
 *
 * The database: MCP_EDGE_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test.
 * Under CI=true an unreachable database fails the tests; elsewhere they are skipped, loudly.
 */
import { randomBytes } from "node:crypto";
import { after } from "node:test";
import { Client } from "pg";
import { openPostgres, type PostgresDb, type PostgresOptions } from "../../src/store/postgres/db.ts";
import { startTcpProxy, type TcpProxy } from "./tcp-proxy.ts";

export const POSTGRES_URL =
  process.env.MCP_EDGE_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";

let probed: Promise<string | undefined> | undefined;

/**
 * Undefined when the test database answers; otherwise the reason to skip (printed to stderr).
 * Throws under CI=true: there, PostgreSQL tests must run.
 */
export function postgresSkipReason(): Promise<string | undefined> {
  probed ??= (async () => {
    const client = new Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 3000 });
    try {
      await client.connect();
      await client.query("SELECT 1");
      return undefined;
    } catch (err) {
      const reason = `PostgreSQL unreachable at ${POSTGRES_URL} (${(err as Error).message}); set MCP_EDGE_TEST_POSTGRES_URL`;
      if (process.env.CI === "true")
        throw new Error(`${reason}. CI=true: PostgreSQL tests must run.`, { cause: err });
      process.stderr.write(
        `\n${"!".repeat(78)}\n!! SKIPPING PostgreSQL tests: ${reason}\n${"!".repeat(78)}\n\n`,
      );
      return reason;
    } finally {
      await client.end().catch(() => {});
    }
  })();
  return probed;
}

export interface PostgresFixture {
  /** A new schema name, dropped after the file's tests. */
  schema(): string;
  /** Opens the test database on a schema (a new one by default); closed after the file's tests. */
  open(schema?: string, options?: Omit<PostgresOptions, "schema">): Promise<PostgresDb>;
  /** Tracks a database opened some other way, so that it is closed after the tests. */
  track(db: PostgresDb): PostgresDb;
}

/**
 * Call at the top level of a test file: registers the cleanup with `after`. Hooks run in the order
 * they were registered: register the `after` that stops processes using the schema (edges) first.
 */
export function postgresFixture(): PostgresFixture {
  const dbs: PostgresDb[] = [];
  const schemas = new Set<string>();
  after(async () => {
    for (const db of dbs) await db.close().catch(() => {});
    if (schemas.size === 0 || (await postgresSkipReason().catch(() => "down")) !== undefined) return;
    const client = new Client({ connectionString: POSTGRES_URL });
    await client.connect();
    try {
      // A schema still in use by a live process (a test that stops its edges in a later hook) would
      // block the DROP for ever: give up after a while, loudly, rather than hang the suite.
      await client.query("SET lock_timeout = '10s'");
      for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
    } finally {
      await client.end();
    }
  });
  const fixture: PostgresFixture = {
    schema() {
      const s = `mcp_edge_test_${randomBytes(6).toString("hex")}`;
      schemas.add(s);
      return s;
    },
    async open(schema = fixture.schema(), options = {}) {
      schemas.add(schema);
      return fixture.track(await openPostgres(POSTGRES_URL, { ...options, schema }));
    },
    track(db) {
      dbs.push(db);
      return db;
    },
  };
  return fixture;
}

/**
 * A fault-injecting TCP proxy in front of the test database (`cut`, `hang`, `restore`) and the
 * database URL through it.
 */
export async function proxiedPostgres(): Promise<{ proxy: TcpProxy; url: string }> {
  const target = new URL(POSTGRES_URL);
  const proxy = await startTcpProxy(Number(target.port || 5432), target.hostname);
  const via = new URL(POSTGRES_URL);
  via.hostname = "127.0.0.1";
  via.port = String(proxy.port);
  return { proxy, url: via.toString() };
}
