/**
 * src/auth/introspection.ts and the opaque-token path of oauth.ts.
 * `parseIntrospection` and `introspectionRequest` table-driven with fixed vectors; the client and
 * its cache against the real test IdP's RFC 7662 endpoint, frozen time.
 */
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import {
  INVALID_TOKEN_MESSAGE,
  introspectionRequest,
  parseIntrospection,
  tokenHash,
} from "../../src/auth/introspection.ts";
import type { HttpAnswer } from "../../src/auth/jwks.ts";
import { type IssuerConfig, OAuthVerifier } from "../../src/auth/oauth.ts";
import { Egress } from "../../src/egress/index.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { issuerConfig, TestIdp } from "../helpers/idp.ts";

const RESOURCE = "https://mcp.example.com/github/mcp";
const ISSUER = "https://as.example.com";
const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);
const S0 = T0 / 1000;
const clock = { now: T0 };
const now = () => clock.now;
const INVALID = "EDGE_AUTH_INVALID_TOKEN";
const UNAVAILABLE = "EDGE_AUTH_UNAVAILABLE";

const logLines: string[] = [];
const log = createLogger({ level: "debug", destination: { write: (s: string) => logLines.push(s) } });

async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (err) {
    assert.ok(err instanceof GatewayError, `a GatewayError, not ${String(err)}`);
    return err.code;
  }
}

describe("pure: introspectionRequest (RFC 7662 §2.1, client_secret_basic per RFC 6749 §2.3.1)", () => {
  test("fixed vector", () => {
    const r = introspectionRequest({ clientId: "edge client", clientSecret: "p@ss:w/rd+%" }, "tok en+/=");
    // "edge+client:p%40ss%3Aw%2Frd%2B%25" in Base64
    assert.equal(
      r.headers["authorization"],
      `Basic ${Buffer.from("edge+client:p%40ss%3Aw%2Frd%2B%25").toString("base64")}`,
    );
    assert.equal(r.headers["content-type"], "application/x-www-form-urlencoded");
    assert.equal(r.body, "token=tok+en%2B%2F%3D&token_type_hint=access_token");
  });
});

function answer(status: number, body: unknown): HttpAnswer {
  return {
    status,
    contentType: "application/json",
    body: Buffer.from(typeof body === "string" ? body : JSON.stringify(body)),
  };
}

describe("pure: parseIntrospection", () => {
  const o = { issuer: ISSUER, audience: RESOURCE, leeway: 30_000, now: T0 };
  const active = { active: true, sub: "alice", exp: S0 + 300 };
  const table: Array<[string, HttpAnswer, string]> = [
    ["active true", answer(200, active), "ok"],
    ["active true, only the required member", answer(200, { active: true }), "ok"],
    ["active false", answer(200, { active: false, sub: "alice" }), INVALID],
    ["active missing", answer(200, { sub: "alice", exp: S0 + 300 }), INVALID],
    ['active "true" (a string)', answer(200, { ...active, active: "true" }), INVALID],
    ["active 1", answer(200, { ...active, active: 1 }), INVALID],
    ["not JSON", answer(200, "<html>ok</html>"), INVALID],
    ["a JSON array", answer(200, [active]), INVALID],
    ["null", answer(200, "null"), INVALID],
    ["400 (the AS refuses the request about this token)", answer(400, { error: "invalid_request" }), INVALID],
    ["404", answer(404, active), INVALID],
    ["302", answer(302, ""), INVALID],
    ["401: our client credentials refused", answer(401, { error: "invalid_client" }), UNAVAILABLE],
    ["403", answer(403, {}), UNAVAILABLE],
    ["429", answer(429, {}), UNAVAILABLE],
    ["500", answer(500, active), UNAVAILABLE],
    ["503", answer(503, active), UNAVAILABLE],
    ["exp past by 31 s", answer(200, { ...active, exp: S0 - 31 }), INVALID],
    ["exp past by 10 s (leeway)", answer(200, { ...active, exp: S0 - 10 }), "ok"],
    ["exp a string", answer(200, { ...active, exp: String(S0 + 300) }), INVALID],
    ["nbf 31 s ahead", answer(200, { ...active, nbf: S0 + 31 }), INVALID],
    ["iss of another issuer", answer(200, { ...active, iss: "https://evil.example.com" }), INVALID],
    ["iss of this issuer", answer(200, { ...active, iss: ISSUER }), "ok"],
    ["aud another server", answer(200, { ...active, aud: "https://mcp.example.com/jira/mcp" }), INVALID],
    ["aud array holding the resource", answer(200, { ...active, aud: ["x", RESOURCE] }), "ok"],
    ["aud an empty array", answer(200, { ...active, aud: [] }), INVALID],
    ["a refresh token (token_type)", answer(200, { ...active, token_type: "refresh_token" }), INVALID],
    ["a refresh token (token_use)", answer(200, { ...active, token_use: "refresh_token" }), INVALID],
    ["token_type Bearer", answer(200, { ...active, token_type: "Bearer" }), "ok"],
  ];
  for (const [name, a, expected] of table) {
    test(name, () => {
      let got = "ok";
      try {
        parseIntrospection(a, o);
      } catch (err) {
        assert.ok(err instanceof GatewayError);
        got = err.code;
        if (got === INVALID) assert.equal(err.message, INVALID_TOKEN_MESSAGE);
      }
      assert.equal(got, expected);
    });
  }
});

describe("introspection against the test IdP", () => {
  let idp: TestIdp;
  let egress: Egress;

  before(async () => {
    idp = await TestIdp.start({ now });
    // The test IdP listens on loopback: a discovered jwks_uri there is a run-time URL, which the SSRF
    // policy refuses unless opted in, as an operator would for an internal IdP.
    egress = new Egress({
      connectTimeout: 2_000,
      rules: { allowPrivate: false, allowCidrs: ["127.0.0.1/32"] },
    });
  });
  after(async () => {
    await egress.close();
    await idp.stop();
  });
  beforeEach(() => {
    clock.now = T0;
    idp.introspectionMode = "up";
    idp.jwksMode = "up";
  });

  function introspectionIssuer(overrides: Partial<IssuerConfig> = {}): IssuerConfig {
    return issuerConfig(idp.issuer, {
      introspection: {
        url: idp.introspectionUrl,
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        cacheMaxAge: 60_000,
      },
      ...overrides,
    });
  }

  function verifier(issuers: IssuerConfig[] = [introspectionIssuer()]) {
    return OAuthVerifier.create({
      issuers,
      leeway: 30_000,
      egress,
      log,
      now,
      introspection: { timeout: 2_000 },
    });
  }

  let n = 0;
  const opaque = () => `opaque-${++n}-${Math.random().toString(36).slice(2)}`;

  test("an active token: identity from the answer", async () => {
    const v = verifier();
    const token = opaque();
    idp.setIntrospection(token, {
      active: true,
      sub: "alice",
      client_id: "app-1",
      scope: "mcp:tools repo:read",
      exp: S0 + 300,
      aud: RESOURCE,
      iss: idp.issuer,
    });
    const t = await v.verify(token, RESOURCE);
    assert.equal(t.issuer, idp.issuer);
    assert.equal(t.subject, "alice");
    assert.equal(t.clientId, "app-1");
    assert.deepEqual(t.scopes, ["mcp:tools", "repo:read"]);
    assert.equal(t.expiresAt, (S0 + 300) * 1000);
  });

  test("client-credentials token without sub: the client is the subject", async () => {
    const v = verifier();
    const token = opaque();
    idp.setIntrospection(token, { active: true, client_id: "svc-1", exp: S0 + 300 });
    const t = await v.verify(token, RESOURCE);
    assert.equal(t.subject, "svc-1");
  });

  test("neither sub nor client_id: refused", async () => {
    const v = verifier();
    const token = opaque();
    idp.setIntrospection(token, { active: true, exp: S0 + 300 });
    assert.equal(await outcome(v.verify(token, RESOURCE)), INVALID);
  });

  const refused: Array<[string, Record<string, unknown> | { status: number; body: unknown }]> = [
    ["active:false", { active: false }],
    ["active missing", { sub: "alice" }],
    ['active "true"', { active: "true", sub: "alice" }],
    ["non-JSON 200", { status: 200, body: "not json" }],
    ["aud of another server", { active: true, sub: "a", aud: "https://other.example.com/mcp" }],
    ["unknown token (the IdP says inactive)", { active: false }],
  ];
  for (const [name, scripted] of refused) {
    test(`${name} → 401`, async () => {
      const v = verifier();
      const token = opaque();
      idp.setIntrospection(token, scripted);
      const from = logLines.length;
      const err = await v.verify(token, RESOURCE).catch((e: unknown) => e);
      assert.ok(err instanceof GatewayError);
      assert.equal(err.code, INVALID);
      assert.equal(err.message, INVALID_TOKEN_MESSAGE);
      assert.ok(!logLines.slice(from).join("").includes(token), "the token never reaches the log");
    });
  }

  test("endpoint down → 503, not 401", async () => {
    const v = verifier();
    idp.introspectionMode = "down";
    const err = await v.verify(opaque(), RESOURCE).catch((e: unknown) => e);
    assert.ok(err instanceof GatewayError);
    assert.equal(err.code, UNAVAILABLE);
    assert.equal(err.status, 503);
  });

  test("endpoint that never answers → 503 after the timeout; oversized answer → 503", async () => {
    const v = OAuthVerifier.create({
      issuers: [introspectionIssuer()],
      leeway: 30_000,
      egress,
      log,
      now,
      introspection: { timeout: 200 },
    });
    idp.introspectionMode = "hang";
    const started = performance.now();
    assert.equal(await outcome(v.verify(opaque(), RESOURCE)), UNAVAILABLE);
    assert.ok(performance.now() - started < 2_000);
    idp.introspectionMode = "huge";
    assert.equal(await outcome(v.verify(opaque(), RESOURCE)), UNAVAILABLE);
  });

  test("endpoint 500 → 503", async () => {
    const v = verifier();
    idp.introspectionMode = "500";
    assert.equal(await outcome(v.verify(opaque(), RESOURCE)), UNAVAILABLE);
  });

  test("edge's client secret wrong (the AS answers 401) → 503 and an error log, not 401 for the client", async () => {
    const cfg = introspectionIssuer();
    const v = verifier([{ ...cfg, introspection: { ...cfg.introspection!, clientSecret: "wrong" } }]);
    const token = opaque();
    idp.setIntrospection(token, { active: true, sub: "alice" });
    const from = logLines.length;
    assert.equal(await outcome(v.verify(token, RESOURCE)), UNAVAILABLE);
    assert.ok(
      logLines.slice(from).some((l) => l.includes('"level":"error"') && l.includes("client credentials")),
    );
    assert.ok(!logLines.slice(from).join("").includes("wrong"), "the secret is not logged");
  });

  test("positive answers are cached by token hash for cacheMaxAge; revocation is seen after it", async () => {
    const v = verifier();
    const token = opaque();
    idp.setIntrospection(token, { active: true, sub: "alice", exp: S0 + 3600 });
    const before = idp.counts.introspection;
    await v.verify(token, RESOURCE);
    await v.verify(token, RESOURCE);
    clock.now += 59_000;
    await v.verify(token, RESOURCE);
    assert.equal(idp.counts.introspection - before, 1);
    idp.setIntrospection(token, { active: false });
    clock.now += 2_000; // past cacheMaxAge (60 s)
    assert.equal(await outcome(v.verify(token, RESOURCE)), INVALID);
    assert.equal(idp.counts.introspection - before, 2);
  });

  test("the cache respects exp when it comes before cacheMaxAge", async () => {
    const v = verifier();
    const token = opaque();
    idp.setIntrospection(token, { active: true, sub: "alice", exp: S0 + 20 });
    const before = idp.counts.introspection;
    await v.verify(token, RESOURCE);
    clock.now += 19_000;
    await v.verify(token, RESOURCE);
    assert.equal(idp.counts.introspection - before, 1);
    clock.now += 2_000; // past exp: asked again (the AS still says active, within leeway)
    await v.verify(token, RESOURCE);
    assert.equal(idp.counts.introspection - before, 2);
    clock.now += 40_000; // past exp + leeway: refused even though the AS says active
    assert.equal(await outcome(v.verify(token, RESOURCE)), INVALID);
  });

  test("negative answers are not cached; concurrent calls for one token share one request", async () => {
    const v = verifier();
    const token = opaque();
    idp.setIntrospection(token, { active: false });
    const before = idp.counts.introspection;
    await outcome(v.verify(token, RESOURCE));
    await outcome(v.verify(token, RESOURCE));
    assert.equal(idp.counts.introspection - before, 2);
    const shared = opaque();
    idp.setIntrospection(shared, { active: true, sub: "bob" });
    const b2 = idp.counts.introspection;
    await Promise.all(Array.from({ length: 10 }, () => v.verify(shared, RESOURCE)));
    assert.equal(idp.counts.introspection - b2, 1);
  });

  test("the cache key is the token's SHA-256 (fixed vector)", () => {
    assert.equal(tokenHash("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
  });

  test("JWT of an introspection-only issuer: introspected, no JWKS fetched", async () => {
    const v = verifier();
    await v.start();
    const jwksBefore = idp.counts.jwks;
    const jwt = await idp.mint({ aud: RESOURCE, sub: "carol" });
    idp.setIntrospection(jwt, { active: true, sub: "carol", exp: S0 + 300 });
    const before = idp.counts.introspection;
    const t = await v.verify(jwt, RESOURCE);
    assert.equal(t.subject, "carol");
    assert.equal(idp.counts.introspection - before, 1);
    assert.equal(idp.counts.jwks, jwksBefore);
    // Revoked at the AS → refused even though the signature is fine.
    const revoked = await idp.mint({ aud: RESOURCE, sub: "dave" });
    idp.setIntrospection(revoked, { active: false });
    assert.equal(await outcome(v.verify(revoked, RESOURCE)), INVALID);
  });

  test("issuer with jwksUri and introspection: JWTs locally, opaque tokens introspected", async () => {
    const v = verifier([introspectionIssuer({ jwksUri: idp.jwksUri })]);
    await v.start();
    const jwt = await idp.mint({ aud: RESOURCE });
    const before = idp.counts.introspection;
    assert.equal(await outcome(v.verify(jwt, RESOURCE)), "ok");
    assert.equal(idp.counts.introspection - before, 0);
    const token = opaque();
    idp.setIntrospection(token, { active: true, sub: "erin" });
    assert.equal((await v.verify(token, RESOURCE)).subject, "erin");
    assert.equal(idp.counts.introspection - before, 1);
  });

  test("several introspecting issuers: the first active answer wins; one down and none active → 503", async () => {
    const other = await TestIdp.start({ now });
    try {
      const second = issuerConfig(other.issuer, {
        introspection: {
          url: other.introspectionUrl,
          clientId: other.clientId,
          clientSecret: other.clientSecret,
          cacheMaxAge: 60_000,
        },
      });
      const v = verifier([introspectionIssuer(), second]);
      const token = opaque();
      other.setIntrospection(token, { active: true, sub: "frank" });
      const t = await v.verify(token, RESOURCE);
      assert.equal(t.issuer, other.issuer);
      idp.introspectionMode = "down";
      assert.equal(await outcome(v.verify(opaque(), RESOURCE)), UNAVAILABLE);
    } finally {
      await other.stop();
    }
  });
});
