import type { Config } from "../config/schema.ts";
import type { Logger } from "../observability/logger.ts";
import { Metrics } from "../observability/metrics.ts";
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
  deps: { routes: ReadonlyMap<string, Route>; stores: Stores; streams: StreamRegistry; log: Logger },
): Promise<Observers> {
  const { routes, stores, streams } = deps;
  let metrics: Metrics | undefined;
  if (config.metrics.enabled) {
    // With the session store down the count fails; /metrics still answers (it is the page that
    // reports mcp_edge_redis_up 0), with the last count.
    let lastCounts: ReadonlyMap<string, number> = new Map();
    metrics = new Metrics({
      config: config.metrics,
      routes,
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
  }
  const tracing = await Tracing.create({
    config: config.tracing,
    routes,
    markUpstream: metrics !== undefined,
    log: deps.log,
  });
  tracing.start();
  const intercept = tracing.interceptor();
  if (intercept) for (const route of routes.values()) route.interceptors.push(intercept);
  return {
    metrics,
    tracing,
    async stop() {
      metrics?.stop();
      await tracing.stop(); // flushes spans still batched for the OTLP exporter
    },
  };
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
