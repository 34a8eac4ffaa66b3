/**
 * Rate limits end to end: a real edge in process, the
 * conformance fixture over HTTP and the stdio demo server (its `slow` tool) as upstreams, keys made
 * through the admin API. Each server of the edge carries the limits one test is about.
 */
import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, describe, test } from "node:test";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT, type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { mcpPost } from "../helpers/mcp.ts";
import { waitFor } from "../helpers/wait.ts";

const ADMIN_TOKEN = "test-admin-token-ratelimit-0123456789abcdef";
const DEMO = `${REPO_ROOT}/src/demo/server.ts`;
let upstream: SpawnedFixture;
let edge: InProcessEdge;

before(async () => {
  upstream = await spawnFixture("test/fixtures/conformance-server.ts");
  const http = { urls: [upstream.url] };
  edge = await startEdge({
    log: { level: "info" },
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    rateLimits: { authFailures: "5/min" },
    servers: {
      exact: { route: "/exact/mcp", upstream: { urls: [upstream.url] }, limits: { session: "100/min" } },
      kinds: {
        route: "/kinds/mcp",
        upstream: http,
        limits: { key: "20/min", session: "10/min", tools: { test_simple_text: "3/min" } },
      },
      runaway: { route: "/runaway/mcp", upstream: http, limits: { session: "20/min" } },
      tenants: { route: "/tenants/mcp", upstream: http, limits: { tenant: "10/min" } },
      rotate: { route: "/rotate/mcp", upstream: http, limits: { key: "5/min" } },
      churn: { route: "/churn/mcp", upstream: http, limits: { initialize: "3/min" } },
      slow: {
        route: "/slow/mcp",
        upstream: { stdio: { command: NODE_BIN, args: [DEMO] } },
        limits: { concurrency: { session: 2 } },
      },
    },
  });
});

after(async () => {
  await edge?.stop();
  await upstream?.stop();
});

async function api(method: string, p: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${edge.gw.adminUrl}${p}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, json: await res.json() };
}

async function createKey(body: Record<string, unknown>): Promise<{ key: string; id: string }> {
  const r = await api("POST", "/api/keys", body);
  assert.equal(r.status, 201, JSON.stringify(r.json));
  return { key: r.json.key as string, id: r.json.id as string };
}

interface Answer {
  status: number;
  headers: Headers;
  body: any;
}

/** A raw MCP POST; the body is the JSON answer or the last SSE data line. */
function mcp(route: string, key: string | undefined, body: object, sessionId?: string): Promise<Answer> {
  return mcpPost(`${edge.gw.baseUrl}${route}`, body, {
    ...(key ? { credential: key } : {}),
    ...(sessionId ? { sessionId } : {}),
  });
}

const INIT = {
  jsonrpc: "2.0",
  id: 0,
  method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "rl", version: "1" } },
};

/** initialize + notifications/initialized; returns the session id. */
async function open(route: string, key: string): Promise<string> {
  const res = await mcp(route, key, INIT);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const sid = res.headers.get("mcp-session-id");
  assert.ok(sid);
  const note = await mcp(route, key, { jsonrpc: "2.0", method: "notifications/initialized" }, sid);
  assert.equal(note.status, 202);
  return sid;
}

let nextId = 1;
function call(route: string, key: string, sid: string | undefined, tool: string, args: object = {}) {
  return mcp(
    route,
    key,
    { jsonrpc: "2.0", id: nextId++, method: "tools/call", params: { name: tool, arguments: args } },
    sid,
  );
}

function tally(answers: Answer[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const a of answers) out[a.status] = (out[a.status] ?? 0) + 1;
  return out;
}

/** Log lines of first refusals ("rate limit refused a call" at info) for a principal id part. */
function refusalLines(principalPart: string): { limit: string; tool?: string; level: string }[] {
  return edge
    .logs()
    .map(
      (l) =>
        JSON.parse(l) as { msg?: string; principal?: string; limit: string; tool?: string; level: string },
    )
    .filter((r) => r.msg === "rate limit refused a call" && r.principal?.includes(principalPart));
}

describe("counting is atomic", () => {
  test("500 concurrent calls against a limit of 100 admit exactly 100", async () => {
    const { key } = await createKey({ name: "exact", server: "exact" });
    const sid = await open("/exact/mcp", key);
    const answers = await Promise.all(
      Array.from({ length: 500 }, () => call("/exact/mcp", key, sid, "test_simple_text")),
    );
    assert.deepEqual(tally(answers), { 200: 100, 429: 400 });
    for (const a of answers.filter((x) => x.status === 200)) assert.ok(a.body.result, JSON.stringify(a.body));
    for (const a of answers.filter((x) => x.status === 429)) assert.equal(a.body.error.data.limit, "session");
  });
});

describe("limits of each kind", () => {
  test("per-tool limits hold independently of per-key and per-session ones; first refusals are logged", async () => {
    const { key } = await createKey({ name: "kinds", server: "kinds", consumer: "kinds-consumer" });
    const r = "/kinds/mcp";
    const s1 = await open(r, key); // key: 1
    for (let i = 0; i < 3; i++) assert.equal((await call(r, key, s1, "test_simple_text")).status, 200);
    // key: 4, session s1: 3, tool: 3 of 3
    for (let i = 0; i < 3; i++) {
      const refused = await call(r, key, s1, "test_simple_text");
      assert.equal(refused.status, 429);
      assert.equal(refused.body.error.data.limit, "tool");
      assert.equal(refused.body.error.data.tool, "test_simple_text");
    }
    // The refused calls took nothing from the session or the key: 7 more calls fit the session.
    for (let i = 0; i < 7; i++) assert.equal((await call(r, key, s1, "whoami")).status, 200, `call ${i}`);
    const s1Out = await call(r, key, s1, "whoami");
    assert.equal(s1Out.status, 429);
    assert.equal(s1Out.body.error.data.limit, "session");
    // key: 11. Another session of the same key has its own session budget; the key runs out at 20.
    const s2 = await open(r, key); // key: 12
    for (let i = 0; i < 8; i++) assert.equal((await call(r, key, s2, "whoami")).status, 200, `call ${i}`);
    const keyOut = await call(r, key, s2, "whoami");
    assert.equal(keyOut.status, 429);
    assert.equal(keyOut.body.error.data.limit, "key");
    // Notifications are not calls: still accepted, nothing counted.
    assert.equal(
      (await mcp(r, key, { jsonrpc: "2.0", method: "notifications/initialized" }, s2)).status,
      202,
    );
    // The first refusal of each kind is logged at info with the limit that refused it; the repeats
    // of the tool refusal are not (debug).
    const infoLines = () => refusalLines("kinds-consumer").filter((l) => l.level === "info");
    await waitFor(() => infoLines().length >= 3, {
      what: "three refusal lines at info",
      timeout: 2000,
    }).catch(() => undefined);
    const info = infoLines();
    assert.deepEqual(
      info.map((l) => [l.limit, l.tool]),
      [
        ["tool", "test_simple_text"],
        ["session", undefined],
        ["key", undefined],
      ],
    );
  });

  test("a runaway client in a retry loop is held to its session limit; the key's other sessions keep working", async () => {
    const { key } = await createKey({ name: "runaway", server: "runaway" });
    const r = "/runaway/mcp";
    const [runaway, calm] = [await open(r, key), await open(r, key)];
    let stop = false;
    const loopAnswers: Answer[] = [];
    const loop = async () => {
      while (!stop) loopAnswers.push(await call(r, key, runaway, "test_simple_text"));
    };
    const loops = Promise.all(Array.from({ length: 8 }, loop));
    const calmAnswers: Answer[] = [];
    for (let i = 0; i < 15; i++) {
      calmAnswers.push(await call(r, key, calm, "test_simple_text"));
      await new Promise((res) => setTimeout(res, 20)); // under test: the calm session's pace
    }
    stop = true;
    await loops;
    assert.ok(loopAnswers.length >= 200, `the runaway made ${loopAnswers.length} calls`);
    assert.equal(tally(loopAnswers)[200], 20, "the runaway got exactly its session's 20");
    assert.deepEqual(tally(calmAnswers), { 200: 15 }, "the other session was unaffected");
  });

  test("a tenant exhausting its quota leaves another tenant's calls untouched", async () => {
    const acme = (await createKey({ name: "t-acme", server: "tenants", tenant: "acme" })).key;
    const globex = (await createKey({ name: "t-globex", server: "tenants", tenant: "globex" })).key;
    const r = "/tenants/mcp";
    const a = await open(r, acme); // acme: 1
    const acmeAnswers: Answer[] = [];
    for (let i = 0; i < 15; i++) acmeAnswers.push(await call(r, acme, a, "test_simple_text"));
    assert.deepEqual(tally(acmeAnswers), { 200: 9, 429: 6 });
    assert.equal(acmeAnswers.at(-1)?.body.error.data.limit, "tenant");
    // A new acme principal in the same tenant is refused too (even its initialize)...
    const acme2 = (await createKey({ name: "t-acme-2", server: "tenants", tenant: "acme" })).key;
    assert.equal((await mcp(r, acme2, INIT)).status, 429);
    // ...while globex has its whole quota.
    const g = await open(r, globex);
    for (let i = 0; i < 9; i++) assert.equal((await call(r, globex, g, "test_simple_text")).status, 200);
    // The refusal tells acme nothing about globex's counters.
    assert.doesNotMatch(JSON.stringify(acmeAnswers.at(-1)?.body), /globex/);
  });

  test("initialize is limited per principal (session churn), and counts only where it should", async () => {
    const { key } = await createKey({ name: "churn", server: "churn" });
    for (let i = 0; i < 3; i++) assert.equal((await mcp("/churn/mcp", key, INIT)).status, 200);
    const refused = await mcp("/churn/mcp", key, INIT);
    assert.equal(refused.status, 429);
    assert.equal(refused.body.error.data.limit, "initialize");
    assert.equal(refused.body.id, 0, "the JSON-RPC id is echoed");
    // Another principal initializes freely.
    const other = (await createKey({ name: "churn-2", server: "churn" })).key;
    assert.equal((await mcp("/churn/mcp", other, INIT)).status, 200);
  });
});

describe("the 429 answer", () => {
  test("carries Retry-After, RateLimit-Policy, RateLimit and JSON-RPC data; key rotation does not reset the quota", async () => {
    const { key, id } = await createKey({ name: "rot", server: "rotate" });
    const r = "/rotate/mcp";
    const sid = await open(r, key); // 1 of 5
    for (let i = 0; i < 4; i++) assert.equal((await call(r, key, sid, "test_simple_text")).status, 200);
    const refused = await mcp(
      r,
      key,
      {
        jsonrpc: "2.0",
        id: "abc",
        method: "tools/call",
        params: { name: "test_simple_text", arguments: {} },
      },
      sid,
    );
    assert.equal(refused.status, 429);
    const retryAfter = Number(refused.headers.get("retry-after"));
    assert.ok(
      Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60,
      `Retry-After ${retryAfter}`,
    );
    assert.equal(refused.headers.get("ratelimit-policy"), '"key";q=5;w=60');
    assert.equal(refused.headers.get("ratelimit"), `"key";r=0;t=${retryAfter}`);
    assert.equal(refused.headers.get("content-type"), "application/json");
    assert.equal(refused.body.jsonrpc, "2.0");
    assert.equal(refused.body.id, "abc");
    assert.equal(refused.body.error.code, -32000);
    assert.match(
      refused.body.error.message,
      /Rate limit "key" exceeded: 5 calls per principal per 60s\. Retry after \d+s\./,
    );
    const data = refused.body.error.data;
    assert.equal(data.code, "EDGE_RATE_LIMITED");
    assert.equal(data.limit, "key");
    assert.equal(data.policy, '"key";q=5;w=60');
    assert.ok(data.retryAfterMs > 0 && data.retryAfterMs <= 60_000);
    assert.ok(Math.ceil(data.retryAfterMs / 1000) === retryAfter);
    assert.equal("tool" in data, false);

    // Rotate: the new key is the same consumer, so the same quota, already spent.
    const rotated = await api("POST", `/api/keys/${id}/rotate`, { grace: "1h" });
    assert.equal(rotated.status, 201, JSON.stringify(rotated.json));
    const newKey = rotated.json.key as string;
    const again = await call(r, newKey, sid, "test_simple_text");
    assert.equal(again.status, 429, "the same session, the new key: still over");
    assert.equal(again.body.error.data.limit, "key");
    assert.equal((await mcp(r, newKey, INIT)).status, 429, "a fresh session of the new key: still over");
  });

  test("in-flight cap per session: excess calls get 429 with limit concurrency; slots come back", async () => {
    const { key } = await createKey({ name: "slow", server: "slow" });
    const r = "/slow/mcp";
    const sid = await open(r, key);
    const answers = await Promise.all(
      Array.from({ length: 5 }, () => call(r, key, sid, "slow", { steps: 1, delayMs: 600 })),
    );
    assert.deepEqual(tally(answers), { 200: 2, 429: 3 });
    const refused = answers.find((a) => a.status === 429) as Answer;
    assert.equal(refused.body.error.data.limit, "concurrency");
    assert.equal(refused.headers.get("ratelimit-policy"), '"concurrency";q=2;qu="concurrent-requests"');
    assert.equal(refused.headers.get("ratelimit"), '"concurrency";r=0');
    assert.equal(refused.headers.get("retry-after"), "1");
    for (const a of answers.filter((x) => x.status === 200))
      assert.match(JSON.stringify(a.body), /done after 1/);
    // Both slots are free again once the calls are over.
    const later = await Promise.all(
      Array.from({ length: 2 }, () => call(r, key, sid, "slow", { steps: 1, delayMs: 50 })),
    );
    assert.deepEqual(tally(later), { 200: 2 });
  });
});

/** A POST from a chosen loopback source address (Linux routes all of 127/8 to lo). */
function postFrom(
  localAddress: string,
  route: string,
  key: string,
): Promise<{ status: number; body: any; headers: Record<string, unknown> }> {
  const url = new URL(`${edge.gw.baseUrl}${route}`);
  const payload = JSON.stringify(INIT);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: "POST",
        localAddress,
        agent: false,
        headers: {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          authorization: `Bearer ${key}`,
          "content-length": Buffer.byteLength(payload),
        },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => {
          const data = text.startsWith("{")
            ? text
            : (text
                .split("\n")
                .filter((l) => l.startsWith("data: "))
                .at(-1)
                ?.slice(6) ?? "");
          resolve({
            status: res.statusCode ?? 0,
            body: data ? JSON.parse(data) : undefined,
            headers: res.headers,
          });
        });
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

describe("failed authentications per address", () => {
  test("an address is limited after N failures; another address with a valid key is unaffected", async () => {
    const { key } = await createKey({ name: "good", server: "exact" });
    const bad = `mcpe_${"z".repeat(12)}_${"Q".repeat(43)}`;
    for (let i = 0; i < 5; i++)
      assert.equal((await postFrom("127.0.0.2", "/exact/mcp", bad)).status, 401, `try ${i}`);
    const blocked = await postFrom("127.0.0.2", "/exact/mcp", bad);
    assert.equal(blocked.status, 429);
    assert.equal(blocked.body.error.data.limit, "authFailures");
    assert.equal(blocked.headers["ratelimit-policy"], '"authFailures";q=5;w=60');
    assert.ok(Number(blocked.headers["retry-after"]) >= 1);
    // Closed: from that address even a valid key is refused before it is checked (no oracle).
    assert.equal((await postFrom("127.0.0.2", "/exact/mcp", key)).status, 429);
    // Other addresses are not affected: a valid key works, and a bad one still gets its 401.
    assert.equal((await postFrom("127.0.0.1", "/exact/mcp", key)).status, 200);
    assert.equal((await postFrom("127.0.0.3", "/exact/mcp", bad)).status, 401);
    // A request without any credential is OAuth discovery, not a failure: nothing counted.
    for (let i = 0; i < 8; i++) assert.equal((await mcp("/exact/mcp", undefined, INIT)).status, 401);
    assert.equal((await postFrom("127.0.0.1", "/exact/mcp", key)).status, 200);
  });
});
