/**
 * A 401 tells the truth for its route. On a route that takes API keys only, the message and the
 * challenge say an API key is needed and where one comes from, and promise no resource metadata
 * (none is served there). Where OAuth is accepted, the challenge names the RFC 9728 metadata, and
 * that document is served.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { freePort, type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { TestIdp } from "../helpers/idp.ts";
import { mcpPost } from "../helpers/mcp.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

const DEMO = `${REPO_ROOT}/src/demo/server.ts`;
const INIT = {
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "1" } },
};
let idp: TestIdp;
let edge: InProcessEdge;
let publicUrl: string;

before(async () => {
  idp = await TestIdp.start();
  const port = await freePort();
  publicUrl = `http://127.0.0.1:${port}`;
  const upstream = { stdio: { command: NODE_BIN, args: [DEMO], mode: "shared" } };
  edge = await startEdge({
    listen: { host: "127.0.0.1", port },
    publicUrl,
    auth: { oauth: [{ issuer: idp.issuer, jwksUri: idp.jwksUri }] },
    servers: {
      keys: { route: "/keys/mcp", upstream, auth: ["apiKey"] },
      both: { route: "/both/mcp", upstream, auth: ["apiKey", "oauth"] },
      tokens: { route: "/tokens/mcp", upstream, auth: ["oauth"] },
    },
  });
});

after(async () => {
  await edge?.stop();
  await idp?.stop();
});

async function refused(route: string, credential?: string) {
  const r = await mcpPost(`${publicUrl}${route}`, INIT, credential ? { credential } : {});
  assert.equal(r.status, 401, JSON.stringify(r.body));
  return {
    challenge: r.headers.get("www-authenticate") ?? "",
    message: r.body.error.message as string,
    code: r.body.error.data.code as string,
  };
}

test("an API-key-only route: the 401 says an API key is needed and where one comes from, no resource_metadata", async () => {
  const none = await refused("/keys/mcp");
  assert.equal(none.code, "EDGE_AUTH_REQUIRED");
  assert.match(none.message, /accepts an API key/);
  assert.match(none.message, /X-API-Key/);
  assert.match(none.message, /mcp-edge keys create/);
  assert.doesNotMatch(none.message, /OAuth|metadata/);
  assert.doesNotMatch(none.challenge, /resource_metadata/);
  assert.match(none.challenge, /^Bearer realm="mcp-edge", error_description="Send an API key/);
  // Nothing is served where a client would look for metadata.
  const wk = await fetch(`${publicUrl}/.well-known/oauth-protected-resource/keys/mcp`);
  assert.equal(wk.status, 404);
  // A token from a real issuer, on this route: refused, saying the route takes API keys.
  const now = Math.floor(Date.now() / 1000);
  const token = await idp.mint({ sub: "alice", aud: `${publicUrl}/keys/mcp`, iat: now, exp: now + 60 });
  const wrong = await refused("/keys/mcp", token);
  assert.equal(wrong.code, "EDGE_AUTH_INVALID_TOKEN");
  assert.match(wrong.message, /accepts an API key/);
  assert.match(wrong.challenge, /error="invalid_token"/);
  assert.doesNotMatch(wrong.challenge, /resource_metadata/);
});

test("routes that take OAuth: resource_metadata in the challenge, and the document is there", async () => {
  for (const route of ["/both/mcp", "/tokens/mcp"]) {
    const r = await refused(route);
    const url = /resource_metadata="([^"]+)"/.exec(r.challenge)?.[1];
    assert.equal(url, `${publicUrl}/.well-known/oauth-protected-resource${route}`, r.challenge);
    const doc = await fetch(url);
    assert.equal(doc.status, 200);
    assert.equal(((await doc.json()) as { resource: string }).resource, `${publicUrl}${route}`);
    assert.match(r.message, /OAuth access token/);
    if (route === "/both/mcp") assert.match(r.message, /or an API key.*X-API-Key/s);
    else assert.doesNotMatch(r.message, /API key/);
  }
});
