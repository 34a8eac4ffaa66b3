/**
 * Federated login: the edge's authorization server signs a person in at an organisation's OpenID
 * Connect provider, as its relying party (OpenID Connect Core 1.0 §3.1, the authorization code
 * flow), with openid-client toward the IdP:
 *
 *   GET /as/login/{name}/{uid} ─▶ start(): 303 to the IdP — PKCE S256 (RFC 7636), `state`, `nonce`
 *   IdP ─▶ GET /as/login/{name}/callback ─▶ callback(): `state` opened and bound to this browser,
 *        `iss` checked (RFC 9207, when the IdP sends it; each IdP has its own callback path, so a
 *        response is never taken for another IdP's: RFC 9700 §4.4.2.2), code exchanged, ID token
 *        verified (signature, `iss`, `aud`, `nonce`, expiry), tenant and subject read from its claims
 *        ─▶ the authorization server goes on with the interaction (consent, code)
 *
 * Each configured IdP is one login method of the authorization server (`src/as/login.ts`), named
 * as in the config (`idp` for `login.idp`).
 *
 * The IdP's refresh token is sealed (AES-256-GCM, the vault's key ring, bound to the IdP and the
 * user) and kept with the grant as a `FederationLink`. Each refresh of the grant at the edge first
 * refreshes at the IdP (`recheck`): a user disabled or signed out there, or whose grant the IdP
 * revoked, gets `invalid_grant` from the IdP, and the edge's grant stops refreshing with it.
 *
 * Every request to the IdP (discovery, JWKS, token, userinfo) goes through the guarded egress: the
 * issuer's own origin is trusted as configured; endpoints the discovery document puts elsewhere
 * are checked as run-time URLs.
 *
 * The `state` is sealed (it carries the PKCE verifier and the nonce) so that any instance can
 * finish a login another started; a random binding in it is also set as a cookie, so a callback in
 * another browser — a login CSRF that would sign the victim in as the attacker — is refused
 * (RFC 6749 §10.12).
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import * as oidc from "openid-client";
import { tenantOf } from "../auth/authenticate.ts";
import type { Config, FederatedIdpConfig, FederationConfig } from "../config/schema.ts";
import type { Egress } from "../egress/index.ts";
import type { ErrorCode } from "../errors/codes.ts";
import { GatewayError } from "../errors/errors.ts";
import type { Logger } from "../observability/logger.ts";
import type { InteractionView, LoginEnv, LoginFinish, LoginMethod, LoginResult } from "./login.ts";
import { LoginRevoked } from "./login.ts";
import { readBody } from "../upstream/reply.ts";
import { escapeHtml } from "../vault/pages.ts";
import { KeyRing } from "../vault/seal.ts";

/** How long a person may take at the IdP. */
export const LOGIN_TTL_MS = 10 * 60_000;
/** Deadline of one request to the IdP. */
export const IDP_TIMEOUT_MS = 10_000;
const MAX_ANSWER = 256 * 1024;

/** Who signed in at the IdP. */
export interface FederatedIdentity {
  /** The IdP's name in the config. */
  idp: string;
  /** The edge's subject: `<idp name>|<subjectClaim value>`. */
  subject: string;
  tenant: string | null;
  /** For pages and audit: the IdP's `email` and `name` claims, when given. */
  email: string | undefined;
  name: string | undefined;
  /** What to keep with the grant (sealed); undefined when the IdP issued no refresh token. */
  link: FederationLink | undefined;
}

/** Kept with the edge's grant: what a refresh re-checks the user with. JSON-serializable. */
export interface FederationLink {
  idp: string;
  /** The IdP's `sub` (a refreshed ID token must name the same). */
  sub: string;
  /** The IdP's refresh token, sealed with the vault key ring (AAD: idp and sub). */
  refresh: string;
}

/** Why a login or a re-check failed. */
export class FederationError extends GatewayError {
  /**
   * `link`: the callback matches no login of this browser. `idp`: the IdP refused, could not be
   * reached, or answered something refused. `tenant`: no tenant, or one this IdP may not assert.
   * `revoked` (re-check): the IdP refused the refresh token — the user is disabled or the grant
   * gone; the edge's grant must go too. `unavailable` (re-check): no answer; try again later.
   */
  readonly kind: "link" | "idp" | "tenant" | "revoked" | "unavailable";
  constructor(
    kind: FederationError["kind"],
    message: string,
    options: { cause?: unknown; headers?: Record<string, string> } = {},
  ) {
    const code: ErrorCode =
      kind === "link"
        ? "EDGE_LOGIN_LINK_INVALID"
        : kind === "tenant"
          ? "EDGE_LOGIN_TENANT_REFUSED"
          : "EDGE_LOGIN_IDP_FAILED";
    super(code, message, options);
    this.name = "FederationError";
    this.kind = kind;
  }
}

interface LoginState {
  /** the authorization server's interaction this login belongs to */
  i: string;
  /** IdP name */
  p: string;
  /** PKCE verifier */
  v: string;
  /** nonce */
  n: string;
  /** browser binding (also in the cookie) */
  b: string;
  /** expiry, ms */
  e: number;
}

/** One IdP: discovery, the authorization request, the code exchange and refresh. */
export class FederatedIdp {
  readonly name: string;
  readonly config: FederatedIdpConfig;
  readonly #egress: Egress;
  readonly #redirectUri: string;
  readonly #tenancy: Tenancy;
  #discovered: Promise<oidc.Configuration> | undefined;

  constructor(
    name: string,
    config: FederatedIdpConfig,
    egress: Egress,
    publicUrl: string,
    tenancy: Tenancy = { claim: "org_id", required: false },
  ) {
    this.name = name;
    this.#tenancy = tenancy;
    this.config = config;
    this.#egress = egress;
    this.#redirectUri = callbackUrl(publicUrl, name);
  }

  get displayName(): string {
    return this.config.displayName ?? this.name;
  }

  /** The redirect URI to register at the IdP. */
  get redirectUri(): string {
    return this.#redirectUri;
  }

  /** The IdP's metadata, fetched once (a failure is tried again on the next use). */
  configuration(): Promise<oidc.Configuration> {
    this.#discovered ??= this.#discover().catch((err: unknown) => {
      this.#discovered = undefined;
      throw err;
    });
    return this.#discovered;
  }

  async #discover(): Promise<oidc.Configuration> {
    const c = this.config;
    const auth = c.clientSecret === undefined ? oidc.None() : oidc.ClientSecretPost(c.clientSecret);
    const insecure = new URL(c.issuer).protocol === "http:";
    const conf = await oidc.discovery(
      new URL(c.issuer),
      c.clientId,
      { redirect_uris: [this.#redirectUri], response_types: ["code"] },
      auth,
      {
        [oidc.customFetch]: egressFetch(this.#egress, c.issuer),
        timeout: IDP_TIMEOUT_MS / 1000,
        ...(insecure ? { execute: [oidc.allowInsecureRequests] } : {}),
      },
    );
    const meta = conf.serverMetadata();
    if (!meta.code_challenge_methods_supported?.includes("S256") && meta.code_challenge_methods_supported)
      throw new Error(`${c.issuer} does not support PKCE S256`);
    return conf;
  }

  async authorizationUrl(state: string, nonce: string, verifier: string): Promise<string> {
    const conf = await this.configuration();
    const params: Record<string, string> = {
      ...this.config.authorizationParams,
      redirect_uri: this.#redirectUri,
      response_type: "code",
      scope: this.config.scopes.join(" "),
      state,
      nonce,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: "S256",
    };
    return oidc.buildAuthorizationUrl(conf, params).toString();
  }

  /** The code exchanged and the ID token verified; throws FederationError. */
  async exchange(callback: URL, state: LoginState, stateText: string): Promise<FederatedIdentity> {
    let conf: oidc.Configuration;
    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
    try {
      conf = await this.configuration();
      tokens = await oidc.authorizationCodeGrant(conf, callback, {
        pkceCodeVerifier: state.v,
        expectedState: stateText,
        expectedNonce: state.n,
        idTokenExpected: true,
      });
    } catch (err) {
      throw new FederationError("idp", describe(err), { cause: err });
    }
    const idToken = tokens.claims();
    if (!idToken) throw new FederationError("idp", "the IdP issued no ID token");
    let claims: Record<string, unknown> = { ...idToken };
    const c = this.config;
    // Some IdPs put only the standard claims in the ID token and the rest at the userinfo endpoint
    // (OpenID Connect Core §5.4): read it when a configured claim is missing.
    const wanted = [c.subjectClaim, ...(c.tenantClaim ? [c.tenantClaim] : [])];
    if (wanted.some((w) => tenantOf(claims, w) === null) && conf.serverMetadata().userinfo_endpoint) {
      try {
        const info = await oidc.fetchUserInfo(conf, tokens.access_token, idToken.sub);
        claims = { ...info, ...claims };
      } catch {
        // the ID token's claims are all there is
      }
    }
    const who = tenantOf(claims, c.subjectClaim);
    if (who === null) throw new FederationError("idp", `the ID token has no ${c.subjectClaim} claim`);
    const tenant = this.tenantOf(claims);
    const refresh = tokens.refresh_token;
    if (!refresh && c.requireRefreshToken)
      throw new FederationError(
        "idp",
        "the IdP issued no refresh token (ask for offline access: see the IdP notes in docs/auth.md)",
      );
    return {
      idp: this.name,
      subject: `${this.name}|${who}`,
      tenant,
      email: typeof claims.email === "string" ? claims.email : undefined,
      name: typeof claims.name === "string" ? claims.name : undefined,
      link: refresh ? { idp: this.name, sub: idToken.sub, refresh } : undefined,
    };
  }

  /**
   * The tenant of a login: the IdP's fixed `tenant`; else its `tenantClaim`, which must be there;
   * else the edge's `tenancy.claim`, which must be there when tenancy is required.
   */
  tenantOf(claims: Record<string, unknown>): string | null {
    const c = this.config;
    if (c.tenant !== undefined) return c.tenant;
    const claim = c.tenantClaim ?? this.#tenancy.claim;
    const tenant = tenantOf(claims, claim);
    if (tenant === null) {
      if (c.tenantClaim === undefined && !this.#tenancy.required) return null;
      throw new FederationError("tenant", `the IdP names no tenant (${claim})`);
    }
    if (c.tenants && !c.tenants.includes(tenant))
      throw new FederationError("tenant", `the IdP may not assert tenant ${tenant}`);
    return tenant;
  }

  /** A refresh at the IdP: the new refresh token (or the same one, when the IdP keeps it). */
  async refresh(refreshToken: string, sub: string): Promise<string> {
    let tokens: Awaited<ReturnType<typeof oidc.refreshTokenGrant>>;
    try {
      tokens = await oidc.refreshTokenGrant(await this.configuration(), refreshToken);
    } catch (err) {
      if (err instanceof oidc.ResponseBodyError && err.status < 500)
        throw new FederationError("revoked", `the IdP refused the refresh: ${err.error}`, { cause: err });
      throw new FederationError("unavailable", describe(err), { cause: err });
    }
    const idToken = tokens.claims();
    if (idToken && idToken.sub !== sub)
      throw new FederationError("revoked", "the IdP's refreshed ID token names another user");
    return tokens.refresh_token ?? refreshToken;
  }
}

/** The edge's `tenancy` settings: the claim read when an IdP names none of its own. */
export interface Tenancy {
  claim: string;
  required: boolean;
}

export interface FederationOptions {
  idps: FederationConfig;
  tenancy?: Tenancy;
  egress: Egress;
  /** Seals the IdPs' refresh tokens and the login `state` (the vault's key ring: `vault.key`). */
  ring: KeyRing;
  publicUrl: string;
  log: Logger;
}

/** The configured IdPs and the login legs through them. */
export class Federation {
  readonly #idps = new Map<string, FederatedIdp>();
  readonly #ring: KeyRing;
  readonly #publicUrl: string;
  readonly #secure: boolean;
  readonly #log: Logger;
  /** Re-checks in flight, per sealed refresh token: one IdP refresh for concurrent grant refreshes. */
  readonly #rechecks = new Map<string, Promise<FederationLink>>();

  constructor(options: FederationOptions) {
    this.#publicUrl = options.publicUrl.replace(/\/$/, "");
    for (const [name, c] of Object.entries(options.idps))
      this.#idps.set(name, new FederatedIdp(name, c, options.egress, this.#publicUrl, options.tenancy));
    this.#ring = options.ring;
    this.#secure = new URL(this.#publicUrl).protocol === "https:";
    this.#log = options.log;
  }

  get log(): Logger {
    return this.#log;
  }

  /** The IdPs, in config order (the login page offers them). */
  list(): FederatedIdp[] {
    return [...this.#idps.values()];
  }

  idp(name: string): FederatedIdp | undefined {
    return this.#idps.get(name);
  }

  /**
   * Sends the browser to the IdP for the authorization server's interaction `interaction`:
   * a 303 with the binding cookie. Throws FederationError (`idp`) when the IdP's metadata cannot
   * be read.
   */
  async start(res: ServerResponse, idpName: string, interaction: string): Promise<void> {
    const idp = this.#idps.get(idpName);
    if (!idp) throw new FederationError("link", `no IdP named ${idpName}`);
    const state: LoginState = {
      i: interaction,
      p: idpName,
      v: oidc.randomPKCECodeVerifier(),
      n: oidc.randomNonce(),
      b: randomBytes(16).toString("base64url"),
      e: Date.now() + LOGIN_TTL_MS,
    };
    const stateText = this.#ring.sealState(state);
    let location: string;
    try {
      location = await idp.authorizationUrl(stateText, state.n, state.v);
    } catch (err) {
      this.#log.warn(
        { idp: idpName, err: describe(err) },
        "federation: the IdP's metadata could not be read",
      );
      throw new FederationError("idp", "the IdP cannot be reached", { cause: err });
    }
    res.writeHead(303, {
      location,
      "cache-control": "no-store",
      "referrer-policy": "no-referrer",
      "set-cookie": this.#cookie(idpName, state.b, LOGIN_TTL_MS / 1000),
    });
    res.end();
  }

  /**
   * The IdP's redirect back: the login this browser started, verified. Returns the interaction
   * to continue and who signed in, with the header that clears the binding cookie; throws
   * FederationError (its `headers` clear the cookie too).
   */
  async callback(
    req: IncomingMessage,
    idpName: string,
  ): Promise<{ interaction: string; identity: FederatedIdentity; headers: Record<string, string> }> {
    const url = new URL(req.url ?? "/", this.#publicUrl);
    const clear = { "set-cookie": this.#cookie(idpName, "", 0) };
    const fail = (kind: FederationError["kind"], message: string, cause?: unknown): never => {
      throw new FederationError(kind, message, { cause, headers: clear });
    };
    const idp = this.#idps.get(idpName);
    const stateText = url.searchParams.get("state") ?? "";
    const state = this.#ring.openState(stateText) as Partial<LoginState> | undefined;
    const cookie = readCookie(req, this.#cookieName(idpName));
    const bound =
      idp !== undefined &&
      state !== undefined &&
      state.p === idpName &&
      typeof state.b === "string" &&
      typeof state.i === "string" &&
      typeof state.v === "string" &&
      typeof state.n === "string" &&
      cookie !== undefined &&
      cookie.length === state.b.length &&
      timingSafeEqual(Buffer.from(cookie), Buffer.from(state.b));
    if (!bound || typeof state.e !== "number" || state.e < Date.now())
      return fail("link", "this login does not match one started in this browser, or it expired");
    const error = url.searchParams.get("error");
    if (error !== null)
      return fail("idp", error === "access_denied" ? "you declined at the IdP" : `the IdP answered ${error}`);
    try {
      const identity = await idp.exchange(
        new URL(`${this.#publicUrl}${url.pathname}${url.search}`),
        state as LoginState,
        stateText,
      );
      if (identity.link)
        identity.link.refresh = this.#seal(identity.link.refresh, idpName, identity.link.sub);
      return { interaction: state.i as string, identity, headers: clear };
    } catch (err) {
      if (err instanceof FederationError) return fail(err.kind, err.message, err.cause);
      return fail("idp", describe(err), err);
    }
  }

  /**
   * Re-checks a grant's user at the IdP before the edge refreshes the grant: the link with the
   * IdP's new refresh token. Throws FederationError `revoked` (the IdP refused: revoke the grant)
   * or `unavailable` (keep the grant; the client may retry). Concurrent re-checks of one link share
   * one IdP refresh (single-use refresh tokens are never spent twice from this process).
   */
  recheck(link: FederationLink): Promise<FederationLink> {
    const running = this.#rechecks.get(link.refresh);
    if (running) return running;
    const p = this.#recheck(link).finally(() => this.#rechecks.delete(link.refresh));
    this.#rechecks.set(link.refresh, p);
    return p;
  }

  async #recheck(link: FederationLink): Promise<FederationLink> {
    const idp = this.#idps.get(link.idp);
    if (!idp) throw new FederationError("revoked", `the IdP ${link.idp} is no longer configured`);
    const token = this.#ring.open(link.refresh, aad(link.idp, link.sub));
    if (token === undefined) throw new FederationError("revoked", "the IdP refresh token cannot be opened");
    const next = await idp.refresh(token, link.sub);
    return { idp: link.idp, sub: link.sub, refresh: this.#seal(next, link.idp, link.sub) };
  }

  #seal(token: string, idp: string, sub: string): string {
    return this.#ring.seal(token, aad(idp, sub));
  }

  #cookieName(idp: string): string {
    return `${this.#secure ? "__Host-" : ""}mcp-edge-login-${idp}`;
  }

  #cookie(idp: string, value: string, maxAge: number): string {
    return `${this.#cookieName(idp)}=${value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${maxAge}${this.#secure ? "; Secure" : ""}`;
  }

  /** One login method per IdP, for the authorization server. */
  methods(): LoginMethod[] {
    return this.list().map((idp) => new FederatedLogin(this, idp));
  }
}

/**
 * The federation of a config (`auth.authorizationServer.login.idp` as method `idp`, and
 * `login.idps` by name), or undefined when it names no IdP. The schema requires `publicUrl` and
 * `vault.key` then.
 */
export function federationFromConfig(
  config: Config,
  deps: { egress: Egress; log: Logger },
): Federation | undefined {
  const login = config.auth.authorizationServer.login;
  const idps: FederationConfig = { ...(login.idp ? { idp: login.idp } : {}), ...login.idps };
  if (Object.keys(idps).length === 0 || !config.vault || !config.publicUrl) return undefined;
  return new Federation({
    idps,
    tenancy: { claim: config.tenancy.claim, required: config.tenancy.required },
    egress: deps.egress,
    ring: new KeyRing(config.vault.key, config.vault.previousKeys),
    publicUrl: config.publicUrl,
    log: deps.log.child({ component: "federation" }),
  });
}

/** `${publicUrl}/as/login/{name}/callback`: the redirect URI to register at the IdP. */
export function callbackUrl(publicUrl: string, name: string): string {
  return `${publicUrl.replace(/\/$/, "")}/as/login/${encodeURIComponent(name)}/callback`;
}

/**
 * An IdP as a login method of the authorization server. What it keeps with the grant
 * (`LoginResult.upstreamRefresh`) is the `FederationLink` as JSON; the IdP's refresh token in it
 * is sealed.
 */
export class FederatedLogin implements LoginMethod {
  readonly name: string;
  readonly label: string;
  readonly #fed: Federation;

  constructor(fed: Federation, idp: FederatedIdp) {
    this.#fed = fed;
    this.name = idp.name;
    this.label = `Sign in with ${idp.displayName}`;
  }

  async start(interaction: InteractionView, _req: IncomingMessage, res: ServerResponse, env: LoginEnv) {
    try {
      await this.#fed.start(res, this.name, interaction.uid);
    } catch (err) {
      failurePage(res, env, err);
    }
  }

  async finish(
    req: IncomingMessage,
    res: ServerResponse,
    _query: URLSearchParams,
    env: LoginEnv,
  ): Promise<LoginFinish | undefined> {
    req.resume();
    try {
      const done = await this.#fed.callback(req, this.name);
      res.setHeader("set-cookie", done.headers["set-cookie"] as string);
      const id = done.identity;
      const result: LoginResult = {
        method: this.name,
        tenant: id.tenant,
        subject: id.subject,
        display: id.email ?? id.name ?? id.subject.slice(this.name.length + 1),
        ...(id.link ? { upstreamRefresh: JSON.stringify(id.link) } : {}),
      };
      this.#fed.log.info({ idp: this.name, tenant: id.tenant, subject: id.subject }, "federation: signed in");
      return { uid: done.interaction, result };
    } catch (err) {
      const e = err as Partial<FederationError>;
      this.#fed.log.warn({ idp: this.name, kind: e.kind, reason: e.message }, "federation: sign-in refused");
      failurePage(res, env, err);
      return undefined;
    }
  }

  async recheck(login: LoginResult): Promise<{ upstreamRefresh?: string }> {
    if (login.upstreamRefresh === undefined) return {};
    const link = parseLink(login.upstreamRefresh);
    if (!link || link.idp !== this.name) throw new LoginRevoked("the grant's IdP link is unreadable");
    try {
      return { upstreamRefresh: JSON.stringify(await this.#fed.recheck(link)) };
    } catch (err) {
      if (err instanceof FederationError && err.kind === "revoked")
        throw new LoginRevoked(err.message, { cause: err });
      throw err;
    }
  }
}

function parseLink(text: string): FederationLink | undefined {
  try {
    const v = JSON.parse(text) as Partial<FederationLink> | null;
    return typeof v?.idp === "string" && typeof v.sub === "string" && typeof v.refresh === "string"
      ? { idp: v.idp, sub: v.sub, refresh: v.refresh }
      : undefined;
  } catch {
    return undefined;
  }
}

/** A failed login leg on the edge's own page: what went wrong, and the error code. */
function failurePage(res: ServerResponse, env: LoginEnv, err: unknown): void {
  const e = err instanceof FederationError ? err : new FederationError("idp", describe(err), { cause: err });
  for (const [k, v] of Object.entries(e.headers ?? {})) res.setHeader(k, v);
  res.setHeader("x-mcp-edge-error", e.code);
  const title =
    e.kind === "link"
      ? "This sign-in link is invalid or has expired"
      : e.kind === "tenant"
        ? "Your account cannot sign in here"
        : "Signing in at your identity provider failed";
  const hint =
    e.kind === "link"
      ? "Sign-in links work for a short time and only in the browser that opened them. Start again from your MCP client."
      : "Nothing was issued. Start again from your MCP client, or ask your administrator.";
  env.page(
    res,
    e.status,
    title,
    `<p class="err">${escapeHtml(e.message)}</p><p>${escapeHtml(hint)}</p><p class="muted">${e.code}</p>`,
  );
}

const aad = (idp: string, sub: string) => `mcp-edge federation|${idp}|${sub}`;

function describe(err: unknown): string {
  if (err instanceof oidc.ResponseBodyError)
    return `the IdP refused: ${err.error}${err.error_description ? ` (${err.error_description})` : ""}`;
  if (err instanceof oidc.AuthorizationResponseError) return `the IdP answered ${err.error}`;
  if (err instanceof GatewayError) return err.message;
  // openid-client wraps oauth4webapi's errors; the wrapped one says which check failed.
  const { code, cause } = err as { code?: unknown; cause?: unknown };
  const msg = cause instanceof Error ? cause.message : err instanceof Error ? err.message : String(err);
  return typeof code === "string" ? `${msg} (${code})` : msg;
}

function readCookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** openid-client's fetch, through the guarded egress. */
function egressFetch(egress: Egress, issuer: string): oidc.CustomFetch {
  const origin = new URL(issuer).origin;
  return async (url, options) => {
    const body = options.body;
    const res = await egress.request(url, {
      method: options.method as "GET" | "POST",
      headers: options.headers,
      ...(body === undefined || body === null ? {} : { body: String(body as string | URLSearchParams) }),
      ...(options.signal ? { signal: options.signal } : {}),
      headersTimeout: IDP_TIMEOUT_MS,
      maxResponseBytes: MAX_ANSWER,
      ...(new URL(url).origin === origin ? {} : { trust: "runtime" as const, namedBy: issuer }),
    });
    const data = await readBody(res.body, MAX_ANSWER);
    const headers = new Headers();
    for (const [k, v] of Object.entries(res.headers)) {
      if (Array.isArray(v)) for (const one of v) headers.append(k, one);
      else if (v !== undefined) headers.set(k, v);
    }
    const empty = res.status === 204 || res.status === 304;
    return new Response(empty ? null : new Uint8Array(data), { status: res.status, headers });
  };
}
