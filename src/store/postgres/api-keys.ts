/** API keys in PostgreSQL (distributed mode; tables: src/store/postgres/db.ts migrations). */
import type { ApiKeyFilter, ApiKeyRecord, ApiKeyStore } from "../types.ts";
import {
  KEY_CACHE_TTL_MS,
  KEY_STALE_MAX_MS,
  KEY_UPDATE_COLUMNS,
  KeyRecordCache,
  withUse,
} from "../key-cache.ts";
import type { PostgresDb } from "./db.ts";
import { withDeadline } from "../../lib/breaker.ts";

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

/** How long a request waits for the re-read of a key past its freshness before the copy answers (ms). */
const KEY_REREAD_WAIT_MS = 100;

const KEY_COLUMNS =
  "id, name, server, tenant, consumer, hash, scopes, tools, created_at, expires_at, revoked_at, last_used_at, rotated_to";

/**
 * API keys in PostgreSQL: hashes only, the semantics of SqliteApiKeyStore.
 *
 * - `get` (every authenticated request) goes through a KeyRecordCache (src/store/key-cache.ts):
 *   a record read by id is reused for up to 1 s (KEY_CACHE_TTL_MS). An older one is read again
 *   (one re-read per key at a time); when PostgreSQL answers within KEY_REREAD_WAIT_MS the answer
 *   is used, so on a healthy store a change made elsewhere applies within 1 s even without its
 *   broadcast. When it does not (slow, hung, or the pool's breaker open), the copy is served, up
 *   to `staleMs` old (`store.postgres.keyStaleness`), while the re-read goes on in the background:
 *   a slow or hung PostgreSQL costs a request at most KEY_REREAD_WAIT_MS when its key was read
 *   recently. Only a key never read, or read longer than `staleMs` ago, waits for the store (at
 *   most its query timeout; 503 at once while the breaker is open) and fails closed (503).
 * - Writes through this store drop the record at once, and `invalidate` (the broadcast of a change
 *   made on another instance) drops it too: a revoked key is read again before its next use, and
 *   a read that started before the revocation does not put the old row back.
 * - Last use is batched: `touch` keeps the latest time per id in memory, and every `touchFlushMs`
 *   one multi-row UPDATE writes them all (never moving a time back, so instances can race).
 *   When the write fails the times are kept for the next flush.
 * - The pool belongs to the caller: `close` flushes and stops the timer, it does not end the pool.
 */
export class PostgresApiKeyStore implements ApiKeyStore {
  readonly #db: PostgresDb;
  readonly #t: string;
  readonly #pending = new Map<string, number>();
  readonly #cache = new KeyRecordCache();
  readonly #staleMs: number;
  /** Re-reads of keys past their freshness, under way (one per key at a time). */
  readonly #rereads = new Map<string, { read: Promise<ApiKeyRecord | undefined>; startedAt: number }>();
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
      /** Longest age of a record served without waiting for the store (ms). Default 30 s. */
      staleMs?: number;
      onError?: (err: unknown) => void;
      onChange?: (id: string) => void;
    } = {},
  ) {
    this.#db = db;
    this.#t = `${db.schema}.api_keys`;
    this.#staleMs = Math.max(KEY_CACHE_TTL_MS, options.staleMs ?? KEY_STALE_MAX_MS);
    this.#onError = options.onError;
    this.#onChange = options.onChange;
    this.#timer = setInterval(() => {
      this.flush().catch((err: unknown) => this.#onError?.(err));
    }, options.touchFlushMs ?? 5000);
    this.#timer.unref();
  }

  async #query<R extends object>(what: string, sql: string, params: unknown[]): Promise<R[]> {
    return (await this.#db.run(what, (pool) => pool.query<R>(sql, params))).rows;
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
    const hit = this.#cache.aged(id, now, this.#staleMs);
    if (hit === undefined) return this.#read(id);
    if (hit.ageMs < KEY_CACHE_TTL_MS) return this.#withPending(hit.rec);
    // Past its freshness: the re-read answers when PostgreSQL does within KEY_REREAD_WAIT_MS of
    // the re-read's start; otherwise the copy does, and the re-read goes on in the background.
    const reread = this.#reread(id, now);
    const wait = KEY_REREAD_WAIT_MS - (now - reread.startedAt);
    if (wait > 0) {
      try {
        return await withDeadline(reread.read, wait, () => new Error("re-read still running"));
      } catch {
        // Slow, failed or refused (the breaker is open): the copy, within its bounded age.
      }
    }
    return this.#withPending(hit.rec);
  }

  /** The re-read of a key under way, or a new one (one per key at a time). */
  #reread(id: string, now: number): { read: Promise<ApiKeyRecord | undefined>; startedAt: number } {
    let r = this.#rereads.get(id);
    if (r === undefined) {
      const read = this.#read(id);
      r = { read, startedAt: now };
      this.#rereads.set(id, r);
      const done = () => this.#rereads.delete(id);
      read.then(done, done);
    }
    return r;
  }

  async #read(id: string): Promise<ApiKeyRecord | undefined> {
    const epoch = this.#cache.epoch;
    const readAt = Date.now();
    const rows = await this.#query<ApiKeyRow>(
      "api key lookup",
      `SELECT ${KEY_COLUMNS} FROM ${this.#t} WHERE id = $1`,
      [id],
    );
    const row = rows[0];
    if (!row) {
      this.#cache.forget(id);
      return undefined;
    }
    const rec = this.#withPending(toKey(row));
    this.#cache.remember(rec, readAt, epoch);
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
      `SELECT ${KEY_COLUMNS} FROM ${this.#t} WHERE ($1::text IS NULL OR server = $1 OR server = '*'
         OR position(',' || $1 || ',' in ',' || server || ',') > 0) AND ($2::text IS NULL OR tenant = $2)
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
