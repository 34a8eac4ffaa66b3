/**
 * src/auth/jwks.ts: discovery, refresh, rotation, unknown-kid refetch with cooldown,
 * last-known-good keys while the JWKS is down, 503 at a cold start.
 * Pure parts table-driven with fixed vectors; the cache against the real test IdP, with the
 * verifier's clock frozen and moved by hand, counting requests at the IdP.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import { type HttpAnswer, metadataUrls, parseIssuerMetadata, parseJwks } from "../../src/auth/jwks.ts";
import { type IssuerConfig, OAuthVerifier } from "../../src/auth/oauth.ts";
import { Egress } from "../../src/egress/index.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { issuerConfig, TestIdp, type TestIdpOptions } from "../helpers/idp.ts";

const RESOURCE = "https://mcp.example.com/github/mcp";
const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);
const clock = { now: T0 };
const now = () => clock.now;
const log = createLogger({ level: "silent" });
const INVALID = "EDGE_AUTH_INVALID_TOKEN";
const UNAVAILABLE = "EDGE_AUTH_UNAVAILABLE";

let egress: Egress;
const idps: TestIdp[] = [];

async function startIdp(options: TestIdpOptions = {}): Promise<TestIdp> {
  const idp = await TestIdp.start({ now, ...options });
  idps.push(idp);
  return idp;
}

function verifierFor(idp: TestIdp, overrides: Partial<IssuerConfig> = {}) {
  return OAuthVerifier.create({
    issuers: [issuerConfig(idp.issuer, { jwksUri: idp.jwksUri, ...overrides })],
    leeway: 30_000,
    egress,
    log,
    now,
    jwks: { cooldown: 30_000, failureBackoff: 5_000, timeout: 2_000 },
  });
}

async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (err) {
    assert.ok(err instanceof GatewayError, `a GatewayError, not ${String(err)}`);
    return err.code;
  }
}

/** Waits for the background JWKS refresh a verification may have started. */
async function settle(v: OAuthVerifier, idp: TestIdp): Promise<void> {
  await v.jwksOf(idp.issuer)?.settled();
}

before(() => {
  // The test IdP listens on loopback: a discovered jwks_uri there is a run-time URL, which the SSRF
  // policy refuses unless opted in, as an operator would for an internal IdP.
  egress = new Egress({
    connectTimeout: 2_000,
    rules: { allowPrivate: false, allowCidrs: ["127.0.0.1/32"] },
  });
});
after(async () => {
  await egress.close();
});
beforeEach(() => {
  clock.now = T0;
});
afterEach(async () => {
  await Promise.all(idps.splice(0).map((i) => i.stop()));
});

describe("pure: metadataUrls (RFC 8414 §3.1 path insertion, OIDC suffix)", () => {
  const vectors: Array<[string, string[]]> = [
    [
      "https://as.example.com",
      [
        "https://as.example.com/.well-known/oauth-authorization-server",
        "https://as.example.com/.well-known/openid-configuration",
      ],
    ],
    [
      "https://as.example.com/",
      [
        "https://as.example.com/.well-known/oauth-authorization-server",
        "https://as.example.com/.well-known/openid-configuration",
      ],
    ],
    [
      "https://as.example.com/t1",
      [
        "https://as.example.com/.well-known/oauth-authorization-server/t1",
        "https://as.example.com/.well-known/openid-configuration/t1",
        "https://as.example.com/t1/.well-known/openid-configuration",
      ],
    ],
    [
      "https://as.example.com:8443/realms/acme/",
      [
        "https://as.example.com:8443/.well-known/oauth-authorization-server/realms/acme",
        "https://as.example.com:8443/.well-known/openid-configuration/realms/acme",
        "https://as.example.com:8443/realms/acme/.well-known/openid-configuration",
      ],
    ],
  ];
  for (const [issuer, urls] of vectors) {
    test(issuer, () => assert.deepEqual(metadataUrls(issuer), urls));
  }
});

function answer(status: number, body: unknown): HttpAnswer {
  return {
    status,
    contentType: "application/json",
    body: Buffer.from(typeof body === "string" ? body : JSON.stringify(body)),
  };
}

describe("pure: parseIssuerMetadata", () => {
  const issuer = "https://as.example.com/t1";
  const table: Array<[string, HttpAnswer, string | RegExp]> = [
    ["ok", answer(200, { issuer, jwks_uri: "https://as.example.com/jwks" }), "https://as.example.com/jwks"],
    ["404", answer(404, {}), /answered 404/],
    ["not JSON", answer(200, "<html>"), /not JSON/],
    ["an array", answer(200, [1]), /not a JSON object/],
    [
      "issuer of another AS (mix-up)",
      answer(200, { issuer: "https://evil.example.com", jwks_uri: "x" }),
      /names issuer/,
    ],
    [
      "issuer with a trailing slash",
      answer(200, { issuer: `${issuer}/`, jwks_uri: "https://a/j" }),
      /names issuer/,
    ],
    ["no jwks_uri", answer(200, { issuer }), /jwks_uri/],
    ["jwks_uri not a URL", answer(200, { issuer, jwks_uri: "/jwks" }), /jwks_uri/],
    ["jwks_uri javascript:", answer(200, { issuer, jwks_uri: "javascript:alert(1)" }), /jwks_uri/],
  ];
  for (const [name, a, expected] of table) {
    test(name, () => {
      if (typeof expected === "string") {
        assert.equal(parseIssuerMetadata(a, issuer).jwksUri, expected);
        return;
      }
      assert.throws(
        () => parseIssuerMetadata(a, issuer),
        (err: GatewayError) => {
          assert.equal(err.code, UNAVAILABLE);
          assert.match(String((err.cause as Error).message), expected);
          return true;
        },
      );
    });
  }
});

describe("pure: parseJwks", () => {
  const ec = { kty: "EC", crv: "P-256", x: "x", y: "y", kid: "a" };
  const table: Array<[string, HttpAnswer, number | RegExp]> = [
    ["one EC key", answer(200, { keys: [ec] }), 1],
    ["empty set", answer(200, { keys: [] }), 0],
    ["500", answer(500, {}), /answered 500/],
    ["no keys member", answer(200, { jwks: [] }), /no keys/],
    ["keys not an array", answer(200, { keys: {} }), /no keys/],
    ["not JSON", answer(200, "<html>"), /not JSON/],
    ["symmetric key dropped", answer(200, { keys: [ec, { kty: "oct", k: "c2VjcmV0" }] }), 1],
    ["private key dropped", answer(200, { keys: [ec, { ...ec, kid: "b", d: "secret" }] }), 1],
    ["encryption key dropped", answer(200, { keys: [ec, { ...ec, kid: "c", use: "enc" }] }), 1],
    ["junk members dropped", answer(200, { keys: [ec, null, 3, "x", { kid: "no-kty" }] }), 1],
  ];
  for (const [name, a, expected] of table) {
    test(name, () => {
      if (typeof expected === "number") {
        assert.equal(parseJwks(a).keys.length, expected);
        return;
      }
      assert.throws(
        () => parseJwks(a),
        (err: GatewayError) => {
          assert.equal(err.code, UNAVAILABLE);
          assert.match(String((err.cause as Error).message), expected);
          return true;
        },
      );
    });
  }
});

describe("discovery", () => {
  test("RFC 8414 metadata gives jwks_uri", async () => {
    const idp = await startIdp();
    const v = verifierFor(idp, { jwksUri: undefined });
    await v.start();
    assert.equal(await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)), "ok");
    assert.equal(idp.counts.metadata, 1);
    assert.deepEqual(idp.paths.slice(0, 2), ["/.well-known/oauth-authorization-server", "/jwks"]);
  });

  test("a discovered jwks_uri on a private address is refused without the opt-in (SSRF): 503, never keys", async () => {
    const idp = await startIdp();
    const strict = new Egress({ connectTimeout: 2_000 }); // no exception for the loopback IdP
    try {
      const v = OAuthVerifier.create({
        issuers: [issuerConfig(idp.issuer, { jwksUri: undefined })],
        leeway: 30_000,
        egress: strict,
        log,
        now,
        jwks: { cooldown: 30_000, failureBackoff: 5_000, timeout: 2_000 },
      });
      await v.start();
      assert.equal(
        await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)),
        "EDGE_AUTH_UNAVAILABLE",
      );
      assert.equal(idp.counts.jwks, 0, "the JWKS endpoint was never contacted");
      assert.equal(idp.counts.metadata, 1, "the configured issuer's metadata is trusted as written");
      await v.stop();
    } finally {
      await strict.close();
    }
  });

  test("issuer with a path, OIDC discovery only: tries the three forms in order", async () => {
    const idp = await startIdp({ path: "/realms/acme", discovery: "oidc" });
    const v = verifierFor(idp, { jwksUri: undefined });
    await v.start();
    assert.equal(await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)), "ok");
    assert.deepEqual(idp.paths.slice(0, 3), [
      "/.well-known/oauth-authorization-server/realms/acme",
      "/.well-known/openid-configuration/realms/acme",
      "/jwks",
    ]);
  });

  test("metadata naming another issuer: no keys, 503, never an accept", async () => {
    const idp = await startIdp({ metadataIssuer: "https://evil.example.com" });
    const v = verifierFor(idp, { jwksUri: undefined });
    await v.start();
    assert.equal(await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)), UNAVAILABLE);
    assert.equal(idp.counts.jwks, 0);
  });

  test("a configured jwksUri skips discovery", async () => {
    const idp = await startIdp();
    const v = verifierFor(idp);
    await v.start();
    assert.equal(await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)), "ok");
    assert.equal(idp.counts.metadata, 0);
  });

  test("metadata down after a successful discovery: the known jwks_uri is kept", async () => {
    const idp = await startIdp();
    const v = verifierFor(idp, { jwksUri: undefined, jwksCacheMaxAge: 60_000, jwksMaxStale: 600_000 });
    await v.start();
    idp.metadataMode = "down";
    clock.now += 61_000;
    assert.equal(await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)), "ok");
    await settle(v, idp);
    assert.equal(idp.counts.jwks, 2, "the JWKS was refetched from the known URI");
  });
});

describe("unknown kid: one refetch, single-flight, with a cooldown", () => {
  test("an unknown kid causes one refetch, then the token is refused", async () => {
    const idp = await startIdp();
    const v = verifierFor(idp);
    await v.start();
    assert.equal(idp.counts.jwks, 1);
    clock.now += 31_000;
    const token = await idp.mint({ aud: RESOURCE }, { kid: "no-such-kid" });
    assert.equal(await outcome(v.verify(token, RESOURCE)), INVALID);
    assert.equal(idp.counts.jwks, 2);
  });

  test("a flood of made-up kids costs the IdP at most one request per cooldown", async () => {
    const idp = await startIdp();
    const v = verifierFor(idp);
    await v.start();
    clock.now += 31_000;
    const flood = async () => {
      const tokens = await Promise.all(
        Array.from({ length: 50 }, () => idp.mint({ aud: RESOURCE }, { kid: randomUUID() })),
      );
      const results = await Promise.all(tokens.map((t) => outcome(v.verify(t, RESOURCE))));
      assert.ok(results.every((r) => r === INVALID));
    };
    await flood();
    assert.equal(idp.counts.jwks, 2, "50 concurrent unknown kids: one refetch");
    clock.now += 10_000;
    await flood();
    assert.equal(idp.counts.jwks, 2, "within the cooldown: none");
    clock.now += 21_000;
    await flood();
    assert.equal(idp.counts.jwks, 3, "after the cooldown: one more");
  });

  test("key rotation at the IdP is picked up", async () => {
    const idp = await startIdp();
    const v = verifierFor(idp);
    await v.start();
    const old = await idp.mint({ aud: RESOURCE });
    await idp.rotate("ES256", { keepOld: false });
    clock.now += 31_000;
    const fresh = await idp.mint({ aud: RESOURCE });
    assert.equal(await outcome(v.verify(fresh, RESOURCE)), "ok", "new kid: refetched and accepted");
    assert.equal(idp.counts.jwks, 2);
    assert.equal(await outcome(v.verify(old, RESOURCE)), INVALID, "the withdrawn key is gone");
    assert.equal(idp.counts.jwks, 2);
  });

  test("a withdrawn key stops verifying, even for tokens in the verified-claims cache", async () => {
    const idp = await startIdp();
    const v = verifierFor(idp, { jwksCacheMaxAge: 60_000, jwksMaxStale: 600_000 });
    await v.start();
    const old = await idp.mint({ aud: RESOURCE, exp: Math.floor(clock.now / 1000) + 3600 });
    assert.equal(await outcome(v.verify(old, RESOURCE)), "ok");
    await idp.rotate("ES256", { keepOld: false });
    clock.now += 61_000;
    // Served from the old keys (a routine refresh never makes a request wait) and starts a refresh.
    assert.equal(await outcome(v.verify(old, RESOURCE)), "ok");
    await settle(v, idp);
    assert.equal(idp.counts.jwks, 2);
    // The new key set invalidates the issuer's cached verifications.
    assert.equal(await outcome(v.verify(old, RESOURCE)), INVALID);
  });

  test("a token without kid is tried against each key of its algorithm", async () => {
    const idp = await startIdp();
    await idp.addKey("ES256");
    const v = verifierFor(idp);
    await v.start();
    const first = idp.kids.find((k) => k.startsWith("es256"))!;
    const token = await idp.mint({ aud: RESOURCE }, { kid: null, keyId: first });
    assert.equal(await outcome(v.verify(token, RESOURCE)), "ok");
    const forged = await idp.mint({ aud: RESOURCE }, { kid: null, foreignKey: await TestIdp.foreignKey() });
    assert.equal(await outcome(v.verify(forged, RESOURCE)), INVALID);
  });
});

describe("JWKS endpoint down (last-known-good, closed when cold)", () => {
  test("warm cache, endpoint down: still verifies, past max age and up to max stale", async () => {
    const idp = await startIdp();
    const v = verifierFor(idp, { jwksCacheMaxAge: 60_000, jwksMaxStale: 3_600_000 });
    await v.start();
    idp.jwksMode = "down";
    clock.now += 120_000;
    assert.equal(await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)), "ok");
    await settle(v, idp);
    assert.equal(idp.counts.jwks, 2, "a refresh was tried in the background");
    clock.now += 3_000_000;
    assert.equal(await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)), "ok");
    clock.now = T0 + 3_600_001;
    assert.equal(
      await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)),
      UNAVAILABLE,
      "past max stale: 503",
    );
  });

  test("warm cache, endpoint answering 500 or garbage: the good keys are kept", async () => {
    for (const mode of ["500", "garbage"] as const) {
      clock.now = T0;
      const idp = await startIdp();
      const v = verifierFor(idp, { jwksCacheMaxAge: 60_000, jwksMaxStale: 3_600_000 });
      await v.start();
      idp.jwksMode = mode;
      clock.now += 61_000;
      assert.equal(await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)), "ok", mode);
      await settle(v, idp);
      clock.now += 10_000;
      assert.equal(await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)), "ok", mode);
    }
  });

  test("cold start with the endpoint down: start() does not throw, tokens get 503, recovery without restart", async () => {
    const idp = await startIdp();
    idp.jwksMode = "down";
    const v = verifierFor(idp);
    await v.start();
    const token = await idp.mint({ aud: RESOURCE });
    assert.equal(await outcome(v.verify(token, RESOURCE)), UNAVAILABLE);
    const fetches = idp.counts.jwks;
    assert.equal(await outcome(v.verify(token, RESOURCE)), UNAVAILABLE);
    assert.equal(idp.counts.jwks, fetches, "backing off: no request within failureBackoff");
    idp.jwksMode = "up";
    clock.now += 5_000;
    assert.equal(await outcome(v.verify(token, RESOURCE)), "ok");
  });

  test("cold start with the endpoint answering 500: 503, never an unverified accept", async () => {
    const idp = await startIdp();
    idp.jwksMode = "500";
    const v = verifierFor(idp);
    await v.start();
    const forged = idp.unsigned({ alg: "ES256", typ: "at+jwt", kid: idp.kids[0] }, { aud: RESOURCE });
    const err = await v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE).catch((e: unknown) => e);
    assert.ok(err instanceof GatewayError);
    assert.equal(err.code, UNAVAILABLE);
    assert.equal(err.status, 503);
    assert.equal(await outcome(v.verify(forged, RESOURCE)), UNAVAILABLE);
  });

  test("a JWKS endpoint that never answers: 503 after the timeout", async () => {
    const idp = await startIdp();
    idp.jwksMode = "hang";
    const v = OAuthVerifier.create({
      issuers: [issuerConfig(idp.issuer, { jwksUri: idp.jwksUri })],
      leeway: 30_000,
      egress,
      log,
      now,
      jwks: { timeout: 200 },
    });
    const started = performance.now();
    assert.equal(await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)), UNAVAILABLE);
    assert.ok(performance.now() - started < 2_000, "bounded by the timeout");
  });

  test("an oversized JWKS is refused (size cap): 503", async () => {
    const idp = await startIdp();
    idp.jwksMode = "huge";
    const v = verifierFor(idp);
    assert.equal(await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)), UNAVAILABLE);
  });

  test("an unknown kid while the endpoint is down is 503, not 401 (the key may be new)", async () => {
    const idp = await startIdp();
    const v = verifierFor(idp);
    await v.start();
    idp.jwksMode = "down";
    clock.now += 31_000;
    const token = await idp.mint({ aud: RESOURCE }, { kid: "new-kid" });
    assert.equal(await outcome(v.verify(token, RESOURCE)), UNAVAILABLE);
    // Known kids keep working meanwhile.
    assert.equal(await outcome(v.verify(await idp.mint({ aud: RESOURCE }), RESOURCE)), "ok");
  });

  test("concurrent cold-start verifications share one fetch", async () => {
    const idp = await startIdp();
    const v = verifierFor(idp);
    const tokens = await Promise.all(
      Array.from({ length: 20 }, (_, n) => idp.mint({ aud: RESOURCE, sub: `u${n}` })),
    );
    const results = await Promise.all(tokens.map((t) => outcome(v.verify(t, RESOURCE))));
    assert.ok(results.every((r) => r === "ok"));
    assert.equal(idp.counts.jwks, 1);
  });
});
