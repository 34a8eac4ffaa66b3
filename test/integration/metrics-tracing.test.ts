/**
 * OpenTelemetry traces (docs/operations.md "Metrics and traces"): `mcp.request` and its child
 * `mcp.upstream` span per call, W3C traceparent continued from the client and passed upstream with
 * the edge's span. Two ways: the global API with a provider the host registered (here an in-memory
 * exporter), and the edge's own OTLP/HTTP exporter (here a collector stub that records exports).
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { propagation, SpanKind, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
let upstream: SpawnedFixture;
let edge: InProcessEdge;

before(async () => {
  // What an OpenTelemetry setup loaded by the host (`node --import ./otel.js`) does.
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  upstream = await spawnFixture("test/fixtures/conformance-server.ts");
  edge = await startEdge({
    tracing: { enabled: true },
    servers: { s: { route: "/mcp", upstream: { urls: [upstream.url] }, auth: ["none"] } },
  });
});

after(async () => {
  await edge?.stop();
  await upstream?.stop();
  await provider.shutdown();
  trace.disable();
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

/** The spans of the one tools/call in the exporter (the request ends just after the answer). */
async function toolCallSpans(): Promise<{ request: ReadableSpan; upstream: ReadableSpan }> {
  const request = await waitFor(
    () =>
      exporter
        .getFinishedSpans()
        .find((s) => s.name === "mcp.request" && s.attributes["mcp.method.name"] === "tools/call"),
    { what: "an mcp.request span for tools/call", timeout: 1000 },
  );
  const up = exporter
    .getFinishedSpans()
    .find((s) => s.name === "mcp.upstream" && s.parentSpanContext?.spanId === request.spanContext().spanId);
  assert.ok(up, "an mcp.upstream span under it");
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
    // Names, never arguments.
    assert.equal(request.attributes["gen_ai.tool.name"], "echo_headers");
    assert.equal(request.attributes["mcp_edge.server"], "s");
    assert.equal(request.attributes["http.response.status_code"], 200);
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
    await waitFor(() => exporter.getFinishedSpans().some((s) => s.name === "mcp.request"), {
      what: "the request span to end",
      timeout: 1000,
    }).catch(() => undefined);
    const spans = exporter.getFinishedSpans();
    const request = spans.find((s) => s.name === "mcp.request");
    assert.ok(request);
    assert.equal(request.status.code, 0 /* UNSET: a 4xx is the client's */);
    assert.match(String(request.attributes["error.type"]), /^EDGE_/);
    assert.ok(!spans.some((s) => s.name === "mcp.upstream"));
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
    assert.ok(text.includes("mcp.request") && text.includes("mcp.upstream"));
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
