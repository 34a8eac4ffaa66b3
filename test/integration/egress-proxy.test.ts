/**
 * The egress proxy end to end: the demo server's `fetch_url`
 * runs as a stdio server behind mcp-edge, with the edge's HTTP_PROXY in its environment.
 *   - a loopback service is refused (403 naming the rule; the service never sees a connection);
 *   - a loopback service named in `servers.demo.egress.allow` (host:port, the named opt-in) is
 *     reached;
 *   - both attempts land in the audit record of the tool call that made them, with the address
 *     checked and the rule, and in nobody else's;
 *   - https:// goes through CONNECT and is refused the same way, without connecting;
 *   - the proxy answers 407 to a request or CONNECT without valid credentials;
 *   - a shared stdio process is attributed to its route only (no call record gets its egress).
 */
import assert from "node:assert/strict";
import { createServer, request, type Server } from "node:http";
import { connect, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import type { AuditRecord } from "../../src/audit/record.ts";
import type { EgressDecision, EgressProxy } from "../../src/egress/proxy.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";
import { mcpPost } from "../helpers/mcp.ts";
import { waitFor } from "../helpers/wait.ts";

const ADMIN_TOKEN = "test-admin-token-egress-0123456789abcdef-01";
const DEMO = `${REPO_ROOT}/src/demo/server.ts`;

/** A loopback HTTP service that counts the TCP connections it accepts. */
interface Service {
  server: Server;
  port: number;
  accepts: number;
}

async function service(body: string): Promise<Service> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(body);
  });
  const svc: Service = { server, port: 0, accepts: 0 };
  server.on("connection", () => svc.accepts++);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  svc.port = (server.address() as { port: number }).port;
  return svc;
}

let edge: InProcessEdge;
let internal: Service; // must stay unreachable
let allowed: Service; // named in egress.allow
let key: string;

before(async () => {
  internal = await service("internal secret: do not leak");
  allowed = await service("hello from the allowed service");
  edge = await startEdge({
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    audit: { flushInterval: "50ms" },
    servers: {
      demo: {
        route: "/demo/mcp",
        upstream: { stdio: { command: NODE_BIN, args: [DEMO] } },
        auth: ["apiKey"],
        egress: { allow: [`127.0.0.1:${allowed.port}`] },
      },
      shared: {
        route: "/shared/mcp",
        upstream: { stdio: { command: NODE_BIN, args: [DEMO], mode: "shared" } },
        auth: ["none"],
      },
    },
  });
  const res = await fetch(`${edge.gw.adminUrl}/api/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "acme-egress", server: "demo", tenant: "acme" }),
  });
  assert.equal(res.status, 201);
  key = ((await res.json()) as { key: string }).key;
});

after(async () => {
  await edge?.stop();
  await new Promise((r) => internal?.server.close(r));
  await new Promise((r) => allowed?.server.close(r));
});

// ---- a minimal MCP client over the edge ---------------------------------------------------------

interface Answer {
  status: number;
  requestId: string;
  sessionId: string | null;
  body: any;
}

function mcp(server: string, body: object, sessionId?: string, auth = true): Promise<Answer> {
  return mcpPost(edge.url(server), body, {
    ...(auth ? { credential: key } : {}),
    ...(sessionId ? { sessionId } : {}),
  });
}

async function initialize(server: string, auth = true): Promise<string> {
  const r = await mcp(
    server,
    {
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: {
        protocolVersion: "2025-11-25",
        capabilities: {},
        clientInfo: { name: "egress", version: "1" },
      },
    },
    undefined,
    auth,
  );
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const sid = r.sessionId as string;
  await mcp(server, { jsonrpc: "2.0", method: "notifications/initialized" }, sid, auth);
  return sid;
}

let nextId = 1;
async function fetchUrl(server: string, sid: string, url: string, auth = true) {
  const r = await mcp(
    server,
    { jsonrpc: "2.0", id: nextId++, method: "tools/call", params: { name: "fetch_url", arguments: { url } } },
    sid,
    auth,
  );
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const result = r.body.result as { isError?: boolean; content: { text: string }[] };
  return { requestId: r.requestId, isError: result.isError === true, text: result.content[0]?.text ?? "" };
}

/** The audit records of one request, once the flush has written them. */
async function auditOf(requestId: string): Promise<AuditRecord[]> {
  const read = async () => {
    const res = await fetch(`${edge.gw.adminUrl}/api/audit?limit=1000`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(res.status, 200);
    return ((await res.json()) as { records: AuditRecord[] }).records.filter(
      (r) => r.requestId === requestId,
    );
  };
  // The callers' assertions say what is missing when nothing comes.
  return waitFor(
    async () => {
      const recs = await read();
      return recs.length > 0 ? recs : undefined;
    },
    { what: `the audit records of ${requestId}`, timeout: 5000, interval: 50 },
  ).catch(read);
}

// ---- raw proxy requests -------------------------------------------------------------------------

function proxy(): EgressProxy {
  const p = edge.gw.egressProxy;
  assert.ok(p, "the edge runs an egress proxy when a route spawns a process");
  return p;
}

function basic(user: string, pass: string): string {
  return `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}`;
}

/** An absolute-URI request to the proxy. */
function viaProxy(target: string, auth?: string) {
  const p = new URL(proxy().url);
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>(
    (resolve, reject) => {
      const req = request({
        host: p.hostname,
        port: p.port,
        method: "GET",
        path: target,
        headers: { host: new URL(target).host, ...(auth ? { "proxy-authorization": auth } : {}) },
        agent: false,
      });
      req.on("response", (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on("error", reject);
      req.end();
    },
  );
}

/** A raw CONNECT; resolves with the proxy's answer head and body (the socket is then closed). */
function connectVia(authority: string, auth?: string): Promise<{ head: string; body: string }> {
  const p = new URL(proxy().url);
  return new Promise((resolve, reject) => {
    const s: Socket = connect(Number(p.port), p.hostname);
    let data = "";
    s.setEncoding("utf8");
    s.on("connect", () =>
      s.write(
        `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n` +
          (auth ? `Proxy-Authorization: ${auth}\r\n` : "") +
          "\r\n",
      ),
    );
    s.on("data", (c: string) => {
      data += c;
      // A 200 keeps the tunnel open: stop at the end of the head.
      if (data.startsWith("HTTP/1.1 200") && data.includes("\r\n\r\n")) s.destroy();
    });
    s.on("close", () => {
      const i = data.indexOf("\r\n\r\n");
      resolve({ head: i < 0 ? data : data.slice(0, i), body: i < 0 ? "" : data.slice(i + 4) });
    });
    s.on("error", reject);
  });
}

// ---- the tests ----------------------------------------------------------------------------------

describe("egress proxy", () => {
  let sid: string;

  test("a loopback service is refused, an allow-listed one is reached, both in the call's audit record", async () => {
    sid = await initialize("demo");

    const denied = await fetchUrl("demo", sid, `http://127.0.0.1:${internal.port}/secret`);
    assert.equal(denied.isError, true);
    assert.match(denied.text, /^403 /);
    assert.match(
      denied.text,
      /mcp-edge egress denied: loopback \(127\.0\.0\.1\) is not allowed for server demo \(rule range:loopback\)/,
    );
    assert.doesNotMatch(denied.text, /internal secret/);
    assert.equal(internal.accepts, 0, "the refused service never saw a connection");

    const ok = await fetchUrl("demo", sid, `http://127.0.0.1:${allowed.port}/hello`);
    assert.equal(ok.isError, false, ok.text);
    assert.match(ok.text, /^200 /);
    assert.match(ok.text, /hello from the allowed service/);
    assert.equal(allowed.accepts, 1);

    const [deniedRec, ...more] = await auditOf(denied.requestId);
    assert.equal(more.length, 0);
    assert.ok(deniedRec);
    assert.equal(deniedRec.type, "call");
    assert.equal(deniedRec.target, "fetch_url");
    assert.equal(deniedRec.tenant, "acme");
    const [d, ...dMore] = deniedRec.egress ?? [];
    assert.equal(dMore.length, 0, "only this call's attempt");
    assert.ok(d);
    const { time, ...decision } = d;
    assert.ok(!Number.isNaN(Date.parse(time)));
    assert.deepEqual(decision satisfies Omit<EgressDecision, "time">, {
      method: "GET",
      host: "127.0.0.1",
      port: internal.port,
      resolvedAddress: "127.0.0.1",
      allowed: false,
      rule: "range:loopback",
    });

    const [okRec] = await auditOf(ok.requestId);
    assert.ok(okRec);
    assert.deepEqual(
      okRec.egress?.map((e) => [e.method, e.host, e.port, e.resolvedAddress, e.allowed, e.rule]),
      [["GET", "127.0.0.1", allowed.port, "127.0.0.1", true, null]],
    );
    // The session's record names the instance the proxy log line names.
    const line = edge
      .logs()
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === "egress denied" && l.port === internal.port);
    assert.ok(line, "a denied egress is logged");
    assert.equal(line.server, "demo");
    assert.equal(line.tenant, "acme");
    assert.equal(line.instance, deniedRec.instance);
    assert.equal(line.calls, 1);
  });

  test("https:// is a CONNECT, refused without connecting, and recorded", async () => {
    const r = await fetchUrl("demo", sid, `https://127.0.0.1:${internal.port}/`);
    assert.equal(r.isError, true);
    assert.match(r.text, /fetch failed/);
    assert.equal(internal.accepts, 0);
    const [rec] = await auditOf(r.requestId);
    assert.deepEqual(
      rec?.egress?.map((e) => [e.method, e.host, e.port, e.allowed, e.rule]),
      [["CONNECT", "127.0.0.1", internal.port, false, "range:loopback"]],
    );
  });

  test("a public target missing from the allow-list is refused by it, before any connection", async () => {
    // 8.8.8.8 passes the address policy; the server's allow-list refuses it (no network needed:
    // nothing is connected).
    const r = await fetchUrl("demo", sid, "http://8.8.8.8:8080/");
    assert.equal(r.isError, true);
    assert.match(r.text, /8\.8\.8\.8 is not in the egress allow-list of server demo \(rule egress\.allow\)/);
    const [rec] = await auditOf(r.requestId);
    assert.deepEqual(
      rec?.egress?.map((e) => [e.host, e.resolvedAddress, e.allowed, e.rule]),
      [["8.8.8.8", "8.8.8.8", false, "egress.allow"]],
    );
  });

  test("the proxy answers 407 without valid credentials, and refuses CONNECT to a denied address", async () => {
    const none = await viaProxy(`http://127.0.0.1:${allowed.port}/`);
    assert.equal(none.status, 407);
    assert.match(String(none.headers["proxy-authenticate"]), /^Basic /);
    const wrong = await viaProxy(`http://127.0.0.1:${allowed.port}/`, basic("nobody", "guess"));
    assert.equal(wrong.status, 407);
    const noAuthConnect = await connectVia(`127.0.0.1:${allowed.port}`);
    assert.match(noAuthConnect.head, /^HTTP\/1\.1 407 /);
    assert.equal(allowed.accepts, 1, "nothing reached the service without credentials");

    // A credential of the kind a spawned process gets (same server rules).
    const cred = proxy().mint(
      { server: "demo", tenant: "acme", session: null },
      edge.gw.config.servers.demo!.egress,
      () => [],
    );
    const proxyUrl = new URL(cred.env.HTTP_PROXY as string);
    const auth = basic(decodeURIComponent(proxyUrl.username), decodeURIComponent(proxyUrl.password));
    try {
      const refused = await connectVia(`127.0.0.1:${internal.port}`, auth);
      assert.match(refused.head, /^HTTP\/1\.1 403 /);
      assert.match(refused.body, /loopback \(127\.0\.0\.1\) is not allowed for server demo/);
      // Other spellings of loopback are the same address (WHATWG host parsing).
      for (const spelling of ["127.1", "0x7f.0.0.1", "2130706433", "localhost", "[::1]"]) {
        const r = await connectVia(`${spelling}:${internal.port}`, auth);
        assert.match(r.head, /^HTTP\/1\.1 403 /, spelling);
      }
      assert.equal(internal.accepts, 0, "CONNECT to a denied address never connects");

      const tunnel = await connectVia(`127.0.0.1:${allowed.port}`, auth);
      assert.match(tunnel.head, /^HTTP\/1\.1 200 /);
      const plain = await viaProxy(`http://127.0.0.1:${internal.port}/`, auth);
      assert.equal(plain.status, 403);
      assert.doesNotMatch(plain.body, /internal secret/);
      assert.equal(internal.accepts, 0);
      cred.revoke();
      const revoked = await viaProxy(`http://127.0.0.1:${allowed.port}/`, auth);
      assert.equal(revoked.status, 407, "a revoked credential (process gone) no longer works");
    } finally {
      cred.revoke();
    }
  });

  test("child environment: proxy variables with per-process credentials, nothing exempt", async () => {
    const cred = proxy().mint(
      { server: "demo", tenant: "acme", session: "x" },
      { allow: [], allowPrivate: false },
      () => [],
    );
    const other = proxy().mint(
      { server: "demo", tenant: "acme", session: "y" },
      { allow: [], allowPrivate: false },
      () => [],
    );
    try {
      for (const name of ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]) {
        const u = new URL(cred.env[name] as string);
        assert.equal(`${u.protocol}//${u.host}`, proxy().url);
        assert.ok(u.username && u.password);
      }
      assert.equal(cred.env.NO_PROXY, "");
      assert.equal(cred.env.NODE_USE_ENV_PROXY, "1");
      assert.notEqual(cred.env.HTTP_PROXY, other.env.HTTP_PROXY, "one credential per process");
    } finally {
      cred.revoke();
      other.revoke();
    }
  });

  test("shared stdio mode: one credential per route, attributed to the route only", async () => {
    const shared = await initialize("shared", false);
    const r = await fetchUrl("shared", shared, `http://127.0.0.1:${internal.port}/`, false);
    assert.equal(r.isError, true);
    assert.match(r.text, /is not allowed for server shared/);
    assert.equal(internal.accepts, 0);
    const [rec] = await auditOf(r.requestId);
    assert.ok(rec);
    assert.equal(rec.egress, undefined, "no call record: the shared process serves many sessions");
    const line = edge
      .logs()
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === "egress denied" && l.server === "shared");
    assert.ok(line);
    assert.equal(line.tenant, null);
    assert.equal(line.instance, null);
  });
});
