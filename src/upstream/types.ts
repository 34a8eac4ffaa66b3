import type { IncomingHttpHeaders } from "node:http";
import type { ServerConfig } from "../config/schema.ts";
import type { EgressDecision, EgressSink } from "../egress/proxy.ts";
import type { RpcMessage, RpcRequest } from "../mcp/jsonrpc.ts";
import type { UpstreamBinding } from "../store/types.ts";

/**
 * Credentials the edge sends to an upstream (src/upstream/credentials.ts builds the configured
 * ones; the token vault hands a user's own per request).
 */
export interface UpstreamCredentials {
  /**
   * Headers to add to one upstream request (lower-case names). Waits for a token when none is
   * valid (single-flight with every other waiter); `signal` stops the wait, not the shared fetch.
   * Throws GatewayError EDGE_UPSTREAM_UNAVAILABLE (503, Retry-After) when no token can be had.
   */
  headers(signal?: AbortSignal): Promise<Record<string, string>>;
  /**
   * The headers `headers()` would give, when they are known without waiting (no credentials, or
   * static ones); undefined otherwise. Saves the request path an await per call.
   */
  now?(): Record<string, string> | undefined;
  /**
   * The upstream answered 401 to a request sent with `rejected` (the headers `headers()` gave).
   * Resolves true when different credentials now exist, worth one retry of that request: a newer
   * token than the rejected one, already fetched or fetched now. Throws only a GatewayError the
   * client should get instead of the upstream's 401 (a user's connection that must be made again).
   */
  refreshAfterRejection(rejected: Record<string, string>): Promise<boolean>;
  /** Stops background refreshes (the upstream is stopping). */
  stop(): void;
}

/** One message an upstream sent on a stream, with its raw text (forwarded as is). */
export interface UpstreamEvent {
  /** The event's data: one JSON-RPC message as text, or "" for a priming event. */
  data: string;
  /** The parsed message; null for priming events and for data that is not a valid message. */
  message: RpcMessage | null;
  /** The upstream's `retry:` hint, passed on to the client. */
  retry?: number;
  /** The upstream's own event id (used to resume the upstream, never shown to the client). */
  upstreamId?: string;
}

/**
 * What an upstream answered to one client POST or GET, before the edge frames it for the client.
 * `passthrough` keeps an upstream error answer byte for byte: clients read 4xx bodies to detect the
 * protocol era (2026-07-28 transports, backwards compatibility), so the edge never rewrites them.
 */
export type UpstreamReply =
  | { kind: "passthrough"; status: number; contentType: string | undefined; body: Buffer }
  | { kind: "accepted" }
  | { kind: "json"; message: RpcMessage; data: string }
  | { kind: "stream"; events: AsyncIterable<UpstreamEvent>; close(): void };

/** Per-request facts an upstream transport may forward. Never credentials. */
export interface ForwardContext {
  requestId: string;
  /** `MCP-Protocol-Version` to send (the client's, or the negotiated one). */
  protocolVersion: string | undefined;
  /** Client headers safe to forward (Mcp-Method, Mcp-Name, Mcp-Param-*, traceparent, ...). */
  headers: Record<string, string>;
  signal: AbortSignal;
  /** The tenant of the principal (a spawned process's egress credential names it). */
  tenant?: string | null;
  /** The principal's id (a stdio server's processes are capped per principal). */
  principal?: string | null;
  /**
   * Egress proxy: where a spawned process's outbound requests made while this request is in
   * flight are recorded (the call's audit record). stdio carries no correlation of its own.
   */
  egress?: EgressSink | undefined;
  /**
   * Credentials of this request's own (the user's token from the vault), sent instead of the
   * upstream's configured ones, with the same one retry after a 401.
   */
  credentials?: UpstreamCredentials | undefined;
}

/** A session on one upstream instance (or one spawned process / one legacy SSE connection). */
export interface UpstreamSession {
  readonly binding: UpstreamBinding;
  /** Sends the client's message(s). `body` is the raw JSON text as received. */
  post(body: string, messages: RpcMessage[], ctx: ForwardContext): Promise<UpstreamReply>;
  /** Opens the standalone server-to-client stream (HTTP GET). */
  listen(ctx: ForwardContext, lastUpstreamEventId?: string): Promise<UpstreamReply>;
  /** Ends the session upstream (HTTP DELETE, or stop the process / connection). */
  terminate(): Promise<void>;
}

/** The result of creating an upstream session with the client's initialize request. */
export interface InitializeOutcome {
  /** Null when the upstream refused (its answer is in `reply`). */
  session: UpstreamSession | null;
  reply: UpstreamReply;
}

export interface InstanceHealth {
  id: string;
  healthy: boolean;
  sessions: number;
  inflight: number;
}

/** One configured server's upstream side: Streamable HTTP instances, a legacy SSE endpoint, or stdio. */
export interface Upstream {
  readonly kind: "http" | "sse" | "stdio";
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Starts a new upstream session on a healthy, least-loaded instance by sending `initialize`. */
  initialize(request: RpcRequest, body: string, ctx: ForwardContext): Promise<InitializeOutcome>;
  /**
   * The upstream session a stored record points at. Throws UpstreamSessionLost when its instance or
   * process is gone (the caller applies the route's `onBackendLoss` policy).
   */
  attach(binding: UpstreamBinding, sessionKey: string): UpstreamSession;
  /** A 2026-07-28 (stateless) request: no session, any healthy instance. */
  stateless(body: string, messages: RpcMessage[], ctx: ForwardContext): Promise<UpstreamReply>;
  health(): InstanceHealth[];
  /** True when at least one instance can take new work. */
  ready(): boolean;
}

/** The upstream no longer holds the session (instance down, restarted, process exited). */
export class UpstreamSessionLost extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UpstreamSessionLost";
  }
}

/** A configured server at run time: its config and its upstream (interceptors already composed). */
export interface Route {
  readonly name: string;
  readonly config: ServerConfig;
  readonly upstream: Upstream;
  /**
   * Interceptors of the forward stage, composed once per route at boot (filled before the listener
   * opens, never changed after): each sees the request and
   * the headers about to go upstream (tracing puts its `traceparent` there), in order.
   */
  readonly interceptors: ForwardInterceptor[];
}

/**
 * Runs as a call is forwarded upstream, on the forward context being built: may add headers or set
 * the egress recorder. Built at boot, per route (undici's dispatcher interceptors are the model).
 */
export type ForwardInterceptor = (request: ForwardingRequest, outgoing: ForwardContext) => void;

/** What a forward interceptor sees of the request: read-only facts, never the whole context. */
export interface ForwardingRequest {
  readonly requestId: string;
  readonly route: Route;
  readonly httpMethod: string;
  readonly headers: IncomingHttpHeaders;
  /** performance.now() when the request arrived. */
  readonly startedAt: number;
  /** performance.now() when the forward stage first talked to the upstream; set by the first interceptor that marks it. */
  upstreamAt?: number | undefined;
  /** Outbound requests of a spawned process during the call (the egress recorder appends). */
  egress?: EgressDecision[] | undefined;
  /** The JSON-RPC messages of the body (parsed); an interceptor may add to their `params._meta`. */
  readonly messages?: readonly RpcMessage[] | undefined;
  readonly batch?: boolean | undefined;
  /**
   * The body text sent upstream: an interceptor that changed `messages` sets it again (tracing
   * puts its context in `params._meta`); the forwarders read it after the interceptors ran.
   */
  body?: string | undefined;
}
