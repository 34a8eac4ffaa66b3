/**
 * Audit records: their shape, and the pure functions that build them.
 *
 * A record is built in two steps. On the request path a subscriber builds a `AuditDraft` from a
 * diagnostics_channel event: plain field copies, no hashing, no serialization. Off the request path, at flush, `finalizeDraft` turns a draft into the record
 * that is chained and stored: arguments digested (or redacted, or kept), every string escaped and
 * bounded. Nothing a client sends is spread into a record: each field is copied by name, so a
 * client-supplied `tenant`, `requestId` or `_meta` stays inside `args` (or is dropped).
 */
import { hash } from "node:crypto";
import type { EgressDecision } from "../egress/proxy.ts";

export type AuditType =
  "call" | "request" | "session.start" | "session.end" | "admin" | "connection" | "oauth";

/** How a call ended, as the client saw it. */
export type AuditOutcome =
  /** A JSON-RPC result; `isError` is the tool result's flag, null when the edge did not read it. */
  | { kind: "result"; isError: boolean | null }
  | { kind: "rpc_error"; code: number }
  /** An HTTP error answer: the edge's own (with its code) or the upstream's (code null). */
  | { kind: "http_error"; status: number; code: string | null }
  /** The client went away; with a code, the edge ended the call (EDGE_DRAINED: the drain timeout). */
  | { kind: "aborted"; code?: string }
  /**
   * The call reached the upstream and its instance stopped before it was answered (SIGKILL, a
   * crash): recorded from its write-ahead entry when an instance recovered it.
   */
  | { kind: "unknown" };

/** Arguments as recorded: always the digest; the value itself in `redacted` and `full` modes. */
export interface AuditArgs {
  /** `sha256:<hex>` of the canonical JSON of the arguments as sent. */
  digest: string;
  value?: unknown;
  /** The value was cut to stay within the bounds (strings, depth, keys, total size). */
  truncated?: boolean;
}

/** The record as chained and stored. `hash` covers the canonical JSON of every other field. */
export interface AuditRecord {
  v: 1;
  /** The hash chain this record belongs to: its tenant, or "" for records without one. */
  chain: string;
  /** Position in the chain, from 1, without gaps. */
  seq: number;
  /** When the event happened (ISO 8601, ms). */
  time: string;
  type: AuditType;
  tenant: string | null;
  subject: string | null;
  /** The principal id (`key:<server>:<tenant>:<consumer>`, `oauth:<iss>:<tenant>:<sub>`, ...). */
  principal: string | null;
  auth: "none" | "apiKey" | "oauth" | null;
  clientId: string | null;
  keyId: string | null;
  /** Session id hash (never the id itself: it is a bearer handle). */
  session: string | null;
  server: string | null;
  /** The upstream instance that served the call. */
  instance: string | null;
  /** JSON-RPC method, or null when the body was never read (refused before it). */
  method: string | null;
  /** The tool name (tools/call), resource URI (resources/read) or prompt name (prompts/get). */
  target: string | null;
  /** The client's JSON-RPC id, as JSON text (bounded). Its own field: it never names the record. */
  rpcId: string | null;
  args: AuditArgs | null;
  decision: "allowed" | "refused";
  /** The edge's error code when it refused or failed the request. */
  code: string | null;
  /** HTTP status the client got (0: the connection went away before an answer). */
  status: number | null;
  outcome: AuditOutcome | null;
  latencyMs: number | null;
  upstreamMs: number | null;
  /** The edge's request id (`X-MCP-Edge-Request-Id`). */
  requestId: string | null;
  /** W3C trace id from a well-formed `traceparent`, when the client sent one. */
  traceId: string | null;
  /** Admin action details, session end reason. */
  detail: Record<string, string> | null;
  /**
   * Calls to a stdio server: the outbound requests it made through the egress proxy while the
   * call was in flight, each allowed or denied with the address checked and the rule. Absent when
   * there were none (and on every other record type).
   */
  egress?: EgressDecision[];
  /** Hash of the previous record of the chain (GENESIS for the first). */
  prev: string;
  hash: string;
}

export const GENESIS = "0".repeat(64);

/** What the request path hands over: the record minus chain fields, arguments still raw. */
export type AuditDraft = Omit<AuditRecord, "v" | "chain" | "seq" | "prev" | "hash" | "args" | "time"> & {
  /**
   * When the event happened: epoch ms as the request path takes it (formatted at finalize), or
   * the ISO 8601 text already.
   */
  time: string | number;
  /** Raw arguments (as parsed from the body); undefined when the method has none. */
  rawArgs?: unknown;
};

// ---- canonical JSON and hashing ------------------------------------------------------------------

const MAX_CANONICAL_DEPTH = 512;

/**
 * Canonical JSON: object keys sorted (by UTF-16 code units), no whitespace, `undefined` members
 * dropped. Used for the argument digest and for the text each record hash covers.
 *
 * Built as one string (no array of parts), strings quoted by hand unless they hold a character
 * JSON.stringify escapes: the same text as before at about half the cost (it runs twice per
 * audited call, on the arguments and on the record).
 */
export function canonicalJson(value: unknown): string {
  return canonicalAt(value, 0);
}

/** Characters JSON.stringify escapes in a string: `"`, `\`, C0 controls and lone surrogates. */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/** A string as JSON.stringify writes it. */
export function jsonString(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`;
}

/** canonicalJson of a value found `depth` levels down (the depth bound counts from the root). */
export function canonicalAt(v: unknown, depth: number): string {
  if (depth > MAX_CANONICAL_DEPTH) throw new RangeError("value nested too deeply");
  switch (typeof v) {
    case "string":
      return jsonString(v);
    case "number":
      return Number.isFinite(v) ? `${v}` : "null";
    case "boolean":
      return v ? "true" : "false";
    case "bigint":
      return jsonString(v.toString());
    case "object":
      break;
    default:
      return "null"; // undefined, functions and symbols
  }
  if (v === null) return "null";
  if (Array.isArray(v)) {
    let out = "[";
    for (let i = 0; i < v.length; i++) {
      if (i > 0) out += ",";
      out += canonicalAt(v[i], depth + 1);
    }
    return `${out}]`;
  }
  const keys = Object.keys(v as object).sort();
  let out = "{";
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as string;
    const member = (v as Record<string, unknown>)[k];
    if (member === undefined) continue;
    if (out.length > 1) out += ",";
    out += jsonString(k);
    out += ":";
    out += canonicalAt(member, depth + 1);
  }
  return `${out}}`;
}

/** SHA-256 of a text, hex (one-shot: no Hash object per call). */
export function sha256Hex(text: string): string {
  return hash("sha256", text);
}

/** `sha256:<hex>` of the canonical JSON of a value (arguments digest). */
export function digestOf(value: unknown): string {
  return `sha256:${sha256Hex(canonicalJson(value))}`;
}

// ---- escaping and bounds -------------------------------------------------------------------------

/**
 * Control characters (C0, DEL, C1), line and paragraph separators and bidi overrides are written as
 * visible `\uXXXX` text: a record read in a terminal, a log viewer or a CSV cannot forge lines or
 * colours (CWE-117). JSON escaping alone keeps the record parseable but not its display safe.
 */
const UNSAFE_CHARS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** The same set, to test for without replacing (most fields have none). */
const HAS_UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

export function escapeText(s: string): string {
  if (!HAS_UNSAFE.test(s)) return s;
  return s.replace(UNSAFE_CHARS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * Escapes and bounds one string: over `max` characters it is cut, and the cut names how much was
 * dropped and the hash of the whole, so two long values can still be told apart.
 */
export function boundText(s: string, max: number): string {
  const cut = s.length > max ? s.slice(0, max) : s;
  const escaped = escapeText(cut);
  if (s.length <= max) return escaped;
  return `${escaped}…[+${s.length - max} chars, sha256:${sha256Hex(s).slice(0, 16)}]`;
}

/** Identity fields (ids, names, subjects) are short: 256 characters at most. */
export const MAX_FIELD = 256;

export function field(v: unknown, max = MAX_FIELD): string | null {
  if (v === undefined || v === null) return null;
  return boundText(typeof v === "string" ? v : String(v), max);
}

// ---- arguments -----------------------------------------------------------------------------------

export type ArgumentsMode = "digest" | "redacted" | "full";

export interface ArgsPolicy {
  mode: ArgumentsMode;
  /**
   * Redaction paths (redacted mode): a bare key name matches that key at any depth
   * (case-insensitive); a dotted path matches from the arguments' root, `*` standing for any one key.
   */
  paths: readonly string[];
  /** Redaction patterns (redacted mode): every match inside a string value is replaced. */
  patterns: readonly RegExp[];
  /** Longest string value kept (characters). */
  maxString: number;
  /** Largest arguments value kept (bytes of JSON); beyond, only the digest is recorded. */
  maxBytes: number;
}

/** Key names that are secrets wherever they appear (added to `audit.redact.paths`). */
export const DEFAULT_REDACT_KEYS = [
  "password",
  "passwd",
  "secret",
  "token",
  "access_token",
  "refresh_token",
  "id_token",
  "api_key",
  "apikey",
  "authorization",
  "client_secret",
  "private_key",
  "cookie",
  "set-cookie",
];

/** Secret-shaped strings (added to `audit.redact.patterns`). */
export const DEFAULT_REDACT_PATTERNS: readonly RegExp[] = [
  /\bBearer\s+[A-Za-z0-9._~+/=-]{8,}/gi,
  /\bmcpe_[A-Za-z0-9_-]{8,}/g,
  /\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*/g,
  /\b(?:AKIA|ASIA)[0-9A-Z]{16}\b/g,
  /\b(?:ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{16,}/g,
  /\bsk-[A-Za-z0-9_-]{20,}/g,
  /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----/g,
];

export const REDACTED = "[REDACTED]";
const MAX_DEPTH = 16;
const MAX_MEMBERS = 200;

/** Compiles configured patterns (global flag added). Throws on an invalid one (boot error). */
export function compilePatterns(sources: readonly string[]): RegExp[] {
  return sources.map((s) => new RegExp(s, "g"));
}

export function argsPolicy(options: {
  mode: ArgumentsMode;
  paths?: readonly string[];
  patterns?: readonly string[];
  maxString?: number;
  maxBytes?: number;
}): ArgsPolicy {
  return {
    mode: options.mode,
    paths: [...DEFAULT_REDACT_KEYS, ...(options.paths ?? [])],
    patterns: [...DEFAULT_REDACT_PATTERNS, ...compilePatterns(options.patterns ?? [])],
    maxString: options.maxString ?? 1024,
    maxBytes: options.maxBytes ?? 64 * 1024,
  };
}

interface PathMatcher {
  anywhere: Set<string>;
  rooted: string[][];
}

function matcher(paths: readonly string[]): PathMatcher {
  const anywhere = new Set<string>();
  const rooted: string[][] = [];
  for (const p of paths) {
    if (p.includes(".")) rooted.push(p.split("."));
    else anywhere.add(p.toLowerCase());
  }
  return { anywhere, rooted };
}

function redactedAt(m: PathMatcher, path: string[]): boolean {
  const last = path.at(-1);
  if (last !== undefined && m.anywhere.has(last.toLowerCase())) return true;
  return m.rooted.some(
    (r) => r.length === path.length && r.every((seg, i) => seg === "*" || seg === path[i]),
  );
}

/**
 * A bounded copy of the arguments: depth, members per object/array and string lengths capped;
 * keys and strings escaped; in redacted mode secrets replaced by `[REDACTED]`.
 */
function boundedCopy(
  v: unknown,
  policy: ArgsPolicy,
  m: PathMatcher | undefined,
  path: string[],
  cut: { truncated: boolean },
): unknown {
  if (typeof v === "string") {
    let s = v;
    if (m) for (const re of policy.patterns) s = s.replace(re, REDACTED);
    if (s.length > policy.maxString) cut.truncated = true;
    return boundText(s, policy.maxString);
  }
  if (v === null || typeof v !== "object") return v;
  if (path.length >= MAX_DEPTH) {
    cut.truncated = true;
    return "[depth limit]";
  }
  if (Array.isArray(v)) {
    if (v.length > MAX_MEMBERS) cut.truncated = true;
    return v.slice(0, MAX_MEMBERS).map((x, i) => boundedCopy(x, policy, m, [...path, String(i)], cut));
  }
  const out: Record<string, unknown> = {};
  const keys = Object.keys(v as object);
  if (keys.length > MAX_MEMBERS) cut.truncated = true;
  for (const k of keys.slice(0, MAX_MEMBERS)) {
    const p = [...path, k];
    const safeKey = boundText(k, 128);
    // defineProperty: a `__proto__` key stays an ordinary member of the copy.
    const value =
      m && redactedAt(m, p) ? REDACTED : boundedCopy((v as Record<string, unknown>)[k], policy, m, p, cut);
    Object.defineProperty(out, safeKey, { value, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** The `args` member of a record, per policy. Never throws. */
export function recordArgs(raw: unknown, policy: ArgsPolicy): AuditArgs {
  let digest: string;
  try {
    digest = digestOf(raw ?? {});
  } catch {
    // Nested beyond the canonical depth: the digest of the plain serialization, marked as such.
    let text: string;
    try {
      text = JSON.stringify(raw);
    } catch {
      text = "";
    }
    return { digest: `sha256-raw:${sha256Hex(text)}`, truncated: true };
  }
  if (policy.mode === "digest") return { digest };
  const cut = { truncated: false };
  const value = boundedCopy(
    raw ?? {},
    policy,
    policy.mode === "redacted" ? matcher(policy.paths) : undefined,
    [],
    cut,
  );
  if (Buffer.byteLength(JSON.stringify(value)) > policy.maxBytes) return { digest, truncated: true };
  return cut.truncated ? { digest, value, truncated: true } : { digest, value };
}

/** The second last formatted by isoTime, and its text up to the milliseconds ("…T12:34:56."). */
let isoSecond = Number.NaN;
let isoPrefix = "";

/**
 * `new Date(ms).toISOString()`, the text up to the seconds reused while the second is the same
 * (records of one flush mostly share it).
 */
export function isoTime(ms: number): string {
  const t = Math.trunc(ms);
  // Outside the common range (or NaN): Date's own handling, errors included.
  if (!(t >= 0 && t < 253402300800000)) return new Date(ms).toISOString();
  const second = Math.floor(t / 1000);
  const milli = t - second * 1000;
  if (second !== isoSecond) {
    isoPrefix = new Date(second * 1000).toISOString().slice(0, -4);
    isoSecond = second;
  }
  return `${isoPrefix}${milli < 10 ? "00" : milli < 100 ? "0" : ""}${milli}Z`;
}

export type FinalRecord = Omit<AuditRecord, "v" | "chain" | "seq" | "prev" | "hash">;

/**
 * The stored record (without chain fields) from a draft: arguments processed, strings escaped and
 * bounded (never on the request path). One object literal in record order: the draft is not copied
 * twice (a rest and a spread of ~25 members per record before).
 */
export function finalizeDraft(d: AuditDraft, policy: ArgsPolicy): FinalRecord {
  const out: FinalRecord = {
    time: typeof d.time === "number" ? isoTime(d.time) : d.time,
    type: d.type,
    tenant: field(d.tenant),
    subject: field(d.subject),
    principal: field(d.principal),
    auth: d.auth,
    clientId: field(d.clientId),
    keyId: field(d.keyId),
    session: field(d.session),
    server: field(d.server),
    instance: field(d.instance),
    method: field(d.method),
    target: field(d.target),
    rpcId: field(d.rpcId),
    args: d.rawArgs === undefined ? null : recordArgs(d.rawArgs, policy),
    decision: d.decision,
    code: field(d.code),
    status: d.status,
    outcome: d.outcome,
    latencyMs: d.latencyMs,
    upstreamMs: d.upstreamMs,
    requestId: field(d.requestId),
    traceId: field(d.traceId),
    detail: d.detail,
  };
  if (d.detail) {
    const detail: Record<string, string> = {};
    for (const [k, v] of Object.entries(d.detail).slice(0, 16)) detail[boundText(k, 64)] = boundText(v, 1024);
    out.detail = detail;
  }
  // Egress entries: host, method and rule come from the spawned process's request line.
  if (d.egress) {
    out.egress = d.egress.slice(0, 100).map((e) => ({
      time: e.time,
      method: boundText(e.method, 16),
      host: boundText(e.host, MAX_FIELD),
      port: e.port,
      resolvedAddress: e.resolvedAddress === null ? null : boundText(e.resolvedAddress, 64),
      allowed: e.allowed,
      rule: e.rule === null ? null : boundText(e.rule, 64),
    }));
  }
  return out;
}
