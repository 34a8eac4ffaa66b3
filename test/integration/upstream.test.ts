/**
 * What the upstream sees and what the edge accepts from it: the forwarded-header allow-list, the
 * stdio environment allow-list and stderr logging, shared-process restart after a crash, and a
 * hostile upstream (an untrusted party: OWASP API10:2023).
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { startEdge } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT, spawnFixture } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

/** Pids of this process's children whose command line holds `arg` (Linux /proc). */
function childrenWith(arg: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      // The command name in parentheses may hold spaces: the ppid is the 2nd field after it.
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === process.pid && readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0").includes(arg))
        out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const FIXTURE = `${REPO_ROOT}/test/fixtures/conformance-server.ts`;
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

function firstText(r: unknown): string {
  return ((r as { content: { text?: string }[] }).content[0]?.text ?? "") as string;
}

describe("headers toward the upstream", () => {
  test("only allow-listed client headers reach the upstream; edge-asserted ones are the edge's own", async () => {
    const up = await spawnFixture("test/fixtures/conformance-server.ts");
    cleanups.push(() => up.stop());
    const edge = await startEdge({
      servers: { s: { route: "/mcp", upstream: { urls: [up.url] }, auth: ["none"] } },
    });
    cleanups.push(() => edge.stop());
    const spoofed = {
      "x-mcp-edge-request-id": "spoofed-request-id",
      "x-mcp-edge-identity": "spoofed.identity.jwt",
      "x-forwarded-for": "6.6.6.6",
      forwarded: "for=6.6.6.6",
      cookie: "session=secret-cookie",
      "x-api-key": "secret-key",
      "x-custom": "should-not-pass",
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    };
    const client = new Client({ name: "hdr", version: "1.0.0" });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(edge.url()), { requestInit: { headers: spoofed } }),
    );
    cleanups.push(() => client.close());
    const seen = JSON.parse(
      firstText(await client.callTool({ name: "echo_headers", arguments: {} })),
    ) as Record<string, string>;
    for (const name of ["x-forwarded-for", "forwarded", "cookie", "x-api-key", "x-custom"]) {
      assert.equal(seen[name], undefined, `${name} must not reach the upstream`);
    }
    // The identity header is the edge's own, signed, verifiable against its published JWKS.
    const identity = seen["x-mcp-edge-identity"] as string;
    assert.notEqual(identity, spoofed["x-mcp-edge-identity"]);
    const jwks = createRemoteJWKSet(new URL(`${edge.gw.baseUrl}/.well-known/mcp-edge/jwks.json`));
    const { payload, protectedHeader } = await jwtVerify(identity, jwks, {
      audience: "s",
      algorithms: ["ES256"],
    });
    assert.equal(protectedHeader.typ, "mcp-edge-identity+jwt");
    assert.equal(payload.sub, "anonymous");
    assert.equal(payload.auth, "none");
    assert.ok(typeof payload.sid === "string", "names the session (as a hash, never the id)");
    assert.notEqual(seen["x-mcp-edge-request-id"], "spoofed-request-id");
    assert.match(seen["x-mcp-edge-request-id"] ?? "", /^[0-9a-f-]{36}$/, "the edge's own request id");
    assert.equal(seen.traceparent, spoofed.traceparent, "trace context passes");
    assert.ok(seen["mcp-session-id"], "the upstream gets its own session id");
    assert.ok(seen["mcp-protocol-version"]);
  });
});

describe("stdio upstreams", () => {
  test("the child gets only inheritEnv + env; its stderr lands in the edge log", async () => {
    process.env.MCP_EDGE_TEST_SECRET = "do-not-leak";
    const edge = await startEdge({
      log: { level: "info" },
      servers: {
        s: {
          route: "/mcp",
          upstream: {
            stdio: {
              command: "/bin/sh",
              args: ["-c", `echo "boot line on stderr" >&2; exec "${NODE_BIN}" "${FIXTURE}" --stdio`],
              env: { FROM_CONFIG: "yes" },
              inheritEnv: ["PATH"],
            },
          },
          auth: ["none"],
        },
      },
    });
    cleanups.push(() => edge.stop());
    const client = new Client({ name: "env", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(edge.url())));
    cleanups.push(() => client.close());
    const keys = JSON.parse(
      firstText(await client.callTool({ name: "env_keys", arguments: {} })),
    ) as string[];
    assert.ok(keys.includes("PATH"));
    assert.ok(keys.includes("FROM_CONFIG"));
    assert.ok(!keys.includes("MCP_EDGE_TEST_SECRET"), "the edge's environment does not leak");
    assert.ok(!keys.includes("HOME"), "not inherited unless listed");
    const line = edge.logs().find((l) => l.includes("boot line on stderr"));
    assert.ok(line, "stderr is logged");
    assert.equal(JSON.parse(line).msg, "stdio upstream stderr");
    delete process.env.MCP_EDGE_TEST_SECRET;
  });

  test("shared mode: a crashed process is restarted and its sessions go on (re-initialized)", async () => {
    const edge = await startEdge({
      servers: {
        s: {
          route: "/mcp",
          upstream: {
            stdio: { command: NODE_BIN, args: [FIXTURE, "--stdio"], mode: "shared", restartBackoff: "100ms" },
          },
          auth: ["none"],
        },
      },
    });
    cleanups.push(() => edge.stop());
    const a = new Client({ name: "a", version: "1.0.0" });
    const b = new Client({ name: "b", version: "1.0.0" });
    await a.connect(new StreamableHTTPClientTransport(new URL(edge.url())));
    await b.connect(new StreamableHTTPClientTransport(new URL(edge.url())));
    cleanups.push(
      () => a.close(),
      () => b.close(),
    );
    const pidA = JSON.parse(firstText(await a.callTool({ name: "whoami", arguments: {} }))).pid;
    const pidB = JSON.parse(firstText(await b.callTool({ name: "whoami", arguments: {} }))).pid;
    assert.equal(pidA, pidB, "one shared process");
    // Earlier tests' edges (stopped after the file) hold fixture processes too: only a child that
    // was not there before the crash is the replacement.
    const before = new Set(childrenWith(FIXTURE));
    assert.ok(before.has(pidA), "the shared process is a child of this process");
    await a.callTool({ name: "crash", arguments: {} }).catch(() => undefined);
    // The edge (in this process) spawns the replacement after its restart backoff.
    await waitFor(() => childrenWith(FIXTURE).some((pid) => !before.has(pid)), {
      what: "a new shared process in place of the crashed one",
    });
    const after = JSON.parse(firstText(await b.callTool({ name: "whoami", arguments: {} })));
    assert.notEqual(after.pid, pidA, "a new process");
    assert.equal(JSON.parse(firstText(await a.callTool({ name: "whoami", arguments: {} }))).pid, after.pid);
  });
});

/** A raw HTTP "MCP server" whose answers the test scripts, to play a hostile upstream. */
async function hostile(
  answer: (msg: { id?: unknown; method?: string }, res: ServerResponse, req: IncomingMessage) => void,
): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (d: Buffer) => {
      body += d.toString();
    });
    req.on("end", () => {
      if (req.method !== "POST") {
        res.writeHead(405).end();
        return;
      }
      const msg = JSON.parse(body) as { id?: unknown; method?: string };
      if (msg.method === "initialize") {
        res.writeHead(200, { "content-type": "application/json", "mcp-session-id": "up-1" });
        res.end(
          JSON.stringify({
            jsonrpc: "2.0",
            id: msg.id,
            result: {
              protocolVersion: "2025-11-25",
              capabilities: { tools: {} },
              serverInfo: { name: "h", version: "1" },
            },
          }),
        );
        return;
      }
      if (msg.id === undefined) {
        res.writeHead(202).end();
        return;
      }
      answer(msg, res, req);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  cleanups.push(() => new Promise((r) => server.close(() => r(undefined))));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`, server };
}

async function session(url: string): Promise<(body: object) => Promise<Response>> {
  const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
  const init = await fetch(url, {
    method: "POST",
    headers,
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "1" } },
    }),
  });
  await init.text();
  const sid = init.headers.get("mcp-session-id") as string;
  return (body) =>
    fetch(url, {
      method: "POST",
      headers: { ...headers, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" },
      body: JSON.stringify(body),
    });
}

describe("a hostile upstream", () => {
  test("a JSON answer to another request id is refused with 502", async () => {
    const up = await hostile((_msg, res) => {
      res.writeHead(200, { "content-type": "application/json", "set-cookie": "evil=1" });
      res.end(JSON.stringify({ jsonrpc: "2.0", id: 999, result: {} }));
    });
    const edge = await startEdge({
      servers: { s: { route: "/mcp", upstream: { urls: [up.url] }, auth: ["none"] } },
    });
    cleanups.push(() => edge.stop());
    const send = await session(edge.url());
    const res = await send({ jsonrpc: "2.0", id: 7, method: "tools/list" });
    assert.equal(res.status, 502);
    assert.equal(res.headers.get("set-cookie"), null, "upstream headers are not passed on");
    const body = (await res.json()) as { id: unknown; error: { data: { code: string } } };
    assert.equal(body.id, 7);
    assert.equal(body.error.data.code, "EDGE_UPSTREAM_BAD_RESPONSE");
  });

  test("on an SSE answer, responses to other ids are dropped and the real one delivered", async () => {
    const up = await hostile((msg, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(
        `data: ${JSON.stringify({ jsonrpc: "2.0", id: "someone-else", result: { leaked: true } })}\n\n`,
      );
      res.end(`data: ${JSON.stringify({ jsonrpc: "2.0", id: msg.id, result: { tools: [] } })}\n\n`);
    });
    const edge = await startEdge({
      servers: { s: { route: "/mcp", upstream: { urls: [up.url] }, auth: ["none"] } },
    });
    cleanups.push(() => edge.stop());
    const send = await session(edge.url());
    const res = await send({ jsonrpc: "2.0", id: 8, method: "tools/list" });
    const text = await res.text();
    assert.doesNotMatch(text, /leaked/);
    assert.match(text, /"id":8/);
  });

  test("invalid JSON from the upstream is a 502, an upstream 4xx passes through byte for byte", async () => {
    const up = await hostile((msg, res) => {
      if (msg.method === "tools/list") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end("{not json");
      } else {
        res.writeHead(418, { "content-type": "text/plain; charset=utf-8" });
        res.end("I'm a teapot: exact bytes");
      }
    });
    const edge = await startEdge({
      servers: { s: { route: "/mcp", upstream: { urls: [up.url] }, auth: ["none"] } },
    });
    cleanups.push(() => edge.stop());
    const send = await session(edge.url());
    assert.equal((await send({ jsonrpc: "2.0", id: 1, method: "tools/list" })).status, 502);
    const teapot = await send({ jsonrpc: "2.0", id: 2, method: "prompts/list" });
    assert.equal(teapot.status, 418);
    assert.equal(teapot.headers.get("content-type"), "text/plain; charset=utf-8");
    assert.equal(await teapot.text(), "I'm a teapot: exact bytes");
  });

  test("an SSE answer that ends without the response becomes a JSON-RPC error for that id", async () => {
    const up = await hostile((_msg, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.end(
        `data: ${JSON.stringify({ jsonrpc: "2.0", method: "notifications/message", params: { level: "info", data: "x" } })}\n\n`,
      );
    });
    const edge = await startEdge({
      servers: { s: { route: "/mcp", upstream: { urls: [up.url] }, auth: ["none"] } },
    });
    cleanups.push(() => edge.stop());
    const send = await session(edge.url());
    const text = await (await send({ jsonrpc: "2.0", id: 3, method: "tools/list" })).text();
    const last = text.trim().split("\n\n").at(-1) ?? "";
    const msg = JSON.parse(
      last
        .split("\n")
        .find((l) => l.startsWith("data: "))
        ?.slice(6) ?? "{}",
    );
    assert.equal(msg.id, 3);
    assert.equal(msg.error.data.code, "EDGE_UPSTREAM_ERROR");
  });
});

describe("stateless era (2026-07-28)", () => {
  test("a client that goes away cancels the upstream request (the edge aborts it)", async () => {
    let upstreamClosed: () => void = () => {};
    const closed = new Promise<void>((r) => {
      upstreamClosed = r;
    });
    const up = await hostile((msg, res, req) => {
      if (msg.method === "tools/list") {
        // The edge's own tools/list before it judges the call: the tool exists.
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            jsonrpc: "2.0",
            id: msg.id,
            result: { tools: [{ name: "slow", inputSchema: {} }] },
          }),
        );
        return;
      }
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(
        `data: ${JSON.stringify({ jsonrpc: "2.0", method: "notifications/progress", params: { progressToken: 1, progress: 1 } })}\n\n`,
      );
      req.socket.on("close", () => upstreamClosed());
    });
    const edge = await startEdge({
      servers: { s: { route: "/mcp", upstream: { urls: [up.url] }, auth: ["none"] } },
    });
    cleanups.push(() => edge.stop());
    const abort = new AbortController();
    const res = await fetch(edge.url(), {
      method: "POST",
      signal: abort.signal,
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": "slow",
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "tools/call",
        params: {
          name: "slow",
          arguments: {},
          _meta: {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
          },
        },
      }),
    });
    assert.equal(res.status, 200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // the first event arrived: the call is running upstream
    abort.abort();
    await closed; // resolves only when the edge closed its upstream connection
  });
});
