/**
 * The edge's OAuth 2.1 authorization server: oidc-provider (the certified OpenID Provider for
 * Node), wrapped where MCP clients need more than it does by default:
 *
 * - discovery at both RFC 8414 and OIDC well-knowns, PKCE S256 only, `iss` on every
 *   authorization response (RFC 9207), codes single-use and bound (a replay revokes the grant);
 * - clients pre-registered (config, admin API), by Client ID Metadata Document (fetched through
 *   the guarded egress, size and time capped), or by DCR (RFC 7591; rate limited, unknown scopes
 *   dropped, per-URI reasons; `clients.ts`), with the loopback port rule for every client;
 * - access tokens: ES256 JWTs for one route (RFC 8707 `aud` = publicUrl + route, RFC 9068), keys
 *   in the AsStore rotating on schedule; refresh tokens opaque, hashed at rest, rotated with a
 *   grace window (`grace.ts`);
 * - login by the configured methods (`login.ts`), consent on the edge's own page (`pages.ts`),
 *   remembered per (tenant, user, client) for `consent.remember`;
 * - revocation immediate at the edge (`verify.ts`); every leg published on `asChannel` (audit and
 *   metrics subscribe).
 *
 * Endpoints (public listener): /.well-known/oauth-authorization-server,
 * /.well-known/openid-configuration, /authorize, /token, /register, /revoke, /as/jwks,
 * /as/interaction/{uid}, /as/login/{method}/..., /as/userinfo, /as/grants (the grants page).
 *
 * This file stays one file: the provider's configuration and the request dispatch around it are
 * one piece (each hook refers to the state the dispatch keeps); the pieces that stand alone are in
 * their own files.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Readable } from "node:stream";
import { decodeJwt, exportJWK, generateKeyPair, type JWK } from "jose";
import Provider, {
  errors as oidcErrors,
  interactionPolicy,
  type OidcClient,
  type OidcInteraction,
} from "oidc-provider";
import type { Config } from "../config/schema.ts";
import { defaultScopes, routeScopes as scopesOfRoute } from "../config/scopes.ts";
import type { Egress } from "../egress/index.ts";
import { type AsEvent, asChannel } from "../observability/channels.ts";
import type { Logger } from "../observability/logger.ts";
import type { AsStore } from "../store/types.ts";
import { escapeHtml, sendPage } from "../vault/pages.ts";
import { accountId, adapterFor, parseAccountId, sha256 } from "./adapter.ts";
import { loopbackMatch, normalizeRegistration, redirectUriProblems } from "./clients.ts";
import { invalidGrant, RefreshGrace, type TokenAnswer } from "./grace.ts";
import type { InteractionView, LoginEnv, LoginMethod, LoginResult } from "./login.ts";
import type { Principal } from "../auth/types.ts";
import type { ConnectChain } from "./chain.ts";
import { LoginRevoked } from "./login.ts";
import { consentPage, describeScope, errorPage, type GrantRow, grantsPage } from "./pages.ts";
import { GRANT_CLAIM, LocalVerifier, Revocations, TOOLS_CLAIM } from "./verify.ts";

type AsConfig = Config["auth"]["authorizationServer"];

const MAX_FORM_BYTES = 64 * 1024;
const SIGNING_KIND = "SigningKey";
const FORM_KEY_KIND = "FormKey";
const ACCOUNT_KIND = "Account";
const CONSENT_KIND = "Consent";
const CLIENT_SEEN_KIND = "ClientSeen";
/** Sign-ins for the grants page: pseudo-interactions the login methods see like any other. */
const GRANTS_LOGIN_KIND = "GrantsLogin";
const GRANTS_UID = "grants-";
const GRANTS_SESSION_MS = 30 * 60_000;

export interface AuthorizationServerDeps {
  config: Config;
  store: AsStore;
  egress: Egress;
  log: Logger;
  methods: LoginMethod[];
  /** Distributed mode: tells the other instances of a revocation (`grant:<id>`, `jti:<id>`). */
  announce?: (id: string) => void;
  /** DCR rate limit: true when a registration from this address may go ahead. */
  mayRegister?: (address: string) => boolean;
  /** The connections a route needs, chained right after consent (`chain.ts`). */
  chain?: ConnectChain;
}

interface FetchInit {
  method?: string;
  headers?: Headers;
  body?: string;
}

export class AuthorizationServer {
  readonly issuer: string;
  readonly verifier: LocalVerifier;
  readonly revocations: Revocations;
  readonly #d: AuthorizationServerDeps;
  readonly #as: AsConfig;
  readonly #methods: Map<string, LoginMethod>;
  readonly #scopes: Set<string>;
  /** The route resource URLs (publicUrl + route) of routes that accept oauth, with their scopes. */
  readonly #resources: Map<string, string[]>;
  /** Signs the forms' CSRF tokens and the grants page's session: one key shared by every instance. */
  #csrfKey: Buffer = randomBytes(32);
  readonly #cookieSecure: boolean;
  readonly #grace: RefreshGrace;
  #provider!: Provider;
  #handler!: (req: IncomingMessage, res: ServerResponse) => void;
  #jwks: JWK[] = [];
  #timer: NodeJS.Timeout | undefined;
  #revoking = new Map<string, Promise<void>>();

  private constructor(d: AuthorizationServerDeps) {
    this.#d = d;
    const cfg = d.config;
    this.#as = cfg.auth.authorizationServer;
    this.issuer = (cfg.publicUrl ?? "").replace(/\/$/, "");
    this.#cookieSecure = this.issuer.startsWith("https:");
    this.#methods = new Map(d.methods.map((m) => [m.name, m]));
    this.#resources = new Map();
    for (const s of Object.values(cfg.servers)) {
      if (!s.auth.includes("oauth")) continue;
      this.#resources.set(`${this.issuer}${s.route}`, scopesOfRoute(s, true));
    }
    this.#scopes = new Set([...this.#resources.values()].flat());
    this.revocations = new Revocations(d.store);
    this.verifier = new LocalVerifier({
      issuer: this.issuer,
      jwks: { keys: [] },
      revoked: this.revocations,
      tenantClaim: cfg.tenancy.claim,
      leeway: cfg.auth.leeway,
    });
    this.#grace = new RefreshGrace({
      store: d.store,
      graceMs: this.#as.tokens.refreshGrace,
      keepMs: this.#as.tokens.refreshTtl,
      grantOf: (body) => {
        try {
          const at = (JSON.parse(body) as { access_token?: string }).access_token;
          const gid = at ? decodeJwt(at)[GRANT_CLAIM] : undefined;
          return typeof gid === "string" ? gid : undefined;
        } catch {
          return undefined;
        }
      },
      reused: async (grantId) => {
        this.#event({
          leg: "reuse_detected",
          outcome: "refused",
          reason: "refresh token replayed after the grace",
          ...(grantId ? { grantId } : {}),
        });
        if (grantId) await this.revokeGrant(grantId);
      },
    });
  }

  static async create(d: AuthorizationServerDeps): Promise<AuthorizationServer> {
    const as = new AuthorizationServer(d);
    await as.revocations.start(5000);
    await as.#loadFormKey();
    await as.#loadKeys();
    as.#timer = setInterval(
      () =>
        void as
          .#loadKeys()
          .catch((err: unknown) =>
            d.log.warn({ err: String(err) }, "authorization server: key rotation failed"),
          ),
      3_600_000,
    );
    as.#timer.unref();
    return as;
  }

  close(): void {
    clearInterval(this.#timer);
    this.revocations.stop();
  }

  /**
   * The key of the pages' CSRF tokens and session cookie, kept in the store so that a form served
   * by one instance is accepted by another (no session affinity needed): the first instance to
   * start stores it, every other reads it.
   */
  async #loadFormKey(): Promise<void> {
    await this.#d.store.add({
      kind: FORM_KEY_KIND,
      id: "current",
      payload: JSON.stringify(randomBytes(32).toString("base64url")),
      grantId: null,
      uid: null,
      tenant: null,
      subject: null,
      clientId: null,
      expiresAt: null,
      consumedAt: null,
    });
    const stored = await this.#d.store.get(FORM_KEY_KIND, "current");
    if (!stored) throw new Error("authorization server: the form key could not be stored");
    this.#csrfKey = Buffer.from(JSON.parse(stored.payload) as string, "base64url");
  }

  // ---- signing keys: one per rotation period, the current and the previous one published

  async #loadKeys(): Promise<void> {
    const period = Math.floor(Date.now() / this.#as.tokens.keyRotation);
    const id = `k${period}`;
    if (!(await this.#d.store.get(SIGNING_KIND, id))) {
      const { privateKey } = await generateKeyPair("ES256", { extractable: true });
      const jwk = {
        ...(await exportJWK(privateKey)),
        alg: "ES256",
        use: "sig",
        kid: `${id}-${randomBytes(4).toString("hex")}`,
      };
      // Every instance that finds the period's key missing tries; one key per period is kept.
      await this.#d.store.add({
        kind: SIGNING_KIND,
        id,
        payload: JSON.stringify(jwk),
        grantId: null,
        uid: null,
        tenant: null,
        subject: null,
        clientId: null,
        expiresAt: (period + 3) * this.#as.tokens.keyRotation,
        consumedAt: null,
      });
    }
    const keys = (await this.#d.store.list(SIGNING_KIND, {}, 3))
      .filter((r) => Number(r.id.slice(1)) <= period)
      .sort((a, b) => Number(b.id.slice(1)) - Number(a.id.slice(1)))
      .slice(0, 2)
      .map((r) => JSON.parse(r.payload) as JWK);
    const same = keys.map((k) => k.kid).join() === this.#jwks.map((k) => k.kid).join();
    if (same) return;
    this.#jwks = keys;
    this.verifier.setKeys({ keys: keys.map(({ d: _d, ...pub }) => pub) });
    this.#build();
  }

  // ---- the provider

  #build(): void {
    const as = this.#as;
    const resources = this.#resources;
    const onlyResource = resources.size === 1 ? [...resources.keys()][0] : undefined;
    const provider = new Provider(this.issuer, {
      adapter: adapterFor(this.#d.store, { revokeGrant: (gid) => this.revokeGrant(gid) }),
      clients: as.registration.preRegistered.map((c) => ({
        client_id: c.clientId,
        ...(c.clientName ? { client_name: c.clientName } : {}),
        ...(c.clientSecret
          ? { client_secret: c.clientSecret, token_endpoint_auth_method: "client_secret_basic" }
          : { token_endpoint_auth_method: "none" }),
        redirect_uris: c.redirectUris,
        ...(c.redirectUris.some((u) => !/^https?:/.test(u)) ? { application_type: "native" } : {}),
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        ...(c.scopes ? { scope: c.scopes.join(" ") } : {}),
      })),
      jwks: { keys: this.#jwks },
      cookies: {
        // Signed with the current key, accepted under the previous one too (a sign-in that spans
        // a key rotation goes on).
        keys: (this.#jwks.length > 0 ? this.#jwks : [{ d: "" }]).map((k) => sha256(`cookies:${k.d ?? ""}`)),
        names: {
          session: this.#cookieSecure ? "__Host-mcp_edge_as" : "mcp_edge_as",
          interaction: "mcp_edge_as_interaction",
          resume: "mcp_edge_as_resume",
        },
        long: { httpOnly: true, sameSite: "lax", secure: this.#cookieSecure },
        short: { httpOnly: true, sameSite: "lax", secure: this.#cookieSecure },
      },
      scopes: ["openid", "offline_access", ...this.#scopes],
      claims: { openid: ["sub"] },
      responseTypes: ["code"],
      pkce: { required: () => true },
      routes: {
        authorization: "/authorize",
        token: "/token",
        registration: "/register",
        revocation: "/revoke",
        jwks: "/as/jwks",
        userinfo: "/as/userinfo",
        end_session: "/as/session/end",
        introspection: "/as/introspect",
        pushed_authorization_request: "/as/par",
        code_verification: "/as/device",
        device_authorization: "/as/device/auth",
        backchannel_authentication: "/as/backchannel",
      },
      interactions: {
        url: (_ctx: unknown, i: { uid: string }) => `/as/interaction/${i.uid}`,
        policy: consentAlways(),
      },
      features: {
        devInteractions: { enabled: false },
        registration: { enabled: as.registration.dcr.enabled, initialAccessToken: false },
        revocation: { enabled: true },
        userinfo: { enabled: true },
        rpInitiatedLogout: { enabled: false },
        clientIdMetadataDocument: {
          enabled: as.registration.cimd.enabled,
          ack: "draft-02",
          cacheDuration: {
            min: Math.ceil(as.registration.cimd.cacheMin / 1000),
            max: Math.ceil(as.registration.cimd.cacheMax / 1000),
          },
        },
        resourceIndicators: {
          enabled: true,
          defaultResource: (_ctx: unknown, _client: unknown, oneOf?: string[]) => oneOf?.[0] ?? onlyResource,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx: unknown, resource: string) => {
            const scopes = resources.get(resource);
            if (!scopes)
              throw new oidcErrors.InvalidTarget!(
                "this authorization server issues tokens only for the MCP routes of this edge",
              );
            return {
              scope: scopes.join(" "),
              audience: resource,
              accessTokenTTL: Math.floor(as.tokens.accessTtl / 1000),
              accessTokenFormat: "jwt",
              jwt: { sign: { alg: "ES256" } },
            };
          },
        },
      },
      extraTokenClaims: async (
        _ctx: unknown,
        token: { kind: string; grantId?: string; accountId?: string },
      ) => {
        if (token.kind !== "AccessToken" || !token.accountId) return undefined;
        const login = await this.#login(token.accountId);
        return {
          [this.#d.config.tenancy.claim]: parseAccountId(token.accountId).tenant ?? undefined,
          ...(token.grantId ? { [GRANT_CLAIM]: token.grantId } : {}),
          ...(login?.tools ? { [TOOLS_CLAIM]: login.tools } : {}),
        };
      },
      findAccount: async (_ctx: unknown, sub: string) => ({ accountId: sub, claims: async () => ({ sub }) }),
      issueRefreshToken: async (_ctx: unknown, client: { grantTypeAllowed(t: string): boolean }) =>
        client.grantTypeAllowed("refresh_token"),
      rotateRefreshToken: true,
      ttl: {
        AccessToken: Math.floor(as.tokens.accessTtl / 1000),
        AuthorizationCode: Math.floor(as.tokens.codeTtl / 1000),
        Interaction: 600,
        Session: 86_400,
        Grant: Math.floor(as.tokens.refreshTtl / 1000),
        RefreshToken: (_ctx: unknown, token: { iiat?: number; iat?: number }) => {
          const start = token.iiat ?? token.iat ?? Math.floor(Date.now() / 1000);
          return Math.max(1, start + Math.floor(as.tokens.refreshTtl / 1000) - Math.floor(Date.now() / 1000));
        },
      },
      clientDefaults: {
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: "none",
        id_token_signed_response_alg: "ES256",
      },
      enabledJWA: { idTokenSigningAlgValues: ["ES256"] },
      fetch: (url: string, init: FetchInit) => this.#fetchDocument(url, init),
      renderError: async (
        ctx: { type: string; body: string; status: number },
        out: Record<string, string>,
      ) => {
        ctx.type = "html";
        ctx.body = errorPage(out.error ?? "server_error", out.error_description);
      },
      discovery: { service_documentation: undefined },
    });
    provider.proxy = true;
    // The loopback port rule (RFC 8252 §7.3) for every client, not only `application_type: native`.
    const allowed = provider.Client.prototype.redirectUriAllowed;
    provider.Client.prototype.redirectUriAllowed = function (this: OidcClient, value: string) {
      return allowed.call(this, value) || loopbackMatch(value, this.redirectUris);
    };
    provider.on("grant.success", (ctx: OidcCtx) => {
      const gt = ctx.oidc?.params?.grant_type;
      this.#event({ leg: gt === "refresh_token" ? "refresh" : "token", outcome: "ok", ...this.#who(ctx) });
    });
    provider.on("grant.error", (ctx: OidcCtx, err: { error?: string; error_description?: string }) => {
      const gt = ctx.oidc?.params?.grant_type;
      this.#event({
        leg: gt === "refresh_token" ? "refresh" : "token",
        outcome: "refused",
        reason: reasonOf(err),
        ...this.#who(ctx),
      });
    });
    provider.on("authorization.success", (ctx: OidcCtx) =>
      this.#event({ leg: "code", outcome: "ok", ...this.#who(ctx) }),
    );
    provider.on("authorization.error", (ctx: OidcCtx, err: { error?: string }) =>
      this.#event({ leg: "authorize", outcome: "refused", reason: reasonOf(err), ...this.#who(ctx) }),
    );
    provider.on("registration_create.success", (ctx: OidcCtx, client: OidcClient) =>
      this.#event({
        leg: "registration",
        outcome: "ok",
        clientId: client.clientId,
        redirectHost: hostOf(client.redirectUris[0]),
        tenant: null,
        subject: null,
        ...(ctx ? {} : {}),
      }),
    );
    provider.on("registration_create.error", (_ctx: OidcCtx, err: { error?: string }) =>
      this.#event({ leg: "registration", outcome: "refused", reason: reasonOf(err) }),
    );
    provider.on("revocation.success", (ctx: OidcCtx) =>
      this.#event({ leg: "revoke", outcome: "ok", ...this.#who(ctx) }),
    );
    provider.on("revocation.error", (ctx: OidcCtx, err: { error?: string }) =>
      this.#event({ leg: "revoke", outcome: "refused", reason: reasonOf(err), ...this.#who(ctx) }),
    );
    provider.on("server_error", (_ctx: unknown, err: unknown) =>
      this.#d.log.error({ err }, "authorization server error"),
    );
    this.#provider = provider;
    this.#handler = provider.callback();
  }

  #who(ctx: OidcCtx | undefined): Pick<AsEvent, "clientId" | "redirectHost" | "tenant" | "subject"> {
    const params = ctx?.oidc?.params ?? {};
    const clientId =
      ctx?.oidc?.client?.clientId ?? (typeof params.client_id === "string" ? params.client_id : null);
    const account = ctx?.oidc?.session?.accountId ?? ctx?.oidc?.entities?.Grant?.accountId;
    const who = typeof account === "string" ? parseAccountId(account) : undefined;
    return {
      clientId,
      redirectHost: hostOf(typeof params.redirect_uri === "string" ? params.redirect_uri : undefined),
      tenant: who?.tenant ?? null,
      subject: who?.subject ?? null,
    };
  }

  #event(e: Partial<AsEvent> & Pick<AsEvent, "leg" | "outcome">): void {
    asChannel.publish({
      clientId: null,
      redirectHost: null,
      tenant: null,
      subject: null,
      ...e,
    } satisfies AsEvent);
  }

  // ---- CIMD documents: through the guarded egress, capped

  async #fetchDocument(url: string, init: FetchInit): Promise<Response> {
    const cimd = this.#as.registration.cimd;
    const signal = AbortSignal.timeout(cimd.timeout);
    const host = hostOf(url);
    try {
      const res = await this.#d.egress.request(url, {
        method: "GET",
        headers: { accept: init.headers?.get("accept") ?? "application/json", "user-agent": "mcp-edge" },
        // A run-time URL: every hop is checked, unless the operator opted in to private addresses.
        trust: cimd.allowPrivateNetworks ? "config" : "runtime",
        maxResponseBytes: cimd.maxBytes,
        headersTimeout: cimd.timeout,
        signal,
      });
      // The egress fails the body with EDGE_EGRESS_RESPONSE_TOO_LARGE past `maxResponseBytes`,
      // whatever its framing (declared length, chunked, close-delimited).
      const chunks: Buffer[] = [];
      for await (const c of res.body) chunks.push(c);
      const headers = new Headers();
      for (const [k, v] of Object.entries(res.headers)) if (typeof v === "string") headers.set(k, v);
      this.#event({
        leg: "cimd_fetch",
        outcome: res.status === 200 ? "ok" : "refused",
        clientId: url,
        redirectHost: host,
        ...(res.status === 200 ? {} : { reason: `status ${res.status}` }),
      });
      return new Response(Buffer.concat(chunks), { status: res.status, headers });
    } catch (err) {
      const code = (err as { code?: string }).code ?? (signal.aborted ? "timeout" : "fetch failed");
      this.#event({ leg: "cimd_fetch", outcome: "refused", clientId: url, redirectHost: host, reason: code });
      throw err;
    }
  }

  // ---- HTTP

  /** Answers a request of the AS; false when the path is not one of its. */
  handle(req: IncomingMessage, res: ServerResponse, path: string, query: URLSearchParams): boolean {
    if (path === "/.well-known/oauth-authorization-server" || path === "/.well-known/openid-configuration") {
      this.#provide(req, res, "/.well-known/openid-configuration");
      return true;
    }
    if (path === "/token" && req.method === "POST") {
      void this.#token(req, res).catch((err: unknown) => this.#crash(res, err));
      return true;
    }
    if (path === "/register" && req.method === "POST") {
      void this.#register(req, res).catch((err: unknown) => this.#crash(res, err));
      return true;
    }
    if (path === "/revoke" && req.method === "POST") {
      void this.#revoke(req, res).catch((err: unknown) => this.#crash(res, err));
      return true;
    }
    if (path.startsWith("/as/interaction/")) {
      void this.#interaction(req, res, path).catch((err: unknown) => this.#crash(res, err));
      return true;
    }
    if (path === "/as/grants" || path === "/as/grants/revoke") {
      void this.#grantsPage(req, res, path).catch((err: unknown) => this.#crash(res, err));
      return true;
    }
    if (path.startsWith("/as/login/")) {
      void this.#login2(req, res, path, query).catch((err: unknown) => this.#crash(res, err));
      return true;
    }
    if (path === "/authorize" && (req.method === "GET" || req.method === "HEAD")) {
      this.#provide(req, res, this.#withDefaultScope(query));
      return true;
    }
    if (
      path === "/authorize" ||
      path.startsWith("/authorize/") ||
      path === "/as/jwks" ||
      path === "/as/userinfo" ||
      path === "/register" ||
      path.startsWith("/register/") ||
      path === "/token" ||
      path === "/revoke"
    ) {
      this.#provide(req, res);
      return true;
    }
    return false;
  }

  /**
   * An authorization request that names none of the route's scopes gets the route's default
   * scopes (RFC 6749 §3.3: the AS may apply a default): MCP clients often send no `scope`.
   */
  #withDefaultScope(query: URLSearchParams): string {
    const only = this.#resources.size === 1 ? [...this.#resources.keys()][0] : undefined;
    const resource = query.get("resource") ?? only;
    const routeScopes = resource ? this.#resources.get(resource) : undefined;
    const asked = (query.get("scope") ?? "").split(" ").filter(Boolean);
    if (routeScopes && !asked.some((s) => routeScopes.includes(s))) {
      const server = this.#d.config.servers[serverOf(this.#d.config, this.issuer, resource ?? "")];
      const defaults = server ? defaultScopes(server, true) : routeScopes.slice(0, 1);
      query.set("scope", [...asked, ...defaults].join(" "));
    }
    return `/authorize?${query.toString()}`;
  }

  #crash(res: ServerResponse, err: unknown): void {
    this.#d.log.error({ err }, "authorization server request failed");
    if (!res.headersSent) sendPage(res, 500, "Something went wrong", "<p>Try again from your app.</p>");
    else res.destroy();
  }

  /** Hands a request to oidc-provider, its URL seen as the issuer's (publicUrl), whatever the Host. */
  #provide(req: IncomingMessage, res: ServerResponse, url?: string, body?: string): void {
    const u = new URL(this.issuer);
    req.headers["x-forwarded-proto"] = u.protocol.slice(0, -1);
    req.headers["x-forwarded-host"] = u.host;
    delete req.headers["x-forwarded-for"];
    delete req.headers["x-forwarded-port"];
    if (url) req.url = url;
    this.#handler(body === undefined ? req : withBody(req, body), res);
  }

  /** Runs a request through the provider and captures its answer instead of sending it. */
  async #capture(
    req: IncomingMessage,
    body: string,
  ): Promise<TokenAnswer & { headers: Record<string, string> }> {
    const { ServerResponse: SR } = await import("node:http");
    return new Promise((resolve, reject) => {
      const fake = new SR(req);
      const chunks: Buffer[] = [];
      const headers: Record<string, string> = {};
      fake.write = ((c: string | Buffer) => {
        chunks.push(Buffer.from(c));
        return true;
      }) as typeof fake.write;
      fake.end = ((c?: string | Buffer) => {
        if (c) chunks.push(Buffer.from(c));
        for (const [k, v] of Object.entries(fake.getHeaders())) if (v !== undefined) headers[k] = String(v);
        resolve({ status: fake.statusCode, body: Buffer.concat(chunks).toString("utf8"), headers });
        return fake;
      }) as typeof fake.end;
      try {
        this.#provide(req, fake, undefined, body);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  async #readBody(req: IncomingMessage): Promise<string | undefined> {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > MAX_FORM_BYTES) return undefined;
      chunks.push(c);
    }
    return Buffer.concat(chunks).toString("utf8");
  }

  #json(res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      "content-type": "application/json; charset=utf-8",
      "cache-control": "no-store",
      pragma: "no-cache",
      "content-length": Buffer.byteLength(text),
      ...extra,
    });
    res.end(text);
  }

  async #token(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await this.#readBody(req);
    if (body === undefined)
      return this.#json(res, 413, { error: "invalid_request", error_description: "request too large" });
    const form = new URLSearchParams(body);
    const refresh = form.get("grant_type") === "refresh_token" ? form.get("refresh_token") : null;
    if (!refresh) {
      const a = await this.#capture(req, body);
      return this.#send(res, a);
    }
    const answer = await this.#grace.refresh(refresh, async () => {
      const rt = await this.#provider.RefreshToken.find(refresh);
      if (rt && typeof rt.accountId === "string") {
        const login = await this.#login(rt.accountId);
        const method = login && this.#methods.get(login.method);
        if (login && method?.recheck) {
          try {
            const kept = await method.recheck(login);
            if (kept.upstreamRefresh !== undefined && kept.upstreamRefresh !== login.upstreamRefresh)
              await this.#saveLogin({ ...login, upstreamRefresh: kept.upstreamRefresh });
          } catch (err) {
            if (!(err instanceof LoginRevoked)) throw err;
            this.#event({
              leg: "refresh",
              outcome: "refused",
              reason: "login revoked",
              clientId: rt.clientId,
              ...who(rt.accountId),
              grantId: rt.grantId,
            });
            await this.revokeGrant(rt.grantId);
            return invalidGrant("the sign-in behind this grant is no longer valid");
          }
        }
      }
      return this.#capture(req, body);
    });
    this.#send(res, answer);
  }

  #send(res: ServerResponse, a: TokenAnswer & { headers?: Record<string, string> }): void {
    const headers: Record<string, string> = {
      ...(a.headers ?? {}),
      "cache-control": "no-store",
      "content-type": "application/json; charset=utf-8",
      "content-length": String(Buffer.byteLength(a.body)),
    };
    delete headers["transfer-encoding"];
    res.writeHead(a.status, headers);
    res.end(a.body);
  }

  async #register(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const address = req.socket.remoteAddress ?? "";
    if (this.#as.registration.dcr.enabled && this.#d.mayRegister && !this.#d.mayRegister(address)) {
      req.resume();
      this.#event({ leg: "registration", outcome: "refused", reason: "rate limited" });
      return this.#json(
        res,
        429,
        { error: "invalid_request", error_description: "too many registrations; try again later" },
        { "retry-after": "60" },
      );
    }
    const text = await this.#readBody(req);
    let doc: unknown;
    try {
      doc = text === undefined ? undefined : JSON.parse(text);
    } catch {
      doc = undefined;
    }
    if (!this.#as.registration.dcr.enabled) return this.#provide(req, res, undefined, text ?? "");
    if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
      this.#event({ leg: "registration", outcome: "refused", reason: "invalid_client_metadata" });
      return this.#json(res, 400, {
        error: "invalid_client_metadata",
        error_description: "the body must be a JSON object",
      });
    }
    const problems = redirectUriProblems((doc as { redirect_uris?: unknown }).redirect_uris);
    if (problems) {
      this.#event({ leg: "registration", outcome: "refused", reason: "invalid_redirect_uri" });
      return this.#json(res, 400, { error: "invalid_redirect_uri", error_description: problems });
    }
    const normalized = normalizeRegistration(doc as Record<string, unknown>);
    const a = await this.#capture(req, JSON.stringify(normalized));
    if (a.status === 201) {
      // An unused registration expires: the record is kept `unusedTtl` until a login completes.
      try {
        const id = (JSON.parse(a.body) as { client_id?: string }).client_id;
        if (id) await this.#touchClient(id, this.#as.registration.dcr.unusedTtl);
      } catch {
        // the answer stays as it is
      }
    }
    this.#send(res, a);
  }

  /** Sets when a DCR client is deleted if unused; a completed login pushes it to the refresh lifetime. */
  async #touchClient(clientId: string, ttl: number): Promise<void> {
    const rec = await this.#d.store.get("Client", clientId);
    if (!rec) return;
    await this.#d.store.put({ ...rec, expiresAt: Date.now() + ttl });
    await this.#d.store.put({ ...rec, kind: CLIENT_SEEN_KIND, expiresAt: Date.now() + ttl });
  }

  async #revoke(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = (await this.#readBody(req)) ?? "";
    const form = new URLSearchParams(body);
    const token = form.get("token") ?? "";
    // A JWT access token of this AS (oidc-provider keeps no record of JWTs, and refuses to revoke
    // them): verified here, and remembered as revoked by its `jti` until it expires. Only the
    // client it was issued to may revoke it (RFC 7009 §2.1); any other token goes to the provider.
    const mine = token.split(".").length === 3 ? await this.verifier.check(token) : undefined;
    if (!mine) return this.#send(res, await this.#capture(req, body));
    const caller = form.get("client_id") ?? basicClientId(req.headers.authorization);
    if (caller === mine.clientId) {
      const until = mine.exp * 1000 + 60_000;
      try {
        await this.#d.store.revokeToken(mine.jti, Date.now(), until);
      } catch (err) {
        this.#d.log.warn({ err: String(err) }, "authorization server: revocation not stored");
        return this.#json(res, 503, { error: "temporarily_unavailable" });
      }
      this.revocations.add(`jti:${mine.jti}`, until);
      this.#d.announce?.(`jti:${mine.jti}`);
      this.#event({ leg: "revoke", outcome: "ok", clientId: mine.clientId ?? null, ...who(mine.sub) });
    } else {
      this.#event({
        leg: "revoke",
        outcome: "refused",
        clientId: caller ?? null,
        reason: "not the token's client",
      });
    }
    // RFC 7009 §2.2: 200 whether or not anything was revoked.
    res.writeHead(200, { "cache-control": "no-store", "content-length": "0" }).end();
  }

  /** Revokes a grant: its records deleted, its access tokens refused by every instance at once. */
  revokeGrant(grantId: string): Promise<void> {
    let p = this.#revoking.get(grantId);
    if (!p) {
      p = (async () => {
        const until = Date.now() + this.#as.tokens.accessTtl + 120_000;
        this.revocations.add(`grant:${grantId}`, until);
        await this.#d.store.revokeGrant(grantId, Date.now(), until);
        this.#d.announce?.(`grant:${grantId}`);
      })().finally(() => this.#revoking.delete(grantId));
      this.#revoking.set(grantId, p);
    }
    return p;
  }

  /** Another instance revoked something (the broadcast bus). */
  revokedElsewhere(id: string): void {
    this.revocations.add(id, Date.now() + this.#as.tokens.accessTtl + 120_000);
  }

  // ---- logins and accounts

  async #login(account: string): Promise<LoginResult | undefined> {
    const rec = await this.#d.store.get(ACCOUNT_KIND, sha256(account));
    return rec ? (JSON.parse(rec.payload) as LoginResult) : undefined;
  }

  async #saveLogin(login: LoginResult): Promise<string> {
    const id = accountId(login.method, login.tenant, login.subject);
    await this.#d.store.put({
      kind: ACCOUNT_KIND,
      id: sha256(id),
      payload: JSON.stringify(login),
      grantId: null,
      uid: null,
      tenant: login.tenant,
      subject: login.subject,
      clientId: null,
      expiresAt: Date.now() + this.#as.tokens.refreshTtl,
      consumedAt: null,
    });
    return id;
  }

  #env(): LoginEnv {
    return {
      publicUrl: this.issuer,
      callbackUrl: (name) => `${this.issuer}/as/login/${encodeURIComponent(name)}/callback`,
      interaction: async (uid) => {
        if (uid.startsWith(GRANTS_UID)) return this.#grantsView(uid);
        const i = uid ? await this.#provider.Interaction.find(uid) : undefined;
        return i ? this.#view(i) : undefined;
      },
      page: (res, status, title, body) => sendPage(res, status, title, body),
      csrfToken: (req, res, uid) => this.#csrfToken(req, res, uid),
      checkCsrf: (req, uid, token) => this.#checkCsrf(req, uid, token),
      readForm: async (req) => new URLSearchParams((await this.#readBody(req)) ?? ""),
    };
  }

  async #view(i: OidcInteraction): Promise<InteractionView> {
    const clientId = String(i.params.client_id ?? "");
    const client = await this.#provider.Client.find(clientId).catch(() => undefined);
    return {
      uid: i.uid,
      clientId,
      clientName: client?.clientName,
      scopes: String(i.params.scope ?? "")
        .split(" ")
        .filter((s) => this.#scopes.has(s)),
      resource: typeof i.params.resource === "string" ? i.params.resource : undefined,
      expiresAt: i.exp * 1000,
    };
  }

  // CSRF: a random cookie per browser; the form token is an HMAC of it and the interaction.
  #csrfCookie(): string {
    return this.#cookieSecure ? "__Host-mcp_edge_csrf" : "mcp_edge_csrf";
  }

  #csrfToken(req: IncomingMessage, res: ServerResponse, uid: string): string {
    let v = cookieOf(req, this.#csrfCookie());
    if (!v || !/^[A-Za-z0-9_-]{32,64}$/.test(v)) {
      v = randomBytes(24).toString("base64url");
      res.appendHeader(
        "set-cookie",
        `${this.#csrfCookie()}=${v}; Path=/; HttpOnly; SameSite=Lax${this.#cookieSecure ? "; Secure" : ""}`,
      );
      (req.headers as Record<string, string>).cookie =
        `${req.headers.cookie ? `${req.headers.cookie}; ` : ""}${this.#csrfCookie()}=${v}`;
    }
    return createHmac("sha256", this.#csrfKey).update(`${v}\n${uid}`).digest("base64url");
  }

  #checkCsrf(req: IncomingMessage, uid: string, token: string | undefined): boolean {
    const v = cookieOf(req, this.#csrfCookie());
    const origin = req.headers.origin;
    if (!v || !token || (origin !== undefined && origin !== new URL(this.issuer).origin)) return false;
    const want = createHmac("sha256", this.#csrfKey).update(`${v}\n${uid}`).digest();
    const got = Buffer.from(token, "base64url");
    return got.length === want.length && timingSafeEqual(got, want);
  }

  // ---- interactions: login, then consent

  async #interaction(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const parts = path.split("/"); // ["", "as", "interaction", uid, action?]
    const action = parts[4];
    let details: OidcInteraction;
    try {
      details = await this.#provider.interactionDetails(req, res);
    } catch {
      req.resume();
      return sendPage(
        res,
        400,
        "Sign-in expired",
        "<p>This sign-in is unknown or has expired. Start again from your app.</p>",
      );
    }
    if (details.uid !== parts[3]) {
      req.resume();
      return sendPage(
        res,
        400,
        "Sign-in expired",
        "<p>This sign-in is unknown or has expired. Start again from your app.</p>",
      );
    }
    const view = await this.#view(details);
    if (action === "connected") {
      // Back from a chained connection (success or not): the next one, or finish.
      req.resume();
      const login = await this.#login(details.session?.accountId ?? "");
      const tried = (new URL(req.url ?? "/", this.issuer).searchParams.get("tried") ?? "")
        .split(",")
        .filter((t) => t !== "");
      const resource =
        view.resource ?? (this.#resources.size === 1 ? [...this.#resources.keys()][0] : undefined);
      const consented = (details.result as { consent?: unknown } | undefined)?.consent !== undefined;
      if (consented && login && (await this.#chainConnections(res, view.uid, resource, login, tried))) return;
      return void res.writeHead(303, { location: details.returnTo, "cache-control": "no-store" }).end();
    }
    if (details.prompt.name === "login") {
      req.resume();
      this.#event({
        leg: "authorize",
        outcome: "ok",
        clientId: view.clientId,
        redirectHost: hostOf(String(details.params.redirect_uri ?? "")),
      });
      const methods = [...this.#methods.values()];
      if (methods.length === 1) return methods[0]!.start(view, req, res, this.#env());
      const links = methods
        .map(
          (m) =>
            `<p><a href="/as/login/${encodeURIComponent(m.name)}/${encodeURIComponent(view.uid)}">${escapeHtml(m.label)}</a></p>`,
        )
        .join("");
      return sendPage(
        res,
        200,
        "Sign in",
        `<p>Sign in to continue to <b>${escapeHtml(view.clientName ?? view.clientId)}</b>.</p>${links}`,
      );
    }
    if (details.prompt.name !== "consent") {
      req.resume();
      return sendPage(res, 400, "Cannot continue", "<p>This request cannot be completed here.</p>");
    }
    return this.#consent(req, res, details, view, action);
  }

  async #consent(
    req: IncomingMessage,
    res: ServerResponse,
    details: OidcInteraction,
    view: InteractionView,
    action: string | undefined,
  ): Promise<void> {
    const account = details.session?.accountId ?? "";
    const login = await this.#login(account);
    const client = await this.#provider.Client.find(view.clientId);
    const resource =
      view.resource ?? (this.#resources.size === 1 ? [...this.#resources.keys()][0] : undefined);
    const ref = parseAccountId(account);
    const base = {
      clientId: view.clientId,
      redirectHost: hostOf(String(details.params.redirect_uri ?? "")),
      tenant: ref.tenant,
      subject: ref.subject,
    };
    const deny = async (reason: string, description: string) => {
      this.#event({ leg: "consent", outcome: "refused", reason, ...base });
      details.result = { error: "access_denied", error_description: description };
      await details.save(Math.max(1, details.exp - Math.floor(Date.now() / 1000)));
      res.writeHead(303, { location: details.returnTo, "cache-control": "no-store" }).end();
    };
    if (!login || !client || !resource) {
      req.resume();
      return deny("no login", "the sign-in could not be completed");
    }
    if (login.resources && !login.resources.includes(resource)) {
      req.resume();
      return deny("resource not allowed", "this sign-in does not give access to that server");
    }
    const routeScopes = this.#resources.get(resource) ?? [];
    let wanted = view.scopes.filter((s) => routeScopes.includes(s));
    if (wanted.length === 0) {
      const server = this.#d.config.servers[serverOf(this.#d.config, this.issuer, resource)];
      wanted = server ? defaultScopes(server, true) : routeScopes.slice(0, 1);
    }
    if (login.scopes) wanted = wanted.filter((s) => login.scopes!.includes(s));
    const consentId = sha256(`${account}\n${view.clientId}\n${resource}`);
    const remembered = await this.#d.store.get(CONSENT_KIND, consentId);
    const had = remembered ? (JSON.parse(remembered.payload) as string[]) : [];
    const missing = wanted.filter((s) => !had.includes(s));
    const skip =
      (this.#as.registration.preRegistered.find((c) => c.clientId === view.clientId)?.skipConsent ?? false) ||
      missing.length === 0;
    if (!skip && action !== "decide") {
      req.resume();
      const clientMeta = client.metadata();
      const uris = (clientMeta.redirect_uris as string[] | undefined) ?? [];
      return sendPage(
        res,
        200,
        "Allow access?",
        consentPage({
          uid: view.uid,
          csrf: this.#csrfToken(req, res, view.uid),
          clientName: view.clientName ?? view.clientId,
          verifiedDomain: client.clientIdMetadataDocument ? (hostOf(view.clientId) ?? undefined) : undefined,
          redirectHost: hostOf(String(details.params.redirect_uri ?? "")) ?? "",
          loopbackOnly:
            uris.length > 0 && uris.every((u) => /^http:\/\/(127\.0\.0\.1|\[::1\]|localhost)[:/]/.test(u)),
          who: login.display ?? login.subject,
          scopes: missing.map((s) => ({ name: s, text: describeScope(s, this.#as.scopeDescriptions) })),
          already: had
            .filter((s) => wanted.includes(s))
            .map((s) => describeScope(s, this.#as.scopeDescriptions)),
        }),
      );
    }
    if (!skip) {
      if (req.method !== "POST") {
        req.resume();
        return sendPage(res, 405, "Allow access?", "<p>Use the consent form.</p>");
      }
      const form = new URLSearchParams((await this.#readBody(req)) ?? "");
      if (!this.#checkCsrf(req, view.uid, form.get("csrf") ?? undefined)) {
        this.#event({ leg: "consent", outcome: "refused", reason: "csrf", ...base });
        return sendPage(
          res,
          403,
          "Consent refused",
          "<p>The form did not come from this page. Start again from your app.</p>",
        );
      }
      if (form.get("decision") !== "allow") return deny("denied", "the user denied access");
    } else req.resume();
    const grant = details.grantId
      ? ((await this.#provider.Grant.find(details.grantId)) ??
        new this.#provider.Grant({ accountId: account, clientId: view.clientId }))
      : new this.#provider.Grant({ accountId: account, clientId: view.clientId });
    // The route's scopes are also scopes of the provider (a client may register them): granted
    // on both sides, with `openid` and `offline_access` (refresh tokens are always issued).
    grant.addOIDCScope(["openid", "offline_access", ...wanted].join(" "));
    grant.addResourceScope(resource, wanted.join(" "));
    const grantId = await grant.save();
    if (this.#as.consent.remember > 0)
      await this.#d.store.put({
        kind: CONSENT_KIND,
        id: consentId,
        payload: JSON.stringify([...new Set([...had, ...wanted])]),
        grantId: null,
        uid: null,
        tenant: ref.tenant,
        subject: ref.subject,
        clientId: view.clientId,
        expiresAt: Date.now() + this.#as.consent.remember,
        consumedAt: null,
      });
    if (
      client &&
      !this.#as.registration.preRegistered.some((c) => c.clientId === view.clientId) &&
      !client.clientIdMetadataDocument
    )
      await this.#touchClient(view.clientId, this.#as.tokens.refreshTtl);
    this.#event({ leg: "consent", outcome: "ok", grantId, reason: skip ? "remembered" : "granted", ...base });
    details.result = { ...(details.result ?? {}), consent: { grantId } };
    await details.save(Math.max(1, details.exp - Math.floor(Date.now() / 1000)));
    if (await this.#chainConnections(res, view.uid, resource, login, [])) return;
    res.writeHead(303, { location: details.returnTo, "cache-control": "no-store" }).end();
  }

  /**
   * After consent: sends the browser through the next connection the route needs that the person
   * has not made (`chain.ts`), to come back to `/as/interaction/{uid}/connected`. False when none
   * is left (or no vault): the authorization finishes.
   */
  async #chainConnections(
    res: ServerResponse,
    uid: string,
    resource: string | undefined,
    login: LoginResult,
    tried: readonly string[],
  ): Promise<boolean> {
    const chain = this.#d.chain;
    if (!chain) return false;
    const principal: Principal = {
      id: `oauth:${this.issuer}:${login.tenant ?? ""}:${login.subject}`,
      method: "oauth",
      tenant: login.tenant,
      subject: login.subject,
      issuer: this.issuer,
      scopes: [],
    };
    return chain.next(
      res,
      resource,
      principal,
      tried,
      (t) => `/as/interaction/${encodeURIComponent(uid)}/connected?tried=${encodeURIComponent(t.join(","))}`,
    );
  }

  async #login2(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    query: URLSearchParams,
  ): Promise<void> {
    const [, , , name = "", rest = ""] = path.split("/"); // ["", "as", "login", name, uid|callback]
    const method = this.#methods.get(decodeURIComponent(name));
    if (!method) {
      req.resume();
      return sendPage(res, 404, "Unknown sign-in method", "<p>This gateway has no such sign-in method.</p>");
    }
    const env = this.#env();
    if (rest !== "callback") {
      req.resume();
      const view = await env.interaction(decodeURIComponent(rest));
      if (!view)
        return sendPage(
          res,
          400,
          "Sign-in expired",
          "<p>This sign-in is unknown or has expired. Start again from your app.</p>",
        );
      return method.start(view, req, res, env);
    }
    const done = await method.finish(req, res, query, env);
    if (!done) {
      this.#event({ leg: "login", outcome: "refused", reason: method.name });
      return;
    }
    if (done.uid.startsWith(GRANTS_UID)) return this.#grantsSignedIn(req, res, done.uid, done.result);
    const interaction = await this.#provider.Interaction.find(done.uid);
    if (!interaction)
      return sendPage(
        res,
        400,
        "Sign-in expired",
        "<p>This sign-in has expired. Start again from your app.</p>",
      );
    const account = await this.#saveLogin(done.result);
    this.#event({
      leg: "login",
      outcome: "ok",
      clientId: String(interaction.params.client_id ?? ""),
      redirectHost: hostOf(String(interaction.params.redirect_uri ?? "")),
      tenant: done.result.tenant,
      subject: done.result.subject,
      reason: method.name,
    });
    interaction.result = { login: { accountId: account, remember: false } };
    await interaction.save(Math.max(1, interaction.exp - Math.floor(Date.now() / 1000)));
    res.writeHead(303, { location: interaction.returnTo, "cache-control": "no-store" }).end();
  }

  // ---- the self-service grants page: a person signs in (the same login methods), lists and
  // revokes the grants of their (tenant, subject)

  #grantsCookie(): string {
    return this.#cookieSecure ? "__Host-mcp_edge_grants" : "mcp_edge_grants";
  }

  /** The signed-in person of the grants page (a cookie sealed with this AS's key), if any. */
  #grantsSession(
    req: IncomingMessage,
  ): { tenant: string | null; subject: string; who: string; raw: string } | undefined {
    const raw = cookieOf(req, this.#grantsCookie());
    const dot = raw?.lastIndexOf(".") ?? -1;
    if (!raw || dot < 0) return undefined;
    const body = raw.slice(0, dot);
    const want = createHmac("sha256", this.#csrfKey).update(`grants\n${body}`).digest();
    const got = Buffer.from(raw.slice(dot + 1), "base64url");
    if (got.length !== want.length || !timingSafeEqual(got, want)) return undefined;
    try {
      const s = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as {
        t: string | null;
        s: string;
        w: string;
        e: number;
      };
      return s.e > Date.now() ? { tenant: s.t, subject: s.s, who: s.w, raw } : undefined;
    } catch {
      return undefined;
    }
  }

  async #grantsView(uid: string): Promise<InteractionView | undefined> {
    const rec = await this.#d.store.get(GRANTS_LOGIN_KIND, uid);
    if (!rec) return undefined;
    return {
      uid,
      clientId: "",
      clientName: "The grants page of this gateway",
      scopes: [],
      resource: undefined,
      expiresAt: rec.expiresAt ?? Date.now(),
    };
  }

  async #grantsPage(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const session = this.#grantsSession(req);
    if (path === "/as/grants/revoke") return this.#grantsRevoke(req, res, session);
    req.resume();
    if (req.method !== "GET" && req.method !== "HEAD")
      return sendPage(res, 405, "Your grants", "<p>Use the grants page.</p>");
    if (!session) {
      // Not signed in: a sign-in of its own, through the login methods of the authorize flow.
      const uid = `${GRANTS_UID}${randomBytes(16).toString("base64url")}`;
      await this.#d.store.put({
        kind: GRANTS_LOGIN_KIND,
        id: uid,
        payload: "{}",
        grantId: null,
        uid: null,
        tenant: null,
        subject: null,
        clientId: null,
        expiresAt: Date.now() + 600_000,
        consumedAt: null,
      });
      const view = (await this.#grantsView(uid))!;
      const methods = [...this.#methods.values()];
      if (methods.length === 1) return methods[0]!.start(view, req, res, this.#env());
      const links = methods
        .map(
          (m) =>
            `<p><a href="/as/login/${encodeURIComponent(m.name)}/${encodeURIComponent(uid)}">${escapeHtml(m.label)}</a></p>`,
        )
        .join("");
      return sendPage(res, 200, "Sign in", `<p>Sign in to see the apps you allowed.</p>${links}`);
    }
    const rows: GrantRow[] = [];
    for (const r of await this.#d.store.list("Grant", { subject: session.subject }, 1000)) {
      if (r.tenant !== session.tenant || r.clientId === null) continue;
      const g = JSON.parse(r.payload) as { resources?: Record<string, string>; iat?: number };
      const client = await this.#provider.Client.find(r.clientId).catch(() => undefined);
      let lastUsed: number | null = null;
      for (const t of await this.#d.store.list(
        "RefreshToken",
        { clientId: r.clientId, subject: session.subject },
        1000,
      )) {
        if (t.grantId !== r.id) continue;
        const iat = (JSON.parse(t.payload) as { iat?: number }).iat;
        if (iat && iat * 1000 > (lastUsed ?? 0)) lastUsed = iat * 1000;
      }
      const scopes = [
        ...new Set(
          Object.values(g.resources ?? {})
            .flatMap((v) => v.split(" "))
            .filter(Boolean),
        ),
      ];
      rows.push({
        id: r.id,
        clientName: client?.clientName ?? r.clientId,
        verifiedDomain: client?.clientIdMetadataDocument ? (hostOf(r.clientId) ?? undefined) : undefined,
        preRegistered: this.#as.registration.preRegistered.some((c) => c.clientId === r.clientId),
        scopes: scopes.map((s) => describeScope(s, this.#as.scopeDescriptions)),
        created: g.iat ? g.iat * 1000 : null,
        lastUsed,
      });
    }
    return sendPage(
      res,
      200,
      "Your grants",
      grantsPage(session.who, this.#csrfToken(req, res, `grants\n${session.raw}`), rows),
    );
  }

  async #grantsRevoke(
    req: IncomingMessage,
    res: ServerResponse,
    session: { tenant: string | null; subject: string; raw: string } | undefined,
  ): Promise<void> {
    if (req.method !== "POST") {
      req.resume();
      return sendPage(res, 405, "Your grants", "<p>Use the grants page.</p>");
    }
    const form = new URLSearchParams((await this.#readBody(req)) ?? "");
    const by = { tenant: session?.tenant ?? null, subject: session?.subject ?? null };
    if (!session || !this.#checkCsrf(req, `grants\n${session.raw}`, form.get("csrf") ?? undefined)) {
      this.#event({ leg: "revoke", outcome: "refused", reason: "csrf", ...by });
      return sendPage(
        res,
        403,
        "Revoke refused",
        `<p>The form did not come from this page. <a href="/as/grants">Start again</a>.</p>`,
      );
    }
    const id = form.get("grant") ?? "";
    const rec = id ? await this.#d.store.get("Grant", id) : undefined;
    if (!rec || rec.tenant !== session.tenant || rec.subject !== session.subject) {
      this.#event({ leg: "revoke", outcome: "refused", reason: "not the user's grant", ...by });
      return sendPage(
        res,
        404,
        "No such grant",
        `<p>You hold no such grant. <a href="/as/grants">Back to your grants</a>.</p>`,
      );
    }
    await this.revokeGrant(id);
    this.#event({ leg: "revoke", outcome: "ok", reason: "user", grantId: id, clientId: rec.clientId, ...by });
    res.writeHead(303, { location: "/as/grants", "cache-control": "no-store" }).end();
  }

  /** A login method finished for the grants page: the person's session cookie, back to the list. */
  async #grantsSignedIn(
    req: IncomingMessage,
    res: ServerResponse,
    uid: string,
    login: LoginResult,
  ): Promise<void> {
    req.resume();
    if (!(await this.#d.store.delete(GRANTS_LOGIN_KIND, uid)))
      return sendPage(
        res,
        400,
        "Sign-in expired",
        `<p>This sign-in has expired. <a href="/as/grants">Start again</a>.</p>`,
      );
    this.#event({
      leg: "login",
      outcome: "ok",
      tenant: login.tenant,
      subject: login.subject,
      reason: `${login.method} (grants page)`,
    });
    const body = Buffer.from(
      JSON.stringify({
        t: login.tenant,
        s: login.subject,
        w: login.display ?? login.subject,
        e: Date.now() + GRANTS_SESSION_MS,
      }),
    ).toString("base64url");
    const mac = createHmac("sha256", this.#csrfKey).update(`grants\n${body}`).digest("base64url");
    res.appendHeader(
      "set-cookie",
      `${this.#grantsCookie()}=${body}.${mac}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${GRANTS_SESSION_MS / 1000}${this.#cookieSecure ? "; Secure" : ""}`,
    );
    res.writeHead(303, { location: "/as/grants", "cache-control": "no-store" }).end();
  }

  // ---- admin (src/admin/api.ts): clients and grants

  async listClients(): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = this.#as.registration.preRegistered.map((c) => ({
      client_id: c.clientId,
      client_name: c.clientName ?? null,
      kind: "pre-registered",
      redirect_uris: c.redirectUris,
    }));
    for (const r of await this.#d.store.list("Client", {}, 1000)) {
      const m = JSON.parse(r.payload) as Record<string, unknown>;
      out.push({
        client_id: r.id,
        client_name: m.client_name ?? null,
        kind: "dcr",
        redirect_uris: m.redirect_uris,
        expires_at: r.expiresAt,
      });
    }
    return out;
  }

  async deleteClient(clientId: string): Promise<boolean> {
    const grants = await this.#d.store.list("Grant", { clientId }, 10_000);
    for (const g of grants) await this.revokeGrant(g.id);
    return (await this.#d.store.delete("Client", clientId)) || grants.length > 0;
  }

  async listGrants(filter: { tenant?: string; subject?: string }): Promise<Record<string, unknown>[]> {
    return (await this.#d.store.list("Grant", filter, 1000)).map((r) => {
      const g = JSON.parse(r.payload) as { resources?: Record<string, string>; iat?: number };
      return {
        id: r.id,
        tenant: r.tenant,
        subject: r.subject,
        client_id: r.clientId,
        resources: g.resources ?? {},
        created: g.iat ? g.iat * 1000 : null,
        expires: r.expiresAt,
      };
    });
  }

  async grant(id: string): Promise<{ tenant: string | null } | undefined> {
    const r = await this.#d.store.get("Grant", id);
    return r ? { tenant: r.tenant } : undefined;
  }
}

// ---- helpers

/**
 * oidc-provider's interaction policy, with consent asked whenever no grant of this AS exists yet
 * (every grant the consent page saves holds `openid`): a route without scopes would otherwise
 * have nothing missing to consent to, and no grant to issue from.
 */
function consentAlways(): unknown {
  const policy = interactionPolicy.base();
  const consent = policy.get("consent");
  consent.checks.add(
    new interactionPolicy.Check("no_grant", "no grant yet", (ctx: unknown) => {
      const grant = (ctx as { oidc: { grant?: { getOIDCScopeEncountered(): string } } }).oidc.grant;
      return !(grant?.getOIDCScopeEncountered() ?? "").split(" ").includes("openid");
    }),
  );
  return policy;
}

/**
 * The request again, with a body the AS read (and may have rewritten) readable once more: a
 * stream of it carrying the request's head, `content-length` set to its size.
 */
function withBody(req: IncomingMessage, body: string): IncomingMessage {
  const bytes = Buffer.from(body, "utf8");
  const stream = Readable.from([bytes]) as unknown as IncomingMessage;
  const headers = { ...req.headers, "content-length": String(bytes.length) };
  delete headers["transfer-encoding"];
  return Object.assign(stream, {
    headers,
    rawHeaders: req.rawHeaders,
    method: req.method,
    url: req.url,
    httpVersion: req.httpVersion,
    httpVersionMajor: req.httpVersionMajor,
    httpVersionMinor: req.httpVersionMinor,
    socket: req.socket,
    connection: req.socket,
    complete: true,
  });
}

interface OidcCtx {
  oidc?: {
    params?: Record<string, unknown>;
    client?: { clientId: string };
    session?: { accountId?: string };
    entities?: { Grant?: { accountId?: string } };
  };
}

const reasonOf = (err: { error?: string; error_description?: string } | undefined): string =>
  err?.error ?? "error";

function who(account: string): { tenant: string | null; subject: string } {
  const r = parseAccountId(account);
  return { tenant: r.tenant, subject: r.subject };
}

export function hostOf(url: string | undefined): string | null {
  if (!url) return null;
  try {
    const u = new URL(url);
    return u.host || `${u.protocol}`;
  } catch {
    return null;
  }
}

function cookieOf(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function basicClientId(header: string | undefined): string | undefined {
  if (!header?.toLowerCase().startsWith("basic ")) return undefined;
  const text = Buffer.from(header.slice(6), "base64").toString("utf8");
  const i = text.indexOf(":");
  return i < 0 ? undefined : decodeURIComponent(text.slice(0, i));
}

function serverOf(config: Config, issuer: string, resource: string): string {
  for (const [name, s] of Object.entries(config.servers)) if (`${issuer}${s.route}` === resource) return name;
  return "";
}
