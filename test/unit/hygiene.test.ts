/**
 * src/mcp/hygiene.ts, table-driven: the Host allow-list, Host/Origin checks (DNS rebinding,
 * MCP transports "Security Warning"), session id syntax, the header allow-list toward upstreams
 * (RFC 9110 §7.6.1 hop-by-hop, RFC 9700 §4.13 asserted headers) and the body cap.
 * The pure checks read only `req.headers`; readBody runs against a real node:http server.
 */
import assert from "node:assert/strict";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type Server,
} from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { GatewayError } from "../../src/errors/errors.ts";
import {
  allowedHostSet,
  checkHostAndOrigin,
  checkSessionId,
  forwardableHeaders,
  readBody,
} from "../../src/mcp/hygiene.ts";

/** The pure checks read `headers` only. */
function withHeaders(headers: IncomingHttpHeaders): IncomingMessage {
  // rawHeaders as Node gives them: name, value, name, value...
  const rawHeaders = Object.entries(headers).flatMap(([k, v]) =>
    (Array.isArray(v) ? v : [v ?? ""]).flatMap((x) => [k, String(x)]),
  );
  return { headers, rawHeaders } as IncomingMessage;
}

function codeOf(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    assert.ok(err instanceof GatewayError, `a GatewayError, not ${String(err)}`);
    return err.code;
  }
}

describe("allowedHostSet", () => {
  const cases: {
    name: string;
    configured: string[];
    publicUrl?: string;
    listenHost: string;
    port: number;
    expected: string[] | undefined;
  }[] = [
    {
      name: "loopback listener: localhost names on its port",
      configured: [],
      listenHost: "127.0.0.1",
      port: 8787,
      expected: ["127.0.0.1:8787", "[::1]:8787", "localhost:8787"],
    },
    {
      name: "another loopback v4 address is added as itself",
      configured: [],
      listenHost: "127.0.0.2",
      port: 9000,
      expected: ["127.0.0.1:9000", "127.0.0.2:9000", "[::1]:9000", "localhost:9000"],
    },
    {
      name: "public listener without publicUrl or allowedHosts: any host",
      configured: [],
      listenHost: "0.0.0.0",
      port: 8787,
      expected: undefined,
    },
    {
      name: "publicUrl host (default port dropped) and configured hosts, lower-cased",
      configured: ["MCP.Example.com", "edge.internal:8443"],
      publicUrl: "https://mcp.example.com",
      listenHost: "0.0.0.0",
      port: 8787,
      expected: ["edge.internal:8443", "mcp.example.com"],
    },
    {
      name: "publicUrl with a port keeps it",
      configured: [],
      publicUrl: "https://mcp.example.com:8443/base",
      listenHost: "10.0.0.5",
      port: 8787,
      expected: ["mcp.example.com:8443"],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const set = allowedHostSet({
        configured: c.configured,
        publicUrl: c.publicUrl,
        listenHost: c.listenHost,
        port: c.port,
      });
      assert.deepEqual(set ? [...set].sort() : undefined, c.expected);
    });
  }
});

describe("checkHostAndOrigin", () => {
  const hosts = new Set(["127.0.0.1:8787", "localhost:8787", "mcp.example.com"]);
  const origins = new Set(["https://app.example.com"]);
  const cases: {
    name: string;
    headers: IncomingHttpHeaders;
    hosts?: Set<string> | undefined;
    expected: string | undefined;
  }[] = [
    { name: "allowed host, no Origin", headers: { host: "127.0.0.1:8787" }, expected: undefined },
    { name: "Host is compared case-insensitively", headers: { host: "LOCALHOST:8787" }, expected: undefined },
    { name: "foreign host", headers: { host: "evil.example" }, expected: "EDGE_HOST_FORBIDDEN" },
    {
      name: "allowed name on another port",
      headers: { host: "localhost:1" },
      expected: "EDGE_HOST_FORBIDDEN",
    },
    { name: "no Host header", headers: {}, expected: "EDGE_HOST_FORBIDDEN" },
    { name: "no Host header, any host allowed", headers: {}, hosts: undefined, expected: undefined },
    {
      name: "allow-listed Origin",
      headers: { host: "mcp.example.com", origin: "https://app.example.com" },
      expected: undefined,
    },
    {
      name: "same-origin Origin (its host is served)",
      headers: { host: "mcp.example.com", origin: "https://mcp.example.com" },
      expected: undefined,
    },
    {
      name: "foreign Origin",
      headers: { host: "mcp.example.com", origin: "https://evil.example" },
      expected: "EDGE_ORIGIN_FORBIDDEN",
    },
    {
      name: "Origin null (sandboxed frame, file:)",
      headers: { host: "mcp.example.com", origin: "null" },
      expected: "EDGE_ORIGIN_FORBIDDEN",
    },
    {
      name: "Origin that differs from an allow-listed one by a trailing slash",
      headers: { host: "mcp.example.com", origin: "https://app.example.com/" },
      expected: "EDGE_ORIGIN_FORBIDDEN",
    },
    {
      name: "Origin whose host merely starts with a served host",
      headers: { host: "mcp.example.com", origin: "https://mcp.example.com.evil.example" },
      expected: "EDGE_ORIGIN_FORBIDDEN",
    },
    {
      name: "any host allowed: Origin must match the Host",
      headers: { host: "edge.example", origin: "https://edge.example" },
      hosts: undefined,
      expected: undefined,
    },
    {
      name: "any host allowed: a cross-site Origin is still refused",
      headers: { host: "edge.example", origin: "https://evil.example" },
      hosts: undefined,
      expected: "EDGE_ORIGIN_FORBIDDEN",
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const h = "hosts" in c ? c.hosts : hosts;
      assert.equal(
        codeOf(() => checkHostAndOrigin(withHeaders(c.headers), h, origins)),
        c.expected,
      );
    });
  }

  // RFC 9112 §3.2: more than one Host → 400, whichever comes first and whatever hosts are served.
  for (const raw of [
    ["Host", "127.0.0.1:8787", "Host", "evil.example"],
    ["Host", "evil.example", "host", "127.0.0.1:8787"],
    ["HOST", "127.0.0.1:8787", "hOsT", "127.0.0.1:8787"],
  ]) {
    for (const h of [hosts, undefined]) {
      test(`repeated Host ${JSON.stringify(raw)}, ${h ? "hosts listed" : "any host"} → EDGE_BAD_HEADER`, () => {
        const req = { headers: { host: raw[1] }, rawHeaders: raw } as unknown as IncomingMessage;
        assert.equal(
          codeOf(() => checkHostAndOrigin(req, h, origins)),
          "EDGE_BAD_HEADER",
        );
      });
    }
  }
});

describe("checkSessionId", () => {
  const cases: { name: string; id: string; ok: boolean }[] = [
    { name: "43-char base64url id", id: "0Po7ESEIdAE4__tBu5g5s33LMQdYnM0YEHssofIWV6U", ok: true },
    { name: "a UUID", id: "0f8fad5b-d9cb-469f-a165-70867728950e", ok: true },
    { name: "all visible ASCII", id: "!~\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}", ok: true },
    { name: "exactly 256 characters", id: "a".repeat(256), ok: true },
    { name: "257 characters", id: "a".repeat(257), ok: false },
    { name: "empty", id: "", ok: false },
    { name: "a space", id: "abc def", ok: false },
    { name: "a tab", id: "abc\tdef", ok: false },
    { name: "CR", id: "abc\rdef", ok: false },
    { name: "LF", id: "abc\ndef", ok: false },
    { name: "NUL", id: "abc\0def", ok: false },
    { name: "DEL", id: "abc\x7fdef", ok: false },
    { name: "non-ASCII", id: "abcé", ok: false },
  ];
  for (const c of cases) {
    test(`${c.name} → ${c.ok ? "accepted" : "EDGE_SESSION_ID_INVALID"}`, () => {
      assert.equal(
        codeOf(() => checkSessionId(c.id)),
        c.ok ? undefined : "EDGE_SESSION_ID_INVALID",
      );
    });
  }
});

describe("forwardableHeaders", () => {
  const cases: { name: string; headers: IncomingHttpHeaders; expected: Record<string, string> }[] = [
    {
      name: "MCP, trace and user-agent headers pass",
      headers: {
        "mcp-method": "tools/call",
        "mcp-name": "echo",
        "mcp-param-region": "eu",
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate: "a=b",
        "user-agent": "client/1",
        "accept-language": "en",
      },
      expected: {
        "mcp-method": "tools/call",
        "mcp-name": "echo",
        "mcp-param-region": "eu",
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate: "a=b",
        "user-agent": "client/1",
        "accept-language": "en",
      },
    },
    {
      name: "credentials never pass",
      headers: {
        authorization: "Bearer secret",
        "proxy-authorization": "Basic x",
        cookie: "sid=1",
        "x-api-key": "k",
        "mcp-name": "echo",
      },
      expected: { "mcp-name": "echo" },
    },
    {
      name: "the edge's own asserted headers never pass (inbound copies stripped)",
      headers: {
        "x-mcp-edge-identity": "forged.jwt.value",
        "x-mcp-edge-request-id": "forged",
        "x-mcp-edge-anything": "x",
        "mcp-method": "ping",
      },
      expected: { "mcp-method": "ping" },
    },
    {
      name: "hop-by-hop and forwarding headers never pass",
      headers: {
        connection: "keep-alive",
        "keep-alive": "timeout=5",
        te: "trailers",
        upgrade: "websocket",
        "transfer-encoding": "chunked",
        "x-forwarded-for": "10.0.0.1",
        forwarded: "for=10.0.0.1",
        host: "edge.example",
        "content-length": "12",
      },
      expected: {},
    },
    {
      name: "a header named in Connection is hop-by-hop, even an allow-listed one",
      headers: {
        connection: "close, MCP-Name, traceparent , authorization",
        "mcp-name": "echo",
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "mcp-method": "tools/call",
        authorization: "Bearer secret",
      },
      expected: { "mcp-method": "tools/call" },
    },
    {
      name: "session and protocol headers are the edge's to set, not forwarded as is",
      headers: {
        "mcp-session-id": "edge-session",
        "mcp-protocol-version": "2025-11-25",
        "last-event-id": "x.1",
        "mcp-method": "ping",
      },
      expected: { "mcp-method": "ping" },
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(forwardableHeaders(withHeaders(c.headers)), c.expected);
    });
  }
});

describe("readBody caps", () => {
  const MAX = 1024;
  let server: Server;
  let port: number;
  before(async () => {
    server = createServer((req, res) => {
      readBody(req, MAX).then(
        (buf) => {
          res.writeHead(200, { "content-type": "text/plain" });
          res.end(`read ${buf.length}`);
        },
        (err: unknown) => {
          const code = err instanceof GatewayError ? err.code : String(err);
          res.writeHead(err instanceof GatewayError ? err.status : 500, { connection: "close" });
          res.end(code);
        },
      );
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  function post(body: Buffer, chunked: boolean): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: "127.0.0.1",
          port,
          method: "POST",
          path: "/",
          agent: false,
          headers: chunked ? { "transfer-encoding": "chunked" } : { "content-length": body.length },
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => {
            text += d;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
        },
      );
      req.on("error", reject);
      if (chunked) {
        for (let at = 0; at < body.length; at += 100) req.write(body.subarray(at, at + 100));
        req.end();
      } else req.end(body);
    });
  }

  const cases: { name: string; size: number; chunked: boolean; status: number; text: string }[] = [
    { name: "empty body", size: 0, chunked: false, status: 200, text: "read 0" },
    { name: "exactly the cap, Content-Length", size: MAX, chunked: false, status: 200, text: `read ${MAX}` },
    { name: "exactly the cap, chunked", size: MAX, chunked: true, status: 200, text: `read ${MAX}` },
    {
      name: "one byte over, Content-Length",
      size: MAX + 1,
      chunked: false,
      status: 413,
      text: "EDGE_BODY_TOO_LARGE",
    },
    {
      name: "one byte over, chunked",
      size: MAX + 1,
      chunked: true,
      status: 413,
      text: "EDGE_BODY_TOO_LARGE",
    },
    { name: "far over, chunked", size: MAX * 64, chunked: true, status: 413, text: "EDGE_BODY_TOO_LARGE" },
  ];
  for (const c of cases) {
    test(`${c.name} → ${c.status}`, async () => {
      const r = await post(Buffer.alloc(c.size, 0x61), c.chunked);
      assert.equal(r.status, c.status);
      assert.equal(r.text, c.text);
    });
  }

  test("a declared Content-Length over the cap is refused before any byte is read", async () => {
    const { Readable } = await import("node:stream");
    const req = Object.assign(Readable.from([Buffer.alloc(10)]), {
      headers: { "content-length": String(MAX + 1) },
    }) as unknown as IncomingMessage;
    await assert.rejects(
      readBody(req, MAX),
      (err: unknown) => err instanceof GatewayError && err.code === "EDGE_BODY_TOO_LARGE",
    );
    assert.equal((req as unknown as { readableDidRead: boolean }).readableDidRead, false, "nothing was read");
  });
});
