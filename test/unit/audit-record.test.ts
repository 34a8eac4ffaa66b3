/**
 * Audit records, pure parts: canonical JSON and digests, escaping and bounds,
 * redaction, and drafts built from pipeline events (client-supplied fields never overwrite).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { chainRecord } from "../../src/audit/chain.ts";
import { draftFromAdmin, draftFromSession, draftsFromRequestEnd } from "../../src/audit/events.ts";
import {
  type AuditDraft,
  argsPolicy,
  boundText,
  canonicalJson,
  digestOf,
  escapeText,
  finalizeDraft,
  recordArgs,
  REDACTED,
} from "../../src/audit/record.ts";
import type { RequestContext } from "../../src/context.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import type { RequestEndEvent } from "../../src/observability/channels.ts";

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

test("canonical JSON sorts keys at every depth and drops undefined members", () => {
  assert.equal(
    canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: undefined } }),
    '{"a":{"d":[1,{"y":2,"z":1}]},"b":1}',
  );
  assert.equal(canonicalJson([NaN, "x\n"]), '[null,"x\\n"]');
  // Fixed vector: the digest of {"q":"x"} is the SHA-256 of that exact text.
  assert.equal(digestOf({ q: "x" }), `sha256:${sha('{"q":"x"}')}`);
  assert.equal(digestOf({ b: 2, a: 1 }), digestOf({ a: 1, b: 2 }));
});

test("escapeText neutralizes CR/LF, ANSI, C1 controls, line separators and bidi overrides", () => {
  const s = "a\r\nb\u001b[31mred\u009b\u2028\u202e";
  const e = escapeText(s);
  assert.equal(e, "a\\u000d\\u000ab\\u001b[31mred\\u009b\\u2028\\u202e");
  assert.doesNotMatch(e, /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e]/);
});

test("boundText cuts long values and names the cut with a hash of the whole", () => {
  const big = "x".repeat(1_000_000);
  const b = boundText(big, 100);
  assert.ok(b.length < 200);
  assert.match(b, /…\[\+999900 chars, sha256:[0-9a-f]{16}\]$/);
  assert.notEqual(boundText(`${big}y`, 100), b);
  assert.equal(boundText("short", 100), "short");
});

test("arguments: digest mode keeps only the digest; redacted mode hides secrets by key, path and pattern", () => {
  const args = {
    query: "hello",
    password: "hunter2",
    nested: { Api_Key: "k", list: [{ token: "t" }], note: "use Bearer abcdefghijklmnop please" },
    db: { credentials: { user: "u" } },
  };
  assert.deepEqual(recordArgs(args, argsPolicy({ mode: "digest" })), { digest: digestOf(args) });
  const r = recordArgs(args, argsPolicy({ mode: "redacted", paths: ["db.*.user"], patterns: ["hel+o"] }));
  assert.equal(r.digest, digestOf(args));
  assert.deepEqual(r.value, {
    query: REDACTED,
    password: REDACTED,
    nested: { Api_Key: REDACTED, list: [{ token: REDACTED }], note: `use ${REDACTED} please` },
    db: { credentials: { user: REDACTED } },
  });
  const full = recordArgs(args, argsPolicy({ mode: "full" }));
  assert.deepEqual(full.value, args);
});

test("arguments: megabyte strings, deep nesting, many keys and __proto__ stay bounded", () => {
  const policy = argsPolicy({ mode: "full", maxString: 64 });
  let deep: unknown = "leaf";
  for (let i = 0; i < 40; i++) deep = { d: deep };
  const wide = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`k${i}`, i]));
  const json = JSON.stringify({ big: "x".repeat(1 << 20), deep, wide });
  const args = JSON.parse(`${json.slice(0, -1)},"__proto__":{"polluted":true}}`) as Record<string, unknown>;
  const r = recordArgs(args, policy);
  assert.equal(r.truncated, true);
  const text = JSON.stringify(r);
  assert.ok(text.length < 16 * 1024, `record args are ${text.length} bytes`);
  assert.equal(({} as { polluted?: boolean }).polluted, undefined);
  assert.deepEqual(Object.keys(r.value as object).includes("__proto__"), true);
  // Over maxBytes: only the digest.
  const small = argsPolicy({ mode: "full", maxBytes: 100 });
  assert.deepEqual(recordArgs({ a: "y".repeat(500) }, small), {
    digest: digestOf({ a: "y".repeat(500) }),
    truncated: true,
  });
  // Nesting beyond the canonical depth still yields a digest (of the plain serialization).
  let abyss: unknown = 1;
  for (let i = 0; i < 2000; i++) abyss = [abyss];
  assert.match(recordArgs(abyss, policy).digest, /^sha256-raw:[0-9a-f]{64}$/);
});

function ctx(overrides: Partial<RequestContext> = {}): RequestContext {
  return {
    requestId: "req-1",
    startedAt: 0,
    req: {
      method: "POST",
      headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
    },
    httpMethod: "POST",
    headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
    clientLeft: false,
    res: {},
    route: { name: "github" },
    endpoint: "mcp",
    log: {},
    clientGone: new AbortController().signal,
    ...overrides,
  } as unknown as RequestContext;
}

const principal = {
  id: "key:github:acme:ci",
  method: "apiKey" as const,
  tenant: "acme",
  subject: "ci",
  keyId: "kid1",
  scopes: [],
};

test("drafts: one per audited request of the body; client fields stay inside args", () => {
  const ev: RequestEndEvent = {
    request: ctx({
      principal,
      messages: [
        {
          jsonrpc: "2.0",
          id: 7,
          method: "tools/call",
          params: {
            name: "search",
            arguments: { tenant: "evil", requestId: "forged" },
            _meta: { tenant: "evil" },
          },
        },
        { jsonrpc: "2.0", id: 8, method: "resources/read", params: { uri: "file:///x" } },
        { jsonrpc: "2.0", id: 9, method: "tools/list" },
        { jsonrpc: "2.0", method: "notifications/progress" },
      ],
      outcomes: new Map([["n:7", { kind: "result", isError: true }]]),
      upstream: { instance: "http://user:pw@10.0.0.5:3000/mcp", ms: 4 },
    }),
    status: 200,
    error: undefined,
    durationMs: 5.55,
  };
  const drafts = draftsFromRequestEnd(ev, Date.parse("2026-01-01T00:00:00Z"));
  assert.equal(drafts.length, 2);
  const [call, read] = drafts;
  assert.equal(call?.tenant, "acme");
  assert.equal(call?.requestId, "req-1");
  assert.equal(call?.target, "search");
  assert.equal(call?.rpcId, "7");
  assert.equal(call?.instance, "http://10.0.0.5:3000/mcp");
  assert.equal(call?.traceId, "0af7651916cd43dd8448eb211c80319c");
  assert.deepEqual(call?.outcome, { kind: "result", isError: true });
  assert.deepEqual(call?.rawArgs, { tenant: "evil", requestId: "forged" });
  const rec = finalizeDraft(call!, argsPolicy({ mode: "digest" }));
  assert.equal(rec.tenant, "acme");
  assert.equal(rec.requestId, "req-1");
  assert.equal(read?.target, "file:///x");
  assert.equal(read?.rawArgs, undefined);
  assert.deepEqual(read?.outcome, { kind: "result", isError: null });
});

test("drafts: refusals and failures get the right decision; a POST refused unread is one request record", () => {
  const tool = { jsonrpc: "2.0" as const, id: 1, method: "tools/call", params: { name: "x" } };
  const at = (code: ConstructorParameters<typeof GatewayError>[0], status: number, withBody = true) =>
    draftsFromRequestEnd({
      request: ctx(withBody ? { principal, messages: [tool] } : {}),
      status,
      error: new GatewayError(code),
      durationMs: 1,
    });
  const unread = at("EDGE_BODY_TOO_LARGE", 413, false);
  assert.equal(unread.length, 1);
  assert.equal(unread[0]?.type, "request");
  assert.equal(unread[0]?.decision, "refused");
  assert.equal(unread[0]?.code, "EDGE_BODY_TOO_LARGE");
  assert.equal(unread[0]?.tenant, null);
  // A refused authentication is recorded sampled, by src/audit/auth-refusals.ts, not here.
  assert.equal(at("EDGE_AUTH_INVALID_TOKEN", 401, false).length, 0);
  for (const [code, status] of [
    ["EDGE_TOOL_FORBIDDEN", 403],
    ["EDGE_SESSION_NOT_FOUND", 404],
    ["EDGE_RATE_LIMITED", 429],
    ["EDGE_AUDIT_UNAVAILABLE", 503],
  ] as const) {
    const [d] = at(code, status);
    assert.equal(d?.decision, "refused", code);
    assert.deepEqual(d?.outcome, { kind: "http_error", status, code });
  }
  const [failed] = at("EDGE_UPSTREAM_TIMEOUT", 504);
  assert.equal(failed?.decision, "allowed");
  assert.equal(failed?.code, "EDGE_UPSTREAM_TIMEOUT");
  const [aborted] = draftsFromRequestEnd({
    request: ctx({ principal, messages: [tool], clientLeft: true }),
    status: 0,
    error: undefined,
    durationMs: 1,
  });
  assert.deepEqual(aborted?.outcome, { kind: "aborted" });
  // GET with a refusal carries no call.
  assert.deepEqual(
    draftsFromRequestEnd({
      request: ctx({ req: { method: "GET", headers: {} } as never, httpMethod: "GET" } as never),
      status: 401,
      error: new GatewayError("EDGE_AUTH_REQUIRED"),
      durationMs: 1,
    }),
    [],
  );
});

test("drafts from session and admin events", () => {
  const s = draftFromSession({
    kind: "end",
    sessionId: "sid",
    server: "github",
    tenant: "acme",
    principal: "p",
    reason: "idle",
  });
  assert.equal(s.type, "session.end");
  assert.notEqual(s.session, "sid");
  assert.deepEqual(s.detail, { reason: "idle" });
  const a = draftFromAdmin({
    action: "key.revoke",
    actor: "root",
    tenant: "acme",
    target: "k1",
    outcome: "refused",
  });
  assert.equal(a.type, "admin");
  assert.equal(a.decision, "refused");
  assert.equal(a.method, "key.revoke");
});

test("chainRecord: the hashed text is the canonical JSON of the record without its hash, every member kind", () => {
  const base: AuditDraft = {
    time: 1_700_000_000_123,
    type: "call",
    tenant: "acme",
    subject: "ci\u2028bot",
    principal: "key:s:acme:ci",
    auth: "apiKey",
    clientId: null,
    keyId: "k1",
    session: "abc",
    server: "github",
    instance: "http://127.0.0.1:1/mcp",
    method: "tools/call",
    target: 'quote"d',
    rpcId: "7",
    decision: "allowed",
    code: null,
    status: 200,
    outcome: { kind: "result", isError: false },
    latencyMs: 1.5,
    upstreamMs: 0.7,
    requestId: "r1",
    traceId: null,
    detail: { z: "1", a: "2" },
    egress: [
      {
        time: "2026-01-01T00:00:00.000Z",
        method: "GET",
        host: "example.com",
        port: 443,
        resolvedAddress: "93.184.216.34",
        allowed: true,
        rule: null,
      },
    ],
    rawArgs: { b: [1, { y: 2, x: 1 }], a: "é" },
  };
  const heads = new Map<string, { seq: number; hash: string }>();
  let prev = "0".repeat(64);
  for (const policy of [argsPolicy({ mode: "digest" }), argsPolicy({ mode: "full" })]) {
    const { record, text } = chainRecord(heads, finalizeDraft(base, policy));
    const { hash, ...body } = record;
    assert.equal(text, canonicalJson(body));
    assert.equal(hash, sha(text));
    assert.equal(record.prev, prev, "each record names the hash of the one before");
    prev = hash;
  }
  // A member the record type does not know takes the general path: still the canonical text.
  const odd = { ...finalizeDraft({ ...base, egress: undefined }, argsPolicy({ mode: "digest" })), extra: 1 };
  const { record, text } = chainRecord(heads, odd);
  const { hash, ...body } = record;
  assert.equal(text, canonicalJson(body));
  assert.ok(text.includes('"extra":1') && !text.includes('"hash"'));
  assert.equal(hash, sha(text));
});
