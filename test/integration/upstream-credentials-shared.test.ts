/**
 * Upstream client-credentials tokens in distributed mode: two gateways on one Redis and one PostgreSQL, a real OAuth server (oidc-provider)
 * and a real upstream that verifies every token. The fleet fetches one token, not one per
 * instance; a token the upstream rejects is replaced by one refresh for the whole fleet; what
 * Redis holds is sealed (no token readable in it).
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Redis } from "ioredis";
import { type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import {
  type OidcServer,
  type ProtectedUpstream,
  startOidc,
  startProtectedUpstream,
} from "../helpers/oidc.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";

const RESOURCE = "https://upstream.example/mcp";
const SECRET_ENV = "MCP_EDGE_TEST_SHARED_CLIENT_SECRET";

const skip = await postgresSkipReason();
const ready = skip === undefined && (await redisReady("shared upstream credentials"));
if (skip !== undefined) process.stderr.write(`\n*** SKIPPING shared upstream credentials: ${skip} ***\n\n`);

if (ready) {
  const prefix = testPrefix();
  let idp: OidcServer;
  let up: ProtectedUpstream;
  const edges: InProcessEdge[] = [];
  const clients: Client[] = [];

  before(async () => {
    idp = await startOidc({ ttlSeconds: 60, resource: RESOURCE });
    up = await startProtectedUpstream({ oidc: idp, audience: RESOURCE });
    process.env[SECRET_ENV] = idp.clientSecret;
    const schema = pg.schema();
    for (let i = 0; i < 2; i++) {
      edges.push(
        await startEdge({
          store: {
            sqlite: `${tempDir()}/edge.db`,
            redis: { url: REDIS_URL, keyPrefix: prefix },
            postgres: { url: POSTGRES_URL, schema },
          },
          servers: {
            s: {
              route: "/mcp",
              upstream: { urls: [up.url] },
              auth: ["none"],
              credentials: {
                oauth: {
                  tokenUrl: idp.tokenUrl,
                  clientId: idp.clientId,
                  clientSecret: `\${${SECRET_ENV}}`,
                  scope: "mcp:tools",
                  resource: RESOURCE,
                },
              },
            },
          },
        }),
      );
    }
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    for (const e of edges) await e.stop();
    await up?.stop();
    await idp?.stop();
    const r = new Redis(REDIS_URL);
    await dropPrefix(r, prefix);
    r.disconnect();
    delete process.env[SECRET_ENV];
  });
  // After the hook above (hooks run in order): the schema is dropped once the edge is stopped.
  const pg = postgresFixture();

  async function connect(edge: InProcessEdge): Promise<Client> {
    const client = new Client({ name: "shared-creds", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(edge.url())));
    clients.push(client);
    return client;
  }

  async function add(client: Client, a: number, b: number): Promise<number> {
    const r = await client.callTool({ name: "add", arguments: { a, b } });
    assert.notEqual(r.isError, true, JSON.stringify(r));
    return Number((r as { content: { text: string }[] }).content[0]?.text);
  }

  test("two instances share one upstream token and refresh it once after a rejection", async () => {
    const [a, b] = await Promise.all(edges.map(connect));
    assert.equal(await add(a as Client, 1, 2), 3);
    assert.equal(await add(b as Client, 2, 3), 5);
    await Promise.all([add(a as Client, 1, 1), add(b as Client, 1, 1)]);
    assert.equal(idp.tokenRequests(), 1, "the fleet fetched one token");
    assert.equal(new Set(up.authorizations()).size, 1, "both instances sent the same token");

    // The upstream rejects it: both instances need a new one at once; the fleet fetches one.
    up.revoke(up.lastToken()!);
    const [x, y] = await Promise.all([add(a as Client, 20, 22), add(b as Client, 10, 10)]);
    assert.equal(x, 42);
    assert.equal(y, 20);
    assert.equal(idp.tokenRequests(), 2, "one refresh for the whole fleet");

    // What Redis holds is sealed with a key derived from the client secret.
    const r = new Redis(REDIS_URL);
    try {
      const keys = await r.keys(`${prefix.replace(/[*?[\]\\]/g, "\\$&")}cred:*`);
      assert.equal(keys.length, 1);
      const stored = (await r.get(keys[0] as string)) ?? "";
      for (const t of idp.issued()) assert.ok(!stored.includes(t), "no token in clear in Redis");
      assert.ok(!stored.includes(idp.clientSecret));
    } finally {
      r.disconnect();
    }
  });
}
