/**
 * Tool names: the tool the edge judges (allow-list, per-tool scopes and limits, audit) is the tool
 * the upstream runs. A `tools/call` of a name the server's `tools/list` does not hold (as the edge
 * last saw it for the session, or the 2026-07-28 authorization context) is refused at the edge and
 * counted against the caller's limits; variants of a name (case, trailing space, zero-width
 * characters, fullwidth forms, Cyrillic look-alikes) never pass as another tool. With no view the
 * edge fetches the list itself; a server whose tools change at run time is followed through
 * `notifications/tools/list_changed`; `tools.enforceList: false` opts a server out. Real SDK
 * upstreams (v1 in the session era and behind the legacy transport, v2 for 2026-07-28) record what
 * reached them; the audit records each refusal.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";
import type { AuditRecord } from "../../src/audit/record.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { lastMessage } from "../helpers/mcp.ts";
import { postAs, type RecordingUpstream, startRecordingUpstream } from "../helpers/recording-upstream.ts";
import { type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const ADMIN_TOKEN = "test-admin-token-tool-names-0123456789ab";
let upstream: RecordingUpstream;
let v2: SpawnedFixture;
let edge: InProcessEdge;
const keys: Record<string, string> = {};

/** Variants of `echo` no upstream may run as `echo` unjudged. */
const VARIANTS: { name: string; code: string }[] = [
  { name: "ECHO", code: "EDGE_TOOL_UNKNOWN" },
  { name: "Echo", code: "EDGE_TOOL_UNKNOWN" },
  { name: "echo ", code: "EDGE_TOOL_NAME_INVALID" },
  { name: " echo", code: "EDGE_TOOL_NAME_INVALID" },
  { name: "echo\t", code: "EDGE_TOOL_NAME_INVALID" },
  { name: "ec\u200bho", code: "EDGE_TOOL_NAME_INVALID" },
  { name: "echo\u200d", code: "EDGE_TOOL_NAME_INVALID" },
  { name: "\u202eecho", code: "EDGE_TOOL_NAME_INVALID" },
  { name: "echo\u0000", code: "EDGE_TOOL_NAME_INVALID" },
  { name: "ｅｃｈｏ", code: "EDGE_TOOL_UNKNOWN" },
  { name: "\u0435cho", code: "EDGE_TOOL_UNKNOWN" }, // Cyrillic е
  { name: "\u0435\u0441h\u043e", code: "EDGE_TOOL_UNKNOWN" }, // Cyrillic е, с, о
  { name: "nonexistent", code: "EDGE_TOOL_UNKNOWN" },
  { name: "constructor", code: "EDGE_TOOL_UNKNOWN" },
  { name: "toString", code: "EDGE_TOOL_UNKNOWN" },
  { name: "__proto__", code: "EDGE_TOOL_UNKNOWN" },
];

before(async () => {
  upstream = await startRecordingUpstream(["echo", "search"]);
  v2 = await spawnFixture("test/fixtures/v2-server.ts");
  const sdk = { urls: [upstream.url] };
  edge = await startEdge({
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    servers: {
      sdk: { route: "/sdk/mcp", upstream: sdk, auth: ["apiKey"], limits: { tools: { search: "2/min" } } },
      // The same server with the opt-out: only the name checks apply.
      open: {
        route: "/open/mcp",
        upstream: sdk,
        auth: ["apiKey"],
        tools: { enforceList: false },
        limits: { tools: { search: "2/min" } },
        scopes: { tools: { admin_tool: ["admin"] } },
      },
      counted: { route: "/counted/mcp", upstream: sdk, auth: ["apiKey"], limits: { key: "4/min" } },
      modern: { route: "/modern/mcp", upstream: { urls: [v2.url] }, auth: ["apiKey"] },
    },
  });
  for (const server of ["sdk", "open", "counted", "modern"]) {
    const res = await fetch(`${edge.gw.adminUrl}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: `key-${server}`, server }),
    });
    assert.equal(res.status, 201);
    keys[server] = ((await res.json()) as { key: string }).key;
  }
});

after(async () => {
  await edge?.stop();
  await upstream?.stop();
  await v2?.stop();
});

async function post(server: string, body: unknown, headers: Record<string, string> = {}, suffix = "") {
  const r = await postAs(
    `${edge.gw.baseUrl}/${server}/mcp${suffix}`,
    keys[server],
    JSON.stringify(body),
    headers,
  );
  return { ...r, body: r.text ? lastMessage(r.text) : undefined };
}

async function openSession(server: string): Promise<Record<string, string>> {
  const r = await post(server, {
    jsonrpc: "2.0",
    id: 0,
    method: "initialize",
    params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "names", version: "1" } },
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const h = { "mcp-session-id": r.sessionId as string, "mcp-protocol-version": "2025-11-25" };
  assert.equal((await post(server, { jsonrpc: "2.0", method: "notifications/initialized" }, h)).status, 202);
  return h;
}

let nextId = 1;
const call = (name: string) => ({
  jsonrpc: "2.0",
  id: nextId++,
  method: "tools/call",
  params: { name, arguments: { text: "hi" } },
});

const upstreamCalls = () => upstream.posts("tools/call").map((m) => (m["params"] as { name: string }).name);

async function auditRecords(): Promise<AuditRecord[]> {
  await edge.gw.audit.flush();
  const res = await fetch(`${edge.gw.adminUrl}/api/audit?limit=1000`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  return ((await res.json()) as { records: AuditRecord[] }).records;
}

describe("session era: only tools the server listed reach it", () => {
  let h: Record<string, string>;
  const refusals = new Map<string, string>();

  before(async () => {
    h = await openSession("sdk");
  });

  test("no tools/list yet: the edge fetches it in the session, then judges; echo runs", async () => {
    const lists = upstream.posts("tools/list").length;
    const r = await post("sdk", call("echo"), h);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.result.content[0].text, "echo: hi");
    const own = upstream.posts("tools/list").slice(lists);
    assert.equal(own.length, 1, "one tools/list of the edge's own");
    assert.match(String(own[0]?.["id"]), /^mcp-edge-tools-/);
    assert.deepEqual(upstream.ran, ["echo"]);
  });

  test("every variant of echo, and names that are no tool, are refused at the edge", async () => {
    const calls = upstreamCalls().length;
    const lists = upstream.posts("tools/list").length;
    for (const v of VARIANTS) {
      const r = await post("sdk", call(v.name), h);
      // The JSON-RPC error a server gives for an unknown tool, in a 200 answer.
      assert.equal(r.status, 200, `${JSON.stringify(v.name)}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error.code, -32602);
      assert.equal(r.body.error.data.code, v.code, JSON.stringify(v.name));
      refusals.set(r.requestId, v.name);
    }
    assert.deepEqual(upstreamCalls().slice(calls), [], "no call reached the upstream");
    assert.equal(upstream.posts("tools/list").length, lists, "the view was fresh: no refetch");
    assert.deepEqual(upstream.ran, ["echo"]);
  });

  test("a tools/call without a string name is refused, not forwarded", async () => {
    const calls = upstream.posts("tools/call").length;
    for (const params of [{}, { name: 7 }, { name: ["echo"] }, { name: null }]) {
      const r = await post("sdk", { jsonrpc: "2.0", id: nextId++, method: "tools/call", params }, h);
      assert.equal(r.status, 200);
      assert.equal(r.body.error.data.code, "EDGE_TOOL_NAME_INVALID");
    }
    assert.equal(upstream.posts("tools/call").length, calls);
  });

  test("the audit records each refusal with the name as sent", async () => {
    const records = await auditRecords();
    for (const [requestId, name] of refusals) {
      const rec = records.find((r) => r.requestId === requestId);
      assert.ok(rec, `a record for ${JSON.stringify(name)}`);
      assert.equal(rec.decision, "refused");
      assert.equal(rec.method, "tools/call");
      // The audit escapes control characters (CWE-117): read its \uXXXX escapes back.
      const target = String(rec.target).replace(/\\u([0-9a-fA-F]{4})/g, (_, hex: string) =>
        String.fromCharCode(Number.parseInt(hex, 16)),
      );
      assert.equal(target, name);
      assert.match(String(rec.code), /^EDGE_TOOL_(UNKNOWN|NAME_INVALID)$/);
    }
  });
});

describe("per-tool limits and the opt-out", () => {
  test("enforceList: false still refuses variants of a configured name; exact names pass to their limit", async () => {
    const h = await openSession("open");
    for (const name of ["SEARCH", "Search", "ｓｅａｒｃｈ", "\u0455earch", "search\u200b", "search "]) {
      const r = await post("open", call(name), h);
      assert.equal(r.status, 200, JSON.stringify(name));
      assert.equal(r.body.error.data.code, "EDGE_TOOL_NAME_INVALID", JSON.stringify(name));
    }
    const before = upstream.ran.length;
    assert.equal((await post("open", call("search"), h)).status, 200);
    assert.equal((await post("open", call("search"), h)).status, 200);
    const third = await post("open", call("search"), h);
    assert.equal(third.status, 429, "search is limited to 2/min, whatever the spelling");
    assert.equal(third.body.error.data.tool, "search");
    assert.deepEqual(upstream.ran.slice(before), ["search", "search"]);
    // The opt-out forwards names the server may not list: the upstream answers for itself. Names
    // of Object.prototype members are names like any other (per-tool scopes are own entries).
    const calls = upstreamCalls().length;
    for (const name of ["nonexistent", "constructor", "toString"]) {
      const r = await post("open", call(name), h);
      assert.equal(r.status, 200, `${name}: ${JSON.stringify(r.body)}`);
      assert.ok(r.body.error || r.body.result?.isError, JSON.stringify(r.body));
    }
    assert.deepEqual(upstreamCalls().slice(calls), ["nonexistent", "constructor", "toString"]);
  });

  test("unknown tools count against the caller's limits", async () => {
    const h = await openSession("counted");
    for (const name of ["nope-1", "ECHO", "nope-3"]) {
      const r = await post("counted", call(name), h);
      assert.equal(r.body.error.data.code, "EDGE_TOOL_UNKNOWN");
    }
    const r = await post("counted", call("echo"), h);
    assert.equal(r.status, 429, "initialize and three refused calls spent the 4/min budget");
    assert.equal(r.body.error.data.limit, "key");
  });
});

describe("a server whose tools change at run time", () => {
  test("list_changed on the session's stream refreshes the edge's view; the new tool runs", async () => {
    const client = new Client({ name: "names-client", version: "1" });
    const changed = new Promise<void>((resolve) =>
      client.setNotificationHandler(ToolListChangedNotificationSchema, async () => resolve()),
    );
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${edge.gw.baseUrl}/sdk/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${keys["sdk"]}` } },
      }),
    );
    try {
      const listed = await client.listTools();
      assert.deepEqual(listed.tools.map((t) => t.name).sort(), ["echo", "search"]);
      const unknown = await client.callTool({ name: "late", arguments: {} }).then(
        () => undefined,
        (err: Error) => err,
      );
      assert.ok(unknown, "late is not listed yet: refused");
      assert.match(String(unknown), /Unknown tool/);
      assert.equal((unknown as { code?: unknown }).code, -32602);
      // The GET stream the client opened carries the server's list_changed through the edge.
      await waitFor(
        async () => {
          await client.ping();
          return true;
        },
        { what: "the session to answer" },
      );
      upstream.addTool("late");
      await changed;
      const lists = upstream.posts("tools/list").length;
      const r = await client.callTool({ name: "late", arguments: { text: "new" } });
      assert.deepEqual(r.content, [{ type: "text", text: "late: new" }]);
      assert.equal(upstream.posts("tools/list").length, lists + 1, "the edge refetched the list once");
    } finally {
      await client.close();
    }
  });
});

describe("legacy HTTP+SSE: the same rule through the legacy session", () => {
  test("ECHO is refused with the view fetched through the legacy session; echo is answered on the stream", async () => {
    const res = await fetch(`${edge.gw.baseUrl}/sdk/mcp/sse`, {
      headers: { accept: "text/event-stream", authorization: `Bearer ${keys["sdk"]}` },
    });
    const reader = res.body!.getReader();
    let text = "";
    const read = async (until: (t: string) => boolean) => {
      while (!until(text)) text += new TextDecoder().decode((await reader.read()).value);
    };
    try {
      await read((t) => t.includes("\n\n"));
      const endpoint = /data: (\S+)/.exec(text)?.[1] as string;
      const q = endpoint.slice(endpoint.indexOf("?"));
      const init = {
        jsonrpc: "2.0",
        id: "i",
        method: "initialize",
        params: {
          protocolVersion: "2024-11-05",
          capabilities: {},
          clientInfo: { name: "old", version: "1" },
        },
      };
      assert.equal((await post("sdk", init, {}, `/messages${q}`)).status, 202);
      await read((t) => t.includes('"id":"i"'));
      assert.equal(
        (await post("sdk", { jsonrpc: "2.0", method: "notifications/initialized" }, {}, `/messages${q}`))
          .status,
        202,
      );
      const calls = upstreamCalls().length;
      const refused = await post("sdk", call("ECHO"), {}, `/messages${q}`);
      assert.equal(refused.status, 200);
      assert.equal(refused.body.error.data.code, "EDGE_TOOL_UNKNOWN");
      const ok = call("echo");
      assert.equal((await post("sdk", ok, {}, `/messages${q}`)).status, 202);
      await read((t) => t.includes("echo: hi"));
      assert.deepEqual(upstreamCalls().slice(calls), ["echo"]);
    } finally {
      await reader.cancel();
    }
  });
});

describe("2026-07-28 (SDK v2 upstream): the view of the authorization context", () => {
  const meta = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": { name: "modern", version: "1" },
  };
  const modern = (name: string) =>
    post(
      "modern",
      { jsonrpc: "2.0", id: nextId++, method: "tools/call", params: { name, arguments: {}, _meta: meta } },
      {
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        // Values that are not plain visible ASCII travel base64-encoded (2026-07-28 transports).
        "mcp-name": /^[\x21-\x7e]+$/.test(name) ? name : `=?base64?${Buffer.from(name).toString("base64")}?=`,
      },
    );

  test("a listed tool runs (the edge fetched the list with the call's _meta); variants are refused", async () => {
    const ok = await modern("test_simple_text");
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.ok(ok.body.result, JSON.stringify(ok.body));
    for (const name of [
      "TEST_SIMPLE_TEXT",
      "test_simple_text ",
      "test_simple_\u200btext",
      "ｔｅｓｔ_simple_text",
    ]) {
      const r = await modern(name);
      assert.equal(r.status, 200, JSON.stringify(name));
      assert.match(r.body.error.data.code, /^EDGE_TOOL_(UNKNOWN|NAME_INVALID)$/);
    }
  });
});
