/**
 * A real third-party OAuth provider and a real MCP server acting on it, for the token-vault tests
 * (the GitHub / Google situation, on loopback):
 *
 * `startProvider` runs oidc-provider 9 on 127.0.0.1:0 with one confidential client allowed the
 * authorization code grant (PKCE S256) and refresh tokens that are single-use (rotated on every
 * refresh; a refresh token spent twice makes the provider revoke the whole grant, RFC 9700 §4.14),
 * short-lived opaque access tokens, a real login page (a username form: `alice`, `bob`), and a
 * protected API `GET /api/me` that answers the account a token belongs to (401 otherwise). It
 * counts refresh grants and reused refresh tokens, and can revoke a user's grants.
 *
 * `startApiServer` is an SDK v1 McpServer (Streamable HTTP, stateful) whose tool `whoami` calls
 * that API with the Authorization it received and returns the answer. A request whose token the
 * API refuses is answered 401 before the MCP layer (a real server checks its token first); every
 * Authorization header seen is recorded.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { exportJWK, generateKeyPair } from "jose";

interface ProviderInstance {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  on(event: string, listener: (...args: unknown[]) => void): void;
  interactionDetails(
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<{
    uid: string;
    params: Record<string, unknown>;
    prompt: { name: string };
    session?: { accountId: string };
  }>;
  interactionFinished(
    req: IncomingMessage,
    res: ServerResponse,
    result: unknown,
    opts?: unknown,
  ): Promise<void>;
  Grant: (new (init: { clientId: string; accountId: string }) => {
    addOIDCScope(scope: string): void;
    save(): Promise<string>;
  }) & { find(id: string): Promise<{ destroy(): Promise<void> } | undefined> };
  AccessToken: { find(token: string): Promise<{ accountId: string; isExpired?: boolean } | undefined> };
}
type ProviderClass = new (issuer: string, configuration: Record<string, unknown>) => ProviderInstance;

const OIDC_PROVIDER = "oidc-provider";

class Storage {
  readonly all = new Map<string, Record<string, unknown>>();
  adapter(): new (model: string) => unknown {
    const all = this.all;
    return class {
      readonly #m: string;
      constructor(model: string) {
        this.#m = model;
      }
      async upsert(id: string, payload: Record<string, unknown>) {
        all.set(`${this.#m}:${id}`, payload);
      }
      async find(id: string) {
        return all.get(`${this.#m}:${id}`);
      }
      async findByUid(uid: string) {
        for (const [k, v] of all) if (k.startsWith(`${this.#m}:`) && v.uid === uid) return v;
        return undefined;
      }
      async findByUserCode() {
        return undefined;
      }
      async consume(id: string) {
        const v = all.get(`${this.#m}:${id}`);
        if (v) v.consumed = Math.floor(Date.now() / 1000);
      }
      async destroy(id: string) {
        all.delete(`${this.#m}:${id}`);
      }
      async revokeByGrantId(grantId: string) {
        for (const [k, v] of all) if (v.grantId === grantId) all.delete(k);
      }
    };
  }
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return (server.address() as AddressInfo).port;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
}

export const ACCOUNTS: Record<string, { name: string; repos: string[] }> = {
  alice: { name: "Alice Liddell", repos: ["wonderland"] },
  bob: { name: "Bob Builder", repos: ["site-plans", "tools"] },
  carol: { name: "Carol Danvers", repos: [] },
};

export interface Provider {
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** Successful refresh grants, and refused ones (an unknown, expired or already spent token). */
  refreshes(): number;
  refusedRefreshes(): number;
  /** Refresh tokens presented a second time after they were spent. */
  reused(): number;
  /** Access tokens issued, with their account. */
  issued(): { token: string; account: string }[];
  /** Refresh tokens issued. */
  refreshTokens(): string[];
  /** Revokes every grant of a user (the provider's "revoke access" button). */
  revokeUser(account: string): Promise<number>;
  /** Disables an account (an administrator at the IdP): it can no longer sign in or refresh. */
  disableUser(account: string): void;
  /** Revokes one access token early (its grant and refresh token stay). */
  revokeAccessToken(token: string): boolean;
  /** Lifetime of access tokens issued from now on (s). */
  setTtl(seconds: number): void;
  /** "up", or "down": the token endpoint answers 503. */
  setTokenEndpoint(mode: "up" | "down"): void;
  stop(): Promise<void>;
}

export async function startProvider(options: {
  redirectUris: string[];
  ttlSeconds?: number;
  /** Extra claims per account (an IdP's `org_id`, `email`), released under the `openid` scope. */
  accountClaims?: Record<string, Record<string, unknown>>;
  /** Issue refresh tokens (default true). */
  refreshTokens?: boolean;
}): Promise<Provider> {
  const { default: ProviderCtor } = (await import(OIDC_PROVIDER)) as { default: ProviderClass };
  const clientId = "edge-connector";
  const clientSecret = randomBytes(24).toString("base64url");
  let ttl = options.ttlSeconds ?? 3;
  let refreshes = 0;
  let refused = 0;
  let reused = 0;
  let tokenMode: "up" | "down" = "up";
  const issued: { token: string; account: string }[] = [];
  const refreshTokens: string[] = [];
  const storage = new Storage();
  const disabled = new Set<string>();
  const extra = options.accountClaims ?? {};
  const claimNames = [...new Set(Object.values(extra).flatMap((c) => Object.keys(c)))];
  const { privateKey } = await generateKeyPair("RS256", { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: "RS256", use: "sig" };
  const ref: { p?: ProviderInstance; handler?: (req: IncomingMessage, res: ServerResponse) => void } = {};

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const p = ref.p;
    if (!p) return void res.writeHead(503).end();
    if (url.pathname === "/api/me") return void me(p, req, res);
    const m = /^\/interaction\/([^/]+)(\/login)?$/.exec(url.pathname);
    if (m) return void interaction(p, req, res, m[2] !== undefined);
    if (url.pathname === "/token" && req.method === "POST" && tokenMode === "down") {
      req.resume();
      return void res.writeHead(503, { "content-type": "text/html" }).end("<h1>Service Unavailable</h1>");
    }
    ref.handler?.(req, res);
  });
  const port = await listen(server);
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new ProviderCtor(issuer, {
    adapter: storage.adapter(),
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        redirect_uris: options.redirectUris,
        token_endpoint_auth_method: "client_secret_post",
        scope: "openid offline_access repo",
      },
    ],
    scopes: ["openid", "offline_access", "repo"],
    claims: { openid: ["sub", "name", ...claimNames] },
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(32).toString("base64url")] },
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx: unknown, i: { uid: string }) => `/interaction/${i.uid}` },
    // Refresh tokens are issued without `prompt=consent` and rotate on every use.
    issueRefreshToken: () => options.refreshTokens !== false,
    rotateRefreshToken: () => true,
    ttl: { AccessToken: () => ttl, RefreshToken: 86_400, Grant: 86_400, Session: 3600, Interaction: 600 },
    // A disabled account is not found: its refresh tokens are refused (invalid_grant).
    findAccount: (_ctx: unknown, id: string) =>
      ACCOUNTS[id] && !disabled.has(id)
        ? { accountId: id, claims: () => ({ sub: id, name: ACCOUNTS[id]?.name, ...extra[id] }) }
        : undefined,
  });
  provider.on("grant.success", (ctx: unknown) => {
    const c = ctx as {
      oidc?: { params?: { grant_type?: string }; entities?: { Account?: { accountId: string } } };
      body?: { access_token?: string; refresh_token?: string };
    };
    if (c.body?.refresh_token) refreshTokens.push(c.body.refresh_token);
    if (c.oidc?.params?.grant_type === "refresh_token") refreshes++;
    const token = c.body?.access_token;
    const account = c.oidc?.entities?.Account?.accountId;
    if (token && account) issued.push({ token, account });
  });
  provider.on("grant.error", (ctx: unknown, err: unknown) => {
    const c = ctx as { oidc?: { params?: { grant_type?: string } } };
    if (c.oidc?.params?.grant_type !== "refresh_token") return;
    refused++;
    if (
      /already used|consumed|rotated/i.test(
        String((err as { error_description?: string }).error_description ?? err),
      )
    )
      reused++;
  });
  provider.on("grant.revoked", () => {
    // oidc-provider revokes the grant when a spent refresh token comes back (reuse detection).
  });
  ref.p = provider;
  ref.handler = provider.callback();

  return {
    issuer,
    clientId,
    clientSecret,
    refreshes: () => refreshes,
    refusedRefreshes: () => refused,
    reused: () => reused,
    issued: () => issued.slice(),
    refreshTokens: () => refreshTokens.slice(),
    async revokeUser(account) {
      let n = 0;
      for (const [k, v] of [...storage.all]) {
        if (!k.startsWith("Grant:") || v.accountId !== account) continue;
        const grantId = k.slice("Grant:".length);
        for (const [k2, v2] of [...storage.all]) if (v2.grantId === grantId) storage.all.delete(k2);
        storage.all.delete(k);
        n++;
      }
      return n;
    },
    disableUser: (account) => void disabled.add(account),
    revokeAccessToken: (token) => storage.all.delete(`AccessToken:${token}`),
    setTtl: (s) => {
      ttl = s;
    },
    setTokenEndpoint: (mode) => {
      tokenMode = mode;
    },
    stop: () => close(server),
  };
}

/** The protected API: the account of a valid, unexpired access token. */
async function me(p: ProviderInstance, req: IncomingMessage, res: ServerResponse): Promise<void> {
  req.resume();
  const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? "");
  const token = m ? await p.AccessToken.find(m[1] as string).catch(() => undefined) : undefined;
  if (!token || token.isExpired) {
    res.writeHead(401, {
      "www-authenticate": 'Bearer error="invalid_token"',
      "content-type": "application/json",
    });
    return void res.end('{"message":"Bad credentials"}');
  }
  const account = ACCOUNTS[token.accountId];
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify({ login: token.accountId, name: account?.name, repos: account?.repos }));
}

/** The login page: a username form; after it, consent is granted for what the client asked. */
async function interaction(
  p: ProviderInstance,
  req: IncomingMessage,
  res: ServerResponse,
  submit: boolean,
): Promise<void> {
  const details = await p.interactionDetails(req, res);
  if (details.prompt.name === "login") {
    if (!submit || req.method !== "POST") {
      req.resume();
      res.writeHead(200, { "content-type": "text/html" });
      return void res.end(
        `<!doctype html><title>Sign in to Example Provider</title><form method="post" action="/interaction/${details.uid}/login"><input name="login"><button>Sign in</button></form>`,
      );
    }
    let body = "";
    for await (const c of req) body += String(c);
    const login = new URLSearchParams(body).get("login") ?? "";
    if (!ACCOUNTS[login]) {
      res.writeHead(200, { "content-type": "text/html" });
      return void res.end("<p>unknown user</p>");
    }
    return p.interactionFinished(
      req,
      res,
      { login: { accountId: login } },
      { mergeWithLastSubmission: false },
    );
  }
  req.resume();
  const accountId = details.session?.accountId as string;
  const grant = new p.Grant({ clientId: String(details.params.client_id), accountId });
  for (const s of String(details.params.scope ?? "").split(" ")) if (s) grant.addOIDCScope(s);
  const grantId = await grant.save();
  return p.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

export interface ApiServer {
  url: string;
  /** Authorization headers received, in order. */
  authorizations(): string[];
  stop(): Promise<void>;
}

/** The MCP server acting on the provider's API with the token it is given. */
export async function startApiServer(providerIssuer: string): Promise<ApiServer> {
  const seen: string[] = [];
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const server = createServer((req, res) => {
    void (async () => {
      const auth = req.headers.authorization ?? "";
      seen.push(auth);
      let raw = "";
      for await (const c of req) raw += String(c);
      // A server checks the token it is given before it does anything: 401 when the provider
      // refuses it. (Without one, it serves what needs no account: initialize, lists.)
      if (auth) {
        const check = await fetch(`${providerIssuer}/api/me`, { headers: { authorization: auth } });
        await check.arrayBuffer();
        if (check.status === 401) {
          res.writeHead(401, { "www-authenticate": 'Bearer error="invalid_token"' });
          return void res.end();
        }
      }
      const body = raw ? (JSON.parse(raw) as unknown) : undefined;
      const sid = req.headers["mcp-session-id"];
      let transport = typeof sid === "string" ? transports.get(sid) : undefined;
      if (!transport && isInitializeRequest(body)) {
        const t = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => void transports.set(id, t),
        });
        const mcp = new McpServer({ name: "api-server", version: "1.0.0" });
        mcp.registerTool("whoami", { description: "Who the provider says you are" }, async (extra) => {
          const headers = extra.requestInfo?.headers ?? {};
          const r = await fetch(`${providerIssuer}/api/me`, {
            headers: { authorization: String(headers.authorization ?? "") },
          });
          return { content: [{ type: "text" as const, text: await r.text() }], isError: r.status !== 200 };
        });
        await mcp.connect(t);
        transport = t;
      }
      if (!transport) {
        res.writeHead(404).end();
        return;
      }
      await transport.handleRequest(req, res, body);
    })().catch(() => {
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    authorizations: () => seen.slice(),
    async stop() {
      for (const t of transports.values()) await t.close().catch(() => {});
      await close(server);
    },
  };
}
