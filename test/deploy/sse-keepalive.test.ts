/**
 * Streams behind load balancers: a quiet SSE stream survives a proxy that cuts connections idle
 * for a while (as load balancers do: 60 s on many), because the edge writes an SSE comment
 * (`: keep-alive`, WHATWG HTML "Server-sent events": lines starting with a colon are ignored by
 * clients) on every stream idle for `streams.keepAlive` (15 s by default).
 *
 * Scaled down so the test takes seconds: keep-alive 1 s, a TCP proxy that cuts connections idle for
 * 4 s, and streams held for more than three idle periods: the client-facing GET stream of a
 * session, and a POST whose SSE answer stays quiet for 13 s. A control edge with a 60 s keep-alive
 * shows the proxy does cut a quiet stream.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { JSON_SSE, rawSession, sessionHeaders } from "../helpers/cluster/clients.ts";
import { startUpstreams, type Upstream } from "../helpers/cluster/upstream-fleet.ts";
import { parseConfig } from "../../src/config/load.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";

const IDLE_CUT_MS = 4000;

/**
 * A TCP proxy that closes a connection when no byte has passed either way for `idleMs` (the
 * idle timeout of a load balancer). Counts the connections it cut.
 */
class IdleCuttingProxy {
  readonly #server: Server;
  readonly #pairs = new Set<{ a: Socket; b: Socket; last: number }>();
  readonly #timer: NodeJS.Timeout;
  cuts = 0;
  port = 0;

  /** Where connections go; set once the edge behind it listens. */
  targetPort = 0;

  private constructor(idleMs: number) {
    this.#server = createServer((a) => {
      const b = connect(this.targetPort, "127.0.0.1");
      const pair = { a, b, last: Date.now() };
      this.#pairs.add(pair);
      const touch = () => {
        pair.last = Date.now();
      };
      a.on("data", touch);
      b.on("data", touch);
      a.pipe(b);
      b.pipe(a);
      const done = () => {
        this.#pairs.delete(pair);
        a.destroy();
        b.destroy();
      };
      a.on("close", done);
      b.on("close", done);
      a.on("error", done);
      b.on("error", done);
    });
    this.#timer = setInterval(() => {
      const now = Date.now();
      for (const p of this.#pairs) {
        if (now - p.last < idleMs) continue;
        this.cuts++;
        this.#pairs.delete(p);
        p.a.destroy();
        p.b.destroy();
      }
    }, 100);
  }

  static async start(idleMs: number): Promise<IdleCuttingProxy> {
    const p = new IdleCuttingProxy(idleMs);
    p.#server.listen(0, "127.0.0.1");
    await once(p.#server, "listening");
    p.port = (p.#server.address() as { port: number }).port;
    return p;
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    for (const p of this.#pairs) {
      p.a.destroy();
      p.b.destroy();
    }
    const closed = once(this.#server, "close");
    this.#server.close();
    await closed;
  }
}

interface Observed {
  /** Arrival times of `: keep-alive` comment lines. */
  comments: number[];
  /** Arrival times of `data:` lines. */
  data: { at: number; text: string }[];
  /** Set when the body ends or fails. */
  ended?: { at: number; error?: string };
}

/** Reads an SSE body line by line in the background, noting comments, data and the end. */
function observe(body: AsyncIterable<Uint8Array>, onLine: () => void): Observed {
  const seen: Observed = { comments: [], data: [] };
  void (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    try {
      for await (const chunk of body) {
        buf += decoder.decode(chunk, { stream: true });
        let nl = buf.indexOf("\n");
        while (nl >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, "");
          buf = buf.slice(nl + 1);
          if (line.startsWith(":")) seen.comments.push(Date.now());
          else if (line.startsWith("data:")) seen.data.push({ at: Date.now(), text: line.slice(5).trim() });
          onLine();
          nl = buf.indexOf("\n");
        }
      }
      seen.ended = { at: Date.now() };
    } catch (err) {
      seen.ended = { at: Date.now(), error: String(err) };
    }
    onLine();
  })();
  return seen;
}

/** Resolves when `cond` holds, re-checked on every line read; rejects after `boundMs`. */
function whenSeen(
  cond: () => boolean,
  wake: { fn: () => void },
  what: string,
  boundMs: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: not within ${boundMs} ms`)), boundMs);
    const check = () => {
      if (!cond()) return;
      clearTimeout(timer);
      resolve();
    };
    const prev = wake.fn;
    wake.fn = () => {
      prev();
      check();
    };
    check();
  });
}

/** The longest silence between consecutive arrivals (comments and data), from `start`. */
function longestGap(start: number, o: Observed, end: number): number {
  const times = [start, ...o.comments, ...o.data.map((d) => d.at), end].sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, (times[i] as number) - (times[i - 1] as number));
  return gap;
}

test("the default keep-alive leaves a quiet stream silent for less than 30 s (common LB idle timeouts: 60 s)", () => {
  const config = parseConfig({
    servers: { s: { route: "/mcp", upstream: { urls: ["http://127.0.0.1:1/mcp"] } } },
  });
  assert.ok(
    config.streams.keepAlive <= 25_000,
    `streams.keepAlive defaults to ${config.streams.keepAlive} ms`,
  );
  // Idle streams are swept every min(5 s, keepAlive): the longest silence is below keepAlive + that.
  assert.ok(config.streams.keepAlive + Math.min(5000, config.streams.keepAlive) < 30_000);
});

describe("SSE keep-alive comments keep quiet streams open through an idle-cutting proxy", () => {
  let upstreams: Upstream[] = [];
  let edge: InProcessEdge;
  let control: InProcessEdge;
  let key = "";
  let controlKey = "";
  let proxy: IdleCuttingProxy;
  let controlProxy: IdleCuttingProxy;

  const doc = (keepAlive: string, via: IdleCuttingProxy) => ({
    streams: { keepAlive },
    // Requests come through the proxy, with its address in Host.
    security: { allowedHosts: [`127.0.0.1:${via.port}`] },
    servers: {
      app: { route: "/mcp", upstream: { urls: [upstreams[0]?.url as string] }, auth: ["apiKey"] },
    },
  });

  before(async () => {
    upstreams = await startUpstreams(["a"]);
    proxy = await IdleCuttingProxy.start(IDLE_CUT_MS);
    controlProxy = await IdleCuttingProxy.start(IDLE_CUT_MS);
    edge = await startEdge(doc("1s", proxy));
    control = await startEdge(doc("60s", controlProxy));
    proxy.targetPort = edge.gw.port;
    controlProxy.targetPort = control.gw.port;
    key = (await edge.gw.keys.create({ name: "keepalive" })).key;
    controlKey = (await control.gw.keys.create({ name: "control" })).key;
  });

  after(async () => {
    await proxy?.close();
    await controlProxy?.close();
    await edge?.stop();
    await control?.stop();
    await Promise.allSettled(upstreams.map((u) => u.stop()));
  });

  /** Opens the session's GET stream through `url`. */
  async function openGet(url: string, k: string, sid: string, wake: { fn: () => void }) {
    const ac = new AbortController();
    const res = await fetch(url, {
      headers: { ...sessionHeaders(k, sid), accept: "text/event-stream" },
      signal: ac.signal,
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    return {
      seen: observe(res.body as unknown as AsyncIterable<Uint8Array>, () => wake.fn()),
      abort: () => ac.abort(),
    };
  }

  test("control: without keep-alives inside its idle timeout, the proxy cuts a quiet GET stream", async () => {
    const url = `http://127.0.0.1:${controlProxy.port}/mcp`;
    const sid = await rawSession(url, controlKey);
    const wake = { fn: () => {} };
    const get = await openGet(url, controlKey, sid, wake);
    await whenSeen(() => get.seen.ended !== undefined, wake, "the proxy cut the stream", IDLE_CUT_MS * 4);
    assert.ok(controlProxy.cuts >= 1);
    assert.equal(get.seen.comments.length, 0);
  });

  test("the GET stream and a quiet POST SSE answer stay open for more than three idle periods", async () => {
    const url = `http://127.0.0.1:${proxy.port}/mcp`;
    const sid = await rawSession(url, key);
    const wake = { fn: () => {} };
    const start = Date.now();
    const get = await openGet(url, key, sid, wake);

    // A tool call whose answer takes 13 s with nothing sent meanwhile: one step of 6.5 s and as
    // long again before the answer, no progress notifications (no progress token).
    const stepMs = (IDLE_CUT_MS * 3 + 1000) / 2;
    const quietMs = stepMs * 2;
    const postStart = Date.now();
    const post = await fetch(url, {
      method: "POST",
      headers: { ...sessionHeaders(key, sid), ...JSON_SSE },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "tools/call",
        params: { name: "steps", arguments: { count: 1, delayMs: stepMs } },
      }),
    });
    assert.equal(post.status, 200);
    assert.match(post.headers.get("content-type") ?? "", /text\/event-stream/, "the answer is streamed");
    const answer = observe(post.body as unknown as AsyncIterable<Uint8Array>, () => wake.fn());

    await whenSeen(() => answer.ended !== undefined, wake, "the POST answer", quietMs + 20_000);
    const answered = answer.data.at(-1);
    assert.ok(answered, "the answer arrived");
    const message = JSON.parse(answered.text) as { id: number; result?: { content: { text: string }[] } };
    assert.equal(message.id, 1);
    assert.equal(JSON.parse(message.result?.content[0]?.text ?? "{}").steps, 1);
    assert.equal(answer.ended?.error, undefined);
    assert.ok(answered.at - postStart >= quietMs, "the answer was quiet for more than three idle periods");
    assert.ok(
      answer.comments.length >= 3,
      `keep-alive comments on the POST answer: ${answer.comments.length}`,
    );
    assert.ok(longestGap(postStart, answer, answered.at) < IDLE_CUT_MS, "never idle for the proxy's timeout");

    // The GET stream has been quiet all along (no server notifications): kept open by comments.
    const heldMs = Date.now() - start;
    assert.ok(heldMs > IDLE_CUT_MS * 3, `held ${heldMs} ms`);
    assert.equal(get.seen.ended, undefined, "the GET stream is still open");
    assert.ok(
      get.seen.comments.length >= 3,
      `keep-alive comments on the GET stream: ${get.seen.comments.length}`,
    );
    assert.ok(longestGap(start, get.seen, Date.now()) < IDLE_CUT_MS);
    assert.equal(proxy.cuts, 0, "the proxy cut nothing");
    process.stderr.write(
      `# keep-alive: GET held ${heldMs} ms with ${get.seen.comments.length} comments (longest silence ` +
        `${longestGap(start, get.seen, Date.now())} ms); POST answered after ${answered.at - postStart} ms with ` +
        `${answer.comments.length} comments (longest silence ${longestGap(postStart, answer, answered.at)} ms); ` +
        `proxy idle timeout ${IDLE_CUT_MS} ms\n`,
    );
    get.abort();
  });
});
