import type { ServerResponse } from "node:http";
import type { AuditLog } from "../audit/log.ts";
import type { IdentitySigner } from "../auth/identity.ts";
import type { EraKnown, Parsed, Sessioned } from "../context.ts";
import { GatewayError } from "../errors/errors.ts";
import { single } from "../mcp/hygiene.ts";
import { isResponse, type RpcId, type RpcMessage, type RpcRequest, requestIdKey } from "../mcp/jsonrpc.ts";
import { formatEvent } from "../mcp/sse.ts";
import { type SessionManager, sessionHash } from "../session/manager.ts";
import { type EdgeStream, Sink, type StreamRegistry } from "../session/streams.ts";
import { isTakenOver, type TakenOverStream } from "../store/types.ts";
import {
  type ForwardContext,
  type UpstreamEvent,
  type UpstreamReply,
  type UpstreamSession,
  UpstreamSessionLost,
} from "../upstream/types.ts";
import { abortedWith, Deadlines } from "../upstream/deadline.ts";
import type { GetOrder } from "./get-order.ts";
import { asksFor, forwardContext, hasRequest, requestIds, requestKeys } from "./exchange.ts";
import { upstreamHeaders } from "./identity.ts";
import { forwardStateless } from "./stateless.ts";
import { listHeaders, sendInSession } from "./tool-list.ts";
import {
  answer,
  answerError,
  errorResponseData,
  sendAccepted,
  sendJson,
  sendPassthrough,
  sseHeaders,
} from "./respond.ts";

/** How many times a request stream is resumed upstream after the upstream closed it early. */
const MAX_UPSTREAM_RESUMES = 5;

export interface ForwarderOptions {
  sessions: SessionManager;
  streams: StreamRegistry;
  /** Counts calls in flight, for the drain. */
  inflight: { add(p: Promise<unknown>): void };
  /** Signs X-MCP-Edge-Identity; absent in tests that do not need it. */
  identity?: IdentitySigner;
  /** POSTs of a session wait for its GET stream to open upstream (the `get-order` stage). */
  getOrder: GetOrder;
  /** The audit log: a taken-over call's write-ahead entries are adopted and completed here. */
  audit?: Pick<AuditLog, "adopt" | "complete">;
}

/**
 * Copies a standalone stream's upstream events into its edge stream until the upstream ends it or
 * the edge closes it (`closeUpstream`). Outside `Forwarder.get` on purpose: a closure keeps its
 * whole scope alive, and these live as long as the stream, so they must not see the request's
 * context, headers and upstream session. A promise chain rather than an async function: nothing
 * but the pending `next()` is held between events.
 */
function holdStandalone(
  stream: EdgeStream,
  sink: Sink,
  res: ServerResponse,
  reply: UpstreamReply & { kind: "stream" },
  abort: AbortController,
): void {
  stream.closeUpstream = () => {
    abort.abort();
    reply.close();
  };
  res.on("close", () => stream.detach(sink));
  const events = reply.events[Symbol.asyncIterator]();
  // An upstream stream that ends or fails finishes the edge stream; the client reconnects and
  // gets a new one.
  const stop = (): void => stream.finish();
  const step = (r: IteratorResult<UpstreamEvent>): void => {
    if (r.done === true) return stop();
    try {
      // Standalone streams carry no answers except when resuming (MCP transports).
      stream.append(r.value.data, r.value.retry);
    } catch {
      events.return?.().catch(() => undefined);
      return stop();
    }
    events.next().then(step, stop);
  };
  events.next().then(step, stop);
}

/**
 * The forward stage for Streamable HTTP clients: session-era POST/GET/DELETE through edge-owned
 * sessions and resumable streams, and stateless (2026-07-28) POSTs straight through.
 */
export class Forwarder {
  readonly #sessions: SessionManager;
  readonly #streams: StreamRegistry;
  readonly #opts: ForwarderOptions;
  readonly #deadlines = new Deadlines();

  constructor(opts: ForwarderOptions) {
    this.#sessions = opts.sessions;
    this.#streams = opts.streams;
    this.#opts = opts;
  }

  /**
   * Sends a request of the edge's own (its tools/list, for the `tool-list` stage) on the path the
   * call will take: the session's upstream session, or a 2026-07-28 request, with the call's
   * identity, credentials and deadline.
   */
  async sendOwn(ctx: EraKnown, body: string, request: RpcRequest): Promise<UpstreamReply> {
    // A client that went away needs no judgement: the request of the edge's own stops with it.
    const signal = AbortSignal.any([
      this.#deadlines.signal(ctx.route.config.upstream.timeout),
      ctx.clientGone,
    ]);
    const rec = ctx.era === "session" ? ctx.session : undefined;
    const headers = listHeaders(await upstreamHeaders(ctx, this.#opts.identity), rec === undefined);
    const version = single(ctx.req, "mcp-protocol-version") ?? rec?.protocolVersion;
    const fctx = forwardContext(ctx, version, signal, headers);
    if (!rec) return ctx.route.upstream.stateless(body, [request], fctx);
    return sendInSession(this.#sessions, ctx.route, rec, body, request, fctx);
  }

  // ---------------------------------------------------------------- POST, session era

  async initialize(ctx: Parsed, request: RpcRequest): Promise<void> {
    const route = ctx.route;
    const signal = this.#deadlines.signal(route.config.upstream.timeout);
    const version = single(ctx.req, "mcp-protocol-version");
    // The interceptors run first: they may put trace context in the body's `params._meta`.
    const fctx = forwardContext(ctx, version, signal, await upstreamHeaders(ctx, this.#opts.identity));
    const { session, reply } = await route.upstream.initialize(request, ctx.body, fctx);
    if (reply.kind === "passthrough") return sendPassthrough(ctx, reply);
    // The answer to initialize is read whole (it is small) so that the session exists before the
    // client learns its id.
    const events: UpstreamEvent[] = [];
    let response: RpcMessage | undefined;
    if (reply.kind === "json") {
      events.push({ data: reply.data, message: reply.message });
      response = reply.message;
    } else if (reply.kind === "stream") {
      try {
        for await (const ev of reply.events) {
          events.push(ev);
          if (ev.message && isResponse(ev.message) && ev.message.id === request.id) {
            response = ev.message;
            break;
          }
        }
      } finally {
        reply.close();
      }
    }
    const result = (response as { result?: { protocolVersion?: unknown } } | undefined)?.result;
    if (!response || !isResponse(response) || response.id !== request.id) {
      await session?.terminate();
      throw new GatewayError("EDGE_UPSTREAM_BAD_RESPONSE", "The upstream did not answer initialize.");
    }
    let sessionId: string | undefined;
    if (result && session) {
      const rec = await this.#sessions.open(route, ctx.principal, {
        transport: "streamable",
        protocolVersion: typeof result.protocolVersion === "string" ? result.protocolVersion : "2025-03-26",
        initParams: (request.params as Record<string, unknown> | undefined) ?? {},
        upstream: session.binding,
      });
      sessionId = rec.id;
      ctx.session = rec;
      ctx.log.info({ session: sessionHash(sessionId) }, "initialize");
    } else {
      await session?.terminate(); // an initialize error: no session
    }
    if (reply.kind === "json") return sendJson(ctx.res, reply.data, sessionId);
    ctx.res.writeHead(200, sseHeaders(sessionId));
    // A stream the client can resume, like any other, when it has a session.
    if (sessionId) {
      const stream = this.#streams.create(sessionId, "request");
      for (const ev of events) stream.append(ev.data, ev.retry);
      stream.attach(new Sink(ctx.res), 0);
      stream.finish();
    } else {
      for (const ev of events) if (ev.data !== "") ctx.res.write(formatEvent({ data: ev.data }));
      ctx.res.end();
    }
  }

  /** A POST of a live session (initialize goes to `initialize`). */
  async post(ctx: Sessioned): Promise<void> {
    const messages = ctx.messages;
    const rec = ctx.session;
    // List-result cache (the `cache` stage looked it up): a miss stores the upstream's answer on
    // its way (JSON or stream).
    const cached = ctx.cached;
    const signal = this.#deadlines.signal(ctx.route.config.upstream.timeout);
    const fctx = forwardContext(
      ctx,
      single(ctx.req, "mcp-protocol-version") ?? rec.protocolVersion,
      signal,
      await upstreamHeaders(ctx, this.#opts.identity),
    );
    const t0 = performance.now();
    // Nothing reached a live session when it is lost, so sending again on the re-initialized one is safe.
    const body = ctx.body;
    let upstream = await this.#sessions.upstreamOf(ctx.route, rec, undefined, fctx.headers);
    let first: UpstreamReply;
    try {
      first = await upstream.post(body, messages, fctx);
    } catch (err) {
      if (!(err instanceof UpstreamSessionLost)) throw err;
      upstream = await this.#sessions.upstreamOf(ctx.route, rec, err, fctx.headers);
      first = await upstream.post(body, messages, fctx);
    }
    // Which instance served the call, and (updated when the answer is complete) how long it took.
    const served = { instance: upstream.binding.instance, ms: performance.now() - t0 };
    ctx.upstream = served;
    const reply = cached && first.kind === "stream" ? cached.tap(first) : first;
    if (reply.kind === "passthrough") return sendPassthrough(ctx, reply);
    if (reply.kind === "accepted") return sendAccepted(ctx.res);
    if (reply.kind === "json") {
      // An answer must be to a request of this POST.
      if (isResponse(reply.message) && !asksFor(messages, reply.message.id as RpcId)) {
        throw new GatewayError("EDGE_UPSTREAM_BAD_RESPONSE", "The upstream answered another request.");
      }
      cached?.fill(reply.message, reply.data);
      return sendJson(ctx.res, answer(ctx, reply.data, reply.message));
    }
    if (!hasRequest(messages)) {
      // Notifications and responses get 202; a stream here would carry nothing for the client.
      reply.close();
      return sendAccepted(ctx.res);
    }
    const stream = this.#streams.create(rec.id, "request", rec.tenant);
    // Distributed mode: what another instance needs to take the stream over if this one dies.
    if (this.#streams.shared)
      stream.takeover = {
        requestId: ctx.requestId,
        protocolVersion: fctx.protocolVersion,
        ids: requestIds(messages) as (string | number)[],
      };
    // Headers go out with the first event (one write less per answer); GET streams, which may wait
    // long for a first event, flush theirs at once.
    ctx.res.writeHead(200, sseHeaders());
    const sink = new Sink(ctx.res);
    stream.attach(sink, 0);
    // In the session era a disconnect is not a cancellation: the upstream keeps being read into the
    // buffer until the answer arrives, and the client can resume with Last-Event-ID.
    ctx.res.on("close", () => stream.detach(sink));
    const pumping = this.#pump(
      stream,
      reply,
      requestKeys(messages),
      requestIds(messages),
      upstream,
      fctx,
      (data, msg) => answer(ctx, data, msg),
      (id, err) => answerError(ctx, id, err),
    );
    this.#opts.inflight.add(pumping);
    const unanswered = await pumping;
    served.ms = performance.now() - t0;
    // Calls the drain ended: the client got EDGE_DRAINED; the audit records them as aborted.
    if (unanswered?.err.code === "EDGE_DRAINED") {
      for (const id of unanswered.ids)
        (ctx.outcomes ??= new Map()).set(requestIdKey(id), { kind: "aborted", code: "EDGE_DRAINED" });
    }
  }

  /**
   * Drain: every call still in flight (its upstream exchange under a deadline of this forwarder)
   * ends now with EDGE_DRAINED: an SSE answer gets the JSON-RPC error for each request still
   * unanswered, a JSON answer still awaited is the coded 503.
   */
  abortCalls(): void {
    this.#deadlines.abortAll(new GatewayError("EDGE_DRAINED"));
  }

  /**
   * Copies upstream events into an edge stream until every request of the POST has its answer. An
   * upstream that closes early after giving event ids (2025-11-25 SSE polling, or a dropped
   * connection) is resumed with GET + Last-Event-ID; answers that never come become JSON-RPC errors.
   */
  async #pump(
    stream: EdgeStream,
    first: UpstreamReply & { kind: "stream" },
    outstanding: Set<string>,
    ids: RpcId[],
    upstream: UpstreamSession,
    fctx: ForwardContext,
    deliver: (data: string, msg: RpcMessage | null) => string,
    fail: (id: RpcId, err: GatewayError) => string,
  ): Promise<{ ids: RpcId[]; err: GatewayError } | undefined> {
    let reply: UpstreamReply = first;
    let lastUpstreamId: string | undefined;
    let failure: GatewayError | undefined;
    stream.closeUpstream = () => (reply.kind === "stream" ? reply.close() : undefined);
    // Dropped by the buffer budget: the answers still outstanding become its coded error.
    stream.onEvict = (err) => {
      let frames = "";
      for (const id of ids) {
        if (outstanding.delete(requestIdKey(id))) frames += formatEvent({ data: fail(id, err) });
      }
      return frames;
    };
    for (let attempt = 0; attempt <= MAX_UPSTREAM_RESUMES && outstanding.size > 0; attempt++) {
      let retryMs = 0;
      try {
        for await (const ev of (reply as UpstreamReply & { kind: "stream" }).events) {
          if (ev.upstreamId !== undefined) lastUpstreamId = ev.upstreamId;
          if (ev.retry !== undefined) retryMs = ev.retry;
          if (ev.message && isResponse(ev.message)) {
            const key = requestIdKey(ev.message.id as RpcId);
            if (!outstanding.delete(key)) continue; // an answer to another request: refused
            if (stream.takeover)
              stream.takeover = {
                ...stream.takeover,
                ids: stream.takeover.ids.filter((id) => requestIdKey(id) !== key),
              };
            stream.append(deliver(ev.data, ev.message), ev.retry, ev.upstreamId);
            if (outstanding.size === 0) break;
            continue;
          }
          stream.append(ev.data, ev.retry, ev.upstreamId);
          if (outstanding.size === 0) break;
        }
      } catch (err) {
        failure =
          abortedWith(fctx.signal, err) ??
          (err instanceof GatewayError
            ? err
            : new GatewayError("EDGE_UPSTREAM_ERROR", undefined, { cause: err }));
      } finally {
        if (reply.kind === "stream") reply.close();
      }
      if (outstanding.size === 0 || lastUpstreamId === undefined || fctx.signal.aborted || stream.done) break;
      // Resuming would replay the same oversized event.
      if (failure?.code === "EDGE_RESULT_TOO_LARGE") break;
      await new Promise((r) => setTimeout(r, Math.min(retryMs, 10_000)));
      try {
        reply = await upstream.listen(fctx, lastUpstreamId);
        failure = undefined;
      } catch (err) {
        failure =
          err instanceof GatewayError
            ? err
            : new GatewayError("EDGE_UPSTREAM_ERROR", undefined, { cause: err });
        break;
      }
      if (reply.kind !== "stream") break;
    }
    let unanswered: { ids: RpcId[]; err: GatewayError } | undefined;
    if (outstanding.size > 0 && !stream.done) {
      // The drain's reason wins over what the abort made of the upstream read.
      const err =
        abortedWith(fctx.signal) ??
        failure ??
        new GatewayError("EDGE_UPSTREAM_ERROR", "The upstream closed the stream without an answer.");
      unanswered = { ids: [], err };
      for (const id of ids) {
        if (!outstanding.has(requestIdKey(id))) continue;
        unanswered.ids.push(id);
        stream.append(fail(id, err));
      }
    }
    stream.finish();
    return unanswered;
  }

  // ---------------------------------------------------------------- GET

  async get(ctx: Sessioned): Promise<void> {
    const rec = ctx.session;
    const lastEventId = single(ctx.req, "last-event-id");
    const sink = new Sink(ctx.res);
    let replay: string[] = [];
    if (lastEventId !== undefined) {
      const found = this.#streams.resolve(rec.id, lastEventId);
      if (found && (found.stream.kind === "request" || !found.stream.done)) {
        // Checked before the headers go out, so that the client gets the coded 400.
        if (!found.stream.replayable(found.seq)) throw new GatewayError("EDGE_STREAM_EXPIRED");
        ctx.res.writeHead(200, sseHeaders());
        ctx.res.flushHeaders();
        found.stream.attach(sink, found.seq);
        ctx.res.on("close", () => found.stream.detach(sink));
        return;
      }
      // A finished standalone stream: its last events, then a fresh standalone stream.
      if (found) replay = found.stream.framesAfter(found.seq);
      // Distributed mode: a stream another instance holds (or held), through Redis. A live one is
      // followed until it ends; a finished request stream is replayed and its response ended (one
      // whose instance stopped before the final answer included: the client retries); a finished
      // standalone one is replayed, then a fresh standalone stream continues as for an unknown id.
      const shared = found ? undefined : await this.#streams.resolveShared(rec.id, lastEventId);
      // Its owner died before every answer: this instance continues it.
      if (isTakenOver(shared)) return this.#takeOver(ctx, shared, sink);
      if (shared && (shared.kind === "request" || !shared.done)) {
        if (ctx.res.destroyed) return shared.end();
        ctx.res.writeHead(200, sseHeaders());
        ctx.res.flushHeaders();
        ctx.res.on("close", () => shared.detach(sink));
        shared.attach(sink);
        return;
      }
      if (shared) replay = shared.framesAfter();
    }
    const live = this.#streams.standaloneOf(rec.id);
    if (live) {
      // The upstream allows one standalone stream per session; the edge holds it for the client.
      if (live.attached) throw new GatewayError("EDGE_STREAM_CONFLICT");
      ctx.res.writeHead(200, sseHeaders());
      ctx.res.flushHeaders();
      live.attach(sink);
      ctx.res.on("close", () => live.detach(sink));
      return;
    }
    const abort = new AbortController();
    const fctx = forwardContext(
      ctx,
      single(ctx.req, "mcp-protocol-version") ?? rec.protocolVersion,
      abort.signal,
      await upstreamHeaders(ctx, this.#opts.identity),
    );
    let upstream = await this.#sessions.upstreamOf(ctx.route, rec, undefined, fctx.headers);
    let reply: UpstreamReply;
    const opened = this.#opts.getOrder.opening(rec.id);
    try {
      reply = await upstream.listen(fctx);
    } catch (err) {
      if (!(err instanceof UpstreamSessionLost)) throw err;
      upstream = await this.#sessions.upstreamOf(ctx.route, rec, err, fctx.headers);
      reply = await upstream.listen(fctx);
    } finally {
      opened();
    }
    if (reply.kind === "passthrough") return sendPassthrough(ctx, reply);
    if (reply.kind !== "stream")
      throw new GatewayError("EDGE_UPSTREAM_BAD_RESPONSE", "The upstream GET is not a stream.");
    const stream = this.#streams.create(rec.id, "standalone", rec.tenant);
    ctx.res.writeHead(200, sseHeaders());
    ctx.res.flushHeaders();
    for (const frame of replay) sink.write(frame, true);
    stream.attach(sink, 0);
    holdStandalone(stream, sink, ctx.res, reply, abort);
  }

  /**
   * A request stream whose instance died before every answer, claimed by this one: the client
   * gets the events that instance mirrored after its Last-Event-ID, then the rest of the stream,
   * numbered on under the same stream id. The upstream stream is resumed (GET + Last-Event-ID)
   * after the newest event id the dead instance mirrored, so the upstream replays exactly what
   * the edge never passed on; an upstream that gave no event ids (or cannot resume) leaves the
   * outcome unknown, and each pending request gets EDGE_UPSTREAM_STREAM_LOST at once.
   */
  async #takeOver(ctx: Sessioned, taken: TakenOverStream, sink: Sink): Promise<void> {
    const stream = this.#streams.adopt(taken);
    const adopted = this.#opts.audit?.adopt(taken.state.requestId);
    try {
      await this.#continue(ctx, taken, stream, sink);
    } finally {
      // The calls' records: the outcomes this instance relayed (their entries are this instance's now).
      if (adopted) this.#opts.audit?.complete(await adopted, ctx.outcomes);
    }
  }

  async #continue(ctx: Sessioned, taken: TakenOverStream, stream: EdgeStream, sink: Sink): Promise<void> {
    const rec = ctx.session;
    ctx.res.writeHead(200, sseHeaders());
    ctx.res.flushHeaders();
    for (const frame of taken.frames) sink.write(frame);
    stream.attach(sink, taken.last);
    ctx.res.on("close", () => stream.detach(sink));
    const ids = taken.state.ids;
    const deliver = (data: string, msg: RpcMessage | null) => answer(ctx, data, msg);
    const signal = this.#deadlines.signal(ctx.route.config.upstream.timeout);
    let failure: GatewayError | undefined;
    try {
      if (taken.upstreamId !== undefined) {
        const fctx = forwardContext(
          ctx,
          taken.state.protocolVersion ?? rec.protocolVersion,
          signal,
          await upstreamHeaders(ctx, this.#opts.identity),
        );
        const upstream = await this.#sessions.upstreamOf(ctx.route, rec, undefined, fctx.headers);
        const reply = await upstream.listen(fctx, taken.upstreamId);
        if (reply.kind === "stream") {
          ctx.log.info({ stream: taken.id, pending: ids.length }, "took over a stream whose instance died");
          const pumping = this.#pump(
            stream,
            reply,
            new Set(ids.map(requestIdKey)),
            ids,
            upstream,
            fctx,
            deliver,
            (id, e) => errorResponseData(id, e),
          );
          this.#opts.inflight.add(pumping);
          await pumping;
          return;
        }
      }
    } catch (err) {
      failure =
        err instanceof GatewayError
          ? err
          : new GatewayError("EDGE_UPSTREAM_ERROR", undefined, { cause: err });
    }
    ctx.log.warn(
      { stream: taken.id, pending: ids.length, code: failure?.code },
      "a stream whose instance died cannot be resumed upstream: its pending requests get EDGE_UPSTREAM_STREAM_LOST",
    );
    const err = new GatewayError("EDGE_UPSTREAM_STREAM_LOST", undefined, failure ? { cause: failure } : {});
    // No outcome is noted: the call's outcome upstream is unknown (its audit record says so).
    for (const id of ids) stream.append(errorResponseData(id, err));
    stream.takeover = { ...taken.state, ids: [] };
    stream.finish();
  }

  // ---------------------------------------------------------------- DELETE

  async delete(ctx: Sessioned): Promise<void> {
    const rec = ctx.session;
    await this.#sessions.end(ctx.route, rec, "deleted by client");
    ctx.res.writeHead(200, { "content-length": 0 });
    ctx.res.end();
  }

  /** 2026-07-28 POST (src/forward/stateless.ts). */
  stateless(ctx: EraKnown): Promise<void> {
    return forwardStateless(ctx, this.#opts.identity, this.#deadlines);
  }
}
