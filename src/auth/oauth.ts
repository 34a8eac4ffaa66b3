import {
  decodeJwt,
  decodeProtectedHeader,
  errors,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
  jwtVerify,
} from "jose";
import { GatewayError } from "../errors/errors.ts";
import type { Logger } from "../observability/logger.ts";
import { Introspector, invalidToken, tokenHash } from "./introspection.ts";
import { detail, type EgressLike, JwksCache } from "./jwks.ts";
import { type Config, JWS_ALGORITHMS } from "../config/schema.ts";

/**
 * The OAuth resource server: verifies bearer tokens from the issuers of `auth.oauth`.
 *
 * Routing (which check a token gets):
 * - A token shaped like a compact JWS whose payload names an `iss` is a JWT. The unverified `iss`
 *   only chooses which configured issuer's keys and rules apply; an `iss` not configured is
 *   invalid at once (no network).
 *   - Issuer with `introspection` and no `jwksUri`: the token is introspected at that issuer
 *     (the operator chose revocation-aware checks; no JWKS is fetched for it).
 *   - Otherwise: verified locally with jose against the issuer's JWKS.
 * - Any other token is opaque: introspected at the issuers that have introspection, in config
 *   order (the first active answer wins; if none is active and one was unreachable, 503). With no
 *   such issuer, it is invalid. Note that an opaque token is shown to each of those endpoints
 *   until one knows it: configure one introspecting issuer where that matters.
 *
 * JWT checks (RFC 9068, RFC 8725): algorithms from config only (the header never chooses, so
 * `none` and HS256-with-the-public-key are refused); exact `iss`; `aud` containing
 * `issuer.audience ?? resource` (RFC 8707: tokens for another server, or ID tokens whose `aud` is
 * the client id, are refused); `typ` `at+jwt` or `application/at+jwt` unless the issuer sets
 * `requireTyp: false`; `exp` and `sub` required; `exp`, `nbf` and `iat` with the configured leeway;
 * unknown `crit` extensions refused (jose, RFC 7515 §4.1.11).
 *
 * Verified JWTs are cached by SHA-256 of (token, resource) — jwtVerify costs ~200 µs with warm
 * keys and a session presents the same token many times — until the
 * earliest of `exp` and `jwksCacheMaxAge`, and only while the issuer's key set is the one that
 * verified them (a refetched JWKS re-checks cached tokens once, so a key the IdP withdraws stops
 * being trusted through the cache as it does through the JWKS); at most `cacheEntries` entries,
 * least recently used evicted first.
 *
 * Errors: EDGE_AUTH_INVALID_TOKEN (401) whose message never says which check failed nor echoes the
 * token (the reason is logged at debug, without the token); EDGE_AUTH_UNAVAILABLE (503) when the
 * keys or the introspection endpoint are needed and unreachable.
 */

export type IssuerConfig = Config["auth"]["oauth"][number];

export interface VerifiedToken {
  readonly issuer: string;
  /** `sub`; for an introspected token without `sub`, its `client_id`. */
  readonly subject: string;
  /** `client_id` (RFC 9068 §2.2), else `azp`. */
  readonly clientId?: string;
  readonly scopes: readonly string[];
  /** When the token expires, ms since epoch. An introspected token without `exp`: when its answer stops being reused. */
  readonly expiresAt: number;
  readonly claims: Readonly<Record<string, unknown>>;
}

export interface OAuthVerifierOptions {
  issuers: readonly IssuerConfig[];
  /** Clock skew allowed on `exp`, `nbf`, `iat` (ms, 0–60 000). */
  leeway: number;
  egress: EgressLike;
  log: Logger;
  /** Verified JWTs kept at most. Default 10 000. */
  cacheEntries?: number;
  /** JWKS tuning (ms / bytes); defaults in JWKS_DEFAULTS. */
  jwks?: { cooldown?: number; failureBackoff?: number; timeout?: number; maxBytes?: number };
  /** Introspection tuning (ms / bytes / entries). */
  introspection?: { timeout?: number; maxBytes?: number; maxEntries?: number };
  /** Clock in ms (tests freeze it). Default Date.now. */
  now?: () => number;
}

/** The algorithms a resource server may accept (config/schema.ts holds the one list). */
const ASYMMETRIC: ReadonlySet<string> = new Set(JWS_ALGORITHMS);

/** Longer "tokens" are refused before any parsing (the header limit is 16 KiB anyway). */
const MAX_TOKEN_LENGTH = 16 * 1024;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

interface IssuerRuntime {
  config: IssuerConfig;
  jwks: JwksCache | undefined;
  introspector: Introspector | undefined;
  /** JWTs of this issuer are introspected rather than verified locally. */
  introspectJwts: boolean;
}

interface CacheEntry {
  token: VerifiedToken;
  until: number;
  /** The issuer's keys and their generation when the token was verified. */
  jwks: JwksCache;
  generation: number;
}

/**
 * Which tenants each issuer may assert. With several issuers, one IdP must not be able to name a
 * tenant another IdP is trusted for (a confused tenant is a cross-tenant session):
 * an issuer with `tenants` may assert only those (and a token of it naming none is refused); an
 * issuer without the list may assert any tenant no other issuer lists.
 */
export class IssuerTenants {
  readonly #lists = new Map<string, ReadonlySet<string>>();
  readonly #claimed = new Set<string>();

  constructor(issuers: readonly Pick<IssuerConfig, "issuer" | "tenants">[]) {
    for (const i of issuers) {
      if (!i.tenants) continue;
      this.#lists.set(i.issuer, new Set(i.tenants));
      for (const t of i.tenants) this.#claimed.add(t);
    }
  }

  allows(issuer: string, tenant: string | null): boolean {
    const list = this.#lists.get(issuer);
    if (list) return tenant !== null && list.has(tenant);
    return tenant === null || !this.#claimed.has(tenant);
  }
}

export class OAuthVerifier {
  readonly #issuers: ReadonlyMap<string, IssuerRuntime>;
  readonly #introspecting: readonly IssuerRuntime[];
  readonly #leeway: number;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #cacheEntries: number;
  readonly #cache = new Map<string, CacheEntry>();
  /** jwtVerify calls made (for tests and benchmarks: the cache's effect is visible). */
  jwtVerifications = 0;
  readonly #tenants: IssuerTenants;

  private constructor(options: OAuthVerifierOptions) {
    this.#leeway = options.leeway;
    this.#log = options.log;
    this.#now = options.now ?? Date.now;
    this.#cacheEntries = options.cacheEntries ?? 10_000;
    this.#tenants = new IssuerTenants(options.issuers);
    const issuers = new Map<string, IssuerRuntime>();
    for (const config of options.issuers) {
      const introspectJwts = config.introspection !== undefined && config.jwksUri === undefined;
      issuers.set(config.issuer, {
        config,
        introspectJwts,
        jwks: introspectJwts
          ? undefined
          : new JwksCache({
              issuer: config.issuer,
              jwksUri: config.jwksUri,
              egress: options.egress,
              log: options.log,
              cacheMaxAge: config.jwksCacheMaxAge,
              maxStale: config.jwksMaxStale,
              now: this.#now,
              ...options.jwks,
            }),
        introspector:
          config.introspection === undefined
            ? undefined
            : new Introspector({
                issuer: config.issuer,
                config: config.introspection,
                egress: options.egress,
                log: options.log,
                leeway: options.leeway,
                now: this.#now,
                ...options.introspection,
              }),
      });
    }
    this.#issuers = issuers;
    this.#introspecting = [...issuers.values()].filter((i) => i.introspector !== undefined);
  }

  /** Validates the options (throws TypeError on nonsense: a bad config fails at boot) and builds the verifier. */
  static create(options: OAuthVerifierOptions): OAuthVerifier {
    validateOptions(options);
    return new OAuthVerifier(options);
  }

  /** Fetches every issuer's JWKS once. Never throws: an IdP down at boot means 503s until it is up. */
  async start(): Promise<void> {
    await Promise.all([...this.#issuers.values()].map((i) => i.jwks?.warm()));
  }

  /**
   * Drops cached verifications and waits for JWKS fetches in flight (no timers run: refreshes are
   * started by requests), so the egress can be closed after it.
   */
  async stop(): Promise<void> {
    this.#cache.clear();
    for (const i of this.#issuers.values()) i.introspector?.clear();
    await Promise.all([...this.#issuers.values()].map((i) => i.jwks?.settled()));
  }

  /** The JWKS cache of an issuer (diagnostics, doctor, tests). */
  jwksOf(issuer: string): JwksCache | undefined {
    return this.#issuers.get(issuer)?.jwks;
  }

  /** The introspection client of an issuer (diagnostics, tests). */
  introspectorOf(issuer: string): Introspector | undefined {
    return this.#issuers.get(issuer)?.introspector;
  }

  /**
   * Verifies `token` for `resource` (the route's canonical URL: the default audience). Resolves
   * to the verified identity; rejects with EDGE_AUTH_INVALID_TOKEN or EDGE_AUTH_UNAVAILABLE.
   */
  /** Whether tokens of `issuer` may name `tenant` (see IssuerTenants). */
  mayAssertTenant(issuer: string, tenant: string | null): boolean {
    return this.#tenants.allows(issuer, tenant);
  }

  async verify(token: string, resource: string): Promise<VerifiedToken> {
    if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
      throw this.#refuse(undefined, invalidToken("token empty or too long"));
    }
    const key = `${tokenHash(token)} ${resource}`;
    const now = this.#now();
    const hit = this.#cache.get(key);
    if (hit !== undefined) {
      this.#cache.delete(key);
      if (hit.until > now && hit.generation === hit.jwks.generation) {
        this.#cache.set(key, hit);
        return hit.token;
      }
    }

    const claims = COMPACT_JWS.test(token) ? unverifiedClaims(token) : undefined;
    if (claims === undefined || typeof claims["iss"] !== "string") {
      return this.#introspectOpaque(token, resource);
    }
    const issuer = this.#issuers.get(claims["iss"]);
    if (issuer === undefined) throw this.#refuse(undefined, invalidToken("iss is not a configured issuer"));
    if (issuer.introspectJwts && issuer.introspector !== undefined) {
      return this.#introspectAt(issuer, token, resource);
    }
    const jwks = issuer.jwks!;
    const { verified, generation } = await this.#verifyJwt(issuer, jwks, token, resource, now);
    const until = Math.min(verified.expiresAt, now + issuer.config.jwksCacheMaxAge);
    // Tied to the key set that verified it: a refetched JWKS makes the next hit verify again.
    if (until > now) {
      this.#cache.set(key, { token: verified, until, jwks, generation });
      if (this.#cache.size > this.#cacheEntries) {
        const oldest = this.#cache.keys().next();
        if (!oldest.done) this.#cache.delete(oldest.value);
      }
    }
    return verified;
  }

  async #verifyJwt(
    issuer: IssuerRuntime,
    jwks: JwksCache,
    token: string,
    resource: string,
    now: number,
  ): Promise<{ verified: VerifiedToken; generation: number }> {
    const c = issuer.config;
    // The generation of the key set the key came from (several candidates: the one before, conservatively).
    let generation = jwks.generation;
    const getKey: JWTVerifyGetKey = async (header, input) => {
      const resolved = await jwks.resolveKey(header, input);
      generation = resolved.generation;
      return resolved.key;
    };
    const options: JWTVerifyOptions = {
      algorithms: [...c.algorithms],
      issuer: c.issuer,
      audience: c.audience ?? resource,
      clockTolerance: this.#leeway / 1000,
      requiredClaims: ["exp", "sub"],
      currentDate: new Date(now),
      // jose compares media types case-insensitively, with and without `application/` (RFC 9068 §4).
      ...(c.requireTyp ? { typ: "at+jwt" } : {}),
    };
    let payload: Record<string, unknown>;
    try {
      this.jwtVerifications++;
      payload = await verifyWithCandidates(token, getKey, options);
    } catch (err) {
      if (err instanceof GatewayError) throw this.#refuse(c.issuer, err);
      if (!(err instanceof errors.JOSEError)) {
        this.#log.warn({ issuer: c.issuer, err: detail(err) }, "unexpected error verifying a token");
      }
      throw this.#refuse(c.issuer, invalidToken("jwt verification failed", err));
    }
    // jose checks `iat` only with maxTokenAge; a token issued in the future is refused here.
    const iat = payload["iat"];
    if (iat !== undefined && (typeof iat !== "number" || iat * 1000 > now + this.#leeway)) {
      throw this.#refuse(c.issuer, invalidToken("iat in the future"));
    }
    const sub = payload["sub"];
    if (typeof sub !== "string" || sub === "") throw this.#refuse(c.issuer, invalidToken("sub not a string"));
    return { verified: toVerified(c, sub, payload, (payload["exp"] as number) * 1000), generation };
  }

  async #introspectOpaque(token: string, resource: string): Promise<VerifiedToken> {
    if (this.#introspecting.length === 0) {
      throw this.#refuse(undefined, invalidToken("opaque token and no issuer has introspection"));
    }
    let unavailable: GatewayError | undefined;
    let lastInvalid: GatewayError | undefined;
    for (const issuer of this.#introspecting) {
      try {
        return await this.#introspectAt(issuer, token, resource);
      } catch (err) {
        if (!(err instanceof GatewayError)) throw err;
        if (err.code === "EDGE_AUTH_UNAVAILABLE") unavailable = err;
        else lastInvalid = err;
      }
    }
    throw unavailable ?? lastInvalid ?? invalidToken("no introspecting issuer knows the token");
  }

  async #introspectAt(issuer: IssuerRuntime, token: string, resource: string): Promise<VerifiedToken> {
    const c = issuer.config;
    const audience = c.audience ?? resource;
    let claims: Record<string, unknown>;
    try {
      claims = await issuer.introspector!.introspect(token, audience);
    } catch (err) {
      if (err instanceof GatewayError) throw this.#refuse(c.issuer, err);
      throw err;
    }
    const sub =
      typeof claims["sub"] === "string" && claims["sub"] !== "" ? claims["sub"] : claims["client_id"];
    if (typeof sub !== "string" || sub === "") {
      throw this.#refuse(c.issuer, invalidToken("introspection: neither sub nor client_id"));
    }
    const exp = claims["exp"];
    const expiresAt =
      typeof exp === "number" ? exp * 1000 : this.#now() + (c.introspection?.cacheMaxAge ?? 0);
    return toVerified(c, sub, claims, expiresAt);
  }

  /** Logs why a token was refused (debug, never the token) and returns the error to throw. */
  #refuse(issuer: string | undefined, err: GatewayError): GatewayError {
    if (err.code === "EDGE_AUTH_INVALID_TOKEN") {
      this.#log.debug({ issuer, reason: detail(err.cause) }, "bearer token refused");
    }
    return err;
  }
}

/** The unverified payload of a compact JWS, or undefined when it does not decode as one. */
function unverifiedClaims(token: string): Record<string, unknown> | undefined {
  try {
    const header = decodeProtectedHeader(token);
    if (typeof header.alg !== "string") return undefined;
    return decodeJwt(token) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** jwtVerify; when the token names no `kid` and several keys fit, each is tried (jose's documented pattern). */
async function verifyWithCandidates(
  token: string,
  getKey: JWTVerifyGetKey,
  options: JWTVerifyOptions,
): Promise<Record<string, unknown>> {
  try {
    return (await jwtVerify(token, getKey, options)).payload;
  } catch (err) {
    if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
    for await (const key of err) {
      try {
        return (await jwtVerify(token, key, options)).payload;
      } catch (inner) {
        if (inner instanceof errors.JWSSignatureVerificationFailed) continue;
        throw inner;
      }
    }
    throw new errors.JWSSignatureVerificationFailed();
  }
}

function scopesOf(value: unknown): string[] {
  if (typeof value === "string") return value.split(" ").filter((s) => s !== "");
  if (Array.isArray(value)) return value.filter((s): s is string => typeof s === "string" && s !== "");
  return [];
}

function toVerified(
  c: IssuerConfig,
  subject: string,
  claims: Record<string, unknown>,
  expiresAt: number,
): VerifiedToken {
  const clientId =
    typeof claims["client_id"] === "string"
      ? claims["client_id"]
      : typeof claims["azp"] === "string"
        ? claims["azp"]
        : undefined;
  return Object.freeze({
    issuer: c.issuer,
    subject,
    ...(clientId !== undefined ? { clientId } : {}),
    scopes: Object.freeze(scopesOf(claims[c.scopeClaim])),
    expiresAt,
    claims: Object.freeze({ ...claims }),
  });
}

function httpUrlError(value: unknown, what: string): string | undefined {
  if (typeof value !== "string") return `${what} must be a URL`;
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    return `${what} is not a URL: ${value}`;
  }
  if (u.protocol !== "https:" && u.protocol !== "http:") return `${what} must be http(s): ${value}`;
  return undefined;
}

function validateOptions(o: OAuthVerifierOptions): void {
  const problems: string[] = [];
  const positive = (v: unknown) => typeof v === "number" && Number.isFinite(v) && v > 0;
  if (!Array.isArray(o.issuers) || o.issuers.length === 0) problems.push("at least one issuer is required");
  if (typeof o.leeway !== "number" || !Number.isFinite(o.leeway) || o.leeway < 0 || o.leeway > 60_000) {
    problems.push("leeway must be 0–60000 ms (RFC 7519 §4.1.4: a small leeway only)");
  }
  if (o.cacheEntries !== undefined && !(Number.isInteger(o.cacheEntries) && o.cacheEntries > 0)) {
    problems.push("cacheEntries must be a positive integer");
  }
  if (!o.egress || typeof o.egress.request !== "function") problems.push("egress is required");
  if (!o.log) problems.push("log is required");
  const seen = new Set<string>();
  for (const [n, c] of (o.issuers ?? []).entries()) {
    const at = `issuer ${n} (${String(c?.issuer)})`;
    const urlProblem = httpUrlError(c?.issuer, `${at}: issuer`);
    if (urlProblem) {
      problems.push(urlProblem);
      continue;
    }
    const u = new URL(c.issuer);
    // RFC 8414 §2: an issuer identifier has no query or fragment.
    if (u.search !== "" || u.hash !== "" || c.issuer.includes("#")) {
      problems.push(`${at}: an issuer has no query or fragment (RFC 8414 §2)`);
    }
    if (seen.has(c.issuer)) problems.push(`${at}: listed twice`);
    seen.add(c.issuer);
    if (!Array.isArray(c.algorithms) || c.algorithms.length === 0) {
      problems.push(`${at}: algorithms must list at least one algorithm`);
    } else {
      for (const alg of c.algorithms) {
        if (!ASYMMETRIC.has(alg)) problems.push(`${at}: algorithm ${alg} is not an asymmetric JWS algorithm`);
      }
    }
    if (c.audience !== undefined && (typeof c.audience !== "string" || c.audience === "")) {
      problems.push(`${at}: audience must be a non-empty string`);
    }
    if (typeof c.scopeClaim !== "string" || c.scopeClaim === "") problems.push(`${at}: scopeClaim is empty`);
    if (typeof c.requireTyp !== "boolean") problems.push(`${at}: requireTyp must be a boolean`);
    if (c.jwksUri !== undefined) {
      const p = httpUrlError(c.jwksUri, `${at}: jwksUri`);
      if (p) problems.push(p);
    }
    if (!positive(c.jwksCacheMaxAge)) problems.push(`${at}: jwksCacheMaxAge must be > 0 ms`);
    if (!positive(c.jwksMaxStale) || c.jwksMaxStale < c.jwksCacheMaxAge) {
      problems.push(`${at}: jwksMaxStale must be ≥ jwksCacheMaxAge`);
    }
    const i = c.introspection;
    if (i !== undefined) {
      const p = httpUrlError(i.url, `${at}: introspection.url`);
      if (p) problems.push(p);
      if (typeof i.clientId !== "string" || i.clientId === "") problems.push(`${at}: introspection.clientId`);
      if (typeof i.clientSecret !== "string" || i.clientSecret === "") {
        problems.push(`${at}: introspection.clientSecret`);
      }
      if (typeof i.cacheMaxAge !== "number" || !Number.isFinite(i.cacheMaxAge) || i.cacheMaxAge < 0) {
        problems.push(`${at}: introspection.cacheMaxAge must be ≥ 0 ms`);
      }
    }
  }
  if (problems.length > 0) throw new TypeError(`auth.oauth: ${problems.join("; ")}`);
}
