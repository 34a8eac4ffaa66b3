/** Identity-signing keys in the embedded SQLite file (one instance: `shared` is false). */
import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { IdentityKey, IdentityKeyStore } from "../types.ts";

interface KeyRow {
  kid: string;
  private_jwk: string;
  public_jwk: string;
  created_at: number;
}

/** The keys in the embedded SQLite file (one instance; today's table). */
export class SqliteIdentityKeyStore implements IdentityKeyStore {
  readonly shared = false;
  readonly #stmt: { all: StatementSync; insert: StatementSync };

  constructor(db: DatabaseSync) {
    db.exec(`CREATE TABLE IF NOT EXISTS identity_keys (
      kid TEXT PRIMARY KEY, private_jwk TEXT NOT NULL, public_jwk TEXT NOT NULL, created_at INTEGER NOT NULL) STRICT`);
    this.#stmt = {
      all: db.prepare("SELECT * FROM identity_keys ORDER BY created_at DESC"),
      // One statement: SQLite runs it atomically, so the check and the insert cannot interleave.
      insert: db.prepare(
        `INSERT INTO identity_keys (kid, private_jwk, public_jwk, created_at)
         SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM identity_keys WHERE created_at > ?)`,
      ),
    };
  }

  async list(): Promise<IdentityKey[]> {
    return (this.#stmt.all.all() as unknown as KeyRow[]).map((r) => ({
      kid: r.kid,
      privateJwk: r.private_jwk,
      publicJwk: r.public_jwk,
      createdAt: r.created_at,
    }));
  }

  async insertIfDue(key: IdentityKey, since: number): Promise<boolean> {
    const r = this.#stmt.insert.run(key.kid, key.privateJwk, key.publicJwk, key.createdAt, since);
    return Number(r.changes) === 1;
  }
}
