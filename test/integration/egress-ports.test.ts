/**
 * Egress ports: only 80 and 443 are open by default; any other port must be named — a `host:port`
 * entry (`egress.allowHosts`, `servers.<name>.egress.allow`), `egress.allowPorts`, or the
 * `host:port` of a URL written in the config that the request stems from. Opening addresses
 * (`allowPrivate`, `allowPrivateNetworks`, `allowCidrs`) never opens a port: Redis (6379, running
 * on 127.0.0.1 here), SMTP (25), memcached (11211) and any unnamed port stay closed.
 *
 * - The egress proxy, end to end: the demo server's `fetch_url` runs as a stdio server behind a
 *   real edge (plain HTTP and CONNECT), with `allowPrivate: true`; each attempt is in the call's
 *   audit record with the port rule, and a counting service on an unnamed port sees no connection.
 * - The guarded dispatcher (src/egress, real sockets): run-time URLs, redirect hops of a
 *   configured URL, and a run-time URL on the host:port of the configured URL it stems from.
 */
import assert from "node:assert/strict";
import diagnostics_channel from "node:diagnostics_channel";
import { createServer, request, type Server } from "node:http";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import type { AuditRecord } from "../../src/audit/record.ts";
import { Egress } from "../../src/egress/index.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { mcpPost } from "../helpers/mcp.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

const ADMIN_TOKEN = "test-admin-token-egress-ports-0123456789ab";
const DEMO = `${REPO_ROOT}/src/demo/server.ts`;
/** Well-known ports of internal services; 6379 is the test machine's real Redis. */
const INTERNAL_PORTS = [6379, 25, 11211];
/** Those a fetch client will even try: the Fetch standard's "bad port" list holds 25 (SMTP). */
const FETCHABLE_PORTS = [6379, 11211];

/** A loopback HTTP service that counts the TCP connections it accepts. */
interface Service {
  server: Server;
  port: number;
  accepts: number;
  url: string;
}

async function service(handler?: (path: string) => { status: number; location?: string }): Promise<Service> {
  const svc = { port: 0, accepts: 0, url: "" } as Service;
  svc.server = createServer((req, res) => {
    const a = handler?.(req.url ?? "/") ?? { status: 200 };
    res.writeHead(a.status, {
      "content-type": "text/plain",
      ...(a.location ? { location: a.location } : {}),
    });
    res.end(`service on ${svc.port}`);
  });
  svc.server.on("connection", () => svc.accepts++);
  await new Promise<void>((r) => svc.server.listen(0, "127.0.0.1", () => r()));
  svc.port = (svc.server.address() as { port: number }).port;
  svc.url = `http://127.0.0.1:${svc.port}`;
  return svc;
}

async function close(svc: Service | undefined): Promise<void> {
  if (svc) await new Promise((r) => svc.server.close(r));
}

/** Client sockets Node creates (diagnostics channel `net.client.socket`). */
let sockets = 0;
const onSocket = () => {
  sockets++;
};
before(() => diagnostics_channel.subscribe("net.client.socket", onSocket));
after(() => diagnostics_channel.unsubscribe("net.client.socket", onSocket));

async function denial(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof GatewayError, `EDGE_EGRESS_DENIED, not ${String(err)}`);
    assert.equal(err.code, "EDGE_EGRESS_DENIED");
    return (err.data as { rule: string }).rule;
  }
  assert.fail("the request was not refused");
}

describe("egress proxy: allowPrivate opens addresses, not ports", () => {
  let edge: InProcessEdge;
  let unnamed: Service; // private, on a port nobody named: must stay unreachable
  let named: Service; // named host:port in egress.allow of server `named`
  let keys: Record<string, string>;
  let nextId = 1;

  before(async () => {
    unnamed = await service();
    named = await service();
    edge = await startEdge({
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      audit: { flushInterval: "50ms" },
      servers: {
        privnet: {
          route: "/privnet/mcp",
          upstream: { stdio: { command: NODE_BIN, args: [DEMO] } },
          auth: ["apiKey"],
          egress: { allowPrivate: true },
        },
        named: {
          route: "/named/mcp",
          upstream: { stdio: { command: NODE_BIN, args: [DEMO] } },
          auth: ["apiKey"],
          egress: { allow: [`127.0.0.1:${named.port}`] },
        },
      },
    });
    keys = {};
    for (const server of ["privnet", "named"]) {
      const res = await fetch(`${edge.gw.adminUrl}/api/keys`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ name: `ports-${server}`, server, tenant: "acme" }),
      });
      const json = (await res.json()) as { key: string };
      assert.equal(res.status, 201, JSON.stringify(json));
      keys[server] = json.key;
    }
  });

  after(async () => {
    await edge?.stop();
    await close(unnamed);
    await close(named);
  });

  async function session(server: string): Promise<string> {
    const init = await mcpPost(
      edge.url(server),
      {
        jsonrpc: "2.0",
        id: 0,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "ports", version: "1" },
        },
      },
      { credential: keys[server] as string },
    );
    assert.equal(init.status, 200, JSON.stringify(init.body));
    const sid = init.sessionId as string;
    await mcpPost(
      edge.url(server),
      { jsonrpc: "2.0", method: "notifications/initialized" },
      { credential: keys[server] as string, sessionId: sid },
    );
    return sid;
  }

  async function fetchUrl(server: string, sid: string, url: string) {
    const r = await mcpPost(
      edge.url(server),
      {
        jsonrpc: "2.0",
        id: nextId++,
        method: "tools/call",
        params: { name: "fetch_url", arguments: { url } },
      },
      { credential: keys[server] as string, sessionId: sid },
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const result = r.body.result as { isError?: boolean; content: { text: string }[] };
    return { requestId: r.requestId, isError: result.isError === true, text: result.content[0]?.text ?? "" };
  }

  /** The egress entries of one call's audit record, once the flush has written it. */
  async function egressOf(requestId: string): Promise<[string, number, boolean, string | null][]> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const res = await fetch(`${edge.gw.adminUrl}/api/audit?limit=1000`, {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      const recs = ((await res.json()) as { records: AuditRecord[] }).records.filter(
        (r) => r.requestId === requestId,
      );
      if (recs.length > 0) {
        assert.equal(recs.length, 1);
        return (recs[0]?.egress ?? []).map((e) => [e.method, e.port, e.allowed, e.rule]);
      }
      assert.ok(Date.now() < deadline, "the call's audit record was written");
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  test("plain HTTP to 6379, 11211 and an unnamed port on loopback → 403 port rule, audited, never connected", async () => {
    const sid = await session("privnet");
    for (const port of [...FETCHABLE_PORTS, unnamed.port]) {
      const r = await fetchUrl("privnet", sid, `http://127.0.0.1:${port}/`);
      assert.equal(r.isError, true, r.text);
      assert.match(r.text, /^403 /);
      assert.match(
        r.text,
        new RegExp(
          `port ${port} of 127\\.0\\.0\\.1 is not allowed for server privnet \\(rule port:${port}\\)`,
        ),
      );
      assert.deepEqual(await egressOf(r.requestId), [["GET", port, false, `port:${port}`]]);
    }
    assert.equal(unnamed.accepts, 0, "the unnamed port never saw a connection");
  });

  test("CONNECT (https://) to those ports → refused by the port rule, audited, never connected", async () => {
    const sid = await session("privnet");
    for (const port of [...FETCHABLE_PORTS, unnamed.port]) {
      const r = await fetchUrl("privnet", sid, `https://127.0.0.1:${port}/`);
      assert.equal(r.isError, true, r.text);
      assert.deepEqual(await egressOf(r.requestId), [["CONNECT", port, false, `port:${port}`]]);
    }
    assert.equal(unnamed.accepts, 0);
  });

  test("the proxy itself, with a credential of that server: GET and CONNECT to every such port → 403", async () => {
    const proxy = edge.gw.egressProxy;
    assert.ok(proxy);
    const cred = proxy.mint(
      { server: "privnet", tenant: "acme", session: null },
      edge.gw.config.servers.privnet!.egress,
      () => [],
    );
    const p = new URL(cred.env.HTTP_PROXY as string);
    const auth = `Basic ${Buffer.from(`${decodeURIComponent(p.username)}:${decodeURIComponent(p.password)}`).toString("base64")}`;
    try {
      for (const port of [...INTERNAL_PORTS, unnamed.port]) {
        const plain = await new Promise<{ status: number; body: string }>((resolve, reject) => {
          const req = request({
            host: p.hostname,
            port: p.port,
            path: `http://127.0.0.1:${port}/`,
            headers: { host: `127.0.0.1:${port}`, "proxy-authorization": auth },
            agent: false,
          });
          req.on("response", (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (c: string) => (body += c));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
          });
          req.on("error", reject);
          req.end();
        });
        assert.equal(plain.status, 403, `GET port ${port}: ${plain.body}`);
        assert.match(plain.body, new RegExp(`rule port:${port}`));
        const tunnel = await new Promise<string>((resolve, reject) => {
          const sock = connect(Number(p.port), p.hostname, () =>
            sock.write(
              `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nProxy-Authorization: ${auth}\r\n\r\n`,
            ),
          );
          let data = "";
          sock.setEncoding("utf8");
          sock.on("data", (c: string) => {
            data += c;
            if (data.startsWith("HTTP/1.1 200")) sock.destroy();
          });
          sock.on("close", () => resolve(data));
          sock.on("error", reject);
        });
        assert.match(tunnel, /^HTTP\/1\.1 403 /, `CONNECT port ${port}`);
        assert.match(tunnel, new RegExp(`rule port:${port}`));
      }
    } finally {
      cred.revoke();
    }
    assert.equal(unnamed.accepts, 0);
  });

  test("port 80 on a private address is open under allowPrivate (the decision is allowed)", async () => {
    const sid = await session("privnet");
    const r = await fetchUrl("privnet", sid, "http://127.0.0.1/");
    // Whether anything listens on 127.0.0.1:80 here does not matter: the policy let it through.
    assert.deepEqual(await egressOf(r.requestId), [["GET", 80, true, null]]);
  });

  test("a host:port named in egress.allow is reached, over plain HTTP", async () => {
    const sid = await session("named");
    const r = await fetchUrl("named", sid, `${named.url}/hello`);
    assert.equal(r.isError, false, r.text);
    assert.match(r.text, new RegExp(`^200 .*service on ${named.port}`, "s"));
    assert.deepEqual(await egressOf(r.requestId), [["GET", named.port, true, null]]);
    assert.equal(named.accepts, 1);
  });
});

describe("guarded dispatcher: run-time URLs and redirect hops", () => {
  let target: Service; // a private service on a free port
  let other: Service; // another port of the same host
  let upstream: Service; // a "configured upstream" that redirects
  let egresses: Egress[] = [];

  before(async () => {
    target = await service();
    other = await service();
    upstream = await service((path) => {
      if (path === "/self") return { status: 302, location: `${upstream.url}/ok` };
      if (path === "/to-other") return { status: 302, location: `${other.url}/` };
      if (path.startsWith("/to-port/"))
        return { status: 302, location: `http://127.0.0.1:${path.slice("/to-port/".length)}/` };
      return { status: 200 };
    });
  });

  after(async () => {
    await Promise.all(egresses.map((e) => e.close()));
    egresses = [];
    await close(target);
    await close(other);
    await close(upstream);
  });

  function egress(rules: ConstructorParameters<typeof Egress>[0]["rules"]): Egress {
    const e = new Egress({ connectTimeout: 2000, ...(rules ? { rules } : {}) });
    egresses.push(e);
    return e;
  }

  const get = (e: Egress, url: string, trust: "config" | "runtime", namedBy?: string) =>
    e.request(url, {
      method: "GET",
      headers: {},
      trust,
      ...(namedBy ? { namedBy } : {}),
    });

  for (const [name, rules] of [
    ["allowPrivateNetworks", { allowPrivate: true }],
    ["allowCidrs 127.0.0.0/8", { allowPrivate: false, allowCidrs: ["127.0.0.0/8"] }],
  ] as const) {
    test(`${name}: run-time URLs to 6379, 25, 11211 and an unnamed port are refused before connecting`, async () => {
      const e = egress(rules);
      const before = sockets;
      for (const port of [...INTERNAL_PORTS, target.port]) {
        assert.equal(await denial(get(e, `http://127.0.0.1:${port}/`, "runtime")), `port:${port}`);
        assert.equal(await denial(get(e, `https://127.0.0.1:${port}/`, "runtime")), `port:${port}`);
      }
      assert.equal(sockets, before, "no socket was opened");
      assert.equal(target.accepts, 0);
    });

    test(`${name}: a redirect of a configured URL to an unnamed port is refused at that hop`, async () => {
      const e = egress(rules);
      for (const port of INTERNAL_PORTS) {
        assert.equal(await denial(get(e, `${upstream.url}/to-port/${port}`, "config")), `port:${port}`);
      }
      const seen = other.accepts;
      assert.equal(await denial(get(e, `${upstream.url}/to-other`, "config")), `port:${other.port}`);
      assert.equal(other.accepts, seen, "the refused hop was never contacted");
    });
  }

  test("ports named explicitly are reached: allowPorts, an allowHosts host:port, the configured URL's own", async () => {
    const viaPorts = egress({ allowPrivate: true, allowPorts: [target.port] });
    assert.equal((await get(viaPorts, `${target.url}/`, "runtime")).status, 200);
    // allowPorts names that port only: 6379 stays closed.
    assert.equal(await denial(get(viaPorts, "http://127.0.0.1:6379/", "runtime")), "port:6379");

    const viaHost = egress({ allowPrivate: false, allowHosts: [`127.0.0.1:${target.port}`] });
    assert.equal((await get(viaHost, `${target.url}/`, "runtime")).status, 200);
    assert.equal(await denial(get(viaHost, `${other.url}/`, "runtime")), "range:loopback");

    // A configured upstream on an explicit port, and its redirect to itself: named by the config.
    const plain = egress({ allowPrivate: false });
    assert.equal((await get(plain, `${upstream.url}/`, "config")).status, 200);
    assert.equal((await get(plain, `${upstream.url}/self`, "config")).status, 200);
  });

  test("a run-time URL on the host:port of the configured URL it stems from (a jwks_uri on its issuer's port)", async () => {
    const e = egress({ allowPrivate: false, allowCidrs: ["127.0.0.1/32"] });
    const issuer = `${target.url}/realms/acme`;
    assert.equal((await get(e, `${target.url}/jwks`, "runtime", issuer)).status, 200);
    // Another port of the same host is not named by that issuer.
    assert.equal(await denial(get(e, `${other.url}/jwks`, "runtime", issuer)), `port:${other.port}`);
    assert.equal(await denial(get(e, "http://127.0.0.1:6379/", "runtime", issuer)), "port:6379");
  });
});
