/**
 * Sessions owned by the edge: they survive an edge SIGKILL + restart, the loss of the upstream
 * instance holding them (reinitialize / expire), and clients that drop mid-stream and resume.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { freePort, spawnEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT, type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const FIXTURE = "test/fixtures/conformance-server.ts";
const DEMO = `${REPO_ROOT}/src/demo/server.ts`;

async function connect(url: string): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  const client = new Client({ name: "sessions-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport);
  return { client, transport };
}

async function whoami(client: Client): Promise<{ instance: string; sessionId: string | null; pid: number }> {
  const r = await client.callTool({ name: "whoami", arguments: {} });
  const content = r.content as { type: string; text: string }[];
  return JSON.parse(content[0]?.text ?? "{}");
}

function text(r: Awaited<ReturnType<Client["callTool"]>>): string {
  return ((r.content as { text?: string }[])[0]?.text ?? "") as string;
}

describe("edge restart (SIGKILL)", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  test("an HTTP-upstream session continues with the same Mcp-Session-Id after SIGKILL and restart", async () => {
    const upstream = await spawnFixture(FIXTURE, ["--instance", "a"]);
    cleanups.push(() => upstream.stop());
    const dir = tempDir();
    const port = await freePort();
    const doc = {
      listen: { host: "127.0.0.1", port },
      servers: { conf: { route: "/mcp", upstream: { urls: [upstream.url] }, auth: ["none"] } },
    };
    let edge = await spawnEdge(doc, dir);
    cleanups.push(() => edge.kill());
    const { client, transport } = await connect(`${edge.baseUrl}/mcp`);
    cleanups.push(() => client.close());
    const before = await whoami(client);
    const sessionId = transport.sessionId;
    assert.ok(sessionId);

    await edge.kill();
    edge = await spawnEdge(doc, dir);
    cleanups.push(() => edge.kill());

    const afterRestart = await whoami(client);
    assert.equal(transport.sessionId, sessionId, "the client keeps its session id");
    assert.equal(afterRestart.sessionId, before.sessionId, "the same upstream session serves it");
    assert.equal(afterRestart.instance, "a");
    const tools = await client.listTools();
    assert.ok(tools.tools.some((t) => t.name === "whoami"));
    await edge.stop();
  });

  test("a stdio-upstream session is re-initialized on a new process after SIGKILL, transparently", async () => {
    const dir = tempDir();
    const port = await freePort();
    const doc = {
      listen: { host: "127.0.0.1", port },
      servers: {
        demo: { route: "/mcp", upstream: { stdio: { command: NODE_BIN, args: [DEMO] } }, auth: ["none"] },
      },
    };
    let edge = await spawnEdge(doc, dir);
    cleanups.push(() => edge.kill());
    const { client, transport } = await connect(`${edge.baseUrl}/mcp`);
    cleanups.push(() => client.close());
    assert.equal(text(await client.callTool({ name: "echo", arguments: { text: "one" } })), "one");
    const sessionId = transport.sessionId;

    await edge.kill();
    edge = await spawnEdge(doc, dir);
    cleanups.push(() => edge.kill());

    assert.equal(text(await client.callTool({ name: "echo", arguments: { text: "two" } })), "two");
    assert.equal(transport.sessionId, sessionId);
    // The log line is written asynchronously by the child: wait for it rather than race it.
    await waitFor(() => /session re-initialized/.test(edge.output()), {
      what: "the log line 'session re-initialized'",
      timeout: 5000,
    });
    await edge.stop();
  });
});

describe("upstream instance loss", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  async function twoInstances(): Promise<[SpawnedFixture, SpawnedFixture]> {
    const a = await spawnFixture(FIXTURE, ["--instance", "a"]);
    const b = await spawnFixture(FIXTURE, ["--instance", "b"]);
    cleanups.push(
      () => a.stop(),
      () => b.stop(),
    );
    return [a, b];
  }

  test("onBackendLoss: reinitialize moves the session to the other instance", async () => {
    const [a, b] = await twoInstances();
    const edge = await startEdge({
      servers: {
        conf: {
          route: "/mcp",
          upstream: { urls: [a.url, b.url], health: { interval: "60s" } },
          auth: ["none"],
          sessions: { onBackendLoss: "reinitialize" },
        },
      },
    });
    cleanups.push(() => edge.stop());
    const { client, transport } = await connect(edge.url());
    cleanups.push(() => client.close());
    const first = await whoami(client);
    const holder = first.instance === "a" ? a : b;
    await holder.stop();

    const second = await whoami(client);
    assert.notEqual(second.instance, first.instance, "served by the surviving instance");
    assert.notEqual(second.sessionId, first.sessionId, "on a new upstream session");
    assert.ok(transport.sessionId, "the client's session id did not change");
    // And it keeps working there.
    assert.equal((await whoami(client)).instance, second.instance);
  });

  test("onBackendLoss: expire answers 404 and ends the session", async () => {
    const [a, b] = await twoInstances();
    const edge = await startEdge({
      servers: {
        conf: {
          route: "/mcp",
          upstream: { urls: [a.url, b.url], health: { interval: "60s" } },
          auth: ["none"],
          sessions: { onBackendLoss: "expire" },
        },
      },
    });
    cleanups.push(() => edge.stop());
    const { client, transport } = await connect(edge.url());
    cleanups.push(() => client.close());
    const first = await whoami(client);
    await (first.instance === "a" ? a : b).stop();

    await assert.rejects(whoami(client), (err: Error & { code?: number }) => {
      assert.equal(err.code, 404);
      return true;
    });
    // The session is gone for good: a raw request with its id is 404 too.
    const res = await fetch(edge.url(), {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-session-id": transport.sessionId as string,
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 9, method: "tools/list" }),
    });
    assert.equal(res.status, 404);
    const body = (await res.json()) as { error: { code: number; data: { code: string } } };
    assert.equal(body.error.code, -32001);
  });
});

/** Minimal SSE reader over a fetch body: yields {id, data} per event. */
async function* sse(body: AsyncIterable<Uint8Array>): AsyncGenerator<{ id?: string; data: string }> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of body) {
    buf += decoder.decode(chunk, { stream: true });
    let idx = buf.indexOf("\n\n");
    while (idx >= 0) {
      const block = buf.slice(0, idx);
      buf = buf.slice(idx + 2);
      let id: string | undefined;
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("id:")) id = line.slice(3).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length > 0 || id) yield { ...(id ? { id } : {}), data: data.join("\n") };
      idx = buf.indexOf("\n\n");
    }
  }
}

describe("stream resumption", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  test("a client that drops mid tool call resumes with Last-Event-ID and gets each remaining event once", async () => {
    const edge = await startEdge({
      servers: {
        demo: { route: "/mcp", upstream: { stdio: { command: NODE_BIN, args: [DEMO] } }, auth: ["none"] },
      },
    });
    cleanups.push(() => edge.stop());
    const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
    const init = await fetch(edge.url(), {
      method: "POST",
      headers,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "raw", version: "1" },
        },
      }),
    });
    const sessionId = init.headers.get("mcp-session-id") as string;
    assert.ok(sessionId);
    await init.text();
    const h = { ...headers, "mcp-session-id": sessionId, "mcp-protocol-version": "2025-11-25" };
    const ack = await fetch(edge.url(), {
      method: "POST",
      headers: h,
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    });
    assert.equal(ack.status, 202);

    const steps = 8;
    const abort = new AbortController();
    const call = await fetch(edge.url(), {
      method: "POST",
      headers: h,
      signal: abort.signal,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: { name: "slow", arguments: { steps, delayMs: 150 }, _meta: { progressToken: "p1" } },
      }),
    });
    assert.equal(call.headers.get("content-type"), "text/event-stream");
    const seen: { id?: string; data: string }[] = [];
    for await (const ev of sse(call.body as unknown as AsyncIterable<Uint8Array>)) {
      seen.push(ev);
      if (seen.filter((e) => e.data).length === 2) break;
    }
    abort.abort(); // the client drops; the call goes on upstream
    const lastId = seen.at(-1)?.id;
    assert.ok(lastId, "events carry ids");
    // Under test: events sent while nobody listens (the upstream steps every 150 ms) are replayed.
    await new Promise((r) => setTimeout(r, 500));

    const resumed = await fetch(edge.url(), {
      method: "GET",
      headers: { accept: "text/event-stream", "mcp-session-id": sessionId, "last-event-id": lastId },
    });
    assert.equal(resumed.status, 200);
    for await (const ev of sse(resumed.body as unknown as AsyncIterable<Uint8Array>)) seen.push(ev);

    const messages = seen.filter((e) => e.data).map((e) => JSON.parse(e.data));
    const progress = messages
      .filter((m) => m.method === "notifications/progress")
      .map((m) => m.params.progress);
    assert.deepEqual(
      progress,
      Array.from({ length: steps }, (_, i) => i + 1),
      "every progress exactly once, in order",
    );
    const results = messages.filter((m) => m.id === 2);
    assert.equal(results.length, 1, "the result exactly once");
    assert.equal(results[0].result.content[0].text, `done after ${steps} steps`);
    const ids = seen.map((e) => e.id).filter(Boolean);
    assert.equal(new Set(ids).size, ids.length, "no event id repeats");
  });

  test("an SDK client gets progress notifications and the result of an SSE tool call", async () => {
    const upstream = await spawnFixture(FIXTURE, ["--instance", "a"]);
    cleanups.push(() => upstream.stop());
    const edge = await startEdge({
      servers: { conf: { route: "/mcp", upstream: { urls: [upstream.url] }, auth: ["none"] } },
    });
    cleanups.push(() => edge.stop());
    const { client } = await connect(edge.url());
    cleanups.push(() => client.close());
    const progress: number[] = [];
    const r = await client.callTool({ name: "test_tool_with_progress", arguments: {} }, undefined, {
      onprogress: (p) => progress.push(p.progress),
    });
    assert.ok(progress.length >= 1);
    assert.ok(Array.isArray(r.content));
  });
});

describe("session ids", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  test("ids are 256-bit random base64url; a client-suggested id on initialize is ignored (no fixation)", async () => {
    // 20 sessions of one principal: above the default process cap per principal.
    const edge = await startEdge({
      servers: {
        demo: {
          route: "/mcp",
          upstream: { stdio: { command: NODE_BIN, args: [DEMO], maxProcessesPerPrincipal: 20 } },
          auth: ["none"],
        },
      },
    });
    cleanups.push(() => edge.stop());
    const ids = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const res = await fetch(edge.url(), {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          "mcp-session-id": "attacker-chosen-session-id",
        },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "initialize",
          params: {
            protocolVersion: "2025-11-25",
            capabilities: {},
            clientInfo: { name: "f", version: "1" },
          },
        }),
      });
      await res.text();
      const id = res.headers.get("mcp-session-id") as string;
      assert.notEqual(id, "attacker-chosen-session-id");
      assert.match(id, /^[A-Za-z0-9_-]{43}$/, "32 random bytes, base64url");
      ids.add(id);
    }
    assert.equal(ids.size, 20);
  });
});
