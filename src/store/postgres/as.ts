/**
 * The authorization server's records in PostgreSQL, shared by every instance (distributed mode).
 * Tables: src/store/postgres/db.ts migrations (`as_records`, `as_revocations`). Each write is one
 * statement: `add` (the refresh single-flight) and `consume` have one winner across instances.
 */
import type { Pool } from "pg";
import { type PostgresDb, storeError } from "./db.ts";
import type { AsFilter, AsRecord, AsRevocation, AsStore } from "../types.ts";
import {
  AS_COLUMNS as COLUMNS,
  asRecordOf as toRecord,
  asValues as values,
  type AsRow as Row,
} from "../as-rows.ts";

const SET_ALL = `payload = EXCLUDED.payload, grant_id = EXCLUDED.grant_id, uid = EXCLUDED.uid,
  tenant = EXCLUDED.tenant, subject = EXCLUDED.subject, client_id = EXCLUDED.client_id,
  expires_at = EXCLUDED.expires_at, consumed_at = EXCLUDED.consumed_at`;

export class PostgresAsStore implements AsStore {
  readonly #pool: Pool;
  readonly #t: string;
  readonly #r: string;

  constructor(db: PostgresDb) {
    this.#pool = db.pool;
    this.#t = `${db.schema}.as_records`;
    this.#r = `${db.schema}.as_revocations`;
  }

  async #q(sql: string, args: unknown[]): Promise<{ rows: Row[]; rowCount: number }> {
    try {
      const r = await this.#pool.query<Row>(sql, args);
      return { rows: r.rows, rowCount: r.rowCount ?? 0 };
    } catch (err) {
      throw storeError(err, "authorization server");
    }
  }

  async put(r: AsRecord): Promise<void> {
    await this.#q(
      `INSERT INTO ${this.#t} (${COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
       ON CONFLICT (kind, id) DO UPDATE SET ${SET_ALL}`,
      values(r),
    );
  }

  async add(r: AsRecord): Promise<boolean> {
    const res = await this.#q(
      `INSERT INTO ${this.#t} (${COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
       ON CONFLICT (kind, id) DO UPDATE SET ${SET_ALL}
       WHERE ${this.#t}.expires_at IS NOT NULL AND ${this.#t}.expires_at <= $11`,
      [...values(r), Date.now()],
    );
    return res.rowCount === 1;
  }

  async get(kind: string, id: string): Promise<AsRecord | undefined> {
    const { rows } = await this.#q(
      `SELECT * FROM ${this.#t} WHERE kind = $1 AND id = $2 AND (expires_at IS NULL OR expires_at > $3)`,
      [kind, id, Date.now()],
    );
    return rows[0] && toRecord(rows[0]);
  }

  async getByUid(kind: string, uid: string): Promise<AsRecord | undefined> {
    const { rows } = await this.#q(
      `SELECT * FROM ${this.#t} WHERE kind = $1 AND uid = $2 AND (expires_at IS NULL OR expires_at > $3) LIMIT 1`,
      [kind, uid, Date.now()],
    );
    return rows[0] && toRecord(rows[0]);
  }

  async consume(kind: string, id: string, at: number): Promise<boolean> {
    const res = await this.#q(
      `UPDATE ${this.#t} SET consumed_at = $1 WHERE kind = $2 AND id = $3 AND consumed_at IS NULL
       AND (expires_at IS NULL OR expires_at > $4)`,
      [at, kind, id, Date.now()],
    );
    return res.rowCount === 1;
  }

  async delete(kind: string, id: string): Promise<boolean> {
    return (await this.#q(`DELETE FROM ${this.#t} WHERE kind = $1 AND id = $2`, [kind, id])).rowCount > 0;
  }

  async revokeGrant(grantId: string, at: number, until: number): Promise<number> {
    // One statement: the revocation is remembered exactly when the records go.
    const res = await this.#q(
      `WITH gone AS (DELETE FROM ${this.#t} WHERE grant_id = $1 OR (kind = 'Grant' AND id = $1) RETURNING 1),
            rev AS (INSERT INTO ${this.#r} (id, at, until) VALUES ($2, $3, $4)
                    ON CONFLICT (id) DO UPDATE SET until = GREATEST(${this.#r}.until, EXCLUDED.until))
       SELECT count(*)::int AS n FROM gone`,
      [grantId, `grant:${grantId}`, at, until],
    );
    return Number((res.rows[0] as unknown as { n: number }).n);
  }

  async revokeToken(jti: string, at: number, until: number): Promise<void> {
    await this.#q(
      `INSERT INTO ${this.#r} (id, at, until) VALUES ($1, $2, $3)
       ON CONFLICT (id) DO UPDATE SET until = GREATEST(${this.#r}.until, EXCLUDED.until)`,
      [`jti:${jti}`, at, until],
    );
  }

  async revocations(since: number): Promise<AsRevocation[]> {
    const { rows } = await this.#q(`SELECT * FROM ${this.#r} WHERE at >= $1 ORDER BY at, id`, [since]);
    return rows as unknown as AsRevocation[];
  }

  async list(kind: string, filter: AsFilter, limit: number): Promise<AsRecord[]> {
    const where = ["kind = $1", "(expires_at IS NULL OR expires_at > $2)"];
    const args: unknown[] = [kind, Date.now()];
    const add = (col: string, v: string | undefined) => {
      if (v === undefined) return;
      args.push(v);
      where.push(`${col} = $${args.length}`);
    };
    add("tenant", filter.tenant);
    add("subject", filter.subject);
    add("client_id", filter.clientId);
    args.push(limit);
    const { rows } = await this.#q(
      `SELECT * FROM ${this.#t} WHERE ${where.join(" AND ")} ORDER BY ord DESC LIMIT $${args.length}`,
      args,
    );
    return rows.map(toRecord);
  }

  async sweep(now: number): Promise<number> {
    const a = await this.#q(`DELETE FROM ${this.#t} WHERE expires_at IS NOT NULL AND expires_at <= $1`, [
      now,
    ]);
    const b = await this.#q(`DELETE FROM ${this.#r} WHERE until <= $1`, [now]);
    return a.rowCount + b.rowCount;
  }

  async close(): Promise<void> {
    // The pool belongs to the caller.
  }
}
