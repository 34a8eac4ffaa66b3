/**
 * The bridge's login and tokens against a real authorization server (oidc-provider, test/connect/as.ts)
 * and mcp-edge as the resource server (`auth: [oauth]` trusting that issuer), tokens of 4 seconds:
 *
 * - headless login (`--no-browser`, the printed URL followed by an HTTP client playing the browser),
 *   DCR, PKCE S256, RFC 8707 resource; then one session across three token expiries with no
 *   re-initialize and no second login;
 * - two bridge processes sharing one login: each expiry costs one refresh at the AS (rotation on, so
 *   a refresh token spent twice would fail), both keep working;
 * - a refresh the AS refuses starts a new login while the stdio side stays up;
 * - the browser opened through an argv array (a recording `xdg-open` first on PATH), with a
 *   pre-registered `--client-id` and a fixed `--callback-port`;
 * - hostile `authorization_endpoint` values (shell metacharacters, file:, javascript:, plain http to
 *   another host) refused before anything runs.
 */
import assert from "node:assert/strict";
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { freePort, type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { spawnFixture, type SpawnedFixture } from "../helpers/spawn.ts";
import { followLogin, startTestAs, type TestAs } from "./as.ts";
import { alive, bridgeClient, type BridgeClient } from "./helpers.ts";

const cleanups: Array<() => Promise<unknown>> = [];
let as: TestAs;
let edge: InProcessEdge;
let upstream: SpawnedFixture;
let mcpUrl: string;
const PRE_PORT = await freePort();

before(async () => {
  const port = await freePort();
  const publicUrl = `http://127.0.0.1:${port}`;
  mcpUrl = `${publicUrl}/mcp`;
  as = await startTestAs({
    resource: mcpUrl,
    ttlSeconds: 4,
    preRegistered: { clientId: "desktop-pre", redirectUri: `http://127.0.0.1:${PRE_PORT}/callback` },
  });
  upstream = await spawnFixture("test/fixtures/conformance-server.ts");
  edge = await startEdge({
    listen: { host: "127.0.0.1", port },
    publicUrl,
    auth: { oauth: [{ issuer: as.issuer, jwksUri: as.jwksUri }], leeway: "0s" },
    servers: {
      demo: {
        route: "/mcp",
        upstream: { urls: [upstream.url] },
        auth: ["oauth"],
        scopes: { default: ["mcp:tools"] },
      },
    },
  });
});

after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await edge?.stop();
  await upstream?.stop();
  await as?.stop();
});

function textOf(result: unknown): string {
  return ((result as { content?: Array<{ text?: string }> }).content ?? []).map((c) => c.text ?? "").join("");
}

function tokenEnv(dir: string): Record<string, string> {
  return { MCP_EDGE_CONFIG_DIR: dir, MCP_EDGE_TOKEN_STORE: "file" };
}

/** Starts a bridge, logs in by following the URL it prints, and completes the MCP handshake. */
async function loggedIn(dir: string, extra: string[] = []): Promise<BridgeClient> {
  const b = await bridgeClient(mcpUrl, ["--no-browser", ...extra], { env: tokenEnv(dir), connect: false });
  cleanups.push(() => b.close());
  const connecting = b.client.connect(b.transport);
  const [, url] = await b.waitForStderr(/open this URL in a browser: (\S+)/);
  assert.equal(await followLogin(url as string), 200);
  await connecting;
  return b;
}

async function whoami(b: BridgeClient): Promise<{ sessionId: string }> {
  return JSON.parse(textOf(await b.client.callTool({ name: "whoami", arguments: {} })));
}

/** Calls whoami every 300 ms until `done()` (bounded); every call must succeed on session `sid`. */
async function callUntil(bs: BridgeClient[], sids: string[], done: () => boolean, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  let calls = 0;
  while (!done()) {
    assert.ok(Date.now() < deadline, `not done within ${timeoutMs} ms`);
    for (const [i, b] of bs.entries()) {
      assert.equal((await whoami(b)).sessionId, sids[i], "the same upstream session throughout");
      calls++;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  return calls;
}

describe("login and tokens against a real authorization server, through mcp-edge", () => {
  test("headless login (DCR, PKCE), then one session across three token expiries: no re-initialize", async () => {
    const dir = tempDir();
    const codesBefore = as.grants.authorization_code;
    const refreshesBefore = as.grants.refresh_token;
    const b = await loggedIn(dir);
    assert.equal(as.grants.authorization_code, codesBefore + 1);
    const { sessionId } = await whoami(b);
    assert.ok(sessionId);
    const started = Date.now();
    await callUntil([b], [sessionId], () => as.grants.refresh_token >= refreshesBefore + 3, 40_000);
    // Three 4-second tokens outlived; one login, no second handshake.
    assert.ok(Date.now() - started >= 8000);
    assert.equal(as.grants.authorization_code, codesBefore + 1, "no second login");
    assert.equal(as.grants.failedRefresh, 0);
    assert.doesNotMatch(b.stderr(), /re-initialized/);
    // The token file: 0600 in a 0700 directory.
    const store = path.join(dir, "connect");
    assert.equal(statSync(store).mode & 0o777, 0o700);
    const files = readdirSync(store).filter((f) => f.endsWith(".json"));
    assert.equal(files.length, 1);
    assert.equal(statSync(path.join(store, files[0]!)).mode & 0o777, 0o600);
    const stored = JSON.parse(readFileSync(path.join(store, files[0]!), "utf8"));
    assert.equal(stored.client.source, "dcr");
    assert.ok(stored.tokens.refresh_token);
  });

  test("two bridge processes on one login: one refresh per expiry at the AS, both keep going", async () => {
    const dir = tempDir();
    // The login's token starts its life here: the refresh windows count from it, not from the
    // first call (on a loaded machine the setup below can take a token lifetime).
    const loginAt = Date.now();
    const a = await loggedIn(dir, ["--debug"]);
    const codes = as.grants.authorization_code;
    // The second process finds the stored login: no browser, no new code.
    const b = await bridgeClient(mcpUrl, ["--no-browser", "--debug"], { env: tokenEnv(dir) });
    cleanups.push(() => b.close());
    assert.equal(as.grants.authorization_code, codes, "the second bridge reused the stored login");
    const sids = [(await whoami(a)).sessionId, (await whoami(b)).sessionId];
    const before = as.grants.refresh_token;
    const failedBefore = as.grants.failedRefresh;
    await callUntil([a, b], sids, () => as.grants.refresh_token >= before + 3, 40_000);
    const elapsed = Date.now() - loginAt;
    const refreshes = as.grants.refresh_token - before;
    // Tokens live 4 s and are refreshed a second before expiry: at most one refresh per 3 s window
    // (plus the one in progress), however many processes share the login.
    assert.ok(refreshes <= Math.ceil(elapsed / 3000) + 1, `${refreshes} refreshes in ${elapsed} ms`);
    assert.equal(as.grants.failedRefresh, failedBefore, "no refresh token was spent twice");
    assert.match(a.stderr() + b.stderr(), /another bridge process refreshed the token/);
  });

  test("a refresh the AS refuses starts a new login; the stdio side stays up", async () => {
    const dir = tempDir();
    const b = await loggedIn(dir);
    const { sessionId } = await whoami(b);
    const pid = b.pid as number;
    // The grant is gone at the AS side (as after a revocation): the stored refresh token is dead.
    const store = path.join(dir, "connect");
    const file = path.join(
      store,
      readdirSync(store).find((f) => f.endsWith(".json"))!,
    );
    const stored = JSON.parse(readFileSync(file, "utf8"));
    stored.tokens.refresh_token = "revoked-refresh-token";
    writeFileSync(file, JSON.stringify(stored), { mode: 0o600 });
    const before = as.grants.authorization_code;
    const before401 = b.stderr().length;
    // The next calls outlive the access token; the refresh fails; the bridge asks for a login.
    const call = (async () => {
      for (;;) {
        const who = await whoami(b);
        assert.equal(who.sessionId, sessionId);
        if (as.grants.authorization_code > before) return;
        await new Promise((r) => setTimeout(r, 300));
      }
    })();
    // The second login URL: the first one printed after the tokens were revoked.
    const [, url] = await b.waitForStderr(
      new RegExp(`[\\s\\S]{${before401}}[\\s\\S]*?open this URL in a browser: (\\S+)`),
      30_000,
    );
    assert.equal(await followLogin(url as string), 200);
    await call;
    assert.ok(alive(pid), "the bridge never exited");
    assert.match(b.stderr(), /token refresh failed/);
    assert.equal((await whoami(b)).sessionId, sessionId, "same session after the new login");
  });

  test("the browser is opened with an argv array; pre-registered --client-id on a fixed --callback-port", async () => {
    const dir = tempDir();
    const bin = tempDir();
    const log = path.join(bin, "xdg-open.log");
    const opener = path.join(bin, "xdg-open");
    // A recording opener: one line per argument it was given.
    writeFileSync(opener, `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a" >> "${log}"; done\n`);
    chmodSync(opener, 0o755);
    const b = await bridgeClient(
      mcpUrl,
      ["--client-id", "desktop-pre", "--callback-port", String(PRE_PORT)],
      {
        env: { ...tokenEnv(dir), PATH: `${bin}:${process.env.PATH}` },
        connect: false,
      },
    );
    cleanups.push(() => b.close());
    const connecting = b.client.connect(b.transport);
    const deadline = Date.now() + 20_000;
    while (!existsSync(log)) {
      assert.ok(Date.now() < deadline, `xdg-open never ran:\n${b.stderr()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const args = readFileSync(log, "utf8").trim().split("\n");
    assert.equal(args.length, 1, "exactly one argument: the URL");
    const url = new URL(args[0]!);
    assert.equal(url.origin, as.issuer);
    assert.equal(url.searchParams.get("client_id"), "desktop-pre");
    assert.equal(url.searchParams.get("redirect_uri"), `http://127.0.0.1:${PRE_PORT}/callback`);
    assert.equal(url.searchParams.get("code_challenge_method"), "S256");
    assert.equal(url.searchParams.get("resource"), mcpUrl);
    assert.equal(await followLogin(url.href), 200);
    await connecting;
    assert.ok((await whoami(b)).sessionId);
  });
});

describe("a hostile authorization server", () => {
  const hostile = [
    "https://evil.example/$(touch${IFS}MARKER)",
    "https://evil.example/`touch MARKER`",
    "https://evil.example/a;touch MARKER",
    "https://evil.example/a|touch MARKER",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "ms-settings:privacy",
    "http://evil.example/authorize",
  ];

  for (const endpoint of hostile) {
    test(`authorization_endpoint ${JSON.stringify(endpoint)} is refused and nothing runs`, async () => {
      const work = tempDir();
      const marker = path.join(work, "MARKER");
      const endpointHere = endpoint.replace("MARKER", marker);
      const bin = tempDir();
      const log = path.join(bin, "xdg-open.log");
      writeFileSync(path.join(bin, "xdg-open"), `#!/bin/sh\nprintf '%s\\n' "$@" >> "${log}"\n`);
      chmodSync(path.join(bin, "xdg-open"), 0o755);
      // A protected MCP server whose authorization server names the hostile endpoint.
      const srv = createServer((req, res) => {
        const origin = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
        const p = new URL(req.url ?? "/", origin).pathname;
        const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
          res.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify(body));
        };
        if (p === "/mcp")
          return json(
            401,
            { error: "unauthorized" },
            {
              "www-authenticate": `Bearer resource_metadata="${origin}/.well-known/oauth-protected-resource/mcp"`,
            },
          );
        if (p === "/.well-known/oauth-protected-resource/mcp")
          return json(200, { resource: `${origin}/mcp`, authorization_servers: [origin] });
        if (p === "/.well-known/oauth-authorization-server")
          return json(200, {
            issuer: origin,
            authorization_endpoint: endpointHere,
            token_endpoint: `${origin}/token`,
            registration_endpoint: `${origin}/register`,
            response_types_supported: ["code"],
            code_challenge_methods_supported: ["S256"],
          });
        if (p === "/register") return json(201, { client_id: "c1", redirect_uris: [] });
        json(404, {});
      });
      await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
      cleanups.push(
        () =>
          new Promise((r) => {
            srv.closeAllConnections();
            srv.close(r);
          }),
      );
      const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/mcp`;
      const b = await bridgeClient(url, [], {
        env: { ...tokenEnv(tempDir()), PATH: `${bin}:${process.env.PATH}` },
        connect: false,
      });
      cleanups.push(() => b.close());
      // The raw stdio transport (the SDK Client would close the bridge when initialize fails).
      const answer = new Promise<any>((resolve) => {
        b.transport.onmessage = resolve;
      });
      await b.transport.start();
      await b.transport.send({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "1" } },
      });
      const msg = await answer;
      assert.equal(msg.id, 1);
      assert.match(msg.error.message, /could not log in/);
      assert.match(b.stderr(), /refused/);
      assert.ok(!existsSync(log), "no opener was started");
      assert.ok(!existsSync(marker), "nothing was executed");
      assert.ok(alive(b.pid as number), "the bridge stays up for the client");
    });
  }
});
