import diagnostics_channel from "node:diagnostics_channel";
import {
  type Attributes,
  type Context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import type { Config } from "../config/schema.ts";
import type { ForwardInterceptor, ForwardingRequest, Route } from "../upstream/types.ts";
import { isRequest } from "../mcp/jsonrpc.ts";
import type { Logger } from "./logger.ts";
import type { RequestEndEvent, RequestFacts } from "./channels.ts";

/**
 * OpenTelemetry traces through @opentelemetry/api: one `mcp.request` span (SERVER) per request to
 * an MCP route and, when the request reaches the upstream, one `mcp.upstream` span (CLIENT) under
 * it. W3C Trace Context (https://www.w3.org/TR/trace-context/): a client's `traceparent` is
 * continued, and the upstream receives the `mcp.upstream` span's context in its `traceparent`.
 *
 * Spans are started lazily, with the request's arrival as start time, from two points that exist
 * anyway: the forward interceptor (`interceptor()`, composed into each route at boot, run as the
 * forward stage builds the upstream headers)
 * in src/forward/streamable.ts) and the request-end channel. Nothing else on the hot path changes,
 * and nothing relies on an active-context manager: parents are passed explicitly.
 *
 * Attributes name the method, tool, server and tenant; never arguments, session ids or credentials.
 *
 * Off (the default), nothing is created and the client's own `traceparent`/`tracestate` are
 * forwarded unchanged, as they always were (src/mcp/hygiene.ts forwardableHeaders).
 */

/** What inject/extract need: the global `propagation` API, or a propagator instance. */
interface Propagator {
  inject(
    context: Context,
    carrier: Record<string, string>,
    setter: TextMapSetter<Record<string, string>>,
  ): void;
  extract(context: Context, carrier: unknown, getter: TextMapGetter<unknown>): Context;
}

interface RequestSpans {
  /** The client's trace context (ROOT_CONTEXT when it sent none). */
  parent: Context;
  request: Span;
  upstream?: Span;
}

/** What a request's spans are made from and keyed by (the forwarding request and the facts at its end are one object). */
type SpanKey = Pick<ForwardingRequest, "requestId" | "route" | "httpMethod" | "headers" | "startedAt">;

export interface TracingOptions {
  config: Config["tracing"];
  routes: ReadonlyMap<string, Route>;
  /** Whether a request's route is this gateway's (see MetricsOptions.owned). */
  owned?: { has(route: Route): boolean };
  /** Record when requests reach their upstream (for the upstream latency histogram). */
  markUpstream: boolean;
  log: Logger;
}

export class Tracing {
  readonly #routes: ReadonlyMap<string, Route>;
  readonly #owned: { has(route: Route): boolean } | undefined;
  /** Undefined: spans are off. */
  readonly #tracer: Tracer | undefined;
  readonly #propagator: Propagator;
  readonly #markUpstream: boolean;
  readonly #shutdown: (() => Promise<void>) | undefined;
  readonly #spans = new WeakMap<SpanKey, RequestSpans>();
  #started = false;

  private constructor(
    opts: TracingOptions,
    tracer: Tracer | undefined,
    propagator: Propagator,
    shutdown?: () => Promise<void>,
  ) {
    this.#routes = opts.routes;
    this.#owned = opts.owned;
    this.#tracer = tracer;
    this.#propagator = propagator;
    this.#markUpstream = opts.markUpstream;
    this.#shutdown = shutdown;
  }

  /**
   * `tracing.otlp`: the edge's own SDK provider (its own, not the global one) with a batching
   * OTLP/HTTP exporter, loaded only then. `tracing.enabled` alone: the global API, i.e. whatever
   * provider and propagator the host registered (a no-op when none).
   */
  static async create(opts: TracingOptions): Promise<Tracing> {
    const cfg = opts.config;
    if (cfg.otlp) {
      const [sdk, { OTLPTraceExporter }, { W3CTraceContextPropagator }, { resourceFromAttributes }] =
        await Promise.all([
          import("@opentelemetry/sdk-trace"),
          import("@opentelemetry/exporter-trace-otlp-http"),
          import("@opentelemetry/core"),
          import("@opentelemetry/resources"),
        ]);
      const exporter = new OTLPTraceExporter({ url: cfg.otlp.url, headers: cfg.otlp.headers });
      const provider = new sdk.TracerProvider({
        resource: resourceFromAttributes({ "service.name": cfg.serviceName }),
        // A trace the client started keeps the client's sampling decision (W3C trace-flags).
        sampler: new sdk.ParentBasedSampler({ root: new sdk.TraceIdRatioBasedSampler(cfg.sampleRatio) }),
        spanProcessors: [new sdk.BatchSpanProcessor({ exporter })],
      });
      opts.log.info({ otlp: new URL(cfg.otlp.url).origin }, "tracing: exporting spans over OTLP/HTTP");
      return new Tracing(opts, provider.getTracer("mcp-edge"), new W3CTraceContextPropagator(), () =>
        provider.shutdown(),
      );
    }
    return new Tracing(opts, cfg.enabled ? trace.getTracer("mcp-edge") : undefined, propagation);
  }

  get enabled(): boolean {
    return this.#tracer !== undefined;
  }

  start(): void {
    if (this.#started) return;
    this.#started = true;
    if (this.#tracer) diagnostics_channel.subscribe("mcp-edge:request:end", this.#onRequestEnd);
  }

  /** Stops creating spans and flushes the exporter (if the edge owns one). */
  async stop(): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    if (this.#tracer) diagnostics_channel.unsubscribe("mcp-edge:request:end", this.#onRequestEnd);
    await this.#shutdown?.().catch(() => undefined);
  }

  /**
   * The forward interceptor of every route, or undefined when neither spans nor the upstream mark
   * are wanted: marks the start of the upstream exchange (upstream latency metric) and, with
   * tracing on, starts the `mcp.upstream` span and puts its context in `traceparent`/`tracestate`.
   */
  interceptor(): ForwardInterceptor | undefined {
    if (!this.#tracer && !this.#markUpstream) return undefined;
    return (request, outgoing) => this.#forwarding(request, outgoing.headers);
  }

  #forwarding(ctx: ForwardingRequest, headers: Record<string, string>): void {
    if (this.#markUpstream && ctx.upstreamAt === undefined) ctx.upstreamAt = performance.now();
    const tracer = this.#tracer;
    if (!tracer) return;
    const spans = this.#requestSpans(tracer, ctx);
    spans.upstream ??= tracer.startSpan(
      "mcp.upstream",
      { kind: SpanKind.CLIENT, startTime: now(), attributes: { "mcp_edge.server": ctx.route.name } },
      trace.setSpan(spans.parent, spans.request),
    );
    const carrier: Record<string, string> = {};
    this.#propagator.inject(trace.setSpan(spans.parent, spans.upstream), carrier, defaultTextMapSetter);
    // Without a propagator (global API, none registered) nothing is injected: the client's own
    // headers, already in `headers`, go upstream unchanged.
    if (carrier.traceparent === undefined) return;
    headers.traceparent = carrier.traceparent;
    if (carrier.tracestate !== undefined) headers.tracestate = carrier.tracestate;
    else delete headers.tracestate;
  }

  #requestSpans(tracer: Tracer, ctx: SpanKey): RequestSpans {
    let spans = this.#spans.get(ctx);
    if (!spans) {
      const parent = this.#propagator.extract(ROOT_CONTEXT, ctx.headers, defaultTextMapGetter);
      const request = tracer.startSpan(
        "mcp.request",
        {
          kind: SpanKind.SERVER,
          startTime: performance.timeOrigin + ctx.startedAt,
          attributes: {
            "mcp_edge.server": ctx.route.name,
            "mcp_edge.request_id": ctx.requestId,
            "http.request.method": ctx.httpMethod,
          },
        },
        parent,
      );
      spans = { parent, request };
      this.#spans.set(ctx, spans);
    }
    return spans;
  }

  #ours(route: Route): boolean {
    return this.#owned ? this.#owned.has(route) : this.#routes.get(route.name) === route;
  }

  readonly #onRequestEnd = (message: unknown): void => {
    const ev = message as RequestEndEvent;
    const ctx = ev.request;
    const tracer = this.#tracer;
    if (!tracer || !this.#ours(ctx.route)) return;
    const end = now();
    const spans = this.#requestSpans(tracer, ctx);
    this.#spans.delete(ctx);
    const attributes = callAttributes(ctx);
    attributes["http.response.status_code"] = ev.status;
    // OTel HTTP semantic conventions: a server span is an error for 5xx only; a refusal (4xx) is
    // the client's, and keeps its code in `error.type`.
    const failed = (ev.error?.status ?? 0) >= 500 || ev.status >= 500;
    if (ev.error) attributes["error.type"] = ev.error.code;
    spans.request.setAttributes(attributes);
    if (failed)
      spans.request.setStatus({ code: SpanStatusCode.ERROR, message: ev.error?.code ?? `HTTP ${ev.status}` });
    if (spans.upstream) {
      spans.upstream.setAttributes(callAttributes(ctx));
      if (failed && ev.error?.code.startsWith("EDGE_UPSTREAM"))
        spans.upstream.setStatus({ code: SpanStatusCode.ERROR, message: ev.error.code });
      spans.upstream.end(end);
    }
    spans.request.end(end);
  };
}

/**
 * Every span time from one clock (the request's start is `ctx.startedAt`, a performance.now()
 * reading): left to the SDK, a span with an explicit start ends on Date.now() and one without on
 * the performance clock, and the two can disagree by a millisecond.
 */
function now(): number {
  return performance.timeOrigin + performance.now();
}

/** Method, tool and tenant of a request: names only, never arguments. */
function callAttributes(ctx: RequestFacts): Attributes {
  const attributes: Attributes = {};
  const requests = (ctx.messages ?? []).filter(isRequest);
  const first = requests[0];
  if (requests.length > 1) attributes["mcp.method.name"] = "batch";
  else if (first) {
    attributes["mcp.method.name"] = first.method;
    const tool = (first.params as { name?: unknown } | undefined)?.name;
    if (first.method === "tools/call" && typeof tool === "string") attributes["gen_ai.tool.name"] = tool;
  }
  const tenant = ctx.principal?.tenant;
  if (tenant) attributes["mcp_edge.tenant"] = tenant;
  return attributes;
}
