import diagnostics_channel from "node:diagnostics_channel";
import type { IncomingMessage, ServerResponse } from "node:http";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Config } from "../config/schema.ts";
import { isRequest, type RpcRequest, requestIdKey } from "../mcp/jsonrpc.ts";
import type { InstanceHealth, Route } from "../upstream/types.ts";
import type { AdminEvent, AsEvent, CallOutcome, RequestEndEvent, SessionEvent } from "./channels.ts";
import type { BreakerState } from "../lib/breaker.ts";
import { MCP_DURATION_BUCKETS, operationsOf, protocolVersionOf, sessionErrorType } from "./semconv.ts";

/**
 * Prometheus metrics, fed without touching the hot
 * (one file of ~580 lines on purpose: every metric the edge exports, its labels and their bounds
 * are declared together, so the /metrics page can be reviewed in one place)
 * path: the pipeline publishes diagnostics_channel events and this module
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

/**
 * `mcp_edge_store_breaker_state{store}`: a store's circuit breaker (src/lib/breaker.ts) as a number,
 * so an alert can say `> 0`: 0 closed (calls go), 1 half-open (one probe out), 2 open (calls fail
 * fast).
 */
export const BREAKER_STATE_VALUE: Readonly<Record<BreakerState, number>> = {
  closed: 0,
  "half-open": 1,
  open: 2,
};
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
  /** The gateway's routes (a config reload changes the map in place). */
  routes: ReadonlyMap<string, Route>;
  /**
   * Whether a request's route is this gateway's (any it served since it started): events of other
   * gateways in the same process are ignored. Default: the route is in `routes` now.
   */
  owned?: { has(route: Route): boolean };
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

/**
 * Series of one metric found by their label values through nested Maps (one level per label): no
 * key string is built per observation, and the label values, already hashed by the label caps,
 * are looked up with their cached hashes. Holds the series in the order they first appeared.
 */
class SeriesIndex<T> {
  readonly #root = new Map<string, unknown>();
  readonly #depth: number;
  readonly #make: (values: readonly string[]) => T;
  readonly all: T[] = [];

  constructor(depth: number, make: (values: readonly string[]) => T) {
    this.#depth = depth;
    this.#make = make;
  }

  find(values: readonly string[]): T {
    let level = this.#root;
    const last = this.#depth - 1;
    for (let i = 0; i < last; i++) {
      const v = values[i] as string;
      let next = level.get(v) as Map<string, unknown> | undefined;
      if (!next) {
        next = new Map();
        level.set(v, next);
      }
      level = next;
    }
    const leaf = values[last] as string;
    let series = level.get(leaf) as T | undefined;
    if (series === undefined) {
      series = this.#make(values);
      level.set(leaf, series);
      this.all.push(series);
    }
    return series;
  }
}

/** A label set in the order of the metric's label names (the order prom-client writes them in). */
function labelSet<L extends string>(names: readonly L[], values: readonly string[]): Record<L, string> {
  const labels = {} as Record<L, string>;
  names.forEach((n, i) => (labels[n] = values[i] as string));
  return labels;
}

/**
 * A counter's series kept here rather than in prom-client: prom-client hashes the label set on
 * every `inc` (sorting the names, validating the labels). At scrape time the series are handed to
 * the prom-client Counter in the order they first appeared, so the exposition text is the one
 * prom-client would have written.
 */
class CounterSeries<L extends string> {
  readonly #index: SeriesIndex<{ labels: Record<L, string>; value: number }>;

  constructor(config: { name: string; help: string; labelNames: readonly L[]; registers: Registry[] }) {
    const names = config.labelNames;
    const index = (this.#index = new SeriesIndex(names.length, (values) => ({
      labels: labelSet(names, values),
      value: 0,
    })));
    new Counter<L>({
      ...config,
      labelNames: [...names],
      collect() {
        this.reset();
        for (const s of index.all) this.inc(s.labels, s.value);
      },
    });
  }

  /** Adds one to the series of these label values (in label-name order). */
  inc(values: readonly string[]): void {
    this.#index.find(values).value++;
  }
}

/** One histogram series: per-bucket counts (not cumulative), sum and count, as prom-client keeps them. */
interface HistogramSeriesData {
  labels: Record<string, string>;
  buckets: number[];
  sum: number;
  count: number;
}

/**
 * A histogram's series kept here (see CounterSeries): observing is a lookup and a bucket search.
 * At scrape time the series are written into the prom-client Histogram's own table, in the order
 * they first appeared, so the text (buckets, sum, count, labels) is prom-client's.
 */
class HistogramSeries<L extends string> {
  readonly #index: SeriesIndex<HistogramSeriesData>;
  readonly #bounds: readonly number[];

  constructor(config: {
    name: string;
    help: string;
    labelNames: readonly L[];
    buckets: readonly number[];
    registers: Registry[];
  }) {
    const names = config.labelNames;
    const bounds = (this.#bounds = config.buckets);
    const index = (this.#index = new SeriesIndex(names.length, (values) => ({
      labels: labelSet(names, values),
      buckets: bounds.map(() => 0),
      sum: 0,
      count: 0,
    })));
    new Histogram<L>({
      ...config,
      labelNames: [...names],
      buckets: [...bounds],
      collect() {
        this.reset();
        const table = (this as unknown as { hashMap: Record<string, unknown> }).hashMap;
        index.all.forEach((s, n) => {
          const bucketValues: Record<string, number> = {};
          bounds.forEach((b, i) => (bucketValues[b] = s.buckets[i] as number));
          table[`#${n}`] = { labels: s.labels, bucketValues, sum: s.sum, count: s.count };
        });
      },
    });
  }

  /** Observes a value in the series of these label values (in label-name order). */
  observe(values: readonly string[], value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
    const s = this.#index.find(values);
    const bounds = this.#bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= (bounds[i] as number)) {
        (s.buckets[i] as number)++;
        break;
      }
    }
    s.sum += value;
    s.count += 1;
  }
}

export class Metrics {
  readonly registry = new Registry();
  readonly #opts: MetricsOptions;
  readonly #tenants: LabelCap;
  readonly #tools = new Map<string, LabelCap>();
  readonly #methods = new LabelCap(32, MCP_METHODS);
  readonly #small = new Map<string, LabelCap>();
  readonly #calls: CounterSeries<"server" | "method" | "tool" | "tenant" | "outcome">;
  readonly #edgeSeconds: HistogramSeries<"server" | "method">;
  readonly #upstreamSeconds: HistogramSeries<"server" | "method">;
  readonly #errors: CounterSeries<"server" | "code">;
  readonly #rateLimited: CounterSeries<"server" | "limit">;
  readonly #sessionsStarted: CounterSeries<"server">;
  readonly #sessionsEnded: CounterSeries<"server" | "reason">;
  readonly #admin: CounterSeries<"action" | "outcome">;
  readonly #as: CounterSeries<"leg" | "outcome">;
  readonly #operationSeconds: HistogramSeries<
    "server" | "mcp_method_name" | "gen_ai_tool_name" | "error_type" | "mcp_protocol_version"
  >;
  readonly #sessionSeconds: HistogramSeries<"server" | "mcp_protocol_version" | "error_type">;
  #subscribed = false;

  constructor(opts: MetricsOptions) {
    this.#opts = opts;
    // "" (no tenant) is always its own value: tenancy is optional, and those calls are not "other".
    this.#tenants = new LabelCap(opts.config.maxTenants, [""]);
    const registers = [this.registry];
    this.#calls = new CounterSeries({
      name: "mcp_edge_calls_total",
      help: "JSON-RPC requests by server, method, tool (tools/call only), tenant and outcome (ok, tool_error, rpc_error, refused, failed, aborted).",
      labelNames: ["server", "method", "tool", "tenant", "outcome"],
      registers,
    });
    this.#edgeSeconds = new HistogramSeries({
      name: "mcp_edge_request_duration_seconds",
      help: "Time from a POST's arrival at the edge to the end of its answer (method: the JSON-RPC method, `batch`, or `notification`).",
      labelNames: ["server", "method"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#upstreamSeconds = new HistogramSeries({
      name: "mcp_edge_upstream_duration_seconds",
      help: "Time from the edge forwarding a POST upstream to the end of the upstream's answer (cache hits and refusals never reach it).",
      labelNames: ["server", "method"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#errors = new CounterSeries({
      name: "mcp_edge_errors_total",
      help: "Requests the edge refused or failed, by error code (docs/errors.md).",
      labelNames: ["server", "code"],
      registers,
    });
    this.#rateLimited = new CounterSeries({
      name: "mcp_edge_rate_limited_total",
      help: "Requests refused by a rate limit (EDGE_RATE_LIMITED), by the limit that refused.",
      labelNames: ["server", "limit"],
      registers,
    });
    this.#sessionsStarted = new CounterSeries({
      name: "mcp_edge_sessions_started_total",
      help: "MCP sessions started by this process.",
      labelNames: ["server"],
      registers,
    });
    this.#sessionsEnded = new CounterSeries({
      name: "mcp_edge_sessions_ended_total",
      help: "MCP sessions ended by this process, by reason.",
      labelNames: ["server", "reason"],
      registers,
    });
    this.#as = new CounterSeries({
      name: "mcp_edge_oauth_legs_total",
      help: "Legs of the edge's OAuth authorization server (docs/auth.md), by leg and outcome.",
      labelNames: ["leg", "outcome"],
      registers,
    });
    this.#admin = new CounterSeries({
      name: "mcp_edge_admin_actions_total",
      help: "Admin API actions, by action and outcome.",
      labelNames: ["action", "outcome"],
      registers,
    });
    // The MCP semantic conventions' histograms (semconv.ts), under their Prometheus names (dots to
    // underscores, unit suffix), attribute names likewise, plus the edge's `server`.
    this.#operationSeconds = new HistogramSeries({
      name: "mcp_server_operation_duration_seconds",
      help: "OpenTelemetry mcp.server.operation.duration: one JSON-RPC request or notification of a POST, from its arrival to the end of its answer (error_type: JSON-RPC error code, tool_error, aborted, or the edge's code).",
      labelNames: ["server", "mcp_method_name", "gen_ai_tool_name", "error_type", "mcp_protocol_version"],
      buckets: MCP_DURATION_BUCKETS,
      registers,
    });
    this.#sessionSeconds = new HistogramSeries({
      name: "mcp_server_session_duration_seconds",
      help: "OpenTelemetry mcp.server.session.duration: MCP sessions ended by this process, from start to end (error_type backend_lost when the upstream lost it).",
      labelNames: ["server", "mcp_protocol_version", "error_type"],
      buckets: MCP_DURATION_BUCKETS,
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
    diagnostics_channel.subscribe("mcp-edge:as", this.#onAs);
  }

  stop(): void {
    if (!this.#subscribed) return;
    this.#subscribed = false;
    diagnostics_channel.unsubscribe("mcp-edge:request:end", this.#onRequestEnd);
    diagnostics_channel.unsubscribe("mcp-edge:session", this.#onSession);
    diagnostics_channel.unsubscribe("mcp-edge:admin", this.#onAdmin);
    diagnostics_channel.unsubscribe("mcp-edge:as", this.#onAs);
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

  /**
   * A counter read at scrape time, for other modules: `read` returns the total since start (it only
   * grows). Same naming rules as `registerGauge`.
   */
  registerCounter(name: string, help: string, read: () => number): void {
    if (!/^mcp_edge_[a-z0-9_]+_total$/.test(name))
      throw new Error(`metric name ${name}: mcp_edge_[a-z0-9_]+_total`);
    if (this.registry.getSingleMetric(name)) throw new Error(`metric ${name} is already registered`);
    new Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(read());
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
    const owned = this.#opts.owned;
    return owned ? owned.has(route) : this.#opts.routes.get(route.name) === route;
  }

  readonly #onRequestEnd = (message: unknown): void => {
    const ev = message as RequestEndEvent;
    const ctx = ev.request;
    if (!this.#ours(ctx.route)) return;
    const server = ctx.route.name;
    const error = ev.error;
    if (error) {
      const code = error.code;
      this.#errors.inc([server, code]);
      if (code === "EDGE_RATE_LIMITED") {
        const data = error.data?.limit;
        const limit = this.#bounded("limit", typeof data === "string" ? data : "");
        this.#rateLimited.inc([server, limit]);
      }
    }
    const messages = ctx.messages;
    const tenant = this.#tenants.value(ctx.principal?.tenant ?? "");
    let requests = 0;
    let only: RpcRequest | undefined;
    if (messages) {
      for (const m of messages) {
        if (!isRequest(m)) continue;
        requests++;
        only = m;
        const method = this.#methods.value(m.method);
        const tool = method === "tools/call" ? this.#toolOf(server, m) : "";
        const outcome = outcomeOf(ev, ctx.outcomes?.get(requestIdKey(m.id)));
        this.#calls.inc([server, method, tool, tenant, outcome]);
      }
    }
    if (ctx.httpMethod !== "POST") return; // GET streams last as long as the client listens
    const method =
      requests === 1
        ? this.#methods.value((only as RpcRequest).method)
        : requests > 1
          ? "batch"
          : messages
            ? "notification"
            : "";
    const key = [server, method];
    this.#edgeSeconds.observe(key, ev.durationMs / 1000);
    if (messages && messages.length > 0) {
      const version = this.#bounded("mcp_protocol_version", protocolVersionOf(ctx) ?? "");
      const seconds = ev.durationMs / 1000;
      for (const op of operationsOf(ev)) {
        const opMethod = this.#methods.value(op.method);
        const tool = op.tool !== undefined ? this.#toolCap(server).value(op.tool) : "";
        const errorType = op.errorType !== undefined ? this.#bounded("error_type", op.errorType) : "";
        this.#operationSeconds.observe([server, opMethod, tool, errorType, version], seconds);
      }
    }
    const upstreamMs = ctx.upstream?.ms ?? elapsedSince(ctx.upstreamAt);
    if (upstreamMs !== undefined) this.#upstreamSeconds.observe(key, upstreamMs / 1000);
  };

  #toolOf(server: string, m: RpcRequest): string {
    const name = (m.params as { name?: unknown } | undefined)?.name;
    return typeof name === "string" ? this.#toolCap(server).value(name) : OTHER;
  }

  readonly #onSession = (message: unknown): void => {
    const ev = message as SessionEvent;
    if (!this.#opts.routes.has(ev.server)) return;
    const server = ev.server;
    if (ev.kind === "start") this.#sessionsStarted.inc([server]);
    else {
      const reason = this.#bounded("reason", ev.reason ?? "");
      this.#sessionsEnded.inc([server, reason]);
      if (ev.createdAt !== undefined) {
        const version = this.#bounded("mcp_protocol_version", ev.protocolVersion ?? "");
        const seconds = Math.max(0, Date.now() - ev.createdAt) / 1000;
        this.#sessionSeconds.observe([server, version, sessionErrorType(ev) ?? ""], seconds);
      }
    }
  };

  readonly #onAs = (message: unknown): void => {
    const ev = message as AsEvent;
    this.#as.inc([ev.leg, ev.outcome]);
  };

  readonly #onAdmin = (message: unknown): void => {
    const ev = message as AdminEvent;
    const action = this.#bounded("action", ev.action);
    const outcome = ev.outcome;
    this.#admin.inc([action, outcome]);
  };
}

function elapsedSince(start: number | undefined): number | undefined {
  return start === undefined ? undefined : performance.now() - start;
}
