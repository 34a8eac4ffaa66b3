/**
 * Upstream failures toward the client. A 5xx body (stack traces, secrets) is never relayed.
 * The client gets EDGE_UPSTREAM_SERVER_ERROR (502) naming the upstream's status, under its own
 * JSON-RPC id, in both eras; the log gets a bounded, redacted copy of the body. 4xx answers still
 * pass byte for byte (clients read them to detect the era). An answer whose body has not finished
 * within the upstream timeout (a slow drip after the headers) is 504 EDGE_UPSTREAM_TIMEOUT under the
 * request's id, in every path (initialize, a call in a session, 2026-07-28).
 */
import assert from "node:assert/strict";
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { LOGGED_5XX_BODY_CHARS } from "../../src/forward/respond.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";

const SECRET = "hunter2-do-not-leak";
const TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl";
const STACK = [
  "Error: database password rejected",
  "    at Object.connect (/srv/app/db.js:41:11)",
  `    at handler (/srv/app/server.js:88:5) {"password":"${SECRET}","Authorization":"Bearer ${TOKEN}"}`,
  `DATABASE_URL=postgres://app:${SECRET}@10.0.0.7/app api_key=${SECRET}`,
].join("\n");

/** What the upstream answers next: status and body. */
let answer: { status: number; type: string; body: string } = { status: 500, type: "text/plain", body: STACK };
let upstream: Server;
let edge: InProcessEdge;

before(async () => {
  upstream = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(answer.status, { "content-type": answer.type });
      res.end(answer.body);
    });
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/mcp`;
  edge = await startEdge({
    servers: { faulty: { route: "/mcp", upstream: { urls: [url] }, auth: ["none"] } },
  });
});

after(async () => {
  await edge?.stop();
  await new Promise<void>((r) => upstream?.close(() => r()));
});

async function post(
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; text: string; json: () => Record<string, unknown> }> {
  const res = await fetch(edge.url(), {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...headers,
    },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, text, json: () => JSON.parse(text) as Record<string, unknown> };
}

const initialize = (id: number) => ({
  jsonrpc: "2.0",
  id,
  method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "1" } },
});

function assertNothingLeaked(text: string): void {
  for (const s of [SECRET, TOKEN, "db.js", "Error: database", "10.0.0.7"])
    assert.ok(!text.includes(s), `leaked: ${s}`);
}

describe("an upstream 5xx body never reaches the client", () => {
  for (const status of [500, 502, 503, 504]) {
    test(`${status} on initialize (session era): 502 EDGE_UPSTREAM_SERVER_ERROR under the request's id`, async () => {
      answer = { status, type: "text/plain", body: STACK };
      const before = edge.logs().length;
      const r = await post(initialize(status));
      assert.equal(r.status, 502);
      assertNothingLeaked(r.text);
      const body = r.json() as { id: unknown; error: { data: { code: string; upstreamStatus: number } } };
      assert.equal(body.id, status);
      assert.equal(body.error.data.code, "EDGE_UPSTREAM_SERVER_ERROR");
      assert.equal(body.error.data.upstreamStatus, status);
      // The log has it, redacted: an operator can see what failed, not the secrets.
      const fresh = edge.logs().slice(before);
      const lines = fresh.filter((l) => l.includes('"upstreamBody"'));
      assert.equal(lines.length, 1, "one log line with the body");
      const logged = JSON.parse(lines[0] as string) as { upstreamBody: string };
      assert.match(logged.upstreamBody, /database password rejected/);
      assert.match(logged.upstreamBody, /\[redacted\]/);
      for (const l of fresh)
        for (const s of [SECRET, TOKEN]) assert.ok(!l.includes(s), `a log line holds ${s}`);
    });
  }

  test("a JSON 5xx body with an error message and a huge body: 502; the log copy is bounded", async () => {
    answer = {
      status: 500,
      type: "application/json",
      body: JSON.stringify({ error: STACK, padding: "x".repeat(100_000) }),
    };
    const before = edge.logs().length;
    const r = await post(initialize(7));
    assert.equal(r.status, 502);
    assertNothingLeaked(r.text);
    const line = edge
      .logs()
      .slice(before)
      .find((l) => l.includes('"upstreamBody"')) as string;
    const logged = JSON.parse(line) as { upstreamBody: string };
    assert.ok(
      logged.upstreamBody.length <= LOGGED_5XX_BODY_CHARS + 1,
      `bounded: ${logged.upstreamBody.length}`,
    );
    assert.ok(!line.includes(SECRET));
  });

  test("2026-07-28 (stateless): the same 502, under the request's id", async () => {
    answer = { status: 500, type: "text/plain", body: STACK };
    const r = await post(
      {
        jsonrpc: "2.0",
        id: "list-1",
        method: "tools/list",
        params: { _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28" } },
      },
      { "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list" },
    );
    assert.equal(r.status, 502, r.text);
    assertNothingLeaked(r.text);
    const body = r.json() as { id: unknown; error: { data: { code: string; upstreamStatus: number } } };
    assert.equal(body.id, "list-1");
    assert.equal(body.error.data.code, "EDGE_UPSTREAM_SERVER_ERROR");
  });

  test("a 4xx answer still passes byte for byte (clients read it to detect the era)", async () => {
    const fourxx = JSON.stringify({
      jsonrpc: "2.0",
      id: null,
      error: { code: -32000, message: "Bad Request: no" },
    });
    answer = { status: 400, type: "application/json", body: fourxx };
    const r = await post(initialize(9));
    assert.equal(r.status, 400);
    assert.equal(r.text, fourxx);
  });
});

describe("an upstream that drips its answer past the upstream timeout", () => {
  let dripper: Server;
  let slow: InProcessEdge;
  const open = new Set<ServerResponse>();

  before(async () => {
    dripper = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        if (req.method !== "POST") {
          // No standalone stream (405), and DELETE ends nothing here.
          res.writeHead(req.method === "GET" ? 405 : 200);
          res.end();
          return;
        }
        const msg = JSON.parse(body) as {
          id?: unknown;
          method?: string;
          params?: { clientInfo?: { name?: string } };
        };
        if (msg.method === "initialize" && msg.params?.clientInfo?.name !== "drip") {
          // A session opens normally, so the call after it is a call in a session.
          res.writeHead(200, { "content-type": "application/json", "mcp-session-id": "up-1" });
          res.end(
            JSON.stringify({
              jsonrpc: "2.0",
              id: msg.id,
              result: {
                protocolVersion: "2025-11-25",
                capabilities: { tools: {} },
                serverInfo: { name: "d", version: "1" },
              },
            }),
          );
          return;
        }
        if (msg.id === undefined) {
          res.writeHead(202);
          res.end();
          return;
        }
        // Headers at once, then the start of the body, then nothing.
        res.writeHead(200, { "content-type": "application/json" });
        res.write('{"jsonrpc":"2.0",');
        open.add(res);
      });
    });
    await new Promise<void>((r) => dripper.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(dripper.address() as AddressInfo).port}/mcp`;
    slow = await startEdge({
      servers: {
        slow: { route: "/mcp", upstream: { urls: [url], timeout: "1s" }, auth: ["none"] },
      },
    });
  });

  after(async () => {
    for (const res of open) res.destroy();
    await slow?.stop();
    dripper?.closeAllConnections();
    await new Promise<void>((r) => dripper?.close(() => r()));
  });

  async function call(
    body: unknown,
    headers: Record<string, string> = {},
  ): Promise<{
    status: number;
    body: { id: unknown; error?: { data?: { code?: string } } };
    session: string | null;
  }> {
    const res = await fetch(slow.url(), {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        ...headers,
      },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    return {
      status: res.status,
      body: text === "" ? { id: undefined } : JSON.parse(text),
      session: res.headers.get("mcp-session-id"),
    };
  }

  test("initialize: 504 EDGE_UPSTREAM_TIMEOUT under the request's id", async () => {
    const dripping = initialize(41);
    dripping.params.clientInfo.name = "drip";
    const r = await call(dripping);
    assert.equal(r.status, 504);
    assert.equal(r.body.id, 41);
    assert.equal(r.body.error?.data?.code, "EDGE_UPSTREAM_TIMEOUT");
  });

  test("a call in a session: 504 EDGE_UPSTREAM_TIMEOUT under the request's id", async () => {
    const init = await call(initialize(42));
    assert.equal(init.status, 200);
    const sid = init.session as string;
    await call({ jsonrpc: "2.0", method: "notifications/initialized" }, { "mcp-session-id": sid });
    const r = await call(
      { jsonrpc: "2.0", id: "call-43", method: "tools/call", params: { name: "echo", arguments: {} } },
      { "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" },
    );
    assert.equal(r.status, 504);
    assert.equal(r.body.id, "call-43");
    assert.equal(r.body.error?.data?.code, "EDGE_UPSTREAM_TIMEOUT");
  });

  test("2026-07-28: 504 EDGE_UPSTREAM_TIMEOUT under the request's id", async () => {
    const r = await call(
      {
        jsonrpc: "2.0",
        id: 44,
        method: "tools/list",
        params: { _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28" } },
      },
      { "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list" },
    );
    assert.equal(r.status, 504);
    assert.equal(r.body.id, 44);
    assert.equal(r.body.error?.data?.code, "EDGE_UPSTREAM_TIMEOUT");
  });
});
