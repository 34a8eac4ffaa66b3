/**
 * RedisEventLog (src/store/redis/event-log.ts) against real Redis: what instance A writes for its
 * streams (frames, window, TTL, end, removal), what instance B reads back (own session only, the
 * trimmed window as EDGE_STREAM_EXPIRED, holes never silent), a request stream taken over when its
 * owner's connection is gone (claimed once, the old owner's writes refused), and a Redis that dies
 * under A (A's own client keeps being served; one report per failure run; 503 on a resume).
 */
import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { PassThrough } from "node:stream";
import { after, describe, test } from "node:test";
import { GatewayError } from "../../src/errors/errors.ts";
import { RedisEventLog } from "../../src/store/redis/event-log.ts";
import { Sink, type StreamLimits, StreamRegistry } from "../../src/session/streams.ts";
import { createRedisClient } from "../../src/store/redis/client.ts";
import { dropPrefix, REDIS_URL, redisReady, startRedisServer, testPrefix } from "../helpers/redis.ts";
import { isTakenOver, sharedOnly } from "../../src/store/types.ts";

const limits: StreamLimits = {
  bufferEvents: 3,
  bufferBytes: 1 << 20,
  ttl: 60_000,
  keepAlive: 15_000,
  retry: 1000,
};

function fakeResponse(): { res: ServerResponse; text: () => string } {
  const out = new PassThrough();
  let text = "";
  out.on("data", (d: Buffer) => {
    text += d.toString();
  });
  return { res: out as unknown as ServerResponse, text: () => text };
}

const ids = (text: string) => [...text.matchAll(/^id: (.+)$/gm)].map((m) => m[1]);
const seqs = (frames: readonly string[]) => frames.map((f) => Number(/^id: [^.]+\.(\d+)$/m.exec(f)?.[1]));

async function isCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof GatewayError && e.code === code);
}

if (await redisReady("RedisEventLog")) {
  describe("RedisEventLog", () => {
    const client = createRedisClient({ url: REDIS_URL });
    const prefixes: string[] = [];
    const closers: (() => Promise<unknown> | void)[] = [];
    after(async () => {
      for (const c of closers.reverse()) await c();
      for (const p of prefixes) await dropPrefix(client, p);
      client.disconnect();
    });

    /** One instance: a registry mirrored to its own log (own subscriber), under a test prefix. */
    function instance(prefix: string, l: StreamLimits = limits) {
      const log = new RedisEventLog({ client, keyPrefix: prefix, limits: l });
      const registry = new StreamRegistry(l, { events: log });
      closers.push(async () => {
        registry.close();
        await log.close();
      });
      return { log, registry };
    }

    /** Waits until A's writes are in Redis: a PING on the same (ordered) connection queues behind them. */
    async function written(log: RedisEventLog): Promise<void> {
      await new Promise((r) => setImmediate(r));
      log.flush();
      await client.ping();
    }

    function setup(l: StreamLimits = limits) {
      const prefix = testPrefix();
      prefixes.push(prefix);
      return { prefix, a: instance(prefix, l), b: instance(prefix, l) };
    }

    test("A's frames land in a Redis Stream with meta and a TTL; B reads those after a seq", async () => {
      const { prefix, a, b } = setup();
      const s = a.registry.create("sess-1", "request");
      s.append('{"n":1}');
      s.append('{"n":2}');
      await written(a.log);
      const raw = await client.xrange(`${prefix}ev:${s.id}`, "-", "+");
      assert.deepEqual(
        raw.map(([id]) => id),
        ["0-1", "0-2"],
      );
      assert.match(raw[1]?.[1][1] ?? "", new RegExp(`^id: ${s.id}\\.2\ndata: \\{"n":2\\}\n\n$`));
      const meta = await client.hgetall(`${prefix}evm:${s.id}`);
      assert.equal(meta["s"], "sess-1");
      assert.equal(meta["k"], "request");
      assert.equal(meta["last"], "2");
      assert.equal(meta["i"], a.log.instance);
      assert.equal(meta["end"], undefined);
      for (const key of [`${prefix}ev:${s.id}`, `${prefix}evm:${s.id}`]) {
        const ttl = await client.pttl(key);
        assert.ok(ttl > 0 && ttl <= limits.ttl, `${key} ttl ${ttl}`);
      }
      assert.equal(await client.exists(`${prefix}evo:${a.log.instance}`), 1, "A's heartbeat");

      const r = await b.log.open("sess-1", s.id, 1);
      assert.ok(r);
      assert.equal(r.kind, "request");
      assert.equal(r.done, false);
      assert.deepEqual(seqs(r.framesAfter()), [2]);
      b.log.release(r);
      assert.equal(b.log.followers, 0);
    });

    test("another session's stream and an unknown one both read as undefined", async () => {
      const { a, b } = setup();
      const s = a.registry.create("sess-A", "standalone");
      s.append("{}");
      await written(a.log);
      assert.equal(await b.log.open("sess-B", s.id, 0), undefined);
      assert.equal(await b.log.open("sess-A", "AAAAAAAAAAAAAAAA", 0), undefined);
      assert.equal(await b.registry.resolveShared("sess-B", `${s.id}.0`), undefined);
      assert.equal(b.log.followers, 0, "nothing subscribed for a foreign id");
      // This process's own ids never go to Redis: what the registry does not hold is gone.
      assert.equal(await a.registry.resolveShared("sess-A", `${s.id}.0`), undefined);
    });

    test("the window is A's: trimmed events make a resume from before them EDGE_STREAM_EXPIRED", async () => {
      const { prefix, a, b } = setup();
      const s = a.registry.create("sess-1", "request");
      for (let i = 1; i <= 5; i++) s.append(`{"n":${i}}`); // buffer keeps 3: seq 3,4,5
      await written(a.log);
      assert.equal(await client.xlen(`${prefix}ev:${s.id}`), 3);
      await isCode(b.log.open("sess-1", s.id, 1), "EDGE_STREAM_EXPIRED");
      const r = await b.log.open("sess-1", s.id, 2);
      assert.deepEqual(seqs(r?.framesAfter() ?? []), [3, 4, 5]);
      if (r) b.log.release(r);
      // Written one at a time, the same window.
      for (let i = 6; i <= 9; i++) {
        s.append(`{"n":${i}}`);
        await written(a.log);
      }
      assert.equal(await client.xlen(`${prefix}ev:${s.id}`), 3);
      await isCode(b.log.open("sess-1", s.id, 5), "EDGE_STREAM_EXPIRED");
    });

    test("a hole in what Redis holds is never silent: what came before it counts as evicted", async () => {
      const { prefix, a, b } = setup();
      const s = a.registry.create("sess-1", "request");
      s.append('{"n":1}');
      s.append('{"n":2}');
      await written(a.log);
      // The keys are lost (a Redis restart without persistence): events 1-2 are gone there.
      await client.del(`${prefix}ev:${s.id}`, `${prefix}evm:${s.id}`);
      s.append('{"n":3}');
      await written(a.log);
      await isCode(b.log.open("sess-1", s.id, 1), "EDGE_STREAM_EXPIRED");
      const r = await b.log.open("sess-1", s.id, 2);
      assert.deepEqual(seqs(r?.framesAfter() ?? []), [3]);
      if (r) b.log.release(r);
      // Lost again, then only the end is written: event 4 is not claimed to be there.
      s.append('{"n":4}');
      await written(a.log);
      await client.del(`${prefix}ev:${s.id}`, `${prefix}evm:${s.id}`);
      s.finish();
      await written(a.log);
      await isCode(b.log.open("sess-1", s.id, 3), "EDGE_STREAM_EXPIRED");
    });

    test("a stream settled within one turn is never written; one settled later is removed", async () => {
      const { prefix, a } = setup();
      // The usual POST: one answer to an attached client, then the end.
      const quick = a.registry.create("sess-1", "request");
      quick.attach(new Sink(fakeResponse().res), 0);
      quick.append('{"result":1}');
      quick.finish();
      await written(a.log);
      assert.equal(await client.exists(`${prefix}ev:${quick.id}`, `${prefix}evm:${quick.id}`), 0);

      const slow = a.registry.create("sess-1", "request");
      slow.attach(new Sink(fakeResponse().res), 0);
      slow.append('{"progress":1}');
      await written(a.log);
      assert.equal(await client.exists(`${prefix}evm:${slow.id}`), 1);
      slow.append('{"result":1}');
      slow.finish();
      await written(a.log);
      assert.equal(await client.exists(`${prefix}ev:${slow.id}`, `${prefix}evm:${slow.id}`), 0);
    });

    test("a finished stream keeps its end; an ended session's streams are removed", async () => {
      const { prefix, a, b } = setup();
      const s = a.registry.create("sess-1", "request");
      s.append('{"n":1}');
      s.append('{"n":2}');
      s.finish(); // no client: kept, replayable
      await written(a.log);
      assert.equal(await client.hget(`${prefix}evm:${s.id}`, "end"), "1");
      const r = await b.log.open("sess-1", s.id, 1);
      assert.equal(r?.done, true);
      assert.deepEqual(seqs(r?.framesAfter() ?? []), [2]);
      assert.equal(b.log.followers, 0, "a finished stream is not subscribed to");

      const t = a.registry.create("sess-2", "standalone");
      t.append("{}");
      await written(a.log);
      a.registry.dropSession("sess-2");
      await written(a.log);
      assert.equal(await client.exists(`${prefix}ev:${t.id}`, `${prefix}evm:${t.id}`), 0);
    });

    test("takeover: a request stream whose owner is gone is claimed once; the old owner's writes are refused", async () => {
      const prefix = testPrefix();
      prefixes.push(prefix);
      // A's subscriber connection is its own: closing it is what a killed process's looks like.
      const subA = createRedisClient({ url: REDIS_URL });
      const logA = new RedisEventLog({ client, keyPrefix: prefix, limits, subscriber: () => subA });
      const a = { log: logA, registry: new StreamRegistry(limits, { events: logA }) };
      closers.push(async () => {
        a.registry.close();
        await logA.close();
      });
      const b = instance(prefix);
      const c = instance(prefix);
      const s = a.registry.create("sess-1", "request");
      s.takeover = { requestId: "req-1", protocolVersion: "2025-11-25", ids: [7] };
      s.append('{"n":1}', undefined, "up-1");
      s.append('{"n":2}', undefined, "up-2");
      await written(a.log);
      const liveness = async () =>
        ((await client.pubsub("NUMSUB", `${prefix}evi:${a.log.instance}`)) as [string, number])[1];
      await waitFor(async () => (await liveness()) === 1);
      // Owner alive: B follows, no claim.
      const followed = sharedOnly(await b.registry.resolveShared("sess-1", `${s.id}.1`));
      assert.equal(followed?.done, false);
      followed?.end();
      subA.disconnect();
      await waitFor(async () => (await liveness()) === 0);
      const taken = await b.registry.resolveShared("sess-1", `${s.id}.1`);
      assert.ok(isTakenOver(taken), "B takes the stream over");
      assert.equal(taken.last, 2);
      assert.equal(taken.upstreamId, "up-2");
      assert.deepEqual(taken.state.ids, [7]);
      assert.deepEqual(seqs(taken.frames), [2]);
      const adopted = b.registry.adopt(taken);
      // Another instance resuming now follows B (one claim wins).
      const other = await c.registry.resolveShared("sess-1", `${s.id}.1`);
      assert.equal(isTakenOver(other), false);
      sharedOnly(other)?.end();
      adopted.append('{"n":3}', undefined, "up-3");
      await written(b.log);
      // A, wrongly thinking it still owns the stream, writes: refused, and it stops.
      s.append('{"n":99}');
      await written(a.log);
      await waitFor(() => s.done);
      const after3 = sharedOnly(await c.registry.resolveShared("sess-1", `${s.id}.2`));
      assert.deepEqual(seqs(after3?.framesAfter() ?? []), [3]);
      after3?.end();
    });

    test("close writes what is queued and removes the heartbeat", async () => {
      const prefix = testPrefix();
      prefixes.push(prefix);
      const log = new RedisEventLog({ client, keyPrefix: prefix, limits });
      const registry = new StreamRegistry(limits, { events: log });
      const s = registry.create("sess-1", "request");
      s.append("{}");
      registry.close(); // queues the end, not yet written
      await log.close();
      assert.equal(await client.hget(`${prefix}evm:${s.id}`, "end"), "1");
      assert.equal(await client.exists(`${prefix}evo:${log.instance}`), 0);
    });
  });

  describe("RedisEventLog with Redis down", () => {
    test("A's client is served from memory, the failure is reported once, a resume is 503", async () => {
      const server = await startRedisServer();
      const prefix = testPrefix();
      const ca = createRedisClient({ url: server.url });
      const cb = createRedisClient({ url: server.url });
      const errors: string[] = [];
      const logA = new RedisEventLog({
        client: ca,
        keyPrefix: prefix,
        limits,
        onError: (_err, what) => errors.push(what),
      });
      const logB = new RedisEventLog({ client: cb, keyPrefix: prefix, limits });
      const a = new StreamRegistry(limits, { events: logA });
      const b = new StreamRegistry(limits, { events: logB });
      try {
        const s = a.create("sess-1", "request");
        const c = fakeResponse();
        const sink = new Sink(c.res);
        s.attach(sink, 0);
        s.append('{"n":1}');
        await new Promise((r) => setImmediate(r));
        logA.flush();
        await ca.ping();

        await server.kill();
        for (let i = 2; i <= 4; i++) {
          s.append(`{"n":${i}}`);
          await new Promise((r) => setTimeout(r, 30));
        }
        await new Promise((r) => setTimeout(r, 300));
        assert.deepEqual(
          ids(c.text()),
          [1, 2, 3, 4].map((n) => `${s.id}.${n}`),
          "A's client got every event",
        );
        assert.deepEqual(errors, ["write"], "one report for the run of failures");
        assert.ok(logA.stats.writeFailures >= 1);
        // A resume on this instance is served from its buffer.
        s.detach(sink);
        const again = fakeResponse();
        s.attach(new Sink(again.res), 2);
        assert.deepEqual(ids(again.text()), [`${s.id}.3`, `${s.id}.4`]);
        // A resume on B needs Redis: 503, quickly, never a crash or "unknown".
        const started = performance.now();
        await isCode(b.resolveShared("sess-1", `${s.id}.1`), "EDGE_STORE_UNAVAILABLE");
        assert.ok(performance.now() - started < 2000);

        // Back: writes resume; what A gave while Redis was down is a hole that reads as evicted.
        await server.restart();
        await waitFor(async () => (await cb.ping().catch(() => "")) === "PONG" && ca.status === "ready");
        s.append('{"n":5}');
        await new Promise((r) => setImmediate(r));
        logA.flush();
        await ca.ping();
        await isCode(b.resolveShared("sess-1", `${s.id}.3`), "EDGE_STREAM_EXPIRED");
        const r = sharedOnly(await b.resolveShared("sess-1", `${s.id}.4`));
        assert.deepEqual(seqs(r?.framesAfter() ?? []), [5]);
        r?.end();
        s.append('{"n":6}');
        s.append('{"n":7}');
        await new Promise((r2) => setImmediate(r2));
        logA.flush();
        await ca.ping();
        assert.deepEqual(errors, ["write"], "no new report: the run ended with a success");
      } finally {
        a.close();
        b.close();
        await logA.close();
        await logB.close();
        ca.disconnect();
        cb.disconnect();
        await server.stop();
      }
    });
  });
}

async function waitFor(cond: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 50));
  }
}
