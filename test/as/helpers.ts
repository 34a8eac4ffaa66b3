/**
 * Shared parts of the authorization-server tests: an edge with the AS on (API-key sign-in, the
 * demo MCP server over stdio), an API key made through the admin API, and the official SDK v1
 * client's own OAuth flow (`auth()` with an OAuthClientProvider) whose browser step is a person
 * driven over plain HTTP: the sign-in page (paste the key), then the consent page (allow).
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { auth, type OAuthClientProvider } from "@modelcontextprotocol/sdk/client/auth.js";
import type {
  OAuthClientInformationMixed,
  OAuthClientMetadata,
  OAuthTokens,
} from "@modelcontextprotocol/sdk/shared/auth.js";
import { Browser, formAction, formValue, type Page } from "../helpers/browser.ts";
import { type EdgeConfigDoc, freePort, type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

export const ADMIN_TOKEN = "as-test-admin-token-0123456789abcdef";
export const DEMO = `${REPO_ROOT}/src/demo/server.ts`;

/** What the flows need of an edge: its public URL, its MCP URL and an API key to sign in with. */
export interface AsTarget {
  base: string;
  mcpUrl: string;
  key: string;
}

export interface AsEdge {
  edge: InProcessEdge;
  base: string;
  mcpUrl: string;
  key: string;
  admin(method: string, p: string, body?: unknown): Promise<{ status: number; json: any }>;
}

/** An edge with the AS enabled on a known port (publicUrl = its URL); `as` overrides the AS config. */
export async function startAsEdge(
  as: Record<string, unknown> = {},
  extra: Partial<EdgeConfigDoc> = {},
  dir = tempDir("mcp-edge-as-"),
): Promise<AsEdge> {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const edge = await startEdge(
    {
      listen: { host: "127.0.0.1", port },
      publicUrl: base,
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      auth: { authorizationServer: { enabled: true, ...as } },
      servers: {
        demo: {
          route: "/mcp",
          upstream: { stdio: { command: NODE_BIN, args: [DEMO], mode: "shared" } },
          auth: ["apiKey", "oauth"],
          scopes: { default: ["mcp:tools"] },
        },
      },
      ...extra,
    },
    dir,
  );
  const admin = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(`${edge.gw.adminUrl}${p}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, json: await res.json() };
  };
  const made = await admin("POST", "/api/keys", { name: "alice-laptop", server: "demo", tenant: "acme" });
  assert.equal(made.status, 201, JSON.stringify(made.json));
  return { edge, base, mcpUrl: `${base}/mcp`, key: made.json.key as string, admin };
}

/**
 * A person at the browser: opens the authorization URL, signs in with the API key, allows on the
 * consent page, and is sent back to the client's redirect URI (not followed: the code is read from
 * it). Returns the final URL and the pages seen.
 */
export async function signInAndAllow(
  browser: Browser,
  authorizationUrl: string,
  key: string,
  redirectPrefix: string,
): Promise<{ redirect: URL; pages: Page[] }> {
  const pages: Page[] = [];
  let page = await browser.get(authorizationUrl, redirectPrefix);
  pages.push(page);
  for (let i = 0; i < 4 && page.status !== 0; i++) {
    assert.equal(page.status, 200, `${page.url}: ${page.text.slice(0, 500)}`);
    const action = formAction(page);
    assert.ok(action, `a form on ${page.url}: ${page.text.slice(0, 300)}`);
    const form: Record<string, string> = {};
    for (const name of ["uid", "csrf"]) {
      const v = formValue(page.text, name);
      if (v !== undefined) form[name] = v;
    }
    if (/name="key"/.test(page.text)) form.key = key;
    else form.decision = "allow";
    page = await browser.post(action, form, page.url, redirectPrefix);
    pages.push(page);
  }
  assert.equal(page.status, 0, `ended on ${page.url}: ${page.text.slice(0, 300)}`);
  return { redirect: new URL(page.url), pages };
}

/** The SDK's OAuthClientProvider, in memory; its browser step runs `onRedirect`. */
export class TestOAuthProvider implements OAuthClientProvider {
  info: OAuthClientInformationMixed | undefined;
  saved: OAuthTokens | undefined;
  verifier = "";
  lastAuthorizationUrl: URL | undefined;
  readonly #meta: OAuthClientMetadata;
  readonly #redirect: string;
  readonly clientMetadataUrl: string | undefined;

  constructor(o: {
    redirectUrl: string;
    metadata?: Partial<OAuthClientMetadata>;
    clientMetadataUrl?: string;
  }) {
    this.#redirect = o.redirectUrl;
    this.#meta = {
      client_name: "SDK test client",
      redirect_uris: [o.redirectUrl],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
      ...o.metadata,
    };
    this.clientMetadataUrl = o.clientMetadataUrl;
  }

  get redirectUrl(): string {
    return this.#redirect;
  }
  get clientMetadata(): OAuthClientMetadata {
    return this.#meta;
  }
  clientInformation(): OAuthClientInformationMixed | undefined {
    return this.info;
  }
  saveClientInformation(info: OAuthClientInformationMixed): void {
    this.info = info;
  }
  tokens(): OAuthTokens | undefined {
    return this.saved;
  }
  saveTokens(tokens: OAuthTokens): void {
    this.saved = tokens;
  }
  redirectToAuthorization(url: URL): void {
    this.lastAuthorizationUrl = url;
  }
  saveCodeVerifier(v: string): void {
    this.verifier = v;
  }
  codeVerifier(): string {
    return this.verifier;
  }
}

/** The SDK's whole flow: discovery, registration, PKCE, the person's consent, the code exchange. */
export async function sdkLogin(
  a: AsTarget,
  provider: TestOAuthProvider,
  browser = new Browser(),
  scope?: string,
): Promise<{ pages: Page[] }> {
  const first = await auth(provider, { serverUrl: a.mcpUrl, ...(scope ? { scope } : {}) });
  assert.equal(first, "REDIRECT");
  assert.ok(provider.lastAuthorizationUrl);
  const { redirect, pages } = await signInAndAllow(
    browser,
    provider.lastAuthorizationUrl.toString(),
    a.key,
    provider.redirectUrl,
  );
  assert.equal(redirect.searchParams.get("iss"), a.base, "RFC 9207 iss on the authorization response");
  const code = redirect.searchParams.get("code");
  assert.ok(code, `a code in ${redirect}`);
  const second = await auth(provider, { serverUrl: a.mcpUrl, authorizationCode: code });
  assert.equal(second, "AUTHORIZED");
  return { pages };
}

export interface RawTokens {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  scope?: string;
  token_type: string;
}

export function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString("base64url");
  return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}

/** RFC 7591 registration; returns the status and the JSON answer. */
export async function register(
  base: string,
  doc: Record<string, unknown>,
): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(doc),
  });
  return { status: res.status, json: await res.json() };
}

export async function tokenRequest(
  base: string,
  form: Record<string, string>,
): Promise<{ status: number; json: any }> {
  const res = await fetch(`${base}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form).toString(),
  });
  return { status: res.status, json: await res.json() };
}

/** The authorization URL of a code flow with PKCE S256 for the edge's route. */
export function authorizeUrl(
  a: AsTarget,
  o: {
    clientId: string;
    redirectUri: string;
    challenge: string;
    scope?: string;
    state?: string;
    resource?: string;
  },
): string {
  const q = new URLSearchParams({
    response_type: "code",
    client_id: o.clientId,
    redirect_uri: o.redirectUri,
    code_challenge: o.challenge,
    code_challenge_method: "S256",
    scope: o.scope ?? "mcp:tools",
    state: o.state ?? "st",
    resource: o.resource ?? a.mcpUrl,
  });
  return `${a.base}/authorize?${q}`;
}

/** A whole code flow by hand (register unless a client id is given): the code and its verifier. */
export async function codeFlow(
  a: AsTarget,
  o: { clientId?: string; redirectUri?: string; browser?: Browser; scope?: string } = {},
): Promise<{ clientId: string; redirectUri: string; code: string; verifier: string; redirect: URL }> {
  const redirectUri = o.redirectUri ?? "http://127.0.0.1:41999/cb";
  let clientId = o.clientId;
  if (!clientId) {
    const r = await register(a.base, { client_name: "hand client", redirect_uris: [redirectUri] });
    assert.equal(r.status, 201, JSON.stringify(r.json));
    clientId = r.json.client_id as string;
  }
  const { verifier, challenge } = pkce();
  const { redirect } = await signInAndAllow(
    o.browser ?? new Browser(),
    authorizeUrl(a, { clientId, redirectUri, challenge, ...(o.scope ? { scope: o.scope } : {}) }),
    a.key,
    redirectUri,
  );
  const code = redirect.searchParams.get("code");
  assert.ok(code, `a code in ${redirect}`);
  return { clientId, redirectUri, code, verifier, redirect };
}

/** A code flow and its exchange: a fresh pair of tokens. */
export async function loginTokens(
  a: AsTarget,
  o: { clientId?: string; redirectUri?: string } = {},
): Promise<RawTokens & { clientId: string }> {
  const f = await codeFlow(a, o);
  const t = await tokenRequest(a.base, {
    grant_type: "authorization_code",
    code: f.code,
    redirect_uri: f.redirectUri,
    client_id: f.clientId,
    code_verifier: f.verifier,
  });
  assert.equal(t.status, 200, JSON.stringify(t.json));
  return { ...(t.json as RawTokens), clientId: f.clientId };
}

/** An MCP initialize with a bearer token: the HTTP status. */
export async function mcpStatus(a: Pick<AsTarget, "mcpUrl">, token: string): Promise<number> {
  const res = await fetch(a.mcpUrl, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } },
    }),
  });
  await res.arrayBuffer();
  return res.status;
}
