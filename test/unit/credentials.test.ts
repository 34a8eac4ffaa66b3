/**
 * The pure parts of upstream credentials: token response parsing
 * (RFC 6749 §5.1/§5.2), the refresh schedule, the grant request encoding (§2.3.1, §4.4.2,
 * RFC 8707) and the secrets-from-the-environment config rule. Fixed vectors, frozen time.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Egress } from "../../src/egress/index.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import { checkSecretsFromEnv } from "../../src/config/secrets.ts";
import { createLogger } from "../../src/observability/logger.ts";
import {
  type CredentialsConfig,
  createCredentials,
  parseTokenResponse,
  refreshAt,
  TokenEndpointError,
  tokenRequest,
} from "../../src/upstream/credentials.ts";

const NOW = 1_700_000_000_000;
const JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_";

describe("parseTokenResponse", () => {
  const ok: {
    name: string;
    status: number;
    body: unknown;
    expect: { expiresAt: number | undefined; scope?: string };
  }[] = [
    {
      name: "a complete answer",
      status: 200,
      body: { access_token: JWT, token_type: "Bearer", expires_in: 3600, scope: "mcp:tools" },
      expect: { expiresAt: NOW + 3_600_000, scope: "mcp:tools" },
    },
    {
      name: "token_type in any case (RFC 6749 §7.1)",
      status: 200,
      body: { access_token: "abc", token_type: "bEaReR", expires_in: 60 },
      expect: { expiresAt: NOW + 60_000 },
    },
    {
      name: "expires_in as a string of digits",
      status: 200,
      body: { access_token: "abc", token_type: "bearer", expires_in: "300" },
      expect: { expiresAt: NOW + 300_000 },
    },
    {
      name: "expires_in absent: used until rejected",
      status: 200,
      body: { access_token: "abc", token_type: "Bearer" },
      expect: { expiresAt: undefined },
    },
    {
      name: "expires_in 0",
      status: 200,
      body: { access_token: "abc==", token_type: "Bearer", expires_in: 0 },
      expect: { expiresAt: NOW },
    },
    {
      name: "unknown members are ignored",
      status: 200,
      body: { access_token: "abc", token_type: "Bearer", expires_in: 1, refresh_token: "r", id_token: "i" },
      expect: { expiresAt: NOW + 1000 },
    },
  ];
  for (const c of ok) {
    it(`accepts ${c.name}`, () => {
      const t = parseTokenResponse(c.status, JSON.stringify(c.body), NOW);
      assert.equal(t.accessToken, (c.body as { access_token: string }).access_token);
      assert.equal(t.expiresAt, c.expect.expiresAt);
      assert.equal(t.scope, c.expect.scope);
    });
  }

  const bad: { name: string; status: number; body: string; oauthError?: string }[] = [
    {
      name: "an RFC 6749 §5.2 error",
      status: 401,
      body: '{"error":"invalid_client"}',
      oauthError: "invalid_client",
    },
    {
      name: "a 400 invalid_scope",
      status: 400,
      body: '{"error":"invalid_scope","error_description":"x"}',
      oauthError: "invalid_scope",
    },
    { name: "a 503 HTML page", status: 503, body: "<h1>down</h1>" },
    { name: "a redirect", status: 302, body: "" },
    { name: "not JSON", status: 200, body: "access_token=abc&token_type=bearer" },
    { name: "a JSON array", status: 200, body: "[]" },
    { name: "JSON null", status: 200, body: "null" },
    { name: "no access_token", status: 200, body: '{"token_type":"Bearer","expires_in":60}' },
    {
      name: "an empty access_token",
      status: 200,
      body: '{"access_token":"","token_type":"Bearer","expires_in":60}',
    },
    {
      name: "a numeric access_token",
      status: 200,
      body: '{"access_token":42,"token_type":"Bearer","expires_in":60}',
    },
    {
      name: "an access_token that would break the header",
      status: 200,
      body: JSON.stringify({ access_token: "abc\r\nx-injected: 1", token_type: "Bearer", expires_in: 60 }),
    },
    {
      name: "an access_token with a space",
      status: 200,
      body: '{"access_token":"a b","token_type":"Bearer"}',
    },
    { name: "no token_type", status: 200, body: '{"access_token":"abc","expires_in":60}' },
    {
      name: "a DPoP token_type",
      status: 200,
      body: '{"access_token":"abc","token_type":"DPoP","expires_in":60}',
    },
    { name: "a MAC token_type", status: 200, body: '{"access_token":"abc","token_type":"mac"}' },
    {
      name: "a negative expires_in",
      status: 200,
      body: '{"access_token":"abc","token_type":"Bearer","expires_in":-1}',
    },
    {
      name: "a non-numeric expires_in",
      status: 200,
      body: '{"access_token":"abc","token_type":"Bearer","expires_in":"1h"}',
    },
    {
      name: "expires_in true",
      status: 200,
      body: '{"access_token":"abc","token_type":"Bearer","expires_in":true}',
    },
    {
      name: "a non-string scope",
      status: 200,
      body: '{"access_token":"abc","token_type":"Bearer","scope":["a"]}',
    },
  ];
  for (const c of bad) {
    it(`refuses ${c.name} with EDGE_UPSTREAM_UNAVAILABLE`, () => {
      assert.throws(
        () => parseTokenResponse(c.status, c.body, NOW),
        (err: unknown) => {
          assert.ok(err instanceof GatewayError);
          assert.equal(err.code, "EDGE_UPSTREAM_UNAVAILABLE");
          assert.equal(err.status, 503);
          assert.ok(err.cause instanceof TokenEndpointError);
          assert.equal(err.cause.status, c.status);
          assert.equal(err.cause.oauthError, c.oauthError);
          // The client-facing message names no detail of the token endpoint.
          assert.equal(err.message, "Credentials for the upstream could not be obtained.");
          return true;
        },
      );
    });
  }

  it("never puts the token into an error message", () => {
    const secret = "s3cr3t-token-value";
    assert.throws(
      () => parseTokenResponse(200, JSON.stringify({ access_token: secret, token_type: "DPoP" }), NOW),
      (err: unknown) => {
        assert.ok(err instanceof GatewayError);
        assert.ok(!err.message.includes(secret));
        assert.ok(!(err.cause as Error).message.includes(secret));
        return true;
      },
    );
  });
});

describe("refreshAt", () => {
  it("refreshes refreshBefore ahead of expiry", () => {
    assert.equal(refreshAt(NOW, NOW + 3_600_000, 60_000), NOW + 3_540_000);
  });
  it("never before half the lifetime (a short token with a long refreshBefore)", () => {
    assert.equal(refreshAt(NOW, NOW + 30_000, 60_000), NOW + 15_000);
    assert.equal(refreshAt(NOW, NOW + 3000, 1000), NOW + 2000);
  });
  it("has no schedule for a token without expiry, and copes with an expired one", () => {
    assert.equal(refreshAt(NOW, undefined, 60_000), undefined);
    assert.equal(refreshAt(NOW, NOW - 5, 60_000), NOW);
  });
});

describe("tokenRequest", () => {
  it("sends the client_credentials grant with scope and resource, client_secret_basic", () => {
    const r = tokenRequest({
      clientId: "edge client",
      clientSecret: "p@ss:wörd+/=",
      scope: "mcp:tools read",
      resource: "https://api.example/mcp?x=1",
    });
    const form = new URLSearchParams(r.body);
    assert.equal(form.get("grant_type"), "client_credentials");
    assert.equal(form.get("scope"), "mcp:tools read");
    assert.equal(form.get("resource"), "https://api.example/mcp?x=1");
    assert.equal(form.has("client_secret"), false, "the secret travels in the Authorization header only");
    assert.equal(r.headers["content-type"], "application/x-www-form-urlencoded");
    const basic = Buffer.from(r.headers.authorization!.replace(/^Basic /, ""), "base64").toString("utf8");
    // RFC 6749 §2.3.1: form-encoded before joining, so a ":" in the secret cannot split it.
    assert.equal(basic, "edge+client:p%40ss%3Aw%C3%B6rd%2B%2F%3D");
    const [id, secret] = basic.split(":").map((s) => decodeURIComponent(s!.replace(/\+/g, " ")));
    assert.equal(id, "edge client");
    assert.equal(secret, "p@ss:wörd+/=");
  });
  it("leaves out scope and resource when not configured", () => {
    assert.equal(tokenRequest({ clientId: "a", clientSecret: "b" }).body, "grant_type=client_credentials");
  });
});

describe("checkSecretsFromEnv", () => {
  const doc = (credentials: unknown) => ({ servers: { gh: { route: "/gh", credentials } } });
  it("accepts ${NAME} references and `<scheme> ${NAME}` header values", () => {
    assert.deepEqual(
      checkSecretsFromEnv(
        doc({
          headers: { "x-api-key": "${GH_KEY}", authorization: "Bearer ${GH_TOKEN}" },
          oauth: { tokenUrl: "https://idp/token", clientId: "edge", clientSecret: "${GH_SECRET}" },
        }),
      ),
      [],
    );
  });
  it("refuses values written in the file, defaults and partial references, without echoing them", () => {
    const problems = checkSecretsFromEnv(
      doc({
        headers: {
          "x-api-key": "hunter2",
          "x-other": "${KEY:-hunter2}",
          "x-mixed": "abc${KEY}",
          authorization: "Bearer hunter2",
          "x-num": 42,
        },
        oauth: { tokenUrl: "https://idp/token", clientId: "edge", clientSecret: "hunter2" },
      }),
    );
    assert.deepEqual(
      problems.map((p) => p.split(":")[0]),
      [
        "servers.gh.credentials.headers.x-api-key",
        "servers.gh.credentials.headers.x-other",
        "servers.gh.credentials.headers.x-mixed",
        "servers.gh.credentials.headers.authorization",
        "servers.gh.credentials.headers.x-num",
        "servers.gh.credentials.oauth.clientSecret",
      ],
    );
    for (const p of problems) assert.ok(!p.includes("hunter2"));
  });
  it("ignores documents without servers or credentials, and clientId (not a secret)", () => {
    assert.deepEqual(checkSecretsFromEnv(undefined), []);
    assert.deepEqual(checkSecretsFromEnv("x"), []);
    assert.deepEqual(checkSecretsFromEnv({ servers: { a: { route: "/a" } } }), []);
    assert.deepEqual(checkSecretsFromEnv(doc({ oauth: { clientId: "plain", clientSecret: "${S}" } })), []);
  });
});

describe("createCredentials (boot validation)", () => {
  const egress = new Egress({ connectTimeout: 1000 });
  const log = createLogger({ level: "silent" });
  it("no credentials: no headers, a 401 is never retried", async () => {
    const c = createCredentials(undefined, egress, log);
    assert.deepEqual(await c.headers(), {});
    assert.equal(await c.refreshAfterRejection({}), false);
  });
  it("static headers: lower-cased names, a 401 is passed through", async () => {
    const c = createCredentials({ headers: { "X-Api-Key": "k" } }, egress, log);
    assert.deepEqual(await c.headers(), { "x-api-key": "k" });
    assert.equal(await c.refreshAfterRejection({ "x-api-key": "k" }), false);
  });
  it("refuses an Authorization header next to oauth, and bad header names or values", () => {
    const oauth = {
      tokenUrl: "http://127.0.0.1:1/token",
      clientId: "a",
      clientSecret: "b",
      refreshBefore: 60_000,
    };
    const configs: CredentialsConfig[] = [
      { headers: { Authorization: "Bearer x" }, oauth },
      { headers: { "bad header": "x" } },
      { headers: { "x-a": "line\r\nbreak" } },
    ];
    for (const cfg of configs) {
      assert.throws(
        () => createCredentials(cfg, egress, log),
        (err: unknown) => err instanceof GatewayError && err.code === "EDGE_CONFIG_INVALID",
      );
    }
  });
});
