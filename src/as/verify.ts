/**
 * The edge as the resource server of its own tokens: access tokens the AS issued are verified
 * here, locally, with the AS's signing keys (no JWKS round trip), and refused at once when their
 * grant or the token itself was revoked — although a self-contained JWT that has not expired
 * (RFC 7009 §2 lets a resource server learn of revocation; the edge is both sides). The set of
 * revocations is kept in memory: filled from the store at start, added to by this instance's own
 * revocations at once, by other instances' over the broadcast bus, and read again from the store
 * every few seconds (a missed broadcast is healed).
 */
import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from "jose";
import { GatewayError } from "../errors/errors.ts";
import type { AsStore } from "../store/types.ts";
import { parseAccountId } from "./adapter.ts";

export interface LocalToken {
  readonly issuer: string;
  readonly subject: string;
  readonly tenant: string | null;
  readonly clientId?: string;
  readonly scopes: readonly string[];
  readonly tools?: readonly string[];
  readonly expiresAt: number;
  readonly grantId: string | undefined;
  readonly claims: Readonly<Record<string, unknown>>;
}

/** Claims the AS adds to its access tokens (besides `tenancy.claim`). */
export const GRANT_CLAIM = "mcp_edge_grant";
export const TOOLS_CLAIM = "mcp_edge_tools";

export class Revocations {
  readonly #ids = new Map<string, number>();
  readonly #store: AsStore;
  #since = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(store: AsStore) {
    this.#store = store;
  }

  async start(pollMs: number): Promise<void> {
    await this.poll();
    this.#timer = setInterval(() => void this.poll().catch(() => undefined), pollMs);
    this.#timer.unref();
  }

  async poll(): Promise<void> {
    const from = this.#since;
    const started = Date.now();
    for (const r of await this.#store.revocations(from)) this.#ids.set(r.id, r.until);
    // Overlap the next read by a few seconds: a revocation committed with an earlier `at` by a
    // slower instance is still picked up.
    this.#since = Math.max(0, started - 5000);
    for (const [id, until] of this.#ids) if (until <= started) this.#ids.delete(id);
  }

  /** `grant:<id>` or `jti:<id>`, remembered until `until`. */
  add(id: string, until: number): void {
    this.#ids.set(id, until);
  }

  has(id: string): boolean {
    const until = this.#ids.get(id);
    return until !== undefined && until > Date.now();
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

export class LocalVerifier {
  readonly issuer: string;
  #jwks: ReturnType<typeof createLocalJWKSet>;
  readonly #revoked: Revocations;
  readonly #tenantClaim: string;
  readonly #leeway: number;

  constructor(o: {
    issuer: string;
    jwks: JSONWebKeySet;
    revoked: Revocations;
    tenantClaim: string;
    leeway: number;
  }) {
    this.issuer = o.issuer;
    this.#jwks = createLocalJWKSet(o.jwks);
    this.#revoked = o.revoked;
    this.#tenantClaim = o.tenantClaim;
    this.#leeway = o.leeway;
  }

  /** New signing keys (rotation). */
  setKeys(jwks: JSONWebKeySet): void {
    this.#jwks = createLocalJWKSet(jwks);
  }

  /** An access token of this AS (any audience, unexpired), or undefined: what revocation needs. */
  async check(
    token: string,
  ): Promise<{ jti: string; exp: number; sub: string; clientId?: string } | undefined> {
    try {
      const { payload } = await jwtVerify(token, this.#jwks, {
        issuer: this.issuer,
        typ: "at+jwt",
        algorithms: ["ES256"],
      });
      if (
        typeof payload.jti !== "string" ||
        typeof payload.exp !== "number" ||
        typeof payload.sub !== "string"
      )
        return undefined;
      return {
        jti: payload.jti,
        exp: payload.exp,
        sub: payload.sub,
        ...(typeof payload.client_id === "string" ? { clientId: payload.client_id } : {}),
      };
    } catch {
      return undefined;
    }
  }

  /** Verifies an access token of this AS for `resource`; EDGE_AUTH_INVALID_TOKEN otherwise. */
  async verify(token: string, resource: string): Promise<LocalToken> {
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, this.#jwks, {
        issuer: this.issuer,
        audience: resource,
        typ: "at+jwt",
        algorithms: ["ES256"],
        clockTolerance: this.#leeway / 1000,
        requiredClaims: ["exp", "sub", "jti"],
      }));
    } catch (cause) {
      throw new GatewayError("EDGE_AUTH_INVALID_TOKEN", undefined, { cause });
    }
    const grantId = typeof payload[GRANT_CLAIM] === "string" ? payload[GRANT_CLAIM] : undefined;
    if (
      (grantId !== undefined && this.#revoked.has(`grant:${grantId}`)) ||
      this.#revoked.has(`jti:${String(payload.jti)}`)
    )
      throw new GatewayError("EDGE_AUTH_INVALID_TOKEN", undefined, { cause: new Error("revoked") });
    const account = parseAccountId(String(payload.sub));
    const tenant = payload[this.#tenantClaim];
    const tools = payload[TOOLS_CLAIM];
    return {
      issuer: this.issuer,
      subject: account.subject,
      tenant: typeof tenant === "string" ? tenant : account.tenant,
      ...(typeof payload.client_id === "string" ? { clientId: payload.client_id } : {}),
      scopes: typeof payload.scope === "string" ? payload.scope.split(" ").filter(Boolean) : [],
      ...(Array.isArray(tools) ? { tools: tools.map(String) } : {}),
      expiresAt: Number(payload.exp) * 1000,
      grantId,
      claims: payload,
    };
  }
}
