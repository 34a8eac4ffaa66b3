/** API keys in the embedded SQLite file (tables: src/store/sqlite/db.ts migrations). */
import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { ApiKeyFilter, ApiKeyRecord, ApiKeyStore } from "../types.ts";
import { KEY_UPDATE_COLUMNS, KeyRecordCache, withUse } from "../key-cache.ts";
import { openDatabase, TouchBatch } from "./db.ts";

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
        `SELECT * FROM api_keys WHERE (?1 IS NULL OR server = ?1 OR server = '*'
           OR instr(',' || server || ',', ',' || ?1 || ',') > 0) AND (?2 IS NULL OR tenant = ?2)
         ORDER BY created_at DESC, rowid DESC`,
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
