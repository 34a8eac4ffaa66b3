/**
 * Distributed mode: a client resumes on instance B a stream that began on instance A
 * (a load balancer without affinity) and gets every event after its Last-Event-ID exactly once,
 * those A read while the client was away included, then the live ones, then the end. Two edge
 * stacks (StreamRegistry + RedisEventLog + Forwarder, each with its own Redis connections) share one
 * real Redis; each serves GET through Forwarder.get on a real node:http server, read by a real HTTP
 * client. The upstream side is the test appending to A's streams, as A's pump would.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, get, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, describe, test } from "node:test";
import type { Redis } from "ioredis";
import type { Sessioned } from "../../src/context.ts";
import { GetOrder } from "../../src/forward/get-order.ts";
import { sendError, toGatewayError } from "../../src/errors/wire.ts";
import { Forwarder } from "../../src/forward/streamable.ts";
import type { SessionManager } from "../../src/session/manager.ts";
import { RedisEventLog } from "../../src/store/redis/event-log.ts";
import { type EdgeStream, type StreamLimits, StreamRegistry } from "../../src/session/streams.ts";
import { createRedisClient } from "../../src/store/redis/client.ts";
import { dropPrefix, REDIS_URL, redisReady, startRedisServer, testPrefix } from "../helpers/redis.ts";
import { waitFor } from "../helpers/wait.ts";
import { sharedOnly } from "../../src/store/types.ts";

const LIMITS: StreamLimits = {
  bufferEvents: 1000,
  bufferBytes: 4 << 20,
  ttl: 60_000,
  // Sweeps (keep-alives, followers' backstop reads) every 5 s: live events here come through
  // pub/sub. Tests of what sweeps do set 100 ms.
  keepAlive: 15_000,
  retry: 1000,
};

interface Edge {
  registry: StreamRegistry;
  log: RedisEventLog;
  client: Redis;
  url: string;
  /** SIGTERM as the gateway does it: clients get `retry`, streams end, their ends reach Redis. */
  stop(): Promise<void>;
}

/** One edge instance: registry, event log and a GET endpoint served by the real Forwarder. */
async function startEdge(
  redisUrl: string,
  prefix: string,
  limits: StreamLimits,
  extra: { heartbeatMs?: number; onError?: (err: unknown, what: string) => void } = {},
): Promise<Edge> {
  const client = createRedisClient({ url: redisUrl });
  const log = new RedisEventLog({ client, keyPrefix: prefix, limits, ...extra });
  const registry = new StreamRegistry(limits, { events: log });
  const forwarder = new Forwarder({
    // GET with a Last-Event-ID this edge resolves never reaches the session manager (only a fresh
    // standalone stream does, which these tests do not open).
    sessions: undefined as unknown as SessionManager,
    streams: registry,
    inflight: { add: () => undefined },
    getOrder: new GetOrder(),
  });
  const server: Server = createServer((req, res) => {
    const ctx = {
      req,
      res,
      session: { id: String(req.headers["x-test-session"]) },
    } as unknown as Sessioned;
    forwarder.get(ctx).catch((err: unknown) => {
      if (!sendError(res, toGatewayError(err))) res.destroy();
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      registry.closeClients();
      registry.close();
      await log.close();
      server.closeAllConnections();
      server.close();
      client.disconnect();
    })());
  return { registry, log, client, url, stop };
}

interface SseClient {
  status: number;
  body: string;
  /** Event ids as received, in order. */
  ids: string[];
  data: string[];
  ended: Promise<void>;
  isEnded: () => boolean;
  close(): void;
}

/** A real HTTP client reading an SSE response (or an error body). */
async function open(url: string, session: string, lastEventId?: string): Promise<SseClient> {
  const headers: Record<string, string> = { accept: "text/event-stream", "x-test-session": session };
  if (lastEventId !== undefined) headers["last-event-id"] = lastEventId;
  const req = get(url, { headers });
  const [res] = (await once(req, "response")) as [IncomingMessage];
  let buf = "";
  let ended = false;
  const c: SseClient = {
    status: res.statusCode ?? 0,
    body: "",
    ids: [],
    data: [],
    ended: new Promise((resolve) => {
      res.on("close", () => {
        ended = true;
        resolve();
      });
    }),
    isEnded: () => ended,
    close: () => req.destroy(),
  };
  res.setEncoding("utf8");
  res.on("data", (chunk: string) => {
    c.body += chunk;
    buf += chunk;
    let cut: number;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const id = /^id: (.*)$/m.exec(block)?.[1];
      if (id === undefined) continue;
      c.ids.push(id);
      c.data.push(/^data: (.*)$/m.exec(block)?.[1] ?? "");
    }
  });
  res.on("error", () => undefined);
  req.on("error", () => undefined);
  return c;
}

async function until(cond: () => boolean | Promise<boolean>, what: string, timeout = 5000): Promise<void> {
  await waitFor(cond, { what, timeout, interval: 10 });
}

const range = (id: string, from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => `${id}.${from + i}`);

/** Waits until A's queued writes are in Redis (a PING queues behind them on the same connection). */
async function written(edge: Edge): Promise<void> {
  await new Promise((r) => setImmediate(r));
  edge.log.flush();
  await edge.client.ping();
}

if (await redisReady("distributed SSE resumption")) {
  describe("SSE streams resume across instances through Redis", () => {
    const admin = createRedisClient({ url: REDIS_URL });
    const prefixes: string[] = [];
    const edges: Edge[] = [];
    after(async () => {
      for (const e of edges) await e.stop();
      for (const p of prefixes) await dropPrefix(admin, p);
      admin.disconnect();
    });

    async function pair(limits = LIMITS, extraA: { heartbeatMs?: number } = {}) {
      const prefix = testPrefix();
      prefixes.push(prefix);
      const a = await startEdge(REDIS_URL, prefix, limits, extraA);
      const b = await startEdge(REDIS_URL, prefix, limits);
      edges.push(a, b);
      return { prefix, a, b };
    }

    /** A client on A reads `s` from its start, receives `n` events, then goes away. */
    async function clientOnA(a: Edge, s: EdgeStream, session: string): Promise<SseClient> {
      const c = await open(a.url, session, `${s.id}.0`);
      assert.equal(c.status, 200);
      await until(() => s.attached, "the client attached on A");
      return c;
    }

    test("a request stream: the events A read while the client was away, then live ones, then the end", async () => {
      const { a, b } = await pair();
      const s = a.registry.create("sess-1", "request");
      const first = await clientOnA(a, s, "sess-1");
      s.append('{"n":1}');
      s.append('{"n":2}');
      await until(() => first.ids.length === 2, "events 1-2 on A");
      first.close();
      await until(() => !s.attached, "A noticed the client left");
      // Session era: a disconnect is not a cancellation; A keeps reading the upstream.
      s.append('{"n":3}');
      s.append('{"n":4}');
      await written(a);

      const resumed = await open(b.url, "sess-1", `${s.id}.2`);
      assert.equal(resumed.status, 200);
      await until(() => resumed.ids.length === 2, "events 3-4 on B");
      s.append('{"n":5}'); // live, on A, after the client re-attached on B
      await until(() => resumed.ids.length === 3, "live event 5 on B");
      assert.equal(resumed.isEnded(), false);
      s.append('{"jsonrpc":"2.0","id":1,"result":{}}');
      s.finish();
      await resumed.ended;
      assert.deepEqual(resumed.ids, range(s.id, 3, 6), "every event after the id, once, in order");
      assert.deepEqual(resumed.data.slice(0, 3), ['{"n":3}', '{"n":4}', '{"n":5}']);
      assert.equal(b.log.followers, 0, "B let go of the stream");
    });

    test("a standalone stream: followed on B; when A stops, B ends it and a resume replays what is left", async () => {
      const { a, b } = await pair();
      const s = a.registry.create("sess-1", "standalone");
      const first = await clientOnA(a, s, "sess-1");
      s.append('{"method":"notifications/a"}');
      await until(() => first.ids.length === 1, "event 1 on A");
      first.close();
      await until(() => !s.attached, "A noticed the client left");
      s.append('{"method":"notifications/b"}');
      await written(a);

      const onB = await open(b.url, "sess-1", `${s.id}.1`);
      await until(() => onB.ids.length === 1, "event 2 on B");
      s.append('{"method":"notifications/c"}');
      await until(() => onB.ids.length === 2, "live event 3 on B");
      onB.close();
      await until(() => b.log.followers === 0, "B let go");
      s.append('{"method":"notifications/d"}'); // while the client is away again

      await a.stop(); // SIGTERM on A: closeClients, close, the ends written
      assert.deepEqual(onB.ids, range(s.id, 2, 3));
      // The upstream side is gone: B replays what Redis holds after the id; the forwarder then
      // opens a fresh standalone stream, as for an unknown id.
      const r = sharedOnly(await b.registry.resolveShared("sess-1", `${s.id}.3`));
      assert.ok(r);
      assert.equal(r.kind, "standalone");
      assert.equal(r.done, true);
      assert.deepEqual(
        r.framesAfter().map((f) => /^id: (.*)$/m.exec(f)?.[1]),
        [`${s.id}.4`],
      );
      assert.equal(b.log.followers, 0, "a finished stream is not followed");
    });

    test("a follower on B is ended when A stops", async () => {
      const { a, b } = await pair();
      const s = a.registry.create("sess-1", "standalone");
      s.append('{"method":"notifications/a"}');
      await written(a);
      const onB = await open(b.url, "sess-1", `${s.id}.0`);
      await until(() => onB.ids.length === 1, "event 1 on B");
      await a.stop();
      await onB.ended;
      assert.deepEqual(onB.ids, [`${s.id}.1`]);
    });

    test("a request stream whose instance stopped before the final answer: replayed on B, then ended", async () => {
      const { a, b } = await pair();
      const s = a.registry.create("sess-1", "request");
      let upstreamClosed = false;
      s.closeUpstream = () => {
        upstreamClosed = true;
      };
      const first = await clientOnA(a, s, "sess-1");
      s.append("", 500); // priming event
      s.append('{"method":"notifications/progress","params":{"progress":1}}');
      await until(() => first.ids.length === 2, "events 1-2 on A");
      first.close();
      await until(() => !s.attached, "A noticed the client left");
      s.append('{"method":"notifications/progress","params":{"progress":2}}');
      await a.stop();
      assert.equal(upstreamClosed, true);

      const onB = await open(b.url, "sess-1", `${s.id}.1`);
      assert.equal(onB.status, 200);
      await onB.ended;
      assert.deepEqual(onB.ids, range(s.id, 2, 3), "the rest, then the end (the client retries)");
    });

    test("exactly once: a client hops from A to B in the middle of a burst", async () => {
      const { a, b } = await pair();
      const s = a.registry.create("sess-1", "request");
      const first = await clientOnA(a, s, "sess-1");
      const total = 400;
      let hopped: SseClient | undefined;
      let hopFrom = "";
      for (let n = 1; n <= total; n++) {
        s.append(`{"n":${n}}`);
        if (n % 7 === 0) await new Promise((r) => setImmediate(r));
        if (n % 50 === 0) await new Promise((r) => setTimeout(r, 2)); // the burst's pace: timers and I/O run
        if (n === 150) {
          // The client goes away at whatever it has read, and resumes on B from there.
          await until(() => first.ids.length > 0, "some events on A");
          first.close();
          hopFrom = first.ids.at(-1) as string;
          hopped = await open(b.url, "sess-1", hopFrom);
          assert.equal(hopped.status, 200);
        }
      }
      s.finish();
      assert.ok(hopped);
      await hopped.ended;
      const from = Number(hopFrom.split(".")[1]);
      assert.deepEqual(hopped.ids, range(s.id, from + 1, total), `resumed after ${hopFrom}`);
      assert.equal(new Set(hopped.data).size, hopped.data.length, "no duplicates");
    });

    test("evicted events: the resume is 400 EDGE_STREAM_EXPIRED (before any SSE header)", async () => {
      const { a, b } = await pair({ ...LIMITS, bufferEvents: 3 });
      const s = a.registry.create("sess-1", "request");
      for (let n = 1; n <= 6; n++) s.append(`{"n":${n}}`);
      await written(a);
      const expired = await open(b.url, "sess-1", `${s.id}.2`);
      await expired.ended;
      assert.equal(expired.status, 400);
      assert.match(expired.body, /EDGE_STREAM_EXPIRED/);
      // The same on A, from its own buffer.
      const local = await open(a.url, "sess-1", `${s.id}.2`);
      await local.ended;
      assert.equal(local.status, 400);
      assert.match(local.body, /EDGE_STREAM_EXPIRED/);
      // Within the window, B serves it.
      const ok = await open(b.url, "sess-1", `${s.id}.3`);
      await until(() => ok.ids.length === 3, "events 4-6 on B");
      ok.close();
    });

    test("another session's Last-Event-ID is answered exactly like an unknown one", async () => {
      const { a, b } = await pair();
      const s = a.registry.create("sess-A", "request");
      s.append('{"secret":1}');
      await written(a);
      assert.equal(await b.registry.resolveShared("sess-B", `${s.id}.0`), undefined);
      assert.equal(await b.registry.resolveShared("sess-B", "AAAAAAAAAAAAAAAA.0"), undefined);
      assert.equal(b.log.followers, 0);
    });

    test("a client following on B keeps A's stream (and its upstream) past streams.ttl; then A drops it", async () => {
      const limits = { ...LIMITS, ttl: 400, keepAlive: 100 };
      const { a, b } = await pair(limits);
      const s = a.registry.create("sess-1", "standalone");
      let upstreamClosed = false;
      s.closeUpstream = () => {
        upstreamClosed = true;
      };
      s.append('{"method":"notifications/a"}');
      await written(a);
      const onB = await open(b.url, "sess-1", `${s.id}.0`);
      await until(() => onB.ids.length === 1, "event 1 on B");
      // Under test: three stream TTLs pass while the client follows the stream from B.
      await new Promise((r) => setTimeout(r, 3 * limits.ttl));
      assert.equal(upstreamClosed, false, "A kept the stream while the client followed it from B");
      assert.equal(a.registry.standaloneOf("sess-1"), s);
      s.append('{"method":"notifications/b"}');
      await until(() => onB.ids.length === 2, "event 2 on B");
      onB.close();
      await until(() => upstreamClosed, "A dropped the stream once nobody followed it", 5000);
    });

    test("an owner gone without writing its end (SIGKILL): the follower on B ends", async () => {
      const { prefix, a, b } = await pair({ ...LIMITS, keepAlive: 100 }, { heartbeatMs: 3_600_000 });
      const s = a.registry.create("sess-1", "standalone");
      s.append('{"method":"notifications/a"}');
      await written(a);
      const onB = await open(b.url, "sess-1", `${s.id}.0`);
      await until(() => onB.ids.length === 1, "event 1 on B");
      await admin.del(`${prefix}evo:${a.log.instance}`); // its heartbeat lapses
      await onB.ended;
      assert.deepEqual(onB.ids, [`${s.id}.1`]);
    });
  });

  describe("SSE resumption with Redis down", () => {
    test("a resume on B is 503 EDGE_STORE_UNAVAILABLE; A keeps serving its own client", async () => {
      const server = await startRedisServer();
      const prefix = testPrefix();
      const errors: string[] = [];
      const a = await startEdge(server.url, prefix, LIMITS, { onError: (_e, what) => errors.push(what) });
      const b = await startEdge(server.url, prefix, LIMITS);
      try {
        const s = a.registry.create("sess-1", "request");
        const onA = await open(a.url, "sess-1", `${s.id}.0`);
        await until(() => s.attached, "the client attached on A");
        s.append('{"n":1}');
        await written(a);
        await server.kill();
        s.append('{"n":2}');
        s.append('{"n":3}');
        await until(() => onA.ids.length === 3, "A's client got every event");
        await until(() => errors.length > 0, "the write failure reported");
        const onB = await open(b.url, "sess-1", `${s.id}.1`);
        await onB.ended;
        assert.equal(onB.status, 503);
        assert.match(onB.body, /EDGE_STORE_UNAVAILABLE/);
        s.append('{"n":4}');
        s.finish();
        await onA.ended;
        assert.deepEqual(onA.ids, range(s.id, 1, 4));
        assert.deepEqual(errors, ["write"], "reported once");
      } finally {
        await a.stop();
        await b.stop();
        await server.stop();
      }
    });
  });
}
