/**
 * Acceptance: bad input on the public listener.
 *
 * One edge runs as a real child process (stdio demo upstream) with small limits. An SDK v1 client
 * opens a session before the barrage and calls a tool after it: the barrage never disturbs another
 * client and the process stays up. Every refusal is checked against docs/errors.md: HTTP status,
 * JSON-RPC `error.code`, `error.data.code`, and `id` (echoed when the edge could read it, else null).
 * Malformed HTTP (CR/LF in a header, lying Content-Length, slow headers/bodies) goes through raw
 * `node:net` sockets, since no HTTP client will send it.
 */
import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { type SpawnedEdge, spawnEdge } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

const DEMO = `${REPO_ROOT}/src/demo/server.ts`;
const MAX_BODY = 64 * 1024;
const HEADERS_TIMEOUT_MS = 1000;
const REQUEST_TIMEOUT_MS = 2000;
/**
 * A slow request must be cut off at its configured limit, not at Node's 30 s default checking
 * interval: this bound separates the two (it is a correctness bound, not a speed measurement).
 */
const CUTOFF_BOUND_MS = 12_000;

interface Answer {
  status: number;
  headers: Record<string, string>;
  text: string;
}

interface RpcErrorBody {
  jsonrpc: string;
  id: unknown;
  error: { code: number; message: string; data: { code: string } };
}

/** One request on its own connection (node:http lets a test set Host and odd methods). */
function send(
  base: string,
  opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string | Buffer },
): Promise<Answer> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: u.hostname,
        port: u.port,
        method: opts.method ?? "POST",
        path: opts.path ?? "/mcp",
        headers: opts.headers ?? {},
        agent: false,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          text += d;
        });
        res.on("end", () => {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) {
            if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(", ") : v;
          }
          resolve({ status: res.statusCode ?? 0, headers, text });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

interface RawAnswer extends Answer {
  /** Everything the edge wrote. */
  raw: string;
  /** The edge closed the connection (or reset it) before the wait ran out. */
  closed: boolean;
  /** How long until the edge answered or closed. */
  elapsedMs: number;
}

/**
 * Writes raw bytes to the public listener and collects what comes back until the edge closes the
 * connection or `waitMs` passes. Write errors (EPIPE/ECONNRESET when the edge cuts a body off)
 * are expected and ignored; the answer is whatever was read.
 */
async function raw(port: number, chunks: (string | Buffer)[], waitMs = 5000): Promise<RawAnswer> {
  const answer = await new Promise<RawAnswer & { refused: boolean }>((resolve) => {
    const started = Date.now();
    const socket = connect(port, "127.0.0.1");
    const received: Buffer[] = [];
    let settled = false;
    let refused = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(received).toString("latin1");
      resolve({ ...parseFirstResponse(text), raw: text, closed, refused, elapsedMs: Date.now() - started });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    socket.on("data", (d: Buffer) => received.push(d));
    socket.on("error", (err: NodeJS.ErrnoException) => {
      // The listener must be there: a refused connection is a failure, never "the edge closed it".
      if (err.code === "ECONNREFUSED") refused = true;
    });
    socket.on("close", () => finish(true));
    socket.on("connect", async () => {
      for (const c of chunks) {
        if (socket.destroyed) break;
        await new Promise<void>((r) => socket.write(c, () => r()));
      }
    });
  });
  // The listener must be there: a refused connection is a failure, never "the edge closed it".
  assert.equal(answer.refused, false, "the edge refused the connection: is it still running?");
  return answer;
}

function parseFirstResponse(text: string): Answer {
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return { status: 0, headers: {}, text: "" };
  const [statusLine = "", ...lines] = text.slice(0, end).split("\r\n");
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(":");
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  const length = Number(headers["content-length"] ?? "NaN");
  const rest = text.slice(end + 4);
  return {
    status: Number(statusLine.split(" ")[1] ?? 0),
    headers,
    text: Number.isFinite(length) ? rest.slice(0, length) : rest,
  };
}

/** The error shape of docs/errors.md, with the given status, JSON-RPC code, edge code and id. */
function assertEdgeError(
  a: Answer,
  expected: { status: number; rpc: number; code: string; id: unknown },
  label: string,
): RpcErrorBody {
  assert.equal(a.status, expected.status, `${label}: status (body ${a.text.slice(0, 300)})`);
  assert.match(a.headers["content-type"] ?? "", /^application\/json/, `${label}: content-type`);
  const body = JSON.parse(a.text) as RpcErrorBody;
  assert.equal(body.jsonrpc, "2.0", `${label}: jsonrpc`);
  assert.equal(body.error.code, expected.rpc, `${label}: error.code`);
  assert.equal(body.error.data.code, expected.code, `${label}: error.data.code`);
  assert.deepEqual(body.id, expected.id, `${label}: id`);
  assert.equal(typeof body.error.message, "string", `${label}: error.message`);
  return body;
}

const JSON_ACCEPT = { "content-type": "application/json", accept: "application/json, text/event-stream" };
const STATELESS = "2026-07-28";
const META = "io.modelcontextprotocol/protocolVersion";

function statelessCall(id: number, name: string): string {
  return JSON.stringify({
    jsonrpc: "2.0",
    id,
    method: "tools/call",
    params: {
      name,
      arguments: { text: "x" },
      _meta: { [META]: STATELESS, "io.modelcontextprotocol/clientCapabilities": {} },
    },
  });
}

describe("bad input on the public listener", () => {
  let edge: SpawnedEdge;
  let port: number;
  let host: string;
  let client: Client;
  /** A session opened with raw HTTP (2025-11-25), for the cases that need a live session. */
  let sessionId: string;
  const cleanups: (() => Promise<unknown>)[] = [];

  before(async () => {
    edge = await spawnEdge({
      limits: {
        maxBodyBytes: MAX_BODY,
        headersTimeout: HEADERS_TIMEOUT_MS,
        requestTimeout: REQUEST_TIMEOUT_MS,
      },
      servers: {
        demo: { route: "/mcp", upstream: { stdio: { command: NODE_BIN, args: [DEMO] } }, auth: ["none"] },
      },
    });
    cleanups.push(() => edge.kill());
    port = Number(new URL(edge.baseUrl).port);
    host = `127.0.0.1:${port}`;

    // Another client's session, made before the barrage.
    client = new Client({ name: "bystander", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${edge.baseUrl}/mcp`)));
    cleanups.push(() => client.close());
    const r = await client.callTool({ name: "echo", arguments: { text: "before" } });
    assert.equal((r.content as { text: string }[])[0]?.text, "before");

    const init = await send(edge.baseUrl, {
      headers: JSON_ACCEPT,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 0,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "raw", version: "1" },
        },
      }),
    });
    assert.equal(init.status, 200, init.text);
    sessionId = init.headers["mcp-session-id"] ?? "";
    assert.ok(sessionId, "initialize gave a session id");
    const ack = await send(edge.baseUrl, {
      headers: { ...JSON_ACCEPT, "mcp-session-id": sessionId, "mcp-protocol-version": "2025-11-25" },
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    });
    assert.equal(ack.status, 202);
  });

  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  // ------------------------------------------------------------------ well-formed HTTP, bad content

  interface Case {
    name: string;
    method?: string;
    headers?: (session: string) => Record<string, string>;
    body?: string | Buffer;
    status: number;
    rpc: number;
    code: string;
    id: unknown;
    allow?: string;
  }

  const session = (s: string) => ({
    ...JSON_ACCEPT,
    "mcp-session-id": s,
    "mcp-protocol-version": "2025-11-25",
  });

  const cases: Case[] = [
    // JSON and JSON-RPC (H67)
    {
      name: "invalid JSON",
      body: '{"jsonrpc":',
      status: 400,
      rpc: -32700,
      code: "EDGE_PARSE_ERROR",
      id: null,
    },
    {
      name: "invalid UTF-8",
      body: Buffer.concat([
        Buffer.from('{"jsonrpc":"2.0","id":1,"method":"'),
        Buffer.from([0xff]),
        Buffer.from('"}'),
      ]),
      status: 400,
      rpc: -32700,
      code: "EDGE_INVALID_UNICODE",
      id: null,
    },
    {
      name: "missing jsonrpc",
      body: '{"id":1,"method":"ping"}',
      status: 400,
      rpc: -32600,
      code: "EDGE_INVALID_REQUEST",
      id: 1,
    },
    {
      name: "jsonrpc 1.0",
      body: '{"jsonrpc":"1.0","id":"a","method":"ping"}',
      status: 400,
      rpc: -32600,
      code: "EDGE_INVALID_REQUEST",
      id: "a",
    },
    {
      name: "non-string method",
      body: '{"jsonrpc":"2.0","id":2,"method":42}',
      status: 400,
      rpc: -32600,
      code: "EDGE_INVALID_REQUEST",
      id: 2,
    },
    {
      name: "id null",
      body: '{"jsonrpc":"2.0","id":null,"method":"ping"}',
      status: 400,
      rpc: -32600,
      code: "EDGE_INVALID_REQUEST",
      id: null,
    },
    {
      name: "object id",
      body: '{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}',
      status: 400,
      rpc: -32600,
      code: "EDGE_INVALID_REQUEST",
      id: null,
    },
    {
      name: "fractional id",
      body: '{"jsonrpc":"2.0","id":1.5,"method":"ping"}',
      status: 400,
      rpc: -32600,
      code: "EDGE_INVALID_REQUEST",
      id: null,
    },
    {
      name: "a JSON string",
      body: '"ping"',
      status: 400,
      rpc: -32600,
      code: "EDGE_INVALID_REQUEST",
      id: null,
    },
    // Batches (H68)
    {
      name: "batch on a 2025-11-25 session",
      headers: session,
      body: '[{"jsonrpc":"2.0","id":3,"method":"ping"},{"jsonrpc":"2.0","id":4,"method":"ping"}]',
      status: 400,
      rpc: -32600,
      code: "EDGE_BATCH_REJECTED",
      id: null,
    },
    {
      name: "batch with MCP-Protocol-Version 2025-06-18",
      headers: (s) => ({ ...session(s), "mcp-protocol-version": "2025-06-18" }),
      body: '[{"jsonrpc":"2.0","id":3,"method":"ping"}]',
      status: 400,
      rpc: -32600,
      code: "EDGE_BATCH_REJECTED",
      id: null,
    },
    {
      name: "empty batch",
      headers: session,
      body: "[]",
      status: 400,
      rpc: -32600,
      code: "EDGE_INVALID_REQUEST",
      id: null,
    },
    // Media types (H73)
    {
      name: "Content-Type text/plain",
      headers: () => ({ ...JSON_ACCEPT, "content-type": "text/plain" }),
      body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
      status: 415,
      rpc: -32000,
      code: "EDGE_UNSUPPORTED_MEDIA_TYPE",
      id: null,
    },
    {
      name: "no Content-Type",
      headers: () => ({ accept: JSON_ACCEPT.accept }),
      body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
      status: 415,
      rpc: -32000,
      code: "EDGE_UNSUPPORTED_MEDIA_TYPE",
      id: null,
    },
    {
      name: "Accept without text/event-stream",
      headers: () => ({ ...JSON_ACCEPT, accept: "application/json" }),
      body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
      status: 406,
      rpc: -32000,
      code: "EDGE_NOT_ACCEPTABLE",
      id: null,
    },
    {
      name: "Accept without application/json",
      headers: () => ({ ...JSON_ACCEPT, accept: "text/event-stream" }),
      body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
      status: 406,
      rpc: -32000,
      code: "EDGE_NOT_ACCEPTABLE",
      id: null,
    },
    // Sessions (D42, MCP transports "Session Management")
    {
      name: "session id over 256 characters",
      headers: (s) => ({ ...session(s), "mcp-session-id": "a".repeat(257) }),
      body: '{"jsonrpc":"2.0","id":5,"method":"ping"}',
      status: 400,
      rpc: -32000,
      code: "EDGE_SESSION_ID_INVALID",
      id: 5,
    },
    {
      name: "session id with a space (not visible ASCII)",
      headers: (s) => ({ ...session(s), "mcp-session-id": "abc def" }),
      body: '{"jsonrpc":"2.0","id":5,"method":"ping"}',
      status: 400,
      rpc: -32000,
      code: "EDGE_SESSION_ID_INVALID",
      id: 5,
    },
    {
      name: "unknown session",
      headers: (s) => ({ ...session(s), "mcp-session-id": "no-such-session-0123456789" }),
      body: '{"jsonrpc":"2.0","id":"u","method":"tools/list"}',
      status: 404,
      rpc: -32001,
      code: "EDGE_SESSION_NOT_FOUND",
      id: "u",
    },
    {
      name: "missing session on tools/list",
      headers: () => ({ ...JSON_ACCEPT, "mcp-protocol-version": "2025-11-25" }),
      body: '{"jsonrpc":"2.0","id":6,"method":"tools/list"}',
      status: 400,
      rpc: -32000,
      code: "EDGE_SESSION_REQUIRED",
      id: 6,
    },
    {
      name: "unknown MCP-Protocol-Version",
      headers: (s) => ({ ...session(s), "mcp-protocol-version": "1999-01-01" }),
      body: '{"jsonrpc":"2.0","id":7,"method":"ping"}',
      status: 400,
      rpc: -32000,
      code: "EDGE_PROTOCOL_VERSION_UNSUPPORTED",
      id: 7,
    },
    // Host and Origin (H74, DNS rebinding)
    {
      name: "foreign Origin",
      headers: (s) => ({ ...session(s), origin: "https://evil.example" }),
      body: '{"jsonrpc":"2.0","id":8,"method":"ping"}',
      status: 403,
      rpc: -32000,
      code: "EDGE_ORIGIN_FORBIDDEN",
      id: null,
    },
    {
      name: "Origin null",
      headers: (s) => ({ ...session(s), origin: "null" }),
      body: '{"jsonrpc":"2.0","id":8,"method":"ping"}',
      status: 403,
      rpc: -32000,
      code: "EDGE_ORIGIN_FORBIDDEN",
      id: null,
    },
    {
      name: "foreign Host",
      headers: (s) => ({ ...session(s), host: "evil.example" }),
      body: '{"jsonrpc":"2.0","id":9,"method":"ping"}',
      status: 403,
      rpc: -32000,
      code: "EDGE_HOST_FORBIDDEN",
      id: null,
    },
    {
      name: "loopback name on another port (rebinding)",
      headers: (s) => ({ ...session(s), host: "localhost:1" }),
      body: '{"jsonrpc":"2.0","id":9,"method":"ping"}',
      status: 403,
      rpc: -32000,
      code: "EDGE_HOST_FORBIDDEN",
      id: null,
    },
    // Methods (H73)
    {
      name: "PUT",
      method: "PUT",
      headers: session,
      body: "{}",
      status: 405,
      rpc: -32000,
      code: "EDGE_METHOD_NOT_ALLOWED",
      id: null,
      allow: "GET, POST, DELETE",
    },
    {
      name: "PATCH",
      method: "PATCH",
      headers: session,
      body: "{}",
      status: 405,
      rpc: -32000,
      code: "EDGE_METHOD_NOT_ALLOWED",
      id: null,
      allow: "GET, POST, DELETE",
    },
    {
      name: "GET without Accept: text/event-stream",
      method: "GET",
      headers: (s) => ({
        "mcp-session-id": s,
        "mcp-protocol-version": "2025-11-25",
        accept: "application/json",
      }),
      status: 406,
      rpc: -32000,
      code: "EDGE_NOT_ACCEPTABLE",
      id: null,
    },
    // 2026-07-28: headers must match the body (HeaderMismatch -32020)
    {
      name: "2026-07-28: Mcp-Method differs from method",
      headers: () => ({
        ...JSON_ACCEPT,
        "mcp-protocol-version": STATELESS,
        "mcp-method": "tools/list",
        "mcp-name": "echo",
      }),
      body: statelessCall(11, "echo"),
      status: 400,
      rpc: -32020,
      code: "EDGE_HEADER_MISMATCH",
      id: 11,
    },
    {
      name: "2026-07-28: Mcp-Name differs from params.name",
      headers: () => ({
        ...JSON_ACCEPT,
        "mcp-protocol-version": STATELESS,
        "mcp-method": "tools/call",
        "mcp-name": "add",
      }),
      body: statelessCall(12, "echo"),
      status: 400,
      rpc: -32020,
      code: "EDGE_HEADER_MISMATCH",
      id: 12,
    },
    {
      name: "2026-07-28: MCP-Protocol-Version header differs from _meta",
      headers: () => ({
        ...JSON_ACCEPT,
        "mcp-protocol-version": "2025-11-25",
        "mcp-method": "tools/call",
        "mcp-name": "echo",
      }),
      body: statelessCall(13, "echo"),
      status: 400,
      rpc: -32020,
      code: "EDGE_HEADER_MISMATCH",
      id: 13,
    },
    {
      name: "2026-07-28: Mcp-Method missing",
      headers: () => ({ ...JSON_ACCEPT, "mcp-protocol-version": STATELESS, "mcp-name": "echo" }),
      body: statelessCall(14, "echo"),
      status: 400,
      rpc: -32020,
      code: "EDGE_HEADER_MISMATCH",
      id: 14,
    },
    {
      name: "2026-07-28: Mcp-Name missing on tools/call",
      headers: () => ({ ...JSON_ACCEPT, "mcp-protocol-version": STATELESS, "mcp-method": "tools/call" }),
      body: statelessCall(15, "echo"),
      status: 400,
      rpc: -32020,
      code: "EDGE_HEADER_MISMATCH",
      id: 15,
    },
  ];

  for (const c of cases) {
    test(`${c.name} → ${c.status} ${c.code}`, async () => {
      const headers = c.headers ? c.headers(sessionId) : JSON_ACCEPT;
      const a = await send(edge.baseUrl, {
        method: c.method ?? "POST",
        headers: { host, ...headers },
        ...(c.body !== undefined ? { body: c.body } : {}),
      });
      assertEdgeError(a, c, c.name);
      if (c.allow) assert.equal(a.headers["allow"], c.allow, `${c.name}: Allow`);
      assert.equal(a.headers["cache-control"], "no-store", `${c.name}: cache-control`);
    });
  }

  // ------------------------------------------------------------------ bodies over the cap (H69)

  const head = (extra: string) =>
    `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${0}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n${extra}\r\n`;
  const withHost = (s: string) => s.replace("Host: 127.0.0.1:0", `Host: ${host}`);
  const bigBody = () =>
    Buffer.from(`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"${"x".repeat(MAX_BODY * 2)}"}}`);

  test("declared Content-Length over the cap → 413, connection closed", async () => {
    const body = bigBody();
    const a = await raw(port, [withHost(head(`Content-Length: ${body.length}\r\n`)), body]);
    assertEdgeError(a, { status: 413, rpc: -32000, code: "EDGE_BODY_TOO_LARGE", id: null }, "declared");
    assert.ok(a.closed, "the edge closes the connection");
  });

  test("chunked body without Content-Length over the cap → 413, connection closed", async () => {
    const body = bigBody();
    const chunks: (string | Buffer)[] = [withHost(head("Transfer-Encoding: chunked\r\n"))];
    for (let at = 0; at < body.length; at += 8192) {
      const part = body.subarray(at, at + 8192);
      chunks.push(`${part.length.toString(16)}\r\n`, part, "\r\n");
    }
    chunks.push("0\r\n\r\n");
    const a = await raw(port, chunks);
    assertEdgeError(a, { status: 413, rpc: -32000, code: "EDGE_BODY_TOO_LARGE", id: null }, "chunked");
    assert.ok(a.closed, "the edge closes the connection");
  });

  test("Content-Length that understates the body → a 4xx error, connection closed, nothing past it read as a request", async () => {
    // HTTP/1.1 framing makes the first 20 bytes the body; what follows is read as a next request,
    // which is not HTTP. The edge reads no more than declared (so never more than the cap) and
    // answers with its JSON error shape, then closes. It cannot be 413: the framed body is small.
    const body = bigBody();
    const a = await raw(port, [withHost(head("Content-Length: 20\r\n")), body]);
    assert.ok([400, 413].includes(a.status), `status ${a.status}: ${a.raw.slice(0, 200)}`);
    const parsed = JSON.parse(a.text) as RpcErrorBody;
    assert.equal(parsed.id, null);
    assert.ok(
      ["EDGE_BAD_HEADER", "EDGE_PARSE_ERROR", "EDGE_BODY_TOO_LARGE"].includes(parsed.error.data.code),
      parsed.error.data.code,
    );
    assert.ok(a.closed, "the edge closes the connection");
    assert.equal(a.raw.match(/HTTP\/1\.1 /g)?.length, 1, "exactly one answer on the connection");
  });

  // ------------------------------------------------------------------ malformed HTTP (raw sockets)

  const rawCases: { name: string; header: string }[] = [
    { name: "session id with a bare CR", header: "Mcp-Session-Id: abc\rdef\r\n" },
    { name: "session id with a bare LF", header: "Mcp-Session-Id: abc\ndef\r\n" },
    { name: "session id with NUL", header: "Mcp-Session-Id: abc\0def\r\n" },
    { name: "header name with a space", header: "Mcp Session-Id: abc\r\n" },
  ];
  for (const c of rawCases) {
    test(`${c.name} → clean 400 EDGE_BAD_HEADER from the parser, connection closed`, async () => {
      const body = '{"jsonrpc":"2.0","id":1,"method":"ping"}';
      const a = await raw(port, [withHost(head(`${c.header}Content-Length: ${body.length}\r\n`)) + body]);
      assertEdgeError(a, { status: 400, rpc: -32000, code: "EDGE_BAD_HEADER", id: null }, c.name);
      assert.ok(a.closed, "the edge closes the connection");
    });
  }

  // ------------------------------------------------------------------ slow clients (I83)

  test("slow headers (slowloris) → 408 or close at limits.headersTimeout", async () => {
    const a = await raw(port, [`POST /mcp HTTP/1.1\r\nHost: ${host}\r\nX-Slow: a`], CUTOFF_BOUND_MS * 2);
    assert.ok(a.closed, `the edge closed the connection (after ${a.elapsedMs} ms)`);
    assert.ok(
      a.elapsedMs < CUTOFF_BOUND_MS,
      `cut off near headersTimeout (${HEADERS_TIMEOUT_MS} ms), not Node's 30 s check interval: ${a.elapsedMs} ms`,
    );
    if (a.status !== 0) {
      assertEdgeError(a, { status: 408, rpc: -32000, code: "EDGE_REQUEST_TIMEOUT", id: null }, "slowloris");
    }
  });

  test("slow body → 408 or close at limits.requestTimeout", async () => {
    const a = await raw(
      port,
      [withHost(head("Content-Length: 100\r\n")), '{"jsonrpc":"2.0",'],
      CUTOFF_BOUND_MS * 2,
    );
    assert.ok(a.closed, `the edge closed the connection (after ${a.elapsedMs} ms)`);
    assert.ok(
      a.elapsedMs < CUTOFF_BOUND_MS,
      `cut off near requestTimeout (${REQUEST_TIMEOUT_MS} ms), not Node's 30 s check interval: ${a.elapsedMs} ms`,
    );
    if (a.status !== 0) {
      assertEdgeError(a, { status: 408, rpc: -32000, code: "EDGE_REQUEST_TIMEOUT", id: null }, "slow body");
    }
  });

  // ------------------------------------------------------------------ and nothing else was hurt

  test("after the barrage: the process is up and the other client's session still works", async () => {
    assert.equal(edge.child.exitCode, null, "the edge process is running");
    assert.equal(edge.child.signalCode, null);
    const health = await send(edge.adminUrl, { method: "GET", path: "/healthz" });
    assert.equal(health.status, 200);
    const r = await client.callTool({ name: "echo", arguments: { text: "after" } });
    assert.equal((r.content as { text: string }[])[0]?.text, "after");
    const sum = await client.callTool({ name: "add", arguments: { a: 2, b: 3 } });
    assert.deepEqual(sum.structuredContent, { sum: 5 });
    // The raw session is intact as well.
    const ping = await send(edge.baseUrl, {
      headers: { host, ...session(sessionId) },
      body: '{"jsonrpc":"2.0","id":99,"method":"ping"}',
    });
    assert.equal(ping.status, 200, ping.text);
    assert.match(ping.text, /"id":99/);
    assert.doesNotMatch(edge.output(), /EDGE_INTERNAL/, "no internal errors were logged");
  });
});
