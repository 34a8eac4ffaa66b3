import diagnostics_channel from "node:diagnostics_channel";
import { type Attributes, type Histogram, metrics } from "@opentelemetry/api";
import type { Route } from "../upstream/types.ts";
import type { RequestEndEvent, SessionEvent } from "./channels.ts";
import { LabelCap } from "./metrics.ts";
import {
  MCP_DURATION_BUCKETS,
  OPERATION_DURATION,
  operationAttributes,
  operationsOf,
  requestAttributes,
  SESSION_DURATION,
  sessionErrorType,
} from "./semconv.ts";

export interface OtelMetricsOptions {
  /** Whether a request's route is this gateway's (see MetricsOptions.owned). */
  owned: { has(route: Route): boolean };
  /** Configured server names (a session event names its server). */
  servers: { has(name: string): boolean };
  /** Distinct tool names kept per server (`metrics.maxTools`); later ones are recorded as `_OTHER`. */
  maxTools: number;
}

/**
 * The MCP semantic conventions' histograms through the OpenTelemetry metrics API: the global
 * MeterProvider the host registered (`node --import` of an OpenTelemetry SDK setup), as
 * `tracing.enabled` uses the global tracer provider. `mcp.server.operation.duration` per JSON-RPC
 * request or notification of a POST, `mcp.server.session.duration` per session this process ended,
 * both in seconds with the conventions' bucket boundaries. Attributes as on the spans, without
 * `mcp.session.id` and `jsonrpc.request.id` (one series per session or call would be unbounded),
 * plus `mcp_edge.server`. Fed by the diagnostics channels, like the Prometheus page.
 */
export class OtelMetrics {
  readonly #opts: OtelMetricsOptions;
  readonly #operations: Histogram;
  readonly #sessions: Histogram;
  readonly #tools = new Map<string, LabelCap>();
  #subscribed = false;

  constructor(opts: OtelMetricsOptions) {
    this.#opts = opts;
    const meter = metrics.getMeter("mcp-edge");
    this.#operations = meter.createHistogram(OPERATION_DURATION, {
      unit: "s",
      description:
        "MCP request or notification duration as observed on the receiver from the time it was received until the result or ack is sent.",
      advice: { explicitBucketBoundaries: MCP_DURATION_BUCKETS },
    });
    this.#sessions = meter.createHistogram(SESSION_DURATION, {
      unit: "s",
      description: "The duration of the MCP session as observed on the MCP server.",
      advice: { explicitBucketBoundaries: MCP_DURATION_BUCKETS },
    });
  }

  start(): void {
    if (this.#subscribed) return;
    this.#subscribed = true;
    diagnostics_channel.subscribe("mcp-edge:request:end", this.#onRequestEnd);
    diagnostics_channel.subscribe("mcp-edge:session", this.#onSession);
  }

  stop(): void {
    if (!this.#subscribed) return;
    this.#subscribed = false;
    diagnostics_channel.unsubscribe("mcp-edge:request:end", this.#onRequestEnd);
    diagnostics_channel.unsubscribe("mcp-edge:session", this.#onSession);
  }

  readonly #onRequestEnd = (message: unknown): void => {
    const ev = message as RequestEndEvent;
    const facts = ev.request;
    if (facts.httpMethod !== "POST" || !facts.messages || !this.#opts.owned.has(facts.route)) return;
    const shared: Attributes = { ...requestAttributes(facts), "mcp_edge.server": facts.route.name };
    delete shared["mcp.session.id"];
    const seconds = ev.durationMs / 1000;
    for (const op of operationsOf(ev)) {
      const attributes = { ...shared, ...operationAttributes(op, false) };
      if (op.tool !== undefined) attributes["gen_ai.tool.name"] = this.#tool(facts.route.name, op.tool);
      this.#operations.record(seconds, attributes);
    }
  };

  readonly #onSession = (message: unknown): void => {
    const ev = message as SessionEvent;
    if (ev.kind !== "end" || ev.createdAt === undefined || !this.#opts.servers.has(ev.server)) return;
    const attributes: Attributes = {
      "mcp_edge.server": ev.server,
      "network.transport": "tcp",
      "network.protocol.name": "http",
    };
    if (ev.protocolVersion) attributes["mcp.protocol.version"] = ev.protocolVersion;
    const errorType = sessionErrorType(ev);
    if (errorType) attributes["error.type"] = errorType;
    this.#sessions.record(Math.max(0, Date.now() - ev.createdAt) / 1000, attributes);
  };

  #tool(server: string, tool: string): string {
    let cap = this.#tools.get(server);
    if (!cap) {
      cap = new LabelCap(this.#opts.maxTools);
      this.#tools.set(server, cap);
    }
    const v = cap.value(tool);
    return v === "(other)" ? "_OTHER" : v;
  }
}
