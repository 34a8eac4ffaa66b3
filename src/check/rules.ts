/**
 * The rules `mcp-edge check` judges, one entry per rule: a stable id (CI baselines and SARIF refer
 * to it), the severity (`required` for a MUST of the cited text, `recommended` for a SHOULD or for
 * production hygiene no spec makes mandatory), the section it cites and what a pass means.
 *
 * Citations name the MCP revision (2025-11-25 for the session era, 2026-07-28 for the stateless
 * era) and the RFC section; the URLs are the public pages, so a finding can be looked up as is.
 */

export type Severity = "required" | "recommended";
export type Category = "transport" | "auth" | "hygiene" | "tools";

export interface Rule {
  id: string;
  category: Category;
  severity: Severity;
  title: string;
  /** Spec section, human-readable. */
  cite: string;
  /** Where the cited text lives. */
  url: string;
}

const T25 = "https://modelcontextprotocol.io/specification/2025-11-25/basic/transports";
const T26 = "https://modelcontextprotocol.io/specification/2026-07-28/basic/transports/streamable-http";
const A25 = "https://modelcontextprotocol.io/specification/2025-11-25/basic/authorization";
const A26 = "https://modelcontextprotocol.io/specification/2026-07-28/basic/authorization";
const L25 = "https://modelcontextprotocol.io/specification/2025-11-25/basic/lifecycle";
const SEC = "https://modelcontextprotocol.io/specification/2025-11-25/basic/security_best_practices";

function rule(
  id: string,
  category: Category,
  severity: Severity,
  title: string,
  cite: string,
  url: string,
): Rule {
  return { id, category, severity, title, cite, url };
}

export const RULES: readonly Rule[] = [
  // Session era (2025-03-26 .. 2025-11-25)
  rule(
    "session.initialize",
    "transport",
    "required",
    "initialize answers with an InitializeResult",
    "MCP 2025-11-25 Lifecycle §Initialization",
    L25,
  ),
  rule(
    "session.id-charset",
    "transport",
    "required",
    "Mcp-Session-Id uses visible ASCII only (0x21-0x7E)",
    "MCP 2025-11-25 Transports §Session Management",
    T25,
  ),
  rule(
    "session.notification-202",
    "transport",
    "required",
    "a notification POST is answered 202 Accepted with no body",
    "MCP 2025-11-25 Transports §Sending Messages to the Server",
    T25,
  ),
  rule(
    "session.request-response",
    "transport",
    "required",
    "a request POST is answered with JSON or SSE carrying the response of the same id",
    "MCP 2025-11-25 Transports §Sending Messages to the Server",
    T25,
  ),
  rule(
    "session.missing-400",
    "transport",
    "recommended",
    "a request without Mcp-Session-Id (session required) is answered 400",
    "MCP 2025-11-25 Transports §Session Management",
    T25,
  ),
  rule(
    "session.unknown-404",
    "transport",
    "required",
    "a request with a session id the server does not hold is answered 404",
    "MCP 2025-11-25 Transports §Session Management",
    T25,
  ),
  rule(
    "session.protocol-version-400",
    "transport",
    "required",
    "an unsupported MCP-Protocol-Version header is answered 400",
    "MCP 2025-11-25 Transports §Protocol Version Header",
    T25,
  ),
  rule(
    "session.get-stream",
    "transport",
    "required",
    "GET with Accept: text/event-stream opens an SSE stream or is answered 405",
    "MCP 2025-11-25 Transports §Listening for Messages from the Server",
    T25,
  ),
  rule(
    "session.resume",
    "transport",
    "recommended",
    "GET with Last-Event-ID (an id the server issued) resumes the stream instead of failing",
    "MCP 2025-11-25 Transports §Resumability and Redelivery",
    T25,
  ),
  rule(
    "session.delete",
    "transport",
    // Clients SHOULD send DELETE and servers MAY refuse it with 405: a SHOULD-level rule. What a
    // server MUST do once a session has ended (404) is session.unknown-404.
    "recommended",
    "DELETE ends the session (then it is refused) or is answered 405",
    "MCP 2025-11-25 Transports §Session Management",
    T25,
  ),
  // Stateless era (2026-07-28)
  rule(
    "modern.discover",
    "transport",
    "required",
    "server/discover answers with supportedVersions",
    "MCP 2026-07-28 Lifecycle §Discovery",
    T26,
  ),
  rule(
    "modern.method-mismatch",
    "transport",
    "required",
    "Mcp-Method differing from the body's method is answered 400 (JSON-RPC -32020 when a body is sent)",
    "MCP 2026-07-28 Streamable HTTP §Request Headers",
    T26,
  ),
  rule(
    "modern.method-missing",
    "transport",
    "required",
    "a POST without Mcp-Method is answered 400",
    "MCP 2026-07-28 Streamable HTTP §Request Headers",
    T26,
  ),
  rule(
    "modern.name-mismatch",
    "transport",
    "required",
    "Mcp-Name differing from params.name of tools/call is answered 400 (-32020)",
    "MCP 2026-07-28 Streamable HTTP §Request Headers",
    T26,
  ),
  rule(
    "modern.version-unsupported",
    "transport",
    "required",
    "an unsupported protocol version is answered 400 with -32022 and data.supported",
    "MCP 2026-07-28 Versioning §Unsupported versions",
    T26,
  ),
  rule(
    "modern.batch-rejected",
    "transport",
    "required",
    "a JSON array (batch) is refused with 400: one message per POST",
    "MCP 2026-07-28 Streamable HTTP §Sending Messages",
    T26,
  ),
  rule(
    "modern.no-session-id",
    "transport",
    "recommended",
    "no Mcp-Session-Id is minted in the stateless era",
    "MCP 2026-07-28 Streamable HTTP §Statelessness",
    T26,
  ),
  rule(
    "modern.get-405",
    "transport",
    "recommended",
    "a session-less GET opens no stream (405 from a 2026-only server)",
    "MCP 2026-07-28 Streamable HTTP §Methods",
    T26,
  ),
  // Authorization
  rule(
    "auth.challenge",
    "auth",
    "required",
    "a request without credentials is answered 401 with WWW-Authenticate: Bearer",
    "RFC 6750 §3; MCP 2025-11-25 Authorization §Error Handling",
    A25,
  ),
  rule(
    "auth.challenge-syntax",
    "auth",
    "required",
    "every WWW-Authenticate challenge is well-formed (auth-params, RFC 6750 error codes)",
    "RFC 9110 §11.6.1; RFC 6750 §3.1",
    "https://www.rfc-editor.org/rfc/rfc6750#section-3.1",
  ),
  rule(
    "auth.challenge-metadata",
    "auth",
    "recommended",
    "the 401 challenge names resource_metadata",
    "RFC 9728 §5.1; MCP 2025-11-25 Authorization §Protected Resource Metadata Discovery",
    A25,
  ),
  rule(
    "auth.challenge-scope",
    "auth",
    "recommended",
    "the 401 challenge names the scope needed",
    "MCP 2025-11-25 Authorization §Scope Selection Strategy",
    A25,
  ),
  rule(
    "auth.prm",
    "auth",
    "required",
    "protected resource metadata is served (challenge URL or well-known) with authorization_servers",
    "RFC 9728 §3, §2; MCP 2025-11-25 Authorization §Authorization Server Location",
    A25,
  ),
  rule(
    "auth.prm-resource",
    "auth",
    "required",
    "the metadata's resource equals the endpoint URL",
    "RFC 9728 §3.3",
    "https://www.rfc-editor.org/rfc/rfc9728#section-3.3",
  ),
  rule(
    "auth.prm-well-known",
    "auth",
    "recommended",
    "metadata is served at the path-inserted well-known URI",
    "RFC 9728 §3.1; MCP 2025-11-25 Authorization §Protected Resource Metadata Discovery",
    A25,
  ),
  rule(
    "auth.no-offline-access",
    "auth",
    "recommended",
    "offline_access is not demanded in challenges or scopes_supported",
    "MCP 2026-07-28 Authorization §Scope Selection Strategy",
    A26,
  ),
  rule(
    "auth.as-metadata",
    "auth",
    "required",
    "authorization server metadata is reachable and its issuer matches",
    "RFC 8414 §3, §3.3",
    "https://www.rfc-editor.org/rfc/rfc8414#section-3.3",
  ),
  rule(
    "auth.pkce-s256",
    "auth",
    "required",
    "the authorization server advertises PKCE S256",
    "RFC 7636 §4.2; MCP 2025-11-25 Authorization §Authorization Code Protection",
    A25,
  ),
  rule(
    "auth.registration",
    "auth",
    "recommended",
    "the authorization server offers CIMD and/or dynamic registration",
    "MCP 2025-11-25 Authorization §Client Registration Approaches",
    A25,
  ),
  rule(
    "auth.iss-response",
    "auth",
    "recommended",
    "the authorization server puts iss in authorization responses",
    "RFC 9207 §3; MCP 2026-07-28 Authorization §Authorization Server Mix-Up",
    A26,
  ),
  rule(
    "auth.invalid-token-401",
    "auth",
    "required",
    "an invalid bearer token is answered 401",
    "MCP 2025-11-25 Authorization §Token Handling; RFC 6750 §3.1",
    A25,
  ),
  rule(
    "auth.query-token-refused",
    "auth",
    "required",
    "a token in the query string is not accepted",
    "MCP 2025-11-25 Authorization §Token Requirements; RFC 6750 §2.3",
    A25,
  ),
  rule(
    "auth.scope-challenge",
    "auth",
    "required",
    "a call refused for scope gets 403 with a Bearer insufficient_scope challenge naming the scope",
    "RFC 6750 §3.1; MCP 2025-11-25 Authorization §Scope Challenge Handling",
    A25,
  ),
  // Hygiene
  rule(
    "hygiene.origin",
    "hygiene",
    "required",
    "a foreign Origin is refused with 403",
    "MCP 2025-11-25 Transports §Security Warning",
    T25,
  ),
  rule(
    "hygiene.dns-rebinding",
    "hygiene",
    "required",
    "a foreign Host header (DNS rebinding) is refused",
    "MCP 2025-11-25 Security Best Practices; MCP 2025-11-25 Transports §Security Warning",
    SEC,
  ),
  rule(
    "hygiene.body-limit",
    "hygiene",
    "recommended",
    "an oversized body is refused (413 or another 4xx)",
    "RFC 9110 §15.5.14",
    "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.14",
  ),
  rule(
    "hygiene.rate-limit",
    "hygiene",
    "recommended",
    "a burst is answered 429 with Retry-After",
    "RFC 6585 §4; RFC 9110 §10.2.3",
    "https://www.rfc-editor.org/rfc/rfc6585#section-4",
  ),
  rule(
    "hygiene.https",
    "hygiene",
    "required",
    "a non-loopback endpoint is served over HTTPS",
    "MCP 2025-11-25 Authorization §Communication Security (OAuth 2.1 §1.5)",
    A25,
  ),
  rule(
    "hygiene.tls",
    "hygiene",
    "required",
    "TLS 1.2 or newer with a certificate valid for the host",
    "RFC 9325 §3.1.1",
    "https://www.rfc-editor.org/rfc/rfc9325#section-3.1.1",
  ),
  rule(
    "hygiene.tls-expiry",
    "hygiene",
    "recommended",
    "the certificate is valid for more than 14 days",
    "RFC 9325 §3",
    "https://www.rfc-editor.org/rfc/rfc9325",
  ),
  rule(
    "hygiene.html-headers",
    "hygiene",
    "recommended",
    "HTML pages are not frameable and carry nosniff (and HSTS on https)",
    "MCP 2025-11-25 Security Best Practices §Confused Deputy (consent UI); RFC 6797",
    SEC,
  ),
  // Tools (only with --call-tools)
  rule(
    "tools.call",
    "tools",
    "required",
    "a named tool answers tools/call with a CallToolResult",
    "MCP 2025-11-25 Server Features §Tools",
    "https://modelcontextprotocol.io/specification/2025-11-25/server/tools",
  ),
];

const BY_ID = new Map(RULES.map((r) => [r.id, r]));

export function ruleById(id: string): Rule {
  const r = BY_ID.get(id);
  if (!r) throw new Error(`unknown check rule ${id}`);
  return r;
}
