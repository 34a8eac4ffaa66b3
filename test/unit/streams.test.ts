import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { PassThrough } from "node:stream";
import { after, describe, test } from "node:test";
import { GatewayError } from "../../src/errors/errors.ts";
import { Sink, StreamRegistry } from "../../src/session/streams.ts";

const limits = { bufferEvents: 3, bufferBytes: 1 << 20, ttl: 60_000, keepAlive: 15_000, retry: 1000 };

/** A writable standing in for the HTTP response socket: collects what the client would read. */
function fakeResponse(): { res: ServerResponse; text: () => string } {
  const out = new PassThrough();
  let text = "";
  out.on("data", (d: Buffer) => {
    text += d.toString();
  });
  return { res: out as unknown as ServerResponse, text: () => text };
}

const ids = (text: string) => [...text.matchAll(/^id: (.+)$/gm)].map((m) => m[1]);

describe("EdgeStream", () => {
  const registry = new StreamRegistry(limits);
  after(() => registry.close());

  test("events get <stream>.<seq> ids and reach an attached client", () => {
    const s = registry.create("sess-1", "request");
    const c = fakeResponse();
    s.attach(new Sink(c.res), 0);
    s.append('{"a":1}');
    s.append('{"a":2}');
    assert.deepEqual(ids(c.text()), [`${s.id}.1`, `${s.id}.2`]);
    assert.match(c.text(), /data: \{"a":1\}/);
  });

  test("a priming event (empty data) has an id and no data line", () => {
    const s = registry.create("sess-1", "request");
    const c = fakeResponse();
    s.attach(new Sink(c.res), 0);
    s.append("", 500);
    assert.equal(c.text(), `id: ${s.id}.1\nretry: 500\n\n`);
  });

  test("resume after a seq replays exactly the later events; evicted ones make it expire", () => {
    const s = registry.create("sess-1", "request");
    for (let i = 1; i <= 5; i++) s.append(`{"n":${i}}`); // buffer keeps 3: seq 3,4,5
    const c = fakeResponse();
    s.attach(new Sink(c.res), 3);
    assert.deepEqual(ids(c.text()), [`${s.id}.4`, `${s.id}.5`]);
    assert.throws(
      () => s.attach(new Sink(fakeResponse().res), 1),
      (e: unknown) => e instanceof GatewayError && e.code === "EDGE_STREAM_EXPIRED",
    );
  });

  test("without a Last-Event-ID, a re-attached client gets what the previous one never got", () => {
    const s = registry.create("sess-1", "standalone");
    const first = new Sink(fakeResponse().res);
    s.attach(first, 0);
    s.append('{"n":1}');
    s.detach(first);
    s.append('{"n":2}');
    const c = fakeResponse();
    s.attach(new Sink(c.res));
    assert.deepEqual(ids(c.text()), [`${s.id}.2`]);
  });

  test("resolve: own stream → seq; another session's or unknown → undefined; malformed → error", () => {
    const s = registry.create("sess-A", "request");
    s.append("{}");
    assert.deepEqual(registry.resolve("sess-A", `${s.id}.1`)?.seq, 1);
    assert.equal(registry.resolve("sess-B", `${s.id}.1`), undefined, "never another session's stream");
    assert.equal(registry.resolve("sess-A", "AAAAAAAAAAAAAAAA.1"), undefined);
    for (const bad of ["", "x", "no-dot-here", "AAAAAAAAAAAAAAAA", `${s.id}.x`, "../../etc.1"]) {
      assert.throws(
        () => registry.resolve("sess-A", bad),
        (e: unknown) => e instanceof GatewayError && e.code === "EDGE_EVENT_ID_INVALID",
        bad,
      );
    }
  });

  test("finish ends the client's response; dropSession finishes and forgets every stream of it", () => {
    const s = registry.create("sess-Z", "request");
    const c = fakeResponse();
    let ended = false;
    (c.res as unknown as PassThrough).on("finish", () => {
      ended = true;
    });
    s.attach(new Sink(c.res), 0);
    let upstreamClosed = false;
    s.closeUpstream = () => {
      upstreamClosed = true;
    };
    s.append("{}");
    registry.dropSession("sess-Z");
    assert.equal(upstreamClosed, true);
    assert.equal(s.done, true);
    assert.equal(registry.resolve("sess-Z", `${s.id}.1`), undefined);
    setImmediate(() => assert.equal(ended, true));
  });
});
