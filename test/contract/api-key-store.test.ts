import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { MemoryApiKeyStore } from "../../src/store/memory/api-keys.ts";
import { SqliteApiKeyStore } from "../../src/store/sqlite/api-keys.ts";
import { tempDir } from "../helpers/edge.ts";
import { apiKey, apiKeyStoreContract } from "./api-key-store.contract.ts";

// The contract found two defects of SqliteApiKeyStore's by-id cache (a shallow copy shared the
// scopes/tools arrays; a flush let lastUsedAt read back in time): fixed, and these suites are the
// regression tests.
apiKeyStoreContract("memory", async () => new MemoryApiKeyStore());
apiKeyStoreContract("sqlite (file)", async () => new SqliteApiKeyStore(path.join(tempDir(), "k.db")));
apiKeyStoreContract("sqlite (:memory:)", async () => new SqliteApiKeyStore(":memory:"));

test("sqlite: keys and flushed last uses survive closing and reopening the file (a restart)", async () => {
  const file = path.join(tempDir(), "restart.db");
  const first = new SqliteApiKeyStore(file);
  const r = apiKey();
  await first.insert(r);
  first.touch(r.id, 7000);
  await first.close();
  const second = new SqliteApiKeyStore(file);
  assert.deepEqual(await second.get(r.id), { ...r, lastUsedAt: 7000 });
  await second.close();
});
