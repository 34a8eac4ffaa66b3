/**
 * Users' connections (the token vault) in PostgreSQL, shared by every instance (distributed mode).
 * Table: src/store/postgres/db.ts migrations (`connections`). A refresh writes with a version
 * check in one statement (compare-and-swap), so two instances refreshing one record cannot both
 * store: the loser re-reads what the winner stored. The pool belongs to the caller.
 */
import { randomUUID } from "node:crypto";
import type { PostgresDb } from "./db.ts";
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

export class PostgresConnectionStore implements ConnectionStore {
  readonly #db: PostgresDb;
  readonly #t: string;

  constructor(db: PostgresDb) {
    this.#db = db;
    this.#t = `${db.schema}.connections`;
  }

  async #rows(sql: string, args: unknown[]): Promise<Row[]> {
    return (await this.#db.run("connections", (pool) => pool.query<Row>(sql, args))).rows;
  }

  async get(tenant: string, subject: string, connection: string): Promise<ConnectionRecord | undefined> {
    const [r] = await this.#rows(
      `SELECT * FROM ${this.#t} WHERE tenant = $1 AND subject = $2 AND connection = $3`,
      [tenant, subject, connection],
    );
    return r && toRecord(r);
  }

  async getById(id: string): Promise<ConnectionRecord | undefined> {
    const [r] = await this.#rows(`SELECT * FROM ${this.#t} WHERE id = $1`, [id]);
    return r && toRecord(r);
  }

  async put(w: ConnectionWrite, expectVersion?: number): Promise<ConnectionRecord | undefined> {
    const [r] =
      expectVersion === undefined
        ? await this.#rows(
            `INSERT INTO ${this.#t} AS c (id, tenant, subject, connection, sealed, version, created_at, updated_at, expires_at, scope)
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7, $8)
             ON CONFLICT (tenant, subject, connection) DO UPDATE SET
               id = excluded.id, sealed = excluded.sealed, version = c.version + 1,
               created_at = excluded.created_at, updated_at = excluded.updated_at,
               expires_at = excluded.expires_at, scope = excluded.scope
             RETURNING *`,
            [randomUUID(), w.tenant, w.subject, w.connection, w.sealed, w.at, w.expiresAt, w.scope],
          )
        : await this.#rows(
            `UPDATE ${this.#t} SET sealed = $1, version = version + 1, updated_at = $2, expires_at = $3, scope = $4
             WHERE tenant = $5 AND subject = $6 AND connection = $7 AND version = $8 RETURNING *`,
            [w.sealed, w.at, w.expiresAt, w.scope, w.tenant, w.subject, w.connection, expectVersion],
          );
    return r && toRecord(r);
  }

  async delete(id: string, expectVersion?: number): Promise<boolean> {
    const rows = await this.#rows(
      expectVersion === undefined
        ? `DELETE FROM ${this.#t} WHERE id = $1 RETURNING id`
        : `DELETE FROM ${this.#t} WHERE id = $1 AND version = $2 RETURNING id`,
      expectVersion === undefined ? [id] : [id, expectVersion],
    );
    return rows.length === 1;
  }

  async list(filter: ConnectionFilter): Promise<ConnectionRecord[]> {
    const where: string[] = [];
    const args: string[] = [];
    for (const k of ["tenant", "subject", "connection"] as const) {
      const v = filter[k];
      if (v !== undefined) {
        args.push(v);
        where.push(`${k} = $${args.length}`);
      }
    }
    const rows = await this.#rows(
      `SELECT * FROM ${this.#t}${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY created_at, id`,
      args,
    );
    return rows.map(toRecord);
  }

  async close(): Promise<void> {}
}
