import type { Config } from "../config/schema.ts";
import type { Logger } from "../observability/logger.ts";
import type { AuthRefusals } from "../audit/auth-refusals.ts";
import { BREAKER_STATE_VALUE, Metrics } from "../observability/metrics.ts";
import { OtelMetrics } from "../observability/otel-metrics.ts";
import { Tracing } from "../observability/tracing.ts";
import type { StreamRegistry } from "../session/streams.ts";
import type { Route } from "../upstream/types.ts";
import type { Stores } from "./stores.ts";

export interface Observers {
  /** Prometheus metrics; undefined when `metrics.enabled` is false. */
  readonly metrics: Metrics | undefined;
  readonly tracing: Tracing;
  stop(): Promise<void>;
}

/**
 * Metrics and traces: they subscribe to the pipeline's diagnostics channels and read gauges when
 * scraped; tracing joins each route's forward interceptors. Started before the listeners, so the
 * first request is counted and traced.
 */
export async function startObservers(
  config: Config,
  deps: {
    routes: ReadonlyMap<string, Route>;
    owned: { has(route: Route): boolean };
    stores: Stores;
    streams: StreamRegistry;
    log: Logger;
    authRefusals: AuthRefusals;
  },
): Promise<Observers> {
  const { routes, owned, stores, streams } = deps;
  let metrics: Metrics | undefined;
  if (config.metrics.enabled) {
    // With the session store down the count fails; /metrics still answers (it is the page that
    // reports mcp_edge_redis_up 0), with the last count.
    let lastCounts: ReadonlyMap<string, number> = new Map();
    metrics = new Metrics({
      config: config.metrics,
      routes,
      owned,
      streams: () => streams.size,
      sessions: async () => {
        const counts = new Map<string, number>();
        try {
          for (const name of routes.keys()) {
            let n = 0;
            for (const c of (await stores.sessions.countByInstance(name)).values()) n += c;
            counts.set(name, n);
          }
        } catch {
          return lastCounts;
        }
        lastCounts = counts;
        return counts;
      },
    });
    metrics.start();
    registerStoreGauges(metrics, stores);
    metrics.registerGauge(
      "mcp_edge_stream_buffer_bytes",
      "Bytes of stream events buffered for replay (every stream together; the budget is streams.bufferBudget).",
      () => streams.bufferedBytes,
    );
    metrics.registerCounter(
      "mcp_edge_stream_buffer_evictions_total",
      "Streams dropped by the buffer budget (streams.bufferBudget or a tenant's share of it).",
      () => streams.evictions,
    );
    registerAuthRefusalGauges(metrics, deps.authRefusals);
  }
  const tracing = await Tracing.create({
    config: config.tracing,
    routes,
    owned,
    markUpstream: metrics !== undefined,
    log: deps.log,
  });
  tracing.start();
  const intercept = tracing.interceptor();
  if (intercept) for (const route of routes.values()) route.interceptors.push(intercept);
  // The MCP histograms through the OpenTelemetry metrics API, when asked for.
  const otel = config.metrics.otel
    ? new OtelMetrics({ owned, servers: routes, maxTools: config.metrics.maxTools })
    : undefined;
  otel?.start();
  return {
    metrics,
    tracing,
    async stop() {
      otel?.stop();
      metrics?.stop();
      await tracing.stop(); // flushes spans still batched for the OTLP exporter
    },
  };
}

/** Refused authentications since start: by route and reason, and the addresses with the most. */
function registerAuthRefusalGauges(metrics: Metrics, refusals: AuthRefusals): void {
  metrics.registerGauge(
    "mcp_edge_auth_refused",
    "Refused authentications (401, and 403 for a credential's tenant) since start, by server and reason (error code).",
    () =>
      refusals
        .figures(0)
        .by_route.map((r) => ({ labels: { server: r.server, reason: r.reason }, value: r.count })),
    ["server", "reason"],
  );
  metrics.registerGauge(
    "mcp_edge_auth_refused_by_address",
    "Refused authentications in the current and previous hour from the 10 source addresses with the most (IPv6 per /64).",
    () => refusals.figures(10).top_addresses.map((a) => ({ labels: { address: a.address }, value: a.count })),
    ["address"],
  );
  metrics.registerGauge(
    "mcp_edge_auth_refused_not_audited",
    "Refused authentications left out of the audit by its sampling bounds (since start).",
    () => refusals.figures(0).not_audited,
  );
}

/** Gauges read at scrape time: the audit queue and spool; in distributed mode Redis and its users. */
function registerStoreGauges(metrics: Metrics, stores: Stores): void {
  const a = stores.audit;
  metrics.registerGauge(
    "mcp_edge_audit_queue_depth",
    "Audit records waiting in memory.",
    () => a.stats().queued,
  );
  metrics.registerGauge(
    "mcp_edge_audit_spool_records",
    "Audit records in the spool.",
    () => a.stats().spooled,
  );
  metrics.registerGauge("mcp_edge_audit_spool_bytes", "Size of the audit spool.", () => a.stats().spoolBytes);
  metrics.registerGauge(
    "mcp_edge_audit_dropped",
    "Audit records dropped (queue over its hard bound).",
    () => a.stats().dropped,
  );
  metrics.registerGauge("mcp_edge_audit_store_up", "1 while the audit store takes writes.", () =>
    a.stats().storeUp ? 1 : 0,
  );
  const { shared, counters, events } = stores;
  if (!shared || !counters) return;
  metrics.registerGauge(
    "mcp_edge_redis_up",
    "1 while the Redis connection (sessions, counters, streams) is up.",
    () => (shared.redisReady() ? 1 : 0),
  );
  const breakers = [shared.redisGuard.breaker, shared.pg.breaker];
  metrics.registerGauge(
    "mcp_edge_store_breaker_state",
    "Circuit breaker of a shared store: 0 closed, 1 half-open (one probe out), 2 open (calls fail fast).",
    () => breakers.map((b) => ({ labels: { store: b.name }, value: BREAKER_STATE_VALUE[b.state] })),
    ["store"],
  );
  metrics.registerGauge(
    "mcp_edge_store_breaker_opened",
    "Times a shared store's circuit breaker opened (since start).",
    () => breakers.map((b) => ({ labels: { store: b.name }, value: b.opened })),
    ["store"],
  );
  metrics.registerGauge(
    "mcp_edge_ratelimit_fallback_decisions",
    "Rate-limit decisions the local fallback limiter made because Redis was unreachable (since start).",
    () => counters.fallbackDecisions,
  );
  if (!events) return;
  metrics.registerGauge(
    "mcp_edge_stream_event_write_failures",
    "Stream events that could not be written to Redis (since start); resumption on another instance then misses them.",
    () => events.stats.writeFailures,
  );
  metrics.registerGauge(
    "mcp_edge_stream_followers",
    "Clients on this instance following a stream that another instance holds.",
    () => events.followers,
  );
}
