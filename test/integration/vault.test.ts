/**
 * The token vault end to end, with real parts: a third-party OAuth provider (oidc-provider with a
 * login page, single-use rotating refresh tokens, 3 s access tokens and a protected API), an MCP
 * server (SDK v1) that calls that API with the token it receives, an edge in front of it with
 * `credentials.connection`, SDK clients authenticated by API keys, and a person's browser driven
 * over HTTP through the edge's connect pages and the provider's login.
 *
 * Two users each see their own data and neither's token reaches the other's calls, the logs, the
 * audit or the store file in clear; a first call answers -32042 with the connect URL and the same
 * call succeeds in the same session after connecting; calls run across several token lifetimes;
 * 50 concurrent calls at expiry cause one refresh; an upstream 401 refreshes once and retries; a
 * grant revoked at the provider makes the next call ask to connect again; a provider that is down
 * gives 503 with Retry-After and keeps the connection; the connect pages refuse bad links, foreign
 * browsers and cross-site posts.
 */
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";
import { Browser, formAction, formValue } from "../helpers/browser.ts";
import { freePort, type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { type ApiServer, type Provider, startApiServer, startProvider } from "../helpers/third-party.ts";
import { waitFor } from "../helpers/wait.ts";

const ADMIN_TOKEN = "vault-test-admin-token-0123456789";
const SECRET_ENV = "MCP_EDGE_TEST_TP_SECRET";
const KEY_ENV = "MCP_EDGE_TEST_VAULT_KEY";
const VAULT_KEY = Buffer.alloc(32, 7).toString("base64");

let provider: Provider;
let api: ApiServer;
let edge: InProcessEdge;
let base: string;
let dir: string;
const keys: Record<string, string> = {};
const clients: Client[] = [];

before(async () => {
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  provider = await startProvider({ redirectUris: [`${base}/connect/tp/callback`], ttlSeconds: 3 });
  api = await startApiServer(provider.issuer);
  process.env[SECRET_ENV] = provider.clientSecret;
  process.env[KEY_ENV] = VAULT_KEY;
  dir = tempDir("mcp-edge-vault-");
  edge = await startEdge(
    {
      listen: { host: "127.0.0.1", port },
      publicUrl: base,
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      // The provider is on loopback: its discovered endpoints are run-time URLs.
      egress: { allowPrivateNetworks: true, allowPorts: [Number(new URL(provider.issuer).port)] },
      connections: {
        tp: {
          displayName: "Example Provider",
          issuer: provider.issuer,
          clientId: provider.clientId,
          clientSecret: `\${${SECRET_ENV}}`,
          scopes: ["openid", "offline_access", "repo"],
          refreshBefore: "1s",
        },
      },
      vault: { key: `\${${KEY_ENV}}` },
      servers: {
        api: {
          route: "/mcp",
          upstream: { urls: [api.url] },
          auth: ["apiKey"],
          credentials: { connection: "tp" },
        },
      },
    },
    dir,
  );
  for (const user of ["alice", "bob", "carol"]) {
    const res = await admin("POST", "/api/keys", { name: user, server: "api", tenant: "acme" });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    keys[user] = res.json.key as string;
  }
});

after(async () => {
  for (const c of clients) await c.close().catch(() => {});
  await edge?.stop();
  await api?.stop();
  await provider?.stop();
  delete process.env[SECRET_ENV];
  delete process.env[KEY_ENV];
});

async function admin(method: string, p: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${edge.gw.adminUrl}${p}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, json: await res.json() };
}

async function client(user: string): Promise<{ c: Client; t: StreamableHTTPClientTransport }> {
  const c = new Client({ name: `vault-${user}`, version: "1.0.0" });
  const t = new StreamableHTTPClientTransport(new URL(`${base}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${keys[user]}` } },
  });
  await c.connect(t);
  clients.push(c);
  return { c, t };
}

async function whoami(c: Client): Promise<{ login: string; name: string }> {
  const r = (await c.callTool({ name: "whoami", arguments: {} })) as {
    content: { text: string }[];
    isError?: boolean;
  };
  assert.notEqual(r.isError, true, r.content[0]?.text);
  return JSON.parse(r.content[0]?.text ?? "{}") as { login: string; name: string };
}

/** The -32042 error a call gets before its user connected. */
async function elicitation(c: Client): Promise<{ url: string; message: string; data: any }> {
  const err = await c.callTool({ name: "whoami", arguments: {} }).then(
    () => assert.fail("the call should need a connection"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof McpError, String(err));
  assert.equal(err.code, -32042);
  const data = err.data as {
    elicitations: { mode: string; url: string; elicitationId: string; message: string }[];
  };
  const [e] = data.elicitations;
  assert.equal(e?.mode, "url");
  assert.ok(e?.elicitationId);
  return { url: e?.url as string, message: err.message, data };
}

/** A person opens the connect link, confirms, signs in at the provider as `login`. */
async function connectInBrowser(url: string, login: string, browser = new Browser()): Promise<Browser> {
  const confirm = await browser.get(url);
  assert.equal(confirm.status, 200, confirm.text);
  assert.match(confirm.text, /Connect your <b>Example Provider<\/b> account/);
  assert.equal(confirm.headers.get("x-frame-options"), "DENY");
  assert.match(confirm.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/);
  const ticket = formValue(confirm.text, "ticket");
  assert.ok(ticket);
  const loginPage = await browser.post(formAction(confirm) as string, { ticket }, confirm.url);
  assert.equal(loginPage.status, 200, loginPage.text);
  assert.match(loginPage.text, /Sign in to Example Provider/);
  const done = await browser.post(formAction(loginPage) as string, { login }, loginPage.url);
  assert.equal(done.status, 200, done.text);
  assert.match(done.text, /account is connected/);
  assert.ok(done.url.startsWith(`${base}/connect/tp/callback?`));
  return browser;
}

describe("token vault", () => {
  let alice: Client;
  let aliceSession: string | undefined;
  let bob: Client;

  test("a first call asks the user to connect (-32042 with the connect URL); after connecting, the same call succeeds in the same session", async () => {
    const a = await client("alice");
    alice = a.c;
    aliceSession = a.t.sessionId;
    assert.ok(aliceSession);
    // initialize and lists work before connecting.
    const tools = await alice.listTools();
    assert.deepEqual(
      tools.tools.map((t) => t.name),
      ["whoami"],
    );
    const e = await elicitation(alice);
    assert.ok(e.url.startsWith(`${base}/connect/tp?ticket=`), e.url);
    // Older clients read the URL from the message or data.url.
    assert.ok(e.message.includes(e.url));
    // On the wire: a JSON-RPC error in a 200 answer, the URL also in data.url for older clients
    // (the SDK keeps only data.elicitations).
    const raw = await fetch(`${base}/mcp`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${keys.alice}`,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-session-id": aliceSession,
        "mcp-protocol-version": "2025-11-25",
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 41,
        method: "tools/call",
        params: { name: "whoami", arguments: {} },
      }),
    });
    assert.equal(raw.status, 200);
    const wire = (await raw.json()) as { id: number; error: { code: number; data: Record<string, unknown> } };
    assert.equal(wire.id, 41);
    assert.equal(wire.error.code, -32042);
    assert.equal(wire.error.data.code, "EDGE_CONNECTION_REQUIRED");
    assert.equal(wire.error.data.connection, "tp");
    assert.match(String(wire.error.data.url), /\/connect\/tp\?ticket=/);
    await connectInBrowser(e.url, "alice");
    const me = await whoami(alice);
    assert.equal(me.login, "alice");
    assert.equal(a.t.sessionId, aliceSession, "no new MCP session");
  });

  test("two users each see their own data; neither's token reaches the other's calls", async () => {
    bob = (await client("bob")).c;
    const e = await elicitation(bob);
    await connectInBrowser(e.url, "bob");
    const seenBefore = api.authorizations().length;
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => whoami(i % 2 === 0 ? alice : bob)),
    );
    answers.forEach((me, i) => assert.equal(me.login, i % 2 === 0 ? "alice" : "bob"));
    // Every token the upstream got belongs to one of the two users, as the provider issued it, and
    // never the client's own API key.
    const byToken = new Map(provider.issued().map((t) => [t.token, t.account]));
    const seen = api.authorizations().slice(seenBefore).filter(Boolean);
    assert.ok(seen.length >= 20);
    for (const auth of seen) {
      assert.ok(!auth.includes("mcpe_"), "a client key reached the upstream");
      const account = byToken.get(auth.replace(/^Bearer /, ""));
      assert.ok(
        account === "alice" || account === "bob",
        `unknown token at the upstream: ${auth.slice(0, 16)}`,
      );
    }
  });

  test("calls run across several access-token lifetimes: refreshed before expiry, no failure, no refresh token spent twice", async () => {
    const before = provider.refreshes();
    const until = Date.now() + 10_500; // > 3 lifetimes of 3 s
    let calls = 0;
    while (Date.now() < until) {
      assert.equal((await whoami(alice)).login, "alice");
      calls++;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(calls > 20);
    assert.ok(provider.refreshes() - before >= 3, `refreshes: ${provider.refreshes() - before}`);
    assert.equal(provider.refusedRefreshes(), 0);
    assert.equal(provider.reused(), 0);
  });

  test("50 concurrent calls at expiry cause exactly one refresh at the provider", async () => {
    // Let alice's token run into its refresh window with no call refreshing it meanwhile.
    await whoami(alice);
    await new Promise((r) => setTimeout(r, 2500));
    // The token the burst's refresh obtains outlives the burst however slow the machine is, so a
    // second refresh could only come from a duplicate, never from that token's own expiry.
    provider.setTtl(60);
    try {
      const before = provider.refreshes();
      const answers = await Promise.all(Array.from({ length: 50 }, () => whoami(alice)));
      for (const me of answers) assert.equal(me.login, "alice");
      assert.equal(provider.refreshes() - before, 1);
      assert.equal(provider.reused(), 0);
    } finally {
      provider.setTtl(3);
    }
  });

  test("an upstream 401 (the provider revoked the access token early) refreshes once and the call is retried", async () => {
    await whoami(alice);
    const current = provider
      .issued()
      .filter((t) => t.account === "alice")
      .at(-1);
    assert.ok(current);
    assert.ok(provider.revokeAccessToken(current.token));
    const before = provider.refreshes();
    assert.equal((await whoami(alice)).login, "alice");
    assert.equal(provider.refreshes() - before, 1);
    assert.ok(api.authorizations().includes(`Bearer ${current.token}`));
  });

  test("no token in clear in the logs, the audit records or the store file; the audit has connect, use and refresh", async () => {
    await waitFor(
      async () => (await admin("GET", "/api/audit?type=connection&limit=500")).json.records?.length > 0,
      { what: "the vault's audit records" },
    );
    const audit = await admin("GET", "/api/audit?limit=1000");
    const auditText = JSON.stringify(audit.json);
    const logs = edge.logs().join("\n");
    const files = readdirSync(dir)
      .filter((f) => f.startsWith("edge.db"))
      .map((f) => readFileSync(path.join(dir, f)).toString("latin1"))
      .join("");
    const tokens = [...provider.issued().map((t) => t.token), ...provider.refreshTokens()];
    assert.ok(provider.refreshTokens().length > 3);
    for (const token of tokens) {
      assert.ok(!auditText.includes(token), "a token in the audit");
      assert.ok(!logs.includes(token), "a token in the logs");
      assert.ok(!files.includes(token), "a token in the store file");
    }
    const vaultRecords = (await admin("GET", "/api/audit?type=connection&limit=1000")).json.records as {
      method: string;
      target: string;
      detail: Record<string, string>;
    }[];
    const methods = new Set(vaultRecords.map((r) => r.method));
    for (const m of ["connection.connect", "connection.use", "connection.refresh"])
      assert.ok(methods.has(m), m);
    assert.ok(vaultRecords.every((r) => r.target === "tp"));
  });

  test("admin API: connections listed without tokens; one deleted → that user's next call asks to connect again", async () => {
    const list = await admin("GET", "/api/connections?tenant=acme");
    assert.equal(list.status, 200);
    const rows = list.json.connections as { id: string; subject: string; connection: string }[];
    assert.deepEqual(rows.map((r) => r.subject).sort(), ["key|alice", "key|bob"]);
    assert.ok(!JSON.stringify(list.json).includes("sealed"));
    const bobs = rows.find((r) => r.subject === "key|bob");
    assert.ok(bobs);
    assert.equal((await admin("DELETE", `/api/connections/${bobs.id}`)).status, 200);
    assert.equal((await admin("GET", `/api/connections/${bobs.id}`)).status, 404);
    await elicitation(bob);
    // Alice is untouched.
    assert.equal((await whoami(alice)).login, "alice");
  });

  test("the provider revoking the grant: the next refresh fails, the record is deleted, the call asks to connect again", async () => {
    assert.ok((await provider.revokeUser("alice")) >= 1);
    // Past the floor between forced refreshes (the previous test forced one for alice).
    await new Promise((r) => setTimeout(r, 1100));
    // The access token went with the grant: the upstream answers 401, the forced refresh is
    // refused (invalid_grant): the record is deleted and this very call asks to connect again.
    await elicitation(alice);
    assert.equal((await admin("GET", "/api/connections?subject=key%7Calice")).json.connections.length, 0);
    const e = await elicitation(alice);
    // Reconnecting restores it, same session.
    await connectInBrowser(e.url, "alice");
    assert.equal((await whoami(alice)).login, "alice");
  });

  test("a provider that is down when the token must be refreshed: 503 with Retry-After, the connection kept", async () => {
    const carol = await client("carol");
    await connectInBrowser((await elicitation(carol.c)).url, "carol");
    provider.setTokenEndpoint("down");
    try {
      await new Promise((r) => setTimeout(r, 3200)); // past the token's expiry
      const res = await fetch(`${base}/mcp`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${keys.carol}`,
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          "mcp-session-id": carol.t.sessionId as string,
          "mcp-protocol-version": "2025-11-25",
        },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 9,
          method: "tools/call",
          params: { name: "whoami", arguments: {} },
        }),
      });
      assert.equal(res.status, 503);
      assert.equal(res.headers.get("retry-after"), "5");
      const body = (await res.json()) as { id: number; error: { data: { code: string } } };
      assert.equal(body.id, 9);
      assert.equal(body.error.data.code, "EDGE_CONNECTION_UNAVAILABLE");
      const kept = await admin("GET", "/api/connections?subject=key%7Ccarol");
      assert.equal(kept.json.connections.length, 1);
    } finally {
      provider.setTokenEndpoint("up");
    }
    assert.equal((await whoami(carol.c)).login, "carol");
  });
});

describe("connect pages refuse what a person did not start", () => {
  test("an invalid or tampered link → 400 page, coded", async () => {
    for (const q of ["", "?ticket=", "?ticket=garbage", "?ticket=eyJ0IjoiYWNtZSJ9.AAAA"]) {
      const res = await fetch(`${base}/connect/tp${q}`);
      assert.equal(res.status, 400, q);
      assert.equal(res.headers.get("x-mcp-edge-error"), "EDGE_CONNECT_LINK_INVALID");
      assert.match(await res.text(), /invalid or has expired/);
    }
    assert.equal((await fetch(`${base}/connect?ticket=nope`)).status, 400);
  });

  test("an unknown connection → 404; a wrong method → 405", async () => {
    assert.equal((await fetch(`${base}/connect/nope?ticket=x`)).status, 404);
    assert.equal((await fetch(`${base}/connect/tp/start`)).status, 405);
    assert.equal((await fetch(`${base}/connect/tp/callback`, { method: "POST" })).status, 405);
  });

  test("a form post from another site (no or foreign Origin) → 403, nothing started", async () => {
    const { c } = await client("carol");
    const url = (await elicitation(c).catch(async () => ({ url: "" }))).url;
    const ticket = new URL(url || `${base}/connect/tp?ticket=x`).searchParams.get("ticket") ?? "x";
    for (const origin of [undefined, "https://evil.example"]) {
      const res = await fetch(`${base}/connect/tp/start`, {
        method: "POST",
        redirect: "manual",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          ...(origin ? { origin } : {}),
        },
        body: new URLSearchParams({ ticket }).toString(),
      });
      assert.equal(res.status, 403, String(origin));
    }
  });

  test("a callback in another browser than the one that started (login CSRF) → 400, nothing stored", async () => {
    const { c } = await client("bob");
    const e = await elicitation(c);
    // The attacker opens the link, starts the flow and signs in at the provider as themselves,
    // but stops before the callback and hands its URL to the victim...
    const attacker = new Browser();
    const confirm = await attacker.get(e.url);
    const login = await attacker.post(
      formAction(confirm) as string,
      { ticket: formValue(confirm.text, "ticket") as string },
      base,
    );
    assert.match(login.text, /Sign in/);
    const handed = await attacker.post(
      formAction(login) as string,
      { login: "bob" },
      login.url,
      `${base}/connect/tp/callback`,
    );
    assert.equal(handed.status, 0);
    assert.ok(
      handed.url.startsWith(`${base}/connect/tp/callback?code=`) || handed.url.includes("code="),
      handed.url,
    );
    // ...whose browser did not start that flow: refused, nothing stored.
    const page = await new Browser().get(handed.url);
    assert.equal(page.status, 400);
    assert.equal(page.headers.get("x-mcp-edge-error"), "EDGE_CONNECT_LINK_INVALID");
    assert.equal((await admin("GET", "/api/connections?subject=key%7Cbob")).json.connections.length, 0);
    // The attacker's own browser would have completed it: the binding is what refused the victim's.
    const own = await attacker.get(handed.url);
    assert.equal(own.status, 200, own.text);
    assert.equal((await admin("GET", "/api/connections?subject=key%7Cbob")).json.connections.length, 1);
  });
});
