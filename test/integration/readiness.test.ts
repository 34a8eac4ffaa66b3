/**
 * `/readyz` says whether this instance can serve: not draining and its own stores up. One upstream
 * of several being down does not make it unready (that is per-route health, on the admin
 * listener's `/readyz`), and the public listener's answer names no route.
 */
import assert from "node:assert/strict";
import { createServer } from "node:net";
import path from "node:path";
import { after, describe, test } from "node:test";
import { Redis } from "ioredis";
import { type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropPrefix, type PrivateRedis, redisReady, startRedisServer, testPrefix } from "../helpers/redis.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.ts";
import { waitFor } from "../helpers/wait.ts";

const DEMO = path.join(REPO_ROOT, "src/demo/server.ts");

async function readyz(
  base: string,
): Promise<{ status: number; body: Record<string, unknown>; text: string }> {
  const res = await fetch(`${base}/readyz`);
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as Record<string, unknown>, text };
}

/** A port nothing listens on (bound, then closed). */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe("readiness, embedded", () => {
  let edge: InProcessEdge | undefined;
  after(async () => {
    await edge?.stop();
  });

  test("one upstream down: the instance stays ready; the admin listener names the route, the public one does not", async () => {
    edge = await startEdge({
      // The listeners stay open this long into a drain, answering /readyz 503 (a balancer's cue).
      drain: { timeout: "5s", delay: "1s" },
      servers: {
        demo: { route: "/mcp", upstream: { stdio: { command: NODE_BIN, args: [DEMO] } }, auth: ["none"] },
        "secret-route-name": {
          route: "/other/mcp",
          upstream: {
            urls: [`http://127.0.0.1:${await deadPort()}/mcp`],
            health: { interval: "100ms", timeout: "100ms", unhealthyAfter: 1 },
          },
          auth: ["none"],
        },
      },
    });
    const gw = edge.gw;
    await waitFor(async () => !gw.routes.get("secret-route-name")!.upstream.ready(), {
      what: "the dead upstream to fail its health checks",
    });
    const pub = await readyz(gw.baseUrl);
    assert.equal(pub.status, 200, pub.text);
    assert.deepEqual(pub.body, { status: "ready" });
    assert.doesNotMatch(pub.text, /secret-route-name|demo/);
    const admin = await readyz(gw.adminUrl);
    assert.equal(admin.status, 200, admin.text);
    assert.deepEqual(admin.body.routes, { demo: "ready", "secret-route-name": "unavailable" });
  });

  test("draining: 503 draining on both listeners", async () => {
    const gw = edge!.gw;
    const stopping = gw.stop();
    for (const base of [gw.baseUrl, gw.adminUrl]) {
      const r = await readyz(base);
      assert.equal(r.status, 503, r.text);
      assert.equal(r.body.status, "draining");
    }
    await stopping;
    edge = undefined;
  });
});

const distributed =
  (await redisReady("readiness, distributed")) && (await postgresSkipReason()) === undefined;

describe("readiness, distributed: the instance's own stores", { skip: !distributed }, () => {
  let redis: PrivateRedis | undefined;
  let proxy: TcpProxy | undefined;
  let edge: InProcessEdge | undefined;
  const prefix = testPrefix();
  after(async () => {
    await proxy?.restore();
    await edge?.stop();
    await proxy?.stop();
    if (redis) {
      const c = new Redis(redis.url);
      await dropPrefix(c, prefix).catch(() => undefined);
      c.disconnect();
      await redis.stop();
    }
  });
  const pg = postgresFixture();

  test("Redis down → 503 naming redis; back → ready. PostgreSQL unreachable → 503 naming postgres; back → ready", async () => {
    redis = await startRedisServer();
    const target = new URL(POSTGRES_URL);
    proxy = await startTcpProxy(Number(target.port || 5432), target.hostname);
    const viaProxy = new URL(POSTGRES_URL);
    viaProxy.hostname = "127.0.0.1";
    viaProxy.port = String(proxy.port);
    edge = await startEdge({
      store: {
        sqlite: `${tempDir()}/edge.db`,
        redis: { url: redis.url, keyPrefix: prefix, commandTimeout: "200ms" },
        postgres: { url: viaProxy.toString(), schema: pg.schema(), queryTimeout: "2s" },
      },
      servers: {
        demo: { route: "/mcp", upstream: { stdio: { command: NODE_BIN, args: [DEMO] } }, auth: ["none"] },
      },
    });
    const gw = edge.gw;
    const readyOn = async (base: string) => (await readyz(base)).status === 200;
    const unready = (base: string, what: string) =>
      waitFor(
        async () => {
          const r = await readyz(base);
          return r.status === 503 ? r : undefined;
        },
        { what },
      );
    assert.equal((await readyz(gw.baseUrl)).status, 200);

    await redis.kill();
    const down = await unready(gw.baseUrl, "/readyz to fail with Redis down");
    assert.deepEqual(down.body, { status: "unavailable", storesDown: ["redis"] });
    await redis.restart();
    await waitFor(() => readyOn(gw.baseUrl), { what: "/readyz to pass with Redis back", timeout: 15_000 });

    await proxy.cut();
    const pgDown = await unready(gw.adminUrl, "/readyz to fail with PostgreSQL unreachable");
    assert.deepEqual(pgDown.body.storesDown, ["postgres"]);
    await proxy.restore();
    await waitFor(() => readyOn(gw.adminUrl), { what: "/readyz to pass with PostgreSQL back" });
  });
});
