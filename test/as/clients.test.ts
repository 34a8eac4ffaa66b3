/**
 * Client shapes seen in the field, and bad input, against the edge's authorization server:
 * - one DCR with three redirect URIs, one a private-use scheme (`cursor://`), each usable;
 * - a loopback redirect registered on one port and used on another (RFC 8252 §7.3);
 * - a claude.ai-shaped registration (hosted HTTPS callback, `scope: "claudeai"`): accepted, the
 *   unknown scope dropped;
 * - bad input (RFC 6749 §5.2, RFC 7591 §3.2.2): the right error, nothing issued, audited;
 *   errors before the redirect URI is validated render on the edge's page (no open redirect);
 *   consent without its CSRF token refused; the consent page is not frameable.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Browser, formAction, formValue } from "../helpers/browser.ts";
import { type AsEdge, authorizeUrl, codeFlow, pkce, register, startAsEdge, tokenRequest } from "./helpers.ts";

let a: AsEdge;
before(async () => {
  a = await startAsEdge();
});
after(async () => {
  await a?.edge.stop();
});

describe("client shapes", () => {
  test("one DCR with three redirect URIs (loopback, hosted https, private-use scheme): each one works", async () => {
    const uris = [
      "http://127.0.0.1/callback",
      "https://app.example.com/oauth/callback",
      "cursor://anysphere.cursor-retrieval/oauth/callback",
    ];
    const r = await register(a.base, { client_name: "Cursor", redirect_uris: uris });
    assert.equal(r.status, 201, JSON.stringify(r.json));
    assert.deepEqual(r.json.redirect_uris, uris);
    for (const redirectUri of ["http://127.0.0.1:51234/callback", uris[1]!, uris[2]!]) {
      const f = await codeFlow(a, { clientId: r.json.client_id, redirectUri });
      assert.ok(f.redirect.toString().startsWith(redirectUri));
      const t = await tokenRequest(a.base, {
        grant_type: "authorization_code",
        code: f.code,
        redirect_uri: redirectUri,
        client_id: f.clientId,
        code_verifier: f.verifier,
      });
      assert.equal(t.status, 200, `${redirectUri}: ${JSON.stringify(t.json)}`);
    }
  });

  test("claude.ai-shaped registration: hosted callback, scope 'claudeai' ignored, not a failure", async () => {
    const r = await register(a.base, {
      client_name: "Claude",
      redirect_uris: ["https://claude.ai/api/mcp/auth_callback"],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
      scope: "claudeai",
    });
    assert.equal(r.status, 201, JSON.stringify(r.json));
    assert.equal(r.json.scope, undefined);
    const f = await codeFlow(a, {
      clientId: r.json.client_id,
      redirectUri: "https://claude.ai/api/mcp/auth_callback",
    });
    assert.ok(f.code);
  });

  test("per-URI rejection reasons (RFC 7591 invalid_redirect_uri)", async () => {
    const r = await register(a.base, {
      redirect_uris: [
        "http://evil.example.com/cb",
        "javascript:alert(1)",
        "https://ok.example.com/cb#frag",
        "https://fine.example.com/cb",
      ],
    });
    assert.equal(r.status, 400);
    assert.equal(r.json.error, "invalid_redirect_uri");
    assert.match(r.json.error_description, /redirect_uris\[0\].*loopback/);
    assert.match(r.json.error_description, /redirect_uris\[1\].*javascript/);
    assert.match(r.json.error_description, /redirect_uris\[2\].*fragment/);
    assert.doesNotMatch(r.json.error_description, /redirect_uris\[3\]/);
  });
});

describe("bad input: the right error, nothing issued", () => {
  const exchange = (
    f: { code: string; redirectUri: string; clientId: string },
    over: Record<string, string | undefined>,
  ) => {
    const form: Record<string, string> = {
      grant_type: "authorization_code",
      code: f.code,
      redirect_uri: f.redirectUri,
      client_id: f.clientId,
    };
    for (const [k, v] of Object.entries(over))
      if (v === undefined) delete form[k];
      else form[k] = v;
    return tokenRequest(a.base, form);
  };

  test("wrong code_verifier → invalid_grant", async () => {
    const f = await codeFlow(a);
    const r = await exchange(f, { code_verifier: pkce().verifier });
    assert.equal(r.json.error, "invalid_grant");
    assert.equal(r.json.access_token, undefined);
  });

  test("missing code_verifier → invalid_grant (or invalid_request)", async () => {
    const f = await codeFlow(a);
    const r = await exchange(f, {});
    assert.ok(["invalid_grant", "invalid_request"].includes(r.json.error), JSON.stringify(r.json));
    assert.equal(r.json.access_token, undefined);
  });

  test("code for another client → invalid_grant; for another redirect URI → invalid_grant", async () => {
    const f = await codeFlow(a);
    const other = await register(a.base, { redirect_uris: [f.redirectUri] });
    const r1 = await exchange({ ...f, clientId: other.json.client_id }, { code_verifier: f.verifier });
    assert.equal(r1.json.error, "invalid_grant");
    const g = await codeFlow(a, { clientId: f.clientId });
    const r2 = await exchange(
      { ...g, redirectUri: "http://127.0.0.1:41999/other" },
      { code_verifier: g.verifier },
    );
    assert.equal(r2.json.error, "invalid_grant");
    assert.equal(r2.json.access_token, undefined);
  });

  test("unknown client at the token endpoint → invalid_client", async () => {
    const r = await tokenRequest(a.base, {
      grant_type: "authorization_code",
      code: "x",
      redirect_uri: "http://127.0.0.1/cb",
      client_id: "no-such-client",
      code_verifier: pkce().verifier,
    });
    assert.equal(r.status, 401);
    assert.equal(r.json.error, "invalid_client");
  });

  test("authorize: unknown client and bad redirect render on the edge's page, never a redirect", async () => {
    const b = new Browser();
    const { challenge } = pkce();
    const unknown = await b.get(
      authorizeUrl(a, { clientId: "no-such-client", redirectUri: "https://evil.example.com/cb", challenge }),
      "https://evil.example.com",
    );
    assert.equal(unknown.status, 400);
    assert.match(unknown.text, /invalid_client/);
    const r = await register(a.base, { redirect_uris: ["http://127.0.0.1/cb"] });
    const bad = await b.get(
      authorizeUrl(a, { clientId: r.json.client_id, redirectUri: "https://evil.example.com/cb", challenge }),
      "https://evil.example.com",
    );
    assert.equal(bad.status, 400);
    assert.match(bad.text, /redirect_uri/);
  });

  test("authorize: plain PKCE and no PKCE are refused (with iss on the error redirect)", async () => {
    const r = await register(a.base, { redirect_uris: ["http://127.0.0.1:40001/cb"] });
    const b = new Browser();
    const base = authorizeUrl(a, {
      clientId: r.json.client_id,
      redirectUri: "http://127.0.0.1:40001/cb",
      challenge: "x".repeat(43),
    });
    const plain = await b.get(
      base.replace("code_challenge_method=S256", "code_challenge_method=plain"),
      "http://127.0.0.1:40001/cb",
    );
    const u1 = new URL(plain.url);
    assert.equal(u1.searchParams.get("error"), "invalid_request");
    assert.equal(u1.searchParams.get("iss"), a.base);
    const none = await b.get(
      base.replace(/&code_challenge=[^&]*/, "").replace("&code_challenge_method=S256", ""),
      "http://127.0.0.1:40001/cb",
    );
    const u2 = new URL(none.url);
    assert.equal(u2.searchParams.get("error"), "invalid_request");
    assert.equal(u2.searchParams.get("iss"), a.base);
  });

  test("consent without its CSRF token is refused, nothing issued; the page is not frameable", async () => {
    const r = await register(a.base, { redirect_uris: ["http://127.0.0.1:40002/cb"] });
    const b = new Browser();
    const { challenge } = pkce();
    let page = await b.get(
      authorizeUrl(a, { clientId: r.json.client_id, redirectUri: "http://127.0.0.1:40002/cb", challenge }),
      "http://127.0.0.1:40002/cb",
    );
    page = await b.post(
      formAction(page)!,
      { uid: formValue(page.text, "uid")!, csrf: formValue(page.text, "csrf")!, key: a.key },
      page.url,
      "http://127.0.0.1:40002/cb",
    );
    assert.match(page.text, /Allow access\?/);
    assert.match(page.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/);
    assert.equal(page.headers.get("x-frame-options"), "DENY");
    const refused = await b.post(
      formAction(page)!,
      { decision: "allow" },
      page.url,
      "http://127.0.0.1:40002/cb",
    );
    assert.equal(refused.status, 403);
    const forged = await b.post(
      formAction(page)!,
      { decision: "allow", csrf: "forged" },
      page.url,
      "http://127.0.0.1:40002/cb",
    );
    assert.equal(forged.status, 403);
    const crossSite = await b.post(
      formAction(page)!,
      { decision: "allow", csrf: formValue(page.text, "csrf")! },
      "https://evil.example.com/",
      "http://127.0.0.1:40002/cb",
    );
    assert.equal(crossSite.status, 403);
  });

  test("sign-in with a wrong API key: shown the form again, nothing issued", async () => {
    const r = await register(a.base, { redirect_uris: ["http://127.0.0.1:40003/cb"] });
    const b = new Browser();
    const { challenge } = pkce();
    const page = await b.get(
      authorizeUrl(a, { clientId: r.json.client_id, redirectUri: "http://127.0.0.1:40003/cb", challenge }),
      "http://127.0.0.1:40003/cb",
    );
    const again = await b.post(
      formAction(page)!,
      { uid: formValue(page.text, "uid")!, csrf: formValue(page.text, "csrf")!, key: "mcpe_bogus_bogus" },
      page.url,
      "http://127.0.0.1:40003/cb",
    );
    assert.equal(again.status, 401);
    assert.match(again.text, /not valid/);
  });

  test("DCR: not JSON → invalid_client_metadata; the refusals are audited", async () => {
    const res = await fetch(`${a.base}/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "[1,",
    });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as any).error, "invalid_client_metadata");
    await a.edge.gw.audit.flush();
    const audit = await a.admin("GET", "/api/audit?limit=1000");
    const refused = (audit.json.records as any[]).filter(
      (r) => r.type === "oauth" && r.decision === "refused",
    );
    const reasons = new Set(refused.map((r) => `${r.method}:${r.detail?.reason}`));
    for (const want of [
      "oauth.registration:invalid_redirect_uri",
      "oauth.registration:invalid_client_metadata",
      "oauth.token:invalid_grant",
      "oauth.consent:csrf",
      "oauth.login:apiKey",
    ])
      assert.ok(reasons.has(want), `${want} in ${[...reasons].join(", ")}`);
  });
});

test("an authorization request without a sign-in gets the sign-in page, no code", async () => {
  const r = await register(a.base, { redirect_uris: ["http://127.0.0.1:40004/cb"] });
  const { challenge } = pkce();
  const page = await new Browser().get(
    authorizeUrl(a, { clientId: r.json.client_id, redirectUri: "http://127.0.0.1:40004/cb", challenge }),
    "http://127.0.0.1:40004/cb",
  );
  assert.equal(page.status, 200);
  assert.match(page.text, /API key/);
});
