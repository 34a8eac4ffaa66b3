import type { DatabaseSync, StatementSync } from "node:sqlite";
import { openDatabase } from "../store/sqlite.ts";
import type { AuditRecord } from "./record.ts";
import {
  type AuditFilter,
  type AuditPage,
  type AuditPageRequest,
  type AuditRow as Row,
  type AuditStore,
  type ChainedRecord,
  recordOf,
  type StoredRow,
} from "./store.ts";

const FILTER = `(?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR subject = ?2) AND (?3 IS NULL OR target = ?3)
  AND (?4 IS NULL OR type = ?4) AND (?5 IS NULL OR ts >= ?5) AND (?6 IS NULL OR ts < ?6)`;

/**
 * Audit records in SQLite. The store opens its own connection with a short busy timeout: node:sqlite
 * is synchronous, so a locked database must fail fast (the records go to the spool) rather than
 * hold the event loop for the default five seconds. Batches are one transaction each.
 */
export class SqliteAuditStore implements AuditStore {
  readonly #db: DatabaseSync;
  readonly #stmt: {
    insert: StatementSync;
    heads: StatementSync;
    asc: StatementSync;
    desc: StatementSync;
    max: StatementSync;
    chains: StatementSync;
    scan: StatementSync;
  };

  constructor(file: string, options: { busyTimeoutMs?: number } = {}) {
    this.#db = openDatabase(file);
    this.#db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? 20))}`);
    this.#stmt = {
      insert: this.#db.prepare(
        `INSERT OR IGNORE INTO audit (chain, seq, ts, type, tenant, subject, target, record, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      // SQLite returns the bare columns of the row holding the MAX (documented behaviour).
      heads: this.#db.prepare("SELECT chain, MAX(seq) AS seq, hash FROM audit GROUP BY chain"),
      asc: this.#db.prepare(`SELECT * FROM audit WHERE ${FILTER} AND id > ?7 ORDER BY id LIMIT ?8`),
      desc: this.#db.prepare(`SELECT * FROM audit WHERE ${FILTER} AND id < ?7 ORDER BY id DESC LIMIT ?8`),
      max: this.#db.prepare("SELECT COALESCE(MAX(id), 0) AS id FROM audit"),
      chains: this.#db.prepare("SELECT DISTINCT chain FROM audit ORDER BY chain"),
      scan: this.#db.prepare("SELECT * FROM audit WHERE chain = ? AND seq > ? ORDER BY seq LIMIT ?"),
    };
  }

  async append(records: readonly ChainedRecord[]): Promise<void> {
    if (records.length === 0) return;
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      for (const { record: r, text } of records) {
        this.#stmt.insert.run(
          r.chain,
          r.seq,
          Date.parse(r.time),
          r.type,
          r.tenant,
          r.subject,
          r.target,
          text,
          r.hash,
        );
      }
      this.#db.exec("COMMIT");
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      throw err;
    }
  }

  async heads(): Promise<Map<string, { seq: number; hash: string }>> {
    const rows = this.#stmt.heads.all() as unknown as { chain: string; seq: number; hash: string }[];
    return new Map(rows.map((r) => [r.chain, { seq: r.seq, hash: r.hash }]));
  }

  async query(filter: AuditFilter, page: AuditPageRequest): Promise<AuditPage> {
    const desc = page.order === "desc";
    const cursor = page.cursor !== undefined ? Number(page.cursor) : desc ? Number.MAX_SAFE_INTEGER : 0;
    const args = [
      filter.tenant ?? null,
      filter.subject ?? null,
      filter.tool ?? null,
      filter.type ?? null,
      filter.since ?? null,
      filter.until ?? null,
      Number.isFinite(cursor) ? cursor : 0,
      page.limit + 1,
    ] as const;
    const rows = (desc ? this.#stmt.desc : this.#stmt.asc).all(...args) as unknown as Row[];
    const more = rows.length > page.limit;
    const kept = rows.slice(0, page.limit);
    const records: AuditRecord[] = kept.map((r) => recordOf({ text: r.record, hash: r.hash }));
    const last = kept.at(-1);
    if (desc) return { records, next: more && last ? String(last.id) : null, more };
    // Ascending: a page that reached the end resumes after the newest row that exists now.
    const next = more && last ? last.id : (this.#stmt.max.get() as { id: number }).id;
    return { records, next: String(Math.max(next, args[6])), more };
  }

  async chains(): Promise<string[]> {
    return (this.#stmt.chains.all() as unknown as { chain: string }[]).map((r) => r.chain);
  }

  async scan(chain: string, afterSeq: number, limit: number): Promise<StoredRow[]> {
    const rows = this.#stmt.scan.all(chain, afterSeq, limit) as unknown as Row[];
    return rows.map((r) => ({
      chain: r.chain,
      seq: r.seq,
      hash: r.hash,
      text: r.record,
      columns: { ts: r.ts, type: r.type, tenant: r.tenant, subject: r.subject, target: r.target },
    }));
  }

  async close(): Promise<void> {
    if (this.#db.isOpen) this.#db.close();
  }
}
