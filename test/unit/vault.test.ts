/**
 * The vault's pure parts: sealing (AES-256-GCM, the record's key as associated data, key
 * rotation), signed tickets and sealed OAuth state, token answers as providers really send them,
 * the config rules (secrets from the environment only, a key that is 32 bytes).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { resolveConnection } from "../../src/config/connections.ts";
import { parseConfig } from "../../src/config/load.ts";
import { checkSecretsFromEnv } from "../../src/config/secrets.ts";
import { parseTokenAnswer, ProviderError } from "../../src/vault/provider.ts";
import { KeyRing, parseVaultKey } from "../../src/vault/seal.ts";

const K1 = Buffer.alloc(32, 1).toString("base64");
const K2 = Buffer.alloc(32, 2).toString("hex");

test("seal/open: round trip; another record's key (AAD) or a flipped byte does not open", () => {
  const ring = new KeyRing(K1);
  const sealed = ring.seal('{"a":"tok"}', "acme\0alice\0github");
  assert.match(sealed, /^v1\.[0-9a-f]{8}\.[\w-]+\.[\w-]+$/);
  assert.ok(!sealed.includes("tok"));
  assert.equal(ring.open(sealed, "acme\0alice\0github"), '{"a":"tok"}');
  assert.equal(ring.open(sealed, "acme\0bob\0github"), undefined);
  const parts = sealed.split(".");
  const ct = Buffer.from(parts[3] as string, "base64url");
  ct[0] = (ct[0] as number) ^ 1;
  assert.equal(
    ring.open([parts[0], parts[1], parts[2], ct.toString("base64url")].join("."), "acme\0alice\0github"),
    undefined,
  );
  for (const bad of ["", "v1", "v2.x.y.z", "v1.00000000.AAAA.AAAA", "v1..."])
    assert.equal(ring.open(bad, "x"), undefined);
  // Two seals of the same text differ (a fresh IV each time).
  assert.notEqual(ring.seal("same", "k"), ring.seal("same", "k"));
});

test("key rotation: a new key seals; records sealed with a previous key still open and are marked stale", () => {
  const old = new KeyRing(K1);
  const sealed = old.seal("secret", "aad");
  const rotated = new KeyRing(K2, [K1]);
  assert.equal(rotated.open(sealed, "aad"), "secret");
  assert.equal(rotated.isStale(sealed), true);
  const resealed = rotated.seal("secret", "aad");
  assert.equal(rotated.isStale(resealed), false);
  assert.notEqual(rotated.currentKid, old.currentKid);
  // Without the old key the record does not open (the user connects again).
  assert.equal(new KeyRing(K2).open(sealed, "aad"), undefined);
});

test("vault keys: 32 bytes in base64, base64url or hex; anything else is a boot error", () => {
  assert.equal(parseVaultKey(K1, "k").length, 32);
  assert.equal(parseVaultKey(K2, "k").length, 32);
  assert.equal(parseVaultKey(Buffer.alloc(32, 3).toString("base64url"), "k").length, 32);
  for (const bad of [
    "",
    "short",
    Buffer.alloc(16).toString("base64"),
    Buffer.alloc(31).toString("hex"),
    "x".repeat(44),
  ])
    assert.throws(() => parseVaultKey(bad, "vault.key"), /vault\.key: must be 32 random bytes/);
});

test("tickets are signed and expire; state is sealed (it carries the PKCE verifier)", () => {
  const ring = new KeyRing(K1);
  const t = ring.sign({ t: "acme", s: "key|alice", p: "key:api:acme:alice", e: 1 });
  assert.deepEqual(ring.verify(t), { t: "acme", s: "key|alice", p: "key:api:acme:alice", e: 1 });
  const [body, mac] = t.split(".");
  const forged = Buffer.from(JSON.stringify({ t: "acme", s: "key|mallory", p: "x", e: 1 })).toString(
    "base64url",
  );
  assert.equal(ring.verify(`${forged}.${mac}`), undefined);
  assert.equal(ring.verify(`${body}.AAAA`), undefined);
  assert.equal(new KeyRing(K2).verify(t), undefined);
  const state = ring.sealState({ v: "verifier-123", n: "nonce" });
  assert.ok(!state.includes("verifier"));
  assert.deepEqual(ring.openState(state), { v: "verifier-123", n: "nonce" });
  const flipped = state.slice(0, 20) + (state[20] === "A" ? "B" : "A") + state.slice(21);
  assert.equal(ring.openState(flipped), undefined);
  assert.equal(new KeyRing(K2).openState(state), undefined);
});

test("token answers: RFC 6749 §5.1, GitHub's 200 with error, Slack's authed_user and ok:false; errors classified", () => {
  const t0 = 1_000_000;
  assert.deepEqual(
    parseTokenAnswer(
      200,
      '{"access_token":"a","refresh_token":"r","expires_in":3600,"scope":"repo","token_type":"bearer"}',
      t0,
      "top",
    ),
    { accessToken: "a", refreshToken: "r", expiresAt: t0 + 3_600_000, scope: "repo", tokenType: "bearer" },
  );
  assert.deepEqual(parseTokenAnswer(200, '{"access_token":"a"}', t0, "top"), {
    accessToken: "a",
    tokenType: "Bearer",
  });
  assert.equal(
    parseTokenAnswer(
      200,
      '{"ok":true,"access_token":"xoxb-bot","authed_user":{"access_token":"xoxp-user","expires_in":43200,"refresh_token":"xoxe-1"}}',
      t0,
      "authed_user",
    ).accessToken,
    "xoxp-user",
  );
  const kind = (status: number, body: string) => {
    try {
      parseTokenAnswer(status, body, t0, "top");
      return "ok";
    } catch (err) {
      assert.ok(err instanceof ProviderError);
      return err.kind;
    }
  };
  assert.equal(kind(200, '{"error":"bad_verification_code"}'), "grant"); // GitHub
  assert.equal(kind(400, '{"error":"invalid_grant"}'), "grant");
  assert.equal(kind(401, '{"error":"invalid_client"}'), "client");
  assert.equal(kind(200, '{"ok":false,"error":"invalid_refresh_token"}'), "grant"); // Slack
  assert.equal(kind(503, "<h1>down</h1>"), "unavailable");
  assert.equal(kind(429, "{}"), "unavailable");
  assert.equal(kind(200, "not json"), "unavailable");
  assert.equal(kind(200, '{"token_type":"bearer"}'), "unavailable");
});

test("config: connections need vault.key and publicUrl; secrets only from the environment; templates fill endpoints", () => {
  process.env.MCP_EDGE_TEST_UNIT_VAULT_KEY = K1;
  const server = {
    route: "/mcp",
    upstream: { urls: ["http://127.0.0.1:1/mcp"] },
    credentials: { connection: "gh" },
  };
  assert.throws(
    () => parseConfig({ connections: { gh: { template: "github", clientId: "x" } }, servers: { s: server } }),
    /vault|publicUrl/,
  );
  assert.throws(
    () => parseConfig({ servers: { s: server }, publicUrl: "https://e.example" }),
    /no connection named gh/,
  );
  assert.throws(
    () =>
      parseConfig({
        connections: { g: { clientId: "x" } },
        vault: { key: "${MCP_EDGE_TEST_UNIT_VAULT_KEY}" },
        publicUrl: "https://e.example",
        servers: { s: { route: "/mcp", upstream: { urls: ["http://127.0.0.1:1/mcp"] } } },
      }),
    /generic connection needs issuer/,
  );
  assert.deepEqual(
    checkSecretsFromEnv({
      connections: { gh: { clientSecret: "plain" } },
      vault: { key: "k", previousKeys: ["${OLD}", "p"] },
      servers: {},
    }),
    [
      "connections.gh.clientSecret: must be a ${NAME} reference, not a value in the file",
      "vault.key: must be a ${NAME} reference, not a value in the file",
      "vault.previousKeys.1: must be a ${NAME} reference, not a value in the file",
    ],
  );
  const gh = resolveConnection("gh", {
    template: "github",
    clientId: "x",
    scopes: ["repo"],
    params: {},
    refreshBefore: 60_000,
  });
  assert.equal(gh.tokenUrl, "https://github.com/login/oauth/access_token");
  const google = resolveConnection("g", {
    template: "google",
    clientId: "x",
    scopes: [],
    params: { prompt: "select_account" },
    refreshBefore: 60_000,
  });
  assert.deepEqual(google.params, { access_type: "offline", prompt: "select_account" });
  const slack = resolveConnection("s", {
    template: "slack",
    clientId: "x",
    scopes: ["chat:write", "users:read"],
    params: {},
    refreshBefore: 60_000,
  });
  assert.equal(slack.scopeParam, "user_scope");
  assert.equal(slack.tokenAt, "authed_user");
});
