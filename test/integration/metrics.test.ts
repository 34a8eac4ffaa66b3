/**
 * Prometheus /metrics on the admin listener: a
 * real edge in front of the conformance fixture, driven by the MCP SDK client; every figure read
 * back from the scraped page.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { OTHER } from "../../src/observability/metrics.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";

const ADMIN_TOKEN = "metrics-admin-token-0123456789abcdef0123456789";
const METRICS_TOKEN = "metrics-scrape-token-0123456789abcdef012345678";
const CAP = 20;

let upstream: SpawnedFixture;
let edge: InProcessEdge;
let apiKey: string;
const sessionIds: string[] = [];

before(async () => {
  upstream = await spawnFixture("test/fixtures/conformance-server.ts");
  const server = (route: string, extra: Record<string, unknown> = {}) => ({
    route,
    upstream: { urls: [upstream.url] },
    auth: ["none"],
    ...extra,
  });
  edge = await startEdge({
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    metrics: { token: METRICS_TOKEN, maxTools: CAP, maxTenants: 10 },
    servers: {
      open: server("/open/mcp"),
      cap: server("/cap/mcp"),
      keyed: server("/keyed/mcp", { auth: ["apiKey"] }),
      limited: server("/limited/mcp", { limits: { tool: "2/min" } }),
    },
  });
  apiKey = (await edge.gw.keys.create({ name: "metrics-test", server: "keyed", tenant: "acme" })).key;
});

after(async () => {
  await edge?.stop();
  await upstream?.stop();
});

async function connect(server: string, headers: Record<string, string> = {}) {
  const client = new Client({ name: "metrics-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(edge.url(server)), {
    requestInit: { headers },
  });
  await client.connect(transport);
  if (transport.sessionId) sessionIds.push(transport.sessionId);
  return { client, transport };
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The text exposition format, enough of it for these tests (no timestamps, no exemplars). */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    assert.ok(m, `unparseable line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1] as string] = l[2] as string;
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

async function scrape(
  token: string | undefined = METRICS_TOKEN,
): Promise<{ text: string; samples: Sample[] }> {
  const res = await fetch(`${edge.gw.adminUrl}/metrics`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  return { text, samples: parse(text) };
}

/** Sum of the samples of `name` whose labels include `want`. */
function sum(samples: Sample[], name: string, want: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(want).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

describe("GET /metrics", () => {
  test("needs the metrics token when one is configured; the admin token is not it", async () => {
    const url = `${edge.gw.adminUrl}/metrics`;
    assert.equal((await fetch(url)).status, 401);
    assert.equal((await fetch(url, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status, 401);
    assert.equal((await fetch(url, { method: "POST", body: "x" })).status, 405);
    await scrape();
  });

  test("calls are counted by server, method, tool, tenant and outcome", async () => {
    const { client, transport } = await connect("open");
    await client.listTools();
    for (let i = 0; i < 3; i++) await client.callTool({ name: "test_simple_text", arguments: {} });
    await client.callTool({ name: "whoami", arguments: {} });
    const keyed = await connect("keyed", { authorization: `Bearer ${apiKey}` });
    await keyed.client.callTool({ name: "whoami", arguments: {} });
    const { samples } = await scrape();
    const calls = "mcp_edge_calls_total";
    const base = { server: "open", tenant: "", outcome: "ok" };
    assert.equal(sum(samples, calls, { ...base, method: "initialize", tool: "" }), 1);
    assert.equal(sum(samples, calls, { ...base, method: "tools/list", tool: "" }), 1);
    assert.equal(sum(samples, calls, { ...base, method: "tools/call", tool: "test_simple_text" }), 3);
    assert.equal(sum(samples, calls, { ...base, method: "tools/call", tool: "whoami" }), 1);
    assert.equal(sum(samples, calls, { server: "open", method: "tools/call" }), 4);
    // The tenant comes from the credential (the API key's tenant).
    assert.equal(
      sum(samples, calls, {
        server: "keyed",
        method: "tools/call",
        tool: "whoami",
        tenant: "acme",
        outcome: "ok",
      }),
      1,
    );
    await transport.terminateSession();
    await keyed.transport.terminateSession();
    await client.close();
    await keyed.client.close();
  });

  test("edge and upstream latency histograms have samples; the upstream's is within the edge's", async () => {
    const { client, transport } = await connect("open");
    for (let i = 0; i < 2; i++) await client.callTool({ name: "test_simple_text", arguments: {} });
    const { samples } = await scrape();
    const want = { server: "open", method: "tools/call" };
    const edgeCount = sum(samples, "mcp_edge_request_duration_seconds_count", want);
    const upCount = sum(samples, "mcp_edge_upstream_duration_seconds_count", want);
    assert.ok(edgeCount >= 2, `edge count ${edgeCount}`);
    assert.equal(upCount, edgeCount, "every forwarded tools/call has an upstream sample");
    const edgeSum = sum(samples, "mcp_edge_request_duration_seconds_sum", want);
    const upSum = sum(samples, "mcp_edge_upstream_duration_seconds_sum", want);
    assert.ok(upSum > 0 && upSum <= edgeSum, `upstream ${upSum}s within edge ${edgeSum}s`);
    // Cumulative buckets end with +Inf = count.
    assert.equal(
      sum(samples, "mcp_edge_request_duration_seconds_bucket", { ...want, le: "+Inf" }),
      edgeCount,
    );
    await transport.terminateSession();
    await client.close();
  });

  test("the active sessions gauge goes up and down", async () => {
    const active = async () => sum((await scrape()).samples, "mcp_edge_sessions_active", { server: "open" });
    const before = await active();
    const a = await connect("open");
    const b = await connect("open");
    assert.equal(await active(), before + 2);
    await a.transport.terminateSession();
    assert.equal(await active(), before + 1);
    await b.transport.terminateSession();
    assert.equal(await active(), before);
    const { samples } = await scrape();
    assert.ok(sum(samples, "mcp_edge_sessions_started_total", { server: "open" }) >= 2);
    assert.ok(
      sum(samples, "mcp_edge_sessions_ended_total", { server: "open", reason: "deleted by client" }) >= 2,
    );
    await a.client.close();
    await b.client.close();
  });

  test("500 invented tool names: the tool label keeps at most the cap, the rest count as (other)", async () => {
    const { client, transport } = await connect("cap");
    const names = Array.from({ length: 500 }, (_, i) => `invented_${i}`);
    for (let i = 0; i < names.length; i += 50) {
      await Promise.all(
        names.slice(i, i + 50).map((name) => client.callTool({ name, arguments: {} }).catch(() => undefined)),
      );
    }
    const { samples } = await scrape();
    const series = samples.filter(
      (s) =>
        s.name === "mcp_edge_calls_total" && s.labels.server === "cap" && s.labels.method === "tools/call",
    );
    const tools = new Set(series.map((s) => s.labels.tool));
    assert.equal(tools.size, CAP + 1, `tool values: ${[...tools].join(", ")}`);
    assert.ok(tools.has(OTHER));
    // Nothing is lost: every call is counted, under its name or under (other).
    assert.equal(
      series.reduce((a, s) => a + s.value, 0),
      500,
    );
    assert.equal(sum(samples, "mcp_edge_calls_total", { server: "cap", tool: OTHER }), 500 - CAP);
    await transport.terminateSession();
    await client.close();
  });

  test("rate-limit refusals are counted by the limit that refused", async () => {
    const { client, transport } = await connect("limited");
    const results = await Promise.allSettled(
      [0, 1, 2].map(() => client.callTool({ name: "test_simple_text", arguments: {} })),
    );
    assert.equal(results.filter((r) => r.status === "rejected").length, 1);
    const { samples } = await scrape();
    assert.equal(sum(samples, "mcp_edge_rate_limited_total", { server: "limited", limit: "tool" }), 1);
    assert.equal(sum(samples, "mcp_edge_errors_total", { server: "limited", code: "EDGE_RATE_LIMITED" }), 1);
    assert.equal(
      sum(samples, "mcp_edge_calls_total", {
        server: "limited",
        tool: "test_simple_text",
        outcome: "refused",
      }),
      1,
    );
    await transport.terminateSession();
    await client.close();
  });

  test("upstream health per instance, open streams, and gauges other modules register", async () => {
    edge.gw.metrics?.registerGauge(
      "mcp_edge_test_queue_depth",
      "A gauge registered by another module.",
      () => 7,
    );
    edge.gw.metrics?.registerGauge(
      "mcp_edge_test_spool_files",
      "A labelled gauge.",
      async () => [{ labels: { kind: "pending" }, value: 3 }],
      ["kind"],
    );
    assert.throws(() => edge.gw.metrics?.registerGauge("mcp_edge_test_queue_depth", "again", () => 1));
    assert.throws(() => edge.gw.metrics?.registerGauge("queue_depth", "no prefix", () => 1));
    const { samples } = await scrape();
    const host = new URL(upstream.url).host;
    assert.equal(sum(samples, "mcp_edge_upstream_up", { server: "open", instance: host }), 1);
    assert.ok(samples.some((s) => s.name === "mcp_edge_streams_open"));
    assert.equal(sum(samples, "mcp_edge_test_queue_depth"), 7);
    assert.equal(sum(samples, "mcp_edge_test_spool_files", { kind: "pending" }), 3);
    assert.ok(samples.some((s) => s.name === "mcp_edge_process_resident_memory_bytes"));
  });

  test("the page names no session id, key, token or upstream URL", async () => {
    const { text } = await scrape();
    assert.ok(sessionIds.length >= 5);
    for (const id of sessionIds) assert.ok(!text.includes(id), "a session id is on the page");
    for (const secret of [apiKey, apiKey.split("_")[1] as string, ADMIN_TOKEN, METRICS_TOKEN])
      assert.ok(!text.includes(secret), "a credential is on the page");
    assert.ok(!text.includes(upstream.url), "an upstream URL is on the page");
    assert.ok(!text.includes(new URL(upstream.url).pathname + '"'), "an upstream path is on the page");
  });

  test("tracing off: the client's traceparent reaches the upstream unchanged", async () => {
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const { client, transport } = await connect("open", { traceparent, tracestate: "vendor=1" });
    const r = await client.callTool({ name: "echo_headers", arguments: {} });
    const seen = JSON.parse((r.content as { text: string }[])[0]?.text ?? "{}") as Record<string, string>;
    assert.equal(seen.traceparent, traceparent);
    assert.equal(seen.tracestate, "vendor=1");
    await transport.terminateSession();
    await client.close();
  });
});
