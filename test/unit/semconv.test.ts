/**
 * How a request maps onto the OpenTelemetry semantic conventions for MCP (src/observability/
 * semconv.ts): operations, span names, `error.type` and `rpc.response.status_code`, the protocol
 * version, the session as its hash, the upstream's address.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GatewayError } from "../../src/errors/errors.ts";
import { sessionHash } from "../../src/lib/session-hash.ts";
import type { CallOutcome, RequestEndEvent, RequestFacts } from "../../src/observability/channels.ts";
import {
  operationAttributes,
  operationsOf,
  requestAttributes,
  sessionErrorType,
  spanName,
  upstreamAttributes,
} from "../../src/observability/semconv.ts";
import type { Route } from "../../src/upstream/types.ts";

function facts(over: Partial<RequestFacts> & { kind?: "http" | "stdio" } = {}): RequestFacts {
  const route = {
    name: "s",
    config: { route: "/mcp" },
    upstream: { kind: over.kind ?? "http" },
  } as unknown as Route;
  return {
    requestId: "r",
    startedAt: 0,
    route,
    httpMethod: "POST",
    headers: {},
    principal: undefined,
    messages: undefined,
    session: undefined,
    outcomes: undefined,
    upstream: undefined,
    upstreamAt: undefined,
    egress: undefined,
    clientLeft: false,
    ...over,
  };
}

function ended(f: RequestFacts, status = 200, error?: GatewayError): RequestEndEvent {
  return { request: f, status, error, durationMs: 12 };
}

const call = (id: number | string, name = "get_weather") => ({
  jsonrpc: "2.0" as const,
  id,
  method: "tools/call",
  params: { name, arguments: { city: "secret-arg" } },
});

describe("MCP semantic conventions", () => {
  test("a tools/call: its span name, method, tool, operation name and request id; never arguments", () => {
    const outcomes = new Map<string, CallOutcome>([["n:7", { kind: "result", isError: false }]]);
    const [op, ...rest] = operationsOf(ended(facts({ messages: [call(7)], outcomes })));
    assert.deepEqual(rest, []);
    assert.ok(op);
    assert.equal(spanName(op), "tools/call get_weather");
    const a = operationAttributes(op, true);
    assert.deepEqual(a, {
      "mcp.method.name": "tools/call",
      "gen_ai.tool.name": "get_weather",
      "gen_ai.operation.name": "execute_tool",
      "jsonrpc.request.id": "7",
    });
    assert.ok(!JSON.stringify(a).includes("secret-arg"));
    assert.equal(operationAttributes(op, false)["jsonrpc.request.id"], undefined);
  });

  test("prompts/get is named by its prompt; a method without target by itself", () => {
    const ops = operationsOf(
      ended(
        facts({
          messages: [
            { jsonrpc: "2.0", id: "a", method: "prompts/get", params: { name: "review" } },
            { jsonrpc: "2.0", method: "notifications/initialized" },
          ],
        }),
      ),
    );
    assert.deepEqual(ops.map(spanName), ["prompts/get review", "notifications/initialized"]);
    assert.equal(operationAttributes(ops[0]!, true)["gen_ai.prompt.name"], "review");
  });

  test("error.type: the JSON-RPC code, tool_error, aborted, the edge's code (with its JSON-RPC code), the HTTP status", () => {
    const outcomes = new Map<string, CallOutcome>([
      ["n:1", { kind: "rpc_error", code: -32602 }],
      ["n:2", { kind: "result", isError: true }],
      ["s:3", { kind: "aborted" }],
    ]);
    const ops = operationsOf(ended(facts({ messages: [call(1), call(2), call("3")], outcomes })));
    assert.deepEqual(
      ops.map((o) => [o.errorType, o.rpcCode]),
      [
        ["-32602", "-32602"],
        ["tool_error", undefined],
        ["aborted", undefined],
      ],
    );
    const refused = operationsOf(
      ended(facts({ messages: [call(1)] }), 429, new GatewayError("EDGE_RATE_LIMITED")),
    );
    assert.equal(refused[0]?.errorType, "EDGE_RATE_LIMITED");
    assert.equal(refused[0]?.rpcCode, "-32000");
    assert.ok(refused[0]?.errorMessage);
    const passthrough = operationsOf(ended(facts({ messages: [call(1)] }), 404));
    assert.equal(passthrough[0]?.errorType, "404");
    const ok = operationsOf(ended(facts({ messages: [call(1)] }), 200));
    assert.equal(ok[0]?.errorType, undefined, "no outcome and a 200: no error");
    // A notification has no answer of its own: it fails with its POST only.
    const note = { jsonrpc: "2.0" as const, method: "notifications/cancelled", params: {} };
    assert.equal(operationsOf(ended(facts({ messages: [note] }), 202))[0]?.errorType, undefined);
    assert.equal(operationsOf(ended(facts({ messages: [note] }), 0))[0]?.errorType, "aborted");
  });

  test("request attributes: the protocol version from the session, the header or initialize; the session as its hash", () => {
    const sid = "a-session-id-that-is-a-bearer-secret";
    const fromHeader = requestAttributes(
      facts({ headers: { "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18" }, httpVersion: "1.1" }),
    );
    assert.equal(fromHeader["mcp.protocol.version"], "2025-06-18");
    assert.equal(fromHeader["mcp.session.id"], sessionHash(sid));
    assert.notEqual(fromHeader["mcp.session.id"], sid);
    assert.equal(fromHeader["network.protocol.version"], "1.1");
    assert.equal(fromHeader["network.transport"], "tcp");
    const init = requestAttributes(
      facts({
        messages: [
          { jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-11-25" } },
        ],
      }),
    );
    assert.equal(init["mcp.protocol.version"], "2025-11-25");
    assert.equal(init["mcp.session.id"], undefined);
    // A header too long to be a session id is not tagged.
    assert.equal(
      requestAttributes(facts({ headers: { "mcp-session-id": "x".repeat(300) } }))["mcp.session.id"],
      undefined,
    );
  });

  test("upstream attributes: host and port of the instance (never its path), pipe for stdio", () => {
    const http = upstreamAttributes(
      facts({ upstream: { instance: "http://[fd00::7]:3000/mcp?token=x", ms: 1 } }),
    );
    assert.deepEqual(http, {
      "network.transport": "tcp",
      "network.protocol.name": "http",
      "server.address": "fd00::7",
      "server.port": 3000,
    });
    assert.equal(
      upstreamAttributes(facts({ upstream: { instance: "https://mcp.example.com/x", ms: 1 } }))[
        "server.port"
      ],
      443,
    );
    assert.deepEqual(upstreamAttributes(facts({ kind: "stdio" })), { "network.transport": "pipe" });
  });

  test("a session lost upstream ends with error.type backend_lost; other ends are not errors", () => {
    const base = { kind: "end" as const, sessionId: "x", server: "s", tenant: null, principal: "p" };
    assert.equal(sessionErrorType({ ...base, reason: "backend lost" }), "backend_lost");
    assert.equal(sessionErrorType({ ...base, reason: "idle" }), undefined);
    assert.equal(sessionErrorType({ ...base, reason: "deleted by client" }), undefined);
  });
});
