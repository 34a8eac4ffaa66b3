import type { ServerConfig } from "../config/schema.ts";
import type { Egress } from "../egress/index.ts";
import { GatewayError } from "../errors/errors.ts";
import type { Logger } from "../observability/logger.ts";
import { readBody } from "./reply.ts";
import { type TokenVault, VAULT_LOCK_MS } from "../store/types.ts";
import type { UpstreamCredentials } from "./types.ts";

export type { UpstreamCredentials };

/**
 * Credentials mcp-edge holds for an upstream: static secret headers
 * and/or an OAuth 2.0 client-credentials grant (RFC 6749 §4.4). They replace, never carry, the
 * client's own token: the client's Authorization header is not on the forwarding
 * allow-list, and these headers are applied last.
 */
export type CredentialsConfig = NonNullable<ServerConfig["credentials"]>;
export type OAuthCredentialsConfig = NonNullable<CredentialsConfig["oauth"]>;

/** Deadline for one token request, in milliseconds. */
export const TOKEN_REQUEST_TIMEOUT_MS = 10_000;
/** Largest token response read, in bytes. */
const MAX_TOKEN_RESPONSE = 64 * 1024;
/** After a failed token request, requests fail fast this long (doubling per failure up to the max). */
const FAILURE_BACKOFF_MIN_MS = 1000;
const FAILURE_BACKOFF_MAX_MS = 30_000;
/**
 * Refreshes triggered by upstream 401s are at most this frequent: an upstream that rejects every
 * token must not turn each client request into a token request.
 */
const REJECTION_REFRESH_INTERVAL_MS = 1000;
/** A token is not sent in its last second: it could expire on the way. */
const EXPIRY_SKEW_MS = 1000;

const NO_CREDENTIALS: UpstreamCredentials = {
  headers: () => Promise.resolve({}),
  now: () => ({}),
  refreshAfterRejection: () => Promise.resolve(false),
  stop: () => {},
};

/**
 * Builds the credentials of one server, validating at boot (DESIGN convention 3). Without a
 * `credentials` block the upstream gets none. Header names are lower-cased so a credential header
 * always replaces a same-named static or forwarded one.
 */
export function createCredentials(
  cfg: CredentialsConfig | undefined,
  egress: Egress,
  log: Logger,
  /** Distributed mode: tokens shared, refreshes serialized across instances (src/store/redis/token-vault.ts). */
  vault?: (oauth: OAuthCredentialsConfig) => TokenVault,
): UpstreamCredentials {
  if (!cfg || (!cfg.oauth && Object.keys(cfg.headers ?? {}).length === 0)) return NO_CREDENTIALS;
  const fixed: Record<string, string> = {};
  for (const [name, value] of Object.entries(cfg.headers ?? {})) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name))
      throw new GatewayError("EDGE_CONFIG_INVALID", `credentials.headers: "${name}" is not a header name`);
    if (/[\r\n\0]/.test(value))
      throw new GatewayError(
        "EDGE_CONFIG_INVALID",
        `credentials.headers.${name}: the value has a line break`,
      );
    fixed[name.toLowerCase()] = value;
  }
  if (!cfg.oauth) {
    const frozen = Object.freeze({ ...fixed });
    return {
      headers: () => Promise.resolve({ ...frozen }),
      now: () => ({ ...frozen }),
      // A static secret cannot be renewed: the 401 goes to the client as the upstream sent it.
      refreshAfterRejection: () => Promise.resolve(false),
      stop: () => {},
    };
  }
  if (fixed.authorization !== undefined)
    throw new GatewayError(
      "EDGE_CONFIG_INVALID",
      "credentials: `headers.authorization` and `oauth` both set the Authorization header; keep one",
    );
  return new ClientCredentialsManager(cfg.oauth, fixed, egress, log, vault?.(cfg.oauth));
}

// ---- the pure part: token response -------------------------------------------------------------

/** An access token as the token endpoint granted it. */
export interface GrantedToken {
  accessToken: string;
  /** Milliseconds since the epoch; undefined when the server did not say (RFC 6749 §5.1). */
  expiresAt: number | undefined;
  /** Granted scope, when the server named it. */
  scope: string | undefined;
}

/** Why a token response was refused; details for the log, never for the client. */
export class TokenEndpointError extends Error {
  /** RFC 6749 §5.2 `error`, when the server sent one. */
  readonly oauthError: string | undefined;
  readonly status: number;
  constructor(message: string, status: number, oauthError?: string) {
    super(message);
    this.name = "TokenEndpointError";
    this.status = status;
    this.oauthError = oauthError;
  }
}

/** RFC 6750 §2.1 `b64token`: also keeps anything header-breaking out of the Authorization value. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * Parses and checks a token endpoint answer to a client-credentials grant (RFC 6749 §4.4.3, §5.1,
 * §5.2). Pure: the caller does the I/O. Throws GatewayError EDGE_UPSTREAM_UNAVAILABLE whose
 * `cause` is a TokenEndpointError with the details.
 *
 * - `access_token` is a non-empty RFC 6750 b64token; `token_type` is `Bearer` in any case
 *   (RFC 6749 §7.1 says case-insensitive); anything else (DPoP, MAC) is refused.
 * - `expires_in` is a non-negative number of seconds. A string of digits is accepted (a known AS
 *   quirk). When absent the token is used until the upstream rejects it (RFC 6749 §5.1 makes it
 *   RECOMMENDED, not REQUIRED).
 */
export function parseTokenResponse(status: number, body: string, now: number): GrantedToken {
  const fail = (message: string, oauthError?: string): never => {
    throw new GatewayError(
      "EDGE_UPSTREAM_UNAVAILABLE",
      "Credentials for the upstream could not be obtained.",
      {
        cause: new TokenEndpointError(message, status, oauthError),
      },
    );
  };
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch {
    doc = undefined;
  }
  const obj =
    doc !== null && typeof doc === "object" && !Array.isArray(doc)
      ? (doc as Record<string, unknown>)
      : undefined;
  if (status !== 200) {
    const error = typeof obj?.error === "string" ? obj.error : undefined;
    // The error code is an RFC 6749 §5.2 token (invalid_client, ...); it never holds a secret.
    return fail(`the token endpoint answered ${status}${error ? ` (${error})` : ""}`, error);
  }
  if (!obj) return fail("the token response is not a JSON object");
  const { access_token: accessToken, token_type: tokenType, expires_in: expiresIn, scope } = obj;
  if (typeof accessToken !== "string" || accessToken.length === 0)
    return fail("the token response has no access_token");
  if (!B64TOKEN.test(accessToken)) return fail("the access_token has characters a bearer token cannot have");
  if (typeof tokenType !== "string") return fail("the token response has no token_type");
  if (tokenType.toLowerCase() !== "bearer")
    return fail(`token_type "${tokenType.slice(0, 32)}" is not Bearer`);
  let seconds: number | undefined;
  if (typeof expiresIn === "number") seconds = expiresIn;
  else if (typeof expiresIn === "string" && /^\d{1,10}$/.test(expiresIn)) seconds = Number(expiresIn);
  else if (expiresIn !== undefined && expiresIn !== null) return fail("expires_in is not a number");
  if (seconds !== undefined && (!Number.isFinite(seconds) || seconds < 0))
    return fail("expires_in is not a non-negative number");
  if (scope !== undefined && typeof scope !== "string") return fail("scope is not a string");
  return {
    accessToken,
    expiresAt: seconds === undefined ? undefined : now + seconds * 1000,
    scope,
  };
}

/**
 * When to refresh a token obtained at `obtainedAt` (ms): `refreshBefore` ahead of its expiry, but
 * never earlier than half its life (a 30 s token with the 60 s default would otherwise be
 * refreshed in a loop). Undefined when the expiry is unknown.
 */
export function refreshAt(
  obtainedAt: number,
  expiresAt: number | undefined,
  refreshBefore: number,
): number | undefined {
  if (expiresAt === undefined) return undefined;
  const life = Math.max(0, expiresAt - obtainedAt);
  return obtainedAt + Math.max(life - refreshBefore, life / 2);
}

/** application/x-www-form-urlencoded encoding of one value (RFC 6749 Appendix B). */
function formEncode(value: string): string {
  return encodeURIComponent(value)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, "+");
}

/** The grant request: body and headers (RFC 6749 §4.4.2, client_secret_basic §2.3.1, RFC 8707 §2.1). */
export function tokenRequest(
  cfg: Pick<OAuthCredentialsConfig, "clientId" | "clientSecret" | "scope" | "resource">,
): {
  headers: Record<string, string>;
  body: string;
} {
  const params = [`grant_type=client_credentials`];
  if (cfg.scope) params.push(`scope=${formEncode(cfg.scope)}`);
  if (cfg.resource) params.push(`resource=${formEncode(cfg.resource)}`);
  // §2.3.1: id and secret are form-encoded before they are joined and base64-encoded.
  const basic = Buffer.from(`${formEncode(cfg.clientId)}:${formEncode(cfg.clientSecret)}`).toString("base64");
  return {
    headers: {
      authorization: `Basic ${basic}`,
      "content-type": "application/x-www-form-urlencoded",
      accept: "application/json",
    },
    body: params.join("&"),
  };
}

// ---- the token manager -------------------------------------------------------------------------

interface HeldToken {
  /** The Authorization header value. */
  value: string;
  obtainedAt: number;
  expiresAt: number | undefined;
  /** headers() handed it out since it was obtained (background refresh only for tokens in use). */
  used: boolean;
}

/** Waits for `p`, or rejects when `signal` aborts; the promise itself keeps running for others. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * Client-credentials tokens for one upstream: cached, refreshed `refreshBefore` ahead of expiry in
 * the background while the upstream is in use (an idle upstream lets its token lapse and fetches one
 * on its next request), refreshed on demand when none is valid or the upstream rejected the current
 * one. All refreshes are single-flight: however many requests need a token, one request reaches
 * the token endpoint. Tokens and the client secret are never logged.
 */
class ClientCredentialsManager implements UpstreamCredentials {
  readonly #cfg: OAuthCredentialsConfig;
  readonly #fixed: Record<string, string>;
  readonly #egress: Egress;
  readonly #log: Logger;
  readonly #request: { headers: Record<string, string>; body: string };
  #token: HeldToken | undefined;
  #flight: Promise<HeldToken> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #failedUntil = 0;
  #lastFailure: GatewayError | undefined;
  #lastRejectionRefresh = Number.NEGATIVE_INFINITY;
  /** The last token an upstream rejected: never adopted again from the vault. */
  #rejected: string | undefined;
  #stopped = false;
  readonly #vault: TokenVault | undefined;

  constructor(
    cfg: OAuthCredentialsConfig,
    fixed: Record<string, string>,
    egress: Egress,
    log: Logger,
    vault?: TokenVault,
  ) {
    this.#cfg = cfg;
    this.#fixed = fixed;
    this.#egress = egress;
    this.#vault = vault;
    this.#log = log.child({ tokenUrl: cfg.tokenUrl, clientId: cfg.clientId });
    this.#request = tokenRequest(cfg);
  }

  async headers(signal?: AbortSignal): Promise<Record<string, string>> {
    const now = Date.now();
    let token = this.#token;
    if (!token || !this.#valid(token, now)) {
      if (!this.#flight && now < this.#failedUntil && this.#lastFailure) throw this.#retryLater(now);
      token = await untilAborted(this.#refresh(), signal);
    } else if (!this.#flight && now >= this.#failedUntil) {
      // In its refresh window (its timer found it idle): renew in the background, send it meanwhile.
      const at = refreshAt(token.obtainedAt, token.expiresAt, this.#cfg.refreshBefore);
      if (at !== undefined && now >= at) this.#refresh().catch(() => {});
    }
    token.used = true;
    return { ...this.#fixed, authorization: token.value };
  }

  async refreshAfterRejection(rejected: Record<string, string>): Promise<boolean> {
    const sent = rejected.authorization;
    if (sent === undefined) return false;
    const current = this.#token;
    if (current && current.value !== sent && this.#valid(current, Date.now())) return true;
    if (this.#flight) return this.#flight.then((t) => t.value !== sent).catch(() => false);
    const now = Date.now();
    if (now - this.#lastRejectionRefresh < REJECTION_REFRESH_INTERVAL_MS) return false;
    this.#lastRejectionRefresh = now;
    // The rejected token is dead for every request, not only this one.
    if (current?.value === sent) this.#token = undefined;
    this.#rejected = sent;
    this.#log.info("upstream rejected its token; refreshing");
    try {
      const fresh = await this.#refresh();
      return fresh.value !== sent;
    } catch {
      return false;
    }
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #valid(t: HeldToken, now: number): boolean {
    return t.expiresAt === undefined || now < t.expiresAt - EXPIRY_SKEW_MS;
  }

  #retryLater(now: number): GatewayError {
    const last = this.#lastFailure!;
    const seconds = Math.max(1, Math.ceil((this.#failedUntil - now) / 1000));
    return new GatewayError(last.code, last.message, {
      cause: last.cause,
      headers: { "retry-after": String(seconds) },
    });
  }

  /** Single-flight: joins the token request in flight, or starts one. */
  #refresh(): Promise<HeldToken> {
    this.#flight ??= this.#fetch().finally(() => {
      this.#flight = undefined;
    });
    return this.#flight;
  }

  /**
   * Distributed mode: a token another instance obtained, when it is worth using instead of
   * fetching (valid, outside its refresh window, not the one being replaced or rejected).
   */
  #fromVault(t: { value: string; obtainedAt: number; expiresAt: number | undefined } | undefined) {
    if (!t) return undefined;
    const now = Date.now();
    const at = refreshAt(t.obtainedAt, t.expiresAt, this.#cfg.refreshBefore);
    if (t.value === this.#rejected || t.value === this.#token?.value) return undefined;
    if (!this.#valid({ ...t, used: false }, now) || (at !== undefined && now >= at)) return undefined;
    const token: HeldToken = { ...t, used: false };
    this.#token = token;
    this.#failures = 0;
    this.#failedUntil = 0;
    this.#lastFailure = undefined;
    this.#log.debug("upstream token taken from the shared vault");
    this.#schedule(token);
    return token;
  }

  async #fetch(): Promise<HeldToken> {
    const vault = this.#vault;
    let locked = false;
    if (vault) {
      // Serialized across instances: use a token another one stored; else take the refresh lock;
      // else wait for the lock holder's token (and fetch after all if none comes in time).
      const shared = this.#fromVault(await vault.get());
      if (shared) return shared;
      locked = await vault.lock();
      if (!locked) {
        const deadline = Date.now() + VAULT_LOCK_MS;
        while (Date.now() < deadline && !this.#stopped) {
          await new Promise((r) => setTimeout(r, 100));
          const t = this.#fromVault(await vault.get());
          if (t) return t;
        }
      }
    }
    try {
      const token = await this.#fetchHere();
      await vault?.put(token);
      return token;
    } finally {
      if (locked) await vault?.unlock();
    }
  }

  async #fetchHere(): Promise<HeldToken> {
    const started = Date.now();
    try {
      let granted: GrantedToken;
      try {
        const res = await this.#egress.request(this.#cfg.tokenUrl, {
          method: "POST",
          headers: this.#request.headers,
          body: this.#request.body,
          signal: AbortSignal.timeout(TOKEN_REQUEST_TIMEOUT_MS),
          headersTimeout: TOKEN_REQUEST_TIMEOUT_MS,
        });
        const body = (await readBody(res.body, MAX_TOKEN_RESPONSE)).toString("utf8");
        granted = parseTokenResponse(res.status, body, started);
      } catch (err) {
        if (err instanceof GatewayError && err.code === "EDGE_UPSTREAM_UNAVAILABLE") throw err;
        const reason = (err as { code?: string; name?: string }).code ?? (err as Error).name ?? "error";
        throw new GatewayError(
          "EDGE_UPSTREAM_UNAVAILABLE",
          "Credentials for the upstream could not be obtained.",
          {
            cause: new TokenEndpointError(`the token request failed (${reason})`, 0),
          },
        );
      }
      const token: HeldToken = {
        value: `Bearer ${granted.accessToken}`,
        obtainedAt: started,
        expiresAt: granted.expiresAt,
        used: false,
      };
      this.#token = token;
      this.#failures = 0;
      this.#failedUntil = 0;
      this.#lastFailure = undefined;
      this.#log.debug(
        {
          expiresIn:
            granted.expiresAt === undefined ? null : Math.round((granted.expiresAt - started) / 1000),
        },
        "upstream token obtained",
      );
      this.#schedule(token);
      return token;
    } catch (err) {
      const gerr = err as GatewayError;
      const backoff = Math.min(FAILURE_BACKOFF_MAX_MS, FAILURE_BACKOFF_MIN_MS * 2 ** this.#failures);
      this.#failures++;
      this.#failedUntil = Date.now() + backoff;
      this.#lastFailure = gerr;
      this.#log.warn(
        { reason: (gerr.cause as Error | undefined)?.message, retryInMs: backoff },
        "upstream token request failed",
      );
      // A token still valid keeps serving; try again after the backoff while it lasts.
      if (this.#token && this.#valid(this.#token, Date.now())) this.#arm(backoff, this.#token);
      throw this.#retryLater(Date.now());
    }
  }

  #schedule(token: HeldToken): void {
    const at = refreshAt(token.obtainedAt, token.expiresAt, this.#cfg.refreshBefore);
    if (at === undefined) return;
    this.#arm(Math.max(0, at - Date.now()), token);
  }

  /** A background refresh of `token`, if it is still the current one and was used meanwhile. */
  #arm(delay: number, token: HeldToken): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#stopped || this.#token !== token || !token.used) return;
      this.#refresh().catch(() => {
        // Logged in #fetch; requests keep the current token until it expires.
      });
    }, delay);
    this.#timer.unref();
  }
}
