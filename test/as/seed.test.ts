/**
 * The seed scenario: one MCP session outlives more than three access-token lifetimes (2 s tokens,
 * no leeway), refreshed through the edge's authorization server by the SDK client itself (its
 * 401 → auth() → refresh → retry), while a long call's stream stays open across the refreshes:
 * no re-initialize (one session id throughout), every progress notification and the final result
 * arrive, every call in between succeeds.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { type AsEdge, sdkLogin, startAsEdge, TestOAuthProvider } from "./helpers.ts";

let a: AsEdge;
before(async () => {
  a = await startAsEdge(
    {},
    { auth: { leeway: "0s", authorizationServer: { enabled: true, tokens: { accessTtl: "2s" } } } },
  );
});
after(async () => {
  await a?.edge.stop();
});

test("one session across > 3 token lifetimes with a stream open: refreshed, nothing lost, no re-initialize", async () => {
  const provider = new TestOAuthProvider({ redirectUrl: "http://127.0.0.1:53124/callback" });
  await sdkLogin(a, provider);
  const issued = new Set<string>([provider.saved!.access_token]);
  const c = new Client({ name: "seed", version: "1.0.0" });
  const t = new StreamableHTTPClientTransport(new URL(a.mcpUrl), { authProvider: provider });
  let initializes = 0;
  const send = t.send.bind(t);
  t.send = async (m, o) => {
    if ("method" in m && m.method === "initialize") initializes++;
    return send(m, o);
  };
  await c.connect(t);
  const session = t.sessionId;
  assert.ok(session);
  const steps = 16; // 16 x 500 ms = 8 s = 4 lifetimes
  const progress: number[] = [];
  const long = c.callTool({ name: "slow", arguments: { steps, delayMs: 500 } }, undefined, {
    onprogress: (p) => progress.push(p.progress),
    timeout: 60_000,
  });
  const started = Date.now();
  let calls = 0;
  while (Date.now() - started < 8000) {
    await sleep(700);
    const r = (await c.callTool({ name: "echo", arguments: { text: `n${calls}` } })) as any;
    assert.equal(r.content[0].text, `n${calls}`);
    calls++;
    issued.add(provider.saved!.access_token);
    assert.equal(t.sessionId, session, "the same session");
  }
  const result = (await long) as any;
  assert.equal(result.content[0].text, `done after ${steps} steps`);
  assert.deepEqual(
    progress,
    Array.from({ length: steps }, (_, i) => i + 1),
    "every progress notification",
  );
  assert.ok(issued.size >= 4, `refreshed through the AS at least 3 times (${issued.size} access tokens)`);
  assert.equal(initializes, 1, "no re-initialize");
  await c.close();
});
