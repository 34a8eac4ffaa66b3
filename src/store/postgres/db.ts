/**
 * PostgreSQL for distributed mode (SPEC §1): the connection pool, versioned migrations, and the API
 * key store. The audit store is in src/store/postgres/audit.ts and shares the pool.
 *
 * Every statement names its tables with the configured schema (validated, then quoted), so nothing
 * depends on the connection's `search_path` (which a transaction-mode pooler does not keep).
 *
 * Failure: the pool connects with a timeout and every statement runs under one, so a database that
 * is down or hung turns into a GatewayError `EDGE_STORE_UNAVAILABLE` (503) within those bounds; a
 * call never hangs. Errors that are not about reachability (a duplicate key, a bug in a statement)
 * are thrown as pg reports them.
 */
import { DatabaseError, Pool, types } from "pg";
import { GatewayError } from "../../errors/errors.ts";
import type { ApiKeyFilter, ApiKeyRecord, ApiKeyStore } from "../types.ts";
import { KEY_STALE_MAX_MS, KEY_UPDATE_COLUMNS, KeyRecordCache, withUse } from "../key-cache.ts";

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
}

/** An open pool and the schema whose migrations it applied. */
export interface PostgresDb {
  readonly pool: Pool;
  /** The schema name, quoted for SQL (`"mcp_edge"`). */
  readonly schema: string;
  /** The migration version the schema is at. */
  readonly version: number;
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
  return {
    pool,
    schema,
    version,
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

interface ApiKeyRow {
  id: string;
  name: string;
  server: string;
  tenant: string;
  consumer: string;
  hash: string;
  scopes: string[];
  tools: string[] | null;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
  rotated_to: string | null;
}

function toKey(row: ApiKeyRow): ApiKeyRecord {
  return {
    id: row.id,
    name: row.name,
    server: row.server,
    tenant: row.tenant,
    consumer: row.consumer,
    hash: row.hash,
    scopes: row.scopes,
    tools: row.tools,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
    rotatedTo: row.rotated_to,
  };
}

const KEY_COLUMNS =
  "id, name, server, tenant, consumer, hash, scopes, tools, created_at, expires_at, revoked_at, last_used_at, rotated_to";

/**
 * API keys in PostgreSQL: hashes only, the semantics of SqliteApiKeyStore.
 *
 * - `get` (every authenticated request) goes through a KeyRecordCache (src/store/key-cache.ts):
 *   a record read by id is reused for up to 1 s, writes through this store drop it at once, so a
 *   revocation made on another instance applies within 1 s.
 * - Last use is batched: `touch` keeps the latest time per id in memory, and every `touchFlushMs`
 *   one multi-row UPDATE writes them all (never moving a time back, so instances can race).
 *   When the write fails the times are kept for the next flush.
 * - The pool belongs to the caller: `close` flushes and stops the timer, it does not end the pool.
 */
export class PostgresApiKeyStore implements ApiKeyStore {
  readonly #pool: Pool;
  readonly #t: string;
  readonly #pending = new Map<string, number>();
  readonly #cache = new KeyRecordCache();
  readonly #timer: NodeJS.Timeout;
  readonly #onError: ((err: unknown) => void) | undefined;
  readonly #onChange: ((id: string) => void) | undefined;
  #flushing: Promise<void> = Promise.resolve();

  /**
   * `onChange` is called after this process changed a key (insert, update): distributed mode
   * broadcasts it so every instance drops its cached record at once (src/store/distributed.ts).
   */
  constructor(
    db: PostgresDb,
    options: {
      touchFlushMs?: number;
      onError?: (err: unknown) => void;
      onChange?: (id: string) => void;
    } = {},
  ) {
    this.#pool = db.pool;
    this.#t = `${db.schema}.api_keys`;
    this.#onError = options.onError;
    this.#onChange = options.onChange;
    this.#timer = setInterval(() => {
      this.flush().catch((err: unknown) => this.#onError?.(err));
    }, options.touchFlushMs ?? 5000);
    this.#timer.unref();
  }

  async #query<R extends object>(what: string, sql: string, params: unknown[]): Promise<R[]> {
    try {
      return (await this.#pool.query<R>(sql, params)).rows;
    } catch (err) {
      throw storeError(err, what);
    }
  }

  async insert(r: ApiKeyRecord): Promise<void> {
    this.#cache.forget(r.id);
    await this.#query(
      "api key insert",
      `INSERT INTO ${this.#t} (${KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
      [
        r.id,
        r.name,
        r.server,
        r.tenant,
        r.consumer,
        r.hash,
        r.scopes,
        r.tools,
        r.createdAt,
        r.expiresAt,
        r.revokedAt,
        r.lastUsedAt,
        r.rotatedTo,
      ],
    );
    this.#onChange?.(r.id);
  }

  /** Drops the cached record of a key another instance changed (every record when no id). */
  invalidate(id?: string): void {
    if (id === undefined) this.#cache.clear();
    else this.#cache.forget(id);
  }

  #withPending(rec: ApiKeyRecord): ApiKeyRecord {
    return withUse(rec, this.#pending.get(rec.id));
  }

  async get(id: string): Promise<ApiKeyRecord | undefined> {
    const now = Date.now();
    const cached = this.#cache.fresh(id, now);
    if (cached) return this.#withPending(cached);
    let rows: ApiKeyRow[];
    try {
      rows = await this.#query<ApiKeyRow>(
        "api key lookup",
        `SELECT ${KEY_COLUMNS} FROM ${this.#t} WHERE id = $1`,
        [id],
      );
    } catch (err) {
      // PostgreSQL unreachable: a record read recently still answers, for a bounded time
      // (KEY_STALE_MAX_MS); past it, or for a key never seen, the check fails closed (503).
      const stale = this.#cache.stale(id, now, KEY_STALE_MAX_MS);
      if (stale && err instanceof GatewayError && err.code === "EDGE_STORE_UNAVAILABLE")
        return this.#withPending(stale);
      throw err;
    }
    const row = rows[0];
    if (!row) {
      this.#cache.forget(id);
      return undefined;
    }
    const rec = this.#withPending(toKey(row));
    this.#cache.remember(rec, now);
    return rec;
  }

  async byName(server: string, tenant: string, name: string): Promise<ApiKeyRecord[]> {
    const rows = await this.#query<ApiKeyRow>(
      "api keys by name",
      `SELECT ${KEY_COLUMNS} FROM ${this.#t} WHERE server = $1 AND tenant = $2 AND name = $3
       ORDER BY created_at DESC, ord DESC`,
      [server, tenant, name],
    );
    return rows.map((r) => this.#withPending(toKey(r)));
  }

  async list(filter: ApiKeyFilter): Promise<ApiKeyRecord[]> {
    const rows = await this.#query<ApiKeyRow>(
      "api key list",
      `SELECT ${KEY_COLUMNS} FROM ${this.#t} WHERE ($1::text IS NULL OR server = $1) AND ($2::text IS NULL OR tenant = $2)
       ORDER BY created_at DESC, ord DESC`,
      [filter.server ?? null, filter.tenant ?? null],
    );
    return rows.map((r) => this.#withPending(toKey(r)));
  }

  async update(
    id: string,
    patch: Partial<Pick<ApiKeyRecord, "expiresAt" | "revokedAt" | "rotatedTo">>,
  ): Promise<void> {
    const cols = KEY_UPDATE_COLUMNS;
    const entries = Object.entries(patch).filter(([k]) => k in cols);
    if (entries.length === 0) return;
    const sets = entries.map(([k], i) => `${cols[k]} = $${i + 2}`).join(", ");
    this.#cache.forget(id);
    await this.#query("api key update", `UPDATE ${this.#t} SET ${sets} WHERE id = $1`, [
      id,
      ...entries.map(([, v]) => v ?? null),
    ]);
    this.#cache.forget(id); // a lookup that ran meanwhile may have cached the row as it was
    this.#onChange?.(id);
  }

  touch(id: string, at: number): void {
    const prev = this.#pending.get(id);
    if (prev === undefined || at > prev) this.#pending.set(id, at);
    this.#cache.noteUse(id, at);
  }

  /** Writes pending uses in one UPDATE (flushes are serialized). */
  flush(): Promise<void> {
    const run = this.#flushing.then(
      () => this.#flushOnce(),
      () => this.#flushOnce(),
    );
    this.#flushing = run.catch(() => {});
    return run;
  }

  async #flushOnce(): Promise<void> {
    if (this.#pending.size === 0) return;
    const batch = [...this.#pending];
    this.#pending.clear();
    try {
      await this.#query(
        "api key last use",
        `UPDATE ${this.#t} AS k SET last_used_at = u.at
         FROM unnest($1::text[], $2::bigint[]) AS u(id, at)
         WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)`,
        [batch.map(([id]) => id), batch.map(([, at]) => at)],
      );
    } catch (err) {
      // Keep the uses for the next flush (a newer touch in the meantime wins).
      for (const [id, at] of batch) this.touch(id, at);
      throw err;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }
}
