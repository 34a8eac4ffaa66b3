/**
 * Client registration rules the MCP ecosystem needs beyond oidc-provider's defaults:
 *
 * - Redirect URIs: https (hosted callbacks), http on a loopback host only (127.0.0.1, [::1],
 *   localhost; RFC 8252 §7.3), or a private-use scheme (`cursor://`, `vscode://`; RFC 8252
 *   §7.1). Each refused URI is named with its reason (RFC 7591 §3.2.2 `invalid_redirect_uri`).
 * - An http loopback redirect matches a registered one on any port (RFC 8252 §7.3) — for every
 *   client, not only those registered with `application_type: native`: Claude Code's metadata
 *   document lists port-less loopback URIs and authorizes on an ephemeral port.
 * - Scopes a client registers that the edge does not define (claude.ai registers `claudeai`) are
 *   dropped, not a failed registration.
 */

const LOOPBACK_HOSTS = new Set(["127.0.0.1", "[::1]", "localhost"]);
/** Schemes that are never a redirect target. */
const FORBIDDEN_SCHEMES = new Set(["javascript:", "data:", "file:", "vbscript:", "blob:", "about:", "ftp:"]);

export function isLoopbackHttp(u: URL): boolean {
  return u.protocol === "http:" && LOOPBACK_HOSTS.has(u.hostname);
}

/** Why a redirect URI cannot be registered, or undefined when it can. */
export function redirectUriProblem(raw: unknown): string | undefined {
  if (typeof raw !== "string" || raw === "") return "not a string";
  if (raw.length > 2048) return "longer than 2048 characters";
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return "not an absolute URI";
  }
  if (raw.includes("#")) return "has a fragment (RFC 6749 §3.1.2)";
  if (u.username !== "" || u.password !== "") return "has user information";
  if (u.protocol === "https:") return undefined;
  if (u.protocol === "http:")
    return LOOPBACK_HOSTS.has(u.hostname)
      ? undefined
      : "http is allowed only on a loopback host (127.0.0.1, [::1], localhost); use https";
  if (FORBIDDEN_SCHEMES.has(u.protocol)) return `the ${u.protocol} scheme is not a redirect target`;
  // A private-use scheme (RFC 8252 §7.1): any other scheme, reverse-domain style recommended.
  if (!/^[a-z][a-z0-9+.-]*:$/.test(u.protocol)) return "not a valid scheme";
  return undefined;
}

/** Per-URI reasons, or undefined when every URI is acceptable. */
export function redirectUriProblems(uris: unknown): string | undefined {
  if (!Array.isArray(uris) || uris.length === 0) return "redirect_uris must be a non-empty array";
  const bad = uris
    .map((u, i) => {
      const why = redirectUriProblem(u);
      return (
        why && `redirect_uris[${i}] ${typeof u === "string" ? JSON.stringify(u.slice(0, 200)) : ""}: ${why}`
      );
    })
    .filter((x): x is string => x !== undefined);
  return bad.length > 0 ? bad.join("; ") : undefined;
}

/** The loopback rule of RFC 8252 §7.3: same URI but for the port of an http loopback host. */
export function loopbackMatch(requested: string, registered: readonly string[]): boolean {
  let r: URL;
  try {
    r = new URL(requested);
  } catch {
    return false;
  }
  if (!isLoopbackHttp(r)) return false;
  const strip = (u: URL) => `${u.protocol}//${u.hostname}${u.pathname}${u.search}`;
  const want = strip(r);
  return registered.some((reg) => {
    try {
      const u = new URL(reg);
      return isLoopbackHttp(u) && strip(u) === want;
    } catch {
      return false;
    }
  });
}

/**
 * The registration document as oidc-provider is to see it: no `scope`, public client (PKCE) unless
 * it asked for a secret-based method, `application_type` chosen from the redirect URIs when absent
 * (a private-use scheme needs `native`).
 *
 * A registered `scope` is not kept (RFC 7591 §3.2.1 lets the server replace metadata): the
 * provider would bound every later authorization of the client by it, and MCP clients register
 * the scope of their first request, then step up to more after a 403 `insufficient_scope`. Unknown
 * scopes (claude.ai registers `claudeai`) are dropped with it; what a grant holds is decided at
 * consent, bounded by the route's scopes and the login's.
 */
export function normalizeRegistration(body: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...body };
  delete out.scope;
  out.token_endpoint_auth_method ??= "none";
  if (out.application_type === undefined && Array.isArray(out.redirect_uris)) {
    const custom = out.redirect_uris.some((u) => {
      try {
        const p = new URL(String(u)).protocol;
        return p !== "https:" && p !== "http:";
      } catch {
        return false;
      }
    });
    if (custom) out.application_type = "native";
  }
  out.grant_types ??= ["authorization_code", "refresh_token"];
  out.response_types ??= ["code"];
  return out;
}
