/**
 * stdio `mode: session` caps, with real spawned stdio servers (the SDK v1 fixture): live processes
 * per principal, per server and over every server of the gateway (503 EDGE_PROCESS_LIMIT with
 * Retry-After), the idle reaper (a later
 * call respawns per `onBackendLoss`), and the initialize limit that is on by default.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { mcpPost } from "../helpers/mcp.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const FIXTURE = `${REPO_ROOT}/test/fixtures/conformance-server.ts`;
let edge: InProcessEdge;
const clients: Client[] = [];

before(async () => {
  const stdio = (extra: Record<string, unknown>) => ({
    stdio: { command: NODE_BIN, args: [FIXTURE, "--stdio"], ...extra },
  });
  edge = await startEdge({
    servers: {
      capped: { route: "/capped/mcp", upstream: stdio({ maxProcessesPerPrincipal: 2 }), auth: ["none"] },
      one: { route: "/one/mcp", upstream: stdio({ maxProcesses: 1 }), auth: ["none"] },
      idle: { route: "/idle/mcp", upstream: stdio({ idleTimeout: "1s" }), auth: ["none"] },
    },
  });
});

after(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  await edge?.stop();
});

async function connect(server: string): Promise<Client> {
  const client = new Client({ name: "stdio-caps", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(edge.url(server))));
  clients.push(client);
  return client;
}

const INIT = {
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "1" } },
};

function pidOf(r: unknown): number {
  return (JSON.parse((r as { content: { text: string }[] }).content[0]?.text ?? "{}") as { pid: number }).pid;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("stdio mode: session caps", () => {
  test("past the principal's cap and the server's cap: 503 EDGE_PROCESS_LIMIT with Retry-After", async () => {
    await connect("capped");
    await connect("capped");
    const third = await mcpPost(edge.url("capped"), INIT);
    assert.equal(third.status, 503);
    assert.ok(Number(third.headers.get("retry-after")) > 0);
    assert.equal(third.body.error.data.code, "EDGE_PROCESS_LIMIT");
    assert.equal(third.body.id, 1);

    await connect("one");
    const second = await mcpPost(edge.url("one"), INIT);
    assert.equal(second.status, 503);
    assert.equal(second.body.error.data.code, "EDGE_PROCESS_LIMIT");
  });

  test("an idle process is stopped; the session's next call respawns it", async () => {
    const client = await connect("idle");
    const first = pidOf(await client.callTool({ name: "whoami", arguments: {} }));
    assert.ok(alive(first));
    await waitFor(() => !alive(first), { what: "the idle process to stop", timeout: 15_000 });
    const second = pidOf(await client.callTool({ name: "whoami", arguments: {} }));
    assert.notEqual(second, first);
    assert.ok(alive(second));
  });

  test("initialize is rate limited by default on a route that spawns a process per session", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 31; i++) {
      statuses.push((await mcpPost(edge.url("one"), INIT)).status);
    }
    // 30 per minute per principal: the rest are 429, whatever the process cap answered before.
    assert.equal(statuses.at(-1), 429, statuses.join(","));
  });
});

describe("stdio mode: session, the gateway-wide cap", () => {
  let small: InProcessEdge;
  const mine: Client[] = [];
  before(async () => {
    const stdio = { stdio: { command: NODE_BIN, args: [FIXTURE, "--stdio"] } };
    small = await startEdge({
      limits: { maxStdioProcesses: 2 },
      servers: {
        a: { route: "/a/mcp", upstream: stdio, auth: ["none"] },
        b: { route: "/b/mcp", upstream: stdio, auth: ["none"] },
      },
    });
  });
  after(async () => {
    for (const c of mine) await c.close().catch(() => undefined);
    await small?.stop();
  });

  test("processes of every server count together: past limits.maxStdioProcesses, 503 on any server", async () => {
    const transports: StreamableHTTPClientTransport[] = [];
    for (const server of ["a", "b"]) {
      const client = new Client({ name: "stdio-caps", version: "1.0.0" });
      const transport = new StreamableHTTPClientTransport(new URL(small.url(server)));
      await client.connect(transport);
      mine.push(client);
      transports.push(transport);
    }
    for (const server of ["a", "b"]) {
      const third = await mcpPost(small.url(server), INIT);
      assert.equal(third.status, 503, server);
      assert.ok(Number(third.headers.get("retry-after")) > 0);
      assert.equal(third.body.error.data.code, "EDGE_PROCESS_LIMIT");
      assert.match(third.body.error.message, /limits\.maxStdioProcesses/);
    }
    // A session ending (DELETE) frees its place for any server.
    await transports[0]!.terminateSession();
    await waitFor(async () => (await mcpPost(small.url("b"), INIT)).status === 200, {
      what: "a session on b once one on a has ended",
    });
  });
});
