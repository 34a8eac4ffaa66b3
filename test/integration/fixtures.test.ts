/**
 * Proves the test fixtures are what the gateway tests assume:
 * - the SDK v1 conformance fixture passes conformance 0.1.16 (all active scenarios, 40/40) directly;
 * - the SDK v2 fixture completes conformance 0.2.0-alpha.12 runs for both requirement sets
 *   (results are recorded, not asserted to be perfect);
 * - `--instance` is observable, and the legacy SSE and stdio modes work.
 *
 * Run: node_modules/.bin/node --test test/integration/fixtures.test.ts
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  type ConformanceRun,
  countByStatus,
  runConformance016,
  runConformanceRequirements,
  scored,
} from "../helpers/conformance.ts";
import { NODE_BIN, REPO_ROOT, type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";

const V1_FIXTURE = "test/fixtures/conformance-server.ts";
const V2_FIXTURE = "test/fixtures/v2-server.ts";

function localhostUrl(url: string): string {
  const u = new URL(url);
  u.hostname = "localhost";
  return u.toString();
}

function summarize(label: string, run: ConformanceRun): void {
  const failures = run.checks.filter((c) => c.status === "FAILURE").map((c) => `${c.scenario}/${c.id}`);
  console.log(
    `[${label}] exit=${run.exitCode} console=${run.passed} passed/${run.failed} failed ` +
      `checks=${JSON.stringify(countByStatus(run.checks))}` +
      (failures.length ? `\n  failures: ${failures.join(", ")}` : ""),
  );
}

function textOf(result: unknown): string {
  const content = (result as { content?: Array<{ type: string; text?: string }> }).content ?? [];
  return content.find((c) => c.type === "text")?.text ?? "";
}

describe("SDK v1 conformance fixture", () => {
  let fx: SpawnedFixture;
  before(async () => {
    fx = await spawnFixture(V1_FIXTURE, ["--instance", "alpha"]);
  });
  after(async () => {
    await fx?.stop();
  });

  it("prints a 127.0.0.1 LISTENING url", () => {
    assert.match(fx.url, /^http:\/\/127\.0\.0\.1:\d+\/mcp$/);
  });

  it("passes conformance 0.1.16, all active scenarios, 40/40 (via a localhost URL)", async () => {
    const run = await runConformance016(localhostUrl(fx.url));
    summarize("0.1.16 active -> v1 fixture", run);
    assert.equal(run.exitCode, 0, run.stdout.slice(-3000));
    assert.equal(run.passed, 40);
    assert.equal(run.failed, 0);
    const s = scored(run.checks);
    assert.equal(s.length, 40);
    assert.ok(s.every((c) => c.status === "SUCCESS"));
    assert.ok(
      run.checks.some(
        (c) => c.scenario === "dns-rebinding-protection" && c.id === "localhost-host-rebinding-rejected",
      ),
    );
    assert.equal(new Set(run.checks.map((c) => c.scenario)).size, 30);
  });

  it("reports its instance via serverInfo and whoami; unknown session -> 404", async () => {
    const client = new Client({ name: "fixture-test", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(new URL(fx.url));
    await client.connect(transport);
    try {
      assert.equal(client.getServerVersion()?.name, "conformance-fixture:alpha");
      const who = JSON.parse(textOf(await client.callTool({ name: "whoami", arguments: {} })));
      assert.equal(who.instance, "alpha");
      assert.equal(who.sessionId, transport.sessionId);
    } finally {
      await transport.terminateSession();
      await client.close();
    }
    const res = await fetch(fx.url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-session-id": "no-such-session",
        "mcp-protocol-version": "2025-11-25",
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list", params: {} }),
    });
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { error: { code: number } }).error.code, -32001);
  });
});

describe("SDK v1 conformance fixture, legacy HTTP+SSE and stdio", () => {
  it("--sse serves the 2024-11-05 transport", async () => {
    const fx = await spawnFixture(V1_FIXTURE, ["--sse", "--instance", "sse"]);
    const client = new Client({ name: "fixture-test", version: "1.0.0" });
    try {
      assert.match(fx.url, /^http:\/\/127\.0\.0\.1:\d+\/sse$/);
      await client.connect(new SSEClientTransport(new URL(fx.url)));
      assert.equal(
        JSON.parse(textOf(await client.callTool({ name: "whoami", arguments: {} }))).instance,
        "sse",
      );
      assert.equal(
        textOf(await client.callTool({ name: "test_simple_text" })),
        "This is a simple text response for testing.",
      );
    } finally {
      await client.close();
      await fx.stop();
    }
  });

  it("--stdio serves over stdio", async () => {
    const client = new Client({ name: "fixture-test", version: "1.0.0" });
    await client.connect(
      new StdioClientTransport({
        command: NODE_BIN,
        args: [V1_FIXTURE, "--stdio"],
        cwd: REPO_ROOT,
        stderr: "pipe",
      }),
    );
    try {
      const { tools } = await client.listTools();
      assert.ok(tools.some((t) => t.name === "test_sampling"));
    } finally {
      await client.close();
    }
  });
});

describe("SDK v2 fixture (2026-07-28)", () => {
  let fx: SpawnedFixture;
  before(async () => {
    fx = await spawnFixture(V2_FIXTURE, ["--instance", "beta"]);
  });
  after(async () => {
    await fx?.stop();
  });

  for (const requirements of ["2025-11-25", "2026-07-28"] as const) {
    it(`completes conformance 0.2.0-alpha.12 --requirements ${requirements}`, async () => {
      const run = await runConformanceRequirements(localhostUrl(fx.url), requirements);
      summarize(`0.2.0-alpha.12 ${requirements} -> v2 fixture`, run);
      assert.notEqual(run.exitCode, null);
      assert.ok(run.checks.length > 0, "no checks.json files were produced");
      assert.equal(typeof run.passed, "number");
    });
  }
});
