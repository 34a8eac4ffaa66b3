/**
 * The authorization server's records in the embedded SQLite file (src/store/types.ts AsStore).
 * Each write is one statement, which SQLite runs atomically.
 */
import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { AsFilter, AsRecord, AsRevocation, AsStore } from "../types.ts";
import { AS_COLUMNS as COLUMNS, asRecordOf, asValues as values, type AsRow as Row } from "../as-rows.ts";

export class SqliteAsStore implements AsStore {
  readonly #s: Record<
    | "put"
    | "add"
    | "get"
    | "byUid"
    | "consume"
    | "del"
    | "delGrant"
    | "revoke"
    | "revocations"
    | "sweep"
    | "sweepRev",
    StatementSync
  >;
  readonly #db: DatabaseSync;

  constructor(db: DatabaseSync) {
    this.#db = db;
    db.exec(`CREATE TABLE IF NOT EXISTS as_records (
      kind TEXT NOT NULL, id TEXT NOT NULL, payload TEXT NOT NULL, grant_id TEXT, uid TEXT,
      tenant TEXT, subject TEXT, client_id TEXT, expires_at INTEGER, consumed_at INTEGER,
      PRIMARY KEY (kind, id)) STRICT;
      CREATE INDEX IF NOT EXISTS as_records_grant ON as_records (grant_id) WHERE grant_id IS NOT NULL;
      CREATE INDEX IF NOT EXISTS as_records_uid ON as_records (kind, uid) WHERE uid IS NOT NULL;
      CREATE TABLE IF NOT EXISTS as_revocations (
        id TEXT PRIMARY KEY, at INTEGER NOT NULL, until INTEGER NOT NULL) STRICT;`);
    const live = "(expires_at IS NULL OR expires_at > ?)";
    this.#s = {
      put: db.prepare(`INSERT OR REPLACE INTO as_records (${COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)`),
      // One statement: an expired record of the same key is replaced, a live one kept.
      add: db.prepare(
        `INSERT INTO as_records (${COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)
         ON CONFLICT (kind, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
           uid = excluded.uid, tenant = excluded.tenant, subject = excluded.subject,
           client_id = excluded.client_id, expires_at = excluded.expires_at, consumed_at = excluded.consumed_at
         WHERE as_records.expires_at IS NOT NULL AND as_records.expires_at <= ?`,
      ),
      get: db.prepare(`SELECT * FROM as_records WHERE kind = ? AND id = ? AND ${live}`),
      byUid: db.prepare(`SELECT * FROM as_records WHERE kind = ? AND uid = ? AND ${live} LIMIT 1`),
      consume: db.prepare(
        `UPDATE as_records SET consumed_at = ? WHERE kind = ? AND id = ? AND consumed_at IS NULL AND ${live}`,
      ),
      del: db.prepare("DELETE FROM as_records WHERE kind = ? AND id = ?"),
      delGrant: db.prepare("DELETE FROM as_records WHERE grant_id = ? OR (kind = 'Grant' AND id = ?)"),
      revoke: db.prepare(
        "INSERT INTO as_revocations (id, at, until) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET until = max(until, excluded.until)",
      ),
      revocations: db.prepare("SELECT * FROM as_revocations WHERE at >= ? ORDER BY at, id"),
      sweep: db.prepare("DELETE FROM as_records WHERE expires_at IS NOT NULL AND expires_at <= ?"),
      sweepRev: db.prepare("DELETE FROM as_revocations WHERE until <= ?"),
    };
  }

  async put(r: AsRecord): Promise<void> {
    this.#s.put.run(...values(r));
  }

  async add(r: AsRecord): Promise<boolean> {
    return Number(this.#s.add.run(...values(r), Date.now()).changes) === 1;
  }

  async get(kind: string, id: string): Promise<AsRecord | undefined> {
    const row = this.#s.get.get(kind, id, Date.now()) as Row | undefined;
    return row && asRecordOf(row);
  }

  async getByUid(kind: string, uid: string): Promise<AsRecord | undefined> {
    const row = this.#s.byUid.get(kind, uid, Date.now()) as Row | undefined;
    return row && asRecordOf(row);
  }

  async consume(kind: string, id: string, at: number): Promise<boolean> {
    return Number(this.#s.consume.run(at, kind, id, Date.now()).changes) === 1;
  }

  async delete(kind: string, id: string): Promise<boolean> {
    return Number(this.#s.del.run(kind, id).changes) > 0;
  }

  async revokeGrant(grantId: string, at: number, until: number): Promise<number> {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const n = Number(this.#s.delGrant.run(grantId, grantId).changes);
      this.#s.revoke.run(`grant:${grantId}`, at, until);
      this.#db.exec("COMMIT");
      return n;
    } catch (err) {
      this.#db.exec("ROLLBACK");
      throw err;
    }
  }

  async revokeToken(jti: string, at: number, until: number): Promise<void> {
    this.#s.revoke.run(`jti:${jti}`, at, until);
  }

  async revocations(since: number): Promise<AsRevocation[]> {
    return (this.#s.revocations.all(since) as unknown as AsRevocation[]).map((r) => ({
      id: r.id,
      at: Number(r.at),
      until: Number(r.until),
    }));
  }

  async list(kind: string, filter: AsFilter, limit: number): Promise<AsRecord[]> {
    const where = ["kind = ?", "(expires_at IS NULL OR expires_at > ?)"];
    const args: (string | number)[] = [kind, Date.now()];
    for (const [col, v] of [
      ["tenant", filter.tenant],
      ["subject", filter.subject],
      ["client_id", filter.clientId],
    ] as const) {
      if (v === undefined) continue;
      where.push(`${col} = ?`);
      args.push(v);
    }
    const rows = this.#db
      .prepare(`SELECT * FROM as_records WHERE ${where.join(" AND ")} ORDER BY rowid DESC LIMIT ?`)
      .all(...args, limit) as unknown as Row[];
    return rows.map(asRecordOf);
  }

  async sweep(now: number): Promise<number> {
    return Number(this.#s.sweep.run(now).changes) + Number(this.#s.sweepRev.run(now).changes);
  }

  async close(): Promise<void> {
    // The database belongs to the caller.
  }
}
