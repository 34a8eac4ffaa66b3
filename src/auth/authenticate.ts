import type { IncomingMessage } from "node:http";
import type { Route } from "../upstream/types.ts";
import { defaultScopes } from "../config/scopes.ts";
import { GatewayError } from "../errors/errors.ts";
import type { ApiKeyStore } from "../store/types.ts";
import { ApiKeyChecker, KEY_PREFIX } from "./apikey.ts";
import { bearerChallenge, extractBearer, resourceMetadataUrl, resourceUrl } from "./challenge.ts";
import type { OAuthVerifier } from "./oauth.ts";
import { ANONYMOUS, type Principal } from "./types.ts";

/**
 * The `authorization` and `x-api-key` headers of a request, every occurrence, as
 * `IncomingMessage.headersDistinct` holds them: one pass over `rawHeaders` for these two names
 * instead of Node building arrays for every header of every request (`headersDistinct` cost about
 * 2 µs a call in the benchmark profile).
 */
export function credentialHeaders(raw: readonly string[]): {
  authorization: string[] | undefined;
  "x-api-key": string[] | undefined;
} {
  let authorization: string[] | undefined;
  let apiKey: string[] | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === 13 && name.toLowerCase() === "authorization")
      (authorization ??= []).push(raw[i + 1] as string);
    else if (name.length === 9 && name.toLowerCase() === "x-api-key")
      (apiKey ??= []).push(raw[i + 1] as string);
  }
  return { authorization, "x-api-key": apiKey };
}

/** How to send an API key and where one comes from (ASCII: it goes into a challenge too). */
const API_KEY_HOW =
  "Send an API key as Authorization: Bearer mcpe_... or X-API-Key; keys are issued by the operator of this edge (mcp-edge keys create)";

export interface AuthenticatorOptions {
  keys: ApiKeyStore;
  oauth: OAuthVerifier | undefined;
  publicUrl: string | undefined;
  /** Config `tenancy`: the claim naming a token's tenant, and whether one is required. */
  tenancy: { claim: string; required: boolean };
  /**
   * The edge's own authorization server (src/as), when enabled: its access tokens are verified
   * locally, revocations included, on every route that accepts `oauth`.
   */
  local?: LocalIssuer | undefined;
}

/** An issuer whose tokens the edge verifies in process (its own authorization server). */
export interface LocalIssuer {
  readonly issuer: string;
  /** Throws EDGE_AUTH_INVALID_TOKEN for a token that is not valid for `resource`. */
  verify(
    token: string,
    resource: string,
  ): Promise<{
    subject: string;
    tenant: string | null;
    clientId?: string;
    scopes: readonly string[];
    tools?: readonly string[];
    expiresAt: number;
  }>;
}

/** The `iss` of a compact JWS, unverified (it only picks who verifies the token). */
function unverifiedIssuer(token: string): string | undefined {
  const dot = token.indexOf(".");
  const end = token.indexOf(".", dot + 1);
  if (dot <= 0 || end < 0) return undefined;
  try {
    const iss = (
      JSON.parse(Buffer.from(token.slice(dot + 1, end), "base64url").toString("utf8")) as { iss?: unknown }
    ).iss;
    return typeof iss === "string" ? iss : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The authenticate stage. Credentials come from `Authorization: Bearer` (an API key or an OAuth
 * access token) or `X-API-Key`; exactly one way per request (RFC 6750 §2). Every failure answers
 * 401 saying what the route accepts: where OAuth is accepted, a challenge naming the resource
 * metadata (MCP authorization, RFC 9728); on an API-key route, that an API key is needed and where
 * one comes from. It never says which check failed.
 */
export class Authenticator {
  readonly #o: AuthenticatorOptions;
  /** The API-key check, with its own memory of keys that matched and ids that did not. */
  readonly #keys = new ApiKeyChecker();

  constructor(options: AuthenticatorOptions) {
    this.#o = options;
  }

  /** Whether the route takes OAuth tokens: only then are resource metadata and scopes named. */
  #oauthOn(route: Route): boolean {
    return route.config.auth.includes("oauth") && this.#o.publicUrl !== undefined;
  }

  /**
   * The WWW-Authenticate value for a route, with an error code when a credential was presented.
   * Where OAuth is accepted: the RFC 9728 challenge (resource metadata, scopes). Where it is not
   * (API keys only), no promise of metadata that is not served: a realm and a description saying
   * an API key is needed.
   */
  challenge(
    route: Route,
    error?: "invalid_token" | "insufficient_scope" | "invalid_request",
    scope?: string[],
  ): string {
    if (this.#oauthOn(route) && this.#o.publicUrl) {
      const required = scope ?? defaultScopes(route.config, this.#o.local !== undefined);
      return bearerChallenge({
        resourceMetadata: resourceMetadataUrl(this.#o.publicUrl, route.config.route),
        ...(required.length > 0 ? { scope: required } : {}),
        ...(error ? { error } : {}),
      });
    }
    const description = route.config.auth.includes("apiKey") ? `, error_description="${API_KEY_HOW}"` : "";
    return `Bearer realm="mcp-edge"${error ? `, error="${error}"` : ""}${description}`;
  }

  /** The 401 message: what this route accepts, and where a credential comes from. */
  #unauthorizedMessage(route: Route, presented: boolean): string {
    const apiKey = route.config.auth.includes("apiKey");
    const oauth = this.#oauthOn(route);
    const accepted =
      apiKey && oauth
        ? "an OAuth access token (see the resource metadata in WWW-Authenticate) or an API key"
        : oauth
          ? "an OAuth access token (see the resource metadata in WWW-Authenticate)"
          : "an API key";
    const lead = presented
      ? `The credential is not valid here (invalid, expired or revoked; which is not said). This server accepts ${accepted}.`
      : `Authentication required: this server accepts ${accepted}.`;
    return apiKey ? `${lead} ${API_KEY_HOW}.` : lead;
  }

  #unauthorized(route: Route, presented: boolean, cause?: unknown): GatewayError {
    return new GatewayError(
      presented ? "EDGE_AUTH_INVALID_TOKEN" : "EDGE_AUTH_REQUIRED",
      this.#unauthorizedMessage(route, presented),
      {
        cause,
        headers: { "www-authenticate": this.challenge(route, presented ? "invalid_token" : undefined) },
      },
    );
  }

  /**
   * The authenticate stage, with the tenant decided at this first step: from the API
   * key, or from the token's tenant claim. Where tenancy is required, a credential without a tenant
   * is refused — never given a default.
   */
  async authenticate(req: IncomingMessage, route: Route): Promise<Principal> {
    const principal = await this.#identify(req, route);
    if (this.#o.tenancy.required && principal.tenant === null) {
      throw new GatewayError(
        "EDGE_TENANT_REQUIRED",
        "The credential names no tenant, and this edge requires one.",
      );
    }
    return principal;
  }

  async #identify(req: IncomingMessage, route: Route): Promise<Principal> {
    const methods = route.config.auth;
    // `auth: [none]` alone: nothing is checked, and whatever a client sends is ignored (it is still
    // never forwarded). With `none` beside other methods, a credential that is sent must be valid.
    if (methods.length === 1 && methods[0] === "none") return ANONYMOUS;
    // Every occurrence of the two credential headers: Node keeps only the first of repeated
    // Authorization headers in `headers` and joins other repeats, which would hide a second
    // credential (RFC 6750 §2: one per request).
    const presented = credentialHeaders(req.rawHeaders);
    const apiKeys = presented["x-api-key"];
    if (apiKeys && apiKeys.length > 1) {
      throw new GatewayError("EDGE_AUTH_INVALID_REQUEST", "X-API-Key must not be repeated.", {
        headers: { "www-authenticate": this.challenge(route, "invalid_request") },
      });
    }
    const apiKeyHeader = apiKeys?.[0];
    let bearer: string | undefined;
    try {
      bearer = extractBearer(presented);
    } catch (err) {
      if (err instanceof GatewayError) {
        throw new GatewayError(err.code, err.message, {
          headers: { "www-authenticate": this.challenge(route, "invalid_request") },
        });
      }
      throw err;
    }
    if (bearer !== undefined && apiKeyHeader !== undefined) {
      throw new GatewayError(
        "EDGE_AUTH_INVALID_REQUEST",
        "Send one credential: Authorization or X-API-Key.",
        {
          headers: { "www-authenticate": this.challenge(route, "invalid_request") },
        },
      );
    }
    const key = apiKeyHeader ?? (bearer?.startsWith(KEY_PREFIX) ? bearer : undefined);
    if (key !== undefined) {
      if (!methods.includes("apiKey")) throw this.#unauthorized(route, true);
      try {
        return await this.#keys.check(this.#o.keys, key, route.name);
      } catch (err) {
        if (err instanceof GatewayError && err.code === "EDGE_AUTH_INVALID_TOKEN")
          throw this.#unauthorized(route, true, err);
        throw err;
      }
    }
    const local = this.#o.local;
    if (
      bearer !== undefined &&
      local &&
      methods.includes("oauth") &&
      this.#o.publicUrl &&
      unverifiedIssuer(bearer) === local.issuer
    ) {
      let t: Awaited<ReturnType<LocalIssuer["verify"]>>;
      try {
        t = await local.verify(bearer, resourceUrl(this.#o.publicUrl, route.config.route));
      } catch (err) {
        if (err instanceof GatewayError && err.code === "EDGE_AUTH_INVALID_TOKEN")
          throw this.#unauthorized(route, true, err);
        throw err;
      }
      return {
        id: `oauth:${local.issuer}:${t.tenant ?? ""}:${t.subject}`,
        method: "oauth",
        tenant: t.tenant,
        subject: t.subject,
        issuer: local.issuer,
        scopes: t.scopes,
        expiresAt: t.expiresAt,
        ...(t.tools ? { tools: t.tools } : {}),
        ...(t.clientId ? { clientId: t.clientId } : {}),
      };
    }
    if (bearer !== undefined) {
      if (!methods.includes("oauth") || !this.#o.oauth || !this.#o.publicUrl)
        throw this.#unauthorized(route, true);
      let verified: Awaited<ReturnType<OAuthVerifier["verify"]>>;
      try {
        verified = await this.#o.oauth.verify(bearer, resourceUrl(this.#o.publicUrl, route.config.route));
      } catch (err) {
        if (err instanceof GatewayError && err.code === "EDGE_AUTH_INVALID_TOKEN")
          throw this.#unauthorized(route, true, err);
        throw err; // EDGE_AUTH_UNAVAILABLE (503): a dependency is down, never disguised as 401
      }
      const tenant = tenantOf(verified.claims, this.#o.tenancy.claim);
      if (!this.#o.oauth.mayAssertTenant(verified.issuer, tenant)) {
        throw new GatewayError(
          "EDGE_TENANT_NOT_ALLOWED",
          "The token's issuer is not trusted for the tenant it names.",
        );
      }
      return {
        id: `oauth:${verified.issuer}:${tenant ?? ""}:${verified.subject}`,
        method: "oauth",
        tenant,
        subject: verified.subject,
        issuer: verified.issuer,
        scopes: verified.scopes,
        expiresAt: verified.expiresAt,
        ...(verified.clientId ? { clientId: verified.clientId } : {}),
      };
    }
    if (methods.includes("none")) return ANONYMOUS;
    throw this.#unauthorized(route, false);
  }
}

/**
 * The tenant a token names: the claim by its exact name (namespaced URL claims contain dots), else
 * a dotted path into nested objects (`org.id`). A non-empty string, or a finite number as text;
 * anything else is no tenant.
 */
export function tenantOf(claims: Readonly<Record<string, unknown>>, claim: string): string | null {
  let value: unknown = Object.hasOwn(claims, claim) ? claims[claim] : undefined;
  if (value === undefined && claim.includes(".")) {
    value = claim.split(".").reduce<unknown>((v, part) => {
      if (v === null || typeof v !== "object" || Array.isArray(v) || !Object.hasOwn(v, part))
        return undefined;
      return (v as Record<string, unknown>)[part];
    }, claims);
  }
  if (typeof value === "string" && value !== "" && value.length <= 256) return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  return null;
}
