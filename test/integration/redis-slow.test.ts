/**
 * Distributed mode, Redis connected but not answering (a private redis-server stopped with
 * SIGSTOP, then resumed with SIGCONT). The rules under test:
 *
 *   - a call costs at most one command timeout: its session read and its rate-limit decision share
 *     one deadline counted from the call, even behind a pipeline Redis has not answered, and a
 *     session read that failed is not sent again by the same request (503 + Retry-After, never 404;
 *     the limit decided by the local fallback);
 *   - after repeated timeouts the breaker opens: the same answers come at once (503 with
 *     Retry-After for sessions that must be read, the local fallback for limits), a session this
 *     instance holds a fresh copy of is still served, /metrics and the log say so;
 *   - when Redis answers again a probe closes the breaker and calls are served, with no restart.
 *
 * The time bounds sit between one and two command timeouts (1 s): they tell the two apart, with a
 * margin for a loaded machine; they are not latency claims.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Redis } from "ioredis";
import { type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { INITIALIZE, mcpPost, timed, toolCall } from "../helpers/mcp.ts";
import { postgresFixture, postgresSkipReason, POSTGRES_URL } from "../helpers/postgres.ts";
import { type PrivateRedis, redisReady, startRedisServer } from "../helpers/redis.ts";
import { type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const ADMIN_TOKEN = "redis-slow-admin-token-0123456789abcdef";
const COMMAND_TIMEOUT_MS = 1000;
const PREFIX = "slow:";
const INIT = INITIALIZE;
const call = (id: number) => toolCall(id, "test_simple_text");

const skip = await postgresSkipReason();
const ready = skip === undefined && (await redisReady("Redis slow"));
if (skip !== undefined) process.stderr.write(`\n*** SKIPPING Redis slow: ${skip} ***\n\n`);

if (ready) {
  let upstream: SpawnedFixture;
  let redis: PrivateRedis;
  let edge: InProcessEdge;

  before(async () => {
    upstream = await spawnFixture("test/fixtures/conformance-server.ts");
    redis = await startRedisServer();
    edge = await startEdge({
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      log: { level: "info" },
      store: {
        sqlite: `${tempDir()}/edge.db`,
        redis: {
          url: redis.url,
          keyPrefix: PREFIX,
          commandTimeout: `${COMMAND_TIMEOUT_MS}ms`,
          breaker: { failures: 5, openFor: "1s" },
        },
        postgres: { url: POSTGRES_URL, schema: pg.schema() },
      },
      servers: {
        api: {
          route: "/mcp",
          upstream: { urls: [upstream.url] },
          auth: ["apiKey"],
          limits: { tools: { test_simple_text: "1000/min" } },
        },
      },
    });
  });
  after(async () => {
    redis?.resume();
    await edge?.stop();
    await redis?.stop();
    await upstream?.stop();
  });
  const pg = postgresFixture();

  async function metric(name: string): Promise<number> {
    const text = await (await fetch(`${edge.gw.adminUrl}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(name));
    assert.ok(line, `${name} in /metrics`);
    return Number(line.split(" ").at(-1));
  }
  const breakerState = () => metric('mcp_edge_store_breaker_state{store="redis"}');
  const fallbacks = () => metric("mcp_edge_ratelimit_fallback_decisions");

  test("Redis hung: one command timeout per call, then the breaker fails fast and probes until Redis answers", async () => {
    const res = await fetch(`${edge.gw.adminUrl}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "k" }),
    });
    const { key } = (await res.json()) as { key: string };
    const init = await mcpPost(edge.url(), INIT, { credential: key });
    assert.equal(init.status, 200);
    const sid = init.sessionId as string;
    assert.equal((await mcpPost(edge.url(), call(2), { credential: key, sessionId: sid })).status, 200);
    assert.equal(await breakerState(), 0);
    const fallbackBefore = await fallbacks();

    // Another instance changed the session: this one drops its copy, so the next call must read
    // the record (in the rate-limit decision's round trip).
    const bus = new Redis(redis.url);
    await bus.publish(`${PREFIX}bus`, JSON.stringify({ k: "session", id: sid, from: "elsewhere" }));
    bus.disconnect();
    await new Promise((r) => setTimeout(r, 200));

    // A second session, opened just now: this instance's copy of it is fresh for a few seconds.
    const init2 = await mcpPost(edge.url(), INIT, { credential: key });
    assert.equal(init2.status, 200);
    const fresh = init2.sessionId as string;

    redis.pause();
    const first = await timed(() => mcpPost(edge.url(), call(3), { credential: key, sessionId: sid }));
    assert.equal(first.value.status, 503, JSON.stringify(first.value.body));
    assert.equal(first.value.body.error.data.code, "EDGE_STORE_UNAVAILABLE");
    assert.ok(first.value.headers.get("retry-after"));
    assert.ok(
      first.ms < 1.8 * COMMAND_TIMEOUT_MS,
      `one command timeout, not two (${first.ms.toFixed(0)} ms against ${COMMAND_TIMEOUT_MS} ms)`,
    );
    assert.equal(await fallbacks(), fallbackBefore + 1, "the limit was decided by the local fallback");

    // Timeouts in a row (these calls', the background touches'): the breaker opens.
    await Promise.all([7, 8].map((id) => mcpPost(edge.url(), call(id), { credential: key, sessionId: sid })));
    await waitFor(async () => (await breakerState()) === 2, {
      what: "the Redis breaker to open",
      timeout: 10_000,
    });
    // Only requests that need the store are refused: a session with a fresh copy is served, its
    // limit decided by the local fallback at once.
    const served = await timed(() => mcpPost(edge.url(), call(9), { credential: key, sessionId: fresh }));
    assert.equal(served.value.status, 200, JSON.stringify(served.value.body));
    assert.ok(served.ms < COMMAND_TIMEOUT_MS, `no wait on Redis (${served.ms.toFixed(0)} ms)`);
    assert.ok(edge.logs().some((l) => l.includes("redis: circuit breaker open")));
    const fast = await timed(() => mcpPost(edge.url(), call(4), { credential: key, sessionId: sid }));
    assert.equal(fast.value.status, 503);
    assert.equal(fast.value.body.error.data.code, "EDGE_STORE_UNAVAILABLE");
    assert.ok(fast.value.headers.get("retry-after"));
    assert.ok(fast.ms < COMMAND_TIMEOUT_MS, `fails fast with the breaker open (${fast.ms.toFixed(0)} ms)`);
    const initDown = await mcpPost(edge.url(), INIT, { credential: key });
    assert.equal(initDown.status, 503, "no new session while its record cannot be stored");

    redis.resume();
    await waitFor(
      async () => (await mcpPost(edge.url(), call(5), { credential: key, sessionId: sid })).status === 200,
      { what: "the session to be served once Redis answers", timeout: 10_000, interval: 200 },
    );
    assert.equal(await breakerState(), 0);
    assert.ok(edge.logs().some((l) => l.includes("redis: circuit breaker closed")));
    const before = await fallbacks();
    assert.equal((await mcpPost(edge.url(), call(6), { credential: key, sessionId: sid })).status, 200);
    assert.equal(await fallbacks(), before, "limits are counted in Redis again");
    process.stdout.write(
      `# Redis hung: first call ${first.ms.toFixed(0)} ms (command timeout ${COMMAND_TIMEOUT_MS} ms), with the breaker open ${fast.ms.toFixed(0)} ms\n`,
    );
  });
}
