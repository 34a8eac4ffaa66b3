/**
 * The authenticator contract over every credential method: API keys (a real SQLite key store,
 * keys minted by the admin KeyService), OAuth access tokens verified against the issuer's JWKS
 * (test/helpers/idp.ts: jose-signed tokens, RFC 8414 metadata and a JWKS endpoint over HTTP), and
 * opaque tokens checked by RFC 7662 introspection at the same issuer.
 */
import { generateKeyPair } from "jose";
import { KeyService } from "../../src/admin/keys.ts";
import { mintApiKey } from "../../src/auth/apikey.ts";
import { Authenticator } from "../../src/auth/authenticate.ts";
import { resourceUrl } from "../../src/auth/challenge.ts";
import { type IssuerConfig, OAuthVerifier } from "../../src/auth/oauth.ts";
import { parseConfig } from "../../src/config/load.ts";
import type { Route } from "../../src/context.ts";
import { Egress } from "../../src/egress/index.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { SqliteApiKeyStore } from "../../src/store/sqlite/api-keys.ts";
import { HttpUpstream } from "../../src/upstream/http.ts";
import { issuerConfig, TestIdp } from "../helpers/idp.ts";
import { authenticatorContract } from "./authenticator.contract.ts";

const log = createLogger({ level: "silent" });
const PUBLIC_URL = "https://mcp.example.com";
const RESOURCE = resourceUrl(PUBLIC_URL, "/github/mcp");
const OTHER_RESOURCE = resourceUrl(PUBLIC_URL, "/jira/mcp");
const TENANCY = { claim: "tenant", required: false };

/** The `github` route of a config with `github` and `jira`, accepting `method`. */
function route(method: "apiKey" | "oauth", egress: Egress): Route {
  const config = parseConfig({
    store: { sqlite: ":memory:" },
    servers: {
      github: { route: "/github/mcp", upstream: { urls: ["http://127.0.0.1:9/mcp"] } },
      jira: { route: "/jira/mcp", upstream: { urls: ["http://127.0.0.1:9/mcp"] } },
    },
  });
  const server = { ...config.servers.github!, auth: [method] };
  return {
    name: "github",
    config: server,
    upstream: new HttpUpstream(server.upstream, egress, log),
    interceptors: [],
  };
}

function loopbackEgress(): Egress {
  // The test issuer listens on loopback, which the SSRF policy refuses unless opted in.
  return new Egress({ connectTimeout: 2000, rules: { allowPrivate: false, allowCidrs: ["127.0.0.1/32"] } });
}

authenticatorContract("API key", async () => {
  const egress = loopbackEgress();
  const store = new SqliteApiKeyStore(":memory:");
  const keys = new KeyService(store, ["github", "jira"]);
  let n = 0;
  const create = (extra: { server?: string; expires_in?: string } = {}) =>
    keys.create({
      name: `k${++n}`,
      server: "github",
      tenant: "acme",
      consumer: "ci",
      scopes: ["mcp:tools"],
      ...extra,
    });
  return {
    authenticator: new Authenticator({
      keys: store,
      oauth: undefined,
      publicUrl: undefined,
      tenancy: TENANCY,
    }),
    route: route("apiKey", egress),
    header: "x-api-key",
    async valid() {
      return { credential: (await create()).key, tenant: "acme", scopes: ["mcp:tools"], subject: "ci" };
    },
    async expired() {
      const { key, record } = await create();
      await store.update(record.id, { expiresAt: Date.now() - 1000 });
      return key;
    },
    async otherAudience() {
      return (await create({ server: "jira" })).key;
    },
    async unknown() {
      return mintApiKey().key;
    },
    async malformed() {
      return "mcpe_not-a-key";
    },
    async close() {
      await store.close();
      await egress.destroy();
    },
  };
});

async function oauthCase(
  name: string,
  issuer: (idp: TestIdp) => IssuerConfig,
  tokens: (idp: TestIdp) => {
    valid(): Promise<string>;
    expired(): Promise<string>;
    otherAudience(): Promise<string>;
    unknown(): Promise<string>;
    malformed(): Promise<string>;
  },
) {
  authenticatorContract(name, async () => {
    const idp = await TestIdp.start();
    const egress = loopbackEgress();
    const oauth = OAuthVerifier.create({ issuers: [issuer(idp)], leeway: 30_000, egress, log });
    const t = tokens(idp);
    const keys = new SqliteApiKeyStore(":memory:");
    return {
      authenticator: new Authenticator({
        keys,
        oauth,
        publicUrl: PUBLIC_URL,
        tenancy: TENANCY,
      }),
      route: route("oauth", egress),
      header: "authorization",
      async valid() {
        return {
          credential: await t.valid(),
          tenant: "acme",
          scopes: ["mcp:tools", "repo:read"],
          subject: "alice",
        };
      },
      expired: t.expired,
      otherAudience: t.otherAudience,
      unknown: t.unknown,
      malformed: t.malformed,
      async close() {
        await keys.close();
        await egress.destroy();
        await idp.stop();
      },
    };
  });
}

const claims = { sub: "alice", tenant: "acme", scope: "mcp:tools repo:read" };
const nowS = () => Math.floor(Date.now() / 1000);

await oauthCase(
  "OAuth JWT (JWKS)",
  (idp) => issuerConfig(idp.issuer),
  (idp) => ({
    valid: () => idp.mint({ ...claims, aud: RESOURCE }),
    expired: () => idp.mint({ ...claims, aud: RESOURCE, iat: nowS() - 7200, exp: nowS() - 3600 }),
    otherAudience: () => idp.mint({ ...claims, aud: OTHER_RESOURCE }),
    // Signed by a key the issuer never published: a token it never issued.
    unknown: async () =>
      idp.mint({ ...claims, aud: RESOURCE }, { foreignKey: (await generateKeyPair("ES256")).privateKey }),
    // Compact JWS syntax, but neither header nor payload is JSON.
    malformed: async () => "bm90LWpzb24.bm90LWpzb24.c2ln",
  }),
);

let opaque = 0;
const token = () => `opaque-${++opaque}-${Math.random().toString(36).slice(2)}`;

await oauthCase(
  "OAuth opaque token (introspection)",
  (idp) =>
    issuerConfig(idp.issuer, {
      introspection: {
        url: idp.introspectionUrl,
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        cacheMaxAge: 60_000,
      },
    }),
  (idp) => {
    const scripted = (answer: Record<string, unknown>) => {
      const t = token();
      idp.setIntrospection(t, { active: true, iss: idp.issuer, ...claims, ...answer });
      return Promise.resolve(t);
    };
    return {
      valid: () => scripted({ aud: RESOURCE, exp: nowS() + 300 }),
      // The issuer still says active, but `exp` has passed: the edge checks it (RFC 7662 §2.2).
      expired: () => scripted({ aud: RESOURCE, exp: nowS() - 3600 }),
      otherAudience: () => scripted({ aud: OTHER_RESOURCE, exp: nowS() + 300 }),
      // Never issued: the issuer answers {"active": false}.
      unknown: async () => token(),
      // Longer than any token an issuer hands out: refused before anyone is asked.
      malformed: async () => "A".repeat(16 * 1024 + 1),
    };
  },
);
