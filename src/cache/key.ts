/**
 * What makes two list requests "the same" for the response cache, and whether an answer may be
 * stored. Pure: no I/O, no clock (callers pass `now`).
 *
 * Spec: modelcontextprotocol/modelcontextprotocol docs/specification/2026-07-28/server/utilities/caching.mdx
 * - Cache key: "the request method together with the request parameters that affect the result
 *   (… the `cursor` for paginated list requests)"; a cached answer MUST NOT be served for a request
 *   whose method or parameters differ. Each page is its own entry.
 * - Requests carrying `inputResponses` or `requestState` MUST NOT be cached.
 * - Only `resultType: "complete"` results are cacheable (`input_required` carries no hints).
 * - `ttlMs`: 0 = immediately stale; absent = assume 0; negative = treat as 0.
 * - `cacheScope: "public"`: "any client, shared gateway, or caching proxy MAY store and serve the
 *   cached response to any user". `"private"`: "MAY be reused for the same authorization context";
 *   caches "MUST NOT be shared across authorization contexts".
 */
import { createHash } from "node:crypto";
import type { Principal } from "../auth/types.ts";
import type { RpcMessage, RpcRequest } from "../mcp/jsonrpc.ts";

/** The list methods whose results are cached, by the kind of list-changed notification that drops them. */
export const LIST_METHODS = {
  "tools/list": "tools",
  "resources/list": "resources",
  // Templates are part of the server's resources: `notifications/resources/list_changed` drops them too.
  "resources/templates/list": "resources",
  "prompts/list": "prompts",
} as const;

export type ListMethod = keyof typeof LIST_METHODS;
export type ListKind = (typeof LIST_METHODS)[ListMethod];

/** `notifications/<kind>/list_changed` → the kind of entries it invalidates. */
export const LIST_CHANGED: Readonly<Record<string, ListKind>> = {
  "notifications/tools/list_changed": "tools",
  "notifications/resources/list_changed": "resources",
  "notifications/prompts/list_changed": "prompts",
};

export function isListMethod(method: string): method is ListMethod {
  return Object.hasOwn(LIST_METHODS, method);
}

/**
 * `_meta` keys that vary per request without changing the result: the progress token (a list served
 * from the cache sends no progress) and OpenTelemetry trace context (2026-07-28 basic/index.mdx,
 * reserved keys). Everything else in `params`, `_meta` included (protocol version, client
 * capabilities, client info, log level), is part of the key: a server may answer differently.
 */
const VOLATILE_META = new Set(["progressToken", "traceparent", "tracestate", "baggage"]);

/**
 * The request a cache lookup may answer: exactly one list request, not a retry of a multi
 * round-trip request. Returns the request, or undefined when the cache stays out of the way.
 */
export function cacheableRequest(messages: readonly RpcMessage[], batch: boolean): RpcRequest | undefined {
  if (batch || messages.length !== 1) return undefined;
  const m = messages[0] as RpcMessage;
  if (!("method" in m) || !("id" in m) || !isListMethod(m.method)) return undefined;
  const params = m.params;
  if (params !== undefined && (typeof params !== "object" || params === null || Array.isArray(params)))
    return undefined;
  // caching.mdx, Cache Key: MRTR retries depend on inputs outside the key.
  if (params && (Object.hasOwn(params, "inputResponses") || Object.hasOwn(params, "requestState")))
    return undefined;
  return m;
}

/** JSON with object keys sorted at every level, so equal values give equal text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const o = value as Record<string, unknown>;
  const keys = Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
}

/** The request parameters that take part in the key: all of them but the volatile `_meta` keys. */
export function keyParams(params: Record<string, unknown> | undefined): string {
  if (!params) return "{}";
  const meta = params["_meta"];
  if (meta === null || typeof meta !== "object" || Array.isArray(meta)) return canonicalJson(params);
  const kept: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(meta)) if (!VOLATILE_META.has(k)) kept[k] = v;
  return canonicalJson({ ...params, _meta: kept });
}

/**
 * The principal's authorization context, as the upstream sees it (the claims of the signed
 * X-MCP-Edge-Identity: tenant, subject, client, key, issuer, scopes) plus the tool allow-list the
 * edge enforces. Two principals share a private entry only when all of these are equal; a rotated
 * key (new key id) or a changed scope set starts a fresh context. Order of scopes/tools is ignored.
 */
export function authorizationContext(p: Principal): string {
  return canonicalJson({
    id: p.id,
    method: p.method,
    tenant: p.tenant,
    subject: p.subject,
    clientId: p.clientId ?? null,
    keyId: p.keyId ?? null,
    issuer: p.issuer ?? null,
    scopes: [...p.scopes].sort(),
    tools: p.tools ? [...p.tools].sort() : null,
  });
}

/** Which protocol era and version produced (and may reuse) an entry. */
export type EraTag =
  | { era: "stateless"; version: string }
  | {
      era: "session";
      /** The version negotiated by the session's initialize. */
      version: string;
      /**
       * The client capabilities sent with initialize: a session-era server may shape its lists by
       * them (e.g. tools that need sampling), so sessions with other capabilities never share.
       */
      capabilities: unknown;
    };

export interface KeyInput {
  server: string;
  /** The principal's tenant (null = no tenant). Entries are never shared between tenants. */
  tenant: string | null;
  /** Undefined for the public key of a request. */
  principal: Principal | undefined;
  era: EraTag;
  method: ListMethod;
  params: Record<string, unknown> | undefined;
}

/**
 * The cache key: a SHA-256 over every part (so a long cursor does not make a long key). A
 * `principal` gives the private key of the request; without one, the tenant-wide public key.
 */
export function cacheKey(k: KeyInput): string {
  const parts = [
    k.server,
    k.tenant,
    k.principal ? authorizationContext(k.principal) : "public",
    k.era.era,
    k.era.version,
    k.era.era === "session" ? canonicalJson(k.era.capabilities ?? null) : "",
    k.method,
    keyParams(k.params),
  ];
  return createHash("sha256").update(JSON.stringify(parts)).digest("base64url");
}

/** The cache settings of one server (config `servers.<name>.cache`, in ms and bytes). */
export interface CachePolicy {
  enabled: boolean;
  maxTtl: number;
  sessionTtl: number;
  sharePublic: boolean;
  maxEntries: number;
  maxBytes: number;
  maxEntryBytes: number;
}

/** How an answer is stored: for how long, shared how, and the result text to replay. */
export interface StoreDecision {
  ttlMs: number;
  scope: "public" | "private";
  /** The result object as JSON without its `ttlMs` (set afresh on every hit). */
  resultText: string;
  /**
   * The upstream's own `ttlMs` (before the `maxTtl` cap), when its result had one: hits carry what
   * is left of it. Undefined in the session era.
   */
  freshMs: number | undefined;
}

/**
 * Whether (and how) an upstream answer to a list request may be stored. Error responses,
 * `input_required` results and non-object results never are. In the 2026-07-28 era the upstream's
 * `ttlMs` (capped by `maxTtl`) and `cacheScope` decide; in the session era the operator's
 * `sessionTtl`, always private. `bytes` is the size of the answer as received.
 */
export function decideStore(
  answer: RpcMessage,
  era: "session" | "stateless",
  policy: CachePolicy,
  bytes: number,
): StoreDecision | undefined {
  if (!policy.enabled || bytes > policy.maxEntryBytes) return undefined;
  if ("method" in answer || !("result" in answer)) return undefined; // errors are never cached
  const result = answer.result;
  if (result === null || typeof result !== "object" || Array.isArray(result)) return undefined;
  const r = result as Record<string, unknown>;
  if (r["resultType"] !== undefined && r["resultType"] !== "complete") return undefined;
  let ttlMs: number;
  let freshMs: number | undefined;
  let scope: "public" | "private" = "private";
  if (era === "stateless") {
    const raw = r["ttlMs"];
    // Absent, negative or not a number: 0, immediately stale, so not stored.
    freshMs = typeof raw === "number" && Number.isFinite(raw) && raw > 0 ? Math.floor(raw) : 0;
    ttlMs = Math.min(freshMs, policy.maxTtl);
    // Anything but an explicit "public" is private: the safe reading of a missing or unknown scope.
    if (r["cacheScope"] === "public" && policy.sharePublic) scope = "public";
  } else {
    ttlMs = policy.sessionTtl;
  }
  if (ttlMs <= 0) return undefined;
  const { ttlMs: _dropped, ...rest } = r;
  return { ttlMs, scope, resultText: JSON.stringify(rest), freshMs };
}

/**
 * The answer sent for a hit: the stored result under the client's own request id, and — in the
 * 2026-07-28 era — `ttlMs` set to the upstream's freshness left, not the original TTL (as an HTTP shared cache's
 * `Age`: the client must not consider the result fresh past the upstream's own deadline).
 */
export function hitAnswer(
  id: RpcRequest["id"],
  entry: { resultText: string; freshUntil: number | undefined },
  now: number,
): string {
  let result = entry.resultText;
  if (entry.freshUntil !== undefined) {
    const left = Math.max(0, Math.ceil(entry.freshUntil - now));
    result = result === "{}" ? `{"ttlMs":${left}}` : `{"ttlMs":${left},${result.slice(1)}`;
  }
  return `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":${result}}`;
}
