/**
 * PostgreSQL for distributed mode: the connection pool and versioned migrations. The
 * stores in this folder (API keys, audit, identity keys) share the pool.
 *
 * Every statement names its tables with the configured schema (validated, then quoted), so nothing
 * depends on the connection's `search_path` (which a transaction-mode pooler does not keep).
 *
 * Failure: every store operation runs through `PostgresDb.run`: one deadline over the whole
 * operation (waiting for a pool connection included; `queryTimeoutMs`) and the pool's circuit
 * breaker (src/lib/breaker.ts): after repeated timeouts or connection failures, operations fail at
 * once until a probe succeeds. A database that is down or hung turns into a GatewayError
 * `EDGE_STORE_UNAVAILABLE` (503) within that bound, or at once while the breaker is open; a call
 * never hangs. Errors that are not about reachability (a duplicate key, a bug in a statement) are
 * thrown as pg reports them, and count as answers.
 */
import { DatabaseError, Pool, types } from "pg";
import { GatewayError } from "../../errors/errors.ts";
import { Breaker, BreakerOpenError, type BreakerOptions, DeadlineError } from "../../lib/breaker.ts";

export interface PostgresOptions {
  /** Schema holding mcp-edge's tables; created when missing. Default `public`. */
  schema?: string;
  /** Pool size per instance. Default 10. */
  max?: number;
  /** Time to establish a connection, ms. Default 5000. */
  connectTimeoutMs?: number;
  /** Time any one statement may take (server `statement_timeout` and a client-side bound), ms. Default 10 000. */
  queryTimeoutMs?: number;
  /** Errors of idle pooled connections (the database restarted); they are otherwise dropped. */
  onError?: (err: Error) => void;
  /** The pool's circuit breaker (consecutive failures, open time, state changes). */
  breaker?: BreakerOptions;
}

/** An open pool and the schema whose migrations it applied. */
export interface PostgresDb {
  readonly pool: Pool;
  /** The schema name, quoted for SQL (`"mcp_edge"`). */
  readonly schema: string;
  /** The migration version the schema is at. */
  readonly version: number;
  /** The pool's circuit breaker: every `run` goes through it. */
  readonly breaker: Breaker;
  /**
   * Runs one store operation (`what` names it in errors) under the breaker and a deadline
   * (`queryTimeoutMs` unless given; `null`: none, the statements' own timeouts bound it). Failures
   * of reachability become EDGE_STORE_UNAVAILABLE; other errors are thrown as they are.
   */
  run<T>(what: string, op: (pool: Pool) => Promise<T>, timeoutMs?: number | null): Promise<T>;
  close(): Promise<void>;
}

/** Lower-case identifiers only: the name is interpolated (quoted) into every statement. */
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** First key of the two-key advisory lock used by mcp-edge ("mcpe"); the second is per purpose. */
export const LOCK_NAMESPACE = 0x6d637065;

/**
 * Versioned migrations, applied in order at open inside one transaction; the table
 * `mcp_edge_migrations` records each version. Append only: never edit a migration that has shipped.
 * Each takes the quoted schema name.
 */
const MIGRATIONS: readonly ((s: string) => string)[] = [
  // `ord` is the insertion order: ties of created_at list the later key first, as SQLite's rowid.
  (s) => `CREATE TABLE ${s}.api_keys (
     id TEXT PRIMARY KEY,
     ord BIGSERIAL NOT NULL,
     name TEXT NOT NULL,
     server TEXT NOT NULL,
     tenant TEXT NOT NULL,
     consumer TEXT NOT NULL,
     hash TEXT NOT NULL,
     scopes TEXT[] NOT NULL,
     tools TEXT[],
     created_at BIGINT NOT NULL,
     expires_at BIGINT,
     revoked_at BIGINT,
     last_used_at BIGINT,
     rotated_to TEXT
   );
   CREATE INDEX api_keys_name ON ${s}.api_keys (server, tenant, name, created_at);`,
  // Audit records (src/store/postgres/audit.ts): `record` is the canonical JSON the hash covers, kept as
  // TEXT (jsonb would reorder its keys); the other columns are indexed copies for filters. `id` is
  // the commit order (appends are serialized) and the paging cursor. `audit_heads` holds the last
  // record of every chain: appends read it to chain new records after what is committed.
  (s) => `CREATE TABLE ${s}.audit (
     id BIGSERIAL PRIMARY KEY,
     chain TEXT NOT NULL,
     seq BIGINT NOT NULL,
     ts BIGINT NOT NULL,
     type TEXT NOT NULL,
     tenant TEXT,
     subject TEXT,
     target TEXT,
     record TEXT NOT NULL,
     hash TEXT NOT NULL,
     UNIQUE (chain, seq)
   );
   CREATE INDEX audit_tenant_ts ON ${s}.audit (tenant, ts);
   CREATE TABLE ${s}.audit_heads (
     chain TEXT PRIMARY KEY,
     seq BIGINT NOT NULL,
     hash TEXT NOT NULL
   );`,
  // Audit write keys (src/store/postgres/audit.ts appendChained): each record an AuditLog chains on the
  // store side carries a key unique to its writer, so a batch retried after an error that may
  // have hidden a commit (or replayed from the spool) is stored once. NULL for records stored
  // chained (`append`); the partial index holds only the keyed ones.
  (s) => `ALTER TABLE ${s}.audit ADD COLUMN write_key TEXT;
   CREATE UNIQUE INDEX audit_write_key ON ${s}.audit (write_key) WHERE write_key IS NOT NULL;`,
  // Identity-signing keys (src/store/postgres/identity-keys.ts), shared by every instance so that they
  // all sign with the same key and publish the same JWKS. Rotation inserts under an advisory lock.
  (s) => `CREATE TABLE ${s}.identity_keys (
     kid TEXT PRIMARY KEY,
     private_jwk TEXT NOT NULL,
     public_jwk TEXT NOT NULL,
     created_at BIGINT NOT NULL
   );
   CREATE INDEX identity_keys_created ON ${s}.identity_keys (created_at);`,
  // Users' connections (src/store/postgres/connections.ts): the token vault's encrypted records,
  // one per (tenant, subject, connection); `version` is the compare-and-swap of refreshes.
  (s) => `CREATE TABLE ${s}.connections (
     id TEXT PRIMARY KEY,
     tenant TEXT NOT NULL,
     subject TEXT NOT NULL,
     connection TEXT NOT NULL,
     sealed TEXT NOT NULL,
     version BIGINT NOT NULL,
     created_at BIGINT NOT NULL,
     updated_at BIGINT NOT NULL,
     expires_at BIGINT,
     scope TEXT,
     UNIQUE (tenant, subject, connection)
   );`,
  // The authorization server (src/store/postgres/as.ts): oidc-provider's models and the AS's own
  // records, token-like ones under the SHA-256 of their value; revoked grants and access tokens.
  (s) => `CREATE TABLE ${s}.as_records (
     kind TEXT NOT NULL,
     id TEXT NOT NULL,
     ord BIGSERIAL NOT NULL,
     payload TEXT NOT NULL,
     grant_id TEXT,
     uid TEXT,
     tenant TEXT,
     subject TEXT,
     client_id TEXT,
     expires_at BIGINT,
     consumed_at BIGINT,
     PRIMARY KEY (kind, id)
   );
   CREATE INDEX as_records_grant ON ${s}.as_records (grant_id) WHERE grant_id IS NOT NULL;
   CREATE INDEX as_records_uid ON ${s}.as_records (kind, uid) WHERE uid IS NOT NULL;
   CREATE INDEX as_records_expiry ON ${s}.as_records (expires_at) WHERE expires_at IS NOT NULL;
   CREATE TABLE ${s}.as_revocations (
     id TEXT PRIMARY KEY,
     at BIGINT NOT NULL,
     until BIGINT NOT NULL
   );
   CREATE INDEX as_revocations_at ON ${s}.as_revocations (at);`,
  // Write-ahead entries of calls in flight (src/store/postgres/audit.ts `openCalls`), removed with
  // the insert of the call's record; `audit_writers` holds each instance's heartbeat, and entries of
  // an instance not seen for a while are recovered by another as records with outcome `unknown`.
  (s) => `CREATE TABLE ${s}.audit_open (
     key TEXT PRIMARY KEY,
     instance TEXT NOT NULL,
     at BIGINT NOT NULL,
     record TEXT NOT NULL
   );
   CREATE INDEX audit_open_instance ON ${s}.audit_open (instance);
   CREATE TABLE ${s}.audit_writers (
     instance TEXT PRIMARY KEY,
     seen_at BIGINT NOT NULL
   );`,
];

/** The newest migration version this code knows. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** BIGINT columns hold ms timestamps and ids, well within 2^53: parse them as numbers. */
const INT8_OID = 20;
const typeParsers = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === INT8_OID && format !== "binary"
      ? (v: string) => Number(v)
      : types.getTypeParser(oid, format ?? "text")) as typeof types.getTypeParser,
};

/** SQLSTATE classes that mean "the database cannot serve us now" rather than "the statement is wrong". */
const UNAVAILABLE_CLASSES = new Set([
  "08", // connection exception
  "28", // invalid authorization (a wrong password reads the same as a database out of reach)
  "3D", // invalid catalog name: the database does not exist (yet)
  "53", // insufficient resources (too many connections, disk full)
  "57", // operator intervention: shutdown, statement_timeout (57014)
  "58", // system error
]);

/** pg's own connection-level failures carry no code: "Connection terminated unexpectedly", "timeout
 * exceeded when trying to connect", "Query read timeout", "... is not queryable". */
const PG_CONNECTION_MESSAGE = /connect|terminated|timeout|not queryable/i;

/**
 * The coded error for a failed database call, or the error itself when it is not about
 * reachability (a constraint, a bug in a statement, a caller's own error).
 */
export function storeError(err: unknown, what: string): unknown {
  if (!(err instanceof Error) || err instanceof GatewayError) return err;
  const code = (err as { code?: unknown }).code;
  const unavailable =
    err instanceof DatabaseError
      ? UNAVAILABLE_CLASSES.has((err.code ?? "").slice(0, 2))
      : typeof code === "string"
        ? code.startsWith("E") // the OS: ECONNREFUSED, ECONNRESET, ETIMEDOUT, ENOTFOUND, EPIPE ...
        : PG_CONNECTION_MESSAGE.test(err.message);
  if (!unavailable) return err;
  return new GatewayError("EDGE_STORE_UNAVAILABLE", `PostgreSQL is unavailable (${what}).`, { cause: err });
}

/**
 * Opens a pool and brings the schema to SCHEMA_VERSION. The migrations run in one transaction that
 * first takes a transaction-scoped advisory lock on the schema, so instances starting at once apply
 * them exactly once (the others wait, then find nothing to do). A schema newer than this code (a
 * newer instance migrated first, during a rolling upgrade) is used as is: migrations only add.
 * Throws EDGE_STORE_UNAVAILABLE when the database cannot be reached within `connectTimeoutMs`.
 */
export async function openPostgres(url: string, options: PostgresOptions = {}): Promise<PostgresDb> {
  const name = options.schema ?? "public";
  if (!SCHEMA_NAME.test(name)) {
    throw new GatewayError(
      "EDGE_CONFIG_INVALID",
      `store.postgres schema "${name}" must be a lower-case SQL identifier (letters, digits, _).`,
    );
  }
  const schema = `"${name}"`;
  const queryTimeout = options.queryTimeoutMs ?? 10_000;
  const pool = new Pool({
    connectionString: url,
    max: options.max ?? 10,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
    // The server cancels a statement past this; the client gives up slightly later in case the
    // server itself does not answer (a hung host).
    statement_timeout: queryTimeout,
    query_timeout: queryTimeout + 1000,
    idle_in_transaction_session_timeout: queryTimeout,
    application_name: "mcp-edge",
    keepAlive: true,
    types: typeParsers,
  });
  // Without a listener an idle connection's error (database restart) would crash the process.
  pool.on("error", (err) => options.onError?.(err));
  let version: number;
  try {
    version = await migrate(pool, name, schema);
  } catch (err) {
    await pool.end().catch(() => {});
    throw storeError(err, "migrations at start");
  }
  let closed = false;
  const breaker = new Breaker("postgres", options.breaker);
  const unavailable = (err: unknown, what: string): unknown => {
    if (err instanceof BreakerOpenError) {
      return new GatewayError("EDGE_STORE_UNAVAILABLE", `PostgreSQL is unavailable (${what}).`, {
        cause: err,
        headers: { "retry-after": String(Math.ceil(err.retryAfterMs / 1000)) },
      });
    }
    if (err instanceof DeadlineError) {
      return new GatewayError("EDGE_STORE_UNAVAILABLE", `PostgreSQL did not answer in time (${what}).`, {
        cause: err,
      });
    }
    return storeError(err, what);
  };
  const isFailure = (err: unknown) => {
    const e = storeError(err, "");
    return e instanceof GatewayError && e.code === "EDGE_STORE_UNAVAILABLE";
  };
  return {
    pool,
    schema,
    version,
    breaker,
    async run(what, op, timeoutMs) {
      const deadline = timeoutMs === undefined ? queryTimeout : timeoutMs;
      try {
        return await breaker.run(() => op(pool), {
          ...(deadline === null ? {} : { timeoutMs: deadline }),
          isFailure,
        });
      } catch (err) {
        throw unavailable(err, what);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await pool.end();
    },
  };
}

async function migrate(pool: Pool, name: string, schema: string): Promise<number> {
  const client = await pool.connect();
  // A checked-out client emits 'error' when its connection drops: without a listener, a crash.
  const onError = () => undefined;
  client.on("error", onError);
  try {
    await client.query("BEGIN");
    try {
      await client.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [
        LOCK_NAMESPACE,
        `migrate:${name}`,
      ]);
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${schema}.mcp_edge_migrations (
           version INTEGER PRIMARY KEY,
           applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )`,
      );
      const { rows } = await client.query<{ v: number }>(
        `SELECT COALESCE(MAX(version), 0)::int AS v FROM ${schema}.mcp_edge_migrations`,
      );
      const current = rows[0]?.v ?? 0;
      for (let v = current; v < MIGRATIONS.length; v++) {
        await client.query((MIGRATIONS[v] as (s: string) => string)(schema));
        await client.query(`INSERT INTO ${schema}.mcp_edge_migrations (version) VALUES ($1)`, [v + 1]);
      }
      await client.query("COMMIT");
      return Math.max(current, MIGRATIONS.length);
    } catch (err) {
      await client.query("ROLLBACK").catch(() => {});
      throw err;
    }
  } finally {
    client.off("error", onError);
    client.release();
  }
}
