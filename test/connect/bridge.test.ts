/**
 * `mcp-edge connect` driven by the official SDK v1 stdio client (StdioClientTransport spawning the
 * bridge as a real child process), toward real servers: server-everything (Streamable HTTP,
 * session era), the SDK v2 fixture in the 2026-07-28 stateless era, and mcp-edge itself with an
 * API key. Also: the server and the edge killed and restarted mid-session, a tools/call in flight
 * when the server dies (answered with an error, not re-sent), a streamed call resumed after the
 * connection is cut, and the bridge leaving no process behind when stdin closes.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import {
  CreateMessageRequestSchema,
  LoggingMessageNotificationSchema,
  type Progress,
} from "@modelcontextprotocol/sdk/types.js";
import { freePort, spawnEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { spawnFixture, type SpawnedFixture } from "../helpers/spawn.ts";
import { startTcpProxy } from "../helpers/tcp-proxy.ts";
import { bridgeClient, startEverything, waitGone } from "./helpers.ts";

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

function textOf(result: unknown): string {
  const content = (result as { content?: Array<{ type: string; text?: string }> }).content ?? [];
  return content.map((c) => c.text ?? "").join("");
}

describe("toward server-everything (Streamable HTTP, session era)", () => {
  test("lists and calls tools; stdin closing ends the bridge with no process left", async () => {
    const everything = await startEverything();
    cleanups.push(() => everything.stop());
    const b = await bridgeClient(everything.url);
    const tools = await b.client.listTools();
    assert.ok(tools.tools.some((t) => t.name === "echo"));
    assert.equal(textOf(await b.client.callTool({ name: "echo", arguments: { message: "hi" } })), "Echo: hi");
    assert.match(textOf(await b.client.callTool({ name: "get-sum", arguments: { a: 2, b: 3 } })), /5/);
    const pid = b.pid as number;
    assert.ok(pid > 0);
    await b.close(); // closes the bridge's stdin
    await waitGone(pid, 5000);
    assert.match(b.stderr(), /connected to .* \(Streamable HTTP, session\)/);
  });

  test("SIGTERM ends the bridge cleanly (the session is closed, no process left)", async () => {
    const everything = await startEverything();
    cleanups.push(() => everything.stop());
    const b = await bridgeClient(everything.url);
    cleanups.push(() => b.close());
    assert.equal(textOf(await b.client.callTool({ name: "echo", arguments: { message: "x" } })), "Echo: x");
    const pid = b.pid as number;
    process.kill(pid, "SIGTERM");
    await waitGone(pid, 5000);
  });

  test("a streamed call survives a cut connection: resumed with Last-Event-ID, every event once", async () => {
    // bridge → TCP proxy (cut here) → mcp-edge → server-everything. The edge keeps the upstream
    // stream and buffers its events, so the stream resumes even though server-everything itself
    // cannot route events of a request whose connection went away.
    const everything = await startEverything();
    cleanups.push(() => everything.stop());
    const edgePort = await freePort();
    const proxy = await startTcpProxy(edgePort);
    cleanups.push(() => proxy.stop());
    const edge = await startEdge({
      listen: { host: "127.0.0.1", port: edgePort },
      // The bridge names the proxy's port in Host; the edge's DNS-rebinding check must accept it.
      security: { allowedHosts: [`127.0.0.1:${proxy.port}`] },
      servers: { demo: { route: "/mcp", upstream: { urls: [everything.url] }, auth: ["none"] } },
    });
    cleanups.push(() => edge.stop());
    cleanups.push(() => proxy.stop());
    const b = await bridgeClient(`http://127.0.0.1:${proxy.port}/mcp`, ["--debug"]);
    cleanups.push(() => b.close());
    // What the desktop side receives, message by message, as it comes off the bridge's stdout. (The
    // SDK client handles a notification a microtask after a response read in the same chunk, so
    // its onprogress can miss the last event; the wire shows what the bridge delivered.)
    const wire: Array<{ method?: string; params?: { progress?: number } }> = [];
    const onmessage = b.transport.onmessage;
    b.transport.onmessage = (m) => {
      wire.push(m as (typeof wire)[number]);
      onmessage?.(m);
    };
    const progress: Progress[] = [];
    let cut = false;
    const call = b.client.callTool(
      { name: "trigger-long-running-operation", arguments: { duration: 3, steps: 6 } },
      undefined,
      {
        timeout: 30_000,
        onprogress: (p) => {
          progress.push(p);
          if (!cut && progress.length === 2) {
            cut = true;
            // Reset every connection mid-stream, refuse new ones for a moment, then come back.
            void proxy.cut().then(() => new Promise((r) => setTimeout(r, 700)).then(() => proxy.restore()));
          }
        },
      },
    );
    const result = await call.catch((err: Error) => {
      throw new Error(`${err.message}\n${b.stderr()}`);
    });
    assert.match(textOf(result), /completed/i);
    assert.ok(cut, "the connection was cut mid-stream");
    assert.deepEqual(
      wire.filter((m) => m.method === "notifications/progress").map((m) => m.params?.progress),
      [1, 2, 3, 4, 5, 6],
      "every progress event arrives exactly once, in order",
    );
    assert.match(b.stderr(), /resuming a stream after event/);
  });

  test("server killed and restarted: the call in flight gets an error (not re-sent), the next calls succeed", async () => {
    const port = await freePort();
    let everything = await startEverything(port);
    cleanups.push(() => everything.stop());
    const b = await bridgeClient(everything.url);
    cleanups.push(() => b.close());
    assert.equal(
      textOf(await b.client.callTool({ name: "echo", arguments: { message: "one" } })),
      "Echo: one",
    );
    const started: Progress[] = [];
    let resolveStarted!: () => void;
    const running = new Promise<void>((r) => {
      resolveStarted = r;
    });
    const inflight = b.client.callTool(
      { name: "trigger-long-running-operation", arguments: { duration: 10, steps: 10 } },
      undefined,
      {
        timeout: 60_000,
        onprogress: (p) => {
          started.push(p);
          resolveStarted();
        },
      },
    );
    await running;
    await everything.stop(0); // SIGTERM then SIGKILL: the server and its sessions are gone
    everything = await startEverything(port);
    await assert.rejects(inflight, (err: Error) => {
      assert.match(err.message, /was not re-sent/);
      return true;
    });
    assert.equal(
      textOf(await b.client.callTool({ name: "echo", arguments: { message: "two" } })),
      "Echo: two",
    );
    const tools = await b.client.listTools();
    assert.ok(tools.tools.length > 0);
    assert.match(b.stderr(), /re-initialized it with the client's initialize/);
  });
});

describe("toward an SDK v2 server in the 2026-07-28 era", () => {
  let v2: SpawnedFixture;
  test("stateless: discover, _meta envelope, Mcp-* headers, input_required answered by the desktop client", async () => {
    v2 = await spawnFixture("test/fixtures/v2-server.ts", ["--modern-only"]);
    cleanups.push(() => v2.stop());
    const b = await bridgeClient(v2.url, [], { capabilities: { sampling: {} }, connect: false });
    cleanups.push(() => b.close());
    const asked: string[] = [];
    b.client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
      asked.push(String((req.params.messages[0]?.content as { text?: string }).text));
      return { model: "m", role: "assistant", content: { type: "text", text: "sampled!" } };
    });
    const logs: string[] = [];
    b.client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
      logs.push(String(n.params.data));
    });
    await b.client.connect(b.transport);
    assert.equal(b.client.getServerVersion()?.name, "v2-fixture");
    const who = JSON.parse(textOf(await b.client.callTool({ name: "whoami", arguments: {} })));
    assert.equal(who.era, "modern");
    assert.equal(who.sessionId, null);
    const sampled = await b.client.callTool({ name: "test_sampling", arguments: { prompt: "a prompt" } });
    assert.equal(textOf(sampled), "LLM response: sampled!");
    assert.deepEqual(asked, ["a prompt"]);
    await b.client.setLoggingLevel("info");
    await b.client.callTool({ name: "test_tool_with_logging", arguments: {} });
    assert.deepEqual(logs, ["Tool execution started", "Tool processing data", "Tool execution completed"]);
    await b.client.ping();
    // resources/read carries its URI in Mcp-Name (the v2 server rejects a missing or unequal one).
    const read = await b.client.readResource({ uri: "test://static-text" });
    assert.ok(read.contents.length > 0);
    assert.match(b.stderr(), /protocol 2026-07-28, stateless/);
  });
});

describe("toward a legacy HTTP+SSE server (2024-11-05)", () => {
  test("the Streamable HTTP initialize is refused: falls back to GET /sse + POST to its endpoint", async () => {
    const legacy = await spawnFixture("test/fixtures/conformance-server.ts", ["--sse"]);
    cleanups.push(() => legacy.stop());
    const b = await bridgeClient(legacy.url);
    cleanups.push(() => b.close());
    assert.match(textOf(await b.client.callTool({ name: "test_simple_text", arguments: {} })), /simple text/);
    assert.ok((await b.client.listTools()).tools.some((t) => t.name === "whoami"));
    assert.match(b.stderr(), /legacy HTTP\+SSE/);
  });
});

describe("toward mcp-edge with an API key", () => {
  const ADMIN = "connect-test-admin-token-0123456789abcdef";

  test("--header with ${ENV}: calls reach the upstream through the edge; the key never on argv", async () => {
    const upstream = await spawnFixture("test/fixtures/conformance-server.ts");
    cleanups.push(() => upstream.stop());
    const edge = await startEdge({
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN },
      servers: { demo: { route: "/mcp", upstream: { urls: [upstream.url] }, auth: ["apiKey"] } },
    });
    cleanups.push(() => edge.stop());
    const key = await createKey(edge.gw.adminUrl, ADMIN);
    const b = await bridgeClient(edge.url(), ["--header", "Authorization: Bearer ${EDGE_KEY}"], {
      env: { EDGE_KEY: key },
    });
    cleanups.push(() => b.close());
    const who = JSON.parse(textOf(await b.client.callTool({ name: "whoami", arguments: {} })));
    assert.equal(who.instance, "default");
    const seen = JSON.parse(textOf(await b.client.callTool({ name: "echo_headers", arguments: {} })));
    assert.equal(seen.authorization, undefined, "the edge never forwards the client's key");
    assert.ok(!b.stderr().includes(key), "the key is not logged");
  });

  test("the edge killed and restarted mid-session: the next calls succeed", async () => {
    const upstream = await spawnFixture("test/fixtures/conformance-server.ts");
    cleanups.push(() => upstream.stop());
    const dir = tempDir();
    const port = await freePort();
    const doc = {
      listen: { host: "127.0.0.1", port },
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN },
      servers: { demo: { route: "/mcp", upstream: { urls: [upstream.url] }, auth: ["apiKey"] } },
    };
    let edge = await spawnEdge(doc, dir);
    cleanups.push(() => edge.kill());
    const key = await createKey(edge.adminUrl, ADMIN);
    const b = await bridgeClient(`${edge.baseUrl}/mcp`, ["--header", "Authorization: Bearer ${EDGE_KEY}"], {
      env: { EDGE_KEY: key },
    });
    cleanups.push(() => b.close());
    assert.match(textOf(await b.client.callTool({ name: "test_simple_text", arguments: {} })), /simple text/);
    await edge.kill(); // SIGKILL: no drain
    edge = await spawnEdge(doc, dir);
    for (let i = 0; i < 3; i++) {
      assert.match(
        textOf(await b.client.callTool({ name: "test_simple_text", arguments: {} })),
        /simple text/,
      );
    }
    assert.ok((await b.client.listTools()).tools.length > 0);
  });
});

async function createKey(adminUrl: string, token: string): Promise<string> {
  const res = await fetch(`${adminUrl}/api/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ name: `connect-${Date.now()}`, server: "demo" }),
  });
  const json = (await res.json()) as { key: string };
  assert.equal(res.status, 201, JSON.stringify(json));
  return json.key;
}
