import { createHash } from "node:crypto";
import { GatewayError } from "../errors/errors.ts";
import type { Logger } from "../observability/logger.ts";
import { authUnavailable, detail, type EgressLike, fetchBounded, type HttpAnswer } from "./jwks.ts";

/**
 * RFC 7662 token introspection, for opaque tokens (and for every token of an issuer configured
 * with introspection only: see oauth.ts).
 *
 * - Request: `POST` form `token=…&token_type_hint=access_token`, client authentication
 *   `client_secret_basic` (RFC 6749 §2.3.1: id and secret form-encoded, then Base64).
 * - Only `active === true` (the JSON boolean) is active (RFC 7662 §2.2); `false`, a missing
 *   `active`, `"true"` as a string, a non-object or non-JSON body are all inactive.
 * - The answer is about the token only when the AS gives one: 200 (parsed) or 400 (the AS refused
 *   the request about this token → invalid). When it cannot answer — transport failure, timeout,
 *   5xx, 429, or 401/403 (the AS refused *our* client credentials, RFC 7662 §2.3: a gateway
 *   misconfiguration, logged as an error) — the result is EDGE_AUTH_UNAVAILABLE (503): a 401 would
 *   be a lie and send every client into a refresh storm. Other statuses (3xx,
 *   404…) are refused as invalid, fail closed, and logged.
 * - Positive answers are cached by SHA-256 of the token for min(`exp`, `cacheMaxAge`) (RFC 7662
 *   §4: the cache bounds how late a revocation is seen); negative answers are not cached.
 */

export interface IntrospectionConfig {
  url: string;
  clientId: string;
  clientSecret: string;
  /** Longest a positive answer is reused (ms). */
  cacheMaxAge: number;
}

export interface IntrospectorOptions {
  issuer: string;
  config: IntrospectionConfig;
  egress: EgressLike;
  log: Logger;
  /** Clock skew allowed on `exp`/`nbf` of the answer (ms). */
  leeway: number;
  /** Timeout of the exchange (ms). Default 5 s. */
  timeout?: number;
  /** Largest answer (bytes). Default 64 KiB. */
  maxBytes?: number;
  /** Cached positive answers at most. Default 10 000. */
  maxEntries?: number;
  now?: () => number;
}

/** Client-visible text of EDGE_AUTH_INVALID_TOKEN: never says which check failed. */
export const INVALID_TOKEN_MESSAGE = "The access token is invalid or expired.";

/** Invalid token, with the internal reason as `cause` (for the debug log only). */
export function invalidToken(reason: string, cause?: unknown): GatewayError {
  return new GatewayError("EDGE_AUTH_INVALID_TOKEN", INVALID_TOKEN_MESSAGE, {
    cause: cause === undefined ? new Error(reason) : new Error(reason, { cause }),
  });
}

/** SHA-256 of a token, base64url: the only form in which a token is kept in memory as a key. */
export function tokenHash(token: string): string {
  return createHash("sha256").update(token).digest("base64url");
}

/** RFC 6749 §2.3.1 / Appendix B: `application/x-www-form-urlencoded` of one value. */
function formEncode(value: string): string {
  return new URLSearchParams({ v: value }).toString().slice(2);
}

/** The introspection request for `token` (pure). */
export function introspectionRequest(
  config: Pick<IntrospectionConfig, "clientId" | "clientSecret">,
  token: string,
): { headers: Record<string, string>; body: string } {
  const basic = Buffer.from(`${formEncode(config.clientId)}:${formEncode(config.clientSecret)}`).toString(
    "base64",
  );
  return {
    headers: {
      authorization: `Basic ${basic}`,
      "content-type": "application/x-www-form-urlencoded",
      accept: "application/json",
    },
    body: new URLSearchParams({ token, token_type_hint: "access_token" }).toString(),
  };
}

export interface ParseIntrospectionOptions {
  issuer: string;
  /** The audience the token must be for (checked when the answer names one). */
  audience: string;
  leeway: number;
  now: number;
}

/**
 * Checks an introspection answer (pure). Returns the claims of an active token; throws
 * EDGE_AUTH_INVALID_TOKEN or EDGE_AUTH_UNAVAILABLE (see the module comment for the table).
 * Beyond `active`: an `exp` in the past or `nbf` in the future (beyond leeway), an `iss` other than
 * the issuer, an `aud` not naming the audience (when present: RFC 7662 makes it optional), or a
 * refresh token (`token_type`/`token_use`) are refused.
 */
export function parseIntrospection(
  answer: HttpAnswer,
  o: ParseIntrospectionOptions,
): Record<string, unknown> {
  const s = answer.status;
  if (s === 401 || s === 403 || s === 429 || s >= 500) {
    throw authUnavailable(`introspection answered ${s}`);
  }
  if (s !== 200) throw invalidToken(`introspection answered ${s}`);
  let doc: unknown;
  try {
    doc = JSON.parse(answer.body.toString("utf8"));
  } catch (err) {
    throw invalidToken("introspection answer is not JSON", err);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw invalidToken("introspection answer is not a JSON object");
  }
  const claims = doc as Record<string, unknown>;
  if (claims["active"] !== true) throw invalidToken("inactive (active is not the boolean true)");
  const exp = claims["exp"];
  if (exp !== undefined && (typeof exp !== "number" || exp * 1000 <= o.now - o.leeway)) {
    throw invalidToken("introspection: exp past");
  }
  const nbf = claims["nbf"];
  if (nbf !== undefined && (typeof nbf !== "number" || nbf * 1000 > o.now + o.leeway)) {
    throw invalidToken("introspection: nbf in the future");
  }
  if (claims["iss"] !== undefined && claims["iss"] !== o.issuer) throw invalidToken("introspection: iss");
  const aud = claims["aud"];
  if (aud !== undefined) {
    const list = typeof aud === "string" ? [aud] : Array.isArray(aud) ? aud : [];
    if (!list.includes(o.audience)) throw invalidToken("introspection: aud");
  }
  const kind = claims["token_use"] ?? claims["token_type"];
  if (typeof kind === "string" && /refresh/i.test(kind)) throw invalidToken("introspection: refresh token");
  return claims;
}

interface CacheEntry {
  claims: Record<string, unknown>;
  until: number;
}

export class Introspector {
  readonly issuer: string;
  readonly #o: Required<Omit<IntrospectorOptions, "issuer">>;
  readonly #cache = new Map<string, CacheEntry>();
  readonly #inflight = new Map<string, Promise<Record<string, unknown>>>();
  /** Introspection requests sent (for tests and diagnostics). */
  requests = 0;

  constructor(options: IntrospectorOptions) {
    this.issuer = options.issuer;
    this.#o = {
      config: options.config,
      egress: options.egress,
      log: options.log,
      leeway: options.leeway,
      timeout: options.timeout ?? 5_000,
      maxBytes: options.maxBytes ?? 64 * 1024,
      maxEntries: options.maxEntries ?? 10_000,
      now: options.now ?? Date.now,
    };
  }

  /**
   * The claims of `token` when the AS says it is active and the answer passes the checks of
   * `parseIntrospection` for `audience`; concurrent calls for one token share one request.
   */
  async introspect(token: string, audience: string): Promise<Record<string, unknown>> {
    const key = `${tokenHash(token)} ${audience}`;
    const now = this.#o.now();
    const hit = this.#cache.get(key);
    if (hit !== undefined) {
      if (hit.until > now) return hit.claims;
      this.#cache.delete(key);
    }
    const pending = this.#inflight.get(key);
    if (pending !== undefined) return pending;
    const p = this.#ask(token, audience, key).finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, p);
    return p;
  }

  async #ask(token: string, audience: string, key: string): Promise<Record<string, unknown>> {
    const req = introspectionRequest(this.#o.config, token);
    this.requests++;
    let answer: HttpAnswer;
    try {
      answer = await fetchBounded(this.#o.egress, this.#o.config.url, {
        method: "POST",
        headers: req.headers,
        body: req.body,
        timeout: this.#o.timeout,
        maxBytes: this.#o.maxBytes,
      });
    } catch (err) {
      this.#o.log.warn({ issuer: this.issuer, err: detail(err) }, "introspection endpoint unavailable");
      throw err;
    }
    if (answer.status === 401 || answer.status === 403) {
      this.#o.log.error(
        { issuer: this.issuer, status: answer.status },
        "introspection endpoint refused the edge's client credentials (auth.oauth[].introspection)",
      );
    } else if (answer.status !== 200 && answer.status !== 400) {
      this.#o.log.warn(
        { issuer: this.issuer, status: answer.status },
        "introspection endpoint answered an error",
      );
    }
    const now = this.#o.now();
    const claims = parseIntrospection(answer, {
      issuer: this.issuer,
      audience,
      leeway: this.#o.leeway,
      now,
    });
    const exp = claims["exp"];
    const until = Math.min(now + this.#o.config.cacheMaxAge, typeof exp === "number" ? exp * 1000 : Infinity);
    if (until > now) this.#store(key, { claims, until });
    return claims;
  }

  #store(key: string, entry: CacheEntry): void {
    this.#cache.delete(key);
    this.#cache.set(key, entry);
    if (this.#cache.size > this.#o.maxEntries) {
      const oldest = this.#cache.keys().next();
      if (!oldest.done) this.#cache.delete(oldest.value);
    }
  }

  /** Forget every cached answer (e.g. on config reload). */
  clear(): void {
    this.#cache.clear();
  }
}
