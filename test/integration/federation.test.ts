/**
 * The edge as an OpenID Connect relying party (src/as/federation.ts) against a real IdP:
 * oidc-provider on loopback with a login page, ID tokens, `iss` on authorization responses
 * (RFC 9207), rotating single-use refresh tokens and accounts an administrator can disable.
 * A small HTTP server on loopback hosts each IdP's login method (src/as/login.ts: start, finish,
 * recheck) at the authorization server's paths, with the pages of a minimal `LoginEnv`; a
 * person's browser is driven over HTTP (test/helpers/browser.ts). Last, an edge whose
 * authorization server offers two IdPs (one per tenant) on its sign-in page: the one chosen
 * decides the grant's tenant; its grants page (/as/grants) signs in through the same IdPs.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import {
  Federation,
  type FederationError,
  type FederationLink,
  federationFromConfig,
} from "../../src/as/federation.ts";
import { type LoginEnv, type LoginMethod, type LoginResult, LoginRevoked } from "../../src/as/login.ts";
import { parseConfig } from "../../src/config/load.ts";
import { type FederationConfig, federationSchema } from "../../src/config/schema.ts";
import { Egress } from "../../src/egress/index.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { KeyRing } from "../../src/vault/seal.ts";
import { auth } from "@modelcontextprotocol/sdk/client/auth.js";
import { decodeJwt } from "jose";
import { parseAccountId } from "../../src/as/adapter.ts";
import { DEMO, TestOAuthProvider } from "../as/helpers.ts";
import { Browser, formAction, formValue } from "../helpers/browser.ts";
import { freePort, type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { NODE_BIN } from "../helpers/spawn.ts";
import { type Provider, startProvider } from "../helpers/third-party.ts";

const ring = new KeyRing(randomBytes(32).toString("base64"));
const egress = new Egress({ connectTimeout: 5000 });
const log = createLogger({ level: "silent" });

let harness: Server;
let base: string;
let idp: Provider;
let noRefresh: Provider;
let fed: Federation;
let methods: Map<string, LoginMethod>;

/** What the harness answered at the callback: who signed in, or the coded refusal page. */
interface Outcome {
  status: number;
  body: { uid?: string; result?: LoginResult; code?: string; message?: string };
  page: { url: string; headers: Headers };
}

const env = (): LoginEnv => ({
  publicUrl: base,
  callbackUrl: (name) => `${base}/as/login/${name}/callback`,
  interaction: async () => undefined,
  page: (res, status, title, body) => {
    const code = res.getHeader("x-mcp-edge-error");
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify({ code, message: `${title}: ${body}` }));
  },
  csrfToken: () => "",
  checkCsrf: () => false,
  readForm: async () => new URLSearchParams(),
});

/** The IdP's link kept with a grant. */
const linkOf = (r: LoginResult | undefined) => JSON.parse(r?.upstreamRefresh ?? "null") as FederationLink;

before(async () => {
  harness = createServer((req, res) => {
    const url = new URL(req.url ?? "/", base);
    const [, , , name, leg] = url.pathname.split("/"); // /as/login/{name}/{uid|callback}
    const method = methods.get(name ?? "");
    if (!method || !leg) return void res.writeHead(404).end();
    void (async () => {
      if (leg !== "callback") {
        const view = { uid: leg, clientId: "c", clientName: undefined, scopes: [], resource: undefined };
        return method.start({ ...view, expiresAt: Date.now() + 60_000 }, req, res, env());
      }
      const done = await method.finish(req, res, url.searchParams, env());
      if (!done) return;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(done));
    })();
  });
  await new Promise<void>((r) => harness.listen(0, "127.0.0.1", () => r()));
  base = `http://127.0.0.1:${(harness.address() as AddressInfo).port}`;
  idp = await startProvider({
    redirectUris: [`${base}/as/login/corp/callback`, `${base}/as/login/pinned/callback`],
    ttlSeconds: 60,
    accountClaims: {
      alice: { org_id: "acme", email: "alice@acme.test" },
      bob: { org_id: "globex", email: "bob@globex.test" },
    },
  });
  noRefresh = await startProvider({
    redirectUris: [`${base}/as/login/thin/callback`],
    refreshTokens: false,
  });
  const config: FederationConfig = federationSchema.parse({
    corp: {
      issuer: idp.issuer,
      clientId: idp.clientId,
      clientSecret: idp.clientSecret,
      scopes: ["openid", "offline_access"],
      tenantClaim: "org_id",
      displayName: "Corp SSO",
    },
    pinned: {
      issuer: idp.issuer,
      clientId: idp.clientId,
      clientSecret: idp.clientSecret,
      scopes: ["openid", "offline_access"],
      tenantClaim: "org_id",
      tenants: ["acme"],
    },
    thin: {
      issuer: noRefresh.issuer,
      clientId: noRefresh.clientId,
      clientSecret: noRefresh.clientSecret,
      scopes: ["openid"],
      tenant: "solo",
    },
  });
  fed = new Federation({ idps: config, egress, ring, publicUrl: base, log });
  methods = new Map(fed.methods().map((m) => [m.name, m]));
});

after(async () => {
  harness?.closeAllConnections();
  await new Promise<void>((r) => (harness ? harness.close(() => r()) : r()));
  await idp?.stop();
  await noRefresh?.stop();
  await egress.close();
});

/** Starts a login and signs in at the IdP; stops before the IdP's redirect back (not followed). */
async function toCallback(browser: Browser, user: string, name = "corp"): Promise<string> {
  const login = await browser.get(`${base}/as/login/${name}/interaction-1`);
  assert.equal(login.status, 200, login.text);
  assert.match(login.text, /Sign in to Example Provider/);
  const back = await browser.post(
    formAction(login) as string,
    { login: user },
    login.url,
    `${base}/as/login/`,
  );
  assert.equal(back.status, 0, "the IdP redirects back to the edge");
  return back.url;
}

async function finish(browser: Browser, callback: string): Promise<Outcome> {
  const page = await browser.get(callback);
  return { status: page.status, body: JSON.parse(page.text) as Outcome["body"], page };
}

async function login(user: string, name = "corp"): Promise<Outcome> {
  const browser = new Browser();
  return finish(browser, await toCallback(browser, user, name));
}

/** The `state` of a callback URL opened, changed and sealed again (a forged login state). */
function forgeState(callback: string, change: Record<string, unknown>): string {
  const url = new URL(callback);
  const state = ring.openState(url.searchParams.get("state") ?? "") as Record<string, unknown>;
  url.searchParams.set("state", ring.sealState({ ...state, ...change }));
  return url.toString();
}

describe("federated login (OpenID Connect relying party)", () => {
  let aliceLink: FederationLink;

  test("discovery, PKCE, state and nonce: the IdP's user becomes the edge's subject, tenant from the claim, refresh token sealed", async () => {
    const browser = new Browser();
    const callback = await toCallback(browser, "alice");
    const cb = new URL(callback);
    assert.equal(cb.searchParams.get("iss"), idp.issuer, "RFC 9207 iss on the authorization response");
    const out = await finish(browser, callback);
    assert.equal(out.status, 200, JSON.stringify(out.body));
    assert.equal(out.body.uid, "interaction-1");
    const id = out.body.result as LoginResult;
    assert.equal(id.method, "corp");
    assert.equal(id.subject, "corp|alice");
    assert.equal(id.tenant, "acme");
    assert.equal(id.display, "alice@acme.test");
    const link = linkOf(id);
    assert.equal(link.idp, "corp");
    assert.equal(link.sub, "alice");
    // The IdP's refresh token never appears in clear: the link holds it sealed.
    const issued = idp.refreshTokens();
    assert.equal(issued.length, 1);
    assert.ok(!JSON.stringify(out.body).includes(issued[0] as string));
    assert.match(link.refresh, /^v1\./);
    // The binding cookie is cleared.
    assert.match(out.page.headers.get("set-cookie") ?? "", /mcp-edge-login-corp=; .*Max-Age=0/);
    aliceLink = link;

    // The authorization request carried PKCE S256, state and nonce.
    const authorize = new URL(browser.visited.find((u) => u.startsWith(`${idp.issuer}/auth`)) as string);
    assert.equal(authorize.searchParams.get("code_challenge_method"), "S256");
    assert.ok(authorize.searchParams.get("code_challenge"));
    assert.ok(authorize.searchParams.get("nonce"));
    assert.ok(authorize.searchParams.get("state"));
    assert.equal(authorize.searchParams.get("resource"), null, "no resource parameter toward the IdP");
  });

  test("a callback with another issuer's iss (mix-up, RFC 9207) is refused; nothing issued", async () => {
    const browser = new Browser();
    const callback = new URL(await toCallback(browser, "alice"));
    callback.searchParams.set("iss", "https://evil.example");
    const before = idp.issued().length;
    const out = await finish(browser, callback.toString());
    assert.equal(out.status, 502);
    assert.equal(out.body.code, "EDGE_LOGIN_IDP_FAILED");
    assert.equal(idp.issued().length, before, "the code was never exchanged");
  });

  test("a callback in another browser (no binding cookie: login CSRF) or with a tampered state is refused", async () => {
    const browser = new Browser();
    const callback = await toCallback(browser, "alice");
    const other = await finish(new Browser(), callback);
    assert.equal(other.status, 400);
    assert.equal(other.body.code, "EDGE_LOGIN_LINK_INVALID");
    const url = new URL(callback);
    const state = url.searchParams.get("state") as string;
    const flip = state.length >> 1;
    url.searchParams.set(
      "state",
      `${state.slice(0, flip)}${state[flip] === "A" ? "B" : "A"}${state.slice(flip + 1)}`,
    );
    const tampered = await finish(browser, url.toString());
    assert.equal(tampered.status, 400);
    assert.equal(tampered.body.code, "EDGE_LOGIN_LINK_INVALID");
    const expired = await finish(browser, forgeState(callback, { e: Date.now() - 1 }));
    assert.equal(expired.body.code, "EDGE_LOGIN_LINK_INVALID");
    const otherIdp = await finish(browser, forgeState(callback, { p: "pinned" }));
    assert.equal(otherIdp.body.code, "EDGE_LOGIN_LINK_INVALID", "a state is for the IdP it was started for");
  });

  test("an ID token with another nonce, or a wrong PKCE verifier, is refused", async () => {
    const a = new Browser();
    const nonce = await finish(a, forgeState(await toCallback(a, "alice"), { n: "not-the-nonce" }));
    assert.equal(nonce.status, 502);
    assert.equal(nonce.body.code, "EDGE_LOGIN_IDP_FAILED");
    assert.match(nonce.body.message ?? "", /nonce/);
    const b = new Browser();
    const pkce = await finish(b, forgeState(await toCallback(b, "alice"), { v: "x".repeat(43) }));
    assert.equal(pkce.status, 502);
    assert.match(pkce.body.message ?? "", /invalid_grant/);
  });

  test("the user declining at the IdP is a clear refusal", async () => {
    const browser = new Browser();
    const callback = new URL(await toCallback(browser, "alice"));
    const denied = new URL(callback.pathname, base);
    denied.searchParams.set("error", "access_denied");
    denied.searchParams.set("state", callback.searchParams.get("state") as string);
    denied.searchParams.set("iss", idp.issuer);
    const out = await finish(browser, denied.toString());
    assert.equal(out.status, 502);
    assert.match(out.body.message ?? "", /declined/);
  });

  test("tenant: a user without the claim, or with a tenant the IdP may not assert, is refused (403)", async () => {
    const none = await login("carol");
    assert.equal(none.status, 403);
    assert.equal(none.body.code, "EDGE_LOGIN_TENANT_REFUSED");
    const foreign = await login("bob", "pinned");
    assert.equal(foreign.status, 403);
    assert.match(foreign.body.message ?? "", /globex/);
    const allowed = await login("alice", "pinned");
    assert.equal(allowed.status, 200);
    assert.equal(allowed.body.result?.subject, "pinned|alice");
  });

  test("an IdP that issues no refresh token is refused when one is required (a disabled user would keep refreshing)", async () => {
    const out = await login("alice", "thin");
    assert.equal(out.status, 502);
    assert.match(out.body.message ?? "", /no refresh token/);
  });

  test("re-check at refresh: the IdP's refresh token is rotated and sealed again; concurrent re-checks spend it once", async () => {
    const before = idp.refreshes();
    const links = await Promise.all(Array.from({ length: 5 }, () => fed.recheck(aliceLink)));
    assert.equal(idp.refreshes(), before + 1, "one refresh at the IdP");
    assert.equal(new Set(links.map((l) => l.refresh)).size, 1);
    const next = links[0] as FederationLink;
    assert.notEqual(next.refresh, aliceLink.refresh);
    assert.equal(next.sub, "alice");
    // The old IdP refresh token was single-use: the IdP refuses it now (and revokes the family).
    await assert.rejects(fed.recheck(aliceLink), (e: FederationError) => e.kind === "revoked");
    aliceLink = linkOf((await login("alice")).body.result);
    aliceLink = await fed.recheck(aliceLink);
  });

  test("a sealed refresh token moved onto another user's link does not open", async () => {
    const bob = linkOf((await login("bob")).body.result);
    await assert.rejects(
      fed.recheck({ ...bob, refresh: aliceLink.refresh }),
      (e: FederationError) => e.kind === "revoked" && /cannot be opened/.test(e.message),
    );
  });

  test("a user disabled at the IdP stops refreshing: the login method's recheck throws LoginRevoked", async () => {
    const bob = (await login("bob")).body.result as LoginResult;
    const corp = methods.get("corp") as LoginMethod & Required<Pick<LoginMethod, "recheck">>;
    const next = { ...bob, ...(await corp.recheck(bob)) };
    assert.notEqual(next.upstreamRefresh, bob.upstreamRefresh);
    idp.disableUser("bob");
    await assert.rejects(corp.recheck(next), LoginRevoked);
    await assert.rejects(corp.recheck({ ...next, upstreamRefresh: "{}" }), LoginRevoked);
    // alice is unaffected.
    aliceLink = await fed.recheck(aliceLink);
  });

  test("the IdP's token endpoint down: `unavailable`, the link is kept and works once it is back", async () => {
    idp.setTokenEndpoint("down");
    try {
      await assert.rejects(fed.recheck(aliceLink), (e: FederationError) => e.kind === "unavailable");
    } finally {
      idp.setTokenEndpoint("up");
    }
    aliceLink = await fed.recheck(aliceLink);
  });

  test("an unreachable IdP at login start is a 502, not a crash", async () => {
    const dead = new Federation({
      idps: federationSchema.parse({ gone: { issuer: "http://127.0.0.1:9", clientId: "x" } }),
      egress,
      ring,
      publicUrl: base,
      log,
    });
    const res = { writeHead: () => res, end: () => res };
    await assert.rejects(
      dead.start(res as never, "gone", "i"),
      (e: FederationError) => e.kind === "idp" && e.status === 502,
    );
  });
});

describe("federation config", () => {
  const base = {
    publicUrl: "https://mcp.example.com",
    vault: { key: "${MCP_EDGE_TEST_FED_VAULT_KEY}" },
    servers: { s: { route: "/mcp", upstream: { urls: ["http://127.0.0.1:1/mcp"] }, auth: ["oauth"] } },
  };
  const idpDoc = { issuer: "https://login.example.com", clientId: "edge" };
  const as = (login: Record<string, unknown>) => ({ authorizationServer: { enabled: true, login } });

  before(() => {
    process.env.MCP_EDGE_TEST_FED_VAULT_KEY = Buffer.alloc(32, 1).toString("base64");
  });
  after(() => {
    delete process.env.MCP_EDGE_TEST_FED_VAULT_KEY;
  });

  test("login.idp and login.idps become login methods named idp and by their names", () => {
    const config = parseConfig({
      ...base,
      auth: as({ apiKey: false, idp: idpDoc, idps: { acme: { ...idpDoc, tenant: "acme" } } }),
    });
    const f = federationFromConfig(config, { egress, log });
    assert.deepEqual(
      f?.methods().map((m) => [m.name, m.label]),
      [
        ["idp", "Sign in with idp"],
        ["acme", "Sign in with acme"],
      ],
    );
    assert.equal(f?.idp("acme")?.redirectUri, "https://mcp.example.com/as/login/acme/callback");
    assert.deepEqual(f?.idp("idp")?.config.scopes, ["openid", "email", "profile", "offline_access"]);
    assert.equal(federationFromConfig(parseConfig({ ...base, auth: as({}) }), { egress, log }), undefined);
  });

  test("refused: no vault key, a name taken by another method, tenant and tenantClaim both, no openid scope, a client secret in the file", () => {
    assert.throws(
      () => parseConfig({ ...base, auth: as({ idps: { a: { ...idpDoc, clientSecret: "inline" } } }) }),
      /login\.idps\.a\.clientSecret: must be a \$\{NAME\} reference/,
    );
    const { vault: _, ...noVault } = base;
    assert.throws(
      () => parseConfig({ ...noVault, auth: as({ idp: idpDoc }) }),
      /federated login needs vault.key/,
    );
    assert.throws(
      () => parseConfig({ ...base, auth: as({ idps: { apiKey: idpDoc } }) }),
      /apiKey is the name of another login method/,
    );
    assert.throws(
      () => parseConfig({ ...base, auth: as({ idp: { ...idpDoc, tenant: "a", tenantClaim: "org" } }) }),
      /tenant or tenantClaim, not both/,
    );
    assert.throws(
      () => parseConfig({ ...base, auth: as({ idp: { ...idpDoc, scopes: ["email"] } }) }),
      /must include openid/,
    );
  });
});

describe("several IdPs behind the authorization server (one per tenant)", () => {
  let edge: InProcessEdge;
  let shared: Provider;
  let asBase: string;

  before(async () => {
    const port = await freePort();
    asBase = `http://127.0.0.1:${port}`;
    shared = await startProvider({
      redirectUris: [`${asBase}/as/login/acme/callback`, `${asBase}/as/login/globex/callback`],
      ttlSeconds: 60,
    });
    process.env.MCP_EDGE_TEST_FED_IDP2_SECRET = shared.clientSecret;
    process.env.MCP_EDGE_TEST_FED_VAULT_KEY2 = Buffer.alloc(32, 3).toString("base64");
    const idpDoc = (name: string) => ({
      issuer: shared.issuer,
      clientId: shared.clientId,
      clientSecret: "${MCP_EDGE_TEST_FED_IDP2_SECRET}",
      scopes: ["openid", "offline_access"],
      tenant: name.toLowerCase(),
      displayName: name,
    });
    edge = await startEdge(
      {
        listen: { host: "127.0.0.1", port },
        publicUrl: asBase,
        vault: { key: "${MCP_EDGE_TEST_FED_VAULT_KEY2}" },
        auth: {
          authorizationServer: {
            enabled: true,
            login: { apiKey: false, idps: { acme: idpDoc("Acme"), globex: idpDoc("Globex") } },
          },
        },
        servers: {
          demo: {
            route: "/mcp",
            upstream: { stdio: { command: NODE_BIN, args: [DEMO], mode: "shared" } },
            auth: ["oauth"],
            scopes: { default: ["mcp:tools"] },
          },
        },
      },
      tempDir("mcp-edge-fed-idps-"),
    );
  });

  after(async () => {
    await edge?.stop();
    await shared?.stop();
    delete process.env.MCP_EDGE_TEST_FED_IDP2_SECRET;
    delete process.env.MCP_EDGE_TEST_FED_VAULT_KEY2;
  });

  test("the sign-in page offers each IdP; the one chosen decides the tenant of the grant", async () => {
    const client = new TestOAuthProvider({ redirectUrl: "http://127.0.0.1:1/callback" });
    const mcpUrl = `${asBase}/mcp`;
    assert.equal(await auth(client, { serverUrl: mcpUrl }), "REDIRECT");
    const browser = new Browser();
    const chooser = await browser.get(String(client.lastAuthorizationUrl), "http://127.0.0.1:1/");
    assert.equal(chooser.status, 200, chooser.text);
    assert.match(chooser.text, /Sign in with Acme/);
    const link = /href="([^"]*)">Sign in with Globex/.exec(chooser.text)?.[1];
    assert.ok(link, chooser.text);
    const login = await browser.get(new URL(link.replaceAll("&amp;", "&"), asBase).toString());
    assert.match(login.text, /Sign in to Example Provider/);
    const consent = await browser.post(formAction(login) as string, { login: "alice" }, login.url);
    assert.equal(consent.status, 200, consent.text);
    assert.match(consent.text, /Allow access\?/);
    const back = await browser.post(
      formAction(consent) as string,
      { csrf: formValue(consent.text, "csrf") as string, decision: "allow" },
      consent.url,
      "http://127.0.0.1:1/",
    );
    const code = new URL(back.url).searchParams.get("code");
    assert.ok(code, back.url);
    assert.equal(await auth(client, { serverUrl: mcpUrl, authorizationCode: code }), "AUTHORIZED");
    const claims = decodeJwt(client.saved?.access_token as string);
    assert.deepEqual(parseAccountId(String(claims.sub)), {
      method: "globex",
      tenant: "globex",
      subject: "globex|alice",
    });
    assert.equal(claims.org_id, "globex");
  });

  test("the grants page signs in through the same IdPs: Globex's alice sees her grant, Acme's alice none", async () => {
    const grantsAs = async (idp: string): Promise<string> => {
      const browser = new Browser();
      const chooser = await browser.get(`${asBase}/as/grants`);
      assert.equal(chooser.status, 200, chooser.text);
      const link = new RegExp(`href="([^"]*)">Sign in with ${idp}`).exec(chooser.text)?.[1];
      assert.ok(link, chooser.text);
      const login = await browser.get(new URL(link.replaceAll("&amp;", "&"), asBase).toString());
      assert.match(login.text, /Sign in to Example Provider/);
      const page = await browser.post(formAction(login) as string, { login: "alice" }, login.url);
      assert.equal(page.status, 200, page.text);
      assert.equal(new URL(page.url).pathname, "/as/grants");
      return page.text;
    };
    const globex = await grantsAs("Globex");
    assert.match(globex, /SDK test client/);
    assert.equal([...globex.matchAll(/name="grant"/g)].length, 1);
    const acme = await grantsAs("Acme");
    assert.match(acme, /No app holds access for you/);
  });
});
