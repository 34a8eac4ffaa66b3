import assert from "node:assert/strict";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, test } from "node:test";
import { ApiKeyChecker, mintApiKey, REFUSAL_FLOOR_US } from "../../src/auth/apikey.ts";

/** One edge's key check (its memory of matched keys and unknown ids is its own). */
const checker = new ApiKeyChecker();
const keyCheckWork = checker.work;
const authenticateApiKey = checker.check.bind(checker);
import { credentialHeaders } from "../../src/auth/authenticate.ts";
import type { GatewayError } from "../../src/errors/errors.ts";
import { MemoryApiKeyStore } from "../../src/store/memory/api-keys.ts";
import type { ApiKeyRecord } from "../../src/store/types.ts";
import { sendRawRequest } from "../helpers/raw-http.ts";

function record(id: string, hash: string, over: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return {
    id,
    name: "k",
    server: "s",
    tenant: "t",
    consumer: "c",
    hash,
    scopes: [],
    tools: null,
    createdAt: 0,
    expiresAt: null,
    revokedAt: null,
    lastUsedAt: null,
    rotatedTo: null,
    ...over,
  };
}

async function refused(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as GatewayError).code;
  }
  return "accepted";
}

describe("authenticateApiKey: keys that matched are remembered, never trusted blindly", () => {
  test("a remembered key is refused once its record is revoked, expires or names another server", async () => {
    const store = new MemoryApiKeyStore();
    const k = mintApiKey();
    await store.insert(record(k.id, k.hash));
    // Twice: the second call takes the remembered digest.
    for (let i = 0; i < 2; i++) assert.equal((await authenticateApiKey(store, k.key, "s")).keyId, k.id);
    assert.equal(await refused(authenticateApiKey(store, k.key, "other")), "EDGE_AUTH_INVALID_TOKEN");
    await store.update(k.id, { expiresAt: Date.now() - 1 });
    assert.equal(await refused(authenticateApiKey(store, k.key, "s")), "EDGE_AUTH_INVALID_TOKEN");
    await store.update(k.id, { expiresAt: null, revokedAt: Date.now() - 1 });
    assert.equal(await refused(authenticateApiKey(store, k.key, "s")), "EDGE_AUTH_INVALID_TOKEN");
  });

  test("a remembered key whose record now holds another hash is checked again, and refused", async () => {
    const a = new MemoryApiKeyStore();
    const k = mintApiKey();
    await a.insert(record(k.id, k.hash));
    assert.equal((await authenticateApiKey(a, k.key, "s")).keyId, k.id);
    // Another store (another deployment, a restored backup) has the same id with another secret.
    const b = new MemoryApiKeyStore();
    const other = mintApiKey();
    await b.insert(record(k.id, other.hash));
    assert.equal(await refused(authenticateApiKey(b, k.key, "s")), "EDGE_AUTH_INVALID_TOKEN");
    // A key that differs from a remembered one in its secret only is not taken for it.
    const forged = `${k.key.slice(0, -1)}${k.key.endsWith("A") ? "B" : "A"}`;
    assert.equal(await refused(authenticateApiKey(a, forged, "s")), "EDGE_AUTH_INVALID_TOKEN");
    assert.equal((await authenticateApiKey(a, k.key, "s")).keyId, k.id);
  });
});

describe("credentialHeaders: every Authorization and X-API-Key, as headersDistinct has them", () => {
  test("through node:http, for repeated, mixed-case and absent headers", async () => {
    const seen: Array<{ ours: unknown; node: unknown }> = [];
    const server = createServer((req: IncomingMessage, res) => {
      const d = req.headersDistinct;
      seen.push({
        ours: credentialHeaders(req.rawHeaders),
        node: { authorization: d["authorization"], "x-api-key": d["x-api-key"] },
      });
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as AddressInfo;
    const raw = (head: string) => sendRawRequest(port, head);
    try {
      await raw("Authorization: Bearer first\r\nAUTHORIZATION: Bearer second\r\n");
      await raw("x-api-key: one\r\nX-Api-Key:  two \r\nAuthorization: Basic x\r\n");
      await raw("X-Authorization: no\r\nx-api-keys: no\r\n");
      await raw("");
    } finally {
      server.close();
    }
    assert.equal(seen.length, 4);
    for (const s of seen) assert.deepEqual(s.ours, s.node);
    assert.deepEqual(seen[0]?.ours, {
      authorization: ["Bearer first", "Bearer second"],
      "x-api-key": undefined,
    });
    assert.deepEqual(seen[1]?.ours, { authorization: ["Basic x"], "x-api-key": ["one", "two"] });
  });
});

describe("authenticateApiKey: no key-existence oracle (same work whichever check fails)", () => {
  async function workOf(store: MemoryApiKeyStore, key: string, server = "s") {
    const before = { ...keyCheckWork };
    const started = performance.now();
    const outcome = await refused(authenticateApiKey(store, key, server));
    const elapsedUs = (performance.now() - started) * 1000;
    return {
      outcome,
      elapsedUs,
      work: {
        lookups: keyCheckWork.lookups - before.lookups,
        hashes: keyCheckWork.hashes - before.hashes,
        compares: keyCheckWork.compares - before.compares,
      },
    };
  }

  test("real id + wrong secret, unknown id, wrong server, expired, revoked, remembered-then-revoked: one lookup, one hash, one compare each", async () => {
    const store = new MemoryApiKeyStore();
    const real = mintApiKey();
    const expired = mintApiKey();
    const revoked = mintApiKey();
    const remembered = mintApiKey();
    await store.insert(record(real.id, real.hash));
    await store.insert(record(expired.id, expired.hash, { expiresAt: 1 }));
    await store.insert(record(revoked.id, revoked.hash, { revokedAt: 1 }));
    await store.insert(record(remembered.id, remembered.hash));
    assert.equal((await authenticateApiKey(store, remembered.key, "s")).keyId, remembered.id);
    await store.update(remembered.id, { revokedAt: 1 });
    const secret = real.key.slice(-43);
    const wrongSecret = `mcpe_${real.id}_${"A".repeat(43)}`;
    const unknownId = `mcpe_${"zzzzzzzzzzzz"}_${secret}`;
    const cases: [string, string, string?][] = [
      ["real id, wrong secret", wrongSecret],
      ["real id, wrong secret (again: the record is cached now)", wrongSecret],
      ["unknown id", unknownId],
      ["unknown id (again: remembered as missing)", unknownId],
      ["another unknown id", `mcpe_${"yyyyyyyyyyyy"}_${secret}`],
      ["right key, another server", real.key, "other"],
      ["expired key", expired.key],
      ["revoked key", revoked.key],
      ["remembered key, revoked since", remembered.key],
    ];
    for (const [name, key, server] of cases) {
      const r = await workOf(store, key, server);
      assert.equal(r.outcome, "EDGE_AUTH_INVALID_TOKEN", name);
      assert.deepEqual(r.work, { lookups: 1, hashes: 1, compares: 1 }, name);
      assert.ok(r.elapsedUs >= REFUSAL_FLOOR_US, `${name}: answered after the floor (${r.elapsedUs} µs)`);
    }
  });

  test("a key that is accepted does the same lookup and never waits for the refusal floor", async () => {
    const store = new MemoryApiKeyStore();
    const k = mintApiKey();
    await store.insert(record(k.id, k.hash));
    const before = { ...keyCheckWork };
    assert.equal((await authenticateApiKey(store, k.key, "s")).keyId, k.id);
    assert.equal(keyCheckWork.lookups - before.lookups, 1);
    assert.equal(keyCheckWork.hashes - before.hashes, 1);
  });
});
