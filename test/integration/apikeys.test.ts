/**
 * API keys end to end: the key-rotation recipe run with curl exactly as documented, rotation under
 * load with zero failed calls, keys stored hashed (a dump of the store and the logs hold no secret),
 * the key threat cases, tool allow-lists, and sessions bound to the key's consumer.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT, type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { mcpPost } from "../helpers/mcp.ts";
import { waitFor } from "../helpers/wait.ts";

const ADMIN_TOKEN = "test-admin-token-0123456789abcdef-0123456789";
let upstream: SpawnedFixture;
let edge: InProcessEdge;
let dir: string;
let admin: string;

before(async () => {
  upstream = await spawnFixture("test/fixtures/conformance-server.ts");
  dir = tempDir();
  edge = await startEdge(
    {
      log: { level: "debug" },
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      servers: {
        github: { route: "/github/mcp", upstream: { urls: [upstream.url] }, auth: ["apiKey"] },
        other: { route: "/other/mcp", upstream: { urls: [upstream.url] }, auth: ["apiKey"] },
      },
    },
    dir,
  );
  admin = edge.gw.adminUrl;
});

after(async () => {
  await edge?.stop();
  await upstream?.stop();
});

async function api(method: string, p: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${admin}${p}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, json: await res.json() };
}

async function createKey(body: Record<string, unknown>): Promise<string> {
  const r = await api("POST", "/api/keys", body);
  assert.equal(r.status, 201, JSON.stringify(r.json));
  return r.json.key as string;
}

/** A raw MCP POST with a key; returns status and parsed body (JSON or the last SSE data). */
function mcp(route: string, key: string | undefined, body: object, sessionId?: string) {
  return mcpPost(`${edge.gw.baseUrl}${route}`, body, {
    ...(key ? { credential: key } : {}),
    ...(sessionId ? { sessionId } : {}),
  });
}

const INIT = {
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "1" } },
};

describe("the key-rotation recipe, with curl, as written", () => {
  test("create v2, move clients, delete v1: v1 stops working, v2 keeps working", async () => {
    // Asynchronous: the edge runs in this process and must keep answering while curl waits.
    const run = promisify(execFile);
    const curl = async (...args: string[]) =>
      (await run("curl", ["-sS", ...args], { encoding: "utf8" })).stdout;
    const create = async (name: string) =>
      JSON.parse(
        await curl(
          "-X",
          "POST",
          `${admin}/api/keys`,
          "-H",
          `Authorization: Bearer ${ADMIN_TOKEN}`,
          "-H",
          "Content-Type: application/json",
          "-d",
          JSON.stringify({ name, server: "github", expires_in: "30d" }),
        ),
      );
    const v1 = await create("production-v1");
    assert.match(v1.key, /^mcpe_/);
    const v2 = await create("production-v2");
    assert.equal(v2.status, "active");
    assert.ok(Date.parse(v2.expires) - Date.now() > 29 * 86_400_000);
    // Both work during the overlap.
    assert.equal((await mcp("/github/mcp", v1.key, INIT)).status, 200);
    assert.equal((await mcp("/github/mcp", v2.key, INIT)).status, 200);
    const listed = JSON.parse(
      await curl(`${admin}/api/keys?server=github`, "-H", `Authorization: Bearer ${ADMIN_TOKEN}`),
    );
    const names = listed.keys.map((k: { name: string }) => k.name);
    assert.ok(names.includes("production-v1") && names.includes("production-v2"));
    assert.ok(
      listed.keys.every((k: Record<string, unknown>) => !("key" in k) && !("hash" in k)),
      "no secrets listed",
    );
    // DELETE by name, as in the recipe.
    const deleted = JSON.parse(
      await curl(
        "-X",
        "DELETE",
        `${admin}/api/keys/production-v1?server=github`,
        "-H",
        `Authorization: Bearer ${ADMIN_TOKEN}`,
      ),
    );
    assert.equal(deleted.status, "revoked");
    assert.equal((await mcp("/github/mcp", v1.key, INIT)).status, 401);
    assert.equal((await mcp("/github/mcp", v2.key, INIT)).status, 200);
  });

  test("the admin API refuses a missing or wrong admin token", async () => {
    const res = await fetch(`${admin}/api/keys`, { headers: { authorization: "Bearer wrong" } });
    assert.equal(res.status, 401);
    assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer/);
    assert.equal((await fetch(`${admin}/api/keys`)).status, 401);
  });
});

describe("rotation under load", () => {
  test("a client calling tools while its key is rotated and the old one revoked sees zero failures", async () => {
    const r = await api("POST", "/api/keys", { name: "loaded", server: "github" });
    let current = r.json.key as string;
    const client = new Client({ name: "load", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(new URL(`${edge.gw.baseUrl}/github/mcp`), {
      // The client picks up whichever key it was given last, as a deployment rolling a secret does.
      fetch: (url, init) => {
        const headers = new Headers(init?.headers);
        headers.set("authorization", `Bearer ${current}`);
        return fetch(url, { ...init, headers });
      },
    });
    await client.connect(transport);
    const sessionId = transport.sessionId;
    let calls = 0;
    let failures = 0;
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        try {
          await client.callTool({ name: "test_simple_text", arguments: {} });
          calls++;
        } catch {
          failures++;
        }
      }
    })();
    // Each phase (old key, old key after the rotation, new key, new key after the revocation) sees
    // calls answered (or failed) before the next one starts.
    const phase = async (what: string) => {
      const mark = calls + failures;
      await waitFor(() => calls + failures >= mark + 6, { what: `six more calls ${what}`, timeout: 20_000 });
    };
    await phase("with the first key");
    const rotated = await api("POST", `/api/keys/loaded/rotate?server=github`, { grace: "1h" });
    assert.equal(rotated.status, 201);
    const old = current;
    await phase("with the old key after the rotation");
    current = rotated.json.key; // clients move to the new key
    await phase("with the new key");
    assert.equal((await api("DELETE", `/api/keys/${r.json.id}`)).status, 200); // old one revoked
    await phase("after the old key was revoked");
    stop = true;
    await loop;
    assert.ok(calls > 20, `calls made: ${calls}`);
    assert.equal(failures, 0);
    assert.equal(transport.sessionId, sessionId, "the same session throughout: the consumer did not change");
    assert.equal((await mcp("/github/mcp", old, INIT)).status, 401, "the old key is refused afterwards");
    await client.close();
  });
});

describe("keys are secrets", () => {
  test("a dump of the store and every log line hold no key secret; the upstream never sees a key", async () => {
    const key = await createKey({ name: "secret-check", server: "github" });
    const client = new Client({ name: "s", version: "1.0.0" });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${edge.gw.baseUrl}/github/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${key}` } },
      }),
    );
    const seen = JSON.parse(
      ((await client.callTool({ name: "echo_headers", arguments: {} })).content as { text: string }[])[0]
        ?.text ?? "{}",
    );
    assert.equal(seen.authorization, undefined, "the client's Authorization never reaches the upstream");
    assert.equal(seen["x-api-key"], undefined);
    await client.close();
    await edge.gw.keys.store.flush();
    const secret = key.split("_").slice(2).join("_");
    for (const f of readdirSync(dir)) {
      const bytes = readFileSync(path.join(dir, f));
      assert.ok(!bytes.includes(key), `${f} holds the key`);
      assert.ok(!bytes.includes(secret), `${f} holds the key's secret`);
    }
    const logs = edge.logs().join("\n");
    assert.ok(logs.length > 0);
    assert.ok(!logs.includes(secret), "no log line holds the key");
  });
});

describe("key threats: keys", () => {
  test("expired, revoked, unknown, malformed and another server's keys all get the same 401", async () => {
    const expiring = await createKey({ name: "short", server: "github", expires_in: "1s" });
    const revoked = await createKey({ name: "gone", server: "github" });
    await api("DELETE", "/api/keys/gone?server=github");
    const otherServer = await createKey({ name: "for-other", server: "other" });
    await waitFor(async () => (await mcp("/github/mcp", expiring, INIT)).status === 401, {
      what: "the key of 1 s to expire",
      timeout: 5000,
      interval: 100,
    });
    const unknown = `mcpe_${"a".repeat(12)}_${"B".repeat(43)}`;
    const answers = [];
    for (const key of [expiring, revoked, unknown, "mcpe_garbage", otherServer]) {
      const r = await mcp("/github/mcp", key, INIT);
      answers.push({
        status: r.status,
        body: JSON.stringify(r.body),
        challenge: r.headers.get("www-authenticate"),
      });
    }
    for (const a of answers) assert.deepEqual(a, { ...answers[0], body: a.body });
    assert.equal(answers[0]?.status, 401);
    assert.equal(new Set(answers.map((a) => a.body)).size, 1, "the same body for every kind of bad key");
    assert.match(answers[0]?.challenge ?? "", /error="invalid_token"/);
    // No credential at all: 401 without an error code (RFC 6750 §3.1).
    const none = await mcp("/github/mcp", undefined, INIT);
    assert.equal(none.status, 401);
    assert.doesNotMatch(none.headers.get("www-authenticate") ?? "", /error=/);
  });

  test("X-API-Key works too; a key in both headers, or two keys, is a 400", async () => {
    const key = await createKey({ name: "xapikey", server: "github" });
    const viaHeader = await fetch(`${edge.gw.baseUrl}/github/mcp`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "x-api-key": key,
      },
      body: JSON.stringify(INIT),
    });
    assert.equal(viaHeader.status, 200);
    await viaHeader.text();
    const both = await fetch(`${edge.gw.baseUrl}/github/mcp`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "x-api-key": key,
        authorization: `Bearer ${key}`,
      },
      body: JSON.stringify(INIT),
    });
    assert.equal(both.status, 400);
    assert.equal(
      ((await both.json()) as { error: { data: { code: string } } }).error.data.code,
      "EDGE_AUTH_INVALID_REQUEST",
    );
  });

  test("keys revoke NAME revokes every key of that name, the rotated one in its grace included, and says how many", async () => {
    const first = await createKey({ name: "gadget", server: "github" });
    const rotated = await api("POST", "/api/keys/gadget/rotate?server=github", { grace: "24h" });
    assert.equal(rotated.status, 201);
    const second = rotated.json.key as string;
    for (const key of [first, second]) assert.equal((await mcp("/github/mcp", key, INIT)).status, 200);
    // The CLI as a user runs it, against the running edge's admin API.
    const run = promisify(execFile);
    const cli = (...args: string[]) =>
      run(NODE_BIN, [path.join(REPO_ROOT, "src/main.ts"), "keys", ...args, "--url", admin], {
        env: { ...process.env, MCP_EDGE_ADMIN_TOKEN: ADMIN_TOKEN },
      });
    const out = await cli("revoke", "gadget", "--server", "github");
    assert.match(out.stdout, /^revoked 2 keys named gadget \(github\/default\):\n/);
    assert.equal(out.stdout.match(/ now$/gm)?.length, 2, out.stdout);
    for (const key of [first, second]) {
      const r = await mcp("/github/mcp", key, INIT);
      assert.equal(r.status, 401, "every key of the name is revoked");
    }
    const again = await cli("revoke", "gadget", "--server", "github");
    assert.match(again.stdout, /nothing to revoke: every key named gadget is already revoked or expired/);
    // By id: that key alone.
    const a = await createKey({ name: "solo", server: "github" });
    const b = await api("POST", "/api/keys/solo/rotate?server=github", {});
    const byId = await api("DELETE", `/api/keys/${b.json.id as string}`);
    assert.equal(byId.json.revoked_count, 1);
    assert.equal((await mcp("/github/mcp", a, INIT)).status, 200, "the other key of the name still works");
  });

  test("a key for several servers of its tenant (a list, or all): valid on each, refused elsewhere; rotated and revoked by name", async () => {
    const both = await api("POST", "/api/keys", { name: "multi", servers: ["other", "github"] });
    assert.equal(both.status, 201, JSON.stringify(both.json));
    assert.equal(both.json.server, "github,other");
    assert.deepEqual(both.json.servers, ["github", "other"]);
    const all = await api("POST", "/api/keys", { name: "everywhere", servers: "*" });
    assert.equal(all.status, 201, JSON.stringify(all.json));
    const one = await createKey({ name: "only-github", server: "github" });
    for (const route of ["/github/mcp", "/other/mcp"]) {
      assert.equal((await mcp(route, both.json.key, INIT)).status, 200, `list key on ${route}`);
      assert.equal((await mcp(route, all.json.key, INIT)).status, 200, `* key on ${route}`);
    }
    assert.equal((await mcp("/other/mcp", one, INIT)).status, 401, "a one-server key elsewhere");
    // Listed under each server it covers; found by name from either.
    const listed = await api("GET", "/api/keys?server=other");
    const names = (listed.json.keys as { name: string }[]).map((k) => k.name);
    assert.ok(names.includes("multi") && names.includes("everywhere") && !names.includes("only-github"));
    const rotated = await api("POST", "/api/keys/multi/rotate?server=other", { grace: "1h" });
    assert.equal(rotated.status, 201);
    assert.equal(rotated.json.server, "github,other", "rotation keeps the servers");
    // The CLI: a key for every server, as a user creates it.
    const run = promisify(execFile);
    const out = await run(
      NODE_BIN,
      [
        path.join(REPO_ROOT, "src/main.ts"),
        "keys",
        "create",
        "--name",
        "cli-all",
        "--servers",
        "*",
        "--url",
        admin,
      ],
      { env: { ...process.env, MCP_EDGE_ADMIN_TOKEN: ADMIN_TOKEN } },
    );
    assert.match(out.stdout, /^created cli-all \([a-z0-9]{12}\) for \*\/default\n/);
    // An unknown server in the list is refused; server and servers together too.
    assert.equal((await api("POST", "/api/keys", { name: "bad", servers: ["github", "nope"] })).status, 400);
    assert.equal(
      (await api("POST", "/api/keys", { name: "bad", server: "github", servers: "*" })).status,
      400,
    );
    // A name is one key's at a time on every server it covers.
    assert.equal(
      (await api("POST", "/api/keys", { name: "only-github", servers: ["other", "github"] })).status,
      409,
    );
    const revoked = await api("DELETE", "/api/keys/multi?server=github");
    assert.equal(revoked.json.revoked_count, 2, "the rotated key and its successor");
    assert.equal((await mcp("/other/mcp", rotated.json.key, INIT)).status, 401);
  });

  test("revoke with a grace period: the key works until the grace ends", async () => {
    const key = await createKey({ name: "graceful", server: "github" });
    assert.equal((await api("DELETE", "/api/keys/graceful?server=github&grace=1s")).json.status, "revoking");
    assert.equal((await mcp("/github/mcp", key, INIT)).status, 200);
    await waitFor(async () => (await mcp("/github/mcp", key, INIT)).status === 401, {
      what: "the grace of 1 s to end",
      timeout: 5000,
      interval: 100,
    });
  });

  test("last use is recorded per key (batched), so an idle old key is visible", async () => {
    const key = await createKey({ name: "used", server: "github" });
    await createKey({ name: "idle", server: "github" });
    await mcp("/github/mcp", key, INIT);
    const list = (await api("GET", "/api/keys?server=github")).json.keys as {
      name: string;
      last_used: string | null;
    }[];
    assert.ok(list.find((k) => k.name === "used")?.last_used);
    assert.equal(list.find((k) => k.name === "idle")?.last_used, null);
  });
});

describe("keys and sessions", () => {
  test("a session belongs to the key's consumer: another consumer's key with the session id gets 404", async () => {
    const alice = await createKey({ name: "alice-key", server: "github", consumer: "alice" });
    const bob = await createKey({ name: "bob-key", server: "github", consumer: "bob" });
    const init = await mcp("/github/mcp", alice, INIT);
    const sid = init.headers.get("mcp-session-id") as string;
    assert.ok(sid);
    await mcp("/github/mcp", alice, { jsonrpc: "2.0", method: "notifications/initialized" }, sid);
    const stolen = await mcp("/github/mcp", bob, { jsonrpc: "2.0", id: 2, method: "tools/list" }, sid);
    assert.equal(stolen.status, 404);
    const own = await mcp("/github/mcp", alice, { jsonrpc: "2.0", id: 3, method: "tools/list" }, sid);
    assert.equal(own.status, 200, "bob's attempt changed nothing");
    // A second key of the same consumer continues the session (rotation, or two keys of one app).
    const alice2 = await createKey({ name: "alice-key-2", server: "github", consumer: "alice" });
    assert.equal(
      (await mcp("/github/mcp", alice2, { jsonrpc: "2.0", id: 4, method: "tools/list" }, sid)).status,
      200,
    );
  });

  test("a key's tool allow-list: tools/list shows only those tools, a call to another is refused", async () => {
    const key = await createKey({ name: "narrow", server: "github", tools: ["test_simple_text"] });
    const init = await mcp("/github/mcp", key, INIT);
    const sid = init.headers.get("mcp-session-id") as string;
    await mcp("/github/mcp", key, { jsonrpc: "2.0", method: "notifications/initialized" }, sid);
    const list = await mcp("/github/mcp", key, { jsonrpc: "2.0", id: 2, method: "tools/list" }, sid);
    assert.deepEqual(
      list.body.result.tools.map((t: { name: string }) => t.name),
      ["test_simple_text"],
    );
    const refused = await mcp(
      "/github/mcp",
      key,
      { jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "whoami", arguments: {} } },
      sid,
    );
    assert.equal(refused.status, 403);
    assert.equal(refused.body.id, 3);
    assert.equal(refused.body.error.data.code, "EDGE_TOOL_FORBIDDEN");
    const allowed = await mcp(
      "/github/mcp",
      key,
      { jsonrpc: "2.0", id: 4, method: "tools/call", params: { name: "test_simple_text", arguments: {} } },
      sid,
    );
    assert.equal(allowed.status, 200);
  });
});
