import type { ApiKeyRecord } from "./types.ts";

/** How long a key record read by id is reused before the row is read again (ms). */
export const KEY_CACHE_TTL_MS = 1000;
/**
 * Default bound of a record's age in the PostgreSQL key store (`store.postgres.keyStaleness`): a
 * record older than KEY_CACHE_TTL_MS and younger than this is served while it is re-read in the
 * background (and while the store is unreachable); an older one is never served (ms).
 */
export const KEY_STALE_MAX_MS = 30_000;
/** Records kept by id at most (the cache is cleared past it: it holds live keys, not every id tried). */
const KEY_CACHE_MAX = 10_000;

/** Columns of the fields an ApiKeyStore `update` may change, in SQL spelling (both SQL stores). */
export const KEY_UPDATE_COLUMNS: Readonly<Record<string, string>> = {
  expiresAt: "expires_at",
  revokedAt: "revoked_at",
  rotatedTo: "rotated_to",
};

/** The record with a use not yet written applied (last use never goes back). */
export function withUse(rec: ApiKeyRecord, usedAt: number | undefined): ApiKeyRecord {
  if (usedAt !== undefined && (rec.lastUsedAt === null || usedAt > rec.lastUsedAt)) rec.lastUsedAt = usedAt;
  return rec;
}

/** A deep copy of a key record: its scalars and its two arrays. */
export function copyKey(rec: ApiKeyRecord): ApiKeyRecord {
  return { ...rec, scopes: [...rec.scopes], tools: rec.tools ? [...rec.tools] : rec.tools };
}

/**
 * Key records read by id, reused for KEY_CACHE_TTL_MS by the SQL key stores: the lookup runs on
 * every authenticated request (~13 µs for the SQLite SELECT under load, more over the network for
 * PostgreSQL). Writes through the store `forget` the record at once, so a revocation made through
 * this process applies to the next request; one made by another process applies within the TTL.
 * Unknown ids are never cached (a key created elsewhere works at once). Records go in and out as
 * deep copies: callers may change what they get, arrays included (`copyKey`: the record's own
 * shape, about 20 times cheaper than structuredClone, which cost ~3% of the edge's CPU per call).
 */
export class KeyRecordCache {
  readonly #byId = new Map<string, { rec: ApiKeyRecord; readAt: number }>();
  #epoch = 0;

  /** A copy of the record when it was read less than the TTL ago. */
  fresh(id: string, now: number): ApiKeyRecord | undefined {
    const hit = this.#byId.get(id);
    return hit && now - hit.readAt < KEY_CACHE_TTL_MS ? copyKey(hit.rec) : undefined;
  }

  /**
   * A copy of the record and its age when it was read less than `maxAgeMs` ago: what key checks
   * use while it is re-read, or while the store is unreachable (closed after a bounded staleness).
   */
  aged(id: string, now: number, maxAgeMs: number): { rec: ApiKeyRecord; ageMs: number } | undefined {
    const hit = this.#byId.get(id);
    if (hit === undefined) return undefined;
    const ageMs = now - hit.readAt;
    return ageMs < maxAgeMs ? { rec: copyKey(hit.rec), ageMs } : undefined;
  }

  /**
   * Keeps a record read at `now`, unless a `forget` or `clear` came after `epoch` (the `epoch` taken
   * when its read started): a read that began before a revocation never puts the old row back.
   */
  remember(rec: ApiKeyRecord, now: number, epoch = this.#epoch): void {
    if (epoch !== this.#epoch) return;
    if (this.#byId.size >= KEY_CACHE_MAX) this.#byId.clear();
    this.#byId.set(rec.id, { rec: copyKey(rec), readAt: now });
  }

  /** Changes on every `forget` and `clear` (see `remember`). */
  get epoch(): number {
    return this.#epoch;
  }

  forget(id: string): void {
    this.#epoch++;
    this.#byId.delete(id);
  }

  clear(): void {
    this.#epoch++;
    this.#byId.clear();
  }

  /** A use moves the cached record too, so a read never goes back in time once it is written. */
  noteUse(id: string, at: number): void {
    const hit = this.#byId.get(id);
    if (hit) withUse(hit.rec, at);
  }
}
