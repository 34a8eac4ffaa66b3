import type { IdentitySigner } from "../auth/identity.ts";
import type { Authenticated, Parsed, RequestContext, Route } from "../context.ts";
import { GatewayError } from "../errors/errors.ts";
import { toGatewayError } from "../errors/wire.ts";
import { isRequest, isResponse, type RpcMessage, type RpcRequest } from "../mcp/jsonrpc.ts";
import { formatComment, formatEvent } from "../mcp/sse.ts";
import { mintSessionId, type SessionManager, sessionHash, sessionOwner } from "../session/manager.ts";
import { Sink } from "../session/streams.ts";
import type { SessionRecord } from "../store/types.ts";
import {
  type ForwardContext,
  type UpstreamReply,
  type UpstreamSession,
  UpstreamSessionLost,
} from "../upstream/types.ts";
import { forwardContext } from "./exchange.ts";
import { listHeaders, sendInSession } from "./tool-list.ts";
import { upstreamHeaders } from "./identity.ts";
import { answer, errorResponseData, sseHeaders } from "./respond.ts";

interface LegacyConnection {
  id: string;
  route: Route;
  principal: string;
  sink: Sink;
  record?: SessionRecord;
  closeStandalone?: () => void;
}

/**
 * The 2024-11-05 HTTP+SSE transport for old clients, in front of any upstream: `GET {route}/sse`
 * opens the stream and names `{route}/messages?sessionId=…` in an `endpoint` event; each POST
 * there is answered 202 and its results arrive on the stream as `message` events. The old
 * transport has no resumption, so the session ends with its stream.
 */
export class LegacyBridge {
  readonly #sessions: SessionManager;
  readonly #keepAliveMs: number;
  readonly #conns = new Map<string, LegacyConnection>();
  readonly #identity: IdentitySigner | undefined;

  constructor(sessions: SessionManager, keepAliveMs: number, identity?: IdentitySigner) {
    this.#sessions = sessions;
    this.#identity = identity;
    this.#keepAliveMs = keepAliveMs;
  }

  /** `GET {route}/sse`: the stream, its `endpoint` event, keep-alives. */
  open(ctx: Authenticated): void {
    const id = mintSessionId();
    ctx.res.writeHead(200, sseHeaders());
    const sink = new Sink(ctx.res);
    const conn: LegacyConnection = { id, route: ctx.route, principal: sessionOwner(ctx.principal), sink };
    this.#conns.set(id, conn);
    sink.write(
      formatEvent({ event: "endpoint", data: `${ctx.route.config.route}/messages?sessionId=${id}` }),
    );
    const timer = setInterval(() => sink.write(formatComment("keep-alive")), this.#keepAliveMs);
    timer.unref();
    ctx.res.on("close", () => {
      clearInterval(timer);
      this.#conns.delete(id);
      conn.closeStandalone?.();
      if (conn.record) void this.#sessions.end(conn.route, conn.record, "legacy SSE stream closed");
    });
  }

  /** `POST {route}/messages?sessionId=…`: 202 at once; the answer goes to the connection's stream. */
  async message(ctx: Parsed): Promise<void> {
    const id = new URL(ctx.req.url ?? "/", "http://edge").searchParams.get("sessionId") ?? "";
    const conn = this.#conns.get(id);
    if (!conn || conn.route !== ctx.route || conn.principal !== sessionOwner(ctx.principal)) {
      throw new GatewayError("EDGE_SESSION_NOT_FOUND");
    }
    const msg = ctx.messages[0] as RpcMessage;
    ctx.res.writeHead(202, { "content-type": "text/plain" });
    ctx.res.end("Accepted");
    try {
      if (isRequest(msg) && msg.method === "initialize") await this.#initialize(ctx, conn, msg);
      else await this.#forward(ctx, conn, msg);
    } catch (err) {
      const ge = toGatewayError(err);
      ctx.log.warn({ err: ge.message, code: ge.code }, "legacy SSE message failed");
      if (isRequest(msg)) {
        const data = errorResponseData(msg.id, ge);
        conn.sink.write(
          formatEvent({ event: "message", data: answer(ctx, data, JSON.parse(data) as RpcMessage) }),
        );
      }
    }
  }

  /**
   * The initialized session of the legacy connection a `/messages` POST names, when it is this
   * route's and this principal's; undefined otherwise (`message` then refuses the POST).
   */
  sessionOf(ctx: Parsed): SessionRecord | undefined {
    const id = new URL(ctx.req.url ?? "/", "http://edge").searchParams.get("sessionId") ?? "";
    const conn = this.#conns.get(id);
    if (!conn || conn.route !== ctx.route || conn.principal !== sessionOwner(ctx.principal)) return undefined;
    return conn.record;
  }

  /** Sends a request of the edge's own (its tools/list) on the connection's upstream session. */
  async sendOwn(ctx: Parsed, rec: SessionRecord, body: string, request: RpcRequest): Promise<UpstreamReply> {
    const fctx = await this.#fctx(ctx, rec.protocolVersion);
    fctx.headers = listHeaders(fctx.headers, false);
    return sendInSession(this.#sessions, ctx.route, rec, body, request, fctx);
  }

  /** As every forward: the route's interceptors (tracing, the egress recorder) run on it. */
  async #fctx(ctx: RequestContext, version: string | undefined): Promise<ForwardContext> {
    const headers = await upstreamHeaders(ctx, this.#identity);
    return forwardContext(ctx, version, AbortSignal.timeout(ctx.route.config.upstream.timeout), headers);
  }

  async #initialize(ctx: Parsed, conn: LegacyConnection, msg: RpcRequest): Promise<void> {
    if (conn.record) throw new GatewayError("EDGE_INVALID_REQUEST", "The session is already initialized.");
    // The interceptors run first: they may put trace context in the body's `params._meta`.
    const fctx = await this.#fctx(ctx, undefined);
    const { session, reply } = await ctx.route.upstream.initialize(msg, ctx.body, fctx);
    let version: string | undefined;
    await this.#deliver(conn, reply, (m) => {
      const r = (m as { result?: { protocolVersion?: unknown } }).result;
      if (isResponse(m) && m.id === msg.id && typeof r?.protocolVersion === "string")
        version = r.protocolVersion;
    });
    if (!session || !version) {
      await session?.terminate();
      return;
    }
    conn.record = await this.#sessions.open(ctx.route, ctx.principal, {
      id: conn.id,
      transport: "legacy-sse",
      protocolVersion: version,
      initParams: (msg.params as Record<string, unknown> | undefined) ?? {},
      upstream: session.binding,
    });
    const rec = conn.record;
    ctx.log.info({ session: sessionHash(rec.id) }, "legacy SSE session initialized");
  }

  async #forward(ctx: Parsed, conn: LegacyConnection, msg: RpcMessage): Promise<void> {
    const rec = conn.record;
    if (!rec) throw new GatewayError("EDGE_SESSION_REQUIRED", "Send initialize first.");
    this.#sessions.store.touch(rec.id, Date.now());
    const fctx = await this.#fctx(ctx, rec.protocolVersion);
    let upstream = await this.#sessions.upstreamOf(ctx.route, rec, undefined, fctx.headers);
    let reply: UpstreamReply;
    try {
      reply = await upstream.post(ctx.body, [msg], fctx);
    } catch (err) {
      if (!(err instanceof UpstreamSessionLost)) throw err;
      upstream = await this.#sessions.upstreamOf(ctx.route, rec, err, fctx.headers);
      reply = await upstream.post(ctx.body, [msg], fctx);
    }
    if (isRequest(msg) || reply.kind === "passthrough") await this.#deliver(conn, reply, () => {}, msg, ctx);
    else if (reply.kind === "stream") reply.close();
    // Once initialized, server-initiated messages flow on the same stream (the old transport had one).
    if (!isRequest(msg) && "method" in msg && msg.method === "notifications/initialized")
      this.#openStandalone(ctx, conn, upstream);
  }

  async #deliver(
    conn: LegacyConnection,
    reply: UpstreamReply,
    seen: (m: RpcMessage) => void,
    msg?: RpcMessage,
    ctx?: RequestContext,
  ) {
    const send = (data: string, m: RpcMessage | null) =>
      conn.sink.write(formatEvent({ event: "message", data: ctx ? answer(ctx, data, m) : data }));
    if (reply.kind === "passthrough") {
      if (msg && isRequest(msg)) {
        const err = new GatewayError("EDGE_UPSTREAM_ERROR", `The upstream answered HTTP ${reply.status}.`);
        const data = errorResponseData(msg.id, err);
        send(data, JSON.parse(data) as RpcMessage);
      }
      return;
    }
    if (reply.kind === "json") {
      seen(reply.message);
      send(reply.data, reply.message);
      return;
    }
    if (reply.kind === "accepted") return;
    try {
      for await (const ev of reply.events) {
        if (ev.data === "") continue;
        if (ev.message) seen(ev.message);
        send(ev.data, ev.message);
      }
    } finally {
      reply.close();
    }
  }

  #openStandalone(ctx: RequestContext, conn: LegacyConnection, upstream: UpstreamSession): void {
    const abort = new AbortController();
    conn.closeStandalone = () => abort.abort();
    void (async () => {
      try {
        const reply = await upstream.listen({
          ...(await this.#fctx(ctx, conn.record?.protocolVersion)),
          signal: abort.signal,
        });
        if (reply.kind !== "stream") return;
        abort.signal.addEventListener("abort", () => reply.close(), { once: true });
        for await (const ev of reply.events) {
          if (ev.data !== "") conn.sink.write(formatEvent({ event: "message", data: ev.data }));
        }
      } catch {
        // No standalone stream upstream (405) or it ended: requests still get their answers.
      }
    })();
  }

  /** For tests and drain: open legacy connections. */
  get size(): number {
    return this.#conns.size;
  }

  closeAll(): void {
    for (const c of this.#conns.values()) c.sink.end();
  }
}
