/**
 * Distributed mode (issue 6, point 4): PostgreSQL becomes unreachable mid-traffic, then returns.
 * The edges reach PostgreSQL through a TCP proxy the test cuts (open connections dropped, new ones
 * refused) and restores; Redis stays up. The fault policy:
 *
 *   - key checks use the bounded cache: a key the edges have read keeps working, so tool calls on
 *     existing sessions keep being answered (200), and their audit records spool;
 *   - a key no edge has read cannot be checked: 503 with Retry-After, never 401;
 *   - key administration answers 503;
 *   - no answer waits long (measured);
 *   - when PostgreSQL returns, the spooled records are written: the audit table holds exactly one
 *     record per answered call, and the hash chain written by three instances verifies.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { auditCalls, JSON_SSE, postWhere, rawSession } from "../helpers/cluster/clients.ts";
import { type Cluster, startCluster } from "../helpers/cluster/edges.ts";
import { startUpstreams, type Upstream, type Where } from "../helpers/cluster/upstream-fleet.ts";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.ts";
import { until, waitFor } from "../helpers/wait.ts";
import { lastMessage } from "../helpers/mcp.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const ready =
  (await redisReady("distributed mode, PostgreSQL down")) && (await postgresSkipReason()) === undefined;

interface Answer {
  at: number;
  ms: number;
  status: number;
  where?: Where;
  code?: string;
}

async function callWhere(url: string, key: string, sid: string, id: number): Promise<Answer> {
  const at = performance.now();
  const res = await postWhere(url, key, sid, id);
  const msg = lastMessage(await res.text());
  const a: Answer = { at, ms: performance.now() - at, status: res.status };
  if (res.status === 200 && msg?.result) a.where = JSON.parse(msg.result.content[0].text) as Where;
  if (msg?.error?.data?.code) a.code = msg.error.data.code;
  return a;
}

if (ready) {
  let upstreams: Upstream[];
  let cluster: Cluster;
  let proxy: TcpProxy;
  // Registered first, so it runs first: the edges stop before the schema is dropped.
  after(async () => {
    await proxy?.restore();
    await cluster?.stop();
    await proxy?.stop();
    await Promise.allSettled((upstreams ?? []).map((u) => u.stop()));
    const redis = new Redis(REDIS_URL);
    await dropPrefix(redis, prefix).catch(() => undefined);
    redis.disconnect();
  });
  const pg = postgresFixture();
  const schema = pg.schema();
  const prefix = testPrefix();

  before(async () => {
    const target = new URL(POSTGRES_URL);
    proxy = await startTcpProxy(Number(target.port || 5432), target.hostname);
    const viaProxy = new URL(POSTGRES_URL);
    viaProxy.port = String(proxy.port);
    upstreams = await startUpstreams(["a", "b"]);
    cluster = await startCluster({
      edges: 3,
      redisUrl: REDIS_URL,
      keyPrefix: prefix,
      pgSchema: schema,
      upstreams,
      postgresUrl: viaProxy.toString(),
      redis: { commandTimeout: "1s" },
    });
  });

  describe("distributed mode: PostgreSQL unreachable", () => {
    test(
      "cached keys keep working, unknown keys 503 (not 401), key admin 503, audit spools and catches up",
      { timeout: 60_000 },
      async (t) => {
        const { key } = await cluster.createKey("traffic");
        const { key: unread } = await cluster.createKey("never-used");
        const WORKERS = 4;
        const sids = await Promise.all(
          Array.from({ length: WORKERS }, () => rawSession(cluster.mcpUrl, key)),
        );

        let stop = false;
        const logs: Answer[][] = sids.map(() => []);
        const workers = sids.map(async (sid, w) => {
          for (let id = 1; !stop; id++) {
            (logs[w] as Answer[]).push(
              await callWhere(cluster.mcpUrl, key, sid, id).catch((err: unknown): Answer => ({
                at: performance.now(),
                ms: 0,
                status: -1,
                code: String(err),
              })),
            );
            await sleep(20); // the load's pace: about 50 calls a second per worker
          }
        });
        const stopWorkers = async () => {
          stop = true;
          await Promise.all(workers);
        };
        t.after(stopWorkers);

        const answeredSince = (t0: number) => logs.map((l) => l.filter((a) => a.at > t0).length);
        // Every worker has been answered a few times: every edge has read (and cached) the key.
        await waitFor(() => answeredSince(0).every((n) => n >= 6), {
          what: "six calls per worker before the cut",
        });
        const tCut = performance.now();
        await proxy.cut();
        // Under test: past the key cache's freshness (1 s), the checks use the stale copies.
        await sleep(1100);

        const timed = async <T>(f: () => Promise<T>): Promise<[T, number]> => {
          const t0 = performance.now();
          const v = await f();
          return [v, performance.now() - t0];
        };
        // A key no edge has read: it cannot be checked. 503 + Retry-After, never 401.
        const [unknownKey, unknownMs] = await timed(async () => {
          const res = await fetch(cluster.mcpUrl, {
            method: "POST",
            headers: { ...JSON_SSE, authorization: `Bearer ${unread}` },
            body: JSON.stringify({
              jsonrpc: "2.0",
              id: 1,
              method: "initialize",
              params: {
                protocolVersion: "2025-11-25",
                capabilities: {},
                clientInfo: { name: "x", version: "1" },
              },
            }),
          });
          return { status: res.status, retryAfter: res.headers.get("retry-after"), body: await res.text() };
        });
        // Key administration: 503.
        const [create, createMs] = await timed(() =>
          cluster.admin(1, "POST", "/api/keys", { name: "late", server: "conf", tenant: "acme" }),
        );
        const [list, listMs] = await timed(() => cluster.admin(2, "GET", "/api/keys"));
        const sinceAdmin = performance.now();
        await waitFor(() => answeredSince(sinceAdmin).every((n) => n >= 3), {
          what: "three more calls per worker while PostgreSQL is away",
        });

        const tRestore = performance.now();
        await proxy.restore();
        await waitFor(() => answeredSince(tRestore).every((n) => n >= 6), {
          what: "six calls per worker after PostgreSQL came back",
        });
        await stopWorkers();

        const all = logs.flat();
        const down = all.filter((a) => a.at > tCut && a.at < tRestore);
        const statuses = (xs: Answer[]) =>
          xs.reduce<Record<string, number>>((m, a) => {
            const k = a.code ? `${a.status} ${a.code}` : String(a.status);
            m[k] = (m[k] ?? 0) + 1;
            return m;
          }, {});
        const maxDown = Math.max(...down.map((a) => a.ms));
        const answered = all.filter((a) => a.status === 200).length;
        process.stdout.write(
          `# PostgreSQL down ${(tRestore - tCut).toFixed(0)} ms: calls ${JSON.stringify(statuses(down))}, slowest ${maxDown.toFixed(0)} ms; ` +
            `unread key ${unknownKey.status} in ${unknownMs.toFixed(0)} ms; POST /api/keys ${create.status} in ${createMs.toFixed(0)} ms; GET /api/keys ${list.status} in ${listMs.toFixed(0)} ms; ` +
            `whole run ${JSON.stringify(statuses(all))}\n`,
        );

        assert.deepEqual(
          all.filter((a) => a.status !== 200),
          [],
          "every call on an existing session with a cached key is answered",
        );
        assert.ok(down.length > 0, "calls were made during the outage");
        assert.ok(maxDown < 2000, `no call waited 2 s (slowest ${maxDown.toFixed(0)} ms)`);
        assert.equal(unknownKey.status, 503, `a key no edge has read: ${unknownKey.body}`);
        assert.ok(unknownKey.retryAfter, "with Retry-After");
        assert.equal(create.status, 503, `POST /api/keys: ${JSON.stringify(create.json)}`);
        assert.equal(list.status, 503, `GET /api/keys: ${JSON.stringify(list.json)}`);
        for (const ms of [unknownMs, createMs, listMs])
          assert.ok(ms < 2000, `answered within 2 s (${ms.toFixed(0)} ms)`);

        for (const [w, log] of logs.entries()) {
          const ns = log.filter((a) => a.status === 200).map((a) => (a.where as Where).n);
          assert.deepEqual(
            ns,
            ns.map((_, i) => i + 1),
            `worker ${w}: each answered call ran once upstream`,
          );
        }

        // PostgreSQL is back: the spooled records are written, each once.
        const audited = await until(
          "the audit table to catch up",
          async () => {
            const a = await auditCalls(schema, "where");
            return a.results >= answered ? a : undefined;
          },
          10_000,
          200,
        ).catch(() => auditCalls(schema, "where"));
        // Under test: no record comes twice, so nothing more may arrive after the catch-up.
        await sleep(300);
        const final = await auditCalls(schema, "where");
        process.stdout.write(
          `# audit after PostgreSQL returned: ${JSON.stringify(final.byDecision)}; answered ${answered}\n`,
        );
        assert.equal(audited.results, answered, "one audit record per answered call, outage included");
        assert.equal(final.total, answered, "and no record twice");
        const verify = await cluster.admin(0, "GET", "/api/audit/verify");
        assert.equal(verify.status, 200, JSON.stringify(verify.json));
        assert.equal(verify.json.ok, true, `the hash chain holds: ${JSON.stringify(verify.json)}`);

        // Recovered without a restart: the unread key works, keys can be created again.
        const sid = await rawSession(cluster.mcpUrl, unread);
        assert.equal((await callWhere(cluster.mcpUrl, unread, sid, 1)).status, 200);
        const again = await cluster.admin(1, "POST", "/api/keys", {
          name: "after",
          server: "conf",
          tenant: "acme",
        });
        assert.equal(again.status, 201);
      },
    );
  });
}
