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
import type { RpcMessage } from "../mcp/jsonrpc.ts";
import type { Logger } from "./logger.ts";
import type { RequestEndEvent, RequestFacts } from "./channels.ts";
import {
  namedOperations,
  type Operation,
  operationAttributes,
  operationsOf,
  requestAttributes,
  spanName,
  upstreamAttributes,
} from "./semconv.ts";

/**
 * OpenTelemetry traces through @opentelemetry/api, per the semantic conventions for MCP
 * (src/observability/semconv.ts): one SERVER span per request to an MCP route, named
 * `{mcp.method.name} {target}` (`tools/call get-weather`; `GET /mcp` for a request that carries
 * no message), and, when the request reaches the upstream, one CLIENT span of the same name under
 * it. W3C Trace Context (https://www.w3.org/TR/trace-context/) travels both ways in the HTTP
 * headers and, for MCP messages, in `params._meta` (`traceparent`, `tracestate`): a client's
 * context from `params._meta` is the parent (the conventions prefer it to the transport's; the
 * header context, when it differs, becomes a link), else the header's; the upstream receives the
 * CLIENT span's context in both.
 *
 * Spans are started lazily, with the request's arrival as start time, from two points that exist
 * anyway: the forward interceptor (`interceptor()`, composed into each route at boot, run as the
 * forward stage builds the upstream headers)
 * in src/forward/streamable.ts) and the request-end channel. Nothing else on the hot path changes,
 * and nothing relies on an active-context manager: parents are passed explicitly.
 *
 * Attributes name the method, tool or prompt, server and tenant, the session as its hash; never
 * arguments, session ids or credentials.
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
  /** The span name as first known (the request's end sets the final one). */
  name: string;
  upstream?: Span;
}

/** What a request's spans are made from and keyed by (the forwarding request and the facts at its end are one object). */
type SpanKey = Pick<ForwardingRequest, "requestId" | "route" | "httpMethod" | "headers" | "startedAt"> &
  Partial<RequestFacts>;

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
   * tracing on, starts the CLIENT span and puts its context in `traceparent`/`tracestate` and `params._meta`.
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
      spans.name,
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
    injectMeta(ctx, carrier);
  }

  #requestSpans(tracer: Tracer, ctx: SpanKey): RequestSpans {
    let spans = this.#spans.get(ctx);
    if (!spans) {
      // The MCP message's context first (params._meta); the transport's, when it differs, is linked.
      const fromHeaders = this.#propagator.extract(ROOT_CONTEXT, ctx.headers, defaultTextMapGetter);
      const meta = metaCarrier(ctx.messages);
      const fromMeta = meta ? this.#propagator.extract(ROOT_CONTEXT, meta, defaultTextMapGetter) : undefined;
      const metaSpan = fromMeta && trace.getSpanContext(fromMeta);
      const headerSpan = trace.getSpanContext(fromHeaders);
      const parent = metaSpan ? (fromMeta as Context) : fromHeaders;
      const links =
        metaSpan && headerSpan && headerSpan.spanId !== metaSpan.spanId ? [{ context: headerSpan }] : [];
      const name = nameOf(ctx, namedOperations(ctx.messages));
      const request = tracer.startSpan(
        name,
        {
          kind: SpanKind.SERVER,
          startTime: performance.timeOrigin + ctx.startedAt,
          attributes: {
            "mcp_edge.server": ctx.route.name,
            "mcp_edge.request_id": ctx.requestId,
            "http.request.method": ctx.httpMethod,
          },
          links,
        },
        parent,
      );
      spans = { parent, request, name };
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
    const ops = operationsOf(ev);
    const name = nameOf(ctx, ops);
    const op = ops.length === 1 ? ops[0] : undefined;
    const attributes: Attributes = { ...requestAttributes(ctx), ...callAttributes(ctx, ops, op) };
    attributes["http.response.status_code"] = ev.status;
    if (ctx.clientAddress) {
      attributes["client.address"] = ctx.clientAddress;
      if (ctx.clientPort !== undefined) attributes["client.port"] = ctx.clientPort;
    }
    // The request's failure: the edge's own error, else the one operation's.
    const errorType = ev.error?.code ?? op?.errorType ?? ops.find((o) => o.errorType)?.errorType;
    if (errorType !== undefined) attributes["error.type"] = errorType;
    spans.request.updateName(name);
    spans.request.setAttributes(attributes);
    // MCP conventions: the status is ERROR when `error.type` is set, described by the error message.
    if (errorType !== undefined)
      spans.request.setStatus({
        code: SpanStatusCode.ERROR,
        message: ev.error?.message ?? op?.errorMessage ?? errorType,
      });
    if (spans.upstream) {
      spans.upstream.updateName(name);
      spans.upstream.setAttributes({ ...callAttributes(ctx, ops, op), ...upstreamAttributes(ctx) });
      // The upstream's own failure (an error answer, a tool error, the edge's upstream codes).
      const upstreamError =
        ev.error === undefined
          ? (op?.errorType ?? ops.find((o) => o.errorType)?.errorType)
          : ev.error.code.startsWith("EDGE_UPSTREAM")
            ? ev.error.code
            : undefined;
      if (upstreamError !== undefined) {
        spans.upstream.setAttribute("error.type", upstreamError);
        spans.upstream.setStatus({ code: SpanStatusCode.ERROR, message: ev.error?.message ?? upstreamError });
      }
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

/** The span name of a request: its one operation's, `batch`, or the HTTP method and route. */
function nameOf(ctx: SpanKey, ops: Operation[]): string {
  const only = ops.length === 1 ? ops[0] : undefined;
  if (only) return spanName(only);
  if (ops.length > 1) return "batch";
  return `${ctx.httpMethod} ${ctx.route.config.route}`;
}

/** Method, tool or prompt, request id and tenant of a request: names only, never arguments. */
function callAttributes(ctx: RequestFacts, ops: Operation[], op: Operation | undefined): Attributes {
  const attributes: Attributes = op
    ? operationAttributes(op, true)
    : ops.length > 1
      ? { "mcp.method.name": "batch" }
      : {};
  delete attributes["error.type"]; // the caller sets the request's (or the upstream's) own
  const tenant = ctx.principal?.tenant;
  if (tenant) attributes["mcp_edge.tenant"] = tenant;
  return attributes;
}

/** The `params._meta` of the first MCP message that carries a `traceparent` there. */
function metaCarrier(messages: readonly RpcMessage[] | undefined): Record<string, string> | undefined {
  for (const m of messages ?? []) {
    const meta = (m as { params?: { _meta?: Record<string, unknown> } }).params?._meta;
    if (meta && typeof meta.traceparent === "string") {
      const carrier: Record<string, string> = { traceparent: meta.traceparent };
      if (typeof meta.tracestate === "string") carrier.tracestate = meta.tracestate;
      return carrier;
    }
  }
  return undefined;
}

const LOSSY_NUMBER = /\d{16,}/;

/**
 * Puts the upstream span's context in `params._meta` of every request and notification going
 * upstream (the conventions' place for it in MCP), replacing the client's, and the body text
 * with it: the forwarders send `body` after the interceptors ran.
 */
function injectMeta(ctx: ForwardingRequest, carrier: Record<string, string>): void {
  const messages = ctx.messages;
  if (!messages || messages.length === 0) return;
  // A body that JSON.parse cannot hold exactly (a run of 16+ digits: an integer past 2^53, a
  // decimal past double precision) is forwarded as the client wrote it; its context goes in the
  // headers only.
  if (ctx.body !== undefined && LOSSY_NUMBER.test(ctx.body)) return;
  let changed = false;
  for (const m of messages) {
    if (!("method" in m)) continue;
    const holder = m as { params?: unknown };
    const params = holder.params;
    if (params !== undefined && (params === null || typeof params !== "object" || Array.isArray(params)))
      continue;
    const p = (params ?? {}) as { _meta?: unknown };
    const meta =
      p._meta !== null && typeof p._meta === "object" && !Array.isArray(p._meta)
        ? (p._meta as Record<string, unknown>)
        : {};
    const next: Record<string, unknown> = { ...meta, traceparent: carrier.traceparent };
    if (carrier.tracestate !== undefined) next.tracestate = carrier.tracestate;
    else delete next.tracestate;
    holder.params = { ...p, _meta: next };
    changed = true;
  }
  if (changed) ctx.body = JSON.stringify(ctx.batch ? messages : messages[0]);
}
