import type { DatabaseSync, SQLInputValue, StatementSync } from "node:sqlite";
import { openDatabase } from "./db.ts";
import type { AuditRecord } from "../../audit/record.ts";
import {
  type AuditFilter,
  type AuditPage,
  type AuditPageRequest,
  type AuditRow as Row,
  type AuditStore,
  type ChainedRecord,
  type OpenCall,
  openKey,
  type StoredRow,
} from "../types.ts";
import { recordOf } from "../audit-rows.ts";

const FILTER = `(?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR subject = ?2) AND (?3 IS NULL OR target = ?3)
  AND (?4 IS NULL OR type = ?4) AND (?5 IS NULL OR ts >= ?5) AND (?6 IS NULL OR ts < ?6)`;

/** Rows per INSERT statement, largest first (9 parameters a row: 576 at most, under every SQLite limit). */
const INSERT_SIZES = [64, 16, 4, 1];

/** The second of the last time text read by epochMs ("…T12:34:56."), and its epoch ms. */
let msPrefix = "";
let msPrefixValue = 0;
const ISO_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/**
 * `Date.parse(time)` for the record times the audit writes (`YYYY-MM-DDTHH:MM:SS.mmmZ`): the
 * second is parsed once and reused while it stays the same; any other text goes to Date.parse.
 */
export function epochMs(time: string): number {
  if (time.length !== 24 || !ISO_MS.test(time)) return Date.parse(time);
  const prefix = time.slice(0, 20);
  if (prefix !== msPrefix) {
    msPrefixValue = Date.parse(`${prefix}000Z`);
    msPrefix = prefix;
  }
  return msPrefixValue + Number(time.slice(20, 23));
}

/**
 * Audit records in SQLite. The store opens its own connection with a short busy timeout: node:sqlite
 * is synchronous, so a locked database must fail fast (the records go to the spool) rather than
 * hold the event loop for the default five seconds. Batches are one transaction each.
 */
export class SqliteAuditStore implements AuditStore {
  readonly #db: DatabaseSync;
  /** Multi-row INSERT statements by row count (INSERT_SIZES). */
  readonly #inserts = new Map<number, StatementSync>();
  readonly #stmt: {
    heads: StatementSync;
    asc: StatementSync;
    desc: StatementSync;
    max: StatementSync;
    chains: StatementSync;
    scan: StatementSync;
    open: StatementSync;
    close: StatementSync;
    orphans: StatementSync;
    adopt: StatementSync;
    request: StatementSync;
  };

  constructor(file: string, options: { busyTimeoutMs?: number } = {}) {
    this.#db = openDatabase(file);
    this.#db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? 20))}`);
    this.#stmt = {
      // SQLite returns the bare columns of the row holding the MAX (documented behaviour).
      heads: this.#db.prepare("SELECT chain, MAX(seq) AS seq, hash FROM audit GROUP BY chain"),
      asc: this.#db.prepare(`SELECT * FROM audit WHERE ${FILTER} AND id > ?7 ORDER BY id LIMIT ?8`),
      desc: this.#db.prepare(`SELECT * FROM audit WHERE ${FILTER} AND id < ?7 ORDER BY id DESC LIMIT ?8`),
      max: this.#db.prepare("SELECT COALESCE(MAX(id), 0) AS id FROM audit"),
      chains: this.#db.prepare("SELECT DISTINCT chain FROM audit ORDER BY chain"),
      scan: this.#db.prepare("SELECT * FROM audit WHERE chain = ? AND seq > ? ORDER BY seq LIMIT ?"),
      open: this.#db.prepare(
        "INSERT OR IGNORE INTO audit_open (key, instance, at, record) VALUES (?, ?, ?, ?)",
      ),
      close: this.#db.prepare("DELETE FROM audit_open WHERE key = ?"),
      orphans: this.#db.prepare(
        "SELECT key, instance, at, record FROM audit_open WHERE instance <> ? ORDER BY at LIMIT ?",
      ),
      adopt: this.#db.prepare(
        "UPDATE audit_open SET instance = ?1 WHERE substr(key, 1, length(?2) + 1) = ?2 || ' '",
      ),
      request: this.#db.prepare(
        "SELECT key, instance, at, record FROM audit_open WHERE substr(key, 1, length(?1) + 1) = ?1 || ' '",
      ),
    };
  }

  async append(records: readonly ChainedRecord[]): Promise<void> {
    if (records.length === 0) return;
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      // Rows go in by the largest multi-row statement that fits, in order (one call per statement
      // instead of one per row); the statements are prepared once per size.
      let at = 0;
      for (const size of INSERT_SIZES) {
        while (records.length - at >= size) {
          const values: SQLInputValue[] = [];
          for (let i = at; i < at + size; i++) {
            const { record: r, text } = records[i] as ChainedRecord;
            values.push(r.chain, r.seq, epochMs(r.time), r.type, r.tenant, r.subject, r.target, text, r.hash);
          }
          this.#insert(size).run(...values);
          at += size;
        }
      }
      // A call's record replaces its write-ahead entry, in the same transaction.
      for (const { record: r } of records) {
        const key = r.type === "call" ? openKey(r) : undefined;
        if (key !== undefined) this.#stmt.close.run(key);
      }
      this.#db.exec("COMMIT");
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      throw err;
    }
  }

  async openCalls(entries: readonly OpenCall[]): Promise<void> {
    if (entries.length === 0) return;
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      for (const e of entries) this.#stmt.open.run(e.key, e.instance, e.at, e.record);
      this.#db.exec("COMMIT");
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      throw err;
    }
  }

  /** One process writes the file: every entry another one left is from before a restart. */
  async orphanCalls(instance: string, _staleMs: number, limit: number): Promise<OpenCall[]> {
    return this.#stmt.orphans.all(instance, limit) as unknown as OpenCall[];
  }

  async adoptCalls(requestId: string, instance: string): Promise<OpenCall[]> {
    this.#stmt.adopt.run(instance, requestId);
    return this.#stmt.request.all(requestId) as unknown as OpenCall[];
  }

  async seen(): Promise<void> {}

  async gone(): Promise<void> {}

  #insert(rows: number): StatementSync {
    let stmt = this.#inserts.get(rows);
    if (!stmt) {
      stmt = this.#db.prepare(
        `INSERT OR IGNORE INTO audit (chain, seq, ts, type, tenant, subject, target, record, hash)
         VALUES ${Array.from({ length: rows }, () => "(?, ?, ?, ?, ?, ?, ?, ?, ?)").join(", ")}`,
      );
      this.#inserts.set(rows, stmt);
    }
    return stmt;
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
