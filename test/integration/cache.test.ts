/**
 * The list-result cache end to end, against real upstreams whose requests are counted:
 * - the SDK v2 fixture (2026-07-28, sends `ttlMs: 0`, `cacheScope: "private"`): never cached;
 * - an SDK v2 McpServer built here with `cacheHints` (tools/list public, prompts/list private):
 *   hits skip the upstream, private entries are per principal, nothing crosses tenants, a cached
 *   tools/list is still filtered per key, and a `notifications/tools/list_changed` on a POST stream
 *   invalidates;
 * - the SDK v1 fixture (session era) with `cache.sessionTtl`: reuse within a session, across
 *   sessions of one principal with the same capabilities, never across principals;
 * - a scripted session-era upstream whose GET stream carries `notifications/tools/list_changed`.
 */
import assert from "node:assert/strict";
import {
  createServer,
  type IncomingMessage,
  request as httpRequest,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { createMcpHandler, McpServer } from "@modelcontextprotocol/server";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { spawnFixture } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

// ------------------------------------------------------------------------------------ helpers

/** Counts JSON-RPC methods of the POSTs a server receives. */
class Counter {
  readonly #counts = new Map<string, number>();
  see(body: string): void {
    try {
      const m = JSON.parse(body) as { method?: string };
      const k = m.method ?? "response";
      this.#counts.set(k, (this.#counts.get(k) ?? 0) + 1);
    } catch {
      // not JSON: not counted
    }
  }
  get(method: string): number {
    return this.#counts.get(method) ?? 0;
  }
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  cleanups.push(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(() => r(undefined)));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A counting HTTP proxy in front of `target` (streams pass through unbuffered). */
async function countingProxy(target: string): Promise<{ url: string; counts: Counter }> {
  const counts = new Counter();
  const t = new URL(target);
  const server = createServer((req, res) => {
    void readBody(req).then((body) => {
      if (req.method === "POST") counts.see(body.toString());
      const up = httpRequest(
        {
          host: t.hostname,
          port: t.port,
          path: req.url,
          method: req.method,
          headers: { ...req.headers, host: t.host },
        },
        (r) => {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(res);
        },
      );
      up.on("error", () => res.destroy());
      res.on("close", () => up.destroy());
      up.end(body);
    });
  });
  return { url: await listen(server), counts };
}

const META = {
  "io.modelcontextprotocol/protocolVersion": "2026-07-28",
  "io.modelcontextprotocol/clientCapabilities": {},
  "io.modelcontextprotocol/clientInfo": { name: "cache-test", version: "1" },
};

interface RpcResult {
  status: number;
  cache: string | null;
  json: any;
  notifications: string[];
}

async function readRpc(res: Response, id: unknown): Promise<RpcResult> {
  const text = await res.text();
  let json: unknown;
  const notifications: string[] = [];
  if ((res.headers.get("content-type") ?? "").includes("text/event-stream")) {
    for (const line of text.split("\n")) {
      if (!line.startsWith("data:") || line.length <= 5) continue;
      const m = JSON.parse(line.slice(5)) as { id?: unknown; method?: string };
      if (m.method) notifications.push(m.method);
      else if (m.id === id) json = m;
    }
  } else if (text) json = JSON.parse(text);
  return { status: res.status, cache: res.headers.get("x-mcp-edge-cache"), json, notifications };
}

/** A 2026-07-28 request through the edge. */
async function modern(
  url: string,
  id: string | number,
  method: string,
  params: Record<string, unknown> = {},
  key?: string,
): Promise<RpcResult> {
  const res = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2026-07-28",
      "mcp-method": method,
      ...(typeof params["name"] === "string" ? { "mcp-name": params["name"] } : {}),
      ...(key ? { authorization: `Bearer ${key}` } : {}),
    },
    body: JSON.stringify({ jsonrpc: "2.0", id, method, params: { ...params, _meta: META } }),
  });
  return readRpc(res, id);
}

const names = (r: RpcResult, field = "tools"): string[] =>
  ((r.json?.result?.[field] ?? []) as { name: string }[]).map((t) => t.name).sort();

// ------------------------------------------------------------------------------------ 2026-07-28

describe("2026-07-28: the SDK v2 fixture sends ttlMs 0", () => {
  test("ttlMs 0 is immediately stale: every tools/list reaches the upstream", async () => {
    const fx = await spawnFixture("test/fixtures/v2-server.ts");
    cleanups.push(() => fx.stop());
    const proxy = await countingProxy(fx.url);
    const edge = await startEdge({
      servers: { v2: { route: "/mcp", upstream: { urls: [proxy.url] }, auth: ["none"] } },
    });
    cleanups.push(() => edge.stop());
    const a = await modern(edge.url(), 1, "tools/list");
    assert.equal(a.status, 200);
    assert.equal(a.json.result.ttlMs, 0);
    assert.equal(a.json.result.cacheScope, "private");
    assert.equal(a.cache, "miss");
    const b = await modern(edge.url(), 2, "tools/list");
    assert.equal(b.cache, "miss");
    assert.equal(b.json.id, 2);
    assert.equal(proxy.counts.get("tools/list"), 2);
  });
});

describe("2026-07-28: an SDK v2 upstream with cache hints", () => {
  const counts = new Counter();
  let version = 1;
  let edge: InProcessEdge;
  const keys: Record<string, string> = {};

  before(async () => {
    // One McpServer per request (createMcpHandler): its lists reflect `version` at that moment.
    const handler = createMcpHandler(
      () => {
        const s = new McpServer(
          { name: "cache-upstream", version: "1.0.0" },
          {
            capabilities: { tools: { listChanged: true }, prompts: { listChanged: true } },
            cacheHints: {
              "tools/list": { ttlMs: 60_000, cacheScope: "public" },
              "prompts/list": { ttlMs: 60_000, cacheScope: "private" },
            },
          },
        );
        const text = (t: string) => ({ content: [{ type: "text" as const, text: t }] });
        s.registerTool("alpha", { description: `alpha v${version}` }, async () => text("a"));
        s.registerTool("beta", { description: "beta" }, async () => text("b"));
        s.registerTool("change", { description: "changes the tool list" }, async (ctx) => {
          version++;
          await ctx.mcpReq.notify({ method: "notifications/tools/list_changed" });
          return text(`now v${version}`);
        });
        s.registerPrompt("p1", { description: "a prompt" }, async () => ({ messages: [] }));
        return s;
      },
      { legacy: "reject", onerror: () => {} },
    );
    const server = createServer((req, res) => {
      void bridge(handler.fetch.bind(handler), req, res, counts);
    });
    const url = await listen(server);
    cleanups.push(() => handler.close());
    edge = await startEdge({
      servers: { s: { route: "/mcp", upstream: { urls: [url] }, auth: ["apiKey"] } },
    });
    cleanups.push(() => edge.stop());
    const mk = async (name: string, tenant: string, tools?: string[]) => {
      keys[name] = (await edge.gw.keys.create({ name, tenant, ...(tools ? { tools } : {}) })).key;
    };
    await mk("a-alpha", "acme", ["alpha"]);
    await mk("a-both", "acme", ["alpha", "beta"]);
    await mk("a-all", "acme");
    await mk("g-both", "globex", ["alpha", "beta"]);
  });

  test("a second tools/list within ttlMs is a hit: the upstream is not called, the id is the client's", async () => {
    const first = await modern(edge.url(), 1, "tools/list", {}, keys["a-alpha"]);
    assert.equal(first.cache, "miss");
    assert.deepEqual(names(first), ["alpha"]);
    assert.equal(first.json.result.cacheScope, "public");
    assert.equal(counts.get("tools/list"), 1);
    const second = await modern(edge.url(), "second", "tools/list", {}, keys["a-alpha"]);
    assert.equal(second.cache, "hit");
    assert.equal(second.json.id, "second");
    assert.deepEqual(names(second), ["alpha"]);
    assert.ok(second.json.result.ttlMs > 0 && second.json.result.ttlMs <= 60_000);
    assert.equal(counts.get("tools/list"), 1, "served from the cache");
  });

  test("a public entry is shared in the tenant and still filtered per principal", async () => {
    const both = await modern(edge.url(), 3, "tools/list", {}, keys["a-both"]);
    assert.equal(both.cache, "hit");
    assert.deepEqual(names(both), ["alpha", "beta"]);
    const all = await modern(edge.url(), 4, "tools/list", {}, keys["a-all"]);
    assert.equal(all.cache, "hit");
    assert.deepEqual(names(all), ["alpha", "beta", "change"]);
    const narrow = await modern(edge.url(), 5, "tools/list", {}, keys["a-alpha"]);
    assert.deepEqual(names(narrow), ["alpha"]);
    assert.equal(counts.get("tools/list"), 1);
  });

  test("two tenants never share an entry, even a public one", async () => {
    const g = await modern(edge.url(), 6, "tools/list", {}, keys["g-both"]);
    assert.equal(g.cache, "miss");
    assert.deepEqual(names(g), ["alpha", "beta"]);
    assert.equal(counts.get("tools/list"), 2);
    assert.equal((await modern(edge.url(), 7, "tools/list", {}, keys["g-both"])).cache, "hit");
    assert.equal(counts.get("tools/list"), 2);
  });

  test("two principals never share a private entry", async () => {
    const a1 = await modern(edge.url(), 8, "prompts/list", {}, keys["a-alpha"]);
    assert.equal(a1.cache, "miss");
    assert.equal(a1.json.result.cacheScope, "private");
    assert.equal((await modern(edge.url(), 9, "prompts/list", {}, keys["a-alpha"])).cache, "hit");
    assert.equal(counts.get("prompts/list"), 1);
    const b = await modern(edge.url(), 10, "prompts/list", {}, keys["a-both"]);
    assert.equal(b.cache, "miss");
    assert.deepEqual(names(b, "prompts"), ["p1"]);
    assert.equal(counts.get("prompts/list"), 2);
  });

  test("other params (a cursor) are another entry; MRTR retries are never cached", async () => {
    const before = counts.get("tools/list");
    const c1 = await modern(edge.url(), 11, "tools/list", { cursor: "page-2" }, keys["a-all"]);
    assert.equal(c1.cache, "miss", "the cursor-less entry does not answer a page");
    assert.equal(counts.get("tools/list"), before + 1);
    // The page is an entry of its own (an error answer would never be stored).
    const c2 = await modern(edge.url(), 12, "tools/list", { cursor: "page-2" }, keys["a-all"]);
    assert.equal(c2.cache, c1.json.error ? "miss" : "hit");
    const mrtr = await modern(edge.url(), 13, "tools/list", { requestState: "x" }, keys["a-all"]);
    assert.equal(mrtr.cache, null, "the cache takes no part");
  });

  test("notifications/tools/list_changed on a POST stream invalidates; the next list is fresh", async () => {
    const before = counts.get("tools/list");
    const call = await modern(edge.url(), 14, "tools/call", { name: "change", arguments: {} }, keys["a-all"]);
    assert.equal(call.status, 200);
    assert.deepEqual(call.notifications, ["notifications/tools/list_changed"]);
    const after = await modern(edge.url(), 15, "tools/list", {}, keys["a-all"]);
    assert.equal(after.cache, "miss");
    assert.equal(counts.get("tools/list"), before + 1);
    const alpha = (after.json.result.tools as { name: string; description: string }[]).find(
      (t) => t.name === "alpha",
    );
    assert.equal(alpha?.description, "alpha v2");
    // Every tenant's entries of that server went (globex had one).
    assert.equal((await modern(edge.url(), 16, "tools/list", {}, keys["g-both"])).cache, "miss");
    // Prompts were not touched.
    assert.equal((await modern(edge.url(), 17, "prompts/list", {}, keys["a-alpha"])).cache, "hit");
  });
});

/** node:http → fetch handler, counting POSTed methods. */
async function bridge(
  fetchHandler: (r: Request) => Promise<Response>,
  req: IncomingMessage,
  res: ServerResponse,
  counts: Counter,
): Promise<void> {
  const body = await readBody(req);
  if (req.method === "POST") counts.see(body.toString());
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
  const hasBody = req.method !== "GET" && req.method !== "HEAD";
  const response = await fetchHandler(
    new Request(`http://${req.headers.host}${req.url}`, {
      method: req.method,
      headers,
      ...(hasBody ? { body: new Uint8Array(body) } : {}),
    }),
  );
  const out: Record<string, string> = {};
  response.headers.forEach((v, k) => (out[k] = v));
  res.writeHead(response.status, out);
  const reader = response.body?.getReader();
  for (;;) {
    const chunk = await reader?.read();
    if (!chunk || chunk.done) break;
    res.write(chunk.value);
  }
  res.end();
}

// ------------------------------------------------------------------------------------ session era

describe("session era: the SDK v1 fixture with cache.sessionTtl", () => {
  test("reused in a session and across sessions of one principal; never across principals", async () => {
    const fx = await spawnFixture("test/fixtures/conformance-server.ts");
    cleanups.push(() => fx.stop());
    const proxy = await countingProxy(fx.url);
    const edge = await startEdge({
      servers: {
        v1: {
          route: "/mcp",
          upstream: { urls: [proxy.url] },
          auth: ["apiKey"],
          cache: { sessionTtl: "30s" },
        },
      },
    });
    cleanups.push(() => edge.stop());
    const alice = (await edge.gw.keys.create({ name: "alice", tenant: "acme", tools: ["test_simple_text"] }))
      .key;
    const bob = (await edge.gw.keys.create({ name: "bob", tenant: "acme" })).key;
    const connect = async (key: string) => {
      const client = new Client({ name: "cache-test", version: "1.0.0" });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(edge.url()), {
          requestInit: { headers: { authorization: `Bearer ${key}` } },
        }),
      );
      cleanups.push(() => client.close());
      return client;
    };
    const a1 = await connect(alice);
    const first = await a1.listTools();
    assert.deepEqual(
      first.tools.map((t) => t.name),
      ["test_simple_text"],
    );
    assert.equal(proxy.counts.get("tools/list"), 1);
    const again = await a1.listTools();
    assert.deepEqual(
      again.tools.map((t) => t.name),
      ["test_simple_text"],
    );
    assert.equal(proxy.counts.get("tools/list"), 1, "second tools/list of the session is a hit");
    // A new session of the same principal with the same capabilities reuses the entry.
    const a2 = await connect(alice);
    await a2.listTools();
    assert.equal(proxy.counts.get("tools/list"), 1);
    // Another principal of the same tenant: its own entry, its own (unfiltered) view.
    const b = await connect(bob);
    const bobs = await b.listTools();
    assert.equal(proxy.counts.get("tools/list"), 2);
    assert.ok(bobs.tools.length > 1);
    await b.listTools();
    assert.equal(proxy.counts.get("tools/list"), 2);
  });

  test("without sessionTtl nothing is cached and no cache header is sent", async () => {
    const fx = await spawnFixture("test/fixtures/conformance-server.ts");
    cleanups.push(() => fx.stop());
    const proxy = await countingProxy(fx.url);
    const edge = await startEdge({
      servers: { v1: { route: "/mcp", upstream: { urls: [proxy.url] }, auth: ["none"] } },
    });
    cleanups.push(() => edge.stop());
    const s = await rawSession(edge.url());
    for (const id of [1, 2]) {
      const r = await s.rpc(id, "tools/list");
      assert.equal(r.cache, null);
    }
    assert.equal(proxy.counts.get("tools/list"), 2);
  });
});

/** A raw session-era client: initialize, then requests with the session id. */
async function rawSession(url: string) {
  const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
  const init = await fetch(url, {
    method: "POST",
    headers,
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "1" } },
    }),
  });
  await init.text();
  const sid = init.headers.get("mcp-session-id") as string;
  const h = { ...headers, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" };
  await (
    await fetch(url, {
      method: "POST",
      headers: h,
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    })
  ).text();
  return {
    sid,
    headers: h,
    async rpc(id: number, method: string, params: Record<string, unknown> = {}): Promise<RpcResult> {
      const res = await fetch(url, {
        method: "POST",
        headers: h,
        body: JSON.stringify({ jsonrpc: "2.0", id, method, params }),
      });
      return readRpc(res, id);
    },
  };
}

describe("session era: list_changed on a GET stream invalidates", () => {
  test("a scripted upstream pushes notifications/tools/list_changed on its standalone stream", async () => {
    const counts = new Counter();
    let listVersion = 1;
    const getStreams = new Set<ServerResponse>();
    const server = createServer((req, res) => {
      void readBody(req).then((raw) => {
        if (req.method === "GET") {
          res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
          res.flushHeaders();
          getStreams.add(res);
          res.on("close", () => getStreams.delete(res));
          return;
        }
        if (req.method !== "POST") return void res.writeHead(req.method === "DELETE" ? 200 : 405).end();
        const body = raw.toString();
        counts.see(body);
        const msg = JSON.parse(body) as { id?: unknown; method?: string };
        const json = (result: unknown) => {
          res.writeHead(200, { "content-type": "application/json", "mcp-session-id": "up-1" });
          res.end(JSON.stringify({ jsonrpc: "2.0", id: msg.id, result }));
        };
        if (msg.method === "initialize") {
          return json({
            protocolVersion: "2025-11-25",
            capabilities: { tools: { listChanged: true } },
            serverInfo: { name: "scripted", version: "1" },
          });
        }
        if (msg.id === undefined) return void res.writeHead(202).end();
        if (msg.method === "tools/list") {
          return json({ tools: [{ name: `tool_v${listVersion}`, inputSchema: { type: "object" } }] });
        }
        json({});
      });
    });
    const url = await listen(server);
    const edge = await startEdge({
      servers: {
        sc: { route: "/mcp", upstream: { urls: [url] }, auth: ["none"], cache: { sessionTtl: "1m" } },
      },
    });
    cleanups.push(() => edge.stop());
    const s = await rawSession(edge.url());
    assert.equal((await s.rpc(1, "tools/list")).cache, "miss");
    const hit = await s.rpc(2, "tools/list");
    assert.equal(hit.cache, "hit");
    assert.equal(hit.json.id, 2);
    assert.deepEqual(names(hit), ["tool_v1"]);
    assert.equal(counts.get("tools/list"), 1);

    // The client's GET stream: the edge opens the upstream one and reads it.
    const abort = new AbortController();
    cleanups.push(async () => abort.abort());
    const get = await fetch(edge.url(), {
      headers: { accept: "text/event-stream", "mcp-session-id": s.sid, "mcp-protocol-version": "2025-11-25" },
      signal: abort.signal,
    });
    assert.equal(get.status, 200);
    const reader = (get.body as ReadableStream<Uint8Array>).getReader();
    await waitFor(() => getStreams.size > 0, {
      what: "the edge to open the upstream GET stream",
      timeout: 2000,
    }).catch(() => undefined);
    assert.equal(getStreams.size, 1, "the edge opened the upstream GET stream");
    listVersion = 2;
    for (const r of getStreams)
      r.write(`data: ${JSON.stringify({ jsonrpc: "2.0", method: "notifications/tools/list_changed" })}\n\n`);
    // Once the client has the notification, the edge has read (and acted on) it.
    let seen = "";
    while (!seen.includes("list_changed")) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += Buffer.from(value).toString();
    }
    assert.ok(seen.includes("notifications/tools/list_changed"));
    const fresh = await s.rpc(3, "tools/list");
    assert.equal(fresh.cache, "miss");
    assert.deepEqual(names(fresh), ["tool_v2"]);
    assert.equal(counts.get("tools/list"), 2);
    abort.abort();
  });
});
