/**
 * The edge's authorization server with federated login, end to end, with real parts only:
 *
 * - the IdP is oidc-provider on loopback (test/helpers/third-party.ts: a login page, ID tokens with
 *   an `org_id` claim, rotating refresh tokens, accounts an administrator can disable);
 * - the MCP server is the conformance fixture (a child process) behind an in-process edge whose
 *   authorization server signs people in at that IdP only (`login.idp`, no API-key sign-in);
 * - the person's browser is Chromium (Debian's package, driven by playwright-core): login at the
 *   IdP, the edge's consent page, the redirect back. Screenshots of the IdP's login page and of the
 *   edge's consent page go to test-artifacts/as-federation/ (git-ignored);
 * - the MCP clients are the official SDK v1 client, running its own OAuth flow (`auth()` with an
 *   `OAuthClientProvider`: discovery, DCR, PKCE, token, refresh), and `mcp-remote` 0.15.1 as a
 *   child process whose browser step (`BROWSER`, through the `open` package) hands the URL to
 *   this test, which opens it in Chromium.
 *
 * A user disabled at the IdP stops refreshing at the edge: the next refresh is refused
 * (`invalid_grant`), the grant is revoked and its access token refused at once.
 *
 * Connections chained at OAuth login: a second server acts on a third-party API (another
 * oidc-provider) with each user's own token from the vault; after consent the browser goes through
 * that provider and back, and the first call already acts on the account — or, when the provider
 * fails, the login still completes and the call asks to connect (-32042).
 */
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { auth } from "@modelcontextprotocol/sdk/client/auth.js";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { decodeJwt } from "jose";
import type { Browser } from "playwright-core";
import { chromiumMissing, launchChromiumBrowser } from "../helpers/chromium.ts";
import { freePort, type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { type OAuthClient, startOAuthClient } from "../helpers/oauth-client.ts";
import { NODE_BIN, REPO_ROOT, type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { type ApiServer, type Provider, startApiServer, startProvider } from "../helpers/third-party.ts";
import { waitFor } from "../helpers/wait.ts";

const missing = chromiumMissing("federated login in Chromium");
const ARTIFACTS = path.join(REPO_ROOT, "test-artifacts", "as-federation");
const MCP_REMOTE = path.join(REPO_ROOT, "node_modules", "mcp-remote", "dist", "proxy.js");
const SECRET_ENV = "MCP_EDGE_TEST_FED_IDP_SECRET";
const KEY_ENV = "MCP_EDGE_TEST_FED_VAULT_KEY";
const TP_SECRET_ENV = "MCP_EDGE_TEST_FED_TP_SECRET";

let idp: Provider;
let upstream: SpawnedFixture;
let edge: InProcessEdge;
let base: string;
let mcpUrl: string;
let browser: Browser;
let tp: Provider;
let api: ApiServer;
const scratch: string[] = [];
const stops: (() => Promise<unknown>)[] = [];

before(async () => {
  if (missing) return;
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  mcpUrl = `${base}/mcp`;
  idp = await startProvider({
    redirectUris: [`${base}/as/login/idp/callback`],
    ttlSeconds: 300,
    accountClaims: {
      alice: { org_id: "acme", email: "alice@acme.test" },
      bob: { org_id: "acme", email: "bob@acme.test" },
    },
  });
  upstream = await spawnFixture("test/fixtures/conformance-server.ts");
  // A third-party API the second server acts on with each user's own token (the token vault).
  tp = await startProvider({ redirectUris: [`${base}/connect/tp/callback`], ttlSeconds: 300 });
  api = await startApiServer(tp.issuer);
  process.env[TP_SECRET_ENV] = tp.clientSecret;
  process.env[SECRET_ENV] = idp.clientSecret;
  process.env[KEY_ENV] = Buffer.alloc(32, 9).toString("base64");
  const dir = tempDir("mcp-edge-as-fed-");
  scratch.push(dir);
  edge = await startEdge(
    {
      listen: { host: "127.0.0.1", port },
      publicUrl: base,
      tenancy: { claim: "org_id", required: true },
      vault: { key: `\${${KEY_ENV}}` },
      // The third party is on loopback: its discovered endpoints are run-time URLs.
      egress: { allowPrivateNetworks: true, allowPorts: [Number(new URL(tp.issuer).port)] },
      connections: {
        tp: {
          displayName: "Example Provider",
          issuer: tp.issuer,
          clientId: tp.clientId,
          clientSecret: `\${${TP_SECRET_ENV}}`,
          scopes: ["openid", "offline_access", "repo"],
        },
      },
      auth: {
        authorizationServer: {
          enabled: true,
          login: {
            apiKey: false,
            idp: {
              issuer: idp.issuer,
              clientId: idp.clientId,
              clientSecret: `\${${SECRET_ENV}}`,
              scopes: ["openid", "offline_access"],
              tenantClaim: "org_id",
              displayName: "Example IdP",
            },
          },
        },
      },
      servers: {
        tools: {
          route: "/mcp",
          upstream: { urls: [upstream.url] },
          auth: ["oauth"],
          scopes: { default: ["mcp:tools"] },
        },
        api: {
          route: "/api/mcp",
          upstream: { urls: [api.url] },
          auth: ["oauth"],
          scopes: { default: ["mcp:tools"] },
          credentials: { connection: "tp" },
        },
      },
    },
    dir,
  );
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await launchChromiumBrowser();
});

after(async () => {
  for (const stop of stops) await stop().catch(() => undefined);
  await browser?.close();
  await edge?.stop();
  await upstream?.stop();
  await api?.stop();
  await tp?.stop();
  await idp?.stop();
  for (const d of scratch) rmSync(d, { recursive: true, force: true });
  delete process.env[SECRET_ENV];
  delete process.env[KEY_ENV];
  delete process.env[TP_SECRET_ENV];
});

/**
 * A person in Chromium (a browser profile of their own): opens the authorization URL, signs in at
 * the IdP as `user`, allows on the edge's consent page, optionally signs in at the third-party
 * provider the edge chains to (`connectAs`), and is redirected back to the client. `shots` names
 * the screenshots.
 */
async function personLogsIn(
  url: string,
  user: string,
  options: { shots?: string; connectAs?: string } = {},
): Promise<{ consent: string; visited: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  const visited: string[] = [];
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) visited.push(f.url());
  });
  const shot = (name: string) =>
    options.shots
      ? page.screenshot({ path: path.join(ARTIFACTS, `${options.shots}-${name}.png`), fullPage: true })
      : undefined;
  const signIn = async (who: string, at: string, next: (u: URL) => boolean) => {
    await page.waitForSelector('input[name="login"]', { timeout: 15_000 });
    assert.equal(new URL(page.url()).origin, at);
    await page.fill('input[name="login"]', who);
    await Promise.all([page.waitForURL(next, { timeout: 15_000 }), page.click("button")]);
  };
  const leaves = (u: URL) => u.origin !== base && u.origin !== idp.issuer && u.origin !== tp.issuer;
  try {
    await page.goto(url);
    await page.waitForSelector('input[name="login"]', { timeout: 15_000 });
    await shot("idp-login");
    await signIn(user, idp.issuer, (u) => u.origin === base);
    // Back at the edge: its consent page.
    await page.waitForSelector('button[name="decision"][value="allow"]', { timeout: 15_000 });
    const consent = await page.content();
    await shot("consent");
    const chained = options.connectAs;
    await Promise.all([
      page.waitForURL((u) => (chained ? u.origin === tp.issuer : leaves(u)), { timeout: 15_000 }),
      page.click('button[name="decision"][value="allow"]'),
    ]);
    if (chained) {
      await shot("provider-login");
      await signIn(chained, tp.issuer, leaves);
    }
    return { consent, visited };
  } finally {
    await context.close();
  }
}

/** The identity JWT the upstream received (X-MCP-Edge-Identity), decoded. */
async function identityOf(client: Client): Promise<Record<string, unknown>> {
  const r = await client.callTool({ name: "echo_headers", arguments: {} });
  const headers = JSON.parse((r.content as { text: string }[])[0]?.text ?? "{}") as Record<string, string>;
  assert.equal(headers.authorization, undefined, "the client's token is never forwarded");
  return decodeJwt(headers["x-mcp-edge-identity"] as string) as Record<string, unknown>;
}

describe("federated login through the edge's authorization server", { skip: missing }, () => {
  let alice: OAuthClient;
  let aliceClient: Client;

  test("Chromium: the SDK client's own OAuth flow — IdP login, the edge's consent page, the redirect back — then tool calls as the IdP's user", async () => {
    let consent = "";
    alice = await startOAuthClient({
      clientName: "Federation E2E client",
      open: async (url) => {
        consent = (await personLogsIn(url.toString(), "alice", { shots: "sdk" })).consent;
      },
    });
    stops.push(() => alice.stop());
    assert.equal(await auth(alice, { serverUrl: mcpUrl }), "REDIRECT");
    const code = await alice.code();
    assert.equal(alice.responses().at(-1)?.get("iss"), base, "RFC 9207 iss on the edge's response");
    assert.equal(await auth(alice, { serverUrl: mcpUrl, authorizationCode: code }), "AUTHORIZED");
    assert.match(consent, /Federation E2E client/, "the consent page names the client");
    assert.match(consent, /unverified/i, "a DCR client is unverified");
    assert.match(consent, /alice@acme\.test/, "the consent page names who signed in at the IdP");
    assert.match(consent, /127\.0\.0\.1/, "the consent page shows the redirect host");
    assert.ok(existsSync(path.join(ARTIFACTS, "sdk-idp-login.png")));
    assert.ok(existsSync(path.join(ARTIFACTS, "sdk-consent.png")));

    aliceClient = new Client({ name: "fed-e2e", version: "1.0.0" });
    stops.unshift(() => aliceClient.close());
    await aliceClient.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: alice }));
    const id = await identityOf(aliceClient);
    assert.equal(id.sub, "idp|alice");
    assert.equal(id.tenant ?? id.org_id, "acme");
  });

  test("refresh at the edge re-checks the user at the IdP (one IdP refresh per edge refresh)", async () => {
    const before = idp.refreshes();
    const old = alice.tokens()?.access_token;
    assert.equal(await auth(alice, { serverUrl: mcpUrl }), "AUTHORIZED");
    assert.notEqual(alice.tokens()?.access_token, old);
    assert.equal(idp.refreshes(), before + 1);
    const id = await identityOf(aliceClient);
    assert.equal(id.sub, "idp|alice");
  });

  test("mcp-remote logs in through the edge's AS (its browser step handed to Chromium) and calls tools", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "mcp-remote-fed-"));
    scratch.push(dir);
    const urls = path.join(dir, "opened.txt");
    const opener = path.join(dir, "browser.sh");
    writeFileSync(opener, `#!/bin/sh\nprintf '%s\\n' "$1" >> '${urls}'\n`);
    chmodSync(opener, 0o755);
    writeFileSync(urls, "");
    const transport = new StdioClientTransport({
      command: NODE_BIN,
      args: [MCP_REMOTE, mcpUrl, "--allow-http"],
      env: {
        ...(process.env as Record<string, string>),
        BROWSER: opener,
        MCP_REMOTE_CONFIG_DIR: path.join(dir, "config"),
        HOME: dir,
        DISPLAY: "",
      },
      stderr: "pipe",
    });
    let stderr = "";
    transport.stderr?.on("data", (c: Buffer) => {
      stderr += String(c);
    });
    const client = new Client({ name: "mcp-remote-e2e", version: "1.0.0" });
    const connecting = client.connect(transport);
    const url = await waitFor(
      () =>
        readFileSync(urls, "utf8")
          .split("\n")
          .find((l) => l.includes("response_type=code")),
      { timeout: 30_000, what: "mcp-remote to open the browser" },
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}; mcp-remote stderr: ${stderr.slice(-3000)}`);
    });
    await personLogsIn(url, "bob", { shots: "mcp-remote" });
    await connecting;
    try {
      const tools = await client.listTools();
      assert.ok(tools.tools.some((t) => t.name === "echo_headers"));
      const id = await identityOf(client);
      assert.equal(id.sub, "idp|bob");
    } finally {
      await client.close();
    }
  });

  test("connections chained at OAuth login: after consent the person connects the server's third-party account, then returns to the client; the first call acts on that account", async () => {
    let visited: string[] = [];
    const oc = await startOAuthClient({
      clientName: "Chained connect client",
      open: async (url) => {
        visited = (await personLogsIn(url.toString(), "alice", { shots: "chained", connectAs: "alice" }))
          .visited;
      },
    });
    const apiUrl = `${base}/api/mcp`;
    try {
      assert.equal(await auth(oc, { serverUrl: apiUrl }), "REDIRECT");
      const code = await oc.code();
      assert.equal(await auth(oc, { serverUrl: apiUrl, authorizationCode: code }), "AUTHORIZED");
      const order = visited.map((u) => new URL(u).origin);
      const consentAt = visited.findIndex((u) => u.includes("/as/interaction/"));
      const providerAt = order.indexOf(tp.issuer);
      assert.ok(
        consentAt >= 0 && providerAt > consentAt,
        `the provider comes after consent: ${visited.join(" → ")}`,
      );
      const client = new Client({ name: "chained-e2e", version: "1.0.0" });
      await client.connect(new StreamableHTTPClientTransport(new URL(apiUrl), { authProvider: oc }));
      try {
        const r = await client.callTool({ name: "whoami", arguments: {} });
        assert.notEqual(r.isError, true, JSON.stringify(r.content));
        const me = JSON.parse((r.content as { text: string }[])[0]?.text ?? "{}") as { login?: string };
        assert.equal(me.login, "alice", "the first call already acts on alice's third-party account");
      } finally {
        await client.close();
      }
    } finally {
      await oc.stop();
    }
  });

  test("a chained connection that fails at the provider does not block the login: the client gets its code, and the call asks to connect (-32042)", async () => {
    const oc = await startOAuthClient({
      clientName: "Chained connect client",
      open: async (url) => {
        tp.setTokenEndpoint("down");
        try {
          await personLogsIn(url.toString(), "bob", { connectAs: "bob" });
        } finally {
          tp.setTokenEndpoint("up");
        }
      },
    });
    const apiUrl = `${base}/api/mcp`;
    try {
      assert.equal(await auth(oc, { serverUrl: apiUrl }), "REDIRECT");
      assert.equal(await auth(oc, { serverUrl: apiUrl, authorizationCode: await oc.code() }), "AUTHORIZED");
      const client = new Client({ name: "chained-failed-e2e", version: "1.0.0" });
      await client.connect(new StreamableHTTPClientTransport(new URL(apiUrl), { authProvider: oc }));
      try {
        const err = await client.callTool({ name: "whoami", arguments: {} }).then(
          () => assert.fail("bob has not connected"),
          (e: unknown) => e as { code: number },
        );
        assert.equal(err.code, -32042);
      } finally {
        await client.close();
      }
    } finally {
      await oc.stop();
    }
  });

  test("a user whose IdP account names no tenant is refused on the edge's own page (403 EDGE_LOGIN_TENANT_REFUSED), nothing issued", async () => {
    let page = { status: 0, text: "", code: "" };
    const oc = await startOAuthClient({
      open: async (url) => {
        const context = await browser.newContext();
        const p = await context.newPage();
        try {
          await p.goto(url.toString());
          await p.fill('input[name="login"]', "carol");
          const [res] = await Promise.all([
            p.waitForResponse((r) => r.url().startsWith(`${base}/as/login/idp/callback`), {
              timeout: 15_000,
            }),
            p.click("button"),
          ]);
          page = {
            status: res.status(),
            text: await p.content(),
            code: res.headers()["x-mcp-edge-error"] ?? "",
          };
        } finally {
          await context.close();
        }
      },
    });
    try {
      assert.equal(await auth(oc, { serverUrl: mcpUrl }), "REDIRECT");
      assert.equal(page.status, 403);
      assert.equal(page.code, "EDGE_LOGIN_TENANT_REFUSED");
      assert.match(page.text, /cannot sign in here/);
      assert.equal(oc.responses().length, 0, "the client got nothing back");
    } finally {
      await oc.stop();
    }
  });

  test("a user disabled at the IdP stops refreshing: invalid_grant, the grant revoked, its access token refused at once", async () => {
    const token = alice.tokens()?.access_token as string;
    const refresh = alice.tokens()?.refresh_token as string;
    idp.disableUser("alice");
    const meta = (await (await fetch(`${base}/.well-known/oauth-authorization-server`)).json()) as {
      token_endpoint: string;
    };
    const res = await fetch(meta.token_endpoint, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: refresh,
        client_id: (alice.clientInformation() as { client_id: string }).client_id,
      }),
    });
    const body = (await res.json()) as { error?: string };
    assert.equal(res.status, 400);
    assert.equal(body.error, "invalid_grant");
    const call = await fetch(mcpUrl, {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    await call.arrayBuffer();
    assert.equal(call.status, 401, "the revoked grant's access token is refused although unexpired");
    await aliceClient.close();
  });
});
