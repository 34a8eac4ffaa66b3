/**
 * Users' connections (the token vault's records): the ConnectionStore contract
 * (connection-store.contract.ts) against SQLite (two handles on one file) and a real PostgreSQL
 * (two pools on one schema: two instances of a fleet).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { openDatabase } from "../../src/store/sqlite/db.ts";
import { SqliteConnectionStore } from "../../src/store/sqlite/connections.ts";
import { PostgresConnectionStore } from "../../src/store/postgres/connections.ts";
import { postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { connectionStoreContract } from "./connection-store.contract.ts";

const pg = postgresFixture();
const skip = await postgresSkipReason();
const dir = mkdtempSync(join(tmpdir(), "mcp-edge-connections-"));
const opened: { close(): void }[] = [];
after(() => {
  for (const db of opened) db.close();
  rmSync(dir, { recursive: true, force: true });
});

connectionStoreContract("sqlite", async () => {
  const file = join(dir, `${Math.random().toString(36).slice(2)}.db`);
  const [da, db] = [openDatabase(file), openDatabase(file)];
  opened.push(da, db);
  return { a: new SqliteConnectionStore(da), b: new SqliteConnectionStore(db) };
});

if (skip !== undefined) {
  test("connections on PostgreSQL", { skip }, () => {});
} else {
  connectionStoreContract("postgres", async () => {
    const schema = pg.schema();
    const [a, b] = await Promise.all([pg.open(schema, { max: 2 }), pg.open(schema, { max: 2 })]);
    return { a: new PostgresConnectionStore(a), b: new PostgresConnectionStore(b) };
  });
}
