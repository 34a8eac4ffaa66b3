/**
 * The upstream GET stream (src/upstream/http.ts `openStream` and its SSE reader): the events, ends
 * and failures `for await` over the body gave, read with listeners instead of async generators.
 */
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { parseConfig } from "../../src/config/load.ts";
import { Egress } from "../../src/egress/index.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { HttpUpstream } from "../../src/upstream/http.ts";
import type { ForwardContext, UpstreamEvent, UpstreamReply } from "../../src/upstream/types.ts";
import { waitFor } from "../helpers/wait.ts";

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

let server: Server;
let url: string;
let handler: Handler = () => undefined;
/** Server-side responses of GET streams still open. */
const open = new Set<ServerResponse>();
let egress: Egress;
let upstream: HttpUpstream;

const ctx = (): ForwardContext => ({
  requestId: "r1",
  protocolVersion: "2025-11-25",
  headers: {},
  signal: new AbortController().signal,
});

async function listen(h: Handler): Promise<UpstreamReply & { kind: "stream" }> {
  handler = h;
  const reply = await upstream.attach({ instance: url, sessionId: "s1" }).listen(ctx());
  assert.equal(reply.kind, "stream");
  return reply as UpstreamReply & { kind: "stream" };
}

function sse(res: ServerResponse): void {
  res.writeHead(200, { "content-type": "text/event-stream" });
  res.flushHeaders();
  open.add(res);
  res.on("close", () => open.delete(res));
}

async function collect(events: AsyncIterable<UpstreamEvent>): Promise<UpstreamEvent[]> {
  const out: UpstreamEvent[] = [];
  for await (const ev of events) out.push(ev);
  return out;
}

/** Writes `text` upstream and reads the next event. */
async function next(
  it: AsyncIterator<UpstreamEvent>,
  res: ServerResponse,
  text: string,
): Promise<UpstreamEvent | undefined> {
  const r = it.next();
  res.write(text);
  return (await r).value as UpstreamEvent | undefined;
}

async function until(check: () => boolean, ms = 2000): Promise<void> {
  await waitFor(check, { what: "the upstream's side to see it", timeout: ms, interval: 5 });
}

before(async () => {
  server = createServer((req, res) => handler(req, res));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  egress = new Egress({ connectTimeout: 1000, rules: { allowPrivate: true } });
  const config = parseConfig({
    store: { sqlite: ":memory:" },
    servers: { s: { route: "/s", upstream: { urls: [url] }, auth: ["none"] } },
  });
  // limits.maxResultBytes of 16 MiB: the size-limit test below writes just past it.
  upstream = new HttpUpstream(
    config.servers.s!.upstream,
    egress,
    createLogger({ level: "silent" }),
    undefined,
    undefined,
    16 << 20,
  );
});

after(async () => {
  for (const res of open) res.destroy();
  await egress.destroy();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe("upstream GET stream", () => {
  test("GET with the session, Accept: text/event-stream and Last-Event-ID; events as sent", async () => {
    let seen: IncomingMessage | undefined;
    handler = (req, res) => {
      seen = req;
      sse(res);
      res.write(": comment\n\nid: u1\nretry: 500\ndata: ");
      res.write('{"jsonrpc":"2.0","method":"notifications/message"}\n\n');
      res.write("event: other\ndata: skipped\n\nid: u2\n\n");
      res.end('data: not json\n\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n');
    };
    const reply = await upstream.attach({ instance: url, sessionId: "s1" }).listen(ctx(), "u0");
    assert.equal(reply.kind, "stream");
    const events = await collect((reply as UpstreamReply & { kind: "stream" }).events);
    assert.equal(seen?.method, "GET");
    assert.equal(seen?.headers["mcp-session-id"], "s1");
    assert.equal(seen?.headers["last-event-id"], "u0");
    assert.equal(seen?.headers.accept, "text/event-stream");
    assert.equal(seen?.headers["content-type"], undefined);
    assert.deepEqual(events, [
      {
        data: '{"jsonrpc":"2.0","method":"notifications/message"}',
        message: { jsonrpc: "2.0", method: "notifications/message" },
        retry: 500,
        upstreamId: "u1",
      },
      // A priming event: an id and no data.
      { data: "", message: null, upstreamId: "u2" },
      { data: "not json", message: null },
      { data: '{"jsonrpc":"2.0","id":1,"result":{}}', message: { jsonrpc: "2.0", id: 1, result: {} } },
    ]);
  });

  test("an upstream that closes the stream before its end rejects the iteration", async () => {
    const reply = await listen((_req, res) => {
      sse(res);
      // Cut once the event is on its way, before the stream's end.
      res.write("data: 1\n\n", () => res.destroy());
    });
    const got: string[] = [];
    await assert.rejects(async () => {
      for await (const ev of reply.events) got.push(ev.data);
    });
    assert.deepEqual(got, ["1"]);
  });

  test("early exit leaves the body to the reply's close, which ends the upstream stream", async () => {
    const reply = await listen((_req, res) => {
      sse(res);
      res.write("data: 1\n\ndata: 2\n\n");
    });
    for await (const ev of reply.events) {
      assert.equal(ev.data, "1");
      break;
    }
    assert.equal(open.size, 1);
    reply.close();
    await until(() => open.size === 0);
  });

  test("close while a read is pending rejects it; the upstream sees the stream end", async () => {
    const reply = await listen((_req, res) => sse(res));
    const it = reply.events[Symbol.asyncIterator]();
    const pending = it.next();
    await until(() => open.size === 1);
    reply.close();
    await assert.rejects(pending);
    assert.deepEqual(await it.next(), { done: true, value: undefined });
    await until(() => open.size === 0);
  });

  test("events not read yet pause the body (backpressure), and are all delivered in order", async () => {
    let res!: ServerResponse;
    const reply = await listen((_req, r) => {
      res = r;
      sse(r);
    });
    const it = reply.events[Symbol.asyncIterator]();
    assert.equal((await next(it, res, "data: first\n\n"))?.data, "first");
    // Nothing is read now: the upstream's writes must back up (socket buffers full) well before
    // 64 MB, instead of every event being parsed into memory.
    const line = `data: ${"x".repeat(1023)}\n\n`;
    let written = 0;
    let stalled = false;
    while (written < 65_536) {
      if (!res.write(line)) {
        const drained = await Promise.race([
          new Promise<boolean>((r) => res.once("drain", () => r(true))),
          // Under test: no "drain" within 300 ms, as nothing reads the stream.
          new Promise<boolean>((r) => setTimeout(() => r(false), 300)),
        ]);
        if (!drained) {
          stalled = true;
          break;
        }
      }
      written++;
    }
    assert.ok(stalled, `the upstream's writes back up (${written} events written)`);
    res.end("data: last\n\n");
    let n = 0;
    for (;;) {
      const r = await it.next();
      if (r.done === true) break;
      if (r.value.data === "last") {
        assert.equal(n, written + 1); // the one that did not fit is in the socket's buffer
        continue;
      }
      assert.equal(r.value.data.length, 1023);
      n++;
    }
  });

  test("an event over limits.maxResultBytes fails the stream (EDGE_RESULT_TOO_LARGE) and closes it upstream", async () => {
    let res!: ServerResponse;
    const reply = await listen((_req, r) => {
      res = r;
      sse(r);
    });
    const it = reply.events[Symbol.asyncIterator]();
    const pending = it.next();
    const chunk = "x".repeat(1 << 20);
    res.write("data: ");
    for (let k = 0; k < 17 && !res.destroyed; k++) res.write(chunk);
    await assert.rejects(pending, { code: "EDGE_RESULT_TOO_LARGE" });
    await until(() => open.size === 0);
  });

  test("a non-SSE answer is not a stream: a 4xx passes through", async () => {
    handler = (_req, res) => res.writeHead(405, { "content-type": "text/plain" }).end("no GET here");
    const reply = await upstream.attach({ instance: url, sessionId: null }).listen(ctx());
    assert.equal(reply.kind, "passthrough");
    assert.equal((reply as { status: number }).status, 405);
  });
});
