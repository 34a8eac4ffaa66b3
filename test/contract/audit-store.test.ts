import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { SqliteAuditStore } from "../../src/store/sqlite/audit.ts";
import { MemoryAuditStore, MemoryChainingAuditStore } from "../../src/store/memory/audit.ts";
import { tempDir } from "../helpers/edge.ts";
import { auditChainingContract, auditStoreContract, chained } from "./audit-store.contract.ts";

auditStoreContract("memory", async () => new MemoryAuditStore());
auditStoreContract("sqlite (file)", async () => new SqliteAuditStore(path.join(tempDir(), "a.db")));
auditStoreContract("sqlite (:memory:)", async () => new SqliteAuditStore(":memory:"));

test("sqlite: records and chain heads survive closing and reopening the file (a restart)", async () => {
  const file = path.join(tempDir(), "restart.db");
  const first = new SqliteAuditStore(file);
  const heads = new Map();
  await first.append(chained(heads, [{}, {}, { tenant: "globex" }]));
  await first.close();
  const second = new SqliteAuditStore(file);
  assert.deepEqual(await second.heads(), heads);
  await second.close();
});

auditStoreContract("memory (chaining)", async () => new MemoryChainingAuditStore());
auditChainingContract("memory (chaining)", async () => new MemoryChainingAuditStore());
