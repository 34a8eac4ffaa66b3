import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { MemorySessionStore } from "../../src/store/memory/sessions.ts";
import { SqliteSessionStore } from "../../src/store/sqlite/sessions.ts";
import { tempDir } from "../helpers/edge.ts";
import { record, sessionStoreContract, sessionStoreIndexContract } from "./session-store.contract.ts";

sessionStoreContract("memory", async () => new MemorySessionStore());
sessionStoreContract("sqlite (file)", async () => new SqliteSessionStore(path.join(tempDir(), "s.db")));
sessionStoreContract("sqlite (:memory:)", async () => new SqliteSessionStore(":memory:"));
sessionStoreIndexContract("memory", async () => new MemorySessionStore());
sessionStoreIndexContract("sqlite (file)", async () => new SqliteSessionStore(path.join(tempDir(), "i.db")));

test("sqlite: records survive closing and reopening the file (a restart)", async () => {
  const file = path.join(tempDir(), "restart.db");
  const first = new SqliteSessionStore(file);
  const r = record();
  await first.put(r);
  first.touch(r.id, r.lastSeenAt + 5000);
  await first.close();
  const second = new SqliteSessionStore(file);
  assert.deepEqual(await second.get(r.id), { ...r, lastSeenAt: r.lastSeenAt + 5000 });
  await second.close();
  assert.ok(readFileSync(file).length > 0);
});
