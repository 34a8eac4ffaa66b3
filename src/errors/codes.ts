/**
 * The one table of mcp-edge error codes. Every error the edge answers with, or fails to boot with,
 * has a stable code here, its HTTP status and its JSON-RPC error code. `docs/errors.md` mirrors
 * this table; `test/unit/docs-drift.test.ts` fails when the two disagree.
 *
 * JSON-RPC codes: -32700/-32600/-32601/-32603 are JSON-RPC 2.0 §5.1. -32000 is the code the MCP
 * SDKs use for transport-level errors; -32001 is the SDK's "Session not found"; -32020 is the
 * 2026-07-28 `HeaderMismatch` error (basic/transports/streamable-http).
 */
export interface ErrorSpec {
  /** HTTP status on the wire; `null` for errors that never reach the wire (boot, CLI). */
  readonly http: number | null;
  /** JSON-RPC error code in the body; `null` when the answer carries no JSON-RPC body. */
  readonly rpc: number | null;
  /** One line for docs and logs. */
  readonly summary: string;
  /** Seconds for `Retry-After`, when the status invites a retry. */
  readonly retryAfter?: number;
}

export const ERROR_CODES = {
  // Request framing (listen stage)
  EDGE_PARSE_ERROR: { http: 400, rpc: -32700, summary: "The body is not valid JSON." },
  EDGE_INVALID_REQUEST: {
    http: 400,
    rpc: -32600,
    summary: "The body is JSON but not a valid JSON-RPC 2.0 message (or not one the endpoint accepts).",
  },
  EDGE_BATCH_REJECTED: {
    http: 400,
    rpc: -32600,
    summary: "A JSON-RPC batch on a protocol version that removed batching (2025-06-18 and later).",
  },
  EDGE_JSON_DUPLICATE_MEMBER: {
    http: 400,
    rpc: -32600,
    summary:
      "An object in the body repeats a member name, at any depth: parsers disagree on which one counts (RFC 8259 §4, RFC 7493 §2.3), so the edge does not judge it.",
  },
  EDGE_JSON_FORBIDDEN_MEMBER: {
    http: 400,
    rpc: -32600,
    summary:
      "The body has a member named `__proto__`, or a `constructor` member holding `prototype`: readers that assign members would see a different message (prototype pollution).",
  },
  EDGE_JSON_LIMIT: {
    http: 400,
    rpc: -32600,
    summary:
      "The body is over a `limits.json` bound (nesting depth, members per object, elements per array, string or number length, or a number a double cannot hold); `data.limit` and `data.max` name it.",
  },
  EDGE_INVALID_UNICODE: {
    http: 400,
    rpc: -32700,
    summary:
      'The body is not valid UTF-8, or holds a lone surrogate (escaped as `"\\ud800"` or raw): I-JSON (RFC 7493 §2.1) forbids it and readers disagree on it.',
  },
  EDGE_UNSUPPORTED_MEDIA_TYPE: { http: 415, rpc: -32000, summary: "Content-Type is not application/json." },
  EDGE_NOT_ACCEPTABLE: {
    http: 406,
    rpc: -32000,
    summary: "Accept does not list the media types the MCP transport requires.",
  },
  EDGE_METHOD_NOT_ALLOWED: { http: 405, rpc: -32000, summary: "HTTP method not allowed on this endpoint." },
  EDGE_BODY_TOO_LARGE: { http: 413, rpc: -32000, summary: "The request body is over the configured cap." },
  EDGE_REQUEST_TIMEOUT: {
    http: 408,
    rpc: -32000,
    summary: "The request headers or body arrived too slowly.",
  },
  EDGE_CLIENT_CLOSED: {
    http: 400,
    rpc: -32000,
    summary:
      "The client closed the connection, or was cut off at limits.requestTimeout, before its request body was complete (logged; the client is gone).",
  },
  EDGE_BAD_HEADER: { http: 400, rpc: -32000, summary: "A request header is malformed or repeated." },
  EDGE_ROUTE_NOT_FOUND: { http: 404, rpc: -32000, summary: "No MCP server is configured at this path." },
  // Hygiene (listen stage)
  EDGE_ORIGIN_FORBIDDEN: {
    http: 403,
    rpc: -32000,
    summary: "The Origin header names an origin that is not allowed (DNS-rebinding / CSRF protection).",
  },
  EDGE_HOST_FORBIDDEN: {
    http: 403,
    rpc: -32000,
    summary: "The Host header names a host this listener does not serve (DNS-rebinding protection).",
  },
  // Authentication and authorization
  EDGE_AUTH_REQUIRED: {
    http: 401,
    rpc: -32000,
    summary:
      "No credentials. The message and WWW-Authenticate say what the route accepts: an API key (and where one comes from), or an OAuth token (the challenge names the resource metadata and scopes).",
  },
  EDGE_AUTH_INVALID_TOKEN: {
    http: 401,
    rpc: -32000,
    summary:
      "The token or API key is invalid, expired or revoked (which one is not said). Refresh the token and retry; for an API key, ask the edge's operator for a new one.",
  },
  EDGE_AUTH_INVALID_REQUEST: {
    http: 400,
    rpc: -32000,
    summary: "Credentials sent in more than one way, or a malformed Authorization header (RFC 6750 §2).",
  },
  EDGE_AUTH_INSUFFICIENT_SCOPE: {
    http: 403,
    rpc: -32000,
    summary: "The token lacks scopes the call needs; the challenge names them (RFC 6750 §3.1).",
  },
  EDGE_TENANT_REQUIRED: {
    http: 403,
    rpc: -32000,
    summary: "Tenancy is required and the credential names no tenant (fail closed: never a default tenant).",
  },
  EDGE_TENANT_NOT_ALLOWED: {
    http: 403,
    rpc: -32000,
    summary:
      "The token names a tenant its issuer may not assert (`auth.oauth[].tenants`, or a tenant another issuer lists).",
  },
  EDGE_RATE_LIMITED: {
    http: 429,
    rpc: -32000,
    summary:
      "A rate limit refused the call; `data` names the limit and when to retry (Retry-After, RateLimit headers).",
  },
  EDGE_TOOL_FORBIDDEN: {
    http: 403,
    rpc: -32000,
    summary: "The credential may not call this tool (the key's or server's tool allow-list).",
  },
  EDGE_TOOL_UNKNOWN: {
    http: 200,
    rpc: -32602,
    summary:
      "The server's `tools/list`, as the edge last saw it for this session (or authorization context), has no tool of this exact name: refused before the upstream and counted against the caller's limits, with the JSON-RPC error a server gives for an unknown tool (MCP server/tools, error handling) in a 200 answer. Opt-out per server: `servers.<name>.tools.enforceList: false`.",
  },
  EDGE_TOOL_NAME_INVALID: {
    http: 200,
    rpc: -32602,
    summary:
      "A `tools/call` without a string name, a name holding control, format or invisible characters or white space at either end, or a name that equals a configured or allowed tool only after canonicalization (case, NFKC, look-alike letters): never forwarded as another name than judged. A JSON-RPC error in a 200 answer, as for an unknown tool.",
  },
  EDGE_AUTH_UNAVAILABLE: {
    http: 503,
    rpc: -32000,
    summary: "A dependency needed to check the credential (JWKS, introspection, key store) is down.",
    retryAfter: 5,
  },
  // Admin API
  EDGE_ADMIN_UNAUTHORIZED: {
    http: 401,
    rpc: null,
    summary: "The admin API needs `Authorization: Bearer <admin token>`.",
  },
  EDGE_ADMIN_NOT_FOUND: {
    http: 404,
    rpc: null,
    summary: "No such object (or not yours to see).",
  },
  EDGE_ADMIN_BAD_REQUEST: {
    http: 400,
    rpc: null,
    summary: "The admin request is malformed; the message says why.",
  },
  EDGE_ADMIN_CONFLICT: { http: 409, rpc: null, summary: "An active object with that name already exists." },
  EDGE_ADMIN_DISABLED: {
    http: 404,
    rpc: null,
    summary: "The admin API is off: no `admin.token` is configured.",
  },
  // Configuration reload (POST /api/reload, SIGHUP, `mcp-edge reload`)
  EDGE_RELOAD_REFUSED: {
    http: 422,
    rpc: null,
    summary:
      "The new configuration was refused (invalid, unsafe, or not runnable on what changes at restart only); the running one stays.",
  },
  EDGE_RELOAD_UNAVAILABLE: {
    http: 409,
    rpc: null,
    summary: "This edge was not started from a configuration file, so there is nothing to reload from.",
  },
  // Protocol (era stage)
  EDGE_PROTOCOL_VERSION_UNSUPPORTED: {
    http: 400,
    rpc: -32000,
    summary: "MCP-Protocol-Version names a version mcp-edge does not speak.",
  },
  EDGE_PROTOCOL_VERSION_MISMATCH: {
    http: 400,
    rpc: -32000,
    summary: "MCP-Protocol-Version differs from the version negotiated for the session.",
  },
  EDGE_HEADER_MISMATCH: {
    http: 400,
    rpc: -32020,
    summary:
      "2026-07-28: Mcp-Method / Mcp-Name / Mcp-Param-* / MCP-Protocol-Version missing or not equal to the body.",
  },
  // Sessions
  EDGE_SESSION_REQUIRED: {
    http: 400,
    rpc: -32000,
    summary: "A session-era request other than initialize arrived without Mcp-Session-Id.",
  },
  EDGE_SESSION_ID_INVALID: {
    http: 400,
    rpc: -32000,
    summary: "Mcp-Session-Id is not visible ASCII or is longer than 256 characters.",
  },
  EDGE_SESSION_NOT_FOUND: {
    http: 404,
    rpc: -32001,
    summary: "The session is unknown, ended, expired, or belongs to someone else. Re-initialize.",
  },
  EDGE_SESSION_BACKEND_LOST: {
    http: 404,
    rpc: -32001,
    summary:
      "The upstream instance holding the session is gone and the route's policy is `expire`. Re-initialize.",
  },
  EDGE_EVENT_ID_INVALID: {
    http: 400,
    rpc: -32000,
    summary: "Last-Event-ID was not issued by mcp-edge for this session.",
  },
  EDGE_STREAM_EXPIRED: {
    http: 400,
    rpc: -32000,
    summary:
      "The stream named by Last-Event-ID is no longer buffered; its remaining events cannot be replayed.",
  },
  EDGE_STREAM_CONFLICT: {
    http: 409,
    rpc: -32000,
    summary: "A standalone GET stream is already open for this session.",
  },
  // Upstream
  EDGE_UPSTREAM_UNAVAILABLE: {
    http: 503,
    rpc: -32000,
    summary: "No healthy upstream instance can take the request.",
    retryAfter: 5,
  },
  EDGE_UPSTREAM_ERROR: {
    http: 502,
    rpc: -32000,
    summary: "The upstream failed while handling the request (connection reset, process exit).",
  },
  EDGE_UPSTREAM_SERVER_ERROR: {
    http: 502,
    rpc: -32000,
    summary:
      "The upstream answered with a 5xx status; `data.upstreamStatus` names it. Its body (stack traces, secrets) is never relayed: it goes to the log, bounded and redacted.",
  },
  EDGE_UPSTREAM_BAD_RESPONSE: {
    http: 502,
    rpc: -32000,
    summary: "The upstream answered with something that is not a valid MCP response for this request.",
  },
  EDGE_UPSTREAM_TIMEOUT: {
    http: 504,
    rpc: -32000,
    summary: "The upstream did not answer within the configured deadline.",
  },
  EDGE_RESULT_TOO_LARGE: {
    http: 502,
    rpc: -32000,
    summary:
      "The upstream's answer (one JSON body, SSE event or stdio line) is over `limits.maxResultBytes`: the call gets this error instead of its result, and its audit record says so. `data.limit` names the maximum in bytes.",
  },
  EDGE_STREAM_BUDGET_EXCEEDED: {
    http: 503,
    rpc: -32000,
    summary:
      "The edge's memory budget for buffered stream events (`streams.bufferBudget`, or the tenant's share of it) is spent and this stream's buffer was the least recently read: its events are dropped and its response ends. Read your streams; resuming it with its Last-Event-ID then answers EDGE_STREAM_EXPIRED.",
    retryAfter: 1,
  },
  EDGE_PROCESS_LIMIT: {
    http: 503,
    rpc: -32000,
    summary:
      "A stdio server in `mode: session` has as many live processes as `limits.maxStdioProcesses` (the gateway, every server together), `upstream.stdio.maxProcesses` (the server) or `maxProcessesPerPrincipal` (this principal) allow: no new session until one ends or is reaped. Retry after `Retry-After` seconds.",
    retryAfter: 5,
  },
  EDGE_UPSTREAM_STREAM_LOST: {
    http: 502,
    rpc: -32000,
    summary:
      "The instance relaying this call's stream stopped before the answer, and the upstream cannot resume the stream (it gives no event ids, or no longer has them): the outcome is unknown; check before retrying a call that is not idempotent.",
  },
  // Token vault (src/vault): users' own upstream tokens
  EDGE_CONNECTION_REQUIRED: {
    http: 200,
    rpc: -32042,
    summary:
      "The server acts for the user on a third-party account the user has not connected (or must connect again): a JSON-RPC error in a 200 answer, MCP 2025-11-25 URL elicitation (`data.elicitations[0].url`; also `data.url` and the message, for clients of earlier versions). After the user connects, the same call succeeds in the same session.",
  },
  EDGE_CONNECTION_UNAVAILABLE: {
    http: 503,
    rpc: -32000,
    summary:
      "The user's token for the server's connection needs a refresh and the provider did not answer (timeout, 5xx); the connection is kept. Retry later.",
    retryAfter: 5,
  },
  EDGE_CONNECT_LINK_INVALID: {
    http: 400,
    rpc: null,
    summary:
      "A connect page (`/connect/...`) was opened with a link that is invalid or expired, or its OAuth callback does not match the flow this browser started: ask the client for a new link.",
  },
  EDGE_CONNECT_DENIED: {
    http: 502,
    rpc: null,
    summary:
      "Connecting an account failed at the provider: it answered the authorization with an error (the user declined) or refused the code exchange. Nothing was stored.",
  },
  // Federated login at the edge's authorization server (src/as/federation.ts)
  EDGE_LOGIN_LINK_INVALID: {
    http: 400,
    rpc: null,
    summary:
      "The IdP's redirect back to the edge (`/oauth/idp/{name}/callback`) does not match a login this browser started, or it expired: start again from the MCP client.",
  },
  EDGE_LOGIN_IDP_FAILED: {
    http: 502,
    rpc: null,
    summary:
      "Signing in at the federated IdP failed: the user declined, the IdP could not be reached, or its answer was refused (wrong `iss`, ID token signature, audience or nonce, no refresh token when one is required). Nothing was issued.",
  },
  EDGE_LOGIN_TENANT_REFUSED: {
    http: 403,
    rpc: null,
    summary:
      "The federated IdP signed the user in but names no tenant, or a tenant it may not assert (`tenants`). Nothing was issued.",
  },
  // Egress (src/egress): outbound requests of the edge itself
  EDGE_EGRESS_DENIED: {
    http: 502,
    rpc: -32000,
    summary:
      "The egress policy refused an outbound request (a private, loopback, link-local or metadata address, a denied name or scheme, a redirect downgrade, too many redirects); `data.rule` names the rule.",
  },
  EDGE_EGRESS_RESPONSE_TOO_LARGE: {
    http: 502,
    rpc: -32000,
    summary: "An outbound response body was over `egress.maxResponseBytes` (or the caller's own cap).",
  },
  // Audit
  EDGE_AUDIT_UNAVAILABLE: {
    http: 503,
    rpc: -32000,
    summary:
      "The audit store is unavailable and the spool is full: tool calls are refused rather than run unaudited.",
    retryAfter: 5,
  },
  // Stores
  EDGE_STORE_UNAVAILABLE: {
    http: 503,
    rpc: -32000,
    summary:
      "A store the edge keeps its state in (Redis/Valkey or PostgreSQL in distributed mode) is unreachable, timed out, or its circuit breaker is open after repeated timeouts (then Retry-After is the time to its next probe).",
    retryAfter: 5,
  },
  // Lifecycle
  EDGE_DRAINING: {
    http: 503,
    rpc: -32000,
    summary:
      "This instance is shutting down and takes no new sessions; retry (another instance will answer).",
    retryAfter: 1,
  },
  EDGE_DRAINED: {
    http: 503,
    rpc: -32000,
    summary:
      "The instance stopped (drain.timeout passed) before the upstream answered; the call's outcome is unknown: check before retrying a call that is not idempotent.",
    retryAfter: 1,
  },
  EDGE_INTERNAL: {
    http: 500,
    rpc: -32603,
    summary: "An unexpected error inside mcp-edge (logged with the request id).",
  },
  // mcp-edge connect (the stdio bridge): JSON-RPC errors to the desktop client, no HTTP status
  EDGE_CONNECT_LOST_IN_FLIGHT: {
    http: null,
    rpc: -32000,
    summary:
      "The connection or the session was lost while a request not safe to repeat (a tools/call) was running; the bridge did not re-send it, so it may or may not have taken effect.",
  },
  EDGE_CONNECT_UNREACHABLE: {
    http: null,
    rpc: -32000,
    summary:
      "The remote server could not be reached within the bridge's retry window (60 s) for this request.",
  },
  EDGE_CONNECT_LOGIN_FAILED: {
    http: null,
    rpc: -32000,
    summary:
      "The OAuth login could not complete: discovery failed, the authorization server's metadata was refused (unsafe URL, no PKCE S256, issuer mismatch), registration or the token request failed, or nobody logged in within 5 minutes.",
  },
  EDGE_CONNECT_HTTP_ERROR: {
    http: null,
    rpc: -32000,
    summary:
      "The server answered the request with an HTTP error and no JSON-RPC error of its own; `data.status` and `data.body` carry it. (A server's own JSON-RPC error is passed through unchanged.)",
  },
  EDGE_CONNECT_SESSION_UNSTABLE: {
    http: null,
    rpc: -32000,
    summary: "The server lost the session again on every re-initialize; the bridge gave up on this request.",
  },
  EDGE_CONNECT_NOT_INITIALIZED: {
    http: null,
    rpc: -32000,
    summary:
      "A request arrived on stdin before `initialize`, or the remote server could not be connected at initialize.",
  },
  // Boot and CLI (never on the wire)
  EDGE_CONFIG_INVALID: {
    http: null,
    rpc: null,
    summary: "The configuration file does not match the schema.",
  },
  EDGE_CONFIG_UNSAFE: {
    http: null,
    rpc: null,
    summary: "The configuration asks for something unsafe without its named opt-in.",
  },
  EDGE_CONFIG_SECRET_INLINE: {
    http: null,
    rpc: null,
    summary: "A secret (client secret, credential header) is written in the config file instead of ${ENV}.",
  },
  EDGE_CONFIG_ENV_MISSING: {
    http: null,
    rpc: null,
    summary: "The configuration references ${NAME} and the environment has no NAME.",
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * Coded warnings printed at boot for unsafe opt-ins. `mcp-edge validate`
 * prints them too. Mirrored in docs/errors.md.
 */
export const WARNING_CODES = {
  EDGE_WARN_AUTH_NONE: "A route runs without authentication (`auth: [none]`).",
  EDGE_WARN_AUTH_NONE_PUBLIC:
    "A route runs without authentication on a non-loopback listener (`unsafe.allowUnauthenticatedPublic`).",
  EDGE_WARN_ANY_HOST:
    "The public listener is not on loopback and neither `publicUrl` nor `security.allowedHosts` is set: any Host header is accepted.",
  EDGE_WARN_TRUST_FORWARDED:
    "X-Forwarded-* / Forwarded headers are trusted (`security.trustForwardedHeaders`).",
  EDGE_WARN_ADMIN_PUBLIC: "The admin listener is not on loopback.",
  EDGE_WARN_INSTANCE_BOUND_UPSTREAM:
    "Distributed mode with a stdio or legacy-SSE upstream: its sessions live in one edge instance, and a request reaching another instance re-initializes the session there (server-side state is lost). Use a Streamable HTTP upstream, or session affinity at the load balancer.",
  EDGE_WARN_NO_ADMIN_TOKEN:
    "A route accepts API keys but `admin.token` is not set: the admin API is off and no key can be created.",
  EDGE_WARN_EGRESS_PRIVATE:
    "Outbound requests may reach private, loopback or link-local addresses: a stdio server through the egress proxy (`servers.*.egress.allowPrivate`, or an `egress.allow` entry naming such an address), or the edge's own run-time URLs (`egress.allowPrivateNetworks`).",
} as const;

export type WarningCode = keyof typeof WARNING_CODES;
