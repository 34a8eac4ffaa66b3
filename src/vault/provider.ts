/**
 * The edge as an OAuth 2.0 client of a third-party provider, for one connection: the authorization
 * request (RFC 6749 §4.1.1 with PKCE, RFC 7636), the code exchange (§4.1.3), refresh (§6) and
 * revocation (RFC 7009). Every request goes through the guarded egress. Endpoints come from the
 * config (trusted as written) or from the issuer's metadata (RFC 8414, then OpenID Connect
 * Discovery), fetched once and checked as run-time URLs.
 *
 * Token answers are read as RFC 6749 §5.1 says, with the providers' known departures: GitHub
 * answers errors with status 200 and an `error` member, Slack answers `{ok: false, error}` and
 * puts a user's token in `authed_user`.
 */
import { createHash, randomBytes } from "node:crypto";
import type { ResolvedConnection } from "../config/connections.ts";
import type { Egress } from "../egress/index.ts";
import { GatewayError } from "../errors/errors.ts";
import { readBody } from "../upstream/reply.ts";

/** Deadline of one request to the provider. */
export const PROVIDER_TIMEOUT_MS = 10_000;
const MAX_ANSWER = 64 * 1024;

/** What the provider granted: the token set the vault seals. */
export interface TokenSet {
  accessToken: string;
  refreshToken?: string;
  tokenType: string;
  /** ms since epoch, when the provider said. */
  expiresAt?: number;
  scope?: string;
}

/**
 * Why a token request failed. `grant`: the provider refused the grant itself (RFC 6749 §5.2
 * `invalid_grant`: revoked, expired or already used) — the user must connect again. `client`: the
 * edge's own registration is wrong (`invalid_client`, `unauthorized_client`): an operator's
 * problem. `unavailable`: no usable answer (timeout, 5xx, unreadable): try again later.
 */
export class ProviderError extends Error {
  readonly kind: "grant" | "client" | "unavailable";
  readonly oauthError: string | undefined;
  constructor(
    kind: ProviderError["kind"],
    message: string,
    oauthError?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ProviderError";
    this.kind = kind;
    this.oauthError = oauthError;
  }
}

interface Endpoints {
  authorization: string;
  token: string;
  revocation: string | undefined;
  /** The issuer the endpoints came from (their host:port counts as named for the egress port rule). */
  namedBy: string | undefined;
}

export function pkcePair(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString("base64url");
  return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}

export class ProviderClient {
  readonly connection: ResolvedConnection;
  readonly #egress: Egress;
  #endpoints: Promise<Endpoints> | undefined;

  constructor(connection: ResolvedConnection, egress: Egress) {
    this.connection = connection;
    this.#egress = egress;
  }

  /** The URL a person's browser is sent to. */
  async authorizationUrl(state: string, challenge: string, redirectUri: string): Promise<string> {
    const c = this.connection;
    const url = new URL((await this.#ends()).authorization);
    const q = url.searchParams;
    q.set("response_type", "code");
    q.set("client_id", c.clientId);
    q.set("redirect_uri", redirectUri);
    q.set("state", state);
    if (c.scopes.length > 0) q.set(c.scopeParam, c.scopes.join(c.scopeSeparator));
    if (c.pkce) {
      q.set("code_challenge", challenge);
      q.set("code_challenge_method", "S256");
    }
    for (const [k, v] of Object.entries(c.params)) q.set(k, v);
    return url.toString();
  }

  exchange(code: string, verifier: string, redirectUri: string): Promise<TokenSet> {
    const form: Record<string, string> = {
      grant_type: "authorization_code",
      code,
      redirect_uri: redirectUri,
    };
    if (this.connection.pkce) form.code_verifier = verifier;
    return this.#token(form);
  }

  refresh(refreshToken: string): Promise<TokenSet> {
    return this.#token({ grant_type: "refresh_token", refresh_token: refreshToken });
  }

  /** RFC 7009: best effort (a provider without the endpoint, or that fails, changes nothing here). */
  async revoke(token: string, hint: "access_token" | "refresh_token"): Promise<boolean> {
    const ends = await this.#ends().catch(() => undefined);
    if (!ends?.revocation) return false;
    try {
      const res = await this.#post(ends.revocation, { token, token_type_hint: hint }, ends.namedBy);
      await readBody(res.body, MAX_ANSWER);
      return res.status === 200;
    } catch {
      return false;
    }
  }

  async #token(form: Record<string, string>): Promise<TokenSet> {
    const ends = await this.#ends();
    const started = Date.now();
    let status: number;
    let text: string;
    try {
      const res = await this.#post(ends.token, form, ends.namedBy);
      status = res.status;
      text = (await readBody(res.body, MAX_ANSWER)).toString("utf8");
    } catch (err) {
      throw new ProviderError("unavailable", "the token endpoint did not answer", undefined, { cause: err });
    }
    return parseTokenAnswer(status, text, started, this.connection.tokenAt);
  }

  #post(url: string, form: Record<string, string>, namedBy: string | undefined) {
    const c = this.connection;
    const body = new URLSearchParams({ ...form, client_id: c.clientId });
    if (c.clientSecret !== undefined) body.set("client_secret", c.clientSecret);
    return this.#egress.request(url, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
      body: body.toString(),
      signal: AbortSignal.timeout(PROVIDER_TIMEOUT_MS),
      headersTimeout: PROVIDER_TIMEOUT_MS,
      ...(namedBy ? { trust: "runtime" as const, namedBy } : {}),
    });
  }

  #ends(): Promise<Endpoints> {
    const c = this.connection;
    if (c.authorizationUrl && c.tokenUrl)
      return Promise.resolve({
        authorization: c.authorizationUrl,
        token: c.tokenUrl,
        revocation: c.revocationUrl,
        namedBy: undefined,
      });
    this.#endpoints ??= this.#discover().catch((err: unknown) => {
      this.#endpoints = undefined; // a failed discovery is tried again on the next use
      throw err;
    });
    return this.#endpoints;
  }

  async #discover(): Promise<Endpoints> {
    const c = this.connection;
    const issuer = c.issuer as string; // the schema requires issuer when an endpoint is missing
    const base = issuer.replace(/\/$/, "");
    const u = new URL(issuer);
    const path = u.pathname === "/" ? "" : u.pathname.replace(/\/$/, "");
    // RFC 8414 §3.1 inserts the well-known segment before the issuer's path; OIDC appends it.
    const candidates = [
      `${u.origin}/.well-known/oauth-authorization-server${path}`,
      `${base}/.well-known/openid-configuration`,
    ];
    for (const url of candidates) {
      let meta: Record<string, unknown>;
      try {
        const res = await this.#egress.request(url, {
          method: "GET",
          headers: { accept: "application/json" },
          signal: AbortSignal.timeout(PROVIDER_TIMEOUT_MS),
          headersTimeout: PROVIDER_TIMEOUT_MS,
        });
        const text = (await readBody(res.body, MAX_ANSWER)).toString("utf8");
        if (res.status !== 200) continue;
        meta = JSON.parse(text) as Record<string, unknown>;
      } catch {
        continue;
      }
      // RFC 8414 §3.3: the metadata must name the issuer it was fetched for.
      if (typeof meta !== "object" || meta === null || String(meta.issuer).replace(/\/$/, "") !== base)
        continue;
      const str = (v: unknown) => (typeof v === "string" && /^https?:\/\//.test(v) ? v : undefined);
      const authorization = c.authorizationUrl ?? str(meta.authorization_endpoint);
      const token = c.tokenUrl ?? str(meta.token_endpoint);
      if (!authorization || !token) break;
      return {
        authorization,
        token,
        revocation: c.revocationUrl ?? str(meta.revocation_endpoint),
        namedBy: issuer,
      };
    }
    throw new ProviderError("unavailable", `no usable authorization server metadata at ${issuer}`);
  }
}

/** Reads a token answer; throws ProviderError with the right kind. Exported for unit tests. */
export function parseTokenAnswer(
  status: number,
  text: string,
  started: number,
  tokenAt: ResolvedConnection["tokenAt"],
): TokenSet {
  let body: Record<string, unknown> | undefined;
  try {
    const v = JSON.parse(text) as unknown;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) body = v as Record<string, unknown>;
  } catch {
    // form-encoded answers (old GitHub without Accept) are not supported: ask for JSON
  }
  const error = typeof body?.error === "string" ? body.error : undefined;
  if (status >= 500 || status === 429 || !body)
    throw new ProviderError("unavailable", `the token endpoint answered ${status}`, error);
  if (error !== undefined || status !== 200 || body.ok === false) {
    const kind = error === "invalid_client" || error === "unauthorized_client" ? "client" : "grant";
    // Slack's invalid_refresh_token and token_revoked say the same as invalid_grant.
    throw new ProviderError(kind, `the provider refused: ${error ?? status}`, error);
  }
  const src = tokenAt === "authed_user" ? (body.authed_user as Record<string, unknown> | undefined) : body;
  const access = src?.access_token;
  if (typeof access !== "string" || access.length === 0)
    throw new ProviderError("unavailable", "the token answer carries no access_token");
  const set: TokenSet = {
    accessToken: access,
    tokenType: typeof src?.token_type === "string" ? src.token_type : "Bearer",
  };
  if (typeof src?.refresh_token === "string" && src.refresh_token) set.refreshToken = src.refresh_token;
  const expiresIn = Number(src?.expires_in);
  if (Number.isFinite(expiresIn) && expiresIn > 0) set.expiresAt = started + expiresIn * 1000;
  if (typeof src?.scope === "string") set.scope = src.scope;
  return set;
}

export function isProviderError(err: unknown): err is ProviderError {
  return err instanceof ProviderError;
}

/** The coded error a call gets when the provider cannot be reached (the record is kept). */
export function unavailable(cause: unknown): GatewayError {
  return new GatewayError("EDGE_CONNECTION_UNAVAILABLE", undefined, { cause });
}
