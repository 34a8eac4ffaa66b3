/**
 * src/auth/oauth.ts against a real IdP (test/helpers/idp.ts: node:http + jose-signed tokens),
 * through the real Egress. JWT threats, table-driven, with frozen time (jose's
 * `currentDate`, the verifier's and the IdP's clocks share one `clock`).
 */
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { INVALID_TOKEN_MESSAGE } from "../../src/auth/introspection.ts";
import { type IssuerConfig, OAuthVerifier, type OAuthVerifierOptions } from "../../src/auth/oauth.ts";
import { Egress } from "../../src/egress/index.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { issuerConfig, TestIdp } from "../helpers/idp.ts";

const RESOURCE = "https://mcp.example.com/github/mcp";
const OTHER_SERVER = "https://mcp.example.com/jira/mcp";
const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);
const clock = { now: T0 };
const now = () => clock.now;
const sec = () => Math.floor(clock.now / 1000);

const logLines: string[] = [];
const log = createLogger({ level: "debug", destination: { write: (s: string) => logLines.push(s) } });

let idp: TestIdp;
let egress: Egress;

function verifier(overrides: Partial<IssuerConfig> = {}, extra: Partial<OAuthVerifierOptions> = {}) {
  return OAuthVerifier.create({
    issuers: [issuerConfig(idp.issuer, overrides)],
    leeway: 30_000,
    egress,
    log,
    now,
    ...extra,
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
});

const OK = "ok";
const INVALID = "EDGE_AUTH_INVALID_TOKEN";

interface Case {
  name: string;
  token: () => Promise<string> | string;
  issuer?: Partial<IssuerConfig>;
  expect: string;
  /** What the debug log must give as the reason (proves the refusal came from the intended check). */
  reason?: RegExp;
}

const aud = { aud: RESOURCE };
const cases: Case[] = [
  // Baselines
  { name: "valid ES256", token: () => idp.mint(aud), expect: OK },
  { name: "valid RS256", token: () => idp.mint(aud, { alg: "RS256" }), expect: OK },
  {
    name: "aud as an array holding the resource",
    token: () => idp.mint({ aud: [OTHER_SERVER, RESOURCE] }),
    expect: OK,
  },
  // A1: alg none in every spelling, and an empty signature; algorithms come from config only
  {
    name: "alg none",
    token: () => idp.unsigned({ alg: "none", typ: "at+jwt" }, aud),
    expect: INVALID,
    reason: /alg/,
  },
  {
    name: "alg None",
    token: () => idp.unsigned({ alg: "None", typ: "at+jwt" }, aud),
    expect: INVALID,
    reason: /alg/,
  },
  {
    name: "alg NONE",
    token: () => idp.unsigned({ alg: "NONE", typ: "at+jwt" }, aud),
    expect: INVALID,
    reason: /alg/,
  },
  {
    name: "ES256 header, empty signature",
    token: () => idp.unsigned({ alg: "ES256", typ: "at+jwt", kid: idp.kids[0] }, aud),
    expect: INVALID,
    reason: /signature/,
  },
  {
    name: "valid header and payload, signature of another token",
    token: async () => {
      const a = (await idp.mint(aud)).split(".");
      const b = (await idp.mint({ ...aud, sub: "mallory" })).split(".");
      return `${a[0]}.${b[1]}.${a[2]}`;
    },
    expect: INVALID,
    reason: /signature/,
  },
  {
    name: "HS256 signed with the RS256 public key PEM (key confusion)",
    token: () => {
      const rs = idp.kids.find((k) => k.startsWith("rs256"))!;
      return idp.mint(aud, { alg: "HS256", kid: rs, secret: new TextEncoder().encode(idp.publicKeyPem(rs)) });
    },
    expect: INVALID,
    reason: /alg/,
  },
  {
    name: "signed by a forger's key under a published kid",
    token: async () => idp.mint(aud, { foreignKey: await TestIdp.foreignKey("ES256") }),
    expect: INVALID,
    reason: /signature/,
  },
  {
    name: "RS256 when the issuer allows ES256 only",
    token: () => idp.mint(aud, { alg: "RS256" }),
    issuer: { algorithms: ["ES256"] },
    expect: INVALID,
    reason: /alg/,
  },
  // Issuer
  {
    name: "iss of an unknown issuer",
    token: () => idp.mint({ ...aud, iss: "https://evil.example.com" }),
    expect: INVALID,
    reason: /iss/,
  },
  {
    name: "iss with a trailing slash",
    token: () => idp.mint({ ...aud, iss: `${idp.issuer}/` }),
    expect: INVALID,
    reason: /iss/,
  },
  {
    name: "no iss (and no introspection)",
    token: () => idp.mint({ ...aud, iss: undefined }),
    expect: INVALID,
  },
  // A4: audience
  {
    name: "aud = another MCP server",
    token: () => idp.mint({ aud: OTHER_SERVER }),
    expect: INVALID,
    reason: /aud/,
  },
  {
    name: "aud = the upstream API",
    token: () => idp.mint({ aud: "https://api.github.com" }),
    expect: INVALID,
    reason: /aud/,
  },
  {
    name: "aud = the client_id (an ID token)",
    token: () => idp.mint({ aud: "client-123", azp: "client-123" }),
    expect: INVALID,
    reason: /aud/,
  },
  { name: "aud missing", token: () => idp.mint({}), expect: INVALID, reason: /aud/ },
  {
    name: "aud = resource with a trailing slash",
    token: () => idp.mint({ aud: `${RESOURCE}/` }),
    expect: INVALID,
    reason: /aud/,
  },
  {
    name: "configured audience wins over the resource",
    token: () => idp.mint({ aud: "api://mcp" }),
    issuer: { audience: "api://mcp" },
    expect: OK,
  },
  {
    name: "configured audience: the resource alone is refused",
    token: () => idp.mint(aud),
    issuer: { audience: "api://mcp" },
    expect: INVALID,
    reason: /aud/,
  },
  // A4: typ (RFC 9068), strict by default, relaxed per issuer
  { name: "typ application/at+jwt", token: () => idp.mint(aud, { typ: "application/at+jwt" }), expect: OK },
  {
    name: "typ AT+JWT (media types are case-insensitive)",
    token: () => idp.mint(aud, { typ: "AT+JWT" }),
    expect: OK,
  },
  { name: "typ JWT", token: () => idp.mint(aud, { typ: "JWT" }), expect: INVALID, reason: /typ/ },
  { name: "typ missing", token: () => idp.mint(aud, { typ: null }), expect: INVALID, reason: /typ/ },
  {
    name: "typ id_token+jwt",
    token: () => idp.mint(aud, { typ: "id_token+jwt" }),
    expect: INVALID,
    reason: /typ/,
  },
  {
    name: "typ JWT, requireTyp false",
    token: () => idp.mint(aud, { typ: "JWT" }),
    issuer: { requireTyp: false },
    expect: OK,
  },
  {
    name: "typ missing, requireTyp false",
    token: () => idp.mint(aud, { typ: null }),
    issuer: { requireTyp: false },
    expect: OK,
  },
  // A6: time, leeway 30 s
  {
    name: "exp past by 31 s",
    token: () => idp.mint({ ...aud, iat: sec() - 600, exp: sec() - 31 }),
    expect: INVALID,
    reason: /exp/,
  },
  {
    name: "exp past by 10 s (within leeway)",
    token: () => idp.mint({ ...aud, iat: sec() - 600, exp: sec() - 10 }),
    expect: OK,
  },
  { name: "exp missing", token: () => idp.mint({ ...aud, exp: undefined }), expect: INVALID, reason: /exp/ },
  {
    name: "exp a string",
    token: () => idp.mint({ ...aud, exp: String(sec() + 300) }),
    expect: INVALID,
    reason: /exp/,
  },
  {
    name: "nbf 31 s ahead",
    token: () => idp.mint({ ...aud, nbf: sec() + 31 }),
    expect: INVALID,
    reason: /nbf/,
  },
  { name: "nbf 10 s ahead (within leeway)", token: () => idp.mint({ ...aud, nbf: sec() + 10 }), expect: OK },
  {
    name: "iat 31 s ahead",
    token: () => idp.mint({ ...aud, iat: sec() + 31 }),
    expect: INVALID,
    reason: /iat/,
  },
  { name: "iat 10 s ahead (within leeway)", token: () => idp.mint({ ...aud, iat: sec() + 10 }), expect: OK },
  {
    name: "iat a string",
    token: () => idp.mint({ ...aud, iat: "yesterday" }),
    expect: INVALID,
    reason: /iat/,
  },
  // Subject
  { name: "sub missing", token: () => idp.mint({ ...aud, sub: undefined }), expect: INVALID, reason: /sub/ },
  { name: "sub a number", token: () => idp.mint({ ...aud, sub: 42 }), expect: INVALID, reason: /sub/ },
  { name: "sub empty", token: () => idp.mint({ ...aud, sub: "" }), expect: INVALID, reason: /sub/ },
  // crit (RFC 7515 §4.1.11): an extension the verifier does not understand is refused
  {
    name: "unknown crit extension",
    token: () =>
      idp.mint(aud, {
        header: { crit: ["urn:example:x"], "urn:example:x": 1 },
        signCrit: { "urn:example:x": true },
      }),
    expect: INVALID,
    reason: /crit|urn:example:x/,
  },
  // Shape
  { name: "opaque token, no introspection configured", token: () => "opaque-abc", expect: INVALID },
  {
    name: "two-segment token",
    token: async () => (await idp.mint(aud)).split(".").slice(0, 2).join("."),
    expect: INVALID,
  },
  { name: "huge token", token: () => "a".repeat(20_000), expect: INVALID },
  {
    name: "payload is not JSON",
    token: async () => {
      const [h, , s] = (await idp.mint(aud)).split(".");
      return `${h}.${Buffer.from("not json").toString("base64url")}.${s}`;
    },
    expect: INVALID,
  },
];

describe("JWT threats: validation", () => {
  for (const c of cases) {
    test(c.name, async () => {
      const v = verifier(c.issuer);
      await v.start();
      const token = await c.token();
      const linesBefore = logLines.length;
      let err: unknown;
      let result: unknown;
      try {
        result = await v.verify(token, RESOURCE);
      } catch (e) {
        err = e;
      }
      if (c.expect === OK) {
        assert.equal(err, undefined, `accepted, not ${String(err)} (${String((err as Error)?.cause)})`);
        assert.ok(result);
      } else {
        assert.ok(err instanceof GatewayError, `refused with a GatewayError, not ${String(err)}`);
        assert.equal(err.code, c.expect);
        // Never says which check failed, never echoes the token.
        assert.equal(err.message, INVALID_TOKEN_MESSAGE);
        assert.equal(err.status, 401);
        if (c.reason) {
          const refused = logLines
            .slice(linesBefore)
            .map((l) => JSON.parse(l) as Record<string, unknown>)
            .find((l) => l["msg"] === "bearer token refused");
          assert.match(String(refused?.["reason"]), c.reason);
        }
      }
      const written = logLines.slice(linesBefore).join("");
      assert.ok(!written.includes(token), "the token never reaches the log");
      const signature = token.split(".")[2];
      if (signature && signature.length > 10) assert.ok(!written.includes(signature));
    });
  }
});

describe("verified identity", () => {
  test("issuer, subject, client id, scopes (string or array claim), expiry, claims", async () => {
    const v = verifier();
    const token = await idp.mint({
      ...aud,
      sub: "alice",
      client_id: "app-1",
      scope: "mcp:tools  repo:read",
      org_id: "acme",
    });
    const t = await v.verify(token, RESOURCE);
    assert.equal(t.issuer, idp.issuer);
    assert.equal(t.subject, "alice");
    assert.equal(t.clientId, "app-1");
    assert.deepEqual(t.scopes, ["mcp:tools", "repo:read"]);
    assert.equal(t.expiresAt, (sec() + 300) * 1000);
    assert.equal(t.claims["org_id"], "acme");
    assert.ok(Object.isFrozen(t) && Object.isFrozen(t.claims));

    const v2 = verifier({ scopeClaim: "scp" });
    const t2 = await v2.verify(await idp.mint({ ...aud, azp: "app-2", scp: ["a", "b", 3] }), RESOURCE);
    assert.deepEqual(t2.scopes, ["a", "b"]);
    assert.equal(t2.clientId, "app-2");
  });

  test("a refused token's reason is logged at debug, without the token", async () => {
    const v = verifier();
    const token = await idp.mint({ aud: OTHER_SERVER });
    const from = logLines.length;
    assert.equal(await outcome(v.verify(token, RESOURCE)), INVALID);
    const lines = logLines.slice(from).map((l) => JSON.parse(l) as Record<string, unknown>);
    const refused = lines.find((l) => l["msg"] === "bearer token refused");
    assert.ok(refused, "a debug line says a token was refused");
    assert.equal(refused["level"], "debug");
    assert.match(String(refused["reason"]), /aud/);
    assert.ok(!JSON.stringify(lines).includes(token));
  });
});

describe("verified-claims cache", () => {
  test("the same token is verified once, and the same result is returned", async () => {
    const v = verifier();
    const token = await idp.mint(aud);
    const a = await v.verify(token, RESOURCE);
    const b = await v.verify(token, RESOURCE);
    assert.equal(v.jwtVerifications, 1);
    assert.equal(a, b);
  });

  test("never past exp: within leeway it is verified afresh, beyond it is refused", async () => {
    const v = verifier();
    const token = await idp.mint({ ...aud, exp: sec() + 60 });
    await v.verify(token, RESOURCE);
    clock.now += 59_000;
    await v.verify(token, RESOURCE);
    assert.equal(v.jwtVerifications, 1, "cached before exp");
    clock.now += 11_000; // exp + 10 s: past exp, within leeway
    await v.verify(token, RESOURCE);
    assert.equal(v.jwtVerifications, 2, "the cache entry ended at exp");
    clock.now += 30_000; // exp + 40 s
    assert.equal(await outcome(v.verify(token, RESOURCE)), INVALID);
  });

  test("keyed by resource too: a token cached for one route is checked again for another", async () => {
    const v = verifier();
    const token = await idp.mint(aud);
    await v.verify(token, RESOURCE);
    assert.equal(await outcome(v.verify(token, OTHER_SERVER)), INVALID);
    assert.equal(v.jwtVerifications, 2);
  });

  test("bounded by jwksCacheMaxAge, so a withdrawn key stops being trusted through the cache", async () => {
    const v = verifier({ jwksCacheMaxAge: 60_000, jwksMaxStale: 120_000 });
    const token = await idp.mint({ ...aud, exp: sec() + 3600 });
    await v.verify(token, RESOURCE);
    clock.now += 61_000;
    await v.verify(token, RESOURCE);
    assert.equal(v.jwtVerifications, 2);
  });

  test("bounded in size, least recently used evicted first", async () => {
    const v = verifier({}, { cacheEntries: 2 });
    const [t1, t2, t3] = await Promise.all([1, 2, 3].map((n) => idp.mint({ ...aud, sub: `u${n}` })));
    await v.verify(t1!, RESOURCE);
    await v.verify(t2!, RESOURCE);
    await v.verify(t1!, RESOURCE); // t1 most recent
    await v.verify(t3!, RESOURCE); // evicts t2
    assert.equal(v.jwtVerifications, 3);
    await v.verify(t1!, RESOURCE);
    assert.equal(v.jwtVerifications, 3, "t1 still cached");
    await v.verify(t2!, RESOURCE);
    assert.equal(v.jwtVerifications, 4, "t2 was evicted");
  });

  test("refusals are not cached", async () => {
    const v = verifier();
    const token = await idp.mint({ aud: OTHER_SERVER });
    await outcome(v.verify(token, RESOURCE));
    await outcome(v.verify(token, RESOURCE));
    assert.equal(v.jwtVerifications, 2);
  });
});

describe("OAuthVerifier.create validates options at boot", () => {
  const base = (): OAuthVerifierOptions => ({
    issuers: [issuerConfig("https://idp.example.com")],
    leeway: 30_000,
    egress,
    log,
  });
  const bad: Array<[string, (o: OAuthVerifierOptions) => OAuthVerifierOptions, RegExp]> = [
    ["no issuer", (o) => ({ ...o, issuers: [] }), /at least one issuer/],
    ["leeway over 60 s", (o) => ({ ...o, leeway: 61_000 }), /leeway/],
    ["negative leeway", (o) => ({ ...o, leeway: -1 }), /leeway/],
    [
      "HS256 allowed",
      (o) => ({
        ...o,
        issuers: [issuerConfig("https://idp.example.com", { algorithms: ["HS256" as "RS256"] })],
      }),
      /HS256 is not an asymmetric/,
    ],
    [
      "none allowed",
      (o) => ({
        ...o,
        issuers: [issuerConfig("https://idp.example.com", { algorithms: ["none" as "RS256"] })],
      }),
      /none is not an asymmetric/,
    ],
    [
      "no algorithms",
      (o) => ({ ...o, issuers: [issuerConfig("https://idp.example.com", { algorithms: [] })] }),
      /algorithms/,
    ],
    ["issuer not a URL", (o) => ({ ...o, issuers: [issuerConfig("idp.example.com")] }), /not a URL/],
    ["issuer ftp", (o) => ({ ...o, issuers: [issuerConfig("ftp://idp.example.com")] }), /http\(s\)/],
    [
      "issuer with a query",
      (o) => ({ ...o, issuers: [issuerConfig("https://idp.example.com/?x=1")] }),
      /query/,
    ],
    [
      "issuer with a fragment",
      (o) => ({ ...o, issuers: [issuerConfig("https://idp.example.com/#x")] }),
      /fragment/,
    ],
    [
      "issuer twice",
      (o) => ({
        ...o,
        issuers: [issuerConfig("https://idp.example.com"), issuerConfig("https://idp.example.com")],
      }),
      /twice/,
    ],
    [
      "max stale below max age",
      (o) => ({
        ...o,
        issuers: [issuerConfig("https://idp.example.com", { jwksCacheMaxAge: 60_000, jwksMaxStale: 1_000 })],
      }),
      /jwksMaxStale/,
    ],
    [
      "empty audience",
      (o) => ({ ...o, issuers: [issuerConfig("https://idp.example.com", { audience: "" })] }),
      /audience/,
    ],
    [
      "bad introspection url",
      (o) => ({
        ...o,
        issuers: [
          issuerConfig("https://idp.example.com", {
            introspection: { url: "nope", clientId: "a", clientSecret: "b", cacheMaxAge: 1000 },
          }),
        ],
      }),
      /introspection.url/,
    ],
    ["cacheEntries 0", (o) => ({ ...o, cacheEntries: 0 }), /cacheEntries/],
  ];
  for (const [name, change, message] of bad) {
    test(name, () => {
      assert.throws(
        () => OAuthVerifier.create(change(base())),
        (err: Error) => {
          assert.ok(err instanceof TypeError);
          assert.match(err.message, message);
          return true;
        },
      );
    });
  }
  test("a sound config is accepted", () => {
    assert.ok(OAuthVerifier.create(base()));
  });
});
