/**
 * Distributed mode acceptance (issue 6), with real processes: three edges on one Redis and one
 * PostgreSQL schema, behind a round-robin balancer with no affinity (test/helpers/cluster/balancer.ts), in
 * front of two instances of an SDK v1 MCP server that refuses (404) a session it does not hold.
 *
 *   1. Long SDK v1 sessions through the balancer: zero "session not found", every call answered by
 *      the upstream instance and session it was placed on, every call audited once.
 *   2. A stream cut mid-call resumes on ANOTHER edge with Last-Event-ID: every progress event and the
 *      result exactly once, including a result the upstream delivered while the client was away.
 *   3. A key revoked on edge 0 is refused by edges 1 and 2 within 1 s (measured), including at the
 *      next request of a client whose SSE stream is open.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from "jose";
import {
  auditCalls,
  connectSdk,
  rawSession,
  type SdkClient,
  sessionHeaders,
  sse,
  type SseEvent,
  whereOf,
} from "../helpers/cluster/clients.ts";
import { type Cluster, SERVER, startCluster, TENANT } from "../helpers/cluster/edges.ts";
import { startUpstreams, type Upstream, type Where } from "../helpers/cluster/upstream-fleet.ts";
import { until, within } from "../helpers/wait.ts";
import { postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const ready = (await redisReady("distributed mode")) && (await postgresSkipReason()) === undefined;

if (ready) {
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
  let upstreams: Upstream[];
  let cluster: Cluster;
  const clients: SdkClient[] = [];

  before(async () => {
    upstreams = await startUpstreams(["a", "b"]);
    cluster = await startCluster({
      edges: 3,
      redisUrl: REDIS_URL,
      keyPrefix: prefix,
      pgSchema: schema,
      upstreams,
      // Redis here is healthy; the default 100 ms command timeout turns a CPU-starved machine's
      // event-loop stall into 503 EDGE_STORE_UNAVAILABLE (seen at load average 29 on 2 cores). The
      // Redis-down test keeps the default: there the timeout is what it measures.
      redis: { commandTimeout: "1s" },
      extra: { streams: { retry: "100ms" } },
    });
  });

  /** Fails with the edges' logs attached, which is what one needs to see why. */
  const edgeLogs = () =>
    cluster.edges
      .map((e, i) => `--- edge ${i} ---\n${e.output().split("\n").slice(-30).join("\n")}`)
      .join("\n");

  const upstreamCalls = async () =>
    (await Promise.all(upstreams.map((u) => u.stats()))).reduce((n, s) => n + s.calls, 0);

  const unknownSessions = async () =>
    (await Promise.all(upstreams.map((u) => u.stats()))).reduce((n, s) => n + s.unknownSession, 0);

  describe("distributed mode: three edges, no affinity", () => {
    test(
      "8 SDK clients × 50 calls: no session not found, each call on its session's upstream instance",
      { timeout: 30_000 },
      async () => {
        const CLIENTS = 8;
        const CALLS = 50;
        const { key } = await cluster.createKey("long-sessions");
        const auditBefore = await auditCalls(schema, "where");
        const refusedBefore = await unknownSessions();
        const initializedBefore = (await Promise.all(upstreams.map((u) => u.stats()))).reduce(
          (n, s) => n + s.initialized,
          0,
        );

        const started = Date.now();
        const cs = await Promise.all(
          Array.from({ length: CLIENTS }, (_, i) => connectSdk(cluster.mcpUrl, key, `long-${i}`)),
        );
        clients.push(...cs);
        const failures: string[] = [];
        const runs = await Promise.all(
          cs.map(async (c) => {
            const seen: Where[] = [];
            for (let k = 0; k < CALLS; k++) {
              try {
                seen.push(whereOf(await c.client.callTool({ name: "where", arguments: {} })));
              } catch (err) {
                failures.push(String(err));
              }
            }
            return { sessionId: c.transport.sessionId as string, seen };
          }),
        );
        const elapsed = Date.now() - started;
        assert.deepEqual(failures, [], `no call failed\n${edgeLogs()}`);

        const placement: Record<string, number> = {};
        for (const { sessionId, seen } of runs) {
          assert.equal(seen.length, CALLS);
          const first = seen[0] as Where;
          placement[first.instance] = (placement[first.instance] ?? 0) + 1;
          for (const [k, w] of seen.entries()) {
            assert.equal(w.instance, first.instance, `call ${k + 1} of ${sessionId} on its instance`);
            assert.equal(w.session, first.session, `call ${k + 1} of ${sessionId} in its upstream session`);
            assert.equal(
              w.n,
              k + 1,
              `call ${k + 1} is the upstream session's call ${k + 1} (none lost, none twice)`,
            );
          }
        }
        assert.equal(
          new Set(runs.map((r) => r.seen[0]?.session)).size,
          CLIENTS,
          "one upstream session per client",
        );
        assert.equal(new Set(runs.map((r) => r.sessionId)).size, CLIENTS);
        assert.equal(await unknownSessions(), refusedBefore, "no upstream saw a session it does not hold");
        const initializedAfter = (await Promise.all(upstreams.map((u) => u.stats()))).reduce(
          (n, s) => n + s.initialized,
          0,
        );
        assert.equal(initializedAfter - initializedBefore, CLIENTS, "no session was re-initialized");

        // No affinity, proven: each session's calls reached every edge.
        const calls = cluster.lb.log.filter(
          (l) => l.rpc === "tools/call" && runs.some((r) => r.sessionId === l.session),
        );
        assert.equal(calls.length, CLIENTS * CALLS);
        assert.deepEqual(
          calls.filter((l) => l.status !== 200),
          [],
          "every call answered 200 by an edge",
        );
        for (const { sessionId } of runs) {
          const edges = new Set(calls.filter((l) => l.session === sessionId).map((l) => l.backend));
          assert.equal(edges.size, 3, `session ${sessionId.slice(0, 6)}… was served by all three edges`);
        }
        assert.equal(
          cluster.lb.log.filter((l) => l.status === 404).length,
          0,
          "no request of any kind answered 404",
        );
        for (const c of cs) {
          assert.deepEqual(
            c.errors.map(String).filter((e) => /404|not found/i.test(e)),
            [],
            "no transport error of a lost session",
          );
        }

        // Every call is one audit record in the shared PostgreSQL table, whichever edge wrote it.
        const audited = await until(
          "every call in the audit table",
          async () => {
            const a = await auditCalls(schema, "where");
            return a.total - auditBefore.total >= CLIENTS * CALLS ? a : undefined;
          },
          5000,
          100,
        );
        assert.equal(audited.total - auditBefore.total, CLIENTS * CALLS, "one audit record per call");
        assert.equal(audited.results - auditBefore.results, CLIENTS * CALLS, "each recorded as a result");
        const verify = await cluster.admin(1, "GET", "/api/audit/verify");
        assert.equal(verify.status, 200, JSON.stringify(verify.json));
        assert.equal(
          verify.json.ok,
          true,
          `the hash chain holds with three writers: ${JSON.stringify(verify.json)}`,
        );

        // One identity-signing key set for the fleet: every edge publishes the same JWKS, and every
        // X-MCP-Edge-Identity the upstream received, whichever edge signed it, verifies against it
        // and names the same session (hash) for every call of a session.
        const jwksDocs = await Promise.all(
          cluster.edges.map(async (e) => (await fetch(`${e.baseUrl}/.well-known/mcp-edge/jwks.json`)).json()),
        );
        for (const doc of jwksDocs) assert.deepEqual(doc, jwksDocs[0], "every edge publishes the same JWKS");
        const jwks = createLocalJWKSet(jwksDocs[0] as JSONWebKeySet);
        const kids = new Set<string>();
        for (const { seen } of runs) {
          const sids = new Set<unknown>();
          for (const w of seen) {
            assert.ok(w.identity, "the call carried X-MCP-Edge-Identity");
            const { payload, protectedHeader } = await jwtVerify(w.identity, jwks, { audience: SERVER });
            kids.add(String(protectedHeader.kid));
            sids.add(payload.sid);
            assert.equal(payload.tenant, TENANT);
          }
          assert.equal(sids.size, 1, "every call of a session names the same session");
        }

        process.stdout.write(
          `# ${CLIENTS} clients × ${CALLS} calls through 3 edges in ${elapsed} ms; placement ${JSON.stringify(placement)}; identity keys used ${kids.size}; edge loads ${JSON.stringify(cluster.lb.served())}\n`,
        );
        assert.equal(Object.keys(placement).length, 2, "sessions placed on both upstream instances");
      },
    );
  });

  describe("distributed mode: stream resumption across edges", () => {
    test(
      "an SDK client cut mid-call resumes on another edge: every progress event and the result once",
      { timeout: 30_000 },
      async () => {
        const { key } = await cluster.createKey("resume-sdk");
        const c = await connectSdk(cluster.mcpUrl, key, "resume-sdk");
        clients.push(c);
        const sid = c.transport.sessionId as string;
        const home = whereOf(await c.client.callTool({ name: "where", arguments: {} }));
        const STEPS = 10;
        const progress: number[] = [];
        let cut = 0;
        const result = await c.client.callTool(
          { name: "steps", arguments: { count: STEPS, delayMs: 60 } },
          undefined,
          {
            timeout: 20_000,
            onprogress: (p) => {
              progress.push(p.progress);
              if (p.progress === 3) {
                // The client's network drops: its POST stream is cut at the balancer.
                cut = cluster.lb.cut(
                  (a) => a.session === sid && a.method === "POST" && a.rpc === "tools/call",
                );
              }
            },
          },
        );
        assert.equal(cut, 1, "the call's stream was cut once");
        assert.deepEqual(
          progress,
          Array.from({ length: STEPS }, (_, i) => i + 1),
          `every progress event exactly once, in order\n${edgeLogs()}`,
        );
        const w = whereOf(result);
        assert.equal(w.steps, STEPS);
        assert.equal(w.instance, home.instance, "the call ran on the session's instance");
        assert.equal(w.session, home.session);
        assert.equal(w.n, 2);
        const post = cluster.lb.log
          .filter((l) => l.session === sid && l.method === "POST" && l.rpc === "tools/call")
          .at(-1);
        const resume = cluster.lb.log.filter(
          (l) => l.session === sid && l.method === "GET" && l.lastEventId !== undefined,
        );
        assert.ok(resume.length >= 1, "the client resumed with Last-Event-ID");
        assert.ok(post, "the call's POST is in the balancer log");
        const tries = resume.map((r) => `edge ${r.backend}: ${r.status}`).join(", ");
        process.stdout.write(
          `# SDK resume: call on edge ${post.backend}, resumed with Last-Event-ID on ${tries}\n`,
        );
        assert.equal(resume.length, 1, `one resumption, answered at once (${tries})`);
        assert.equal(resume[0]?.status, 200);
        assert.notEqual(
          resume[0]?.backend,
          post.backend,
          "the resumption was served by another edge than the call",
        );
      },
    );

    /** Starts `steps` on a raw session through the balancer; returns the stream and its edge. */
    async function startSteps(key: string, sid: string, count: number, delayMs: number, id: number) {
      const abort = new AbortController();
      const res = await fetch(cluster.mcpUrl, {
        method: "POST",
        headers: sessionHeaders(key, sid),
        signal: abort.signal,
        body: JSON.stringify({
          jsonrpc: "2.0",
          id,
          method: "tools/call",
          params: { name: "steps", arguments: { count, delayMs }, _meta: { progressToken: `p${id}` } },
        }),
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("content-type"), "text/event-stream");
      return { res, abort, backend: Number(res.headers.get("x-balancer-backend")) };
    }

    async function resumeOnAnotherEdge(key: string, sid: string, lastId: string, notOn: number) {
      // Round robin: the next request goes to the next edge; one that lands on `notOn` again (never
      // with three edges and nobody else sending) would not prove anything, so it is asserted.
      const headers = { ...sessionHeaders(key, sid), accept: "text/event-stream", "last-event-id": lastId };
      delete (headers as Record<string, string>)["content-type"];
      const res = await fetch(cluster.mcpUrl, {
        method: "GET",
        headers,
        signal: AbortSignal.timeout(10_000),
      });
      const backend = Number(res.headers.get("x-balancer-backend"));
      assert.notEqual(backend, notOn, "the resumption goes to another edge");
      return { res, backend };
    }

    function messagesOf(events: SseEvent[]): any[] {
      return events.filter((e) => e.data).map((e) => JSON.parse(e.data));
    }

    test(
      "raw client aborts mid-stream and resumes with Last-Event-ID on another edge: exactly once",
      { timeout: 30_000 },
      async () => {
        const { key } = await cluster.createKey("resume-raw");
        const sid = await rawSession(cluster.mcpUrl, key);
        const STEPS = 8;
        const call = await startSteps(key, sid, STEPS, 80, 7);
        const seen: SseEvent[] = [];
        for await (const ev of sse(call.res.body as unknown as AsyncIterable<Uint8Array>)) {
          seen.push(ev);
          if (messagesOf(seen).length === 2) break;
        }
        call.abort.abort();
        const lastId = seen.filter((e) => e.id).at(-1)?.id;
        assert.ok(lastId, "events carry ids");
        // Under test: events that come while nobody listens (a step every 80 ms) are replayed.
        await sleep(200);

        const resumed = await resumeOnAnotherEdge(key, sid, lastId, call.backend);
        if (resumed.res.status !== 200)
          assert.fail(
            `resumption answered ${resumed.res.status}: ${await resumed.res.text()}\n${edgeLogs()}`,
          );
        const after: SseEvent[] = [];
        for await (const ev of sse(resumed.res.body as unknown as AsyncIterable<Uint8Array>)) {
          after.push(ev);
          if (messagesOf(after).some((m) => m.id === 7)) break;
        }
        const all = messagesOf([...seen, ...after]);
        assert.deepEqual(
          all.filter((m) => m.method === "notifications/progress").map((m) => m.params.progress),
          Array.from({ length: STEPS }, (_, i) => i + 1),
          "every progress event exactly once, in order",
        );
        const results = all.filter((m) => m.id === 7);
        assert.equal(results.length, 1, "the result exactly once");
        assert.equal(JSON.parse(results[0].result.content[0].text).steps, STEPS);
        const ids = [...seen, ...after].map((e) => e.id).filter(Boolean);
        assert.equal(new Set(ids).size, ids.length, "no event id twice");
        process.stdout.write(
          `# raw resume: call on edge ${call.backend}, resumed on edge ${resumed.backend}\n`,
        );
      },
    );

    test(
      "a result the upstream delivered while the client was away is there for it, on another edge",
      { timeout: 30_000 },
      async () => {
        const { key } = await cluster.createKey("resume-away");
        const sid = await rawSession(cluster.mcpUrl, key);
        const STEPS = 4;
        const callsBefore = await upstreamCalls();
        const call = await startSteps(key, sid, STEPS, 50, 9);
        const seen: SseEvent[] = [];
        for await (const ev of sse(call.res.body as unknown as AsyncIterable<Uint8Array>)) {
          seen.push(ev);
          if (messagesOf(seen).length === 1) break;
        }
        call.abort.abort();
        const lastId = seen.filter((e) => e.id).at(-1)?.id;
        assert.ok(lastId);
        // Wait until the upstream has answered the call (it counted it): from then on the result
        // exists only in the edges' stream buffer.
        await until(
          "the upstream to finish the call",
          async () => ((await upstreamCalls()) > callsBefore ? true : undefined),
          5000,
        );
        const resumed = await resumeOnAnotherEdge(key, sid, lastId, call.backend);
        if (resumed.res.status !== 200)
          assert.fail(
            `resumption answered ${resumed.res.status}: ${await resumed.res.text()}\n${edgeLogs()}`,
          );
        const after: SseEvent[] = [];
        const reader = (async () => {
          for await (const ev of sse(resumed.res.body as unknown as AsyncIterable<Uint8Array>)) {
            after.push(ev);
            if (messagesOf(after).some((m) => m.id === 9)) break;
          }
        })();
        // Bounded; on a timeout the assertions below say what is missing.
        await within(reader, { what: "the resumed stream to bring the result", timeout: 3000 }).catch(
          () => undefined,
        );
        const all = messagesOf([...seen, ...after]);
        assert.deepEqual(
          all.filter((m) => m.method === "notifications/progress").map((m) => m.params.progress),
          Array.from({ length: STEPS }, (_, i) => i + 1),
          `every progress event exactly once\n${edgeLogs()}`,
        );
        const results = all.filter((m) => m.id === 9);
        assert.equal(results.length, 1, "the result that arrived while the client was away, exactly once");
        assert.equal(JSON.parse(results[0].result.content[0].text).steps, STEPS);
      },
    );
  });

  describe("distributed mode: revocation", () => {
    test(
      "a key revoked on edge 0 is refused by edges 1 and 2 within 1 s, open streams included",
      { timeout: 30_000 },
      async () => {
        const { key, id } = await cluster.createKey("revoked");
        // Warm every edge: a session through edge 1, one through edge 2, each used once.
        const s1 = await rawSession(cluster.edgeUrl(1), key);
        const s2 = await rawSession(cluster.edgeUrl(2), key);
        const ping = (edge: number, sid: string) =>
          fetch(cluster.edgeUrl(edge), {
            method: "POST",
            headers: sessionHeaders(key, sid),
            body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
          }).then(async (r) => {
            await r.arrayBuffer();
            return r.status;
          });
        assert.equal(await ping(1, s1), 200);
        assert.equal(await ping(2, s2), 200);
        // A raw SSE stream open on edge 2, and an SDK client (with its GET stream) through the balancer.
        const streamHeaders = { ...sessionHeaders(key, s2), accept: "text/event-stream" };
        const stream = await fetch(cluster.edgeUrl(2), { method: "GET", headers: streamHeaders });
        assert.equal(stream.status, 200);
        const c = await connectSdk(cluster.mcpUrl, key, "revoked-sdk");
        clients.push(c);
        whereOf(await c.client.callTool({ name: "where", arguments: {} }));

        const t0 = performance.now();
        const del = await cluster.admin(0, "DELETE", `/api/keys/${id}`);
        const tAnswered = performance.now() - t0;
        assert.equal(del.status, 200, JSON.stringify(del.json));
        const refusedAt = async (edge: number, sid: string) =>
          until(
            `edge ${edge} to refuse the revoked key`,
            async () => ((await ping(edge, sid)) === 401 ? performance.now() - t0 : undefined),
            5000,
            5,
          );
        const [on1, on2] = await Promise.all([refusedAt(1, s1), refusedAt(2, s2)]);
        process.stdout.write(
          `# revocation: DELETE answered in ${tAnswered.toFixed(0)} ms; refused by edge 1 after ${on1.toFixed(0)} ms, edge 2 after ${on2.toFixed(0)} ms\n`,
        );
        assert.ok(on1 < 1000, `edge 1 refused after ${on1.toFixed(0)} ms`);
        assert.ok(on2 < 1000, `edge 2 refused after ${on2.toFixed(0)} ms`);
        assert.equal(await ping(0, s1), 401, "edge 0 refuses it too");

        // The session whose stream is open: its next request is refused (401), whichever edge.
        for (let edge = 0; edge < 3; edge++) assert.equal(await ping(edge, s2), 401);
        await assert.rejects(
          c.client.callTool({ name: "where", arguments: {} }),
          (err: { code?: number }) => {
            assert.equal(err.code, 401, "the SDK client's next call is refused with 401");
            return true;
          },
        );
        const fresh = await fetch(cluster.mcpUrl, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            accept: "application/json, text/event-stream",
            authorization: `Bearer ${key}`,
          },
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
        await fresh.arrayBuffer();
        assert.equal(fresh.status, 401, "no new session with the revoked key");
        await stream.body?.cancel().catch(() => undefined);
      },
    );
  });
}
