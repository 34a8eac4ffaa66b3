/**
 * The memory audit stores (the interface is AuditStore in src/store/types.ts; the SQLite and
 * PostgreSQL stores are src/store/sqlite/audit.ts and src/store/postgres/audit.ts). All pass
 * test/contract/audit-store.contract.ts, and those that chain on the store side (`appendChained`)
 * its chaining suite too.
 *
 * A store keeps chained records exactly as they were hashed (`text`, the canonical JSON of the
 * record without its hash), so verification needs nothing but the store.
 */
import { chainRecord } from "../../audit/chain.ts";
import { type AuditRecord, type FinalRecord, GENESIS } from "../../audit/record.ts";
import type {
  AppendChainedOptions,
  AuditFilter,
  AuditPage,
  AuditPageRequest,
  AuditStore,
  ChainedRecord,
  Heads,
  OpenCall,
  StoredRow,
} from "../types.ts";
import { openKey } from "../types.ts";
import { AuditChainConflictError, matches, recordOf, rowOf } from "../audit-rows.ts";

/** Records in memory (tests, and a gateway without a database). */
export class MemoryAuditStore implements AuditStore {
  readonly #rows: StoredRow[] = [];
  readonly #keys = new Set<string>();
  /** Fault switch for tests of the spool: while set, `append` throws. */
  failing = false;

  readonly #open = new Map<string, OpenCall>();
  /** Writers' heartbeats (ms), as the PostgreSQL store keeps them. */
  readonly #seen = new Map<string, number>();

  async append(records: readonly ChainedRecord[]): Promise<void> {
    if (this.failing) throw new Error("audit store unavailable");
    for (const c of records) {
      const key = `${c.record.chain}\u0000${c.record.seq}`;
      if (this.#keys.has(key)) continue;
      this.#keys.add(key);
      this.#rows.push(rowOf(c));
      const open = c.record.type === "call" ? openKey(c.record) : undefined;
      if (open !== undefined) this.#open.delete(open);
    }
  }

  async openCalls(entries: readonly OpenCall[]): Promise<void> {
    if (this.failing) throw new Error("audit store unavailable");
    for (const e of entries) if (!this.#open.has(e.key)) this.#open.set(e.key, e);
  }

  /** One writer (as SQLite): every other writer's entries are from before a restart. */
  async orphanCalls(instance: string, _staleMs: number, limit: number): Promise<OpenCall[]> {
    if (this.failing) throw new Error("audit store unavailable");
    return [...this.#open.values()].filter((e) => e.instance !== instance).slice(0, limit);
  }

  /** When a writer was last seen (ms), undefined when never or gone. */
  protected seenAt(instance: string): number | undefined {
    return this.#seen.get(instance);
  }

  async adoptCalls(requestId: string, instance: string): Promise<OpenCall[]> {
    if (this.failing) throw new Error("audit store unavailable");
    const out: OpenCall[] = [];
    for (const [key, e] of this.#open) {
      if (!key.startsWith(`${requestId} `)) continue;
      const moved = { ...e, instance };
      this.#open.set(key, moved);
      out.push(moved);
    }
    return out;
  }

  async seen(instance: string): Promise<void> {
    this.#seen.set(instance, Date.now());
  }

  async gone(instance: string): Promise<void> {
    this.#seen.delete(instance);
  }

  /** Test helper: the write-ahead entries still open. */
  openEntries(): OpenCall[] {
    return [...this.#open.values()];
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

/**
 * A memory store that chains on the store side, as PostgreSQL does (tests of AuditLog with
 * several writers). `failing` fails every write; `failAfterCommit` stores the next batch and then
 * throws, as a connection lost at COMMIT does.
 */
export class MemoryChainingAuditStore extends MemoryAuditStore {
  readonly #byKey = new Map<string, ChainedRecord>();
  failAfterCommit = false;

  /** Several writers (as PostgreSQL): entries of writers not seen within `staleMs` (or gone). */
  override async orphanCalls(instance: string, staleMs: number, limit: number): Promise<OpenCall[]> {
    const now = Date.now();
    return (await super.orphanCalls(instance, staleMs, Number.MAX_SAFE_INTEGER))
      .filter((e) => now - (this.seenAt(e.instance) ?? 0) > staleMs)
      .slice(0, limit);
  }

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
