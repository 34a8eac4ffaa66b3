/**
 * The authorization server in distributed mode: two edge processes sharing Redis and PostgreSQL,
 * one issuer. A login on one instance, 20 concurrent refreshes of one refresh token split over
 * both instances → one new pair for all; the access token works on either; the previous refresh
 * token replayed after the grace on one instance revokes the grant, and the other instance refuses
 * its access token at once (the revocation is broadcast). Behind a round-robin balancer with no
 * session affinity, a sign-in whose pages and form posts land on alternate instances completes.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { Balancer } from "../helpers/cluster/balancer.ts";
import { type EdgeConfigDoc, type SpawnedEdge, spawnEdge, tempDir } from "../helpers/edge.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { NODE_BIN } from "../helpers/spawn.ts";
import { ADMIN_TOKEN, type AsTarget, DEMO, loginTokens, mcpStatus, tokenRequest } from "./helpers.ts";

const ready =
  (await redisReady("authorization server, distributed")) && (await postgresSkipReason()) === undefined;

if (!ready) {
  test(
    "authorization server across two instances",
    { skip: "Redis or PostgreSQL is not available" },
    () => {},
  );
} else {
  const edges: SpawnedEdge[] = [];
  const prefix = testPrefix();
  let balancer: Balancer | undefined;
  after(async () => {
    await balancer?.close();
    await Promise.allSettled(edges.map((e) => e.stop()));
    const redis = new Redis(REDIS_URL);
    await dropPrefix(redis, prefix).catch(() => undefined);
    redis.disconnect();
  });
  const pg = postgresFixture();
  const schema = pg.schema();
  let a: AsTarget;
  let b: AsTarget;
  let lb: AsTarget;

  before(async () => {
    // One public origin for both instances, as behind a load balancer.
    balancer = await Balancer.start();
    const publicUrl = balancer.url;
    const config = (listenPort: number, dir: string): EdgeConfigDoc => ({
      listen: { host: "127.0.0.1", port: listenPort },
      publicUrl,
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      store: {
        sqlite: path.join(dir, "edge.db"),
        redis: { url: REDIS_URL, keyPrefix: prefix, instances: 2 },
        postgres: { url: POSTGRES_URL, schema, poolSize: 6 },
      },
      drain: { timeout: "5s", delay: "0s" },
      log: { level: "warn" },
      auth: { authorizationServer: { enabled: true, tokens: { refreshGrace: "2s" } } },
      servers: {
        demo: {
          route: "/mcp",
          upstream: { stdio: { command: NODE_BIN, args: [DEMO], mode: "shared" } },
          auth: ["apiKey", "oauth"],
          scopes: { default: ["mcp:tools"] },
        },
      },
    });
    const da = tempDir("mcp-edge-as-a-");
    edges.push(await spawnEdge(config(0, da), da, 60_000));
    const db = tempDir("mcp-edge-as-b-");
    edges.push(await spawnEdge(config(0, db), db, 60_000));
    const res = await fetch(`${edges[0]!.adminUrl}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "dana", server: "demo", tenant: "acme" }),
    });
    assert.equal(res.status, 201);
    const key = ((await res.json()) as { key: string }).key;
    a = { base: edges[0]!.baseUrl, mcpUrl: `${edges[0]!.baseUrl}/mcp`, key };
    b = { base: edges[1]!.baseUrl, mcpUrl: `${edges[1]!.baseUrl}/mcp`, key };
    for (const e of edges) balancer.add(e.baseUrl);
    lb = { base: balancer.url, mcpUrl: `${balancer.url}/mcp`, key };
  });

  const refresh = (on: AsTarget, clientId: string, token: string) =>
    tokenRequest(on.base, { grant_type: "refresh_token", refresh_token: token, client_id: clientId });

  test("20 concurrent refreshes over two instances → one pair; tokens work on both", async () => {
    const t = await loginTokens(lb);
    assert.equal(await mcpStatus(b, t.access_token), 200, "a token issued on A is accepted on B");
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => refresh(i % 2 ? b : a, t.clientId, t.refresh_token)),
    );
    for (const r of answers) assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(new Set(answers.map((r) => `${r.json.access_token} ${r.json.refresh_token}`)).size, 1);
    const next = answers[0]!.json;
    assert.equal(await mcpStatus(a, next.access_token), 200);
    assert.equal(await mcpStatus(b, next.access_token), 200);
  });

  test("a replay after the grace on B revokes the grant; A refuses its access token", async () => {
    const t = await loginTokens(lb);
    const first = await refresh(a, t.clientId, t.refresh_token);
    assert.equal(first.status, 200);
    assert.equal(await mcpStatus(a, first.json.access_token), 200);
    await sleep(2300);
    const late = await refresh(b, t.clientId, t.refresh_token);
    assert.equal(late.json.error, "invalid_grant");
    // The broadcast takes a moment to cross Redis: A refuses the token within it.
    let status = 0;
    for (let i = 0; i < 20 && status !== 401; i++) {
      status = await mcpStatus(a, first.json.access_token);
      if (status !== 401) await sleep(50);
    }
    assert.equal(status, 401);
    assert.equal(await mcpStatus(b, first.json.access_token), 401);
    assert.equal((await refresh(a, t.clientId, first.json.refresh_token)).json.error, "invalid_grant");
  });

  test("no session affinity: a sign-in whose pages and form posts alternate between instances completes", async () => {
    const from = balancer!.log.length;
    const t = await loginTokens(lb);
    const signIn = balancer!.log.slice(from);
    // Every page and form of the flow went through the balancer, on both instances.
    assert.deepEqual(new Set(signIn.map((e) => e.backend)), new Set([0, 1]));
    assert.ok(signIn.some((e) => e.method === "POST"));
    assert.equal(await mcpStatus(a, t.access_token), 200);
    assert.equal(await mcpStatus(b, t.access_token), 200);
    const next = await refresh(lb, t.clientId, t.refresh_token);
    assert.equal(next.status, 200, JSON.stringify(next.json));
  });
}
