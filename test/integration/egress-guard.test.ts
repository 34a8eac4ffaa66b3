/**
 * src/egress/guard.ts and index.ts against real sockets:
 *
 * - an "internal" TCP listener on 127.0.0.1 that counts accepted connections: every denied case
 *   must leave it at 0, and `net.client.socket` (published by Node for every client socket) must
 *   see no socket at all — the guard refuses before connecting;
 * - a real DNS server (test/helpers/dns.ts) behind the guard's injectable resolver, for names and
 *   for rebinding (first a "public" answer, then 127.0.0.1, TTL 0);
 * - "public" is represented by the loopback alias 127.0.0.2, opened with the operator-facing
 *   exception list `allowCidrs: ["127.0.0.2/32"]` (documented in policy.ts): everything else on
 *   127/8 stays loopback and denied. The internal listener shares the public server's port, so a
 *   guard that resolved a second time would land on it;
 * - a second origin (127.0.0.1, another port) opened by an `allowHosts` exception records the
 *   headers a cross-origin redirect brought it.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import diagnostics_channel from "node:diagnostics_channel";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, test } from "node:test";
import { request } from "undici";
import { Egress } from "../../src/egress/index.ts";
import {
  createGuardedAgent,
  type EgressDecisionEvent,
  egressChannel,
  guardedRequest,
} from "../../src/egress/guard.ts";
import type { EgressRules } from "../../src/egress/policy.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import { resolverFor, TestDns } from "../helpers/dns.ts";
import { waitFor } from "../helpers/wait.ts";

const PUBLIC_IP = "127.0.0.2";
const SECRET = "INTERNAL-SECRET-BODY";

let dns: TestDns;
let resolver: (host: string) => Promise<string[]>;
/** The "internal" service: 127.0.0.1:<port>, same port as the public server. */
let internal: TcpServer;
let internalAccepts = 0;
/** The "public" web server on 127.0.0.2:<port>. */
let pub: Server;
let port = 0;
/** A second origin on 127.0.0.1:<port2>, reachable only through an allowHosts exception. */
let second: Server;
let port2 = 0;
const secondSeen: IncomingHttpHeaders[] = [];
const pubSeen: Array<{ url: string; headers: IncomingHttpHeaders }> = [];
/** Client sockets Node created (diagnostics channel `net.client.socket`). */
let sockets = 0;
const onSocket = () => {
  sockets++;
};
const decisions: EgressDecisionEvent[] = [];
const onDecision = (m: unknown) => {
  decisions.push(m as EgressDecisionEvent);
};

function rules(extra: Partial<EgressRules> = {}): EgressRules {
  return {
    allowPrivate: false,
    allowCidrs: [`${PUBLIC_IP}/32`],
    allowHosts: [`127.0.0.1:${port2}`],
    // The "public" server (and the internal one, same port) listen on a free port, not 80/443:
    // named, as an operator names a port (policy.ts checkPort). The address checks still apply.
    allowPorts: [port],
    ...extra,
  };
}

async function listenTcp(server: TcpServer | Server, host: string, p: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(p, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** The whole body (Array.fromAsync is not in the project's TypeScript lib). */
async function readAll(body: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c);
  return chunks;
}

async function denial(p: Promise<unknown>): Promise<GatewayError> {
  try {
    const res = (await p) as { body?: { resume(): void } } | undefined;
    res?.body?.resume();
  } catch (err) {
    assert.ok(err instanceof GatewayError, `a GatewayError, not ${String(err)}`);
    return err;
  }
  assert.fail("the request was not refused");
}

function publicHandler(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? "/", "http://x");
  pubSeen.push({ url: url.pathname, headers: req.headers });
  const redirect = (status: number, location: string) => {
    res.writeHead(status, { location, "content-type": "text/plain" });
    res.end(`redirect body ${SECRET}`);
  };
  const p = url.pathname;
  if (p === "/ok") return void res.end("public ok");
  if (p === "/to-internal-ip") return redirect(302, `http://127.0.0.1:${port}/secret`);
  if (p === "/to-internal-short") return redirect(307, `http://127.1:${port}/secret`);
  if (p === "/to-internal-mapped") return redirect(308, `http://[::ffff:127.0.0.1]:${port}/secret`);
  if (p === "/to-internal-name") return redirect(302, `http://internal.test:${port}/secret`);
  if (p === "/to-localhost") return redirect(302, `http://localhost:${port}/secret`);
  if (p === "/to-metadata") return redirect(307, "http://169.254.169.254/latest/meta-data/iam/");
  if (p === "/to-metadata-name") return redirect(302, "http://metadata.google.internal/computeMetadata/v1/");
  if (p === "/to-file") return redirect(302, "file:///etc/passwd");
  if (p === "/to-gopher") return redirect(302, `gopher://127.0.0.2:${port}/_GET`);
  if (p === "/to-second") return redirect(307, `http://127.0.0.1:${port2}/echo`);
  if (p === "/see-other") return redirect(303, `http://127.0.0.1:${port2}/echo`);
  if (p === "/same-origin") return redirect(302, "/echo");
  if (p === "/echo")
    return void res.end(
      JSON.stringify({ method: req.method, authorization: req.headers.authorization ?? null }),
    );
  if (p.startsWith("/loop/")) return redirect(302, `/loop/${Number(p.slice(6)) + 1}`);
  if (p === "/big") {
    res.writeHead(200, { "content-length": String(2 * 1024 * 1024) });
    return void res.end(Buffer.alloc(2 * 1024 * 1024));
  }
  if (p === "/big-chunked") {
    res.writeHead(200);
    for (let i = 0; i < 32; i++) res.write(Buffer.alloc(64 * 1024));
    return void res.end();
  }
  if (p === "/hang") return; // never answers
  res.statusCode = 404;
  res.end();
}

before(async () => {
  dns = await TestDns.start({
    "public.test": { A: [[PUBLIC_IP]] },
    "internal.test": { A: [["127.0.0.1"]] },
    "private.test": { A: [["10.0.0.1"]] },
    "metadata.test": { A: [["169.254.169.254"]] },
    "v6loop.test": { AAAA: [["::1"]] },
    "mapped.test": { AAAA: [["::ffff:127.0.0.1"]] },
    "mixed.test": { A: [[PUBLIC_IP, "127.0.0.1"]] },
    "rebind.test": { A: [[PUBLIC_IP], ["127.0.0.1"]] },
  });
  resolver = resolverFor(dns);
  pub = createServer(publicHandler);
  // The same port on 127.0.0.2 (public) and 127.0.0.1 (internal): a second resolution to
  // 127.0.0.1 would reach the internal listener.
  for (let attempt = 0; ; attempt++) {
    port = await listenTcp(pub, PUBLIC_IP, 0);
    internal = createTcpServer((s) => {
      internalAccepts++;
      s.end(`HTTP/1.1 200 OK\r\ncontent-length: ${SECRET.length}\r\nconnection: close\r\n\r\n${SECRET}`);
    });
    try {
      await listenTcp(internal, "127.0.0.1", port);
      break;
    } catch (err) {
      await new Promise<void>((r) => pub.close(() => r()));
      if (attempt > 20) throw err;
    }
  }
  second = createServer((req, res) => {
    secondSeen.push(req.headers);
    res.end("second ok");
  });
  port2 = await listenTcp(second, "127.0.0.1", 0);
  diagnostics_channel.subscribe("net.client.socket", onSocket);
  diagnostics_channel.subscribe(egressChannel.name, onDecision);
});

after(async () => {
  diagnostics_channel.unsubscribe("net.client.socket", onSocket);
  diagnostics_channel.unsubscribe(egressChannel.name, onDecision);
  pub.closeAllConnections();
  second.closeAllConnections();
  await Promise.all([
    new Promise<void>((r) => pub.close(() => r())),
    new Promise<void>((r) => second.close(() => r())),
    new Promise<void>((r) => internal.close(() => r())),
    dns.close(),
  ]);
});

beforeEach(() => {
  sockets = 0;
  internalAccepts = 0;
  secondSeen.length = 0;
  pubSeen.length = 0;
  decisions.length = 0;
});

/** Literal spellings of internal targets, as URL hosts with our port. */
const LITERAL_HOSTS = [
  "127.0.0.1",
  "127.1",
  "0177.0.0.1",
  "0x7f.1",
  "2130706433",
  "017700000001",
  "0x7f000001",
  "127.0.0.3",
  "0.0.0.0",
  "0",
  "[::]",
  "[::1]",
  "[::ffff:127.0.0.1]",
  "[::fFFf:127.0.0.1]",
  "[::ffff:7f00:1]",
  "[0:0:0:0:0:ffff:7f00:1]",
  "[::7f00:1]",
  "169.254.169.254",
  "169.254.170.2",
  "[fd00:ec2::254]",
  "100.100.100.200",
  "10.0.0.1",
  "172.16.0.1",
  "192.168.0.1",
  "100.64.0.1",
  "198.18.0.1",
  "[fc00::1]",
  "[fd00::1]",
  "[fe80::1]",
  "224.0.0.1",
  "[ff02::1]",
  "240.0.0.1",
  "255.255.255.255",
  "[2002:7f00:1::]",
  "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
  "[64:ff9b::7f00:1]",
];

const DENIED_NAMES = [
  ["localhost", "name:localhost"],
  ["LocalHost.", "name:localhost"],
  ["app.localhost", "name:localhost"],
  ["metadata.google.internal", "name:metadata"],
  ["metadata", "name:metadata"],
  ["internal.test", "range:loopback"],
  ["private.test", "range:private"],
  ["metadata.test", "range:metadata"],
  ["v6loop.test", "range:loopback"],
  ["mapped.test", "range:ipv4Mapped→loopback"],
  ["mixed.test", "range:loopback"],
  ["nxdomain.test", "ENOTFOUND"],
] as const;

describe("literal and named internal targets are refused before any connection", () => {
  for (const host of LITERAL_HOSTS) {
    test(`http://${host}:<port>/ (runtime trust)`, async () => {
      const err = await denial(
        guardedRequest(
          `http://${host}:${port}/secret`,
          { method: "GET" },
          { trust: "runtime", rules: rules(), resolver },
        ),
      );
      assert.equal(err.code, "EDGE_EGRESS_DENIED");
      assert.match(String(err.data?.["rule"]), /^range:/);
      assert.ok(!err.message.includes(SECRET));
      assert.equal(internalAccepts, 0);
      assert.equal(sockets, 0, "no socket was created");
    });
  }

  test("the agent itself checks IP literals in connect (no lookup hook to skip)", async () => {
    // Straight through undici with the guarded agent: no pre-check of guardedRequest in the way.
    const agent = createGuardedAgent({ rules: rules(), resolver });
    try {
      for (const host of [
        "127.0.0.1",
        "127.1",
        "0x7f.1",
        "2130706433",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "169.254.169.254",
      ]) {
        const err = await denial(request(`http://${host}:${port}/`, { dispatcher: agent }));
        assert.equal(err.code, "EDGE_EGRESS_DENIED", host);
      }
      const err = await denial(request(`http://localhost:${port}/`, { dispatcher: agent }));
      assert.equal(err.data?.["rule"], "name:localhost");
    } finally {
      await agent.close();
    }
    assert.equal(internalAccepts, 0);
    assert.equal(sockets, 0);
  });

  for (const [name, rule] of DENIED_NAMES) {
    test(`http://${name}:<port>/ → ${rule}`, async () => {
      const p = guardedRequest(
        `http://${name}:${port}/secret`,
        { method: "GET" },
        { trust: "runtime", rules: rules(), resolver },
      );
      if (rule === "ENOTFOUND") {
        await assert.rejects(p, (e: { code?: string }) => e.code === "ENOTFOUND");
      } else {
        const err = await denial(p);
        assert.equal(err.code, "EDGE_EGRESS_DENIED");
        assert.equal(err.data?.["rule"], rule);
        // The resolved address stays in the log (cause), not in what a client may see.
        assert.equal(err.data?.["address"], undefined);
        assert.match(
          String((err.cause as Error).message),
          new RegExp(rule.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")),
        );
      }
      assert.equal(internalAccepts, 0);
      assert.equal(sockets, 0);
    });
  }

  test("names are denied before they are resolved", async () => {
    const before = dns.queries.length;
    await denial(
      guardedRequest(
        `http://localhost:${port}/`,
        { method: "GET" },
        { trust: "runtime", rules: rules(), resolver },
      ),
    );
    await denial(
      guardedRequest(
        "http://metadata.google.internal/",
        { method: "GET" },
        { trust: "runtime", rules: rules(), resolver },
      ),
    );
    assert.equal(dns.queries.length, before);
  });

  test("Egress.request with trust: runtime refuses the same targets", async () => {
    const egress = new Egress({ connectTimeout: 2000, rules: rules(), resolver });
    try {
      for (const host of ["127.1", "[::ffff:7f00:1]", "internal.test", "localhost"]) {
        const err = await denial(
          egress.request(`http://${host}:${port}/`, { method: "GET", headers: {}, trust: "runtime" }),
        );
        assert.equal(err.code, "EDGE_EGRESS_DENIED", host);
      }
    } finally {
      await egress.close();
    }
    assert.equal(internalAccepts, 0);
    assert.equal(sockets, 0);
  });

  test("the decision is published on mcp-edge:egress", async () => {
    await denial(
      guardedRequest(
        `http://internal.test:${port}/`,
        { method: "GET" },
        { trust: "runtime", rules: rules(), resolver },
      ),
    );
    assert.deepEqual(
      decisions.map((d) => [d.host, d.allowed, d.rule, d.address]),
      [["internal.test", false, "range:loopback", "127.0.0.1"]],
    );
  });
});

describe("DNS rebinding (G61): the socket goes to the address that was checked", () => {
  test("public first, then 127.0.0.1: the first request reaches the public server, the second nothing", async () => {
    dns.set("rebind.test", { A: [[PUBLIC_IP], ["127.0.0.1"]] });
    const egress = new Egress({ connectTimeout: 2000, rules: rules(), resolver });
    try {
      const first = await egress.request(`http://rebind.test:${port}/ok`, {
        method: "GET",
        headers: { connection: "close" },
        trust: "runtime",
      });
      assert.equal(first.status, 200);
      assert.equal(Buffer.concat(await readAll(first.body)).toString(), "public ok");
      // Resolved once for that connection (A and AAAA asked once each), then connected to it.
      assert.equal(dns.count("rebind.test", "A"), 1);
      assert.equal(pubSeen.length, 1);
      assert.equal(decisions.at(-1)?.address, PUBLIC_IP);
      assert.equal(sockets, 1, "one socket, to the checked address (the socket counter works)");

      // The server closed the connection; the next one resolves again and gets 127.0.0.1.
      await waitFor(
        async () => (await new Promise<number>((r) => pub.getConnections((_, n) => r(n)))) === 0,
        {
          what: "the public server's connection to close",
        },
      );
      const err = await denial(
        egress.request(`http://rebind.test:${port}/ok`, { method: "GET", headers: {}, trust: "runtime" }),
      );
      assert.equal(err.data?.["rule"], "range:loopback");
      assert.equal(dns.count("rebind.test", "A"), 2);
    } finally {
      await egress.close();
    }
    assert.equal(internalAccepts, 0, "nothing reached the internal listener on the same port");
  });

  test("an unreachable first address falls back to the next checked one, never to an unchecked one", async () => {
    dns.set("fallback.test", { A: [["127.0.0.4", PUBLIC_IP]] });
    const res = await guardedRequest(
      `http://fallback.test:${port}/ok`,
      { method: "GET" },
      { trust: "runtime", rules: rules({ allowCidrs: [`${PUBLIC_IP}/32`, "127.0.0.4/32"] }), resolver },
    );
    assert.equal(Buffer.concat(await readAll(res.body)).toString(), "public ok");
    assert.equal(dns.count("fallback.test", "A"), 1, "one resolution for both attempts");
    assert.equal(internalAccepts, 0);
  });

  test("a name answering a public and a loopback address is refused as a whole", async () => {
    const err = await denial(
      guardedRequest(
        `http://mixed.test:${port}/ok`,
        { method: "GET" },
        { trust: "runtime", rules: rules(), resolver },
      ),
    );
    assert.equal(err.data?.["rule"], "range:loopback");
    assert.equal(pubSeen.length, 0);
    assert.equal(internalAccepts, 0);
    assert.equal(sockets, 0);
  });
});

describe("redirects (G62): each hop is checked and stopped at the offending one", () => {
  const cases: Array<[string, string]> = [
    ["/to-internal-ip", "range:loopback"],
    ["/to-internal-short", "range:loopback"],
    ["/to-internal-mapped", "range:ipv4Mapped→loopback"],
    ["/to-internal-name", "range:loopback"],
    ["/to-localhost", "name:localhost"],
    ["/to-metadata", "range:metadata"],
    ["/to-metadata-name", "name:metadata"],
    ["/to-file", "redirect:scheme"],
    ["/to-gopher", "redirect:scheme"],
  ];
  for (const [path, rule] of cases) {
    for (const trust of ["runtime", "config"] as const) {
      test(`${path} → ${rule} (${trust} trust)`, async () => {
        const err = await denial(
          guardedRequest(
            `http://public.test:${port}${path}`,
            { method: "GET", headers: { authorization: "Bearer s3cret" } },
            { trust, rules: rules(), resolver },
          ),
        );
        assert.equal(err.code, "EDGE_EGRESS_DENIED");
        assert.equal(err.data?.["rule"], rule);
        assert.ok(!JSON.stringify({ m: err.message, d: err.data }).includes(SECRET), "no body of any hop");
        assert.equal(pubSeen.length, 1, "the first hop was made");
        assert.equal(internalAccepts, 0);
      });
    }
  }

  test("past the hop limit: stopped after exactly maxRedirects redirects", async () => {
    const err = await denial(
      guardedRequest(
        `http://public.test:${port}/loop/0`,
        { method: "GET", maxRedirects: 3 },
        { trust: "runtime", rules: rules(), resolver },
      ),
    );
    assert.equal(err.data?.["rule"], "maxRedirects");
    assert.deepEqual(
      pubSeen.map((s) => s.url),
      ["/loop/0", "/loop/1", "/loop/2", "/loop/3"],
    );
  });

  test("Egress.request follows at most egress.maxRedirects", async () => {
    const egress = new Egress({ connectTimeout: 2000, rules: rules(), resolver, maxRedirects: 1 });
    try {
      const err = await denial(
        egress.request(`http://public.test:${port}/loop/0`, { method: "GET", headers: {} }),
      );
      assert.equal(err.data?.["rule"], "maxRedirects");
      assert.equal(pubSeen.length, 2);
    } finally {
      await egress.close();
    }
  });

  test("Authorization, Cookie and other credentials are not carried to another origin", async () => {
    const res = await guardedRequest(
      `http://public.test:${port}/to-second`,
      {
        method: "POST",
        headers: {
          authorization: "Bearer s3cret",
          cookie: "sid=abc",
          "proxy-authorization": "Basic eA==",
          "x-api-key": "k-123",
          "mcp-session-id": "sess",
          accept: "application/json",
          "content-type": "application/json",
        },
        body: "{}",
      },
      { trust: "runtime", rules: rules(), resolver },
    );
    assert.equal(res.status, 200);
    assert.equal(res.redirects, 1);
    await readAll(res.body);
    assert.equal(pubSeen[0]?.headers.authorization, "Bearer s3cret", "the first origin got them");
    assert.equal(secondSeen.length, 1);
    const h = secondSeen[0] as IncomingHttpHeaders;
    for (const name of ["authorization", "cookie", "proxy-authorization", "x-api-key", "mcp-session-id"]) {
      assert.equal(h[name], undefined, name);
    }
    assert.equal(h.accept, "application/json");
  });

  test("303 turns a POST into a GET without its body; same-origin hops keep credentials", async () => {
    const res = await guardedRequest(
      `http://public.test:${port}/same-origin`,
      {
        method: "POST",
        headers: { authorization: "Bearer s3cret", "content-type": "text/plain" },
        body: "x",
      },
      { trust: "runtime", rules: rules(), resolver },
    );
    // 302 after POST becomes GET (fetch §4.4); same origin keeps Authorization.
    assert.deepEqual(JSON.parse(Buffer.concat(await readAll(res.body)).toString()), {
      method: "GET",
      authorization: "Bearer s3cret",
    });
    const other = await guardedRequest(
      `http://public.test:${port}/see-other`,
      { method: "POST", headers: { "content-type": "text/plain" }, body: "x" },
      { trust: "runtime", rules: rules(), resolver },
    );
    await readAll(other.body);
    assert.equal(secondSeen[0]?.["content-type"], undefined);
    assert.equal(secondSeen[0]?.["content-length"], undefined);
  });

  test("redirect: manual returns the 3xx without following", async () => {
    const res = await guardedRequest(
      `http://public.test:${port}/to-internal-ip`,
      { method: "GET", redirect: "manual" },
      { trust: "runtime", rules: rules(), resolver },
    );
    assert.equal(res.status, 302);
    await readAll(res.body);
    assert.equal(internalAccepts, 0);
  });
});

describe("config trust: the configured origin as written, its redirects checked", () => {
  test("a configured loopback upstream is reached; its redirect to another internal origin is not", async () => {
    // The "internal" listener stands for a private upstream written in the config.
    const egress = new Egress({ connectTimeout: 2000, rules: rules({ allowHosts: [] }), resolver });
    try {
      const res = await egress.request(`http://127.0.0.1:${port}/`, { method: "GET", headers: {} });
      assert.equal(res.status, 200);
      assert.equal(Buffer.concat(await readAll(res.body)).toString(), SECRET);
      assert.equal(internalAccepts, 1);

      // A configured origin (127.0.0.1:port2 written in config) is fine; the same URL supplied at
      // run time is not.
      const ok = await egress.request(`http://127.0.0.1:${port2}/`, { method: "GET", headers: {} });
      await readAll(ok.body);
      const err = await denial(
        egress.request(`http://127.0.0.1:${port2}/`, { method: "GET", headers: {}, trust: "runtime" }),
      );
      assert.equal(err.data?.["rule"], "range:loopback");
      assert.equal(err.data?.["address"], "127.0.0.1", "the literal host's address may be named");
    } finally {
      await egress.close();
    }
  });

  test("a redirect from a configured origin to a private address is refused", async () => {
    const upstream = createServer((req, res) => {
      res.writeHead(307, { location: `http://10.0.0.5:${port}/mcp` });
      res.end(SECRET);
    });
    const up = await listenTcp(upstream, "127.0.0.1", 0);
    const egress = new Egress({ connectTimeout: 2000, rules: rules(), resolver });
    try {
      const err = await denial(
        egress.request(`http://127.0.0.1:${up}/mcp`, { method: "POST", headers: {}, body: "{}" }),
      );
      assert.equal(err.data?.["rule"], "range:private");
      assert.ok(!err.message.includes(SECRET));
    } finally {
      await egress.close();
      upstream.closeAllConnections();
      await new Promise<void>((r) => upstream.close(() => r()));
    }
  });
});

describe("caps: size and time", () => {
  test("a declared body over maxResponseBytes fails before reading it", async () => {
    const err = await denial(
      guardedRequest(
        `http://public.test:${port}/big`,
        { method: "GET", maxResponseBytes: 1024 * 1024 },
        { trust: "runtime", rules: rules(), resolver },
      ),
    );
    assert.equal(err.code, "EDGE_EGRESS_RESPONSE_TOO_LARGE");
  });

  test("a chunked body over the cap fails while it is read", async () => {
    const egress = new Egress({
      connectTimeout: 2000,
      rules: rules(),
      resolver,
      maxResponseBytes: 1024 * 1024,
    });
    try {
      const res = await egress.request(`http://public.test:${port}/big-chunked`, {
        method: "GET",
        headers: {},
      });
      await assert.rejects(
        readAll(res.body),
        (e: GatewayError) => e.code === "EDGE_EGRESS_RESPONSE_TOO_LARGE",
      );
      // Streams are not capped (long-lived SSE).
      const stream = await egress.request(`http://public.test:${port}/big-chunked`, {
        method: "GET",
        headers: {},
        stream: true,
      });
      assert.equal(Buffer.concat(await readAll(stream.body)).length, 2 * 1024 * 1024);
    } finally {
      await egress.close();
    }
  });

  test("a deadline over the whole exchange is EDGE_UPSTREAM_TIMEOUT", async () => {
    const err = await denial(
      guardedRequest(
        `http://public.test:${port}/hang`,
        { method: "GET", timeout: 200 },
        { trust: "runtime", rules: rules(), resolver },
      ),
    );
    assert.equal(err.code, "EDGE_UPSTREAM_TIMEOUT");
    pub.closeAllConnections();
  });
});

describe("https", () => {
  let dir: string | undefined;
  let tls: HttpsServer | undefined;
  let tlsPort = 0;
  let ca = "";

  before(() => {
    try {
      dir = mkdtempSync(join(tmpdir(), "egress-tls-"));
      execFileSync(
        "openssl",
        [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:prime256v1",
          "-nodes",
          "-keyout",
          join(dir, "key.pem"),
          "-out",
          join(dir, "cert.pem"),
          "-days",
          "1",
          "-subj",
          "/CN=secure.test",
          "-addext",
          "subjectAltName=DNS:secure.test",
        ],
        { stdio: "ignore" },
      );
    } catch {
      dir = undefined;
    }
  });

  after(async () => {
    if (tls) {
      tls.closeAllConnections();
      await new Promise<void>((r) => tls?.close(() => r()));
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("TLS verifies the name while connecting to the pinned address; https→http is refused", async (t) => {
    if (!dir) return t.skip("openssl is not available to make a test certificate");
    ca = readFileSync(join(dir, "cert.pem"), "utf8");
    tls = createHttpsServer({ key: readFileSync(join(dir, "key.pem")), cert: ca }, (req, res) => {
      if (req.url === "/downgrade") {
        res.writeHead(302, { location: `http://public.test:${port}/ok` });
        return void res.end(SECRET);
      }
      res.end("secure ok");
    });
    tlsPort = await listenTcp(tls, PUBLIC_IP, 0);
    dns.set("secure.test", { A: [[PUBLIC_IP]] });
    const ctx = { trust: "runtime" as const, rules: rules({ allowPorts: [port, tlsPort] }), resolver, ca };
    const res = await guardedRequest(`https://secure.test:${tlsPort}/`, { method: "GET" }, ctx);
    assert.equal(Buffer.concat(await readAll(res.body)).toString(), "secure ok");

    const err = await denial(
      guardedRequest(`https://secure.test:${tlsPort}/downgrade`, { method: "GET" }, ctx),
    );
    assert.equal(err.data?.["rule"], "redirect:downgrade");
    assert.equal(pubSeen.length, 0, "the http hop was never made");

    // The certificate names secure.test, not public.test: a name mismatch still fails.
    dns.set("public.test", { A: [[PUBLIC_IP]] });
    await assert.rejects(
      guardedRequest(`https://public.test:${tlsPort}/`, { method: "GET" }, ctx),
      (e: { code?: string }) => e.code === "ERR_TLS_CERT_ALTNAME_INVALID",
    );
  });
});
