/**
 * The audit store interface and its memory implementation. The SQLite implementation is in
 * `sqlite.ts`; both pass test/contract/audit-store.contract.ts (DESIGN.md convention 2).
 *
 * A store keeps chained records exactly as they were hashed (`text`, the canonical JSON of the
 * record without its hash), so verification needs nothing but the store.
 */
import type { AuditRecord } from "./record.ts";

/** A record ready to store: the record, and the exact text its hash covers. */
export interface ChainedRecord {
  record: AuditRecord;
  text: string;
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

export interface AuditStore {
  /**
   * Appends records atomically (all or none), in the given order. A record whose (chain, seq) is
   * already stored is skipped (spool replay after a crash is idempotent). Throws when unavailable.
   */
  append(records: readonly ChainedRecord[]): Promise<void>;
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
