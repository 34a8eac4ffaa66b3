/**
 * src/store/sqlite/sessions.ts openDatabase: what a new embedded database file gets, and that an existing
 * one opens as it is.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, test } from "node:test";
import { openDatabase } from "../../src/store/sqlite/db.ts";

const dir = mkdtempSync(path.join(os.tmpdir(), "mcp-edge-sqlite-open-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const pragma = (db: DatabaseSync, name: string) =>
  Object.values(db.prepare(`PRAGMA ${name}`).get() as Record<string, unknown>)[0];

test("a new file gets 16 KiB pages, WAL and every migration", () => {
  const db = openDatabase(path.join(dir, "new.db"));
  assert.equal(pragma(db, "page_size"), 16384);
  assert.equal(pragma(db, "journal_mode"), "wal");
  assert.ok(Number(pragma(db, "user_version")) > 0);
  db.close();
});

test("an existing file keeps its page size and gets the migrations", () => {
  const file = path.join(dir, "old.db");
  const old = new DatabaseSync(file);
  old.exec("PRAGMA journal_mode = WAL; CREATE TABLE kept (x INTEGER); INSERT INTO kept VALUES (1);");
  old.close();
  const db = openDatabase(file);
  assert.equal(pragma(db, "page_size"), 4096);
  assert.equal(pragma(db, "journal_mode"), "wal");
  assert.ok(Number(pragma(db, "user_version")) > 0);
  assert.deepEqual({ ...(db.prepare("SELECT x FROM kept").get() as object) }, { x: 1 });
  db.close();
});
