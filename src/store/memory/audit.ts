/**
 * The audit store interface and its memory implementations. The SQLite implementation is in
 * `sqlite.ts`, the PostgreSQL one in `postgres.ts`; all pass test/contract/audit-store.contract.ts
 * (DESIGN.md convention 2), and those that chain on the store side (`appendChained`) its chaining
 * suite too.
 *
 * A store keeps chained records exactly as they were hashed (`text`, the canonical JSON of the
 * record without its hash), so verification needs nothing but the store.
 */
import { chainRecord, type Heads } from "../../audit/chain.ts";
import { type AuditRecord, type FinalRecord, GENESIS } from "../../audit/record.ts";

/** A record ready to store: the record, and the exact text its hash covers. */
export interface ChainedRecord {
  record: AuditRecord;
  text: string;
}

/**
 * Records chained in memory that do not continue the stored chain (another writer appended to it
 * since their heads were read): a store with several writers refuses them rather than fork the
 * chain or skip them as "already stored".
 */
export class AuditChainConflictError extends Error {
  override readonly name = "AuditChainConflictError";
}

/** A stored row as verification reads it. */
export interface StoredRow {
  chain: string;
  seq: number;
  hash: string;
  text: string;
  /** The indexed copies of record fields (filters use them; verification checks them). */
  columns: { ts: number; type: string; tenant: string | null; subject: string | null; target: string | null };
}

/** An audit row as both SQL stores read it (the record's text plus its indexed columns). */
export interface AuditRow {
  id: number;
  chain: string;
  seq: number;
  ts: number;
  type: string;
  tenant: string | null;
  subject: string | null;
  target: string | null;
  record: string;
  hash: string;
}

export interface AuditFilter {
  tenant?: string;
  subject?: string;
  /** Matches `target`: tool name, resource URI or prompt name. */
  tool?: string;
  type?: string;
  /** Inclusive lower bound, ms since epoch. */
  since?: number;
  /** Exclusive upper bound, ms since epoch. */
  until?: number;
}

export interface AuditPageRequest {
  limit: number;
  /** Opaque, from a previous page's `next`. */
  cursor?: string;
  /** `asc` (oldest first, default) or `desc` (newest first). */
  order?: "asc" | "desc";
}

export interface AuditPage {
  records: AuditRecord[];
  /**
   * Where the next page starts. Ascending, it is always set: a follower (`audit tail`) polls with it
   * and gets the records written since. Descending, null once the oldest record was reached.
   */
  next: string | null;
  /** More matching records exist beyond this page right now. */
  more: boolean;
}

export interface AppendChainedOptions {
  /**
   * One write key per record, unique across writers and stored with it. With `retry`, a record
   * whose key is already stored is not stored again.
   */
  keys?: readonly string[];
  /**
   * The batch may have been stored already: an earlier call failed without saying whether it
   * committed (a connection lost at COMMIT), or it comes from the spool. Records whose key is
   * stored are returned as stored, the others are chained and stored: a retry stores each once.
   */
  retry?: boolean;
}

export interface AuditStore {
  /**
   * Appends records atomically (all or none), in the given order. A record whose (chain, seq) is
   * already stored is skipped (spool replay after a crash is idempotent). Throws when unavailable.
   */
  append(records: readonly ChainedRecord[]): Promise<void>;
  /**
   * Store-side chaining, for stores that several processes write to (PostgreSQL): chains finalized
   * records after the committed head of their tenant's chain and stores them, all or none, in the
   * given order; returns them as stored. When a store has it, AuditLog uses it instead of chaining
   * in memory (whose heads would be wrong as soon as another process appends). Throws when
   * unavailable.
   */
  appendChained?(records: readonly FinalRecord[], options?: AppendChainedOptions): Promise<ChainedRecord[]>;
  /** The last record of every chain. */
  heads(): Promise<Map<string, { seq: number; hash: string }>>;
  query(filter: AuditFilter, page: AuditPageRequest): Promise<AuditPage>;
  chains(): Promise<string[]>;
  /** Rows of one chain with seq > afterSeq, by seq, at most `limit` (verification). */
  scan(chain: string, afterSeq: number, limit: number): Promise<StoredRow[]>;
  close(): Promise<void>;
}

export function rowOf(c: ChainedRecord): StoredRow {
  const r = c.record;
  return {
    chain: r.chain,
    seq: r.seq,
    hash: r.hash,
    text: c.text,
    columns: { ts: Date.parse(r.time), type: r.type, tenant: r.tenant, subject: r.subject, target: r.target },
  };
}

/** The record a stored row holds (its text, plus the stored hash). */
export function recordOf(row: { text: string; hash: string }): AuditRecord {
  return { ...(JSON.parse(row.text) as Omit<AuditRecord, "hash">), hash: row.hash };
}

export function matches(f: AuditFilter, c: StoredRow["columns"]): boolean {
  return (
    (f.tenant === undefined || c.tenant === f.tenant) &&
    (f.subject === undefined || c.subject === f.subject) &&
    (f.tool === undefined || c.target === f.tool) &&
    (f.type === undefined || c.type === f.type) &&
    (f.since === undefined || c.ts >= f.since) &&
    (f.until === undefined || c.ts < f.until)
  );
}

/** Records in memory (tests, and a gateway without a database). */
export class MemoryAuditStore implements AuditStore {
  readonly #rows: StoredRow[] = [];
  readonly #keys = new Set<string>();
  /** Fault switch for tests of the spool: while set, `append` throws. */
  failing = false;

  async append(records: readonly ChainedRecord[]): Promise<void> {
    if (this.failing) throw new Error("audit store unavailable");
    for (const c of records) {
      const key = `${c.record.chain}\u0000${c.record.seq}`;
      if (this.#keys.has(key)) continue;
      this.#keys.add(key);
      this.#rows.push(rowOf(c));
    }
  }

  async heads(): Promise<Map<string, { seq: number; hash: string }>> {
    const heads = new Map<string, { seq: number; hash: string }>();
    for (const r of this.#rows) {
      const h = heads.get(r.chain);
      if (!h || r.seq > h.seq) heads.set(r.chain, { seq: r.seq, hash: r.hash });
    }
    return heads;
  }

  async query(filter: AuditFilter, page: AuditPageRequest): Promise<AuditPage> {
    const desc = page.order === "desc";
    const n = this.#rows.length;
    const from = page.cursor !== undefined ? Number(page.cursor) : desc ? n : -1;
    const out: AuditRecord[] = [];
    const further = (start: number, step: number): boolean => {
      for (let j = start; j >= 0 && j < n; j += step) {
        if (matches(filter, (this.#rows[j] as StoredRow).columns)) return true;
      }
      return false;
    };
    if (desc) {
      let i = Math.min(from, n) - 1;
      for (; i >= 0 && out.length < page.limit; i--) {
        const row = this.#rows[i] as StoredRow;
        if (matches(filter, row.columns)) out.push(recordOf(row));
      }
      const more = further(i, -1);
      return { records: out, next: more ? String(i + 1) : null, more };
    }
    let i = from + 1;
    for (; i < n && out.length < page.limit; i++) {
      const row = this.#rows[i] as StoredRow;
      if (matches(filter, row.columns)) out.push(recordOf(row));
    }
    return { records: out, next: String(Math.max(from, i - 1)), more: further(i, 1) };
  }

  async chains(): Promise<string[]> {
    return [...new Set(this.#rows.map((r) => r.chain))].sort();
  }

  async scan(chain: string, afterSeq: number, limit: number): Promise<StoredRow[]> {
    return this.#rows
      .filter((r) => r.chain === chain && r.seq > afterSeq)
      .sort((a, b) => a.seq - b.seq)
      .slice(0, limit);
  }

  /** Test helper: the stored rows themselves (to tamper with in verification tests). */
  rows(): StoredRow[] {
    return this.#rows;
  }

  async close(): Promise<void> {}
}

/** The finalized record a chained one was made from (its chain fields taken off). */
export function finalOf(record: AuditRecord): FinalRecord {
  const { v: _v, chain: _c, seq: _s, prev: _p, hash: _h, ...final } = record;
  return final;
}

/**
 * A memory store that chains on the store side, as PostgreSQL does (tests of AuditLog with
 * several writers). `failing` fails every write; `failAfterCommit` stores the next batch and then
 * throws, as a connection lost at COMMIT does.
 */
export class MemoryChainingAuditStore extends MemoryAuditStore {
  readonly #byKey = new Map<string, ChainedRecord>();
  failAfterCommit = false;

  /** As PostgreSQL's: records chained elsewhere must extend the stored chain (or be stored already). */
  override async append(records: readonly ChainedRecord[]): Promise<void> {
    if (this.failing) throw new Error("audit store unavailable");
    const heads: Heads = await this.heads();
    const stored = new Map(this.rows().map((r) => [`${r.chain}\u0000${r.seq}`, r.hash]));
    for (const { record: r } of records) {
      const at = stored.get(`${r.chain}\u0000${r.seq}`);
      if (at === r.hash) continue;
      const head = heads.get(r.chain) ?? { seq: 0, hash: GENESIS };
      if (at !== undefined || r.seq !== head.seq + 1 || r.prev !== head.hash) {
        throw new AuditChainConflictError(
          `audit record ${r.seq} of chain "${r.chain}" does not follow the stored head`,
        );
      }
      heads.set(r.chain, { seq: r.seq, hash: r.hash });
    }
    await super.append(records);
  }

  async appendChained(
    records: readonly FinalRecord[],
    options: AppendChainedOptions = {},
  ): Promise<ChainedRecord[]> {
    if (this.failing) throw new Error("audit store unavailable");
    const heads: Heads = await this.heads();
    const out: ChainedRecord[] = [];
    const fresh: ChainedRecord[] = [];
    records.forEach((r, i) => {
      const key = options.keys?.[i];
      const stored = key !== undefined && options.retry ? this.#byKey.get(key) : undefined;
      if (stored) return void out.push(stored);
      const c = chainRecord(heads, r);
      if (key !== undefined) this.#byKey.set(key, c);
      fresh.push(c);
      out.push(c);
    });
    await this.append(fresh);
    if (this.failAfterCommit) {
      this.failAfterCommit = false;
      throw new Error("connection lost at COMMIT");
    }
    return out;
  }
}
