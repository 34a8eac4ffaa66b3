/**
 * Credentials mcp-edge holds for an upstream: a real OAuth server
 * (oidc-provider, client_credentials grant, RFC 8707 resource → JWT `aud`) and a real MCP upstream
 * that verifies every token with jose against the provider's JWKS. Tokens refresh before expiry,
 * after an upstream 401 (once, then the request is retried), single-flight; static secret headers
 * reach the upstream; the client's own Authorization never does; a token endpoint that is down
 * gives a prompt 503 with Retry-After.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { freePort, type InProcessEdge, startEdge } from "../helpers/edge.ts";
import {
  type OidcServer,
  type ProtectedUpstream,
  startOidc,
  startProtectedUpstream,
} from "../helpers/oidc.ts";
import { waitFor } from "../helpers/wait.ts";

const RESOURCE = "https://upstream.example/mcp";
const SECRET_ENV = "MCP_EDGE_TEST_UPSTREAM_CLIENT_SECRET";
const STATIC_ENV = "MCP_EDGE_TEST_UPSTREAM_STATIC_KEY";
const CLIENT_TOKEN = "client-own-token-must-not-be-forwarded";

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  delete process.env[SECRET_ENV];
  delete process.env[STATIC_ENV];
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function text(r: unknown): string {
  return (r as { content: { text?: string }[] }).content[0]?.text ?? "";
}

interface Setup {
  idp: OidcServer;
  up: ProtectedUpstream;
  edge: InProcessEdge;
}

async function setup(ttlSeconds: number, refreshBefore: string, legacySse = false): Promise<Setup> {
  const idp = await startOidc({ ttlSeconds, resource: RESOURCE });
  cleanups.push(() => idp.stop());
  const up = await startProtectedUpstream({ oidc: idp, audience: RESOURCE, legacySse });
  cleanups.push(() => up.stop());
  process.env[SECRET_ENV] = idp.clientSecret;
  const edge = await startEdge({
    servers: {
      s: {
        route: "/mcp",
        upstream: legacySse ? { sse: up.url } : { urls: [up.url] },
        auth: ["none"],
        credentials: {
          oauth: {
            tokenUrl: idp.tokenUrl,
            clientId: idp.clientId,
            clientSecret: `\${${SECRET_ENV}}`,
            scope: "mcp:tools",
            resource: RESOURCE,
            refreshBefore,
          },
        },
      },
    },
  });
  cleanups.push(() => edge.stop());
  return { idp, up, edge };
}

async function connect(edge: InProcessEdge): Promise<Client> {
  const client = new Client({ name: "creds-test", version: "1.0.0" });
  // The client presents its own token: it authenticates the client to the edge (or nothing, with
  // auth: none) and must never reach the upstream.
  await client.connect(
    new StreamableHTTPClientTransport(new URL(edge.url()), {
      requestInit: { headers: { authorization: `Bearer ${CLIENT_TOKEN}` } },
    }),
  );
  cleanups.push(() => client.close());
  return client;
}

async function add(client: Client, a: number, b: number): Promise<number> {
  const r = await client.callTool({ name: "add", arguments: { a, b } });
  assert.notEqual(r.isError, true, `tool call failed: ${JSON.stringify(r)}`);
  return Number(text(r));
}

describe("upstream credentials: OAuth client credentials", () => {
  test("a session outlives several upstream tokens: refreshed ahead of expiry, never the client's", async () => {
    const { idp, up, edge } = await setup(3, "1s");
    const client = await connect(edge);
    const started = Date.now();
    let calls = 0;
    // Calls go on until the edge has renewed the token three times (several expiries crossed).
    while (idp.tokenRequests() < 4) {
      assert.ok(
        Date.now() - started < 12_000,
        `gave up waiting for 4 token requests (${idp.tokenRequests()})`,
      );
      assert.equal(await add(client, calls, 1), calls + 1);
      calls++;
      await sleep(200); // the client's pace: a call every 200 ms keeps the upstream busy
    }
    const elapsed = (Date.now() - started) / 1000;
    // 3 s tokens renewed 1 s early: one every ~2 s, plus the first. Several expiries were crossed.
    const requests = idp.tokenRequests();
    assert.ok(requests >= 3, `tokens renewed across expiries (${requests} token requests)`);
    assert.ok(requests <= Math.ceil(elapsed / 2) + 2, `bounded token requests: ${requests} in ${elapsed}s`);
    assert.equal(up.rejections(), 0, "no request reached the upstream with an expired token");
    const auths = up.authorizations();
    assert.ok(auths.length >= calls);
    for (const a of auths) {
      assert.ok(a?.startsWith("Bearer ey"), "every upstream request carried an edge-held JWT");
      assert.ok(!String(a).includes(CLIENT_TOKEN), "the client's token never reaches the upstream");
    }
    const distinct = new Set(auths);
    assert.ok(distinct.size >= 3, `the upstream saw ${distinct.size} successive tokens`);
    for (const t of distinct) assert.ok(idp.issued().includes(t!.slice(7)), "each token came from the IdP");
    // Tokens and the client secret never reach a log line.
    const logs = edge.logs().join("\n");
    assert.ok(!logs.includes(idp.clientSecret));
    for (const t of idp.issued()) assert.ok(!logs.includes(t));
  });

  test("a token the upstream rejects early is refreshed once and the call retried; the client sees a result", async () => {
    const { idp, up, edge } = await setup(60, "5s");
    const client = await connect(edge);
    assert.equal(await add(client, 1, 2), 3);
    const before = idp.tokenRequests();
    const rejectedBefore = up.rejections();
    up.revoke(up.lastToken()!);
    assert.equal(await add(client, 20, 22), 42);
    assert.equal(idp.tokenRequests() - before, 1, "exactly one extra token request");
    assert.equal(up.rejections() - rejectedBefore, 1, "one 401, then the retry succeeded");
    // The retried tools/call ran once: the 401 answer was not processed by the upstream.
    assert.equal(await add(client, 1, 1), 2);
    assert.equal(idp.tokenRequests() - before, 1);
  });

  test("a rotated IdP signing key: the upstream's 401 makes the edge fetch a token under the new key", async () => {
    const { idp, up, edge } = await setup(60, "5s");
    const client = await connect(edge);
    assert.equal(await add(client, 2, 2), 4);
    const before = idp.tokenRequests();
    await idp.rotateKeys();
    up.reloadKeys();
    assert.equal(await add(client, 3, 3), 6);
    assert.equal(idp.tokenRequests() - before, 1);
    assert.equal(up.rejections(), 1, "the old key's token was refused once");
  });

  test("50 concurrent calls when the token is stale: one token request", async () => {
    const { idp, up, edge } = await setup(2, "1s");
    const client = await connect(edge);
    assert.equal(await add(client, 0, 0), 0);
    // Under test: idle past two lifetimes, the background refresh skips an idle upstream, so the
    // token lapses.
    await sleep(3500);
    const before = idp.tokenRequests();
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => add(client, i, 1)));
    assert.deepEqual(
      results,
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    assert.equal(idp.tokenRequests() - before, 1, "single-flight: one token request for 50 calls");
    assert.equal(up.rejections(), 0);
  });

  test("50 concurrent calls all rejected with the same revoked token: one refresh, every call retried", async () => {
    const { idp, up, edge } = await setup(60, "5s");
    const client = await connect(edge);
    assert.equal(await add(client, 0, 0), 0);
    up.revoke(up.lastToken()!);
    const before = idp.tokenRequests();
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => add(client, i, 2)));
    assert.deepEqual(
      results,
      Array.from({ length: 50 }, (_, i) => i + 2),
    );
    assert.equal(idp.tokenRequests() - before, 1);
  });

  test("token endpoint down at the first call: 503 EDGE_UPSTREAM_UNAVAILABLE with Retry-After, then recovery", async () => {
    const idp = await startOidc({ ttlSeconds: 60, resource: RESOURCE });
    cleanups.push(() => idp.stop());
    const up = await startProtectedUpstream({ oidc: idp, audience: RESOURCE });
    cleanups.push(() => up.stop());
    process.env[SECRET_ENV] = idp.clientSecret;
    const deadPort = await freePort();
    const oauth = {
      clientId: idp.clientId,
      clientSecret: `\${${SECRET_ENV}}`,
      resource: RESOURCE,
    };
    const edge = await startEdge({
      servers: {
        refused: {
          route: "/refused",
          upstream: { urls: [up.url] },
          auth: ["none"],
          credentials: { oauth: { ...oauth, tokenUrl: `http://127.0.0.1:${deadPort}/token` } },
        },
        failing: {
          route: "/failing",
          upstream: { urls: [up.url] },
          auth: ["none"],
          credentials: { oauth: { ...oauth, tokenUrl: idp.tokenUrl } },
        },
      },
    });
    cleanups.push(() => edge.stop());
    const initialize = (url: string) =>
      fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "initialize",
          params: {
            protocolVersion: "2025-06-18",
            capabilities: {},
            clientInfo: { name: "raw", version: "1" },
          },
        }),
      });

    for (const name of ["refused", "failing"]) {
      if (name === "failing") idp.setTokenEndpoint("error");
      const t0 = Date.now();
      const res = await initialize(edge.url(name));
      assert.ok(Date.now() - t0 < 5000, "answered promptly, not a hang");
      assert.equal(res.status, 503, name);
      const retryAfter = Number(res.headers.get("retry-after"));
      assert.ok(retryAfter >= 1, `Retry-After: ${res.headers.get("retry-after")}`);
      const body = (await res.json()) as { id: unknown; error: { data: { code: string }; message: string } };
      assert.equal(body.error.data.code, "EDGE_UPSTREAM_UNAVAILABLE");
      assert.equal(body.id, 1);
      assert.ok(!body.error.message.includes(idp.clientSecret));
      // While the edge waits out its backoff, requests fail fast without a new token request.
      const count = idp.tokenRequests();
      const again = await initialize(edge.url(name));
      assert.equal(again.status, 503);
      await again.body?.cancel();
      assert.equal(idp.tokenRequests(), count);
    }
    assert.equal(up.seen().length, 0, "nothing reached the upstream without credentials");

    idp.setTokenEndpoint("up");
    // Once the edge's backoff (1 s) is over, its next token request succeeds.
    const ok = await waitFor(
      async () => {
        const r = await initialize(edge.url("failing"));
        if (r.status === 200) return r;
        await r.body?.cancel();
        return undefined;
      },
      { what: "a session once the token endpoint is back", timeout: 5000, interval: 100 },
    );
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    assert.equal(up.rejections(), 0);
    assert.ok(edge.logs().some((l) => l.includes("upstream token request failed")));
  });
});

describe("upstream credentials: legacy HTTP+SSE upstream", () => {
  test("the GET and the POSTs carry the token; a 401 on connect or on a POST refreshes once", async () => {
    const { idp, up, edge } = await setup(60, "5s", true);
    const first = await connect(edge);
    assert.equal(await add(first, 1, 2), 3);
    const t1 = up.lastToken()!;
    assert.ok(up.seen().some((s) => s.method === "GET" && s.authorization === `Bearer ${t1}`));
    assert.ok(up.seen().some((s) => s.method === "POST" && s.authorization === `Bearer ${t1}`));

    // A 401 on connect: one refresh, one reconnect, and the new session works.
    up.revoke(t1);
    const before = idp.tokenRequests();
    const second = await connect(edge);
    assert.equal(await add(second, 2, 3), 5);
    assert.equal(idp.tokenRequests() - before, 1);
    assert.equal(up.rejections(), 1);

    // A 401 on a POST of an open session: the message is sent again with the renewed token. (Refreshes
    // caused by 401s are at most one a second, so an upstream that refuses every token cannot turn
    // each request into a token request.)
    await sleep(1100); // under test: a second 401-caused refresh is allowed a second after the first
    up.revoke(up.lastToken()!);
    assert.equal(await add(first, 4, 5), 9);
    assert.equal(idp.tokenRequests() - before, 2);
    assert.equal(up.rejections(), 2);
  });
});

describe("upstream credentials: static secret headers", () => {
  test("secret headers from the environment reach the upstream on every request", async () => {
    const key = `static-${Math.random().toString(36).slice(2)}`;
    process.env[STATIC_ENV] = key;
    const up = await startProtectedUpstream({ requiredHeaders: { "x-upstream-key": key } });
    cleanups.push(() => up.stop());
    const edge = await startEdge({
      servers: {
        s: {
          route: "/mcp",
          upstream: { urls: [up.url] },
          auth: ["none"],
          credentials: { headers: { "X-Upstream-Key": `\${${STATIC_ENV}}` } },
        },
      },
    });
    cleanups.push(() => edge.stop());
    const client = await connect(edge);
    assert.equal(await add(client, 5, 6), 11);
    const echoed = JSON.parse(text(await client.callTool({ name: "echo_headers", arguments: {} }))) as Record<
      string,
      string
    >;
    assert.equal(echoed["x-upstream-key"], key);
    assert.equal(echoed.authorization, undefined, "the client's token is not forwarded");
    assert.equal(up.rejections(), 0);
    assert.ok(up.seen().length >= 3);
    for (const s of up.seen()) assert.equal(s.headers["x-upstream-key"], key);
    assert.ok(!edge.logs().join("\n").includes(key), "the secret never reaches a log line");
  });
});
