/**
 * The self-service grants page (/as/grants) and scope step-up, against a real edge:
 * - a person signs in on the page with the login method of the authorize flow (API key) and sees
 *   the grants of their own (tenant, subject) only; revoking one ends it at once: the client's
 *   access token is refused at its next MCP call and its refresh fails; audited as the user's;
 * - a grant id of another user → 404, nothing revoked; no CSRF token or a foreign Origin → 403;
 * - step-up: a tool needing a scope the grant lacks → 403 `insufficient_scope` naming it; the
 *   client authorizes again with the wider scope; the consent page asks only for the missing
 *   scope; the new token calls the tool.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { auth } from "@modelcontextprotocol/sdk/client/auth.js";
import { Browser, formAction, formValue, type Page } from "../helpers/browser.ts";
import { type AsEdge, mcpStatus, sdkLogin, startAsEdge, TestOAuthProvider, tokenRequest } from "./helpers.ts";

let a: AsEdge;
let bobKey: string;
before(async () => {
  a = await startAsEdge(
    { scopeDescriptions: { "mcp:admin": "Run the administrative tools" } },
    {
      servers: {
        demo: {
          route: "/mcp",
          upstream: {
            stdio: {
              command: process.execPath,
              args: [new URL("../../src/demo/server.ts", import.meta.url).pathname],
              mode: "shared",
            },
          },
          auth: ["apiKey", "oauth"],
          scopes: { default: ["mcp:tools"], tools: { add: ["mcp:admin"] } },
        },
      },
    },
  );
  const made = await a.admin("POST", "/api/keys", { name: "bob-laptop", server: "demo", tenant: "globex" });
  assert.equal(made.status, 201, JSON.stringify(made.json));
  bobKey = made.json.key as string;
});
after(async () => {
  await a?.edge.stop();
});

/** Signs in on the grants page with an API key: the list page. */
async function grantsPage(browser: Browser, key: string): Promise<Page> {
  const form = await browser.get(`${a.base}/as/grants`);
  assert.equal(form.status, 200, form.text.slice(0, 300));
  assert.match(form.text, /name="key"/, "the API-key sign-in form of the authorize flow");
  const list = await browser.post(formAction(form)!, {
    uid: formValue(form.text, "uid")!,
    csrf: formValue(form.text, "csrf")!,
    key,
  });
  assert.equal(list.status, 200, list.text.slice(0, 300));
  assert.equal(new URL(list.url).pathname, "/as/grants");
  return list;
}

const grantIds = (p: Page): string[] =>
  [...p.text.matchAll(/name="grant" value="([^"]+)"/g)].map((m) => m[1]!);

/** An MCP session with a bearer token (initialize), then one tools/call in it: the answer. */
async function tool(token: string, name: string, args: Record<string, unknown>): Promise<Response> {
  const headers: Record<string, string> = {
    authorization: `Bearer ${token}`,
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    "mcp-protocol-version": "2025-06-18",
  };
  const init = await fetch(a.mcpUrl, {
    method: "POST",
    headers,
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "1" } },
    }),
  });
  await init.arrayBuffer();
  assert.equal(init.status, 200);
  const session = init.headers.get("mcp-session-id");
  if (session) headers["mcp-session-id"] = session;
  await (
    await fetch(a.mcpUrl, {
      method: "POST",
      headers,
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    })
  ).arrayBuffer();
  return fetch(a.mcpUrl, {
    method: "POST",
    headers,
    body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name, arguments: args } }),
  });
}

test("grants page: own grants only; revoke ends the access and refresh tokens; foreign id 404; CSRF and Origin 403", async () => {
  const alice = new TestOAuthProvider({ redirectUrl: "http://127.0.0.1:53201/callback" });
  const { pages } = await sdkLogin(a, alice);
  const consent = pages.find((p) => p.text.includes("Allow access?"))!;
  assert.match(consent.text, /href="\/as\/grants"/, "the consent page links the grants page");
  const bob = new TestOAuthProvider({
    redirectUrl: "http://127.0.0.1:53202/callback",
    metadata: { client_name: "Bob's client" },
  });
  await sdkLogin({ ...a, key: bobKey }, bob);
  const all = (await a.admin("GET", "/api/oauth/grants")).json.grants as any[];
  const bobGrant = all.find((g) => g.subject === "bob-laptop")!;
  const aliceGrant = all.find((g) => g.subject === "alice-laptop")!;
  assert.ok(bobGrant && aliceGrant, JSON.stringify(all));

  const browser = new Browser();
  const list = await grantsPage(browser, a.key);
  assert.match(list.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/);
  assert.deepEqual(grantIds(list), [aliceGrant.id], "only alice's grant is listed");
  assert.match(list.text, /SDK test client/);
  assert.match(list.text, /unverified/);
  assert.match(list.text, /Use the tools of the MCP servers/, "scopes in plain words");
  assert.match(list.text, /Allowed \d{4}-\d\d-\d\dT[^;]*; last token issued \d{4}-/, "created and last used");
  assert.doesNotMatch(list.text, /Bob&#39;s client|Bob's client/);
  const csrf = formValue(list.text, "csrf")!;
  const revokeUrl = `${a.base}/as/grants/revoke`;

  // Bob's grant id on alice's page: 404, and bob's tokens still work.
  const foreign = await browser.post(revokeUrl, { csrf, grant: bobGrant.id }, a.base);
  assert.equal(foreign.status, 404);
  assert.equal(await mcpStatus(a, bob.saved!.access_token), 200);
  // No CSRF token, or a form posted from another origin: 403, nothing revoked.
  assert.equal((await browser.post(revokeUrl, { grant: aliceGrant.id }, a.base)).status, 403);
  assert.equal(
    (await browser.post(revokeUrl, { csrf, grant: aliceGrant.id }, "https://evil.example")).status,
    403,
  );
  // Without the page's session (another browser): 403.
  assert.equal((await new Browser().post(revokeUrl, { csrf, grant: aliceGrant.id }, a.base)).status, 403);
  assert.equal(await mcpStatus(a, alice.saved!.access_token), 200, "nothing revoked yet");

  const after = await browser.post(revokeUrl, { csrf, grant: aliceGrant.id }, a.base);
  assert.equal(after.status, 200);
  assert.equal(new URL(after.url).pathname, "/as/grants");
  assert.deepEqual(grantIds(after), [], "the grant is gone from the list");
  assert.equal(await mcpStatus(a, alice.saved!.access_token), 401, "access token refused at once");
  const refresh = await tokenRequest(a.base, {
    grant_type: "refresh_token",
    refresh_token: alice.saved!.refresh_token!,
    client_id: alice.info!.client_id,
  });
  assert.equal(refresh.status, 400);
  assert.equal(refresh.json.error, "invalid_grant");
  assert.equal(await mcpStatus(a, bob.saved!.access_token), 200, "bob's grant untouched");

  await a.edge.gw.audit.flush();
  const audit = (await a.admin("GET", "/api/audit?limit=1000")).json.records as any[];
  const revokes = audit.filter((r) => r.type === "oauth" && r.method === "oauth.revoke");
  assert.ok(
    revokes.some(
      (r) =>
        r.decision === "allowed" &&
        r.detail?.reason === "user" &&
        r.detail?.grant === aliceGrant.id &&
        r.subject === "alice-laptop" &&
        r.tenant === "acme",
    ),
    JSON.stringify(revokes),
  );
  assert.ok(revokes.some((r) => r.decision === "refused" && r.detail?.reason === "not the user's grant"));
  assert.ok(revokes.some((r) => r.decision === "refused" && r.detail?.reason === "csrf"));
});

test("step-up: 403 insufficient_scope, authorize again, consent asks only for the missing scope", async () => {
  const provider = new TestOAuthProvider({ redirectUrl: "http://127.0.0.1:53203/callback" });
  const browser = new Browser();
  // A client that asks for the route's default scope only (the SDK asks for the scopes its
  // caller names, else every scope the resource metadata lists).
  await sdkLogin(a, provider, browser, "mcp:tools");
  const first = provider.saved!;
  const echo = await tool(first.access_token, "echo", { text: "hi" });
  assert.equal(echo.status, 200, await echo.text());

  const refused = await tool(first.access_token, "add", { a: 1, b: 2 });
  assert.equal(refused.status, 403);
  await refused.arrayBuffer();
  const challenge = refused.headers.get("www-authenticate") ?? "";
  assert.match(challenge, /^Bearer /);
  assert.match(challenge, /error="insufficient_scope"/);
  const scope = /scope="([^"]+)"/.exec(challenge)?.[1];
  assert.equal(scope, "mcp:admin");

  // The client asks for what it has plus what the challenge names (MCP authorization, scope
  // step-up); a new authorization, not a refresh (a refresh cannot widen the scope).
  provider.saved = undefined;
  const { pages } = await sdkLogin(a, provider, browser, `mcp:tools ${scope}`);
  const consent = pages.find((p) => p.text.includes("Allow access?"));
  assert.ok(consent, "consent is asked for the new scope");
  const asked = /<p>It asks to:<\/p><ul>(.*?)<\/ul>/s.exec(consent.text)?.[1] ?? "";
  assert.match(asked, /Run the administrative tools/);
  assert.match(asked, /\(mcp:admin\)/);
  assert.doesNotMatch(asked, /mcp:tools/, "the scope already granted is not asked again");
  assert.match(consent.text, /Already allowed: Use the tools of the MCP servers/);

  const second = provider.saved!;
  const ok = await tool(second.access_token, "add", { a: 1, b: 2 });
  assert.equal(ok.status, 200, await ok.clone().text());
  assert.match(await ok.text(), /"3"|3/);
  assert.equal((await tool(second.access_token, "echo", { text: "hi" })).status, 200);
  // Still refreshes, without widening: the refreshed token calls the tool too.
  assert.equal(await auth(provider, { serverUrl: a.mcpUrl }), "AUTHORIZED");
  assert.equal((await tool(provider.saved!.access_token, "add", { a: 2, b: 2 })).status, 200);
});
