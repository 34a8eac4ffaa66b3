/** Users' connections (the token vault) in the embedded SQLite file. */
import { randomUUID } from "node:crypto";
import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { ConnectionFilter, ConnectionRecord, ConnectionStore, ConnectionWrite } from "../types.ts";

interface Row {
  id: string;
  tenant: string;
  subject: string;
  connection: string;
  sealed: string;
  version: number;
  created_at: number;
  updated_at: number;
  expires_at: number | null;
  scope: string | null;
}

const toRecord = (r: Row): ConnectionRecord => ({
  id: r.id,
  tenant: r.tenant,
  subject: r.subject,
  connection: r.connection,
  sealed: r.sealed,
  version: r.version,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
  expiresAt: r.expires_at,
  scope: r.scope,
});

export class SqliteConnectionStore implements ConnectionStore {
  readonly #db: DatabaseSync;
  readonly #stmt: Record<"get" | "byId" | "upsert" | "cas" | "del" | "delAt", StatementSync>;

  constructor(db: DatabaseSync) {
    this.#db = db;
    db.exec(`CREATE TABLE IF NOT EXISTS connections (
       id TEXT PRIMARY KEY,
       tenant TEXT NOT NULL,
       subject TEXT NOT NULL,
       connection TEXT NOT NULL,
       sealed TEXT NOT NULL,
       version INTEGER NOT NULL,
       created_at INTEGER NOT NULL,
       updated_at INTEGER NOT NULL,
       expires_at INTEGER,
       scope TEXT,
       UNIQUE (tenant, subject, connection)
     ) STRICT`);
    this.#stmt = {
      get: db.prepare("SELECT * FROM connections WHERE tenant = ? AND subject = ? AND connection = ?"),
      byId: db.prepare("SELECT * FROM connections WHERE id = ?"),
      // A new connect replaces the record (new id: a record id names one connect) and bumps the
      // version past the old one, so a refresh that read the old record cannot write over it.
      upsert: db.prepare(
        `INSERT INTO connections (id, tenant, subject, connection, sealed, version, created_at, updated_at, expires_at, scope)
         VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?)
         ON CONFLICT (tenant, subject, connection) DO UPDATE SET
           id = excluded.id, sealed = excluded.sealed, version = connections.version + 1,
           created_at = excluded.created_at, updated_at = excluded.updated_at,
           expires_at = excluded.expires_at, scope = excluded.scope
         RETURNING *`,
      ),
      cas: db.prepare(
        `UPDATE connections SET sealed = ?, version = version + 1, updated_at = ?, expires_at = ?, scope = ?
         WHERE tenant = ? AND subject = ? AND connection = ? AND version = ? RETURNING *`,
      ),
      del: db.prepare("DELETE FROM connections WHERE id = ?"),
      delAt: db.prepare("DELETE FROM connections WHERE id = ? AND version = ?"),
    };
  }

  async get(tenant: string, subject: string, connection: string): Promise<ConnectionRecord | undefined> {
    const r = this.#stmt.get.get(tenant, subject, connection) as Row | undefined;
    return r && toRecord(r);
  }

  async getById(id: string): Promise<ConnectionRecord | undefined> {
    const r = this.#stmt.byId.get(id) as Row | undefined;
    return r && toRecord(r);
  }

  async put(w: ConnectionWrite, expectVersion?: number): Promise<ConnectionRecord | undefined> {
    const r =
      expectVersion === undefined
        ? this.#stmt.upsert.get(
            randomUUID(),
            w.tenant,
            w.subject,
            w.connection,
            w.sealed,
            w.at,
            w.at,
            w.expiresAt,
            w.scope,
          )
        : this.#stmt.cas.get(
            w.sealed,
            w.at,
            w.expiresAt,
            w.scope,
            w.tenant,
            w.subject,
            w.connection,
            expectVersion,
          );
    return r ? toRecord(r as unknown as Row) : undefined;
  }

  async delete(id: string, expectVersion?: number): Promise<boolean> {
    const r = expectVersion === undefined ? this.#stmt.del.run(id) : this.#stmt.delAt.run(id, expectVersion);
    return Number(r.changes) === 1;
  }

  async list(filter: ConnectionFilter): Promise<ConnectionRecord[]> {
    const where: string[] = [];
    const args: string[] = [];
    for (const k of ["tenant", "subject", "connection"] as const) {
      const v = filter[k];
      if (v !== undefined) {
        where.push(`${k} = ?`);
        args.push(v);
      }
    }
    const sql = `SELECT * FROM connections${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY created_at, id`;
    return (this.#db.prepare(sql).all(...args) as unknown as Row[]).map(toRecord);
  }

  async close(): Promise<void> {}
}
