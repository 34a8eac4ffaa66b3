/**
 * An edge that dies mid-call loses nothing the upstream still has. Two real edge processes on real
 * Redis and PostgreSQL, a real SDK upstream; a streamed tools/call (progress notifications, then
 * the result, a few seconds) is in flight through edge A when A gets SIGKILL; the client resumes
 * on edge B with Last-Event-ID.
 *   (a) the upstream is resumable (SDK event store): B takes the stream over, resumes it upstream
 *       after the last event id A mirrored, and the client gets the rest of the stream and the
 *       result exactly once (no event twice, ids on the same stream increasing). The time from the
 *       SIGKILL to the result on B goes to the test's diagnostics.
 *   (b) the upstream gives no event ids: B answers the pending call at once with the JSON-RPC error
 *       EDGE_UPSTREAM_STREAM_LOST on the resumed stream, never a 200 that sends nothing.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { Redis } from "ioredis";
import { type Cluster, startCluster } from "../helpers/cluster/edges.ts";
import { auditCalls, rawSession, type SseEvent, sessionHeaders, sse } from "../helpers/cluster/clients.ts";
import { startUpstreams, type Upstream } from "../helpers/cluster/upstream-fleet.ts";
import { postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { waitFor } from "../helpers/wait.ts";

const STEPS = 16;
const DELAY_MS = 250;

interface Progress {
  progress: number;
}

/** The SSE events of a response, read in the background until it ends. */
function reader(res: Response): { events: SseEvent[]; ended: Promise<void>; next(n: number): Promise<void> } {
  const events: SseEvent[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const ended = (async () => {
    try {
      for await (const ev of sse(res.body as unknown as AsyncIterable<Uint8Array>)) {
        events.push(ev);
        for (const w of waiters.filter((x) => events.length >= x.n)) w.resolve();
      }
    } catch {
      // the connection was cut (the edge was killed)
    }
  })();
  return {
    events,
    ended,
    next: (n) =>
      events.length >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve })),
  };
}

/** The audit rows of the `steps` call, once there are any. */
function audited(schema: string): ReturnType<typeof auditCalls> {
  return waitFor(
    async () => {
      const a = await auditCalls(schema, "steps");
      return a.total > 0 ? a : undefined;
    },
    { what: "the audit record of the call", timeout: 10_000, interval: 100 },
  );
}

const parsed = (ev: SseEvent) => (ev.data ? (JSON.parse(ev.data) as Record<string, unknown>) : undefined);
const progressOf = (ev: SseEvent) =>
  (parsed(ev) as { params?: Progress } | undefined)?.params?.progress as number | undefined;

describe("an edge dies mid-call", async () => {
  const skip =
    (await postgresSkipReason()) ?? ((await redisReady("stream takeover")) ? undefined : "no Redis");
  const clusters: Cluster[] = [];
  const upstreams: Upstream[] = [];
  const prefixes: string[] = [];
  // Registered before the PostgreSQL fixture's, so it runs first: the edges stop before the schema goes.
  after(async () => {
    await Promise.allSettled(clusters.map((c) => c.stop()));
    await Promise.allSettled(upstreams.map((u) => u.stop()));
    const redis = new Redis(REDIS_URL);
    for (const p of prefixes) await dropPrefix(redis, p).catch(() => undefined);
    redis.disconnect();
  });
  const pg = postgresFixture();

  async function setUp(resumable: boolean) {
    const up = await startUpstreams(["a"], { resumable });
    upstreams.push(...up);
    const prefix = testPrefix();
    prefixes.push(prefix);
    const schema = pg.schema();
    const cluster = await startCluster({
      edges: 2,
      redisUrl: REDIS_URL,
      keyPrefix: prefix,
      pgSchema: schema,
      upstreams: up,
    });
    clusters.push(cluster);
    const { key } = await cluster.createKey("takeover");
    const sid = await rawSession(cluster.edgeUrl(0), key);
    const headers = sessionHeaders(key, sid);
    const call = await fetch(cluster.edgeUrl(0), {
      method: "POST",
      headers,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 7,
        method: "tools/call",
        params: {
          name: "steps",
          arguments: { count: STEPS, delayMs: DELAY_MS },
          _meta: { progressToken: "t" },
        },
      }),
    });
    assert.equal(call.status, 200);
    return { cluster, headers, schema, onA: reader(call) };
  }

  test(
    "(a) resumable upstream: B takes the stream over, the rest and the result arrive once",
    { skip },
    async (t) => {
      const { cluster, headers, schema, onA } = await setUp(true);
      // Three progress notifications through A, then A dies.
      await onA.next(3);
      const seen = onA.events.filter((e) => e.id !== undefined);
      const lastId = seen.at(-1)?.id as string;
      const killedAt = performance.now();
      await cluster.edges[0]?.kill();

      const res = await fetch(cluster.edgeUrl(1), {
        headers: { ...headers, accept: "text/event-stream", "last-event-id": lastId },
      });
      assert.equal(res.status, 200);
      const onB = reader(res);
      await onB.ended;
      const results = onB.events.filter((e) => (parsed(e) as { id?: unknown } | undefined)?.id === 7);
      assert.equal(results.length, 1, `one result, got ${JSON.stringify(onB.events)}`);
      const ms = performance.now() - killedAt;
      const result = parsed(results[0] as SseEvent) as { result: { content: { text: string }[] } };
      assert.equal((JSON.parse(result.result.content[0]?.text ?? "{}") as { steps?: number }).steps, STEPS);
      // Same stream, ids increasing after the client's; no event twice.
      const [stream, from] = lastId.split(".") as [string, string];
      let seq = Number(from);
      for (const ev of onB.events.filter((e) => e.id !== undefined)) {
        const [s, n] = (ev.id as string).split(".") as [string, string];
        assert.equal(s, stream);
        assert.ok(Number(n) > seq, `${ev.id} after ${seq}`);
        seq = Number(n);
      }
      const progress = [...onA.events, ...onB.events].map(progressOf).filter((p) => p !== undefined);
      for (let i = 1; i < progress.length; i++)
        assert.ok((progress[i] as number) > (progress[i - 1] as number), `progress ${progress.join(",")}`);
      assert.ok(results[0] === onB.events.at(-1), "the result is the last event");
      // One audit record of the call, written by B with the outcome it relayed.
      assert.deepEqual((await audited(schema)).byDecision, { "allowed/result": 1 });
      t.diagnostic(
        `SIGKILL of A → result delivered on B: ${Math.round(ms)} ms (tool: ${STEPS} × ${DELAY_MS} ms; ` +
          `progress seen ${progress.length}/${STEPS})`,
      );
    },
  );

  test(
    "(b) upstream without event ids: B answers the pending call with EDGE_UPSTREAM_STREAM_LOST at once",
    { skip },
    async (t) => {
      const { cluster, headers, schema, onA } = await setUp(false);
      await onA.next(3);
      const lastId = onA.events.filter((e) => e.id !== undefined).at(-1)?.id as string;
      const killedAt = performance.now();
      await cluster.edges[0]?.kill();
      const res = await fetch(cluster.edgeUrl(1), {
        headers: { ...headers, accept: "text/event-stream", "last-event-id": lastId },
      });
      assert.equal(res.status, 200);
      const onB = reader(res);
      await onB.ended;
      const ms = performance.now() - killedAt;
      const last = parsed(onB.events.at(-1) as SseEvent) as {
        id: number;
        error: { code: number; data: { code: string } };
      };
      assert.equal(last.id, 7);
      assert.equal(last.error.code, -32000);
      assert.equal(last.error.data.code, "EDGE_UPSTREAM_STREAM_LOST");
      // Well before the tool would have finished, and no 25 s of silence.
      assert.ok(ms < STEPS * DELAY_MS, `the error after ${Math.round(ms)} ms`);
      // The call's outcome upstream is unknown, and its record says so.
      assert.deepEqual((await audited(schema)).byDecision, { "allowed/unknown": 1 });
      t.diagnostic(`no event ids upstream: EDGE_UPSTREAM_STREAM_LOST ${Math.round(ms)} ms after the SIGKILL`);
    },
  );
});
