/**
 * The ApiKeyStore contract: every implementation (memory, SQLite, PostgreSQL) runs this same suite
 *. `open` returns a new, empty store each time.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import type { ApiKeyRecord, ApiKeyStore } from "../../src/store/types.ts";

const COPY_TEST = "a returned record is a copy: mutating it (arrays too) changes nothing stored";
const TOUCH_TEST =
  "touch moves lastUsedAt forward, never back; visible before and after flush, in every read";

export function apiKey(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return {
    id: randomBytes(8).toString("hex"),
    name: "ci",
    server: "github",
    tenant: "acme",
    consumer: "ci",
    hash: randomBytes(32).toString("hex"),
    scopes: ["mcp:tools"],
    tools: null,
    createdAt: 1_767_225_600_000,
    expiresAt: null,
    revokedAt: null,
    lastUsedAt: null,
    rotatedTo: null,
    ...overrides,
  };
}

export function apiKeyStoreContract(name: string, open: () => Promise<ApiKeyStore>): void {
  describe(`ApiKeyStore contract: ${name}`, () => {
    test("insert then get returns an equal record; unknown ids are undefined", async () => {
      const store = await open();
      const full = apiKey({
        scopes: [],
        tools: ["search", "read_file"],
        expiresAt: 1_767_312_000_000,
        lastUsedAt: 1_767_225_601_000,
        rotatedTo: "next",
      });
      const plain = apiKey();
      await store.insert(full);
      await store.insert(plain);
      assert.deepEqual(await store.get(full.id), full);
      assert.deepEqual(await store.get(plain.id), plain);
      assert.equal(await store.get("nope"), undefined);
      await store.close();
    });

    test(COPY_TEST, async () => {
      const store = await open();
      const r = apiKey({ tools: ["search"] });
      await store.insert(r);
      const got = (await store.get(r.id)) as ApiKeyRecord;
      got.lastUsedAt = 42;
      got.scopes.push("admin");
      got.tools?.push("delete_repo");
      assert.deepEqual(await store.get(r.id), r);
      await store.close();
    });

    test("a second insert with the same id is refused and changes nothing", async () => {
      const store = await open();
      const r = apiKey();
      await store.insert(r);
      await assert.rejects(store.insert({ ...r, name: "other" }));
      assert.deepEqual(await store.get(r.id), r);
      await store.close();
    });

    test("byName: that server, tenant and name only, newest first (the later insert first on a tie)", async () => {
      const store = await open();
      const t = 1_767_225_600_000;
      const old = apiKey({ createdAt: t });
      const newest = apiKey({ createdAt: t + 2000 });
      const tieFirst = apiKey({ createdAt: t + 1000 });
      const tieSecond = apiKey({ createdAt: t + 1000 });
      for (const r of [old, newest, tieFirst, tieSecond]) await store.insert(r);
      await store.insert(apiKey({ name: "other" }));
      await store.insert(apiKey({ tenant: "globex" }));
      await store.insert(apiKey({ server: "slack" }));
      assert.deepEqual(
        (await store.byName("github", "acme", "ci")).map((r) => r.id),
        [newest.id, tieSecond.id, tieFirst.id, old.id],
      );
      assert.deepEqual(await store.byName("github", "acme", "nobody"), []);
      await store.close();
    });

    test("list: by server, tenant, both or neither; newest first", async () => {
      const store = await open();
      const a = apiKey({ createdAt: 1000 });
      const b = apiKey({ createdAt: 2000, tenant: "globex" });
      const c = apiKey({ createdAt: 3000, server: "slack" });
      for (const r of [a, b, c]) await store.insert(r);
      const ids = async (f: Parameters<ApiKeyStore["list"]>[0]) => (await store.list(f)).map((r) => r.id);
      assert.deepEqual(await ids({}), [c.id, b.id, a.id]);
      assert.deepEqual(await ids({ server: "github" }), [b.id, a.id]);
      assert.deepEqual(await ids({ tenant: "acme" }), [c.id, a.id]);
      assert.deepEqual(await ids({ server: "github", tenant: "globex" }), [b.id]);
      assert.deepEqual(await ids({ tenant: "initech" }), []);
      assert.deepEqual(
        (await store.list({})).find((r) => r.id === b.id),
        b,
      );
      await store.close();
    });

    test("list by server: a key for several servers (a,b) or every server (*) is listed under each it covers", async () => {
      const store = await open();
      const one = apiKey({ createdAt: 1000, server: "github" });
      const two = apiKey({ createdAt: 2000, server: "github,jira" });
      const all = apiKey({ createdAt: 3000, server: "*" });
      // A name that contains another as a prefix or suffix is not it.
      const near = apiKey({ createdAt: 4000, server: "git,jira-cloud" });
      for (const r of [one, two, all, near]) await store.insert(r);
      const ids = async (server: string) => (await store.list({ server })).map((r) => r.id);
      assert.deepEqual(await ids("github"), [all.id, two.id, one.id]);
      assert.deepEqual(await ids("jira"), [all.id, two.id]);
      assert.deepEqual(await ids("git"), [near.id, all.id]);
      assert.deepEqual(await ids("slack"), [all.id]);
      assert.deepEqual(
        (await store.byName("github,jira", two.tenant, two.name)).map((r) => r.id),
        [two.id],
      );
      await store.close();
    });

    test("update sets only the fields given, visible at once to get (a revocation applies now)", async () => {
      const store = await open();
      const r = apiKey();
      await store.insert(r);
      assert.deepEqual(await store.get(r.id), r); // read once, so a cache would hold it
      await store.update(r.id, { revokedAt: 5000 });
      assert.deepEqual(await store.get(r.id), { ...r, revokedAt: 5000 });
      await store.update(r.id, { expiresAt: 9000, rotatedTo: "k2" });
      assert.deepEqual(await store.get(r.id), { ...r, revokedAt: 5000, expiresAt: 9000, rotatedTo: "k2" });
      await store.update(r.id, { revokedAt: null, expiresAt: null });
      assert.deepEqual(await store.get(r.id), { ...r, rotatedTo: "k2" });
      await store.update("nope", { revokedAt: 1 }); // no error, no record
      assert.equal(await store.get("nope"), undefined);
      await store.close();
    });

    test(TOUCH_TEST, async () => {
      const store = await open();
      const r = apiKey({ lastUsedAt: 1000 });
      await store.insert(r);
      store.touch(r.id, 5000);
      store.touch(r.id, 3000);
      assert.equal((await store.get(r.id))?.lastUsedAt, 5000);
      assert.equal((await store.byName(r.server, r.tenant, r.name))[0]?.lastUsedAt, 5000);
      assert.equal((await store.list({}))[0]?.lastUsedAt, 5000);
      await store.flush();
      assert.equal((await store.get(r.id))?.lastUsedAt, 5000);
      store.touch(r.id, 500);
      await store.flush();
      assert.equal((await store.list({}))[0]?.lastUsedAt, 5000);
      store.touch("unknown", 9000); // no error, no record
      await store.flush();
      assert.equal(await store.get("unknown"), undefined);
      await store.close();
    });

    test("touches of many keys are all kept by one flush", async () => {
      const store = await open();
      const keys = Array.from({ length: 50 }, (_, i) => apiKey({ createdAt: i }));
      for (const k of keys) await store.insert(k);
      keys.forEach((k, i) => store.touch(k.id, 10_000 + i));
      await store.flush();
      const used = new Map((await store.list({})).map((k) => [k.id, k.lastUsedAt]));
      assert.deepEqual(
        keys.map((k) => used.get(k.id)),
        keys.map((_, i) => 10_000 + i),
      );
      await store.close();
    });
  });
}
