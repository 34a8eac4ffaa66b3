/**
 * The bridge as an OAuth 2.1 public (or pre-registered) client of the server's authorization
 * server, per MCP basic/authorization (2025-06-18 … 2026-07-28). (One file of ~640 lines on
 * purpose: discovery, registration, login and refresh are one flow, in the order a client runs it.)
 *
 * 1. Discovery: the 401's `WWW-Authenticate: Bearer resource_metadata=…` (else the RFC 9728
 *    well-knowns, path-inserted first, then root) gives the protected resource metadata; its
 *    `resource` must match the server URL; its first authorization server's metadata comes from
 *    RFC 8414 or OIDC discovery (path-insert rules of MCP "Authorization Server Metadata
 *    Discovery") and its `issuer` must equal the one asked for (RFC 8414 §3.3). Servers without
 *    resource metadata (2025-03-26) get the origin's AS metadata, else `/authorize` `/token`
 *    `/register` on the origin.
 * 2. Client identity in the spec's order: a pre-registered `--client-id`, else a Client ID
 *    Metadata Document URL when the AS supports CIMD, else RFC 7591 dynamic registration.
 * 3. Authorization code with PKCE S256 (refused when the AS does not list S256), `state`, the
 *    RFC 8707 `resource`, and the RFC 9207 `iss` check; the browser opens only safe URLs
 *    (browser.ts); the redirect comes to a loopback listener (callback.ts).
 * 4. Tokens live in the keychain or a 0600 file (tokens.ts); refreshed ahead of expiry and on a 401
 *    (once per token), serialized across processes; a refresh the AS refuses starts a new login
 *    while the stdio side waits.
 */
import { createHash, randomBytes } from "node:crypto";
import { type AuthHook, bridgeError } from "./remote.ts";
import { openBrowser, checkBrowserUrl } from "./browser.ts";
import { startCallback, type Callback } from "./callback.ts";
import { checkDiscoveredUrl, getJson, type HttpResponse, header, postForJson } from "./http.ts";
import type { ConnectLog } from "./log.ts";
import { openTokenStore, type Stored, type TokenStore } from "./tokens.ts";

export interface OAuthOptions {
  serverUrl: URL;
  log: ConnectLog;
  env: NodeJS.ProcessEnv;
  clientId?: string;
  clientSecret?: string;
  clientMetadataUrl?: URL;
  scope?: string;
  callbackPort?: number;
  openBrowser: boolean;
  /** False when the user supplied an Authorization header: OAuth stays off. */
  enabled: boolean;
  /** How long a login waits for the browser (ms). Default 5 minutes. */
  loginTimeout?: number;
}

export interface Challenge {
  error?: string;
  scope?: string;
  resourceMetadata?: string;
}

/** Parses the Bearer challenge of a `WWW-Authenticate` header (RFC 6750 §3, RFC 9728 §5.1). */
export function parseChallenge(value: string | undefined): Challenge {
  const out: Challenge = {};
  if (!value) return out;
  const bearer = /(?:^|,)\s*Bearer\b(.*)$/i.exec(value);
  const params = bearer ? (bearer[1] ?? "") : value;
  const re = /([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/g;
  for (const m of params.matchAll(re)) {
    const name = (m[1] ?? "").toLowerCase();
    const v = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : (m[3] ?? "");
    if (name === "error") out.error = v;
    else if (name === "scope") out.scope = v;
    else if (name === "resource_metadata") out.resourceMetadata = v;
  }
  return out;
}

/** RFC 8707 canonical resource: lower-case scheme and host, no fragment, no trailing slash on a path. */
export function canonicalResource(u: URL): string {
  const c = new URL(u.href);
  c.hash = "";
  let s = c.href;
  if (c.pathname !== "/" && s.endsWith("/") && c.search === "") s = s.slice(0, -1);
  if (c.pathname === "/" && c.search === "") s = `${c.protocol}//${c.host}`;
  return s;
}

/** The PRM `resource` fits the server URL when it is the same origin and a path prefix of it. */
export function resourceMatches(resource: string, server: URL): boolean {
  let r: URL;
  try {
    r = new URL(resource);
  } catch {
    return false;
  }
  if (r.origin !== server.origin) return false;
  const rp = r.pathname.endsWith("/") ? r.pathname : `${r.pathname}/`;
  const sp = server.pathname.endsWith("/") ? server.pathname : `${server.pathname}/`;
  return sp.startsWith(rp);
}

export interface AsMetadata {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  registration_endpoint?: string;
  scopes_supported?: string[];
  code_challenge_methods_supported?: string[];
  token_endpoint_auth_methods_supported?: string[];
  client_id_metadata_document_supported?: boolean;
  authorization_response_iss_parameter_supported?: boolean;
}

interface Discovered {
  as: AsMetadata;
  /** The `resource` to ask tokens for (RFC 8707). */
  resource: string;
  scopesSupported?: string[];
  /** Fallback endpoints were used (no metadata at all, 2025-03-26). */
  fallback: boolean;
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

function strList(v: unknown): string[] | undefined {
  return Array.isArray(v) && v.every((x) => typeof x === "string") ? (v as string[]) : undefined;
}

/** RFC 8414 §3.1 / OIDC Discovery §4 URLs for an issuer, in the order MCP gives. */
export function asMetadataUrls(issuer: URL): URL[] {
  const path = issuer.pathname.replace(/\/+$/, "");
  const origin = issuer.origin;
  if (path === "") {
    return [
      new URL(`${origin}/.well-known/oauth-authorization-server`),
      new URL(`${origin}/.well-known/openid-configuration`),
    ];
  }
  return [
    new URL(`${origin}/.well-known/oauth-authorization-server${path}`),
    new URL(`${origin}/.well-known/openid-configuration${path}`),
    new URL(`${origin}${path}/.well-known/openid-configuration`),
  ];
}

export class OAuthClient implements AuthHook {
  readonly #o: OAuthOptions;
  readonly #store: TokenStore;
  #stored: Stored | undefined;
  #loaded = false;
  #login: Promise<void> | undefined;
  #refreshing: Promise<boolean> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #discovered: Discovered | undefined;
  #lastChallenge: Challenge = {};
  #grantedScope: string | undefined;
  #callback: Callback | undefined;
  #closed = false;
  /** Logins and refreshes done by this process (tests read them through the log). */
  logins = 0;
  refreshes = 0;

  constructor(options: OAuthOptions) {
    this.#o = options;
    const clientKey = options.clientId ?? options.clientMetadataUrl?.href ?? "dcr";
    this.#store = openTokenStore(options.env, canonicalResource(options.serverUrl), clientKey);
  }

  get storeKind(): string {
    return this.#store.kind;
  }

  async #load(): Promise<Stored | undefined> {
    if (!this.#loaded) {
      this.#loaded = true;
      this.#stored = await this.#store.load().catch(() => undefined);
      if (this.#stored?.tokens) this.#o.log.debug(`using stored tokens (${this.#store.kind})`);
      this.#schedule();
    }
    return this.#stored;
  }

  async headers(): Promise<Record<string, string>> {
    if (!this.#o.enabled) return {};
    if (this.#login) await this.#login.catch(() => undefined);
    const stored = await this.#load();
    const t = stored?.tokens;
    if (!t) return {};
    if (this.#expiringSoon(t) && t.refresh_token) {
      await this.#refresh(t.access_token).catch(() => false);
    }
    const now = this.#stored?.tokens;
    return now ? { authorization: `Bearer ${now.access_token}` } : {};
  }

  /** Refresh when less than a quarter of the lifetime (at most 60 s) is left. */
  #margin(t: NonNullable<Stored["tokens"]>): number {
    if (t.expires_at === undefined) return 0;
    const life = t.issued_at !== undefined ? t.expires_at - t.issued_at : 3_600_000;
    return Math.min(60_000, Math.max(500, life / 4));
  }

  #expiringSoon(t: NonNullable<Stored["tokens"]>): boolean {
    return t.expires_at !== undefined && t.expires_at - Date.now() < this.#margin(t);
  }

  /** A timer refreshes ahead of expiry, so an idle session's next call does not wait for it. */
  #schedule(): void {
    if (this.#timer) clearTimeout(this.#timer);
    const t = this.#stored?.tokens;
    if (this.#closed || !t?.refresh_token || t.expires_at === undefined) return;
    const at = t.expires_at - this.#margin(t) - Date.now();
    this.#timer = setTimeout(
      () => {
        void this.#refresh(t.access_token).catch(() => false);
      },
      Math.max(0, at),
    );
    this.#timer.unref();
  }

  async onUnauthorized(res: HttpResponse, sent: string | undefined): Promise<boolean> {
    if (!this.#o.enabled) return false;
    const challenge = parseChallenge(header(res, "www-authenticate"));
    this.#lastChallenge = challenge;
    await this.#load();
    const current = this.#stored?.tokens;
    const sentToken = sent?.replace(/^Bearer\s+/i, "");
    if (current && sentToken !== undefined && current.access_token !== sentToken) return true; // renewed meanwhile
    if (current?.refresh_token && sentToken !== undefined) {
      if (await this.#refresh(sentToken).catch(() => false)) return true;
    }
    await this.#loginOnce(challenge);
    return true;
  }

  async onForbidden(res: HttpResponse): Promise<boolean> {
    if (!this.#o.enabled) return false;
    const challenge = parseChallenge(header(res, "www-authenticate"));
    if (challenge.error !== "insufficient_scope") return false;
    // Step-up (MCP "Scope Challenge Handling"): ask again with the union of what we had and
    // what the challenge names (2026-07-28: the client unions them).
    const had = (this.#grantedScope ?? this.#stored?.tokens?.scope ?? "").split(" ").filter(Boolean);
    const need = (challenge.scope ?? "").split(" ").filter(Boolean);
    const union = [...new Set([...had, ...need])].join(" ");
    this.#o.log.info(`the server needs more scope (${challenge.scope ?? "unspecified"}): logging in again`);
    await this.#loginOnce({ ...challenge, ...(union ? { scope: union } : {}) }, true);
    return true;
  }

  #loginOnce(challenge: Challenge, stepUp = false): Promise<void> {
    this.#login ??= this.#doLogin(challenge, stepUp).finally(() => {
      this.#login = undefined;
    });
    return this.#login;
  }

  async #doLogin(challenge: Challenge, stepUp: boolean): Promise<void> {
    try {
      const d = await this.#discover(challenge);
      const stored = (await this.#load()) ?? { server: canonicalResource(this.#o.serverUrl) };
      const scope = this.#scopeFor(d, challenge, stepUp);
      const state = randomBytes(24).toString("base64url");
      const client = await this.#clientFor(d, stored);
      const callback = await startCallback(state, this.#callbackPortFor(client.redirect_uri));
      this.#callback = callback;
      try {
        if (client.redirect_uri && client.redirect_uri !== callback.redirectUri && client.source === "dcr") {
          // The registered redirect's port is taken: register again with this one.
          Object.assign(client, await this.#register(d, callback.redirectUri));
        }
        const verifier = randomBytes(48).toString("base64url");
        const challengeS256 = createHash("sha256").update(verifier).digest("base64url");
        const authUrl = new URL(d.as.authorization_endpoint);
        const q = authUrl.searchParams;
        q.set("response_type", "code");
        q.set("client_id", client.client_id);
        q.set("redirect_uri", callback.redirectUri);
        q.set("code_challenge", challengeS256);
        q.set("code_challenge_method", "S256");
        q.set("state", state);
        if (scope) q.set("scope", scope);
        q.set("resource", d.resource);
        const href = checkBrowserUrl(authUrl.href).href;
        this.#o.log.info(`log in to ${this.#o.serverUrl.origin}: open this URL in a browser: ${href}`);
        if (this.#o.openBrowser && !(await openBrowser(href))) {
          this.#o.log.warn("could not start a browser; open the URL above yourself");
        }
        const response = await withTimeout(
          callback.result,
          this.#o.loginTimeout ?? 300_000,
          "the login timed out",
        );
        // RFC 9207 §2.4: the `iss` must be the AS's; required when the AS says it sends one.
        if (response.iss !== undefined && response.iss !== d.as.issuer) {
          throw new Error(`the authorization response came from issuer ${response.iss}, not ${d.as.issuer}`);
        }
        if (response.iss === undefined && d.as.authorization_response_iss_parameter_supported) {
          throw new Error(
            "the authorization response lacks the iss parameter its server promised (RFC 9207)",
          );
        }
        const form = new URLSearchParams({
          grant_type: "authorization_code",
          code: response.code,
          redirect_uri: callback.redirectUri,
          code_verifier: verifier,
          resource: d.resource,
        });
        const tokens = await this.#tokenRequest(d, client, form);
        const next: Stored = { ...stored, issuer: d.as.issuer, client, tokens };
        await this.#save(next);
        this.#grantedScope = tokens.scope ?? scope;
        this.logins++;
        this.#o.log.info("logged in");
      } finally {
        this.#callback = undefined;
        await callback.close();
      }
    } catch (err) {
      const message = (err as Error).message;
      this.#o.log.error(`login failed: ${message}`);
      throw bridgeError(
        "EDGE_CONNECT_LOGIN_FAILED",
        `mcp-edge connect could not log in to ${this.#o.serverUrl.origin}: ${message}`,
      );
    }
  }

  #callbackPortFor(redirect: string | undefined): number {
    if (this.#o.callbackPort !== undefined) return this.#o.callbackPort;
    if (redirect) {
      const p = Number(new URL(redirect).port);
      if (Number.isInteger(p) && p > 0) return p;
    }
    return 0;
  }

  #scopeFor(d: Discovered, challenge: Challenge, stepUp: boolean): string | undefined {
    if (this.#o.scope !== undefined && !stepUp) return this.#o.scope;
    // MCP "Scope Selection Strategy": the challenge's scope, else the resource's scopes_supported, else none.
    let scope = challenge.scope ?? d.scopesSupported?.join(" ");
    if (scope === undefined || scope === "") return undefined;
    // A refresh token keeps the session past the access token; ask for offline_access when the AS
    // offers it (2026-07-28 "Refresh Tokens").
    if (d.as.scopes_supported?.includes("offline_access") && !scope.split(" ").includes("offline_access")) {
      scope = `${scope} offline_access`;
    }
    return scope;
  }

  async #discover(challenge: Challenge): Promise<Discovered> {
    if (this.#discovered && challenge.resourceMetadata === undefined) return this.#discovered;
    const server = this.#o.serverUrl;
    const prmUrls: URL[] = [];
    if (challenge.resourceMetadata) prmUrls.push(checkDiscoveredUrl(challenge.resourceMetadata, server));
    else {
      const path = server.pathname.replace(/\/+$/, "");
      if (path !== "") prmUrls.push(new URL(`${server.origin}/.well-known/oauth-protected-resource${path}`));
      prmUrls.push(new URL(`${server.origin}/.well-known/oauth-protected-resource`));
    }
    let prm: Record<string, unknown> | undefined;
    for (const u of prmUrls) {
      const r = await getJson(u, server).catch(() => undefined);
      if (r?.status === 200 && r.json && typeof r.json === "object") {
        prm = r.json as Record<string, unknown>;
        break;
      }
    }
    let issuer: URL;
    let resource = canonicalResource(server);
    let scopesSupported: string[] | undefined;
    if (prm) {
      const res = str(prm["resource"]);
      if (res !== undefined) {
        // RFC 9728 §3.3 / MCP: the metadata must be for this server.
        if (!resourceMatches(res, server)) {
          throw new Error(`the protected resource metadata is for ${res}, not ${server.href}`);
        }
        resource = res;
      }
      const servers = strList(prm["authorization_servers"]);
      if (!servers?.[0]) throw new Error("the protected resource metadata names no authorization server");
      issuer = checkDiscoveredUrl(servers[0], server);
      scopesSupported = strList(prm["scopes_supported"]);
    } else {
      // 2025-03-26: the MCP server's origin is the authorization server.
      issuer = new URL(server.origin);
    }
    let as: AsMetadata | undefined;
    for (const u of asMetadataUrls(issuer)) {
      const r = await getJson(u, server).catch(() => undefined);
      if (r?.status !== 200 || !r.json || typeof r.json !== "object") continue;
      const m = r.json as Record<string, unknown>;
      const iss = str(m["issuer"]);
      const expected = issuer.pathname === "/" ? issuer.origin : issuer.href;
      // 2025-03-26 servers without resource metadata: the metadata came from the server's origin,
      // not from an issuer identifier, so it names its own issuer — on that origin.
      const legacyOk =
        !prm && iss !== undefined && URL.canParse(iss) && new URL(iss).origin === issuer.origin;
      if (iss !== expected && iss !== issuer.href && !legacyOk) {
        throw new Error(
          `the authorization server metadata names issuer ${iss ?? "(none)"}, not ${expected} (RFC 8414 §3.3)`,
        );
      }
      as = this.#checkMetadata(m, iss, server);
      break;
    }
    let fallback = false;
    if (!as) {
      if (prm) throw new Error(`no authorization server metadata at ${issuer.href}`);
      fallback = true;
      as = {
        issuer: issuer.origin,
        authorization_endpoint: `${issuer.origin}/authorize`,
        token_endpoint: `${issuer.origin}/token`,
        registration_endpoint: `${issuer.origin}/register`,
        code_challenge_methods_supported: ["S256"],
      };
      checkBrowserUrl(as.authorization_endpoint);
    }
    this.#discovered = { as, resource, ...(scopesSupported ? { scopesSupported } : {}), fallback };
    return this.#discovered;
  }

  #checkMetadata(m: Record<string, unknown>, issuer: string, server: URL): AsMetadata {
    const authz = str(m["authorization_endpoint"]);
    const token = str(m["token_endpoint"]);
    if (!authz || !token) throw new Error("the authorization server metadata lacks its endpoints");
    // The URL a browser will be sent to: checked here, before anything else happens.
    checkBrowserUrl(authz);
    checkDiscoveredUrl(token, server);
    const reg = str(m["registration_endpoint"]);
    if (reg) checkDiscoveredUrl(reg, server);
    const methods = strList(m["code_challenge_methods_supported"]);
    if (!methods?.includes("S256")) {
      // MCP authorization "Authorization Code Protection": no PKCE S256 advertised → refuse.
      throw new Error("the authorization server does not advertise PKCE S256");
    }
    const scopes = strList(m["scopes_supported"]);
    const authMethods = strList(m["token_endpoint_auth_methods_supported"]);
    return {
      issuer,
      authorization_endpoint: authz,
      token_endpoint: token,
      ...(reg ? { registration_endpoint: reg } : {}),
      code_challenge_methods_supported: methods,
      ...(scopes ? { scopes_supported: scopes } : {}),
      ...(authMethods ? { token_endpoint_auth_methods_supported: authMethods } : {}),
      client_id_metadata_document_supported: m["client_id_metadata_document_supported"] === true,
      authorization_response_iss_parameter_supported:
        m["authorization_response_iss_parameter_supported"] === true,
    };
  }

  /** Client identity in the spec's order: pre-registered → CIMD → DCR. */
  async #clientFor(d: Discovered, stored: Stored): Promise<NonNullable<Stored["client"]>> {
    if (this.#o.clientId !== undefined) {
      const secret = this.#o.clientSecret;
      const supported = d.as.token_endpoint_auth_methods_supported;
      let method: "none" | "client_secret_basic" | "client_secret_post" = "none";
      if (secret !== undefined) {
        method =
          !supported || supported.includes("client_secret_basic")
            ? "client_secret_basic"
            : "client_secret_post";
      }
      return {
        client_id: this.#o.clientId,
        ...(secret !== undefined ? { client_secret: secret } : {}),
        auth_method: method,
        source: "preregistered",
      };
    }
    if (this.#o.clientMetadataUrl && d.as.client_id_metadata_document_supported) {
      return { client_id: this.#o.clientMetadataUrl.href, auth_method: "none", source: "cimd" };
    }
    if (stored.client?.source === "dcr" && stored.issuer === d.as.issuer) return { ...stored.client };
    if (!d.as.registration_endpoint) {
      throw new Error(
        "the authorization server offers no dynamic registration: register a client there and pass --client-id",
      );
    }
    const port = this.#o.callbackPort;
    return this.#register(d, port !== undefined ? `http://127.0.0.1:${port}/callback` : undefined);
  }

  /** RFC 7591 registration of a native public client with a loopback redirect. */
  async #register(d: Discovered, redirectUri: string | undefined): Promise<NonNullable<Stored["client"]>> {
    let redirect = redirectUri;
    if (redirect === undefined) {
      // The port is chosen now (the callback listener will take it again).
      const probe = await startCallback(randomBytes(8).toString("hex"));
      redirect = probe.redirectUri;
      await probe.close();
    }
    const r = await postForJson(new URL(d.as.registration_endpoint as string), {
      json: {
        client_name: "mcp-edge connect",
        redirect_uris: [redirect],
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: "none",
        application_type: "native",
      },
    });
    const body = (r.json ?? {}) as Record<string, unknown>;
    const clientId = str(body["client_id"]);
    if ((r.status !== 201 && r.status !== 200) || !clientId) {
      throw new Error(
        `dynamic client registration failed (HTTP ${r.status}: ${str(body["error"]) ?? "no client_id"})`,
      );
    }
    const secret = str(body["client_secret"]);
    const declared = str(body["token_endpoint_auth_method"]);
    const method =
      declared === "client_secret_post" || declared === "client_secret_basic" || declared === "none"
        ? declared
        : secret
          ? "client_secret_basic"
          : "none";
    this.#o.log.info(`registered as client ${clientId} (RFC 7591)`);
    return {
      client_id: clientId,
      ...(secret ? { client_secret: secret } : {}),
      auth_method: method,
      redirect_uri: redirect,
      source: "dcr",
    };
  }

  async #tokenRequest(
    d: Discovered,
    client: NonNullable<Stored["client"]>,
    form: URLSearchParams,
  ): Promise<NonNullable<Stored["tokens"]>> {
    const headers: Record<string, string> = {};
    if (client.auth_method === "client_secret_basic" && client.client_secret !== undefined) {
      // RFC 6749 §2.3.1: form-urlencode each part before Base64.
      const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, "+");
      headers["authorization"] =
        `Basic ${Buffer.from(`${enc(client.client_id)}:${enc(client.client_secret)}`).toString("base64")}`;
    } else {
      form.set("client_id", client.client_id);
      if (client.auth_method === "client_secret_post" && client.client_secret !== undefined) {
        form.set("client_secret", client.client_secret);
      }
    }
    const started = Date.now();
    const r = await postForJson(new URL(d.as.token_endpoint), { form }, headers);
    const body = (r.json ?? {}) as Record<string, unknown>;
    const access = str(body["access_token"]);
    if (r.status !== 200 || !access) {
      const err = new Error(
        `the token endpoint refused (HTTP ${r.status}${str(body["error"]) ? `: ${str(body["error"])}` : ""})`,
      );
      (err as Error & { oauthError?: string }).oauthError = str(body["error"]);
      throw err;
    }
    const expiresIn = typeof body["expires_in"] === "number" ? body["expires_in"] : undefined;
    return {
      access_token: access,
      ...(str(body["token_type"]) ? { token_type: str(body["token_type"]) } : {}),
      ...(str(body["refresh_token"]) ? { refresh_token: str(body["refresh_token"]) } : {}),
      ...(expiresIn !== undefined ? { expires_at: started + expiresIn * 1000, issued_at: started } : {}),
      ...(str(body["scope"]) ? { scope: str(body["scope"]) } : {}),
    };
  }

  async #save(next: Stored): Promise<void> {
    this.#stored = next;
    try {
      await this.#store.save(next);
    } catch (err) {
      this.#o.log.warn(`could not store the tokens: ${(err as Error).message}`);
    }
    this.#schedule();
  }

  /**
   * Refreshes the token that failed (or is about to expire). Single flight in this process; across
   * processes the store's lock, then a re-read: if another bridge already refreshed, its tokens
   * are taken and the AS is not asked. Resolves false when the AS refused (a login is needed).
   */
  #refresh(failed: string): Promise<boolean> {
    this.#refreshing ??= this.#store
      .withLock(async () => {
        const fresh = await this.#store.load().catch(() => undefined);
        const t = fresh?.tokens;
        if (t && t.access_token !== failed && !this.#expiringSoon(t)) {
          this.#stored = fresh;
          this.#schedule();
          this.#o.log.debug("another bridge process refreshed the token: using it");
          return true;
        }
        const current = t ?? this.#stored?.tokens;
        const client = fresh?.client ?? this.#stored?.client;
        if (!current?.refresh_token || !client) return false;
        const d = await this.#discover(this.#lastChallenge);
        const form = new URLSearchParams({
          grant_type: "refresh_token",
          refresh_token: current.refresh_token,
          resource: d.resource,
        });
        try {
          const tokens = await this.#tokenRequest(d, client, form);
          // A server that does not rotate refresh tokens keeps the old one valid (RFC 6749 §6).
          if (!tokens.refresh_token) tokens.refresh_token = current.refresh_token;
          await this.#save({
            ...(fresh ?? this.#stored ?? { server: canonicalResource(this.#o.serverUrl) }),
            client,
            tokens,
          });
          this.refreshes++;
          this.#o.log.debug("refreshed the access token");
          return true;
        } catch (err) {
          const oauthError = (err as Error & { oauthError?: string }).oauthError;
          this.#o.log.warn(`token refresh failed: ${(err as Error).message}`);
          if (oauthError === "invalid_grant") {
            // The grant is gone (revoked, expired, replayed): drop the tokens; the next 401 logs in.
            const keep = { ...(fresh ?? this.#stored ?? { server: canonicalResource(this.#o.serverUrl) }) };
            delete keep.tokens;
            await this.#save(keep);
          }
          return false;
        }
      })
      .finally(() => {
        this.#refreshing = undefined;
      });
    return this.#refreshing;
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#callback?.close();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(message)), ms);
      t.unref();
    }),
  ]).finally(() => clearTimeout(t));
}
