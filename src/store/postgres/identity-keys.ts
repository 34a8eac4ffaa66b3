/**
 * Identity-signing keys in PostgreSQL (distributed mode): every instance signs
 * `X-MCP-Edge-Identity` with the same key and publishes the same JWKS, whichever instance the
 * upstream's JWKS fetch reaches. Table: src/store/postgres/db.ts migrations (`identity_keys`).
 *
 * Rotation is serialized with a transaction-scoped advisory lock: the check ("no key newer than
 * this") and the insert run under it, so instances that find rotation due at the same moment
 * (several starting at once on an empty schema, or a scheduled rotation) create one key between
 * them. The others read it on their next reload (IdentitySigner does right after losing).
 *
 * The private keys are stored as JWK text, as in the SQLite file: protect the database (and its
 * backups) accordingly. The pool belongs to the caller.
 */
import type { Pool, PoolClient } from "pg";
import { LOCK_NAMESPACE, type PostgresDb, storeError } from "./db.ts";
import type { IdentityKey, IdentityKeyStore } from "../types.ts";

export class PostgresIdentityKeyStore implements IdentityKeyStore {
  readonly shared = true;
  readonly #db: PostgresDb;
  readonly #t: string;
  readonly #lockKey: string;

  constructor(db: PostgresDb) {
    this.#db = db;
    this.#t = `${db.schema}.identity_keys`;
    this.#lockKey = `identity-rotate:${db.schema}`;
  }

  async list(): Promise<IdentityKey[]> {
    const { rows } = await this.#db.run("identity keys", (pool) =>
      pool.query<{
        kid: string;
        private_jwk: string;
        public_jwk: string;
        created_at: number;
      }>(`SELECT kid, private_jwk, public_jwk, created_at FROM ${this.#t} ORDER BY created_at DESC, kid`),
    );
    return rows.map((r) => ({
      kid: r.kid,
      privateJwk: r.private_jwk,
      publicJwk: r.public_jwk,
      createdAt: r.created_at,
    }));
  }

  insertIfDue(key: IdentityKey, since: number): Promise<boolean> {
    return this.#db.run("identity key rotation", (pool) => this.#insertIfDue(pool, key, since), null);
  }

  async #insertIfDue(pool: Pool, key: IdentityKey, since: number): Promise<boolean> {
    let client: PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      throw storeError(err, "identity key rotation");
    }
    let broken: unknown;
    try {
      await client.query("BEGIN");
      await client.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCK_NAMESPACE, this.#lockKey]);
      // READ COMMITTED: this statement's snapshot is taken after the lock was granted, so it sees
      // the key of an instance that held the lock before.
      const { rowCount } = await client.query(
        `INSERT INTO ${this.#t} (kid, private_jwk, public_jwk, created_at)
         SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM ${this.#t} WHERE created_at > $5)`,
        [key.kid, key.privateJwk, key.publicJwk, key.createdAt, since],
      );
      await client.query("COMMIT");
      return rowCount === 1;
    } catch (err) {
      await client.query("ROLLBACK").catch((e: unknown) => {
        broken = e;
      });
      throw storeError(err, "identity key rotation");
    } finally {
      client.release(broken instanceof Error ? broken : undefined);
    }
  }
}
