import assert from "node:assert/strict";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, test } from "node:test";
import { authenticateApiKey, mintApiKey } from "../../src/auth/apikey.ts";
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
