/**
 * Distributed mode (issue 6): a session ended on one edge is ended on every edge, and the work that
 * ends a session happens once for the fleet, not once per instance.
 *
 *   - a client's DELETE through the balancer, or an admin's DELETE /api/sessions/{id} on edge 0: the
 *     next request of that session is 404 on every edge (measured: how long after the DELETE), the
 *     upstream session is closed once (a second DELETE would reach the upstream for a session it
 *     no longer holds), and the audit trail has one session.end per session;
 *   - the idle reaper (idleTtl 2 s) runs on three edges: each idle session ends exactly once (one
 *     upstream DELETE, one session.end record), while a session in use stays.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { Client as PgClient } from "pg";
import { sessionHash } from "../../src/session/manager.ts";
import { connectSdk, rawSession, type SdkClient, sessionHeaders } from "../helpers/cluster/clients.ts";
import { type Cluster, startCluster } from "../helpers/cluster/edges.ts";
import { startUpstreams, type Upstream } from "../helpers/cluster/upstream-fleet.ts";
import { until } from "../helpers/wait.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const ready = (await redisReady("distributed mode, sessions")) && (await postgresSkipReason()) === undefined;

if (ready) {
  let upstreams: Upstream[];
  let cluster: Cluster;
  const clients: SdkClient[] = [];
  // Registered first, so it runs first: the edges stop before the schema is dropped.
  after(async () => {
    await Promise.allSettled(clients.map((c) => c.client.close()));
    await cluster?.stop();
    await Promise.allSettled((upstreams ?? []).map((u) => u.stop()));
    const redis = new Redis(REDIS_URL);
    await dropPrefix(redis, prefix).catch(() => undefined);
    redis.disconnect();
  });
  const pg = postgresFixture();
  const schema = pg.schema();
  const prefix = testPrefix();

  before(async () => {
    upstreams = await startUpstreams(["a", "b"]);
    cluster = await startCluster({
      edges: 3,
      redisUrl: REDIS_URL,
      keyPrefix: prefix,
      pgSchema: schema,
      upstreams,
      redis: { commandTimeout: "1s" },
      server: { sessions: { idleTtl: "2s" } },
    });
  });

  /** session.end records per session hash (audit rows are flushed every 100 ms). */
  async function sessionEnds(): Promise<Map<string, string[]>> {
    const db = new PgClient({ connectionString: POSTGRES_URL });
    await db.connect();
    try {
      const { rows } = await db.query<{ session: string; reason: string | null }>(
        `SELECT record::jsonb->>'session' AS session, record::jsonb->'detail'->>'reason' AS reason
           FROM "${schema}".audit WHERE type = 'session.end'`,
      );
      const out = new Map<string, string[]>();
      for (const r of rows) out.set(r.session, [...(out.get(r.session) ?? []), r.reason ?? ""]);
      return out;
    } finally {
      await db.end();
    }
  }

  const ping = async (edge: number, key: string, sid: string) => {
    const res = await fetch(cluster.edgeUrl(edge), {
      method: "POST",
      headers: sessionHeaders(key, sid),
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
    });
    await res.arrayBuffer();
    return res.status;
  };

  const upstreamStats = async () => {
    const all = await Promise.all(upstreams.map((u) => u.stats()));
    return {
      unknownLog: all.flatMap((s) => s.unknownLog),
      /** DELETEs of sessions the upstream no longer held: a session ended twice. */
      unknown: all.reduce((n, s) => n + s.unknownSessionDeletes, 0),
      live: all.reduce((n, s) => n + Object.keys(s.sessions).length, 0),
    };
  };

  describe("distributed mode: ending sessions", () => {
    test(
      "a session ended on one edge is 404 on every edge, ended upstream once, audited once",
      { timeout: 30_000 },
      async () => {
        const { key } = await cluster.createKey("ending");
        const before = await upstreamStats();

        // 1. The client ends its own session (DELETE through the balancer).
        const c = await connectSdk(cluster.mcpUrl, key, "ending");
        clients.push(c);
        await c.client.callTool({ name: "where", arguments: {} });
        const clientSid = c.transport.sessionId as string;
        const liveBefore = (await upstreamStats()).live;
        await c.transport.terminateSession();
        for (let edge = 0; edge < 3; edge++) {
          assert.equal(
            await ping(edge, key, clientSid),
            404,
            `edge ${edge}: the client-ended session is gone`,
          );
        }
        await until("the upstream session to close", async () =>
          (await upstreamStats()).live === liveBefore - 1 ? true : undefined,
        );

        // 2. An admin ends a session on edge 0 that edges 1 and 2 have been serving (and caching).
        const sid = await rawSession(cluster.mcpUrl, key);
        for (let edge = 0; edge < 3; edge++) assert.equal(await ping(edge, key, sid), 200);
        const t0 = performance.now();
        const del = await cluster.admin(0, "DELETE", `/api/sessions/${sid}`);
        assert.ok(del.status === 200 || del.status === 204, `DELETE /api/sessions: ${del.status}`);
        const gone = await Promise.all(
          [1, 2].map((edge) =>
            until(
              `edge ${edge} to answer 404`,
              async () => ((await ping(edge, key, sid)) === 404 ? performance.now() - t0 : undefined),
              5000,
              5,
            ),
          ),
        );
        process.stdout.write(
          `# admin DELETE on edge 0: 404 on edge 1 after ${gone[0]?.toFixed(0)} ms, edge 2 after ${gone[1]?.toFixed(0)} ms\n`,
        );
        for (const ms of gone)
          assert.ok(ms < 1000, `the end reached every edge within 1 s (${ms.toFixed(0)} ms)`);

        await until("the upstream sessions to close", async () =>
          (await upstreamStats()).live === liveBefore - 1 ? true : undefined,
        );
        // Under test: no duplicate end (a second upstream DELETE, a second record) shows up later.
        await sleep(500);
        const ends = await sessionEnds();
        assert.equal(ends.get(sessionHash(clientSid))?.length, 1, "one session.end for the client's DELETE");
        assert.equal(ends.get(sessionHash(sid))?.length, 1, "one session.end for the admin's DELETE");
        const st = await upstreamStats();
        assert.equal(
          st.unknown,
          before.unknown,
          `each upstream session was ended once; unknown-session requests upstream: ${JSON.stringify(st.unknownLog)}`,
        );
      },
    );

    test(
      "the idle reaper of three edges ends each idle session exactly once",
      { timeout: 30_000 },
      async () => {
        const { key } = await cluster.createKey("idle");
        const before = await upstreamStats();
        const idle = await Promise.all(Array.from({ length: 4 }, () => rawSession(cluster.mcpUrl, key)));
        const busy = await rawSession(cluster.mcpUrl, key);
        for (const s of [...idle, busy]) assert.equal(await ping(0, key, s), 200);
        const liveWithAll = (await upstreamStats()).live;

        // The busy session is used every 300 ms, on a different edge each time; the others idle.
        let stop = false;
        const busyStatuses: number[] = [];
        const keeper = (async () => {
          for (let i = 0; !stop; i++) {
            busyStatuses.push(await ping(i % 3, key, busy));
            await sleep(300); // under test: activity at this pace keeps the session from the reaper
          }
        })();
        const t0 = performance.now();
        try {
          await until(
            "the idle sessions to end",
            async () => {
              // Read through the admin API (a request on a session would count as activity).
              const list = await cluster.admin(1, "GET", "/api/sessions");
              const ids = new Set((list.json.sessions as { id: string }[]).map((x) => x.id));
              return idle.some((s) => ids.has(s)) || !ids.has(busy) ? undefined : true;
            },
            10_000,
            200,
          );
        } finally {
          // Under test: one more reaper interval (1 s) on every edge, so any double end would show.
          await sleep(1200);
          stop = true;
          await keeper;
        }
        const reapedIn = performance.now() - t0;
        for (const s of idle) {
          for (let edge = 0; edge < 3; edge++) assert.equal(await ping(edge, key, s), 404);
        }
        assert.deepEqual(
          busyStatuses.filter((s) => s !== 200),
          [],
          "the session in use stayed",
        );
        // Upstream: each idle session's upstream session closed (one DELETE: a second one would
        // reach the upstream as an unknown session).
        const afterStats = await until(
          "the idle sessions' upstream sessions to close",
          async () => {
            const st = await upstreamStats();
            return st.live === liveWithAll - idle.length ? st : undefined;
          },
          3000,
          100,
        ).catch(() => upstreamStats());
        const ends = await until(
          "the session.end records",
          async () => {
            const e = await sessionEnds();
            return idle.every((s) => e.has(sessionHash(s))) ? e : undefined;
          },
          3000,
          100,
        ).catch(() => sessionEnds());
        const counts = idle.map((s) => ends.get(sessionHash(s)) ?? []);
        process.stdout.write(
          `# idle reaper: 4 idle sessions ended within ${reapedIn.toFixed(0)} ms of going idle; session.end per session ${JSON.stringify(counts.map((c) => c.length))}, upstream sessions still open ${afterStats.live - (liveWithAll - idle.length)} of ${idle.length}, reasons ${JSON.stringify([...new Set(counts.flat())])}\n`,
        );
        assert.equal(
          afterStats.unknown,
          before.unknown,
          `each upstream session was ended once; unknown-session requests upstream: ${JSON.stringify(afterStats.unknownLog)}`,
        );
        assert.equal(
          afterStats.live,
          liveWithAll - idle.length,
          "the idle sessions' upstream sessions closed",
        );
        assert.deepEqual(
          counts.map((c) => c.length),
          [1, 1, 1, 1],
          "one session.end audit record per idle session",
        );
        assert.equal(ends.has(sessionHash(busy)), false, "no end for the busy session");
      },
    );
  });
}
