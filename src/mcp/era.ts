/**
 * Protocol eras and the 2026-07-28 request-header rules.
 *
 * Spec: modelcontextprotocol/modelcontextprotocol
 * docs/specification/2026-07-28/basic/transports/streamable-http.mdx, "Request Metadata":
 * - every POST carries `MCP-Protocol-Version`, equal to `params._meta["io.modelcontextprotocol/protocolVersion"]`;
 * - `Mcp-Method` = `method` on all requests; `Mcp-Name` = `params.name` (`tools/call`, `prompts/get`)
 *   or `params.uri` (`resources/read`);
 * - `Mcp-Name` and `Mcp-Param-{Name}` may carry `=?base64?{b64 of UTF-8}?=` and are decoded before
 *   comparison; a plain value must be visible ASCII, SP or HTAB ("invalid characters" fail);
 * - integer parameters SHOULD compare numerically (`42.0` = `42`); booleans are `true` / `false`;
 * - a `null` or absent argument means no header is expected; intermediaries forward `Mcp-Param-*`
 *   headers they do not recognise.
 * Header requirements for notification POSTs are "not defined by this revision": for notifications a
 * header is checked only when present (as SDK v2's server does). Pure: no I/O.
 */
import { isUtf8 } from "node:buffer";
import { GatewayError } from "../errors/errors.ts";
import { isRequest, isResponse, type RpcMessage } from "./jsonrpc.ts";

export const SESSION_ERA_VERSIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] as const;
export const STATELESS_VERSIONS = ["2026-07-28"] as const;
export const ALL_VERSIONS = [...SESSION_ERA_VERSIONS, ...STATELESS_VERSIONS] as const;

export type SessionEraVersion = (typeof SESSION_ERA_VERSIONS)[number];
export type StatelessVersion = (typeof STATELESS_VERSIONS)[number];
export type ProtocolVersion = (typeof ALL_VERSIONS)[number];
export type Era = "session" | "stateless";

/** The first revision without sessions; later revisions (by date) are stateless too. */
export const FIRST_STATELESS_VERSION = "2026-07-28";

export const META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion";

export function isKnownVersion(v: string): v is ProtocolVersion {
  return (ALL_VERSIONS as readonly string[]).includes(v);
}

const DATE_VERSION = /^\d{4}-\d{2}-\d{2}$/;

/** A `YYYY-MM-DD` version on or after 2026-07-28 (known or not). */
export function isStatelessVersion(v: string | undefined): boolean {
  return v !== undefined && v >= FIRST_STATELESS_VERSION && DATE_VERSION.test(v);
}

/** `params._meta["io.modelcontextprotocol/protocolVersion"]` when it is a string, else undefined. */
export function metaProtocolVersion(msg: RpcMessage): string | undefined {
  if (!("method" in msg)) return undefined;
  const params = msg.params;
  if (params === undefined || params === null || typeof params !== "object" || Array.isArray(params))
    return undefined;
  const meta = params["_meta"];
  if (meta === null || typeof meta !== "object" || Array.isArray(meta)) return undefined;
  const v = (meta as Record<string, unknown>)[META_PROTOCOL_VERSION];
  return typeof v === "string" ? v : undefined;
}

export interface EraInput {
  method: string | undefined;
  headerVersion: string | undefined;
  metaVersion: string | undefined;
  hasSessionHeader: boolean;
}

/**
 * Picks the era of one request: `initialize` or an `Mcp-Session-Id` header → session; a `_meta`
 * or header protocol version of 2026-07-28 or later → stateless; otherwise session.
 */
export function detectEra(input: EraInput): Era {
  if (input.method === "initialize" || input.hasSessionHeader) return "session";
  if (isStatelessVersion(input.metaVersion) || isStatelessVersion(input.headerVersion)) return "stateless";
  return "session";
}

/** Case-insensitive header access; the caller passes lower-case names. */
export interface HeaderLookup {
  get(name: string): string | undefined;
}

export interface StatelessHeaderOptions {
  /**
   * The `x-mcp-header` declarations of the called tool, when the caller knows its `inputSchema`:
   * lower-cased header suffix (the part after `Mcp-Param-`) → property path in `params.arguments`.
   * When given it is authoritative: a declared argument with a non-null primitive value requires its
   * header, and undeclared `Mcp-Param-*` headers are left alone.
   */
  paramHeaders?: ReadonlyMap<string, readonly string[]>;
  /**
   * Without `paramHeaders`: compare each `Mcp-Param-<Name>` header that names a top-level argument
   * (case-insensitively) with that argument's value. A guess (the header suffix is the schema's
   * `x-mcp-header` value, which need not equal the property name). Default true.
   */
  matchParamsByName?: boolean;
}

/**
 * Validates the 2026-07-28 request headers against the body. Throws GatewayError:
 * EDGE_HEADER_MISMATCH (missing, malformed or unequal header), EDGE_PROTOCOL_VERSION_UNSUPPORTED (a
 * consistent but unknown stateless version), EDGE_INVALID_REQUEST (a posted response: 2026-07-28
 * clients MUST NOT POST responses).
 */
export function validateStatelessHeaders(
  headers: HeaderLookup,
  msg: RpcMessage,
  opts: StatelessHeaderOptions = {},
): void {
  if (isResponse(msg)) {
    throw new GatewayError(
      "EDGE_INVALID_REQUEST",
      "Clients must not POST JSON-RPC responses in protocol 2026-07-28.",
    );
  }
  const request = isRequest(msg);
  const rpcId = request ? msg.id : null;

  // MCP-Protocol-Version
  const metaVersion = metaProtocolVersion(msg);
  const headerVersion = readHeader(headers, "mcp-protocol-version");
  if (headerVersion === undefined) {
    if (request) throw mismatch("MCP-Protocol-Version", "the MCP-Protocol-Version header is missing", rpcId);
  } else if (metaVersion !== undefined && headerVersion !== metaVersion) {
    throw mismatch(
      "MCP-Protocol-Version",
      `the MCP-Protocol-Version header ${show(headerVersion)} does not match the body's ${show(metaVersion)}`,
      rpcId,
    );
  }
  // Not checked here, on purpose: a body without the `_meta` version (an invalid envelope: the
  // server answers -32602) and a version the edge does not know (the server answers -32022 with the
  // versions *it* supports, which only it knows). Neither is a header/body mismatch, and the
  // upstream's own error is the transparent answer.

  // Mcp-Method
  const method = msg.method;
  const methodHeader = readHeader(headers, "mcp-method");
  if (methodHeader === undefined) {
    if (request) throw mismatch("Mcp-Method", "the Mcp-Method header is missing", rpcId);
  } else if (methodHeader !== method || !isFieldSafe(methodHeader)) {
    throw mismatch(
      "Mcp-Method",
      `the Mcp-Method header ${show(methodHeader)} does not match the body's method ${show(method)}`,
      rpcId,
    );
  }
  if (!request) return;

  // Mcp-Name
  const params = isPlainObject(msg.params) ? msg.params : undefined;
  const source = nameSource(method);
  if (source !== undefined) {
    const raw = params?.[source.field];
    const bodyValue = typeof raw === "string" ? raw : undefined;
    const nameHeader = readHeader(headers, "mcp-name");
    if (nameHeader === undefined) {
      if (source.required && bodyValue !== undefined) {
        throw mismatch("Mcp-Name", `the Mcp-Name header is missing (params.${source.field} is set)`, rpcId);
      }
    } else {
      const decoded = decodeHeaderValue(nameHeader);
      if (decoded === undefined)
        throw mismatch("Mcp-Name", "the Mcp-Name header has invalid characters or Base64", rpcId);
      if (decoded !== bodyValue) {
        throw mismatch(
          "Mcp-Name",
          bodyValue === undefined
            ? `the Mcp-Name header is set but params.${source.field} is not a string`
            : `the Mcp-Name header ${show(decoded)} does not match params.${source.field} ${show(bodyValue)}`,
          rpcId,
        );
      }
    }
  }

  // Mcp-Param-*
  if (method !== "tools/call") return;
  const args = params?.["arguments"];
  if (!isPlainObject(args)) return;
  if (opts.paramHeaders !== undefined) {
    for (const [suffix, path] of opts.paramHeaders) {
      const value = valueAtPath(args, path);
      if (!isPrimitive(value)) continue;
      const name = `mcp-param-${suffix}`;
      const h = readHeader(headers, name);
      if (h === undefined) {
        throw mismatch(`Mcp-Param-${suffix}`, `the Mcp-Param-${truncate(suffix)} header is missing`, rpcId);
      }
      checkParam(h, value, suffix, rpcId);
    }
    return;
  }
  if (opts.matchParamsByName === false) return;
  for (const key of Object.keys(args)) {
    const value = args[key];
    if (!isPrimitive(value) || !TOKEN.test(key)) continue;
    const suffix = key.toLowerCase();
    const h = readHeader(headers, `mcp-param-${suffix}`);
    if (h !== undefined) checkParam(h, value, suffix, rpcId);
  }
}

const BASE64_PREFIX = "=?base64?";
const BASE64_SUFFIX = "?=";
const BASE64_CANONICAL = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const CANONICAL_DECIMAL = /^-?\d+(?:\.\d+)?$/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Decodes an `Mcp-Name` / `Mcp-Param-*` value: `=?base64?…?=` (canonical Base64 of valid UTF-8) or
 * a plain value of visible ASCII, SP and HTAB. Undefined when malformed.
 */
export function decodeHeaderValue(value: string): string | undefined {
  const v = stripOws(value);
  if (v.startsWith(BASE64_PREFIX) && v.endsWith(BASE64_SUFFIX)) {
    if (v.length < BASE64_PREFIX.length + BASE64_SUFFIX.length) return undefined;
    const b64 = v.slice(BASE64_PREFIX.length, v.length - BASE64_SUFFIX.length);
    if (!BASE64_CANONICAL.test(b64)) return undefined;
    const bytes = Buffer.from(b64, "base64");
    return isUtf8(bytes) ? bytes.toString("utf8") : undefined;
  }
  return isFieldSafe(v) ? v : undefined;
}

/** Encodes a value the way clients must: plain when header-safe, else `=?base64?…?=`. */
export function encodeHeaderValue(value: string): string {
  const plain =
    value.length > 0 &&
    isFieldSafe(value) &&
    stripOws(value) === value &&
    !(value.startsWith(BASE64_PREFIX) && value.endsWith(BASE64_SUFFIX));
  return plain ? value : `${BASE64_PREFIX}${Buffer.from(value, "utf8").toString("base64")}${BASE64_SUFFIX}`;
}

function checkParam(
  header: string,
  value: string | number | boolean,
  suffix: string,
  rpcId: string | number | null,
): void {
  const decoded = decodeHeaderValue(header);
  const label = `Mcp-Param-${truncate(suffix)}`;
  if (decoded === undefined)
    throw mismatch(label, `the ${label} header has invalid characters or Base64`, rpcId);
  let equal: boolean;
  if (typeof value === "string") equal = decoded === value;
  else if (typeof value === "boolean") equal = decoded === (value ? "true" : "false");
  else equal = CANONICAL_DECIMAL.test(decoded) ? Number(decoded) === value : decoded === String(value);
  if (!equal) {
    throw mismatch(
      label,
      `the ${label} header ${show(decoded)} does not match the argument ${show(String(value))}`,
      rpcId,
    );
  }
}

interface NameSource {
  field: "name" | "uri" | "taskId";
  /** Required by 2026-07-28 (the three core methods); `tasks/*` (SEP-2663, sent by SDK v2) is checked only when present. */
  required: boolean;
}

const NAME: NameSource = { field: "name", required: true };
const URI: NameSource = { field: "uri", required: true };
const TASK: NameSource = { field: "taskId", required: false };

function nameSource(method: string): NameSource | undefined {
  switch (method) {
    case "tools/call":
    case "prompts/get":
      return NAME;
    case "resources/read":
      return URI;
    case "tasks/get":
    case "tasks/update":
    case "tasks/cancel":
      return TASK;
    default:
      return undefined;
  }
}

function readHeader(headers: HeaderLookup, name: string): string | undefined {
  const v = headers.get(name);
  return v === undefined ? undefined : stripOws(v);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function isPrimitive(v: unknown): v is string | number | boolean {
  return typeof v === "string" || typeof v === "boolean" || (typeof v === "number" && Number.isFinite(v));
}

/** Own-property walk (a schema path like `constructor` must not reach Object.prototype). */
function valueAtPath(root: Record<string, unknown>, path: readonly string[]): unknown {
  let node: unknown = root;
  for (const key of path) {
    if (!isPlainObject(node) || !Object.hasOwn(node, key)) return undefined;
    node = node[key];
  }
  return node;
}

/** Visible ASCII, SP and HTAB only (RFC 9110 field-value without obs-text). */
function isFieldSafe(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c > 0x7e) return false;
  }
  return true;
}

function stripOws(v: string): string {
  const n = v.length;
  if (n === 0) return v;
  const first = v.charCodeAt(0);
  const last = v.charCodeAt(n - 1);
  if (first !== 0x20 && first !== 0x09 && last !== 0x20 && last !== 0x09) return v;
  let s = 0;
  let e = n;
  while (s < e && (v.charCodeAt(s) === 0x20 || v.charCodeAt(s) === 0x09)) s++;
  while (e > s && (v.charCodeAt(e - 1) === 0x20 || v.charCodeAt(e - 1) === 0x09)) e--;
  return v.slice(s, e);
}

const MAX_SHOWN = 64;

function truncate(v: string): string {
  return v.length > MAX_SHOWN ? `${v.slice(0, MAX_SHOWN)}…` : v;
}

/** A quoted, truncated rendering safe for messages (JSON escaping neutralises CR/LF and control characters). */
function show(v: string): string {
  return JSON.stringify(truncate(v));
}

function mismatch(header: string, detail: string, rpcId: string | number | null): GatewayError {
  return new GatewayError("EDGE_HEADER_MISMATCH", `Header mismatch: ${detail}.`, { rpcId, data: { header } });
}
