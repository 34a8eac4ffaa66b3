/**
 * Framing on message channels: what a client sends is judged by the edge and then reaches the
 * upstream as exactly one line holding exactly the message judged, whatever whitespace or
 * line-breaking characters the client's bytes held. The upstream is a real stdio server process
 * whose reader splits lines as Python's universal newlines and `str.splitlines()` do
 * (test/fixtures/line-splitting-server.ts records every line it reads), in both stdio modes
 * (a process per session, one shared process); the key is limited to the tool `echo`, and each
 * hostile body tries to smuggle a call of `forbidden` past the allow-list and the audit. Also the
 * legacy HTTP+SSE upstream: the bodies POSTed to it are recorded as they arrive.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { AuditRecord } from "../../src/audit/record.ts";
import { LINE_BREAKS } from "../../src/upstream/framing.ts";
import { type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { lastMessage } from "../helpers/mcp.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

const ADMIN_TOKEN = "test-admin-token-framing-0123456789abcdef";
const FIXTURE = path.join(REPO_ROOT, "test/fixtures/line-splitting-server.ts");
const dir = tempDir();
const RECORDS = { session: path.join(dir, "session.jsonl"), shared: path.join(dir, "shared.jsonl") };

/** Bodies the legacy SSE upstream received, in order. */
const legacyBodies: string[] = [];
let legacy: Server;
let legacyUrl: string;
let edge: InProcessEdge;
/** One key per server, each limited to the tool `echo`. */
const keys: Record<string, string> = {};

/**
 * A legacy HTTP+SSE (2024-11-05) server: GET /sse opens the stream and names the POST endpoint;
 * each POST body is recorded byte for byte, then answered on the stream (initialize, tools/call).
 */
function startLegacy(): Promise<void> {
  const streams = new Map<string, (data: string) => void>();
  let next = 1;
  legacy = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    if (req.method === "GET" && url.pathname === "/sse") {
      const id = String(next++);
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
      res.write(`event: endpoint\ndata: /messages?sessionId=${id}\n\n`);
      streams.set(id, (data) => res.write(`event: message\ndata: ${data}\n\n`));
      req.on("close", () => streams.delete(id));
      return;
    }
    if (req.method === "POST" && url.pathname === "/messages") {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        legacyBodies.push(body);
        const send = streams.get(url.searchParams.get("sessionId") ?? "");
        res.writeHead(send ? 202 : 404).end();
        let msg: { id?: unknown; method?: string; params?: { name?: string } };
        try {
          msg = JSON.parse(body);
        } catch {
          return;
        }
        if (msg.id === undefined || !send) return;
        const result =
          msg.method === "initialize"
            ? {
                protocolVersion: "2024-11-05",
                capabilities: { tools: {} },
                serverInfo: { name: "legacy-recorder", version: "1" },
              }
            : msg.method === "tools/list"
              ? { tools: [{ name: "echo", inputSchema: { type: "object" } }] }
              : { content: [{ type: "text", text: `${String(msg.params?.name)} ran` }] };
        send(JSON.stringify({ jsonrpc: "2.0", id: msg.id, result }));
      });
      return;
    }
    res.writeHead(404).end();
  });
  return new Promise((resolve) =>
    legacy.listen(0, "127.0.0.1", () => {
      legacyUrl = `http://127.0.0.1:${(legacy.address() as { port: number }).port}/sse`;
      resolve();
    }),
  );
}

before(async () => {
  await startLegacy();
  const stdio = (mode: "session" | "shared") => ({
    stdio: { command: NODE_BIN, args: [FIXTURE, RECORDS[mode]], mode },
  });
  edge = await startEdge(
    {
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      servers: {
        session: { route: "/session/mcp", upstream: stdio("session"), auth: ["apiKey"] },
        shared: { route: "/shared/mcp", upstream: stdio("shared"), auth: ["apiKey"] },
        legacy: { route: "/legacy/mcp", upstream: { sse: legacyUrl }, auth: ["apiKey"] },
      },
    },
    dir,
  );
  for (const server of ["session", "shared", "legacy"]) {
    const res = await fetch(`${edge.gw.adminUrl}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: `echo-only-${server}`, server, tools: ["echo"] }),
    });
    const json = (await res.json()) as { key: string };
    assert.equal(res.status, 201, JSON.stringify(json));
    keys[server] = json.key;
  }
});

after(async () => {
  await edge?.stop();
  await new Promise<void>((resolve) => legacy?.close(() => resolve()));
});

/** POSTs a body exactly as given (its bytes are the point). */
async function post(route: string, body: string, sessionId?: string) {
  const res = await fetch(`${edge.gw.baseUrl}${route}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      authorization: `Bearer ${keys[route.split("/")[1] as string]}`,
      ...(sessionId ? { "mcp-session-id": sessionId, "mcp-protocol-version": "2025-11-25" } : {}),
    },
    body,
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  return { status: res.status, sessionId: res.headers.get("mcp-session-id"), body: lastMessage(text) };
}

async function open(route: string): Promise<string> {
  const init = {
    jsonrpc: "2.0",
    id: 0,
    method: "initialize",
    params: {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "framing", version: "1" },
    },
  };
  const r = await post(route, JSON.stringify(init));
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const sid = r.sessionId as string;
  assert.equal(
    (await post(route, '{"jsonrpc":"2.0","method":"notifications/initialized"}', sid)).status,
    202,
  );
  // The client lists the tools first, so the edge judges calls from that list without a
  // tools/list of its own: each call below is exactly one message upstream.
  assert.equal((await post(route, '{"jsonrpc":"2.0","id":"list","method":"tools/list"}', sid)).status, 200);
  return sid;
}

interface Seen {
  line: string;
  message: unknown;
}

function seen(file: string): Seen[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Seen);
}

async function auditRecords(): Promise<AuditRecord[]> {
  await edge.gw.audit.flush();
  const res = await fetch(`${edge.gw.adminUrl}/api/audit?limit=1000`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { records: AuditRecord[] }).records;
}

const FORBIDDEN = (id: number) =>
  `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"forbidden","arguments":{}}}`;

let nextId = 100;

/**
 * Bodies the edge accepts as one `tools/call` of `echo`, built around `sep`: the separator as JSON
 * whitespace around a whole second message (a reader splitting on it sees that message alone on
 * its line), and the separator raw inside a string (when JSON allows it there).
 */
function smuggling(sep: string, asWhitespace: boolean): { id: number; body: string }[] {
  const out: { id: number; body: string }[] = [];
  if (asWhitespace) {
    const id = nextId++;
    out.push({
      id,
      body: `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi","pad":${sep}${FORBIDDEN(id + 1000)}${sep}}}}`,
    });
    const id2 = nextId++;
    out.push({
      id: id2,
      body: `${sep}{${sep}"jsonrpc"${sep}:${sep}"2.0"${sep},"id":${id2},"method":"tools/call",${sep}"params":{"name":"echo","arguments":{}}}${sep}`,
    });
  } else {
    const id = nextId++;
    out.push({
      id,
      body: `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"echo","arguments":{"text":"a${sep}${FORBIDDEN(id + 1000).replaceAll('"', '\\"')}${sep}b"}}}`,
    });
  }
  return out;
}

/** Separators JSON allows as whitespace (RFC 8259 §2) and ones it allows only raw inside strings. */
const ACCEPTED: { name: string; sep: string; asWhitespace: boolean }[] = [
  { name: "CR", sep: "\r", asWhitespace: true },
  { name: "CRLF", sep: "\r\n", asWhitespace: true },
  { name: "LF", sep: "\n", asWhitespace: true },
  { name: "CR + tab + space", sep: "\r\t \r", asWhitespace: true },
  { name: "U+2028", sep: "\u2028", asWhitespace: false },
  { name: "U+2029", sep: "\u2029", asWhitespace: false },
  { name: "U+0085", sep: "\u0085", asWhitespace: false },
];

/** Line breaks JSON allows neither as whitespace nor raw in a string: the edge refuses the body. */
const REFUSED: { name: string; body: (id: number) => string }[] = [
  { name: "form feed as whitespace", body: (id) => `{"jsonrpc":"2.0","id":${id},\f"method":"tools/call"}` },
  {
    name: "vertical tab as whitespace",
    body: (id) => `{"jsonrpc":"2.0","id":${id},\v"method":"tools/call"}`,
  },
  {
    name: "raw CR inside a string",
    body: (id) =>
      `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"echo","arguments":{"text":"\r${FORBIDDEN(1).replaceAll('"', '\\"')}"}}}`,
  },
  {
    name: "raw FS (U+001C) inside a string",
    body: (id) =>
      `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"echo","arguments":{"text":"\u001c"}}}`,
  },
];

function callsTo(lines: Seen[], name: string): Seen[] {
  return lines.filter((l) => {
    const m = l.message as { method?: string; params?: { name?: string } } | null;
    return m?.method === "tools/call" && m.params?.name === name;
  });
}

for (const mode of ["session", "shared"] as const) {
  describe(`stdio upstream (${mode} mode), a reader that splits on every line break`, () => {
    const route = `/${mode}/mcp`;
    const file = RECORDS[mode];
    let sid: string;

    before(async () => {
      sid = await open(route);
    });

    test("the allow-list holds: forbidden is refused at the edge and never reaches the process", async () => {
      const r = await post(route, FORBIDDEN(nextId++), sid);
      assert.equal(r.status, 403, JSON.stringify(r.body));
      assert.equal(callsTo(seen(file), "forbidden").length, 0);
    });

    for (const v of ACCEPTED) {
      test(`${v.name}: one client message is one line upstream, the message judged`, async () => {
        for (const { id, body } of smuggling(v.sep, v.asWhitespace)) {
          const before = seen(file).length;
          const r = await post(route, body, sid);
          assert.equal(r.status, 200, JSON.stringify(r.body));
          assert.deepEqual(r.body.result.content, [{ type: "text", text: "echo ran" }]);
          const lines = seen(file).slice(before);
          assert.equal(lines.length, 1, `the upstream read ${JSON.stringify(lines)}`);
          const [line] = lines as [Seen];
          assert.ok(!LINE_BREAKS.test(line.line), JSON.stringify(line.line));
          const judged = JSON.parse(body) as { id: number };
          assert.equal(judged.id, id);
          // Shared mode renumbers ids for the shared process; everything else is what was judged.
          const received = line.message as { id: unknown };
          assert.deepEqual({ ...received, id }, judged);
          const audit = (await auditRecords()).filter((a) => a.rpcId === String(id) && a.server === mode);
          assert.equal(audit.length, 1, JSON.stringify(audit));
          assert.equal(audit[0]?.target, "echo");
          assert.equal(audit[0]?.decision, "allowed");
        }
        assert.equal(callsTo(seen(file), "forbidden").length, 0, "forbidden never ran");
      });
    }

    for (const v of REFUSED) {
      test(`${v.name}: refused at the edge (400), nothing reaches the process`, async () => {
        const before = seen(file).length;
        const r = await post(route, v.body(nextId++), sid);
        assert.equal(r.status, 400, JSON.stringify(r.body));
        assert.equal(seen(file).length, before);
      });
    }

    test("the audit holds no record of forbidden having run", async () => {
      const ran = (await auditRecords()).filter(
        (a) => a.server === mode && a.target === "forbidden" && a.decision === "allowed",
      );
      assert.deepEqual(ran, []);
    });
  });
}

describe("toward the client: what the edge writes is its own serialization", () => {
  test("a stdio answer holding raw U+2028, U+2029, NEL reaches the client with them escaped, same text", async () => {
    // A key of its own: `say` is not on the echo-only keys' allow-list.
    const res = await fetch(`${edge.gw.adminUrl}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "say-session", server: "session" }),
    });
    const sayKey = ((await res.json()) as { key: string }).key;
    const call = async (body: object, sessionId?: string) => {
      const r = await fetch(`${edge.gw.baseUrl}/session/mcp`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          authorization: `Bearer ${sayKey}`,
          ...(sessionId ? { "mcp-session-id": sessionId, "mcp-protocol-version": "2025-11-25" } : {}),
        },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(15_000),
      });
      return { status: r.status, sessionId: r.headers.get("mcp-session-id"), raw: await r.text() };
    };
    const init = await call({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "say", version: "1" } },
    });
    assert.equal(init.status, 200, init.raw);
    const sid = init.sessionId as string;
    const text = "a\u2028b\u2029c\u0085d";
    const r = await call(
      { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "say", arguments: { text } } },
      sid,
    );
    assert.equal(r.status, 200, r.raw);
    // The upstream wrote them raw (JSON.stringify leaves them); the edge's bytes hold none.
    assert.doesNotMatch(r.raw, /[\u2028\u2029\u0085]/);
    assert.deepEqual(lastMessage(r.raw).result.content, [{ type: "text", text }]);
    const upstreamLine = seen(RECORDS.session).find(
      (l) => (l.message as { params?: { name?: string } } | null)?.params?.name === "say",
    );
    assert.ok(upstreamLine && !LINE_BREAKS.test(upstreamLine.line), "and the request line held none either");
  });
});

describe("legacy HTTP+SSE upstream: each POST body is the edge's serialization", () => {
  test("line-breaking whitespace and raw separators never reach the POST body", async () => {
    const sid = await open("/legacy/mcp");
    for (const v of ACCEPTED) {
      for (const { id, body } of smuggling(v.sep, v.asWhitespace)) {
        const r = await post("/legacy/mcp", body, sid);
        assert.equal(r.status, 200, `${v.name}: ${JSON.stringify(r.body)}`);
        assert.deepEqual(r.body.result.content, [{ type: "text", text: "echo ran" }]);
        // The answer came after the upstream read the POST; other POSTs (notifications) may trail.
        const got = legacyBodies.filter((b) => b.includes(`"id":${id}`));
        assert.equal(got.length, 1, v.name);
        assert.ok(!LINE_BREAKS.test(got[0] as string), `${v.name}: ${JSON.stringify(got[0])}`);
        assert.deepEqual(JSON.parse(got[0] as string), JSON.parse(body));
        const audit = (await auditRecords()).filter((a) => a.rpcId === String(id) && a.server === "legacy");
        assert.equal(audit.length, 1);
        assert.equal(audit[0]?.target, "echo");
      }
    }
    for (const b of legacyBodies) assert.ok(!LINE_BREAKS.test(b), JSON.stringify(b));
    const forbidden = legacyBodies
      .map((b) => JSON.parse(b) as { method?: string; params?: { name?: string } })
      .filter((m) => m.method === "tools/call" && m.params?.name === "forbidden");
    assert.deepEqual(forbidden, [], "each body is one message, and none calls forbidden");
  });
});
