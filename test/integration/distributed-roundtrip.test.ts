/**
 * Distributed mode (issue 8): one Redis round trip per call on the request path. A call on a
 * session whose local copy this edge has kept longer than its hot TTL (5 s: an agent thinking
 * between tool calls) reads the session record in the same write as the rate-limit decision — the
 * HGETALL leaves before the decision's EVALSHA, not after its answer — and reads it once.
 * Observed with Redis MONITOR on a real edge process.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { Redis } from "ioredis";
import { postWhere, rawSession } from "../helpers/cluster/clients.ts";
import { startCluster } from "../helpers/cluster/edges.ts";
import { startUpstreams } from "../helpers/cluster/upstream-fleet.ts";
import { postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { waitFor } from "../helpers/wait.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const ready =
  (await redisReady("distributed mode, round trips")) && (await postgresSkipReason()) === undefined;

if (ready) {
  const prefix = testPrefix();
  const stops: (() => Promise<unknown>)[] = [];
  // Registered first, so it runs first: the edge stops before the schema is dropped.
  after(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    const redis = new Redis(REDIS_URL);
    await dropPrefix(redis, prefix).catch(() => undefined);
    redis.disconnect();
  });
  const pg = postgresFixture();
  const schema = pg.schema();

  test("a call after the local copy went stale: the session read rides with the limit decision, once", async () => {
    const upstreams = await startUpstreams(["a"]);
    stops.push(() => Promise.allSettled(upstreams.map((u) => u.stop())));
    const cluster = await startCluster({
      edges: 1,
      redisUrl: REDIS_URL,
      keyPrefix: prefix,
      pgSchema: schema,
      upstreams,
      server: { limits: { key: "100000/min", session: "100000/min", tool: "100000/min" } },
    });
    stops.push(() => cluster.stop());
    const { key } = await cluster.createKey("rt");
    const url = cluster.edgeUrl(0);
    const sid = await rawSession(url, key);
    const call = async (id: number) => {
      const res = await postWhere(url, key, sid, id);
      await res.text();
      assert.equal(res.status, 200);
    };
    await call(1);
    // Under test: a copy older than the 5 s hot TTL (not configurable) is read again, with the call.
    await sleep(5100);

    const client = new Redis(REDIS_URL);
    stops.push(async () => client.disconnect());
    const monitor = await client.monitor();
    const seen: string[] = [];
    const markers: string[] = [];
    monitor.on("monitor", (_time: string, args: string[], source: string) => {
      if (source === "lua" || !args.join(" ").includes(prefix)) return;
      const command = String(args[0]).toLowerCase();
      if (command === "hgetall") seen.push("session read");
      else if (command === "evalsha" && String(args[3] ?? "").includes(":rl:")) seen.push("limit script");
      else if (command === "get" && String(args[1]).startsWith(`${prefix}:marker:`))
        markers.push(String(args[1]));
    });
    // MONITOR shows commands in the order Redis ran them: once a marker sent after X shows, so
    // has everything Redis ran before it.
    const marker = new Redis(REDIS_URL);
    stops.push(async () => marker.disconnect());
    const mark = async (name: string) => {
      await marker.get(`${prefix}:marker:${name}`);
      await waitFor(() => markers.includes(`${prefix}:marker:${name}`), { what: `MONITOR to show ${name}` });
    };
    await mark("before");
    await call(2);
    await mark("after");
    monitor.disconnect();

    assert.equal(seen.filter((c) => c === "session read").length, 1, `one session read: ${seen.join(", ")}`);
    // Sent before the decision's script: both went in one write, not one after the other's answer.
    assert.ok(seen.indexOf("session read") < seen.indexOf("limit script"), `order: ${seen.join(", ")}`);
  });
}
