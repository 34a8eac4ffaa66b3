/**
 * Real clients through the edge, every combination that matters: SDK v1 and SDK v2 Streamable HTTP
 * clients and an SDK v1 legacy HTTP+SSE client, against an HTTP upstream with two instances, a
 * stdio upstream (per-session and shared), a legacy SSE upstream and an SDK v2 (2026-07-28) upstream.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  Client as ClientV2,
  StreamableHTTPClientTransport as StreamableV2,
} from "@modelcontextprotocol/client";
import { Client as ClientV1 } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport as StreamableV1 } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT, type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";

const FIXTURE = "test/fixtures/conformance-server.ts";
const DEMO = `${REPO_ROOT}/src/demo/server.ts`;

interface Target {
  server: string;
  /** A tool to call and a piece of the text it answers. */
  tool: string;
  args: Record<string, unknown>;
  expect: RegExp;
}

const upstreams: SpawnedFixture[] = [];
let edge: InProcessEdge;

const TARGETS: Target[] = [
  { server: "http2", tool: "test_simple_text", args: {}, expect: /test/i },
  { server: "stdio", tool: "echo", args: { text: "hello stdio" }, expect: /hello stdio/ },
  { server: "shared", tool: "echo", args: { text: "hello shared" }, expect: /hello shared/ },
  { server: "sse", tool: "test_simple_text", args: {}, expect: /test/i },
  { server: "v2", tool: "test_simple_text", args: {}, expect: /test/i },
];

before(async () => {
  const a = await spawnFixture(FIXTURE, ["--instance", "a"]);
  const b = await spawnFixture(FIXTURE, ["--instance", "b"]);
  const legacy = await spawnFixture(FIXTURE, ["--sse", "--instance", "legacy"]);
  const v2 = await spawnFixture("test/fixtures/v2-server.ts", ["--instance", "v2"]);
  upstreams.push(a, b, legacy, v2);
  const stdio = { command: NODE_BIN, args: [DEMO] };
  edge = await startEdge({
    servers: {
      http2: { route: "/http2/mcp", upstream: { urls: [a.url, b.url] }, auth: ["none"] },
      stdio: { route: "/stdio/mcp", upstream: { stdio }, auth: ["none"] },
      shared: { route: "/shared/mcp", upstream: { stdio: { ...stdio, mode: "shared" } }, auth: ["none"] },
      sse: { route: "/sse-up/mcp", upstream: { sse: legacy.url }, auth: ["none"] },
      v2: { route: "/v2/mcp", upstream: { urls: [v2.url] }, auth: ["none"] },
    },
  });
});

after(async () => {
  await edge?.stop();
  await Promise.all(upstreams.map((u) => u.stop()));
});

function firstText(r: unknown): string {
  return (((r as { content?: unknown }).content as { text?: string }[] | undefined)?.[0]?.text ??
    "") as string;
}

describe("SDK v1 Streamable HTTP client", () => {
  for (const t of TARGETS) {
    test(`lists and calls tools on the ${t.server} upstream`, async () => {
      const client = new ClientV1({ name: "v1", version: "1.0.0" });
      const transport = new StreamableV1(new URL(edge.url(t.server)));
      await client.connect(transport);
      try {
        assert.ok(transport.sessionId, "the edge issued a session id");
        const tools = await client.listTools();
        assert.ok(
          tools.tools.some((x) => x.name === t.tool),
          `${t.tool} is listed`,
        );
        assert.match(firstText(await client.callTool({ name: t.tool, arguments: t.args })), t.expect);
        await transport.terminateSession();
      } finally {
        await client.close();
      }
    });
  }

  test("new sessions spread over both healthy instances", async () => {
    const seen = new Set<string>();
    const clients: ClientV1[] = [];
    for (let i = 0; i < 4; i++) {
      const client = new ClientV1({ name: "spread", version: "1.0.0" });
      await client.connect(new StreamableV1(new URL(edge.url("http2"))));
      clients.push(client);
      const who = JSON.parse(firstText(await client.callTool({ name: "whoami", arguments: {} })));
      seen.add(who.instance);
    }
    await Promise.all(clients.map((c) => c.close()));
    assert.deepEqual([...seen].sort(), ["a", "b"]);
  });
});

describe("SDK v2 Streamable HTTP client", () => {
  for (const t of TARGETS) {
    test(`lists and calls tools on the ${t.server} upstream`, async () => {
      const client = new ClientV2({ name: "v2", version: "1.0.0" });
      const transport = new StreamableV2(new URL(edge.url(t.server)));
      await client.connect(transport);
      try {
        const tools = await client.listTools();
        assert.ok(
          tools.tools.some((x) => x.name === t.tool),
          `${t.tool} is listed`,
        );
        assert.match(firstText(await client.callTool({ name: t.tool, arguments: t.args })), t.expect);
      } finally {
        await client.close();
      }
    });
  }
});

describe("legacy HTTP+SSE (2024-11-05) client", () => {
  for (const t of TARGETS) {
    test(`lists and calls tools on the ${t.server} upstream through {route}/sse`, async () => {
      const client = new ClientV1({ name: "legacy", version: "1.0.0" });
      const base = edge.url(t.server).replace(/\/mcp$/, "/mcp/sse");
      await client.connect(new SSEClientTransport(new URL(base)));
      try {
        const tools = await client.listTools();
        assert.ok(
          tools.tools.some((x) => x.name === t.tool),
          `${t.tool} is listed`,
        );
        assert.match(firstText(await client.callTool({ name: t.tool, arguments: t.args })), t.expect);
      } finally {
        await client.close();
      }
    });
  }
});

describe("SDK v2 client negotiating the era (versionNegotiation: auto)", () => {
  for (const t of TARGETS) {
    const modern = t.server === "v2";
    test(`${modern ? "speaks 2026-07-28" : "falls back to the session era"} on the ${t.server} upstream`, async () => {
      const client = new ClientV2(
        { name: "v2-auto", version: "1.0.0" },
        { versionNegotiation: { mode: "auto" } },
      );
      await client.connect(new StreamableV2(new URL(edge.url(t.server))));
      try {
        assert.equal(client.getProtocolEra(), modern ? "modern" : "legacy");
        const tools = await client.listTools();
        assert.ok(
          tools.tools.some((x) => x.name === t.tool),
          `${t.tool} is listed`,
        );
        assert.match(firstText(await client.callTool({ name: t.tool, arguments: t.args })), t.expect);
      } finally {
        await client.close();
      }
    });
  }
});
