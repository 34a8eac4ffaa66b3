/**
 * The token vault across instances (distributed mode: Redis and PostgreSQL, two edge processes):
 * a user connects through one instance and calls through both; 50 concurrent calls split over the
 * two at the token's expiry cause exactly one refresh at the provider (a Redis lock serializes the
 * refresh, the PostgreSQL record's version guards the write), and the provider never sees a
 * single-use refresh token twice. Real processes, a real provider, a real MCP server.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";
import { Redis } from "ioredis";
import { Browser, formAction, formValue } from "../helpers/browser.ts";
import { type EdgeConfigDoc, freePort, type SpawnedEdge, spawnEdge, tempDir } from "../helpers/edge.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { type ApiServer, type Provider, startApiServer, startProvider } from "../helpers/third-party.ts";

const ADMIN_TOKEN = "vault-distributed-admin-token-0123456789";
const SECRET_ENV = "MCP_EDGE_TEST_TP_SECRET_D";
const KEY_ENV = "MCP_EDGE_TEST_VAULT_KEY_D";

const ready = (await redisReady("token vault, distributed")) && (await postgresSkipReason()) === undefined;

if (ready) {
  let provider: Provider;
  let api: ApiServer;
  const edges: SpawnedEdge[] = [];
  const clients: Client[] = [];
  const prefix = testPrefix();
  after(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await Promise.allSettled(edges.map((e) => e.stop()));
    await api?.stop();
    await provider?.stop();
    const redis = new Redis(REDIS_URL);
    await dropPrefix(redis, prefix).catch(() => undefined);
    redis.disconnect();
  });
  const pg = postgresFixture();
  const schema = pg.schema();
  let publicUrl: string;
  let key: string;

  before(async () => {
    const port = await freePort();
    publicUrl = `http://127.0.0.1:${port}`;
    provider = await startProvider({ redirectUris: [`${publicUrl}/connect/tp/callback`], ttlSeconds: 3 });
    api = await startApiServer(provider.issuer);
    process.env[SECRET_ENV] = provider.clientSecret;
    process.env[KEY_ENV] = Buffer.alloc(32, 9).toString("hex");
    const config = (listenPort: number, dir: string): EdgeConfigDoc => ({
      listen: { host: "127.0.0.1", port: listenPort },
      publicUrl,
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      store: {
        sqlite: path.join(dir, "edge.db"),
        redis: { url: REDIS_URL, keyPrefix: prefix, instances: 2 },
        postgres: { url: POSTGRES_URL, schema, poolSize: 4 },
      },
      drain: { timeout: "5s", delay: "0s" },
      egress: { allowPrivateNetworks: true, allowPorts: [Number(new URL(provider.issuer).port)] },
      connections: {
        tp: {
          issuer: provider.issuer,
          clientId: provider.clientId,
          clientSecret: `\${${SECRET_ENV}}`,
          scopes: ["openid", "offline_access", "repo"],
          refreshBefore: "1s",
        },
      },
      vault: { key: `\${${KEY_ENV}}` },
      servers: {
        api: {
          route: "/mcp",
          upstream: { urls: [api.url] },
          auth: ["apiKey"],
          credentials: { connection: "tp" },
        },
      },
    });
    const da = tempDir("mcp-edge-vault-a-");
    edges.push(await spawnEdge(config(port, da), da, 60_000));
    const db = tempDir("mcp-edge-vault-b-");
    edges.push(await spawnEdge(config(0, db), db, 60_000));
    const res = await fetch(`${edges[0]?.adminUrl}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "dana", server: "api", tenant: "acme" }),
    });
    assert.equal(res.status, 201);
    key = ((await res.json()) as { key: string }).key;
  });

  async function client(i: number): Promise<Client> {
    const c = new Client({ name: `vault-d-${i}`, version: "1.0.0" });
    await c.connect(
      new StreamableHTTPClientTransport(new URL(`${(edges[i] as SpawnedEdge).baseUrl}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${key}` } },
      }),
    );
    clients.push(c);
    return c;
  }

  async function whoami(c: Client): Promise<string> {
    const r = (await c.callTool({ name: "whoami", arguments: {} })) as { content: { text: string }[] };
    return (JSON.parse(r.content[0]?.text ?? "{}") as { login: string }).login;
  }

  test("two instances: connect through one, call through both; 50 concurrent calls at expiry → one refresh", async () => {
    const [a, b] = [await client(0), await client(1)];
    // Instance B asks for the connection; the link (signed with the shared vault key) is
    // completed through instance A (the public URL).
    const err = await b.callTool({ name: "whoami", arguments: {} }).then(
      () => assert.fail("needs a connection"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof McpError && err.code === -32042);
    const url = (err.data as { elicitations: { url: string }[] }).elicitations[0]?.url as string;
    const browser = new Browser();
    const confirm = await browser.get(url);
    const login = await browser.post(
      formAction(confirm) as string,
      { ticket: formValue(confirm.text, "ticket") as string },
      publicUrl,
    );
    const done = await browser.post(formAction(login) as string, { login: "bob" }, login.url);
    assert.equal(done.status, 200, done.text);
    assert.equal(await whoami(a), "bob");
    assert.equal(await whoami(b), "bob");

    for (let round = 0; round < 2; round++) {
      // Into the refresh window with no call refreshing meanwhile.
      await new Promise((r) => setTimeout(r, 2600));
      const before = provider.refreshes();
      const logins = await Promise.all(Array.from({ length: 50 }, (_, i) => whoami(i % 2 === 0 ? a : b)));
      assert.deepEqual(new Set(logins), new Set(["bob"]));
      assert.equal(
        provider.refreshes() - before,
        1,
        `round ${round}: one refresh for 50 calls on two instances`,
      );
    }
    assert.equal(provider.refusedRefreshes(), 0);
    assert.equal(provider.reused(), 0);
  });
} else {
  test("token vault, distributed", { skip: "Redis or PostgreSQL unavailable" }, () => {});
}
