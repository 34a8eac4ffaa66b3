/**
 * OAuth through the edge with a real issuer (test/helpers/idp.ts: JWKS + jose-signed tokens):
 * a session outlives its tokens, RFC 9728 metadata and challenges, scope step-up, and
 * another principal's token never reaches someone else's session.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { freePort, type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { TestIdp } from "../helpers/idp.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";
import { mcpPost } from "../helpers/mcp.ts";
import { waitFor } from "../helpers/wait.ts";

const DEMO = `${REPO_ROOT}/src/demo/server.ts`;
let idp: TestIdp;
let edge: InProcessEdge;
let stateDir: string;
/** Every token minted for these tests: none may end up in the store or the logs. */
const minted: string[] = [];
let publicUrl: string;
let resource: string;

before(async () => {
  idp = await TestIdp.start();
  const port = await freePort();
  publicUrl = `http://127.0.0.1:${port}`;
  resource = `${publicUrl}/mcp`;
  stateDir = tempDir();
  edge = await startEdge(
    {
      listen: { host: "127.0.0.1", port },
      publicUrl,
      auth: { oauth: [{ issuer: idp.issuer, jwksUri: idp.jwksUri }], leeway: "1s" },
      servers: {
        demo: {
          route: "/mcp",
          upstream: { stdio: { command: NODE_BIN, args: [DEMO] } },
          auth: ["oauth"],
          scopes: { default: ["mcp:tools"], tools: { large: ["mcp:tools", "mcp:bulk"] } },
        },
      },
    },
    stateDir,
  );
});

after(async () => {
  await edge?.stop();
  await idp?.stop();
});

const HEADERS = { "content-type": "application/json", accept: "application/json, text/event-stream" };

async function token(sub: string, lifetimeS: number, scope = "mcp:tools"): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const t = await idp.mint({ sub, aud: resource, scope, iat: now, exp: now + lifetimeS });
  minted.push(t);
  return t;
}

function post(tok: string, body: object, sessionId?: string) {
  return mcpPost(resource, body, { credential: tok, ...(sessionId ? { sessionId } : {}) });
}

async function initSession(tok: string): Promise<string> {
  const init = await post(tok, {
    jsonrpc: "2.0",
    id: 0,
    method: "initialize",
    params: {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "oauth-test", version: "1" },
    },
  });
  assert.equal(init.status, 200, JSON.stringify(init.body));
  const sid = init.headers.get("mcp-session-id") as string;
  await post(tok, { jsonrpc: "2.0", method: "notifications/initialized" }, sid);
  return sid;
}

const echo = (id: number, text: string) => ({
  jsonrpc: "2.0",
  id,
  method: "tools/call",
  params: { name: "echo", arguments: { text } },
});

describe("a session outlives its tokens", () => {
  test("three token expiries in a row, an SSE stream open across them: no event lost, no re-initialize", async () => {
    let tok = await token("alice", 3);
    const sid = await initSession(tok);

    // A long call whose SSE stream stays open across every expiry below.
    const steps = 10;
    const slow = fetch(resource, {
      method: "POST",
      headers: {
        ...HEADERS,
        authorization: `Bearer ${tok}`,
        "mcp-session-id": sid,
        "mcp-protocol-version": "2025-11-25",
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 99,
        method: "tools/call",
        params: { name: "slow", arguments: { steps, delayMs: 1500 }, _meta: { progressToken: "p" } },
      }),
    }).then((r) => r.text());

    // A token of its own for round 1: on a loaded machine the setup above can outlast a 3 s token.
    tok = await token("alice", 3);
    for (let round = 1; round <= 3; round++) {
      assert.equal((await post(tok, echo(round * 10, "still me"), sid)).status, 200);
      // exp is in whole seconds: 3 s of life + 1 s leeway is over after at most 4 s. Asked until
      // refused; any answer but 200 (still valid) or 401 ends the wait and fails below.
      const expired = await waitFor(
        async () => {
          const r = await post(tok, echo(round * 10 + 1, "expired"), sid);
          return r.status === 200 ? undefined : r;
        },
        { what: `round ${round}: the token of 3 s to be refused`, timeout: 6000, interval: 200 },
      );
      assert.equal(expired.status, 401, `round ${round}: the expired token is refused`);
      const challenge = expired.headers.get("www-authenticate") ?? "";
      assert.match(challenge, /error="invalid_token"/);
      assert.match(
        challenge,
        /resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp"/,
      );
      tok = await token("alice", 3); // the client refreshes
      const again = await post(tok, echo(round * 10 + 2, `round ${round}`), sid);
      assert.equal(again.status, 200, `round ${round}: the refreshed token continues the session`);
      assert.equal(again.body.result.content[0].text, `round ${round}`);
    }

    const events = (await slow)
      .split("\n\n")
      .map((block) =>
        block
          .split("\n")
          .find((l) => l.startsWith("data: "))
          ?.slice(6),
      )
      .filter((d): d is string => Boolean(d))
      .map((d) => JSON.parse(d));
    const progress = events
      .filter((m) => m.method === "notifications/progress")
      .map((m) => m.params.progress);
    assert.deepEqual(
      progress,
      Array.from({ length: steps }, (_, i) => i + 1),
      "every progress event, once",
    );
    assert.equal(events.filter((m) => m.id === 99).length, 1, "the result, once");
    assert.ok(!edge.logs().some((l) => l.includes("re-initialized")), "the session was never re-initialized");
  });

  test("another principal's valid token with the same session id gets 404 and changes nothing", async () => {
    const alice = await token("alice", 60);
    const sid = await initSession(alice);
    const mallory = await token("mallory", 60);
    const stolen = await post(mallory, echo(1, "hijack"), sid);
    assert.equal(stolen.status, 404);
    assert.equal(stolen.body.error.code, -32001);
    const del = await fetch(resource, {
      method: "DELETE",
      headers: { authorization: `Bearer ${mallory}`, "mcp-session-id": sid },
    });
    assert.equal(del.status, 404, "nor can it end the session");
    assert.equal((await post(alice, echo(2, "mine"), sid)).status, 200);
  });

  test("a session id alone authenticates nothing", async () => {
    const sid = await initSession(await token("alice", 60));
    const res = await fetch(resource, {
      method: "POST",
      headers: { ...HEADERS, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" },
      body: JSON.stringify(echo(1, "x")),
    });
    assert.equal(res.status, 401);
    assert.doesNotMatch(
      res.headers.get("www-authenticate") ?? "",
      /error=/,
      "no credentials: a bare challenge",
    );
  });
});

describe("resource server metadata and scopes", () => {
  test("RFC 9728 metadata names the resource, the issuer and the scopes", async () => {
    const res = await fetch(`${publicUrl}/.well-known/oauth-protected-resource/mcp`);
    assert.equal(res.status, 200);
    const doc = (await res.json()) as Record<string, unknown>;
    assert.equal(doc.resource, resource);
    assert.deepEqual(doc.authorization_servers, [idp.issuer]);
    assert.deepEqual((doc.scopes_supported as string[]).sort(), ["mcp:bulk", "mcp:tools"]);
  });

  test("a token for another audience is refused", async () => {
    const now = Math.floor(Date.now() / 1000);
    const other = await idp.mint({
      sub: "alice",
      aud: "http://other.example/mcp",
      scope: "mcp:tools",
      exp: now + 60,
    });
    const r = await post(other, { jsonrpc: "2.0", id: 1, method: "initialize", params: {} });
    assert.equal(r.status, 401);
  });

  test("a tool needing more scopes: 403 insufficient_scope naming them; tools/list hides it", async () => {
    const tok = await token("alice", 60, "mcp:tools");
    const sid = await initSession(tok);
    const list = await post(tok, { jsonrpc: "2.0", id: 1, method: "tools/list" }, sid);
    const names = list.body.result.tools.map((t: { name: string }) => t.name);
    assert.ok(names.includes("echo"));
    assert.ok(!names.includes("large"), "a tool the token may not call is not listed");
    const call = await post(
      tok,
      { jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "large", arguments: { kb: 1 } } },
      sid,
    );
    assert.equal(call.status, 403);
    const challenge = call.headers.get("www-authenticate") ?? "";
    assert.match(challenge, /error="insufficient_scope"/);
    assert.match(challenge, /scope="mcp:tools mcp:bulk"/);
    assert.equal(call.body.id, 2);
    // Step-up: a token with the bigger scope continues the same session.
    const bigger = await token("alice", 60, "mcp:tools mcp:bulk");
    const ok = await post(
      bigger,
      { jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "large", arguments: { kb: 1 } } },
      sid,
    );
    assert.equal(ok.status, 200);
  });

  test("a token without the route's default scope is refused every call", async () => {
    const tok = await token("alice", 60, "profile");
    const r = await post(tok, {
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "x", version: "1" } },
    });
    assert.equal(r.status, 403);
    assert.match(r.headers.get("www-authenticate") ?? "", /scope="mcp:tools"/);
  });

  test("the JWKS endpoint going down does not stop verification (last-known-good keys)", async () => {
    const tok = await token("alice", 60);
    const sid = await initSession(tok);
    idp.jwksMode = "down";
    try {
      const fresh = await token("alice", 60); // same key: verifiable with the cached JWKS
      assert.equal((await post(fresh, echo(1, "kept"), sid)).status, 200);
    } finally {
      idp.jwksMode = "up";
    }
  });
});

describe("tokens are secrets", () => {
  test("no token used in these tests is in the store or in any log line", async () => {
    assert.ok(minted.length > 5);
    const logs = edge.logs().join("\n");
    for (const f of readdirSync(stateDir)) {
      const bytes = readFileSync(path.join(stateDir, f));
      for (const t of minted) {
        const signature = t.split(".")[2] as string;
        assert.ok(!bytes.includes(signature), `${f} holds a token`);
        assert.ok(!logs.includes(signature), "a log line holds a token");
      }
    }
  });
});
