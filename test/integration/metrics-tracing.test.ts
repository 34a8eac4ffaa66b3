/**
 * OpenTelemetry (docs/operations.md "Metrics and traces"), per the semantic conventions for MCP:
 * a SERVER span per call named `{mcp.method.name} {target}` and a CLIENT span of the upstream
 * exchange under it, with the conventions' attributes (the session as its hash); W3C trace context
 * continued from the client's headers or, preferred, its `params._meta`, and passed upstream in
 * both; `mcp.server.operation.duration` / `mcp.server.session.duration` through the metrics API and
 * on the Prometheus page. Two ways for spans: the global API with providers the host registered
 * (here the SDK's in-memory exporters), and the edge's own OTLP/HTTP exporter (here a collector
 * stub that records exports).
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { metrics, propagation, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from "@opentelemetry/sdk-metrics";
import { sessionHash } from "../../src/lib/session-hash.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { lastMessage } from "../helpers/mcp.ts";
import { NODE_BIN, REPO_ROOT, type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
const metricReader = new PeriodicExportingMetricReader({
  exporter: metricExporter,
  exportIntervalMillis: 3_600_000,
});
const meterProvider = new MeterProvider({ readers: [metricReader] });
let upstream: SpawnedFixture;
let edge: InProcessEdge;

before(async () => {
  // What an OpenTelemetry setup loaded by the host (`node --import ./otel.js`) does.
  trace.setGlobalTracerProvider(provider);
  metrics.setGlobalMeterProvider(meterProvider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  upstream = await spawnFixture("test/fixtures/conformance-server.ts");
  edge = await startEdge({
    tracing: { enabled: true },
    metrics: { otel: true },
    servers: {
      s: { route: "/mcp", upstream: { urls: [upstream.url] }, auth: ["none"] },
      // The same server spawned over stdio: messages go to it parsed, not as the body's text.
      local: {
        route: "/local/mcp",
        upstream: {
          stdio: { command: NODE_BIN, args: [`${REPO_ROOT}/test/fixtures/conformance-server.ts`, "--stdio"] },
        },
        auth: ["none"],
      },
    },
  });
});

after(async () => {
  await edge?.stop();
  await upstream?.stop();
  await provider.shutdown();
  await meterProvider.shutdown();
  trace.disable();
  metrics.disable();
  propagation.disable();
});

async function connect(url: string, headers: Record<string, string> = {}) {
  const client = new Client({ name: "tracing-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  await client.connect(transport);
  return { client, transport };
}

/** The headers the upstream received for an `echo_headers` call. */
async function upstreamHeaders(client: Client): Promise<Record<string, string>> {
  const r = await client.callTool({ name: "echo_headers", arguments: { secret: "do-not-record" } });
  return JSON.parse((r.content as { text: string }[])[0]?.text ?? "{}") as Record<string, string>;
}

function traceparentParts(h: string | undefined): { traceId: string; spanId: string; flags: string } {
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(h ?? "");
  assert.ok(m, `traceparent ${h}`);
  return { traceId: m[1] as string, spanId: m[2] as string, flags: m[3] as string };
}

/** The SERVER span of the one call of `tool` in the exporter, and its CLIENT span (the upstream's). */
async function toolCallSpans(
  tool = "echo_headers",
): Promise<{ request: ReadableSpan; upstream: ReadableSpan }> {
  const request = await waitFor(
    () =>
      exporter.getFinishedSpans().find((s) => s.name === `tools/call ${tool}` && s.kind === SpanKind.SERVER),
    { what: `a SERVER span "tools/call ${tool}"`, timeout: 1000 },
  );
  const up = exporter
    .getFinishedSpans()
    .find((s) => s.kind === SpanKind.CLIENT && s.parentSpanContext?.spanId === request.spanContext().spanId);
  assert.ok(up, "a CLIENT span under it");
  return { request, upstream: up };
}

describe("tracing through the global OpenTelemetry API", () => {
  test("the client's trace continues: request span under the client's, upstream span under it, upstream sees it", async () => {
    exporter.reset();
    const clientTraceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const clientSpanId = "00f067aa0ba902b7";
    const { client, transport } = await connect(edge.url(), {
      traceparent: `00-${clientTraceId}-${clientSpanId}-01`,
    });
    exporter.reset();
    const seen = await upstreamHeaders(client);
    const { request, upstream: up } = await toolCallSpans();
    assert.equal(request.kind, SpanKind.SERVER);
    assert.equal(up.kind, SpanKind.CLIENT);
    assert.equal(request.spanContext().traceId, clientTraceId);
    assert.equal(request.parentSpanContext?.spanId, clientSpanId);
    assert.equal(up.spanContext().traceId, clientTraceId);
    // The upstream receives the edge's upstream span as its parent, in the client's trace.
    const tp = traceparentParts(seen.traceparent);
    assert.equal(tp.traceId, clientTraceId);
    assert.equal(tp.spanId, up.spanContext().spanId);
    assert.equal(tp.flags, "01");
    // The MCP semantic conventions: names, the session as its hash, never arguments.
    assert.equal(up.name, "tools/call echo_headers");
    const a = request.attributes;
    assert.equal(a["mcp.method.name"], "tools/call");
    assert.equal(a["gen_ai.tool.name"], "echo_headers");
    assert.equal(a["gen_ai.operation.name"], "execute_tool");
    assert.match(String(a["jsonrpc.request.id"]), /^\d+$/);
    assert.equal(a["mcp.protocol.version"], transport.protocolVersion);
    const sid = transport.sessionId as string;
    assert.equal(a["mcp.session.id"], sessionHash(sid));
    assert.ok(
      !JSON.stringify([request.attributes, up.attributes]).includes(sid),
      "never the session id itself",
    );
    assert.equal(a["network.transport"], "tcp");
    assert.equal(a["network.protocol.name"], "http");
    assert.equal(a["network.protocol.version"], "1.1");
    assert.equal(a["client.address"], "127.0.0.1");
    assert.equal(typeof a["client.port"], "number");
    assert.equal(a["error.type"], undefined);
    assert.equal(request.status.code, SpanStatusCode.UNSET);
    assert.equal(a["mcp_edge.server"], "s");
    assert.equal(a["http.response.status_code"], 200);
    assert.equal(up.attributes["server.address"], "127.0.0.1");
    assert.equal(up.attributes["server.port"], Number(new URL(upstream.url).port));
    assert.equal(up.attributes["mcp.method.name"], "tools/call");
    assert.ok(!JSON.stringify([request.attributes, up.attributes]).includes("do-not-record"));
    // The request span covers the upstream one.
    const t = (hr: [number, number]) => hr[0] * 1e9 + hr[1];
    assert.ok(t(request.startTime) <= t(up.startTime));
    assert.ok(t(request.endTime) >= t(up.endTime));
    await transport.terminateSession();
    await client.close();
  });

  test("without a client traceparent the edge starts the trace; the upstream gets the edge's", async () => {
    const { client, transport } = await connect(edge.url());
    exporter.reset();
    const seen = await upstreamHeaders(client);
    const { request, upstream: up } = await toolCallSpans();
    assert.equal(request.parentSpanContext, undefined);
    const tp = traceparentParts(seen.traceparent);
    assert.equal(tp.traceId, request.spanContext().traceId);
    assert.equal(tp.spanId, up.spanContext().spanId);
    await transport.terminateSession();
    await client.close();
  });

  test("a refused request gets a request span with the error and no upstream span", async () => {
    exporter.reset();
    const res = await fetch(edge.url(), {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "whoami" } }),
    });
    assert.equal(res.status, 400); // no session
    await res.text();
    await waitFor(() => exporter.getFinishedSpans().some((s) => s.kind === SpanKind.SERVER), {
      what: "the request span to end",
      timeout: 1000,
    }).catch(() => undefined);
    const spans = exporter.getFinishedSpans();
    const request = spans.find((s) => s.name === "tools/call whoami");
    assert.ok(request);
    // MCP conventions: ERROR whenever `error.type` is set, described by the error's message.
    assert.equal(request.status.code, SpanStatusCode.ERROR);
    assert.match(String(request.attributes["error.type"]), /^EDGE_/);
    assert.ok(request.status.message);
    assert.ok(!spans.some((s) => s.kind === SpanKind.CLIENT));
  });

  test("trace context in params._meta is the parent, the header's is linked; the upstream gets the edge's in params._meta", async () => {
    const headerTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
    const headerSpan = "00f067aa0ba902b7";
    const metaTrace = "0af7651916cd43dd8448eb211c80319c";
    const metaSpan = "b7ad6b7169203331";
    const { client, transport } = await connect(edge.url(), {
      traceparent: `00-${headerTrace}-${headerSpan}-01`,
    });
    exporter.reset();
    const r = await client.callTool({
      name: "echo_meta",
      arguments: {},
      _meta: {
        traceparent: `00-${metaTrace}-${metaSpan}-01`,
        tracestate: "congo=t61rcWkgMzE",
        "com.example/keep": "kept",
      },
    });
    const seen = JSON.parse((r.content as { text: string }[])[0]?.text ?? "{}") as Record<string, string>;
    const { request, upstream: up } = await toolCallSpans("echo_meta");
    assert.equal(request.spanContext().traceId, metaTrace, "the message's context is the parent");
    assert.equal(request.parentSpanContext?.spanId, metaSpan);
    assert.deepEqual(
      request.links.map((l) => [l.context.traceId, l.context.spanId]),
      [[headerTrace, headerSpan]],
      "the transport's context is linked",
    );
    const tp = traceparentParts(seen.traceparent);
    assert.equal(tp.traceId, metaTrace);
    assert.equal(tp.spanId, up.spanContext().spanId, "the upstream's parent is the edge's CLIENT span");
    assert.equal(seen.tracestate, "congo=t61rcWkgMzE");
    assert.equal(seen["com.example/keep"], "kept", "the rest of _meta goes on unchanged");
    await transport.terminateSession();
    await client.close();
  });

  test("a body JSON cannot hold exactly goes upstream as written: trace context in the headers only", async () => {
    const { client, transport } = await connect(edge.url());
    const big = "12345678901234567890123";
    const res = await fetch(edge.url(), {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-session-id": transport.sessionId as string,
        "mcp-protocol-version": transport.protocolVersion as string,
      },
      body: `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo_meta","arguments":{"n":${big}}}}`,
    });
    const answer = lastMessage(await res.text());
    const seen = JSON.parse(answer.result.content[0].text) as Record<string, string>;
    assert.equal(seen.traceparent, undefined, "the body was not re-serialized");
    await transport.terminateSession();
    await client.close();
  });

  test("a stdio upstream gets the edge's context in params._meta too; its CLIENT span says pipe", async () => {
    const { client, transport } = await connect(edge.url("local"));
    exporter.reset();
    const r = await client.callTool({ name: "echo_meta", arguments: {} });
    const seen = JSON.parse((r.content as { text: string }[])[0]?.text ?? "{}") as Record<string, string>;
    const { request, upstream: up } = await toolCallSpans("echo_meta");
    const tp = traceparentParts(seen.traceparent);
    assert.equal(tp.traceId, request.spanContext().traceId);
    assert.equal(tp.spanId, up.spanContext().spanId);
    assert.equal(up.attributes["network.transport"], "pipe");
    assert.equal(up.attributes["server.address"], undefined);
    await transport.terminateSession();
    await client.close();
  });

  test("a tool error: error.type tool_error and ERROR status on both spans", async () => {
    const { client, transport } = await connect(edge.url());
    exporter.reset();
    const r = await client.callTool({ name: "test_error_handling", arguments: {} });
    assert.equal(r.isError, true);
    const { request, upstream: up } = await toolCallSpans("test_error_handling");
    assert.equal(request.attributes["error.type"], "tool_error");
    assert.equal(request.status.code, SpanStatusCode.ERROR);
    assert.equal(up.attributes["error.type"], "tool_error");
    assert.equal(up.status.code, SpanStatusCode.ERROR);
    await transport.terminateSession();
    await client.close();
  });

  test("mcp.server.operation.duration and mcp.server.session.duration: through the metrics API and on /metrics", async () => {
    const { client, transport } = await connect(edge.url());
    await client.callTool({ name: "echo_headers", arguments: {} });
    await client.callTool({ name: "test_error_handling", arguments: {} });
    const version = transport.protocolVersion as string;
    await transport.terminateSession(); // the session ends: its duration is recorded
    await client.close();
    await waitFor(
      async () => {
        metricExporter.reset();
        await metricReader.forceFlush();
        const names = metricExporter
          .getMetrics()
          .flatMap((rm) => rm.scopeMetrics.flatMap((sm) => sm.metrics.map((m) => m.descriptor.name)));
        return names.includes("mcp.server.session.duration");
      },
      { what: "the session duration through the metrics API", timeout: 3000 },
    );
    const all = metricExporter.getMetrics().flatMap((rm) => rm.scopeMetrics.flatMap((sm) => sm.metrics));
    const op = all.find((m) => m.descriptor.name === "mcp.server.operation.duration");
    assert.ok(op);
    assert.equal(op.descriptor.unit, "s");
    const points = op.dataPoints as {
      attributes: Record<string, unknown>;
      value: { count: number; buckets: { boundaries: number[] } };
    }[];
    const call = points.find((p) => p.attributes["gen_ai.tool.name"] === "echo_headers");
    assert.ok(call, "a point for the echo_headers call");
    assert.equal(call.attributes["mcp.method.name"], "tools/call");
    assert.equal(call.attributes["mcp.protocol.version"], version);
    assert.equal(call.attributes["network.transport"], "tcp");
    assert.equal(call.attributes["mcp.session.id"], undefined, "no per-session series");
    assert.equal(call.attributes["jsonrpc.request.id"], undefined, "no per-call series");
    assert.deepEqual(
      call.value.buckets.boundaries,
      [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
    );
    const failed = points.find((p) => p.attributes["gen_ai.tool.name"] === "test_error_handling");
    assert.equal(failed?.attributes["error.type"], "tool_error");
    assert.ok(
      points.some((p) => p.attributes["mcp.method.name"] === "notifications/initialized"),
      "notifications are operations too",
    );
    const session = all.find((m) => m.descriptor.name === "mcp.server.session.duration");
    assert.ok(session && session.dataPoints.length > 0);
    // The Prometheus equivalents.
    const page = await (await fetch(`${edge.gw.adminUrl}/metrics`)).text();
    assert.match(
      page,
      new RegExp(
        `mcp_server_operation_duration_seconds_count\\{server="s",mcp_method_name="tools/call",gen_ai_tool_name="echo_headers",error_type="",mcp_protocol_version="${version}"\\} [1-9]`,
      ),
    );
    assert.match(
      page,
      /mcp_server_operation_duration_seconds_count\{[^}]*gen_ai_tool_name="test_error_handling",error_type="tool_error"/,
    );
    assert.match(
      page,
      /mcp_server_operation_duration_seconds_bucket\{le="300",server="s",mcp_method_name="tools\/call"/,
    );
    assert.match(
      page,
      new RegExp(
        `mcp_server_session_duration_seconds_count\\{server="s",mcp_protocol_version="${version}",error_type=""\\} [1-9]`,
      ),
    );
  });
});

describe("the edge's own OTLP/HTTP exporter (tracing.otlp.url)", () => {
  let collector: Server;
  const exports: { path: string; type: string; body: Buffer }[] = [];

  before(async () => {
    collector = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        exports.push({
          path: req.url ?? "",
          type: req.headers["content-type"] ?? "",
          body: Buffer.concat(chunks),
        });
        res.writeHead(200, { "content-type": "application/json" });
        res.end("{}");
      });
    });
    await new Promise<void>((r) => collector.listen(0, "127.0.0.1", r));
  });

  after(async () => {
    await new Promise((r) => collector.close(r));
  });

  test("spans reach the collector; the upstream sees the exported trace", async () => {
    const port = (collector.address() as AddressInfo).port;
    const own = await startEdge({
      tracing: {
        serviceName: "edge-under-test",
        otlp: { url: `http://127.0.0.1:${port}/v1/traces`, headers: { "x-collector-key": "k" } },
      },
      servers: { s: { route: "/mcp", upstream: { urls: [upstream.url] }, auth: ["none"] } },
    });
    let traceId: string;
    try {
      const { client, transport } = await connect(own.url());
      const seen = await upstreamHeaders(client);
      traceId = traceparentParts(seen.traceparent).traceId;
      await transport.terminateSession();
      await client.close();
    } finally {
      await own.stop(); // flushes the batch
    }
    assert.ok(exports.length > 0, "the collector got an export");
    assert.ok(exports.every((e) => e.path === "/v1/traces"));
    const all = Buffer.concat(exports.map((e) => e.body));
    const text = all.toString("latin1");
    assert.ok(text.includes("tools/call echo_headers") && text.includes("mcp.method.name"));
    assert.ok(text.includes("edge-under-test"));
    // The trace id is in the export (hex in OTLP/JSON, raw bytes in OTLP/protobuf).
    assert.ok(
      text.toLowerCase().includes(traceId) || all.includes(Buffer.from(traceId, "hex")),
      "the upstream's trace id was exported",
    );
    // The edge's own provider, not the global one: nothing of this edge went to the in-memory exporter.
    assert.ok(!exporter.getFinishedSpans().some((s) => s.spanContext().traceId === traceId));
  });
});
