import { GatewayError } from "../errors/errors.ts";

/**
 * Pure helpers for the resource-server side of OAuth on the public listener: the
 * `WWW-Authenticate` challenge (RFC 6750 §3, MCP authorization "Error Handling" and "Scope
 * Challenge Handling"), Protected Resource Metadata (RFC 9728) and bearer extraction (RFC 6750 §2).
 * No I/O, no clock: table-driven tests in test/unit/oauth-challenge.test.ts.
 */

export type BearerError = "invalid_token" | "insufficient_scope" | "invalid_request";

export interface BearerChallengeOptions {
  /** URL of this route's Protected Resource Metadata (see `resourceMetadataUrl`). */
  resourceMetadata: string;
  /** Scopes the request needs (401: what to ask for; 403: all scopes the operation needs). */
  scope?: readonly string[];
  /** Omitted when the request carried no credentials at all (RFC 6750 §3.1). */
  error?: BearerError;
  /** Human-readable text; never name which check failed or echo the token. */
  description?: string;
}

/**
 * RFC 6750 §3 quoted-string. `\` and `"` are escaped (RFC 9110 §5.6.4); control characters and
 * non-ASCII (which RFC 6750 forbids in every attribute and which could split the header) become
 * `?`, so no input can inject a header line.
 */
function quoted(value: string): string {
  let out = "";
  for (const ch of value) {
    const c = ch.codePointAt(0) ?? 0;
    if (c < 0x20 || c > 0x7e) out += "?";
    else if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else out += ch;
  }
  return `"${out}"`;
}

/**
 * The `WWW-Authenticate` value for a 401/403:
 * `Bearer error="…", error_description="…", scope="…", resource_metadata="…"`.
 * `offline_access` is never asked for (MCP 2026-07-28: resource servers SHOULD NOT list it).
 */
export function bearerChallenge(options: BearerChallengeOptions): string {
  const params: string[] = [];
  if (options.error !== undefined) params.push(`error=${quoted(options.error)}`);
  if (options.description !== undefined && options.description !== "") {
    params.push(`error_description=${quoted(options.description)}`);
  }
  const scopes = uniqueScopes(options.scope ?? []);
  if (scopes.length > 0) params.push(`scope=${quoted(scopes.join(" "))}`);
  params.push(`resource_metadata=${quoted(options.resourceMetadata)}`);
  return `Bearer ${params.join(", ")}`;
}

function uniqueScopes(scopes: readonly string[]): string[] {
  return [...new Set(scopes.filter((s) => s !== "" && s !== "offline_access"))];
}

export interface ProtectedResourceMetadataOptions {
  /** The resource identifier: exactly the URL clients use for this route (RFC 9728 §3.3). */
  resource: string;
  /** Issuer identifiers of the accepted authorization servers; at least one (MCP authorization). */
  authorizationServers: readonly string[];
  scopesSupported?: readonly string[];
}

export interface ProtectedResourceMetadata {
  resource: string;
  authorization_servers: string[];
  scopes_supported?: string[];
  bearer_methods_supported: ["header"];
}

/**
 * The RFC 9728 document served at `/.well-known/oauth-protected-resource{route}`. Bearer tokens
 * are accepted in the Authorization header only (MCP: never in the query string), and
 * `offline_access` is not advertised. Throws TypeError without an authorization server (a config
 * bug caught at boot, not a request error).
 */
export function protectedResourceMetadata(
  options: ProtectedResourceMetadataOptions,
): ProtectedResourceMetadata {
  if (options.authorizationServers.length === 0) {
    throw new TypeError("protected resource metadata needs at least one authorization server");
  }
  const scopes = uniqueScopes(options.scopesSupported ?? []);
  return {
    resource: options.resource,
    authorization_servers: [...new Set(options.authorizationServers)],
    ...(scopes.length > 0 ? { scopes_supported: scopes } : {}),
    bearer_methods_supported: ["header"],
  };
}

/** `publicUrl` without a trailing slash, with `route` appended: the audience of the route (RFC 8707). */
export function resourceUrl(publicUrl: string, route: string): string {
  const base = new URL(publicUrl);
  const path = base.pathname.replace(/\/+$/, "");
  return `${base.origin}${path}${route}`;
}

/**
 * Where the metadata of `publicUrl + route` lives: the well-known segment goes between the origin
 * and the resource's path (RFC 9728 §3.1), i.e. `<origin>/.well-known/oauth-protected-resource<route>`
 * (a path in `publicUrl`, for an edge behind a path prefix, stays in front of the route).
 */
export function resourceMetadataUrl(publicUrl: string, route: string): string {
  const base = new URL(publicUrl);
  const path = base.pathname.replace(/\/+$/, "");
  return `${base.origin}/.well-known/oauth-protected-resource${path}${route}`;
}

/** RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
/** `auth-scheme 1*SP credentials` (RFC 9110 §11.4; the scheme is a token, compared case-insensitively). */
const CREDENTIALS = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+)(?: +(.*))?$/s;

/**
 * Headers as `IncomingMessage.headersDistinct` gives them. Pass `req.headersDistinct`, not
 * `req.headers`: Node keeps only the first of several Authorization headers in `req.headers`, so a
 * second one would go unnoticed.
 */
export type HeadersLike = Readonly<Record<string, string | readonly string[] | undefined>>;

/**
 * The bearer token of a request (RFC 6750 §2.1), or undefined when there is no Authorization
 * header or its scheme is not Bearer (other authenticators may own it; with none, the answer is a
 * bare 401 challenge). The scheme is case-insensitive. Throws EDGE_AUTH_INVALID_REQUEST (400) for
 * two Authorization headers (RFC 6750 §2: one method per request) or a Bearer header whose token
 * is missing or not b64token syntax. Tokens in the query string are never read (MCP authorization:
 * not in the URI); form-encoded bodies are not a transport MCP uses.
 */
export function extractBearer(headers: HeadersLike): string | undefined {
  const raw = headers["authorization"];
  if (raw === undefined) return undefined;
  const values = typeof raw === "string" ? [raw] : raw;
  if (values.length === 0) return undefined;
  if (values.length > 1) {
    throw new GatewayError("EDGE_AUTH_INVALID_REQUEST", "Send exactly one Authorization header.");
  }
  const value = (values[0] ?? "").trim();
  const m = CREDENTIALS.exec(value);
  if (!m) {
    throw new GatewayError("EDGE_AUTH_INVALID_REQUEST", "The Authorization header is malformed.");
  }
  if (m[1]?.toLowerCase() !== "bearer") return undefined;
  const token = m[2] ?? "";
  if (!B64TOKEN.test(token)) {
    throw new GatewayError(
      "EDGE_AUTH_INVALID_REQUEST",
      "The Authorization header must be `Bearer <token>` (RFC 6750 §2.1).",
    );
  }
  return token;
}
