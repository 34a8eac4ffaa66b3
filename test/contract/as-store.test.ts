/**
 * The authorization server's records: the AsStore contract (as-store.contract.ts) against SQLite
 * (two handles on one file) and a real PostgreSQL (two pools on one schema: two instances).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { openDatabase } from "../../src/store/sqlite/db.ts";
import { SqliteAsStore } from "../../src/store/sqlite/as.ts";
import { PostgresAsStore } from "../../src/store/postgres/as.ts";
import { postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { asStoreContract } from "./as-store.contract.ts";

const pg = postgresFixture();
const skip = await postgresSkipReason();
const dir = mkdtempSync(join(tmpdir(), "mcp-edge-as-"));
const opened: { close(): void }[] = [];
after(() => {
  for (const db of opened) db.close();
  rmSync(dir, { recursive: true, force: true });
});

asStoreContract("sqlite", async () => {
  const file = join(dir, `${Math.random().toString(36).slice(2)}.db`);
  const [da, db] = [openDatabase(file), openDatabase(file)];
  opened.push(da, db);
  return { a: new SqliteAsStore(da), b: new SqliteAsStore(db) };
});

if (skip !== undefined) {
  test("authorization server records on PostgreSQL", { skip }, () => {});
} else {
  asStoreContract("postgres", async () => {
    const schema = pg.schema();
    const [a, b] = await Promise.all([pg.open(schema, { max: 4 }), pg.open(schema, { max: 4 })]);
    return { a: new PostgresAsStore(a), b: new PostgresAsStore(b) };
  });
}
