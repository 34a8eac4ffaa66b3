import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import type {
  ApiKeyFilter,
  ApiKeyRecord,
  ApiKeyStore,
  SessionRecord,
  SessionStore,
  UpstreamBinding,
} from "../types.ts";
import { KEY_UPDATE_COLUMNS, KeyRecordCache, withUse } from "../key-cache.ts";

/**
 * Versioned migrations, applied in order at open; `PRAGMA user_version` records the last one.
 * Append only: never edit a migration that has shipped.
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE sessions (
     id TEXT PRIMARY KEY,
     server TEXT NOT NULL,
     principal TEXT NOT NULL,
     tenant TEXT,
     transport TEXT NOT NULL,
     protocol_version TEXT NOT NULL,
     init_params TEXT NOT NULL,
     upstream_instance TEXT NOT NULL,
     upstream_session TEXT,
     created_at INTEGER NOT NULL,
     last_seen_at INTEGER NOT NULL
   ) STRICT;
   CREATE INDEX sessions_idle ON sessions (server, last_seen_at);`,
  `CREATE TABLE api_keys (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     server TEXT NOT NULL,
     tenant TEXT NOT NULL,
     consumer TEXT NOT NULL,
     hash TEXT NOT NULL,
     scopes TEXT NOT NULL,
     tools TEXT,
     created_at INTEGER NOT NULL,
     expires_at INTEGER,
     revoked_at INTEGER,
     last_used_at INTEGER,
     rotated_to TEXT
   ) STRICT;
   CREATE INDEX api_keys_name ON api_keys (server, tenant, name, created_at);`,
  // Audit records (src/store/sqlite/audit.ts): `record` is the canonical JSON the hash covers; the other
  // columns are indexed copies for filters. `id` is the insertion order (paging cursor).
  `CREATE TABLE audit (
     id INTEGER PRIMARY KEY,
     chain TEXT NOT NULL,
     seq INTEGER NOT NULL,
     ts INTEGER NOT NULL,
     type TEXT NOT NULL,
     tenant TEXT,
     subject TEXT,
     target TEXT,
     record TEXT NOT NULL,
     hash TEXT NOT NULL,
     UNIQUE (chain, seq)
   ) STRICT;
   CREATE INDEX audit_tenant_ts ON audit (tenant, ts);`,
];

/** Opens (creating if needed) the embedded database file with WAL and the migrations applied. */
export function openDatabase(file: string): DatabaseSync {
  if (file !== ":memory:") mkdirSync(dirname(file), { recursive: true });
  const db = new DatabaseSync(file);
  // 16 KiB pages for a new file (an existing one keeps its size): audit rows are ~1 KB each, and
  // appending them costs about 30% less CPU than with 4 KiB pages (scratch measurement: 3.1 → 2.3
  // µs per row). Must come before WAL is set on a new database; a no-op on an existing one.
  db.exec("PRAGMA page_size = 16384");
  // WAL: readers never block the writer; NORMAL sync is durable across process crashes (a
  // SIGKILL loses nothing committed), which is the failure mcp-edge promises to survive.
  db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;");
  const row = db.prepare("PRAGMA user_version").get() as { user_version: number };
  for (let v = row.user_version; v < MIGRATIONS.length; v++) {
    db.exec("BEGIN");
    try {
      db.exec(MIGRATIONS[v] as string);
      db.exec(`PRAGMA user_version = ${v + 1}`);
      db.exec("COMMIT");
    } catch (err) {
      db.exec("ROLLBACK");
      throw err;
    }
  }
  return db;
}

/**
 * Batched "last seen" writes: a time per id kept in memory (the latest wins) and written in one
 * transaction every `intervalMs`, so a request never waits for a write it does not need. Shared by
 * session activity and API-key last use.
 */
class TouchBatch {
  readonly #pending = new Map<string, number>();
  readonly #db: DatabaseSync;
  readonly #write: StatementSync;
  readonly #timer: NodeJS.Timeout;

  /** `write` takes (at, id, at): set the time where it is older. */
  constructor(db: DatabaseSync, write: StatementSync, intervalMs: number) {
    this.#db = db;
    this.#write = write;
    this.#timer = setInterval(() => this.flush(), intervalMs);
    this.#timer.unref();
  }

  touch(id: string, at: number): void {
    const prev = this.#pending.get(id);
    if (prev === undefined || at > prev) this.#pending.set(id, at);
  }

  pending(id: string): number | undefined {
    return this.#pending.get(id);
  }

  forget(id: string): void {
    this.#pending.delete(id);
  }

  flush(): void {
    if (this.#pending.size === 0) return;
    const batch = [...this.#pending];
    this.#pending.clear();
    this.#db.exec("BEGIN");
    try {
      for (const [id, at] of batch) this.#write.run(at, id, at);
      this.#db.exec("COMMIT");
    } catch (err) {
      this.#db.exec("ROLLBACK");
      throw err;
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    this.flush();
  }
}

interface SessionRow {
  id: string;
  server: string;
  principal: string;
  tenant: string | null;
  transport: string;
  protocol_version: string;
  init_params: string;
  upstream_instance: string;
  upstream_session: string | null;
  created_at: number;
  last_seen_at: number;
}

function toRecord(row: SessionRow): SessionRecord {
  return {
    id: row.id,
    server: row.server,
    principal: row.principal,
    tenant: row.tenant,
    transport: row.transport === "legacy-sse" ? "legacy-sse" : "streamable",
    protocolVersion: row.protocol_version,
    initParams: JSON.parse(row.init_params) as Record<string, unknown>,
    upstream: { instance: row.upstream_instance, sessionId: row.upstream_session },
    createdAt: row.created_at,
    lastSeenAt: row.last_seen_at,
  };
}

/**
 * Session records in SQLite (node:sqlite, no native build). Statements are prepared once.
 * `touch` is batched: last-seen times are written at most every `touchFlushMs`, so a request never
 * waits for a write it does not need.
 */
export class SqliteSessionStore implements SessionStore {
  readonly #db: DatabaseSync;
  readonly #ownsDb: boolean;
  readonly #touches: TouchBatch;
  readonly #stmt: {
    get: StatementSync;
    put: StatementSync;
    rebind: StatementSync;
    touch: StatementSync;
    del: StatementSync;
    idle: StatementSync;
    count: StatementSync;
    list: StatementSync;
  };

  constructor(db: DatabaseSync | string, options: { touchFlushMs?: number } = {}) {
    this.#ownsDb = typeof db === "string";
    this.#db = typeof db === "string" ? openDatabase(db) : db;
    this.#stmt = {
      get: this.#db.prepare("SELECT * FROM sessions WHERE id = ?"),
      put: this.#db.prepare(
        `INSERT OR REPLACE INTO sessions (id, server, principal, tenant, transport, protocol_version, init_params,
           upstream_instance, upstream_session, created_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      rebind: this.#db.prepare(
        "UPDATE sessions SET upstream_instance = ?, upstream_session = ?, protocol_version = ? WHERE id = ?",
      ),
      touch: this.#db.prepare("UPDATE sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?"),
      del: this.#db.prepare("DELETE FROM sessions WHERE id = ?"),
      idle: this.#db.prepare("SELECT * FROM sessions WHERE server = ? AND last_seen_at < ? LIMIT ?"),
      list: this.#db.prepare(
        "SELECT * FROM sessions WHERE (?1 IS NULL OR server = ?1) AND (?2 IS NULL OR tenant = ?2) ORDER BY created_at DESC LIMIT ?3",
      ),
      count: this.#db.prepare(
        "SELECT upstream_instance AS instance, COUNT(*) AS n FROM sessions WHERE server = ? GROUP BY upstream_instance",
      ),
    };
    this.#touches = new TouchBatch(this.#db, this.#stmt.touch, options.touchFlushMs ?? 2000);
  }

  async get(id: string): Promise<SessionRecord | undefined> {
    const row = this.#stmt.get.get(id) as SessionRow | undefined;
    if (!row) return undefined;
    const rec = toRecord(row);
    const pending = this.#touches.pending(id);
    if (pending !== undefined && pending > rec.lastSeenAt) rec.lastSeenAt = pending;
    return rec;
  }

  async put(r: SessionRecord): Promise<void> {
    this.#stmt.put.run(
      r.id,
      r.server,
      r.principal,
      r.tenant,
      r.transport,
      r.protocolVersion,
      JSON.stringify(r.initParams),
      r.upstream.instance,
      r.upstream.sessionId,
      r.createdAt,
      r.lastSeenAt,
    );
  }

  async rebind(id: string, upstream: UpstreamBinding, protocolVersion: string): Promise<void> {
    this.#stmt.rebind.run(upstream.instance, upstream.sessionId, protocolVersion, id);
  }

  touch(id: string, at: number): void {
    this.#touches.touch(id, at);
  }

  async delete(id: string): Promise<boolean> {
    this.#touches.forget(id);
    return this.#stmt.del.run(id).changes > 0;
  }

  async listIdle(server: string, cutoff: number, limit: number): Promise<SessionRecord[]> {
    this.#touches.flush();
    return (this.#stmt.idle.all(server, cutoff, limit) as unknown as SessionRow[]).map(toRecord);
  }

  async list(filter: { server?: string; tenant?: string }, limit: number): Promise<SessionRecord[]> {
    this.#touches.flush();
    const rows = this.#stmt.list.all(
      filter.server ?? null,
      filter.tenant ?? null,
      limit,
    ) as unknown as SessionRow[];
    return rows.map(toRecord);
  }

  async countByInstance(server: string): Promise<Map<string, number>> {
    const rows = this.#stmt.count.all(server) as unknown as { instance: string; n: number }[];
    return new Map(rows.map((r) => [r.instance, r.n]));
  }

  async flush(): Promise<void> {
    this.#touches.flush();
  }

  async close(): Promise<void> {
    this.#touches.stop();
    if (this.#ownsDb) this.#db.close();
  }
}

interface ApiKeyRow {
  id: string;
  name: string;
  server: string;
  tenant: string;
  consumer: string;
  hash: string;
  scopes: string;
  tools: string | null;
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
    scopes: JSON.parse(row.scopes) as string[],
    tools: row.tools === null ? null : (JSON.parse(row.tools) as string[]),
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
    rotatedTo: row.rotated_to,
  };
}

/**
 * API keys in SQLite: hashes only. Last use is batched like session touches; reads by id go
 * through a KeyRecordCache (src/store/key-cache.ts).
 */
export class SqliteApiKeyStore implements ApiKeyStore {
  readonly #db: DatabaseSync;
  readonly #ownsDb: boolean;
  readonly #uses: TouchBatch;
  readonly #cache = new KeyRecordCache();
  readonly #stmt: {
    insert: StatementSync;
    get: StatementSync;
    byName: StatementSync;
    list: StatementSync;
    touch: StatementSync;
  };

  constructor(db: DatabaseSync | string, options: { touchFlushMs?: number } = {}) {
    this.#ownsDb = typeof db === "string";
    this.#db = typeof db === "string" ? openDatabase(db) : db;
    this.#stmt = {
      insert: this.#db.prepare(
        `INSERT INTO api_keys (id, name, server, tenant, consumer, hash, scopes, tools, created_at, expires_at,
           revoked_at, last_used_at, rotated_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      get: this.#db.prepare("SELECT * FROM api_keys WHERE id = ?"),
      byName: this.#db.prepare(
        "SELECT * FROM api_keys WHERE server = ? AND tenant = ? AND name = ? ORDER BY created_at DESC, rowid DESC",
      ),
      list: this.#db.prepare(
        "SELECT * FROM api_keys WHERE (?1 IS NULL OR server = ?1) AND (?2 IS NULL OR tenant = ?2) ORDER BY created_at DESC, rowid DESC",
      ),
      touch: this.#db.prepare(
        "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
      ),
    };
    this.#uses = new TouchBatch(this.#db, this.#stmt.touch, options.touchFlushMs ?? 5000);
  }

  async insert(r: ApiKeyRecord): Promise<void> {
    this.#cache.forget(r.id);
    this.#stmt.insert.run(
      r.id,
      r.name,
      r.server,
      r.tenant,
      r.consumer,
      r.hash,
      JSON.stringify(r.scopes),
      r.tools === null ? null : JSON.stringify(r.tools),
      r.createdAt,
      r.expiresAt,
      r.revokedAt,
      r.lastUsedAt,
      r.rotatedTo,
    );
  }

  #withPending(rec: ApiKeyRecord): ApiKeyRecord {
    return withUse(rec, this.#uses.pending(rec.id));
  }

  async get(id: string): Promise<ApiKeyRecord | undefined> {
    const now = Date.now();
    const cached = this.#cache.fresh(id, now);
    if (cached) return this.#withPending(cached);
    const row = this.#stmt.get.get(id) as ApiKeyRow | undefined;
    if (!row) {
      this.#cache.forget(id);
      return undefined;
    }
    const rec = this.#withPending(toKey(row));
    this.#cache.remember(rec, now);
    return rec;
  }

  async byName(server: string, tenant: string, name: string): Promise<ApiKeyRecord[]> {
    return (this.#stmt.byName.all(server, tenant, name) as unknown as ApiKeyRow[]).map((r) =>
      this.#withPending(toKey(r)),
    );
  }

  async list(filter: ApiKeyFilter): Promise<ApiKeyRecord[]> {
    return (this.#stmt.list.all(filter.server ?? null, filter.tenant ?? null) as unknown as ApiKeyRow[]).map(
      (r) => this.#withPending(toKey(r)),
    );
  }

  async update(
    id: string,
    patch: Partial<Pick<ApiKeyRecord, "expiresAt" | "revokedAt" | "rotatedTo">>,
  ): Promise<void> {
    const cols = KEY_UPDATE_COLUMNS;
    const entries = Object.entries(patch).filter(([k]) => k in cols);
    if (entries.length === 0) return;
    const sql = `UPDATE api_keys SET ${entries.map(([k]) => `${cols[k]} = ?`).join(", ")} WHERE id = ?`;
    this.#cache.forget(id);
    this.#db.prepare(sql).run(...entries.map(([, v]) => (v ?? null) as string | number | null), id);
  }

  touch(id: string, at: number): void {
    this.#uses.touch(id, at);
    this.#cache.noteUse(id, at);
  }

  async flush(): Promise<void> {
    this.#uses.flush();
  }

  async close(): Promise<void> {
    this.#uses.stop();
    if (this.#ownsDb) this.#db.close();
  }
}
