/**
 * The pure parts of `check` and `doctor`, with fixed vectors: WWW-Authenticate parsing (RFC 9110
 * §11.6.1), the well-known URIs (RFC 9728 §3.1, RFC 8414 §3.1, OIDC Discovery §4), grading,
 * reading JSON-RPC out of JSON and SSE answers, the loopback test behind `hygiene.https`, and the
 * inline-secret scan of `doctor`.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { asMetadataUrls, prmWellKnown } from "../../src/check/auth.ts";
import { isLoopbackHost } from "../../src/check/context.ts";
import { eventIds, finding, parseChallenges, responseFor } from "../../src/check/findings.ts";
import { exitCodeOf } from "../../src/check/report.ts";
import { RULES } from "../../src/check/rules.ts";
import { type CheckReport, gradeOf, parseHeaderArg } from "../../src/check/run.ts";
import { inlineSecrets } from "../../src/doctor/doctor.ts";

describe("parseChallenges (RFC 9110 §11.6.1)", () => {
  const cases: [string, unknown][] = [
    ['Bearer realm="mcp-edge"', [{ scheme: "Bearer", params: { realm: "mcp-edge" } }]],
    [
      'Bearer error="insufficient_scope", scope="a b", resource_metadata="https://x/.well-known/oauth-protected-resource/mcp"',
      [
        {
          scheme: "Bearer",
          params: {
            error: "insufficient_scope",
            scope: "a b",
            resource_metadata: "https://x/.well-known/oauth-protected-resource/mcp",
          },
        },
      ],
    ],
    [
      'Basic realm="a", Bearer error=invalid_token',
      [
        { scheme: "Basic", params: { realm: "a" } },
        { scheme: "Bearer", params: { error: "invalid_token" } },
      ],
    ],
    ['Bearer realm="a \\"quoted\\" b"', [{ scheme: "Bearer", params: { realm: 'a "quoted" b' } }]],
  ];
  for (const [input, expected] of cases)
    test(input, () => assert.deepEqual(parseChallenges(input), expected));
  for (const bad of ['Bearer realm="unterminated', "", "Bearer realm=", '="x"'])
    test(`malformed: ${JSON.stringify(bad)}`, () => assert.equal(typeof parseChallenges(bad), "string"));
});

describe("well-known URIs", () => {
  test("RFC 9728 §3.1: inserted between host and path", () => {
    assert.deepEqual(prmWellKnown(new URL("https://h.example/github/mcp")), {
      pathInserted: "https://h.example/.well-known/oauth-protected-resource/github/mcp",
      root: "https://h.example/.well-known/oauth-protected-resource",
    });
    assert.deepEqual(prmWellKnown(new URL("https://h.example/")), {
      pathInserted: "https://h.example/.well-known/oauth-protected-resource",
      root: "https://h.example/.well-known/oauth-protected-resource",
    });
  });
  test("RFC 8414 / OIDC: the order MCP clients try", () => {
    assert.deepEqual(asMetadataUrls("https://as.example/t1"), [
      "https://as.example/.well-known/oauth-authorization-server/t1",
      "https://as.example/.well-known/openid-configuration/t1",
      "https://as.example/t1/.well-known/openid-configuration",
    ]);
    assert.deepEqual(asMetadataUrls("https://as.example"), [
      "https://as.example/.well-known/oauth-authorization-server",
      "https://as.example/.well-known/openid-configuration",
    ]);
  });
});

describe("grading and exit status", () => {
  const f = (id: string, status: "pass" | "fail" | "skip") => finding(id, status, "");
  const req = "session.unknown-404";
  const rec = "hygiene.body-limit";
  test("A B C D F", () => {
    assert.equal(gradeOf([f(req, "pass"), f(rec, "skip")]), "A");
    assert.equal(gradeOf([f(rec, "fail")]), "B");
    assert.equal(gradeOf([f(rec, "fail"), f("session.resume", "fail"), f("modern.get-405", "fail")]), "C");
    assert.equal(gradeOf([f(req, "fail"), f(rec, "fail")]), "D");
    assert.equal(gradeOf([f(req, "fail"), f("hygiene.origin", "fail")]), "F");
  });
  test("--fail-on fail counts required failures; warn counts any", () => {
    const report = {
      counts: { pass: 1, fail: 1, failRequired: 0, failRecommended: 1, skip: 0 },
    } as CheckReport;
    assert.equal(exitCodeOf(report, "fail"), 0);
    assert.equal(exitCodeOf(report, "warn"), 1);
  });
  test("every rule cites an https source and has a unique id", () => {
    assert.equal(new Set(RULES.map((r) => r.id)).size, RULES.length);
    for (const r of RULES) assert.match(r.url, /^https:\/\//, r.id);
  });
});

describe("reading answers", () => {
  const sse = (body: string) => ({
    status: 200,
    headers: { "content-type": "text/event-stream" },
    body,
    ms: 0,
  });
  test("SSE: priming event, then the response of the id", () => {
    const a = sse(
      'id: p1\ndata:\n\nid: e2\nevent: message\ndata: {"jsonrpc":"2.0","id":7,"result":{"ok":true}}\n\n',
    );
    assert.deepEqual(responseFor(a, 7)?.result, { ok: true });
    assert.equal(responseFor(a, 8), undefined);
    assert.deepEqual(eventIds(a), ["p1", "e2"]);
  });
  test("JSON body", () => {
    const a = {
      status: 400,
      headers: { "content-type": "application/json" },
      body: '{"jsonrpc":"2.0","id":null,"error":{"code":-32020,"message":"x"}}',
      ms: 0,
    };
    assert.equal(responseFor(a, null)?.error?.code, -32020);
  });
  test("-H parsing", () => {
    assert.deepEqual(parseHeaderArg("Authorization: Bearer a:b"), ["authorization", "Bearer a:b"]);
    assert.throws(() => parseHeaderArg("no colon"));
    assert.throws(() => parseHeaderArg("bad name: x"));
  });
});

describe("hygiene.https: which hosts count as loopback", () => {
  for (const h of ["127.0.0.1", "127.9.9.9", "localhost", "app.localhost", "[::1]"])
    test(`${h} is loopback`, () => assert.ok(isLoopbackHost(h)));
  for (const h of ["10.0.0.1", "mcp.example.com", "0.0.0.0", "[::]"])
    test(`${h} is not`, () => assert.ok(!isLoopbackHost(h)));
});

describe("doctor: inline secrets", () => {
  test("references pass, values are reported by path (never by value)", () => {
    assert.deepEqual(
      inlineSecrets({
        admin: { token: "${MCP_EDGE_ADMIN_TOKEN}" },
        vault: { key: "${VAULT_KEY}" },
        store: {
          postgres: { url: "postgres://edge@db/edge" },
          redis: { url: "redis://${REDIS_AUTH}@r:6379" },
        },
      }),
      [],
    );
    const found = inlineSecrets({
      admin: { token: "hunter2-hunter2-hunter2-hunter2-hunter2" },
      auth: { oauth: [{ issuer: "https://i", introspection: { clientSecret: "s3cret" } }] },
      connections: { github: { clientSecret: "gh-secret" } },
      store: { postgres: { url: "postgres://edge:pw@db/edge" } },
    });
    assert.deepEqual(found, [
      "admin.token",
      "auth.oauth[0].introspection.clientSecret",
      "connections.github.clientSecret",
      "store.postgres.url (password)",
    ]);
    assert.ok(!JSON.stringify(found).includes("hunter2"));
  });
});
