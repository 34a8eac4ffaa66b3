import {
  createLocalJWKSet,
  errors,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWK,
  type JWSHeaderParameters,
} from "jose";
import type { Egress } from "../egress/index.ts";
import { GatewayError } from "../errors/errors.ts";
import type { Logger } from "../observability/logger.ts";

/**
 * The signing keys of one issuer, cached (RFC 8725 §3.1: the signature check is never skipped).
 *
 * - Where: `jwksUri` from config, else `jwks_uri` from the issuer's metadata (RFC 8414 §3, then
 *   OIDC discovery), whose `issuer` must equal the configured one (RFC 8414 §3.3).
 * - Fresh: refetched in the background once older than `cacheMaxAge`; requests never wait for a
 *   routine refresh.
 * - Rotation: a token naming an unknown `kid` triggers one refetch, single-flight, at most once
 *   per `cooldown`, so a flood of made-up kids costs the IdP one request per cooldown.
 * - Down: the last good keys keep verifying until `maxStale` after the last successful fetch
 *   (last-known-good); without usable keys every verification is
 *   EDGE_AUTH_UNAVAILABLE (503), never an unverified accept and never a 401 that would make
 *   every client refresh at once.
 *
 * I/O (`fetchBounded`) is separate from validation (`metadataUrls`, `parseIssuerMetadata`,
 * `parseJwks`: pure, table-driven tests): I/O apart from validation.
 */

/** What the verifier needs from `Egress` (tests pass a real one). */
export type EgressLike = Pick<Egress, "request">;

/** A whole HTTP answer, read up to a size cap. */
export interface HttpAnswer {
  status: number;
  contentType: string | undefined;
  body: Buffer;
}

export interface FetchBoundedOptions {
  method: "GET" | "POST";
  headers: Record<string, string>;
  body?: string;
  /** Milliseconds for the whole exchange (connect, headers and body). */
  timeout: number;
  /** Largest body accepted, in bytes. */
  maxBytes: number;
  /**
   * `runtime` for URLs the edge learned at run time (a jwks_uri from issuer metadata): their
   * addresses are checked against the SSRF policy. Default `config`: written by the operator.
   */
  trust?: "config" | "runtime";
  /** The configured URL a run-time one stems from (its host:port is named: src/egress/policy.ts checkPort). */
  namedBy?: string;
}

/** Client-visible text of EDGE_AUTH_UNAVAILABLE; the detail goes to `cause` and the log. */
const UNAVAILABLE_MESSAGE = "The token issuer cannot be reached to check the credential; retry later.";

export function authUnavailable(detail: string, cause?: unknown): GatewayError {
  return new GatewayError("EDGE_AUTH_UNAVAILABLE", UNAVAILABLE_MESSAGE, {
    cause: cause === undefined ? new Error(detail) : new Error(detail, { cause }),
  });
}

/**
 * One bounded HTTP exchange through egress: a timeout over the whole exchange and a size cap on
 * the body (an IdP is a remote party: OWASP API10:2023). Transport failures, timeouts and
 * oversized bodies throw EDGE_AUTH_UNAVAILABLE; any status is returned as is.
 */
export async function fetchBounded(
  egress: EgressLike,
  url: string,
  options: FetchBoundedOptions,
): Promise<HttpAnswer> {
  const signal = AbortSignal.timeout(options.timeout);
  let res: Awaited<ReturnType<EgressLike["request"]>>;
  try {
    res = await egress.request(url, {
      method: options.method,
      headers: options.headers,
      ...(options.body !== undefined ? { body: options.body } : {}),
      signal,
      headersTimeout: options.timeout,
      ...(options.trust ? { trust: options.trust } : {}),
      ...(options.namedBy !== undefined ? { namedBy: options.namedBy } : {}),
    });
  } catch (err) {
    throw authUnavailable(`${options.method} ${url} failed`, err);
  }
  const declared = Number(firstHeader(res.headers["content-length"]) ?? Number.NaN);
  if (declared > options.maxBytes) {
    res.body.destroy();
    throw authUnavailable(`${url}: answer of ${declared} bytes is over the ${options.maxBytes}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res.body) {
      size += chunk.length;
      if (size > options.maxBytes) {
        res.body.destroy();
        throw authUnavailable(`${url}: answer over the ${options.maxBytes}-byte limit`);
      }
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    throw authUnavailable(`${url}: reading the answer failed`, err);
  }
  return {
    status: res.status,
    contentType: firstHeader(res.headers["content-type"]),
    body: Buffer.concat(chunks),
  };
}

function firstHeader(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Metadata URLs to try for an issuer, in order (RFC 8414 §3.1 path insertion; OIDC Discovery
 * §4.1 suffix; MCP authorization "Authorization Server Metadata Discovery"):
 * - `https://as` → `/.well-known/oauth-authorization-server`, `/.well-known/openid-configuration`
 * - `https://as/t1` → `/.well-known/oauth-authorization-server/t1`,
 *   `/.well-known/openid-configuration/t1`, `/t1/.well-known/openid-configuration`
 */
export function metadataUrls(issuer: string): string[] {
  const u = new URL(issuer);
  const path = u.pathname.replace(/\/+$/, "");
  if (path === "") {
    return [
      `${u.origin}/.well-known/oauth-authorization-server`,
      `${u.origin}/.well-known/openid-configuration`,
    ];
  }
  return [
    `${u.origin}/.well-known/oauth-authorization-server${path}`,
    `${u.origin}/.well-known/openid-configuration${path}`,
    `${u.origin}${path}/.well-known/openid-configuration`,
  ];
}

export interface IssuerMetadata {
  jwksUri: string;
}

function parseJsonObject(answer: HttpAnswer, what: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(answer.body.toString("utf8"));
  } catch (err) {
    throw authUnavailable(`${what} is not JSON`, err);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw authUnavailable(`${what} is not a JSON object`);
  }
  return doc as Record<string, unknown>;
}

/**
 * Checks an RFC 8414 / OIDC metadata answer: 200, a JSON object whose `issuer` is exactly the
 * configured issuer (RFC 8414 §3.3, against impersonation and mix-up), with an absolute http(s)
 * `jwks_uri`. Throws EDGE_AUTH_UNAVAILABLE: the edge cannot check tokens of this issuer.
 */
export function parseIssuerMetadata(answer: HttpAnswer, issuer: string): IssuerMetadata {
  if (answer.status !== 200) throw authUnavailable(`issuer metadata answered ${answer.status}`);
  const doc = parseJsonObject(answer, "issuer metadata");
  if (doc["issuer"] !== issuer) {
    throw authUnavailable(
      `issuer metadata names issuer ${JSON.stringify(doc["issuer"])}, not the configured ${issuer}`,
    );
  }
  const jwksUri = doc["jwks_uri"];
  if (typeof jwksUri !== "string" || !isHttpUrl(jwksUri)) {
    throw authUnavailable("issuer metadata has no valid jwks_uri");
  }
  return { jwksUri };
}

function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return u.protocol === "https:" || u.protocol === "http:";
  } catch {
    return false;
  }
}

/** Key types a JWS verification key can have; `oct` (a shared secret) never belongs in a JWKS we trust. */
const PUBLIC_KTY = new Set(["RSA", "EC", "OKP", "AKP"]);

/**
 * Checks a JWKS answer (RFC 7517 §5): 200, a JSON object with a `keys` array. Members that are
 * not public signature keys (symmetric `oct`, anything with private parts, `use` other than `sig`)
 * are dropped rather than trusted. Throws EDGE_AUTH_UNAVAILABLE.
 */
export function parseJwks(answer: HttpAnswer): JSONWebKeySet {
  if (answer.status !== 200) throw authUnavailable(`JWKS answered ${answer.status}`);
  const doc = parseJsonObject(answer, "JWKS");
  const keys = doc["keys"];
  if (!Array.isArray(keys)) throw authUnavailable("JWKS has no keys array");
  const usable = keys.filter(
    (k): k is JWK =>
      typeof k === "object" &&
      k !== null &&
      typeof k.kty === "string" &&
      PUBLIC_KTY.has(k.kty) &&
      !("d" in k) &&
      !("p" in k) &&
      !("k" in k) &&
      (k.use === undefined || k.use === "sig"),
  );
  return { keys: usable };
}

export interface JwksCacheOptions {
  issuer: string;
  /** Configured JWKS URL; discovered from the issuer's metadata when absent. */
  jwksUri?: string | undefined;
  egress: EgressLike;
  log: Logger;
  /** Refetch when the keys are older than this (ms). */
  cacheMaxAge: number;
  /** Keep using the last good keys this long after the last successful fetch (ms, ≥ cacheMaxAge). */
  maxStale: number;
  /** Least time between two fetches caused by unknown `kid`s (ms). Default 30 s. */
  cooldown?: number;
  /** After a failed fetch, the next one waits this long (ms). Default 5 s (EDGE_AUTH_UNAVAILABLE's Retry-After). */
  failureBackoff?: number;
  /** Timeout of each HTTP exchange (ms). Default 5 s. */
  timeout?: number;
  /** Largest metadata or JWKS document (bytes). Default 512 KiB. */
  maxBytes?: number;
  /** Clock in ms (tests freeze it). Default Date.now. */
  now?: () => number;
}

export const JWKS_DEFAULTS = {
  cooldown: 30_000,
  failureBackoff: 5_000,
  timeout: 5_000,
  maxBytes: 512 * 1024,
} as const;

type LocalJwks = ReturnType<typeof createLocalJWKSet>;

interface KeySet {
  keys: LocalJwks;
  fetchedAt: number;
  generation: number;
}

export class JwksCache {
  readonly issuer: string;
  readonly #o: Required<Omit<JwksCacheOptions, "jwksUri">> & { jwksUri: string | undefined };
  /** The last good key set, when it was fetched, and its generation (one object: never torn). */
  #current: KeySet | undefined;
  /** When the last fetch (successful or not) started. */
  #attemptAt = Number.NEGATIVE_INFINITY;
  #lastAttemptFailed = false;
  #inflight: Promise<void> | undefined;
  #discovered: { jwksUri: string; at: number } | undefined;
  /** JWKS documents fetched (for tests and diagnostics). */
  fetches = 0;

  constructor(options: JwksCacheOptions) {
    this.issuer = options.issuer;
    this.#o = {
      issuer: options.issuer,
      jwksUri: options.jwksUri,
      egress: options.egress,
      log: options.log,
      cacheMaxAge: options.cacheMaxAge,
      maxStale: options.maxStale,
      cooldown: options.cooldown ?? JWKS_DEFAULTS.cooldown,
      failureBackoff: options.failureBackoff ?? JWKS_DEFAULTS.failureBackoff,
      timeout: options.timeout ?? JWKS_DEFAULTS.timeout,
      maxBytes: options.maxBytes ?? JWKS_DEFAULTS.maxBytes,
      now: options.now ?? Date.now,
    };
  }

  /** Fetches the keys once; a failure is logged, not thrown (the IdP may come up later). */
  async warm(): Promise<void> {
    try {
      await this.#refresh("start");
    } catch (err) {
      this.#o.log.warn(
        { issuer: this.issuer, err: detail(err) },
        "JWKS not available at start; tokens of this issuer get 503 until it is",
      );
    }
  }

  /** Resolves once no fetch is in flight (a background refresh included); never rejects. */
  async settled(): Promise<void> {
    await this.#inflight?.catch(() => undefined);
  }

  /** Whether keys are held that may still be used (age ≤ maxStale). */
  get ready(): boolean {
    return this.#usable(this.#o.now()) !== undefined;
  }

  /** Bumped on every successful fetch: results verified with an older key set can be re-checked. */
  get generation(): number {
    return this.#current?.generation ?? 0;
  }

  /**
   * The key resolver given to jose's `jwtVerify`. Throws jose's JWKSNoMatchingKey (the token is
   * invalid) or EDGE_AUTH_UNAVAILABLE (no usable keys, or a refetch for an unknown kid failed).
   */
  readonly getKey = async (header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey> =>
    (await this.resolveKey(header, token)).key;

  /** `getKey`, also naming the generation of the key set the key came from. */
  async resolveKey(
    header: JWSHeaderParameters,
    token: FlattenedJWSInput,
  ): Promise<{ key: CryptoKey; generation: number }> {
    const now = this.#o.now();
    let set = this.#usable(now);
    if (set === undefined) {
      if (
        this.#inflight === undefined &&
        this.#lastAttemptFailed &&
        now - this.#attemptAt < this.#o.failureBackoff
      ) {
        throw authUnavailable(`JWKS of ${this.issuer} unavailable (backing off after a failed fetch)`);
      }
      await this.#refresh("cold");
      set = this.#usable(this.#o.now());
      if (set === undefined) throw authUnavailable(`JWKS of ${this.issuer} unavailable`);
    } else if (now - set.fetchedAt >= this.#o.cacheMaxAge) {
      this.#backgroundRefresh(now);
    }
    try {
      return { key: await set.keys(header, token), generation: set.generation };
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
      // Unknown kid: perhaps the IdP rotated. One refetch, shared by every caller, per cooldown.
      if (this.#inflight === undefined && this.#o.now() - this.#attemptAt < this.#o.cooldown) {
        if (this.#lastAttemptFailed) throw authUnavailable(`JWKS of ${this.issuer} unavailable`);
        throw err;
      }
      await this.#refresh("unknown kid");
      const fresh = this.#usable(this.#o.now());
      if (fresh === undefined) throw authUnavailable(`JWKS of ${this.issuer} unavailable`);
      return { key: await fresh.keys(header, token), generation: fresh.generation };
    }
  }

  #usable(now: number): KeySet | undefined {
    const set = this.#current;
    if (set === undefined || now - set.fetchedAt > this.#o.maxStale) return undefined;
    return set;
  }

  #backgroundRefresh(now: number): void {
    if (this.#inflight !== undefined) return;
    if (this.#lastAttemptFailed && now - this.#attemptAt < this.#o.failureBackoff) return;
    this.#refresh("max age").catch((err: unknown) => {
      this.#o.log.warn(
        { issuer: this.issuer, err: detail(err), ageMs: now - (this.#current?.fetchedAt ?? now) },
        "JWKS refresh failed; verifying with the last good keys",
      );
    });
  }

  /** Single-flight fetch: concurrent callers share one request. Rejects with EDGE_AUTH_UNAVAILABLE. */
  #refresh(reason: string): Promise<void> {
    if (this.#inflight !== undefined) return this.#inflight;
    this.#attemptAt = this.#o.now();
    const run = async (): Promise<void> => {
      try {
        const uri = await this.#jwksUri();
        this.fetches++;
        const answer = await fetchBounded(this.#o.egress, uri, {
          method: "GET",
          headers: { accept: "application/jwk-set+json, application/json" },
          timeout: this.#o.timeout,
          maxBytes: this.#o.maxBytes,
          // A discovered jwks_uri was chosen by the metadata document, not the operator (SSRF).
          trust: this.#o.jwksUri === undefined ? "runtime" : "config",
          // A jwks_uri on the configured issuer's host and port is on a port the operator named.
          namedBy: this.#o.issuer,
        });
        const jwks = parseJwks(answer);
        let local: LocalJwks;
        try {
          local = createLocalJWKSet(jwks);
        } catch (err) {
          throw authUnavailable("JWKS rejected by jose", err);
        }
        this.#current = { keys: local, fetchedAt: this.#o.now(), generation: this.generation + 1 };
        this.#lastAttemptFailed = false;
        this.#o.log.debug({ issuer: this.issuer, reason, keys: jwks.keys.length }, "JWKS fetched");
      } catch (err) {
        this.#lastAttemptFailed = true;
        throw err instanceof GatewayError ? err : authUnavailable("JWKS fetch failed", err);
      }
    };
    const p = run().finally(() => {
      this.#inflight = undefined;
    });
    this.#inflight = p;
    return p;
  }

  /** The configured URI, or the discovered one (rediscovered every `cacheMaxAge`; the old one is kept if that fails). */
  async #jwksUri(): Promise<string> {
    if (this.#o.jwksUri !== undefined) return this.#o.jwksUri;
    const known = this.#discovered;
    if (known !== undefined && this.#o.now() - known.at < this.#o.cacheMaxAge) return known.jwksUri;
    try {
      const meta = await this.#discover();
      this.#discovered = { jwksUri: meta.jwksUri, at: this.#o.now() };
      return meta.jwksUri;
    } catch (err) {
      if (known === undefined) throw err;
      this.#o.log.warn(
        { issuer: this.issuer, err: detail(err) },
        "issuer metadata unavailable; keeping the known jwks_uri",
      );
      return known.jwksUri;
    }
  }

  async #discover(): Promise<IssuerMetadata> {
    let last: unknown;
    for (const url of metadataUrls(this.issuer)) {
      let answer: HttpAnswer;
      try {
        answer = await fetchBounded(this.#o.egress, url, {
          method: "GET",
          headers: { accept: "application/json" },
          timeout: this.#o.timeout,
          maxBytes: this.#o.maxBytes,
        });
      } catch (err) {
        last = err;
        continue;
      }
      // A document that is there but wrong (issuer mismatch, no jwks_uri) is an answer: stop.
      if (answer.status === 200) return parseIssuerMetadata(answer, this.issuer);
      last = authUnavailable(`${url} answered ${answer.status}`);
    }
    throw last instanceof GatewayError ? last : authUnavailable("issuer metadata discovery failed", last);
  }
}

/** A log-safe description of an error and its causes (never a token: none is ever put there). */
export function detail(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let i = 0; i < 4 && e !== undefined && e !== null; i++) {
    if (e instanceof Error) {
      parts.push(
        (e as { code?: string }).code ? `${(e as { code?: string }).code}: ${e.message}` : e.message,
      );
      e = e.cause;
    } else {
      parts.push(String(e));
      break;
    }
  }
  return parts.join(" <- ");
}
