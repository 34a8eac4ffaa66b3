/**
 * The StreamEventLog contract (src/store/types.ts): what one instance's registry mirrors to the log,
 * another instance reads back and follows. A client that resumes, with Last-Event-ID (MCP
 * transports, "Resumability and Redelivery"), a stream that began elsewhere gets exactly the events
 * after its id, then the live ones, then the end; never another session's; an id before the kept
 * window is EDGE_STREAM_EXPIRED, never a silent gap.
 *
 * The factory gives two logs on the same storage (instances A and B) and `written`, which resolves
 * once what A marked is readable by B (a log batches its writes).
 */
import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { PassThrough } from "node:stream";
import { describe, test } from "node:test";
import { GatewayError } from "../../src/errors/errors.ts";
import { Sink, type StreamLimits, StreamRegistry } from "../../src/session/streams.ts";
import type { StreamEventLog } from "../../src/store/types.ts";
import { sharedOnly } from "../../src/store/types.ts";

export interface EventLogPair {
  a: StreamEventLog;
  b: StreamEventLog;
  /** Resolves once everything A's log was given is readable through B's. */
  written(): Promise<void>;
  close(): Promise<void>;
}

export const eventLogLimits: StreamLimits = {
  bufferEvents: 3,
  bufferBytes: 1 << 20,
  ttl: 60_000,
  keepAlive: 15_000,
  retry: 1000,
};

function client(): { sink: Sink; text: () => string } {
  const out = new PassThrough();
  let text = "";
  out.on("data", (d: Buffer) => {
    text += d.toString();
  });
  return { sink: new Sink(out as unknown as ServerResponse), text: () => text };
}

const seqs = (frames: readonly string[]) => frames.map((f) => Number(/^id: [^.]+\.(\d+)$/m.exec(f)?.[1]));
const ids = (text: string) => [...text.matchAll(/^id: (.+)$/gm)].map((m) => m[1]);

async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function isCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof GatewayError && e.code === code);
}

export function eventLogContract(name: string, open: () => Promise<EventLogPair>): void {
  describe(`StreamEventLog contract: ${name}`, () => {
    async function setup() {
      const pair = await open();
      const a = new StreamRegistry(eventLogLimits, { events: pair.a });
      const b = new StreamRegistry(eventLogLimits, { events: pair.b });
      return {
        ...pair,
        ra: a,
        rb: b,
        async done() {
          a.close();
          b.close();
          await pair.close();
        },
      };
    }

    test("B reads exactly the frames after a seq of a stream A holds, with its kind", async () => {
      const t = await setup();
      try {
        assert.equal(t.ra.shared, true);
        const s = t.ra.create("sess-1", "request");
        for (let i = 1; i <= 3; i++) s.append(`{"n":${i}}`);
        await t.written();
        const r = await t.b.open("sess-1", s.id, 1);
        assert.ok(r);
        assert.equal(r.id, s.id);
        assert.equal(r.sessionId, "sess-1");
        assert.equal(r.kind, "request");
        assert.equal(r.done, false);
        assert.deepEqual(seqs(r.framesAfter()), [2, 3]);
        assert.match(r.framesAfter()[0] ?? "", new RegExp(`^id: ${s.id}\\.2\ndata: \\{"n":2\\}\n\n$`));
        r.end();
        // Through B's registry, by Last-Event-ID, the same.
        const viaRegistry = sharedOnly(await t.rb.resolveShared("sess-1", `${s.id}.2`));
        assert.deepEqual(seqs(viaRegistry?.framesAfter() ?? []), [3]);
        viaRegistry?.end();
      } finally {
        await t.done();
      }
    });

    test("another session's stream and an unknown stream both read as undefined", async () => {
      const t = await setup();
      try {
        const s = t.ra.create("sess-A", "standalone");
        s.append("{}");
        await t.written();
        assert.equal(await t.b.open("sess-B", s.id, 0), undefined);
        assert.equal(await t.b.open("sess-A", "AAAAAAAAAAAAAAAA", 0), undefined);
        assert.equal(await t.rb.resolveShared("sess-B", `${s.id}.0`), undefined);
        // What A's own registry does not hold locally is gone for it: it never asks the log.
        assert.equal(await t.ra.resolveShared("sess-A", `${s.id}.0`), undefined);
      } finally {
        await t.done();
      }
    });

    test("the kept window is A's: a resume from before it is EDGE_STREAM_EXPIRED", async () => {
      const t = await setup();
      try {
        const s = t.ra.create("sess-1", "request");
        for (let i = 1; i <= 5; i++) s.append(`{"n":${i}}`); // the buffer keeps 3: seqs 3-5
        await t.written();
        await isCode(t.b.open("sess-1", s.id, 1), "EDGE_STREAM_EXPIRED");
        const r = await t.b.open("sess-1", s.id, 2);
        assert.deepEqual(seqs(r?.framesAfter() ?? []), [3, 4, 5]);
        r?.end();
      } finally {
        await t.done();
      }
    });

    test("a finished stream reads as done with its remainder; an ended session's streams are gone", async () => {
      const t = await setup();
      try {
        const s = t.ra.create("sess-1", "request");
        s.append('{"n":1}');
        s.append('{"n":2}');
        s.finish(); // no client got it: kept, replayable
        await t.written();
        const r = await t.b.open("sess-1", s.id, 1);
        assert.equal(r?.done, true);
        assert.deepEqual(seqs(r?.framesAfter() ?? []), [2]);
        const c = client();
        r?.attach(c.sink);
        await until(() => !c.sink.open, "the replayed response to end");
        assert.deepEqual(ids(c.text()), [`${s.id}.2`]);

        const g = t.ra.create("sess-2", "standalone");
        g.append("{}");
        await t.written();
        assert.ok(await t.b.open("sess-2", g.id, 0).then((x) => (x?.end(), x)));
        t.ra.dropSession("sess-2");
        await t.written();
        assert.equal(await t.b.open("sess-2", g.id, 0), undefined);
      } finally {
        await t.done();
      }
    });

    test("B follows a live stream: the later events exactly once and in order, then the end", async () => {
      const t = await setup();
      try {
        const s = t.ra.create("sess-1", "standalone");
        s.append('{"n":1}');
        await t.written();
        const r = sharedOnly(await t.rb.resolveShared("sess-1", `${s.id}.0`));
        assert.ok(r);
        const c = client();
        r.attach(c.sink);
        await until(() => ids(c.text()).length === 1, "the first event");
        for (let i = 2; i <= 4; i++) s.append(`{"n":${i}}`);
        await t.written();
        await until(() => ids(c.text()).length === 4, "the live events");
        // B's follow is noted where A can see it (A keeps a stream a client follows elsewhere).
        const at = await t.a.followedAt(s.id);
        assert.ok(at !== undefined && at <= Date.now() && at > Date.now() - 60_000, `followedAt ${at}`);
        s.finish();
        await t.written();
        await until(() => !c.sink.open, "the end of the followed stream");
        assert.deepEqual(
          ids(c.text()),
          [1, 2, 3, 4].map((n) => `${s.id}.${n}`),
        );
      } finally {
        await t.done();
      }
    });

    test("a stream nobody followed has no follow time", async () => {
      const t = await setup();
      try {
        const s = t.ra.create("sess-1", "request");
        s.append("{}");
        await t.written();
        assert.equal(await t.a.followedAt("BBBBBBBBBBBBBBBB"), undefined);
      } finally {
        await t.done();
      }
    });
  });
}
