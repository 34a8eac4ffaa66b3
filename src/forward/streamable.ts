import type { ServerResponse } from "node:http";
import type { IdentitySigner } from "../auth/identity.ts";
import { CACHE_HEADER, type CacheLookup, type ListCache } from "../cache/list-cache.ts";
import type { RequestContext } from "../context.ts";
import { callRecorder } from "../egress/proxy.ts";
import { GatewayError } from "../errors/errors.ts";
import { single } from "../listen/hygiene.ts";
import {
  isRequest,
  isResponse,
  type RpcId,
  type RpcMessage,
  type RpcRequest,
  requestIdKey,
} from "../listen/jsonrpc.ts";
import { formatEvent } from "../listen/sse.ts";
import { forwarding } from "../observability/tracing.ts";
import { mintSessionId, type SessionManager, sessionHash, sessionOwner } from "../session/manager.ts";
import { type EdgeStream, Sink, type StreamRegistry } from "../session/streams.ts";
import type { SessionRecord } from "../store/types.ts";
import {
  type ForwardContext,
  type UpstreamEvent,
  type UpstreamReply,
  type UpstreamSession,
  UpstreamSessionLost,
} from "../upstream/types.ts";
import { deadlineSignal } from "../upstream/deadline.ts";
import { upstreamHeaders } from "./identity.ts";
import { answer, errorResponseData, sendAccepted, sendJson, sendPassthrough, sseHeaders } from "./respond.ts";

/** Longest a POST waits for its session's standalone GET stream to open upstream (ms). */
const GET_ORDER_WAIT_MS = 2000;

/** How many times a request stream is resumed upstream after the upstream closed it early. */
const MAX_UPSTREAM_RESUMES = 5;

export interface ForwarderOptions {
  sessions: SessionManager;
  streams: StreamRegistry;
  /** True while the instance drains: no new sessions. */
  draining: () => boolean;
  /** Counts calls in flight, for the drain. */
  inflight: { add(p: Promise<unknown>): void };
  /** Signs X-MCP-Edge-Identity; absent in tests that do not need it. */
  identity?: IdentitySigner;
  /** The list-result cache (src/cache); absent = no caching. */
  cache?: ListCache;
}

/** The forward context of a call, its upstream headers (upstreamHeaders) already made. */
function forwardContext(
  ctx: RequestContext,
  protocolVersion: string | undefined,
  signal: AbortSignal,
  headers: Record<string, string>,
): ForwardContext {
  // Metrics and traces (src/observability/tracing.ts): marks the start of the upstream exchange
  // and, with tracing on, starts the `mcp.upstream` span and puts its `traceparent` in the headers.
  forwarding(ctx, headers);
  // Egress proxy (src/egress/proxy.ts): a stdio process's outbound requests during this call are
  // recorded on it (ctx.egress, the audit record's `egress`).
  return {
    requestId: ctx.requestId,
    protocolVersion,
    headers,
    signal,
    tenant: ctx.principal?.tenant ?? null,
    egress: callRecorder(ctx),
  };
}

/** Notes a cached answer's outcome for the requests it answered. */
function answeredFromCache(ctx: RequestContext, messages: RpcMessage[]): void {
  for (const m of messages) {
    if (isRequest(m))
      (ctx.outcomes ??= new Map()).set(requestIdKey(m.id), { kind: "result", isError: false });
  }
}

function isInitialize(m: RpcMessage): boolean {
  return isRequest(m) && m.method === "initialize";
}

/** Request ids of the requests in a POST: the answers the stream must carry, and only those. */
function requestKeys(messages: RpcMessage[]): Set<string> {
  const keys = new Set<string>();
  for (const m of messages) if (isRequest(m)) keys.add(requestIdKey(m.id));
  return keys;
}

/**
 * Whether `id` is the id of a request of the POST (same test as comparing `requestIdKey`s,
 * without building the keys): an answer must be to one of them (security.md H78).
 */
function asksFor(messages: RpcMessage[], id: RpcId): boolean {
  for (const m of messages) {
    if (!isRequest(m)) continue;
    const own = m.id;
    if (typeof own === "number" ? own === id : typeof id !== "number" && `${own}` === `${id}`) return true;
  }
  return false;
}

/** Whether the POST holds a request (not only notifications and responses). */
function hasRequest(messages: RpcMessage[]): boolean {
  for (const m of messages) if (isRequest(m)) return true;
  return false;
}

function requestIds(messages: RpcMessage[]): RpcId[] {
  return messages.filter(isRequest).map((m) => m.id);
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
  /**
   * Standalone GET streams being opened upstream, per session. A client that opens its GET stream
   * and then POSTs expects the server to see them in that order: servers send server-to-client
   * requests (sampling, elicitation) on the standalone stream when one is open, and drop them when
   * none is. The GET path through the edge can be slower than the POST path (a new stream
   * connection versus a warm one), so POSTs of the session wait for the GET to be open upstream.
   */
  readonly #opening = new Map<string, Promise<void>>();

  constructor(opts: ForwarderOptions) {
    this.#sessions = opts.sessions;
    this.#streams = opts.streams;
    this.#opts = opts;
  }

  // ---------------------------------------------------------------- POST, session era

  async initialize(ctx: RequestContext, request: RpcRequest): Promise<void> {
    if (this.#opts.draining()) throw new GatewayError("EDGE_DRAINING");
    const route = ctx.route;
    const signal = deadlineSignal(route.config.upstream.timeout);
    const version = single(ctx.req, "mcp-protocol-version");
    const { session, reply } = await route.upstream.initialize(
      request,
      ctx.body as string,
      forwardContext(ctx, version, signal, await upstreamHeaders(ctx, this.#opts.identity)),
    );
    if (reply.kind === "passthrough") return sendPassthrough(ctx.res, reply);
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
      sessionId = mintSessionId();
      const now = Date.now();
      const rec: SessionRecord = {
        id: sessionId,
        server: route.name,
        principal: sessionOwner(ctx.principal),
        tenant: ctx.principal?.tenant ?? null,
        transport: ctx.endpoint === "mcp" ? "streamable" : "legacy-sse",
        protocolVersion: typeof result.protocolVersion === "string" ? result.protocolVersion : "2025-03-26",
        initParams: (request.params as Record<string, unknown> | undefined) ?? {},
        upstream: session.binding,
        createdAt: now,
        lastSeenAt: now,
      };
      await this.#sessions.create(rec);
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

  async post(ctx: RequestContext): Promise<void> {
    const messages = ctx.messages as RpcMessage[];
    const init = (
      messages.length === 1
        ? isInitialize(messages[0] as RpcMessage)
          ? messages[0]
          : undefined
        : messages.find(isInitialize)
    ) as RpcRequest | undefined;
    if (init) {
      // MCP lifecycle: initialize is never part of a batch.
      if (messages.length > 1)
        throw new GatewayError("EDGE_INVALID_REQUEST", "initialize must be sent alone.");
      return this.initialize(ctx, init);
    }
    const rec = ctx.session as SessionRecord;
    // JSON-RPC batches exist only in 2025-03-26 (removed by 2025-06-18, PR #416).
    if (ctx.batch && rec.protocolVersion >= "2025-06-18") throw new GatewayError("EDGE_BATCH_REJECTED");
    const opening = this.#opening.get(rec.id);
    if (opening) await Promise.race([opening, new Promise((r) => setTimeout(r, GET_ORDER_WAIT_MS).unref())]);
    // List-result cache: a hit is answered here, without the upstream (the session was checked by
    // the pipeline already); a miss stores the upstream's answer on its way (JSON or stream).
    const cached = this.#cacheLookup(ctx);
    if (cached?.answer !== undefined) {
      answeredFromCache(ctx, messages);
      return sendJson(ctx.res, ctx.rewrite?.(cached.answer) ?? cached.answer);
    }
    const signal = deadlineSignal(ctx.route.config.upstream.timeout);
    const fctx = forwardContext(
      ctx,
      single(ctx.req, "mcp-protocol-version") ?? rec.protocolVersion,
      signal,
      await upstreamHeaders(ctx, this.#opts.identity),
    );
    const t0 = performance.now();
    // Nothing reached a live session when it is lost, so sending again on the re-initialized one is safe.
    const body = ctx.body as string;
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
    if (reply.kind === "passthrough") return sendPassthrough(ctx.res, reply);
    if (reply.kind === "accepted") return sendAccepted(ctx.res);
    if (reply.kind === "json") {
      // An answer must be to a request of this POST (security.md H78).
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
    const stream = this.#streams.create(rec.id, "request");
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
    );
    this.#opts.inflight.add(pumping);
    await pumping;
    served.ms = performance.now() - t0;
  }

  /**
   * The cache lookup of a request, with `x-mcp-edge-cache: hit|miss` set on the response (only for
   * requests the cache takes part in). The cached text is the upstream's unfiltered answer; callers
   * pass it through `ctx.rewrite` like any upstream answer, so tools/list stays filtered per principal.
   */
  #cacheLookup(ctx: RequestContext): CacheLookup | undefined {
    const lookup = this.#opts.cache?.lookup(ctx);
    if (lookup) ctx.res.setHeader(CACHE_HEADER, lookup.hit ? "hit" : "miss");
    return lookup;
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
  ): Promise<void> {
    let reply: UpstreamReply = first;
    let lastUpstreamId: string | undefined;
    let failure: GatewayError | undefined;
    stream.closeUpstream = () => (reply.kind === "stream" ? reply.close() : undefined);
    for (let attempt = 0; attempt <= MAX_UPSTREAM_RESUMES && outstanding.size > 0; attempt++) {
      let retryMs = 0;
      try {
        for await (const ev of (reply as UpstreamReply & { kind: "stream" }).events) {
          if (ev.upstreamId !== undefined) lastUpstreamId = ev.upstreamId;
          if (ev.retry !== undefined) retryMs = ev.retry;
          if (ev.message && isResponse(ev.message)) {
            const key = requestIdKey(ev.message.id as RpcId);
            if (!outstanding.delete(key)) continue; // an answer to another request: refused
            stream.append(deliver(ev.data, ev.message), ev.retry);
            if (outstanding.size === 0) break;
            continue;
          }
          stream.append(ev.data, ev.retry);
          if (outstanding.size === 0) break;
        }
      } catch (err) {
        failure =
          err instanceof GatewayError
            ? err
            : new GatewayError("EDGE_UPSTREAM_ERROR", undefined, { cause: err });
      } finally {
        if (reply.kind === "stream") reply.close();
      }
      if (outstanding.size === 0 || lastUpstreamId === undefined || fctx.signal.aborted || stream.done) break;
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
    if (outstanding.size > 0 && !stream.done) {
      const err =
        failure ??
        (fctx.signal.aborted
          ? new GatewayError("EDGE_UPSTREAM_TIMEOUT")
          : new GatewayError("EDGE_UPSTREAM_ERROR", "The upstream closed the stream without an answer."));
      for (const id of ids) {
        if (!outstanding.has(requestIdKey(id))) continue;
        const data = errorResponseData(id, err);
        stream.append(deliver(data, JSON.parse(data) as RpcMessage));
      }
    }
    stream.finish();
  }

  // ---------------------------------------------------------------- GET

  async get(ctx: RequestContext): Promise<void> {
    const rec = ctx.session as SessionRecord;
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
    const opened = Promise.withResolvers<void>();
    this.#opening.set(rec.id, opened.promise);
    try {
      reply = await upstream.listen(fctx);
    } catch (err) {
      if (!(err instanceof UpstreamSessionLost)) throw err;
      upstream = await this.#sessions.upstreamOf(ctx.route, rec, err, fctx.headers);
      reply = await upstream.listen(fctx);
    } finally {
      if (this.#opening.get(rec.id) === opened.promise) this.#opening.delete(rec.id);
      opened.resolve();
    }
    if (reply.kind === "passthrough") return sendPassthrough(ctx.res, reply);
    if (reply.kind !== "stream")
      throw new GatewayError("EDGE_UPSTREAM_BAD_RESPONSE", "The upstream GET is not a stream.");
    const stream = this.#streams.create(rec.id, "standalone");
    ctx.res.writeHead(200, sseHeaders());
    ctx.res.flushHeaders();
    for (const frame of replay) sink.write(frame);
    stream.attach(sink, 0);
    holdStandalone(stream, sink, ctx.res, reply, abort);
  }

  // ---------------------------------------------------------------- DELETE

  async delete(ctx: RequestContext): Promise<void> {
    const rec = ctx.session as SessionRecord;
    await this.#sessions.end(ctx.route, rec, "deleted by client");
    ctx.res.writeHead(200, { "content-length": 0 });
    ctx.res.end();
  }

  // ---------------------------------------------------------------- POST, stateless era

  /**
   * 2026-07-28: no session, any healthy instance, and a client that goes away cancels the request
   * (closing the response stream is cancellation), so the upstream request is aborted with it.
   */
  async stateless(ctx: RequestContext): Promise<void> {
    const messages = ctx.messages as RpcMessage[];
    // List-result cache (2026-07-28 `ttlMs` / `cacheScope`): a hit never reaches the upstream; a
    // miss stores the upstream's answer on its way. A POST accepts JSON, so a hit is sent as JSON.
    const cached = this.#cacheLookup(ctx);
    if (cached?.answer !== undefined) {
      answeredFromCache(ctx, messages);
      return sendJson(ctx.res, ctx.rewrite?.(cached.answer) ?? cached.answer);
    }
    const abort = new AbortController();
    const onGone = () => abort.abort(new GatewayError("EDGE_UPSTREAM_ERROR", "client went away"));
    ctx.clientGone.addEventListener("abort", onGone, { once: true });
    // `subscriptions/listen` is the long-lived notification stream of 2026-07-28: it lasts as long
    // as the client keeps it open, so the per-request deadline does not apply to it.
    const longLived =
      messages.length === 1 && (messages[0] as { method?: string }).method === "subscriptions/listen";
    const signal = longLived
      ? abort.signal
      : AbortSignal.any([abort.signal, deadlineSignal(ctx.route.config.upstream.timeout)]);
    const fctx = forwardContext(
      ctx,
      single(ctx.req, "mcp-protocol-version"),
      signal,
      await upstreamHeaders(ctx, this.#opts.identity),
    );
    const keys = requestKeys(messages);
    try {
      const first = await ctx.route.upstream.stateless(ctx.body as string, messages, fctx);
      const reply = cached && first.kind === "stream" ? cached.tap(first) : first;
      if (reply.kind === "passthrough") return sendPassthrough(ctx.res, reply);
      if (reply.kind === "accepted") return sendAccepted(ctx.res);
      if (reply.kind === "json") {
        if (isResponse(reply.message) && !keys.has(requestIdKey(reply.message.id as RpcId))) {
          throw new GatewayError("EDGE_UPSTREAM_BAD_RESPONSE", "The upstream answered another request.");
        }
        cached?.fill(reply.message, reply.data);
        return sendJson(ctx.res, answer(ctx, reply.data, reply.message));
      }
      ctx.res.writeHead(200, sseHeaders());
      const sink = new Sink(ctx.res);
      ctx.clientGone.addEventListener("abort", () => reply.close(), { once: true });
      try {
        for await (const ev of reply.events) {
          if (ev.message && isResponse(ev.message) && !keys.has(requestIdKey(ev.message.id as RpcId)))
            continue;
          // No resumability in 2026-07-28: upstream ids are not passed on, so id-only events carry nothing.
          if (ev.data === "" && ev.retry === undefined) continue;
          const data = ev.message && isResponse(ev.message) ? answer(ctx, ev.data, ev.message) : ev.data;
          const frame = formatEvent({
            ...(data !== "" ? { data } : {}),
            ...(ev.retry !== undefined ? { retry: ev.retry } : {}),
          });
          if (!sink.write(frame)) {
            break;
          }
        }
      } catch (err) {
        if (!abort.signal.aborted) {
          const ge =
            err instanceof GatewayError
              ? err
              : new GatewayError("EDGE_UPSTREAM_ERROR", undefined, { cause: err });
          for (const id of requestIds(messages)) {
            if (ctx.outcomes?.has(requestIdKey(id))) continue;
            const data = errorResponseData(id, ge);
            sink.write(formatEvent({ data: answer(ctx, data, JSON.parse(data) as RpcMessage) }));
          }
        }
      } finally {
        reply.close();
        sink.end();
      }
    } finally {
      ctx.clientGone.removeEventListener("abort", onGone);
      // 2026-07-28: a client that went away cancelled its requests.
      if (abort.signal.aborted) {
        for (const id of requestIds(messages)) {
          const key = requestIdKey(id);
          if (!ctx.outcomes?.has(key)) (ctx.outcomes ??= new Map()).set(key, { kind: "aborted" });
        }
      }
    }
  }
}
