import diagnostics_channel from "node:diagnostics_channel";
import type { IncomingMessage, ServerResponse } from "node:http";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Config } from "../config/schema.ts";
import type { Route } from "../context.ts";
import { isRequest, type RpcRequest, requestIdKey } from "../listen/jsonrpc.ts";
import type { InstanceHealth } from "../upstream/types.ts";
import type { AdminEvent, CallOutcome, RequestEndEvent, SessionEvent } from "./channels.ts";
import { upstreamStartedAt } from "./tracing.ts";

/**
 * Prometheus metrics (SPEC §5 `GET /metrics` on the admin listener), fed without touching the hot
 * path (DESIGN.md convention 7): the pipeline publishes diagnostics_channel events and this module
 * subscribes; gauges are read when scraped (prom-client `collect`). Each Gateway has its own
 * registry, so two edges in one process (tests) never share series.
 *
 * No label ever carries a session id, a credential, a principal or an upstream URL: labels are the
 * server name, the JSON-RPC method, the tool name, the tenant, coded outcomes and instance hosts.
 * Tool and tenant names come from clients and credentials, so each of them is capped: the first N
 * distinct values are kept, later ones are counted as `(other)`.
 */

/** The label value that stands for every value past a label's cap. */
export const OTHER = "(other)";
/** Longer label values are counted as OTHER (tool names are at most 128 characters in MCP). */
const MAX_LABEL_LENGTH = 128;

/** Seconds: from 5 ms to 60 s; MCP calls range from cache hits to long tool runs. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Methods of the MCP protocol (every version the edge speaks): always their own label value. */
const MCP_METHODS = [
  "initialize",
  "ping",
  "tools/list",
  "tools/call",
  "resources/list",
  "resources/templates/list",
  "resources/read",
  "resources/subscribe",
  "resources/unsubscribe",
  "prompts/list",
  "prompts/get",
  "completion/complete",
  "logging/setLevel",
  "subscriptions/listen",
  "tasks/get",
  "tasks/list",
  "tasks/result",
  "tasks/cancel",
];

/**
 * A bounded set of values for one label: the first `max` distinct values (besides the `always`
 * ones) are kept as they are, every later one becomes OTHER. First come, first kept: a client
 * inventing names can fill the set, but never grow the series count past the cap.
 */
export class LabelCap {
  readonly #kept = new Set<string>();
  readonly #always: ReadonlySet<string>;
  readonly #max: number;

  constructor(max: number, always: Iterable<string> = []) {
    this.#max = max;
    this.#always = new Set(always);
  }

  value(v: string): string {
    if (this.#always.has(v) || this.#kept.has(v)) return v;
    if (this.#kept.size >= this.#max || v.length > MAX_LABEL_LENGTH) return OTHER;
    this.#kept.add(v);
    return v;
  }

  get size(): number {
    return this.#kept.size;
  }
}

/** What a gauge registered by another module reads: one value, or one value per label set. */
export type GaugeReading = number | ReadonlyArray<{ labels: Record<string, string>; value: number }>;

export interface MetricsOptions {
  config: Config["metrics"];
  /** The gateway's routes: events of other gateways in the same process are ignored. */
  routes: ReadonlyMap<string, Route>;
  /** Open edge streams (StreamRegistry.size). */
  streams: () => number;
  /** Sessions in the store per server (the store is the truth, also after a restart). */
  sessions?: () => Promise<ReadonlyMap<string, number>>;
}

/** A call's outcome label: how one JSON-RPC request ended, as the client saw it. */
export type OutcomeLabel = "ok" | "tool_error" | "rpc_error" | "refused" | "failed" | "aborted";

function outcomeOf(ev: RequestEndEvent, recorded: CallOutcome | undefined): OutcomeLabel {
  if (recorded) {
    if (recorded.kind === "result") return recorded.isError ? "tool_error" : "ok";
    if (recorded.kind === "rpc_error") return "rpc_error";
    return "aborted";
  }
  // No outcome recorded for the request: judge by how the HTTP exchange ended.
  if (ev.error) return ev.error.status < 500 ? "refused" : "failed";
  if (ev.status === 0) return "aborted";
  if (ev.status >= 500) return "failed";
  if (ev.status >= 400) return "refused";
  return "ok";
}

/** The host of an instance id (URLs lose userinfo, path and query: they may carry secrets). */
function instanceLabel(id: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(id)) return id;
  try {
    return new URL(id).host;
  } catch {
    return OTHER;
  }
}

/** Instance labels of a route, made unique when two instances share a host. */
function instanceLabels(health: InstanceHealth[]): string[] {
  const labels = health.map((h) => instanceLabel(h.id));
  return labels.map((l, i) => (labels.indexOf(l) !== labels.lastIndexOf(l) ? `${l}#${i}` : l));
}

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m?.[1];
}

/** Constant-time enough for a fixed-length comparison of a configured secret. */
function sameSecret(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

export class Metrics {
  readonly registry = new Registry();
  readonly #opts: MetricsOptions;
  readonly #tenants: LabelCap;
  readonly #tools = new Map<string, LabelCap>();
  readonly #methods = new LabelCap(32, MCP_METHODS);
  readonly #small = new Map<string, LabelCap>();
  readonly #calls: Counter<"server" | "method" | "tool" | "tenant" | "outcome">;
  readonly #edgeSeconds: Histogram<"server" | "method">;
  readonly #upstreamSeconds: Histogram<"server" | "method">;
  readonly #errors: Counter<"server" | "code">;
  readonly #rateLimited: Counter<"server" | "limit">;
  readonly #sessionsStarted: Counter<"server">;
  readonly #sessionsEnded: Counter<"server" | "reason">;
  readonly #admin: Counter<"action" | "outcome">;
  #subscribed = false;

  constructor(opts: MetricsOptions) {
    this.#opts = opts;
    // "" (no tenant) is always its own value: tenancy is optional, and those calls are not "other".
    this.#tenants = new LabelCap(opts.config.maxTenants, [""]);
    const registers = [this.registry];
    this.#calls = new Counter({
      name: "mcp_edge_calls_total",
      help: "JSON-RPC requests by server, method, tool (tools/call only), tenant and outcome (ok, tool_error, rpc_error, refused, failed, aborted).",
      labelNames: ["server", "method", "tool", "tenant", "outcome"],
      registers,
    });
    this.#edgeSeconds = new Histogram({
      name: "mcp_edge_request_duration_seconds",
      help: "Time from a POST's arrival at the edge to the end of its answer (method: the JSON-RPC method, `batch`, or `notification`).",
      labelNames: ["server", "method"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#upstreamSeconds = new Histogram({
      name: "mcp_edge_upstream_duration_seconds",
      help: "Time from the edge forwarding a POST upstream to the end of the upstream's answer (cache hits and refusals never reach it).",
      labelNames: ["server", "method"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#errors = new Counter({
      name: "mcp_edge_errors_total",
      help: "Requests the edge refused or failed, by error code (docs/errors.md).",
      labelNames: ["server", "code"],
      registers,
    });
    this.#rateLimited = new Counter({
      name: "mcp_edge_rate_limited_total",
      help: "Requests refused by a rate limit (EDGE_RATE_LIMITED), by the limit that refused.",
      labelNames: ["server", "limit"],
      registers,
    });
    this.#sessionsStarted = new Counter({
      name: "mcp_edge_sessions_started_total",
      help: "MCP sessions started by this process.",
      labelNames: ["server"],
      registers,
    });
    this.#sessionsEnded = new Counter({
      name: "mcp_edge_sessions_ended_total",
      help: "MCP sessions ended by this process, by reason.",
      labelNames: ["server", "reason"],
      registers,
    });
    this.#admin = new Counter({
      name: "mcp_edge_admin_actions_total",
      help: "Admin API actions, by action and outcome.",
      labelNames: ["action", "outcome"],
      registers,
    });
    const routes = opts.routes;
    const sessions = opts.sessions;
    if (sessions) {
      new Gauge({
        name: "mcp_edge_sessions_active",
        help: "MCP sessions held in the store, by server.",
        labelNames: ["server"],
        registers,
        async collect() {
          const counts = await sessions();
          this.reset();
          for (const name of routes.keys()) this.set({ server: name }, counts.get(name) ?? 0);
        },
      });
    }
    const streams = opts.streams;
    new Gauge({
      name: "mcp_edge_streams_open",
      help: "SSE streams the edge holds (attached to a client or kept for resumption).",
      registers,
      collect() {
        this.set(streams());
      },
    });
    const perInstance = (name: string, help: string, read: (h: InstanceHealth) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ["server", "instance"],
        registers,
        collect() {
          this.reset();
          for (const route of routes.values()) {
            const health = route.upstream.health();
            const labels = instanceLabels(health);
            health.forEach((h, i) => this.set({ server: route.name, instance: labels[i] ?? OTHER }, read(h)));
          }
        },
      });
    perInstance("mcp_edge_upstream_up", "1 when the upstream instance is healthy, else 0.", (h) =>
      h.healthy ? 1 : 0,
    );
    perInstance("mcp_edge_upstream_sessions", "Sessions placed on the upstream instance.", (h) => h.sessions);
    perInstance("mcp_edge_upstream_inflight", "Calls in flight on the upstream instance.", (h) => h.inflight);
    if (opts.config.process) collectDefaultMetrics({ register: this.registry, prefix: "mcp_edge_" });
  }

  /** Subscribes to the pipeline's channels. */
  start(): void {
    if (this.#subscribed) return;
    this.#subscribed = true;
    diagnostics_channel.subscribe("mcp-edge:request:end", this.#onRequestEnd);
    diagnostics_channel.subscribe("mcp-edge:session", this.#onSession);
    diagnostics_channel.subscribe("mcp-edge:admin", this.#onAdmin);
  }

  stop(): void {
    if (!this.#subscribed) return;
    this.#subscribed = false;
    diagnostics_channel.unsubscribe("mcp-edge:request:end", this.#onRequestEnd);
    diagnostics_channel.unsubscribe("mcp-edge:session", this.#onSession);
    diagnostics_channel.unsubscribe("mcp-edge:admin", this.#onAdmin);
  }

  /**
   * A gauge read at scrape time, for other modules (the audit queue and spool depth):
   * `metrics.registerGauge("mcp_edge_audit_queue_depth", "Records waiting to be written.", () => q.length)`.
   * Names start with `mcp_edge_`; label values must be bounded by the caller. A reader that throws
   * keeps the gauge's last reading for that scrape instead of failing the whole page.
   */
  registerGauge(
    name: string,
    help: string,
    read: () => GaugeReading | Promise<GaugeReading>,
    labelNames: string[] = [],
  ): void {
    if (!/^mcp_edge_[a-z0-9_]+$/.test(name)) throw new Error(`metric name ${name}: mcp_edge_[a-z0-9_]+`);
    if (this.registry.getSingleMetric(name)) throw new Error(`metric ${name} is already registered`);
    new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      async collect() {
        let reading: GaugeReading;
        try {
          reading = await read();
        } catch {
          return; // keeps the last reading
        }
        this.reset();
        if (typeof reading === "number") this.set(reading);
        else for (const r of reading) this.set(r.labels, r.value);
      },
    });
  }

  /** The exposition text (Prometheus text format 0.0.4). */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  /**
   * `GET /metrics` on the admin listener. Open to whoever reaches that listener unless
   * `metrics.token` is set; then it takes `Authorization: Bearer <metrics.token>` (a scraper's own
   * credential: it needs no admin rights). docs/operations.md "Metrics and traces".
   */
  async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    req.resume();
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" });
      res.end("method not allowed\n");
      return;
    }
    const token = this.#opts.config.token;
    const given = bearer(req);
    if (token !== undefined && (given === undefined || !sameSecret(given, token))) {
      res.writeHead(401, { "www-authenticate": 'Bearer realm="metrics"', "content-type": "text/plain" });
      res.end("unauthorized\n");
      return;
    }
    let page: { contentType: string; body: string };
    try {
      page = await this.render();
    } catch {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end("metrics unavailable\n");
      return;
    }
    res.writeHead(200, {
      "content-type": page.contentType,
      "content-length": Buffer.byteLength(page.body),
      "cache-control": "no-store",
    });
    res.end(req.method === "HEAD" ? undefined : page.body);
  }

  #toolCap(server: string): LabelCap {
    let cap = this.#tools.get(server);
    if (!cap) {
      cap = new LabelCap(this.#opts.config.maxTools);
      this.#tools.set(server, cap);
    }
    return cap;
  }

  /** Labels whose values are coded but not checked here (limit names, end reasons, actions). */
  #bounded(label: string, value: string): string {
    let cap = this.#small.get(label);
    if (!cap) {
      cap = new LabelCap(64);
      this.#small.set(label, cap);
    }
    return cap.value(value);
  }

  #ours(route: Route): boolean {
    return this.#opts.routes.get(route.name) === route;
  }

  readonly #onRequestEnd = (message: unknown): void => {
    const ev = message as RequestEndEvent;
    const ctx = ev.ctx;
    if (!this.#ours(ctx.route)) return;
    const server = ctx.route.name;
    if (ev.error) {
      this.#errors.inc({ server, code: ev.error.code });
      if (ev.error.code === "EDGE_RATE_LIMITED") {
        const limit = ev.error.data?.limit;
        this.#rateLimited.inc({
          server,
          limit: this.#bounded("limit", typeof limit === "string" ? limit : ""),
        });
      }
    }
    const requests = (ctx.messages ?? []).filter(isRequest);
    const tenant = this.#tenants.value(ctx.principal?.tenant ?? "");
    for (const m of requests) {
      const method = this.#methods.value(m.method);
      this.#calls.inc({
        server,
        method,
        tool: method === "tools/call" ? this.#toolOf(server, m) : "",
        tenant,
        outcome: outcomeOf(ev, ctx.outcomes?.get(requestIdKey(m.id))),
      });
    }
    if (ctx.req.method !== "POST") return; // GET streams last as long as the client listens
    const method =
      requests.length === 1
        ? this.#methods.value((requests[0] as RpcRequest).method)
        : requests.length > 1
          ? "batch"
          : ctx.messages
            ? "notification"
            : "";
    this.#edgeSeconds.observe({ server, method }, ev.durationMs / 1000);
    const upstreamMs = ctx.upstream?.ms ?? elapsedSince(upstreamStartedAt(ctx));
    if (upstreamMs !== undefined) this.#upstreamSeconds.observe({ server, method }, upstreamMs / 1000);
  };

  #toolOf(server: string, m: RpcRequest): string {
    const name = (m.params as { name?: unknown } | undefined)?.name;
    return typeof name === "string" ? this.#toolCap(server).value(name) : OTHER;
  }

  readonly #onSession = (message: unknown): void => {
    const ev = message as SessionEvent;
    if (!this.#opts.routes.has(ev.server)) return;
    if (ev.kind === "start") this.#sessionsStarted.inc({ server: ev.server });
    else this.#sessionsEnded.inc({ server: ev.server, reason: this.#bounded("reason", ev.reason ?? "") });
  };

  readonly #onAdmin = (message: unknown): void => {
    const ev = message as AdminEvent;
    this.#admin.inc({ action: this.#bounded("action", ev.action), outcome: ev.outcome });
  };
}

function elapsedSince(start: number | undefined): number | undefined {
  return start === undefined ? undefined : performance.now() - start;
}
