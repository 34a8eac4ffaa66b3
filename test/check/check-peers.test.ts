/**
 * No false alarms on real peers: `mcp-edge check` against the official SDK example servers,
 * @modelcontextprotocol/server-everything, the project's SDK v2 fixture and mcp-edge itself (both
 * eras, API keys and OAuth). Each peer's failed rules are asserted exactly, so a new finding on a
 * peer fails the test. The findings that do appear are real deviations from the spec text, each
 * confirmed on the wire in the evidence and, where the official conformance suite judges the same
 * rule, by it too (docs/check.md has the comparison):
 * - session.unknown-404: the SDK v1 sample apps and server-everything answer a session id they do
 *   not hold (never issued, or ended by DELETE) with 400; MCP 2025-11-25 requires 404 for an ended
 *   session (conformance 0.2.0-alpha.12 `server-session-terminated-returns-404` fails the same way).
 * - hygiene.origin: they accept a foreign Origin (the SDK v1 examples check Host only); MCP
 *   2025-11-25 says an invalid Origin MUST get 403 (the conformance suite sends Host and Origin
 *   together, so it cannot see an Origin check missing behind a Host check).
 * - session.delete: the SDK v1 JSON-response example has no DELETE route (Express's 404 page).
 * - hygiene.dns-rebinding: server-everything checks neither (its known DNS-rebinding gap;
 *   conformance `localhost-host-rebinding-rejected` fails too).
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, describe, test } from "node:test";
import { type CheckReport, runCheck } from "../../src/check/run.ts";
import { freePort, type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { TestIdp } from "../helpers/idp.ts";
import { NODE_BIN, REPO_ROOT, type SpawnedFixture, spawnFixture, spawnListening } from "../helpers/spawn.ts";

async function check(url: string, headers: Record<string, string> = {}): Promise<CheckReport> {
  return runCheck({
    url,
    headers,
    era: "auto",
    callTools: [],
    probeLimits: false,
    timeoutMs: 5000,
    maxRequests: 150,
  });
}

const failed = (r: CheckReport) =>
  r.findings
    .filter((f) => f.status === "fail")
    .map((f) => f.id)
    .sort();
const explain = (r: CheckReport) =>
  r.findings
    .filter((f) => f.status === "fail")
    .map((f) => `${f.id}: ${f.detail}`)
    .join("\n");

const SDK_EXAMPLES = path.join(REPO_ROOT, "node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server");

describe("check: no false alarms on conformant peers", { timeout: 300_000 }, () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });
  const spawnExample = async (file: string): Promise<SpawnedFixture> => {
    const fx = await spawnListening(NODE_BIN, [
      "--import",
      path.join(REPO_ROOT, "test/check/listen-port0.ts"),
      path.join(SDK_EXAMPLES, file),
    ]);
    cleanups.push(() => fx.stop());
    return fx;
  };

  test("server-everything: only its 400-for-unknown-session and its DNS-rebinding gap (Origin and Host)", async () => {
    const fx = await spawnListening(
      NODE_BIN,
      [
        "--import",
        `${REPO_ROOT}/test/helpers/bind-loopback.ts`,
        `${REPO_ROOT}/node_modules/@modelcontextprotocol/server-everything/dist/index.js`,
        "streamableHttp",
      ],
      { env: { PORT: "0", MCP_EDGE_ANNOUNCE: "1" } },
    );
    cleanups.push(() => fx.stop());
    const r = await check(fx.url);
    assert.deepEqual(r.eras, ["2025-11-25"]);
    assert.deepEqual(
      failed(r),
      ["hygiene.dns-rebinding", "hygiene.origin", "session.unknown-404"],
      explain(r),
    );
    const rebinding = r.findings.find((f) => f.id === "hygiene.dns-rebinding")!;
    assert.equal(rebinding.evidence[0]!.answer.status, 200, "the foreign Host was served");
  });

  test("SDK v1 simpleStreamableHttp (stateful): 400 for an unknown session, no Origin check", async () => {
    const fx = await spawnExample("simpleStreamableHttp.js");
    const r = await check(fx.url);
    assert.deepEqual(r.eras, ["2025-11-25"]);
    assert.deepEqual(failed(r), ["hygiene.origin", "session.unknown-404"], explain(r));
    assert.equal(r.findings.find((f) => f.id === "hygiene.dns-rebinding")!.status, "pass");
  });

  test("SDK v1 jsonResponseStreamableHttp (JSON answers): the same two, and no DELETE route", async () => {
    const fx = await spawnExample("jsonResponseStreamableHttp.js");
    const r = await check(fx.url);
    // The example routes POST and GET only: Express answers DELETE with its HTML 404 page, telling
    // the client its live session does not exist (MCP 2025-11-25: 405 when clients may not end it).
    assert.deepEqual(failed(r), ["hygiene.origin", "session.delete", "session.unknown-404"], explain(r));
    assert.match(
      r.findings.find((f) => f.id === "session.delete")!.evidence[0]!.answer.body,
      /Cannot DELETE/,
    );
    assert.match(r.findings.find((f) => f.id === "session.request-response")!.detail, /application\/json/);
  });

  test("SDK v1 simpleStatelessStreamableHttp: no session rules apply; no Origin check", async () => {
    const fx = await spawnExample("simpleStatelessStreamableHttp.js");
    const r = await check(fx.url);
    assert.deepEqual(failed(r), ["hygiene.origin"], explain(r));
    assert.equal(r.findings.find((f) => f.id === "session.unknown-404")!.status, "skip");
  });

  test("SDK v2 fixture (both eras): nothing fails", async () => {
    const fx = await spawnFixture("test/fixtures/v2-server.ts");
    cleanups.push(() => fx.stop());
    const r = await check(fx.url);
    assert.deepEqual(r.eras, ["2026-07-28", "2025-11-25"]);
    assert.deepEqual(failed(r), [], explain(r));
  });

  test("mcp-edge with API keys in front of the v2 fixture: both eras, nothing fails", async () => {
    const fx = await spawnFixture("test/fixtures/v2-server.ts");
    cleanups.push(() => fx.stop());
    const token = "check-admin-token-0123456789abcdef-0123456789";
    const edge: InProcessEdge = await startEdge({
      admin: { listen: { host: "127.0.0.1", port: 0 }, token },
      servers: { up: { route: "/mcp", upstream: { urls: [fx.url] }, auth: ["apiKey"] } },
    });
    cleanups.push(() => edge.stop());
    const res = await fetch(`${edge.gw.adminUrl}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "check", server: "up" }),
    });
    const { key } = (await res.json()) as { key: string };
    const r = await check(edge.url(), { authorization: `Bearer ${key}` });
    assert.deepEqual(r.eras, ["2026-07-28", "2025-11-25"]);
    assert.deepEqual(failed(r), [], explain(r));
    // Without the key: the auth posture is judged (no OAuth on this route: API keys only).
    const anon = await check(edge.url());
    assert.deepEqual(failed(anon), [], explain(anon));
    assert.equal(anon.findings.find((f) => f.id === "auth.challenge")!.status, "pass");
    assert.equal(anon.findings.find((f) => f.id === "auth.invalid-token-401")!.status, "pass");
  });

  test("mcp-edge with a session limit: --probe-limits finds its 429 with Retry-After", async () => {
    const fx = await spawnFixture("test/fixtures/v2-server.ts");
    cleanups.push(() => fx.stop());
    const edge = await startEdge({
      servers: {
        up: { route: "/mcp", upstream: { urls: [fx.url] }, auth: ["none"], limits: { session: "10/min" } },
      },
    });
    cleanups.push(() => edge.stop());
    const r = await runCheck({
      url: edge.url(),
      headers: {},
      era: "2025",
      callTools: [],
      probeLimits: true,
      timeoutMs: 5000,
      maxRequests: 150,
    });
    const rl = r.findings.find((f) => f.id === "hygiene.rate-limit")!;
    assert.equal(rl.status, "pass", rl.detail);
    assert.match(rl.detail, /429 after \d+ requests, Retry-After: \d+/);
    assert.deepEqual(failed(r), [], explain(r));
  });

  test("mcp-edge with OAuth (a real issuer): the edge's own auth rules pass; the issuer's metadata is judged as it is", async () => {
    const idp = await TestIdp.start();
    cleanups.push(() => idp.stop());
    const fx = await spawnFixture("test/fixtures/v2-server.ts");
    cleanups.push(() => fx.stop());
    const port = await freePort();
    const publicUrl = `http://127.0.0.1:${port}`;
    const edge = await startEdge({
      listen: { host: "127.0.0.1", port },
      publicUrl,
      auth: { oauth: [{ issuer: idp.issuer, jwksUri: idp.jwksUri }] },
      servers: {
        up: {
          route: "/mcp",
          upstream: { urls: [fx.url] },
          auth: ["oauth"],
          // One tool needs a scope the token lacks: the step-up challenge is judged too.
          scopes: { default: ["mcp:tools"], tools: { test_simple_text: ["mcp:tools", "mcp:admin"] } },
        },
      },
    });
    cleanups.push(() => edge.stop());
    const now = Math.floor(Date.now() / 1000);
    const token = await idp.mint({
      sub: "alice",
      aud: `${publicUrl}/mcp`,
      scope: "mcp:tools",
      iat: now,
      exp: now + 600,
    });
    const r = await runCheck({
      url: `${publicUrl}/mcp`,
      headers: { authorization: `Bearer ${token}` },
      era: "auto",
      callTools: ["test_simple_text"],
      probeLimits: false,
      timeoutMs: 5000,
      maxRequests: 150,
    });
    assert.deepEqual(r.eras, ["2026-07-28", "2025-11-25"]);
    assert.equal(r.findings.find((f) => f.id === "auth.scope-challenge")?.status, "pass", explain(r));
    // The test issuer publishes RFC 8414 metadata with PKCE S256 but neither client registration
    // nor RFC 9207 iss: those two recommended rules judge the issuer, not the edge.
    assert.deepEqual(failed(r), ["auth.iss-response", "auth.registration"], explain(r));
    for (const id of [
      "auth.challenge",
      "auth.challenge-metadata",
      "auth.challenge-scope",
      "auth.prm",
      "auth.prm-resource",
      "auth.prm-well-known",
      "auth.as-metadata",
      "auth.pkce-s256",
      "auth.invalid-token-401",
      "auth.query-token-refused",
    ])
      assert.equal(r.findings.find((f) => f.id === id)?.status, "pass", id);
    assert.ok(!JSON.stringify(r).includes(token), "the token is redacted everywhere");
  });
});
