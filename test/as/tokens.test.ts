/**
 * Tokens of the edge's authorization server, with real clients over real sockets:
 * - 20 concurrent refreshes with one refresh token all get the same new pair;
 * - the previous token replayed within the grace gets that pair again; after the grace the grant
 *   is revoked and its access token refused on the next call (RFC 9700 §4.14);
 * - RFC 7009: a revoked access token (a JWT that has not expired) is refused on the next call;
 *   a revoked refresh token ends its grant;
 * - refresh cannot widen the scope; a replayed code revokes what it issued (RFC 6749 §4.1.2);
 * - every leg is audited.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type AsEdge, codeFlow, loginTokens, mcpStatus, startAsEdge, tokenRequest } from "./helpers.ts";

let a: AsEdge;
before(async () => {
  a = await startAsEdge({ tokens: { refreshGrace: "1s" } });
});
after(async () => {
  await a?.edge.stop();
});

const refresh = (clientId: string, token: string, extra: Record<string, string> = {}) =>
  tokenRequest(a.base, { grant_type: "refresh_token", refresh_token: token, client_id: clientId, ...extra });

test("20 concurrent refreshes with one refresh token: the same new pair for all", async () => {
  const t = await loginTokens(a);
  assert.equal(await mcpStatus(a, t.access_token), 200);
  const answers = await Promise.all(Array.from({ length: 20 }, () => refresh(t.clientId, t.refresh_token)));
  for (const r of answers) assert.equal(r.status, 200, JSON.stringify(r.json));
  const pairs = new Set(answers.map((r) => `${r.json.access_token} ${r.json.refresh_token}`));
  assert.equal(pairs.size, 1, "one pair");
  const next = answers[0]!.json;
  assert.notEqual(next.refresh_token, t.refresh_token);
  assert.equal(await mcpStatus(a, next.access_token), 200);
  // The new refresh token refreshes normally.
  const again = await refresh(t.clientId, next.refresh_token);
  assert.equal(again.status, 200, JSON.stringify(again.json));
});

test("replay within the grace: the same pair; after it: the grant is revoked, its tokens refused", async () => {
  const t = await loginTokens(a);
  const first = await refresh(t.clientId, t.refresh_token);
  assert.equal(first.status, 200);
  const within = await refresh(t.clientId, t.refresh_token);
  assert.equal(within.status, 200);
  assert.equal(within.json.refresh_token, first.json.refresh_token);
  assert.equal(within.json.access_token, first.json.access_token);
  assert.equal(await mcpStatus(a, first.json.access_token), 200);
  await sleep(1300);
  const late = await refresh(t.clientId, t.refresh_token);
  assert.equal(late.status, 400);
  assert.equal(late.json.error, "invalid_grant");
  assert.equal(
    await mcpStatus(a, first.json.access_token),
    401,
    "the grant's access token is refused at once",
  );
  const successor = await refresh(t.clientId, first.json.refresh_token);
  assert.equal(successor.json.error, "invalid_grant", "the successor refresh token died with the grant");
});

test("RFC 7009: a revoked access token is refused on the next call; a revoked refresh token ends the grant", async () => {
  const t = await loginTokens(a);
  assert.equal(await mcpStatus(a, t.access_token), 200);
  const rv = await fetch(`${a.base}/revoke`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ token: t.access_token, client_id: t.clientId }).toString(),
  });
  assert.equal(rv.status, 200);
  assert.equal(await mcpStatus(a, t.access_token), 401);

  const u = await loginTokens(a);
  assert.equal(await mcpStatus(a, u.access_token), 200);
  const rr = await fetch(`${a.base}/revoke`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      token: u.refresh_token,
      token_type_hint: "refresh_token",
      client_id: u.clientId,
    }).toString(),
  });
  assert.equal(rr.status, 200);
  assert.equal(await mcpStatus(a, u.access_token), 401, "the grant's access token is refused");
  assert.equal((await refresh(u.clientId, u.refresh_token)).json.error, "invalid_grant");
});

test("admin: a grant revoked through the admin API stops its access token at once", async () => {
  const t = await loginTokens(a);
  const grants = await a.admin("GET", "/api/oauth/grants?tenant=acme");
  const g = grants.json.grants.find((x: any) => x.client_id === t.clientId);
  assert.ok(g, JSON.stringify(grants.json));
  assert.equal((await a.admin("DELETE", `/api/oauth/grants/${g.id}`)).status, 200);
  assert.equal(await mcpStatus(a, t.access_token), 401);
  assert.equal((await refresh(t.clientId, t.refresh_token)).json.error, "invalid_grant");
});

test("refresh cannot widen the scope", async () => {
  const t = await loginTokens(a);
  const wider = await refresh(t.clientId, t.refresh_token, { scope: "mcp:tools mcp:admin" });
  assert.equal(wider.status, 400);
  assert.equal(wider.json.error, "invalid_scope");
  assert.equal(wider.json.access_token, undefined);
});

test("a replayed code is refused and revokes what it issued", async () => {
  const f = await codeFlow(a);
  const form = {
    grant_type: "authorization_code",
    code: f.code,
    redirect_uri: f.redirectUri,
    client_id: f.clientId,
    code_verifier: f.verifier,
  };
  const first = await tokenRequest(a.base, form);
  assert.equal(first.status, 200);
  const replay = await tokenRequest(a.base, form);
  assert.equal(replay.status, 400);
  assert.equal(replay.json.error, "invalid_grant");
  assert.equal(await mcpStatus(a, first.json.access_token), 401, "the first exchange's token is revoked");
  assert.equal((await refresh(f.clientId, first.json.refresh_token)).json.error, "invalid_grant");
});

test("every leg is audited", async () => {
  await a.edge.gw.audit.flush();
  const res = await a.admin("GET", "/api/audit?limit=1000");
  assert.equal(res.status, 200);
  const legs = new Set((res.json.records as any[]).filter((r) => r.type === "oauth").map((r) => r.method));
  for (const leg of [
    "registration",
    "authorize",
    "login",
    "consent",
    "code",
    "token",
    "refresh",
    "reuse_detected",
    "revoke",
  ])
    assert.ok(legs.has(`oauth.${leg}`), `oauth.${leg} in ${[...legs].join(", ")}`);
});
