/**
 * The message the edge judges is the message the upstream reads: a client body that JSON readers
 * could read two ways (a repeated member name at any depth, `__proto__`, `constructor.prototype`,
 * a lone surrogate, invalid UTF-8) or that is over the `limits.json` bounds (depth, members,
 * elements, string and number length) is refused with 400 and a coded error, and nothing of it
 * reaches the upstream. The upstream is a real SDK v1 server recording every POST body and every
 * tool it runs; the key is limited to the tool `echo`, and each body tries to get `forbidden`
 * run. Every endpoint and era reads bodies the same way: the session era, 2026-07-28 requests, the
 * legacy HTTP+SSE `/messages` endpoint, and a stdio route. The audit has one refused record per
 * body, with the code, and no record of `forbidden`.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { AuditRecord } from "../../src/audit/record.ts";
import type { ErrorCode } from "../../src/errors/codes.ts";
import { type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { lastMessage } from "../helpers/mcp.ts";
import { postAs, type RecordingUpstream, startRecordingUpstream } from "../helpers/recording-upstream.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const ADMIN_TOKEN = "test-admin-token-hostile-json-0123456789";
const dir = tempDir();
const STDIO_RECORD = path.join(dir, "stdio.jsonl");
let upstream: RecordingUpstream;
let edge: InProcessEdge;
const keys: Record<string, string> = {};

before(async () => {
  upstream = await startRecordingUpstream(["echo", "forbidden"]);
  edge = await startEdge(
    {
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      // The defaults, except a string bound small enough to test without megabyte bodies.
      limits: { json: { maxStringLength: 4096 } },
      servers: {
        sdk: { route: "/sdk/mcp", upstream: { urls: [upstream.url] }, auth: ["apiKey"] },
        stdio: {
          route: "/stdio/mcp",
          upstream: {
            stdio: {
              command: NODE_BIN,
              args: [path.join(REPO_ROOT, "test/fixtures/line-splitting-server.ts"), STDIO_RECORD],
            },
          },
          auth: ["apiKey"],
        },
      },
    },
    dir,
  );
  for (const server of ["sdk", "stdio"]) {
    const res = await fetch(`${edge.gw.adminUrl}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: `echo-only-${server}`, server, tools: ["echo"] }),
    });
    assert.equal(res.status, 201);
    keys[server] = ((await res.json()) as { key: string }).key;
  }
});

after(async () => {
  await edge?.stop();
  await upstream?.stop();
});

interface Answer {
  status: number;
  requestId: string;
  sessionId: string | null;
  body: any;
}

async function post(
  server: string,
  body: string | Buffer,
  headers: Record<string, string> = {},
  pathSuffix = "",
): Promise<Answer> {
  const r = await postAs(`${edge.gw.baseUrl}/${server}/mcp${pathSuffix}`, keys[server], body, headers);
  const text = r.text;
  return { ...r, body: text.startsWith("{") || text.includes("data:") ? lastMessage(text) : text };
}

async function openSession(server: string): Promise<string> {
  const init = {
    jsonrpc: "2.0",
    id: 0,
    method: "initialize",
    params: {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "hostile", version: "1" },
    },
  };
  const r = await post(server, JSON.stringify(init));
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const sid = r.sessionId as string;
  const h = { "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" };
  assert.equal((await post(server, '{"jsonrpc":"2.0","method":"notifications/initialized"}', h)).status, 202);
  return sid;
}

async function auditRecords(): Promise<AuditRecord[]> {
  await edge.gw.audit.flush();
  const res = await fetch(`${edge.gw.adminUrl}/api/audit?limit=1000`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { records: AuditRecord[] }).records;
}

const call = (id: number, params: string) =>
  `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":${params}}`;
const nest = (n: number) => `${'{"a":'.repeat(n - 1)}[]${"}".repeat(n - 1)}`;

interface Case {
  name: string;
  body: string | Buffer;
  code: ErrorCode;
  rpc: number;
}

/** Each class, several inputs; each body would get `forbidden` run, or costs the readers more than the bounds. */
const CASES: Case[] = [
  // Duplicates: the edge would judge one reading, a first-match upstream run the other.
  {
    name: "two names",
    body: call(1, '{"name":"echo","name":"forbidden","arguments":{}}'),
    code: "EDGE_JSON_DUPLICATE_MEMBER",
    rpc: -32600,
  },
  {
    name: "two names, the second escaped",
    body: call(1, '{"name":"echo","n\\u0061me":"forbidden"}'),
    code: "EDGE_JSON_DUPLICATE_MEMBER",
    rpc: -32600,
  },
  {
    name: "two methods",
    body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping","params":{"name":"forbidden"}}',
    code: "EDGE_JSON_DUPLICATE_MEMBER",
    rpc: -32600,
  },
  {
    name: "two params",
    body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"params":{"name":"forbidden"}}',
    code: "EDGE_JSON_DUPLICATE_MEMBER",
    rpc: -32600,
  },
  {
    name: "a duplicate deep in params.arguments",
    body: call(1, '{"name":"echo","arguments":{"text":"x","deep":{"list":[{"k":1},{"k":2,"k":3}]}}}'),
    code: "EDGE_JSON_DUPLICATE_MEMBER",
    rpc: -32600,
  },
  {
    name: "two ids",
    body: '{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"echo"}}',
    code: "EDGE_JSON_DUPLICATE_MEMBER",
    rpc: -32600,
  },
  // Prototype members: a reader that assigns members would see a name the edge did not.
  {
    name: "__proto__ holding the name",
    body: call(1, '{"__proto__":{"name":"forbidden"},"arguments":{}}'),
    code: "EDGE_JSON_FORBIDDEN_MEMBER",
    rpc: -32600,
  },
  {
    name: "__proto__ beside the name",
    body: call(1, '{"name":"echo","__proto__":{"name":"forbidden"}}'),
    code: "EDGE_JSON_FORBIDDEN_MEMBER",
    rpc: -32600,
  },
  {
    name: "__proto__ escaped, in arguments",
    body: call(1, '{"name":"echo","arguments":{"\\u005f_proto__":{"isAdmin":true}}}'),
    code: "EDGE_JSON_FORBIDDEN_MEMBER",
    rpc: -32600,
  },
  {
    name: "constructor.prototype in arguments",
    body: call(1, '{"name":"echo","arguments":{"constructor":{"prototype":{"isAdmin":true}}}}'),
    code: "EDGE_JSON_FORBIDDEN_MEMBER",
    rpc: -32600,
  },
  // Bounds (defaults: depth 64, 1000 members, 10 000 elements, 40-character numbers; strings 4096 here).
  {
    name: "depth 65 in arguments",
    body: call(1, `{"name":"echo","arguments":{"x":${nest(62)}}}`),
    code: "EDGE_JSON_LIMIT",
    rpc: -32600,
  },
  {
    name: "depth 10 000",
    body: "[".repeat(10_000) + "]".repeat(10_000),
    code: "EDGE_JSON_LIMIT",
    rpc: -32600,
  },
  {
    name: "an array of 10 001 elements",
    body: call(1, `{"name":"echo","arguments":{"xs":[${"0,".repeat(10_000)}0]}}`),
    code: "EDGE_JSON_LIMIT",
    rpc: -32600,
  },
  {
    name: "an object of 1 001 members",
    body: call(
      1,
      `{"name":"echo","arguments":{${Array.from({ length: 1001 }, (_, i) => `"k${i}":1`).join(",")}}}`,
    ),
    code: "EDGE_JSON_LIMIT",
    rpc: -32600,
  },
  {
    name: "a 41-digit number",
    body: call(1, `{"name":"echo","arguments":{"n":${"9".repeat(41)}}}`),
    code: "EDGE_JSON_LIMIT",
    rpc: -32600,
  },
  {
    name: "a long fraction",
    body: call(1, `{"name":"echo","arguments":{"n":0.${"1".repeat(60)}}}`),
    code: "EDGE_JSON_LIMIT",
    rpc: -32600,
  },
  {
    name: "a number past a double (1e400)",
    body: call(1, '{"name":"echo","arguments":{"n":1e400}}'),
    code: "EDGE_JSON_LIMIT",
    rpc: -32600,
  },
  {
    name: "a 4097-character string",
    body: call(1, `{"name":"echo","arguments":{"text":"${"x".repeat(4097)}"}}`),
    code: "EDGE_JSON_LIMIT",
    rpc: -32600,
  },
  {
    name: "a 4097-character member name",
    body: call(1, `{"name":"echo","arguments":{"${"k".repeat(4097)}":1}}`),
    code: "EDGE_JSON_LIMIT",
    rpc: -32600,
  },
  // Invalid Unicode: lone surrogates in values and in names, escaped or as bytes.
  {
    name: "an escaped lone high surrogate in a value",
    body: call(1, '{"name":"echo","arguments":{"text":"\\ud800"}}'),
    code: "EDGE_INVALID_UNICODE",
    rpc: -32700,
  },
  {
    name: "an escaped lone low surrogate in a name",
    body: call(1, '{"name":"echo","arguments":{"\\udc00":"x"}}'),
    code: "EDGE_INVALID_UNICODE",
    rpc: -32700,
  },
  {
    name: "a high surrogate before a non-surrogate escape",
    body: call(1, '{"name":"ec\\ud800\\u0068o"}'),
    code: "EDGE_INVALID_UNICODE",
    rpc: -32700,
  },
  {
    name: "a surrogate encoded as UTF-8 bytes (CESU)",
    body: Buffer.concat([
      Buffer.from(call(1, '{"name":"echo","arguments":{"text":"')),
      Buffer.from([0xed, 0xa0, 0x80]),
      Buffer.from('"}}'),
    ]),
    code: "EDGE_INVALID_UNICODE",
    rpc: -32700,
  },
  {
    name: "a 0xFF byte",
    body: Buffer.concat([
      Buffer.from(call(1, '{"name":"echo","arguments":{"text":"')),
      Buffer.from([0xff]),
      Buffer.from('"}}'),
    ]),
    code: "EDGE_INVALID_UNICODE",
    rpc: -32700,
  },
  {
    name: "an overlong slash",
    body: Buffer.concat([
      Buffer.from(call(1, '{"name":"echo","arguments":{"text":"')),
      Buffer.from([0xc0, 0xaf]),
      Buffer.from('"}}'),
    ]),
    code: "EDGE_INVALID_UNICODE",
    rpc: -32700,
  },
];

function assertRefused(r: Answer, c: Case): void {
  assert.equal(r.status, 400, `${c.name}: ${JSON.stringify(r.body).slice(0, 300)}`);
  assert.equal(r.body.jsonrpc, "2.0");
  assert.equal(r.body.id, null);
  assert.equal(r.body.error.code, c.rpc, c.name);
  assert.equal(r.body.error.data.code, c.code, c.name);
}

describe("hostile JSON bodies are refused before anything reaches the upstream", () => {
  let sid: string;
  const requestIds = new Map<string, string>();

  before(async () => {
    sid = await openSession("sdk");
  });

  test("session era: each input of each class → 400 with its code; the upstream receives nothing", async () => {
    const received = upstream.bodies.length;
    for (const c of CASES) {
      const r = await post("sdk", c.body, { "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" });
      assertRefused(r, c);
      requestIds.set(r.requestId, c.code);
    }
    assert.equal(upstream.bodies.length, received, "not one body reached the upstream");
    assert.deepEqual(upstream.ran, [], "no tool ran");
  });

  test("2026-07-28 requests: the same refusals", async () => {
    const received = upstream.bodies.length;
    for (const c of CASES) {
      const r = await post("sdk", c.body, {
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": "echo",
      });
      assertRefused(r, c);
    }
    assert.equal(upstream.bodies.length, received);
  });

  test("a 2025-03-26 batch: a duplicate in one element refuses the whole batch", async () => {
    const received = upstream.bodies.length;
    const batch = `[${call(1, '{"name":"echo"}')},${call(2, '{"name":"echo","name":"forbidden"}')}]`;
    const r = await post("sdk", batch, { "mcp-session-id": sid, "mcp-protocol-version": "2025-03-26" });
    assertRefused(r, { name: "batch", body: batch, code: "EDGE_JSON_DUPLICATE_MEMBER", rpc: -32600 });
    assert.equal(upstream.bodies.length, received);
  });

  test("legacy HTTP+SSE /messages endpoint: the same refusals", async () => {
    const res = await fetch(`${edge.gw.baseUrl}/sdk/mcp/sse`, {
      headers: { accept: "text/event-stream", authorization: `Bearer ${keys["sdk"]}` },
    });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    let text = "";
    while (!text.includes("\n\n")) text += new TextDecoder().decode((await reader.read()).value);
    const endpoint = /data: (\S+)/.exec(text)?.[1] as string;
    const query = endpoint.slice(endpoint.indexOf("?"));
    const received = upstream.bodies.length;
    for (const c of CASES.slice(0, 12)) {
      const r = await post("sdk", c.body, {}, `/messages${query}`);
      assertRefused(r, c);
    }
    await reader.cancel();
    assert.equal(upstream.bodies.length, received);
  });

  test("a stdio route: the same refusals; the process reads none of it", async () => {
    const record = () =>
      existsSync(STDIO_RECORD) ? readFileSync(STDIO_RECORD, "utf8").split("\n").filter(Boolean) : [];
    const lines = () => record().length;
    const initialized = () => record().filter((l) => l.includes("notifications/initialized")).length;
    const seen = initialized();
    const stdioSid = await openSession("stdio");
    // The notification's 202 comes when the edge has written it; the process records it after.
    await waitFor(() => initialized() > seen, { what: "the process to record notifications/initialized" });
    const before = lines();
    for (const c of CASES) {
      const r = await post("stdio", c.body, {
        "mcp-session-id": stdioSid,
        "mcp-protocol-version": "2025-11-25",
      });
      assertRefused(r, c);
    }
    assert.equal(lines(), before, "no line reached the process");
  });

  test("the audit: one refused record per body, with its code; none of forbidden", async () => {
    const records = await auditRecords();
    for (const [requestId, code] of requestIds) {
      const mine = records.filter((r) => r.requestId === requestId);
      assert.equal(mine.length, 1, `one record for ${code}`);
      assert.equal(mine[0]?.decision, "refused");
      assert.equal(mine[0]?.code, code);
      assert.equal(mine[0]?.status, 400);
    }
    assert.ok(!records.some((r) => r.target === "forbidden" && r.decision === "allowed"));
  });

  test("what passes is read as the upstream reads it: names like constructor are data, the call runs", async () => {
    const body = call(
      7,
      '{"name":"echo","arguments":{"text":"ok","constructor":"c","toString":"t","prototype":{},"n":12345678901234567890}}',
    );
    const r = await post("sdk", body, { "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.result.content[0].text, "echo: ok");
    assert.equal(upstream.bodies.at(-1), body, "the bytes judged are the bytes forwarded");
    assert.deepEqual(upstream.ran, ["echo"]);
  });
});
