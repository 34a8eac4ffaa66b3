import { randomBytes } from "node:crypto";
import type { ServerResponse } from "node:http";
import { GatewayError } from "../errors/errors.ts";
import { formatComment, formatEvent } from "../mcp/sse.ts";
import type {
  SharedStream,
  StreamEventLog,
  StreamMirror,
  TakenOverStream,
  TakeoverState,
  Unmirrored,
} from "../store/types.ts";

/** Buffer and lifetime limits of resumable streams (config `streams`). */
export interface StreamLimits {
  bufferEvents: number;
  bufferBytes: number;
  ttl: number;
  keepAlive: number;
  retry: number;
  /** Bytes of buffered events of every stream together; 0 = no budget. */
  bufferBudget?: number;
  /** Fraction of the budget one tenant's streams may hold. */
  tenantShare?: number;
}

/**
 * Stream ids: a random per-registry prefix and a counter, 16 characters. They need not be secret or
 * unpredictable (a Last-Event-ID only resolves within its own session), only unique (across every
 * instance sharing a Redis, in distributed mode), and a counter costs nothing per stream where
 * randomBytes did.
 */
class StreamIds {
  readonly prefix = randomBytes(6).toString("base64url");
  #counter = 0;

  next(): string {
    return this.prefix + (this.#counter++).toString(36).padStart(8, "0").slice(-8);
  }
}

/** A Last-Event-ID as the edge issues them: `<16-character stream id>.<seq>`. */
export function parseEventId(eventId: string): { streamId: string; seq: number } {
  const dot = eventId.lastIndexOf(".");
  const streamId = eventId.slice(0, dot);
  const digits = eventId.slice(dot + 1);
  if (dot <= 0 || !/^[A-Za-z0-9_-]{16}$/.test(streamId) || !/^[0-9]{1,15}$/.test(digits))
    throw new GatewayError("EDGE_EVENT_ID_INVALID");
  return { streamId, seq: Number(digits) };
}

/** The `closeUpstream` of a stream nothing pumps (one function for all of them). */
const nothing = (): void => {};

/**
 * A client with this many bytes unsent beyond its largest pending frame is cut off when the next
 * frame comes; it resumes with Last-Event-ID.
 */
const MAX_CLIENT_BACKLOG = 1024 * 1024;
const COLON = 0x3a;

interface Buffered {
  seq: number;
  frame: string;
}

/** The client end of a stream: an SSE response being written. */
export class Sink {
  readonly res: ServerResponse;
  lastWriteAt = Date.now();
  #ended = false;
  /** The largest frame written since the client last had nothing pending. */
  #largest = 0;

  constructor(res: ServerResponse) {
    this.res = res;
  }

  get open(): boolean {
    return !this.#ended && !this.res.destroyed && !this.res.writableEnded;
  }

  /** Bytes written to the response that the client has not taken yet. */
  get backlog(): number {
    return this.res.writableLength;
  }

  /**
   * Writes a frame; false when the client is gone or too far behind (then it is cut off). Behind
   * means more than MAX_CLIENT_BACKLOG bytes unsent beyond the largest frame still pending: a frame
   * of any size (a large result) is handed to the socket whole, and a client downloading one still
   * gets the small events that follow it. `replay` writes are never cut off (a replay is bounded by
   * the stream's buffer, and cutting it would make the client resume into the same replay). A
   * keep-alive comment is not written while bytes are pending (the connection is not idle then).
   */
  write(frame: string, replay = false): boolean {
    if (!this.open) return false;
    const backlog = this.res.writableLength;
    if (backlog === 0) this.#largest = 0;
    else if (frame.charCodeAt(0) === COLON) return true;
    else if (!replay && backlog > MAX_CLIENT_BACKLOG + this.#largest) {
      this.res.destroy();
      return false;
    }
    if (frame.length > this.#largest) this.#largest = frame.length;
    this.res.write(frame);
    this.lastWriteAt = Date.now();
    return true;
  }

  end(frame?: string): void {
    if (!this.open) return;
    this.#ended = true;
    this.res.end(frame);
  }

  /** Every byte of the response was handed to the OS (the client read what it was sent). */
  get flushed(): boolean {
    return this.res.writableFinished;
  }

  /** Drops the connection and whatever of the response it still holds. */
  release(): void {
    if (!this.res.writableFinished) this.res.destroy();
  }
}

/**
 * One SSE stream of one session, as the edge numbers it. Every event the upstream sends gets an
 * edge id `<stream>.<seq>` and stays in a bounded buffer, so a client that reconnects with
 * Last-Event-ID gets exactly the events after it, whether or not the upstream could replay them.
 * The upstream side keeps being read while no client is attached (in the session era a disconnect
 * is not a cancellation: MCP transports, "Sending Messages to the Server").
 */
export class EdgeStream {
  readonly id: string;
  readonly sessionId: string;
  readonly kind: "request" | "standalone";
  /** The session's tenant ("" without one): the budget's share is per tenant. */
  readonly tenant: string;
  readonly #limits: StreamLimits;
  readonly #events: Buffered[] = [];
  #bytes = 0;
  #nextSeq = 1;
  /** Highest seq evicted from the buffer. */
  #evicted = 0;
  #sink: Sink | undefined;
  /** The last client, kept after its response ended until every byte of it was flushed. */
  #ending: Sink | undefined;
  #lastWritten = 0;
  /** When the client last took what it was sent (attached, or written to with nothing pending). */
  lastReadAt = Date.now();
  /** The registry's accounting of buffered bytes (set while the stream is registered). */
  onBytes: ((s: EdgeStream, delta: number) => void) | undefined;
  /**
   * The budget dropped this stream: the JSON-RPC errors that stand in for the answers still
   * outstanding, as SSE frames (set by whoever pumps a request stream).
   */
  onEvict: ((err: GatewayError) => string) | undefined;
  #endedCleanly = false;
  done = false;
  lastActivity = Date.now();
  /** Closes the upstream side (set by whoever pumps it). */
  closeUpstream: () => void = nothing;
  readonly #mirror: StreamMirror | undefined;
  /** Highest seq handed to the mirror, and whether the end was. */
  #mirroredSeq = 0;
  #mirroredEnd = false;
  /** Something of this stream was written to the mirror (so there is something to remove there). */
  mirrored = false;
  /** Its session ended (DELETE, expiry): the mirror drops its copy instead of keeping it replayable. */
  discard = false;
  /** A check in the mirror for a client following from another instance is under way (sweep). */
  checking = false;
  /** The upstream's event id of the newest event appended that had one. */
  #upstreamId: string | undefined;
  /** A request stream's POST, for an instance that takes it over (distributed mode). */
  takeover: TakeoverState | undefined;

  /**
   * `after`: a stream taken over from an instance that died, whose events up to that seq are in
   * the mirror already; this one numbers on from there.
   */
  constructor(
    id: string,
    sessionId: string,
    kind: "request" | "standalone",
    limits: StreamLimits,
    mirror?: StreamMirror,
    tenant = "",
    after = 0,
  ) {
    this.id = id;
    this.sessionId = sessionId;
    this.kind = kind;
    this.tenant = tenant;
    this.#limits = limits;
    this.#mirror = mirror;
    if (after > 0) {
      this.#nextSeq = after + 1;
      this.#evicted = after;
      this.#lastWritten = after;
      this.#mirroredSeq = after;
      this.mirrored = true;
    }
  }

  get attached(): boolean {
    return this.#sink?.open ?? false;
  }

  /**
   * Finished, and every event was written to a client that then got the end of the response:
   * nothing is left to replay, so the stream need not be kept.
   */
  get settled(): boolean {
    return this.done && this.#lastWritten === this.#nextSeq - 1 && this.#endedCleanly;
  }

  /**
   * Adds one event (the data as the upstream sent it) and delivers it if a client is attached.
   * `upstreamId`: the upstream's id of the event, when it gave one.
   */
  append(data: string, retry?: number, upstreamId?: string): void {
    const seq = this.#nextSeq++;
    if (upstreamId !== undefined) this.#upstreamId = upstreamId;
    // "" is a priming event (an id and no data line): a `data:` line would dispatch an empty message.
    const frame = formatEvent({
      id: `${this.id}.${seq}`,
      ...(data !== "" ? { data } : {}),
      ...(retry !== undefined ? { retry } : {}),
    });
    this.#events.push({ seq, frame });
    const before = this.#bytes;
    this.#bytes += frame.length;
    while (
      this.#events.length > 1 &&
      (this.#events.length > this.#limits.bufferEvents || this.#bytes > this.#limits.bufferBytes)
    ) {
      const old = this.#events.shift() as Buffered;
      this.#bytes -= old.frame.length;
      this.#evicted = old.seq;
    }
    const now = Date.now();
    this.lastActivity = now;
    const sink = this.#sink;
    if (sink !== undefined) {
      const idle = sink.open && sink.backlog === 0;
      if (sink.write(frame)) {
        this.#lastWritten = seq;
        if (idle) this.lastReadAt = now;
      }
    }
    this.#mirror?.mark(this);
    // Last: the budget may drop this very stream.
    this.onBytes?.(this, this.#bytes - before);
  }

  /** Bytes of events buffered for replay. */
  get bufferedBytes(): number {
    return this.#bytes;
  }

  /**
   * The budget takes this stream's buffer: its events are gone (a resume is EDGE_STREAM_EXPIRED),
   * its client gets the errors standing in for outstanding answers and the end of its response,
   * or, when it has not read what it was sent, loses the connection.
   */
  evict(err: GatewayError): void {
    const frames = this.onEvict?.(err) ?? "";
    this.#events.length = 0;
    const freed = this.#bytes;
    this.#bytes = 0;
    this.#evicted = this.#nextSeq - 1;
    const sink = this.#sink;
    this.#sink = undefined;
    if (sink?.open && sink.backlog === 0) sink.end(frames === "" ? undefined : frames);
    else sink?.release();
    this.#ending?.release();
    this.onBytes?.(this, -freed);
  }

  /** The highest seq given so far (0 before the first event). */
  get lastSeq(): number {
    return this.#nextSeq - 1;
  }

  /** Whether a client can resume after `afterSeq`: false when some later event was evicted. */
  replayable(afterSeq: number): boolean {
    return afterSeq >= this.#evicted;
  }

  /**
   * For the mirror: the buffered events it has not been given yet (events evicted before it asked
   * are skipped; `evicted` tells it to trim to the same window) and whether the end is new. Marks
   * them given.
   */
  unmirrored(): Unmirrored {
    // The buffer holds consecutive seqs: the unmirrored ones are its tail.
    const head = this.#events[0]?.seq ?? this.#nextSeq;
    const events = this.#events.slice(Math.max(0, this.#mirroredSeq + 1 - head));
    this.#mirroredSeq = this.#nextSeq - 1;
    const end = this.done && !this.#mirroredEnd;
    if (this.done) this.#mirroredEnd = true;
    return {
      events,
      evicted: this.#evicted,
      end,
      upstreamId: this.#upstreamId,
      resume: this.takeover && JSON.stringify(this.takeover),
    };
  }

  /** Another instance took this stream over: the upstream side here stops, nothing more is added. */
  lost(): void {
    if (this.done) return;
    this.done = true;
    this.closeUpstream();
    this.#sink?.end();
    this.onSettled?.(this);
  }

  /**
   * Attaches a client and replays every event after `afterSeq` (after the last one written to the
   * previous client when undefined). Throws EDGE_STREAM_EXPIRED when some were evicted.
   */
  attach(sink: Sink, afterSeq?: number): void {
    const from = afterSeq ?? this.#lastWritten;
    if (from < this.#evicted) throw new GatewayError("EDGE_STREAM_EXPIRED");
    this.#sink?.end();
    this.#sink = sink;
    this.lastActivity = Date.now();
    for (const ev of this.#events) {
      if (ev.seq > from && sink.write(ev.frame, true)) this.#lastWritten = ev.seq;
    }
    this.lastReadAt = Date.now();
    if (this.done && sink.open) {
      this.#endClient(sink);
      this.onSettled?.(this);
    }
  }

  /**
   * Ends the client's response after what was written. The stream is settled once every byte of it
   * reached the OS: a client that does not read keeps it (and its buffer) registered, and so
   * under the budget and the TTL, instead of holding the bytes in its socket unseen.
   */
  #endClient(sink: Sink): void {
    sink.end();
    if (sink.flushed) {
      this.#endedCleanly = true;
      return;
    }
    this.#ending = sink;
    sink.res.once("finish", () => {
      if (this.#ending !== sink) return;
      this.#ending = undefined;
      this.#endedCleanly = true;
      this.onSettled?.(this);
    });
  }

  /** The buffered frames after `seq` (a finished stream's remainder). */
  framesAfter(seq: number): string[] {
    return this.#events.filter((e) => e.seq > seq).map((e) => e.frame);
  }

  detach(sink: Sink): void {
    if (this.#sink === sink) {
      this.#sink = undefined;
      this.lastActivity = Date.now();
    }
  }

  /** The upstream side has ended: end the client's response after what was written. */
  finish(): void {
    const first = !this.done;
    this.done = true;
    this.lastActivity = Date.now();
    if (this.#sink?.open) this.#endClient(this.#sink);
    if (first) this.#mirror?.mark(this);
    this.onSettled?.(this);
  }

  /** Called when the stream finishes; the registry drops settled streams at once. */
  onSettled: ((s: EdgeStream) => void) | undefined;

  /** Drops a client connection still holding unsent bytes of this stream (the stream is dropped). */
  releaseClient(): void {
    this.#ending?.release();
    this.#ending = undefined;
    if (this.#sink && !this.#sink.open) this.#sink.release();
  }

  /** Closes the client side with a `retry` hint (drain); the stream stays resumable. */
  closeClient(retryMs: number): void {
    this.#sink?.end(formatEvent({ retry: retryMs }));
    this.#sink = undefined;
  }

  keepAlive(now: number): void {
    const sink = this.#sink;
    if (sink?.open && now - sink.lastWriteAt >= this.#limits.keepAlive)
      sink.write(formatComment("keep-alive"));
  }

  seqOf(eventId: string): number | undefined {
    const dot = eventId.lastIndexOf(".");
    if (dot < 0 || eventId.slice(0, dot) !== this.id) return undefined;
    const seq = Number(eventId.slice(dot + 1));
    return Number.isSafeInteger(seq) && seq >= 0 ? seq : undefined;
  }
}

/** What the registry reports when the budget drops a stream (a metric and a log line). */
export interface BudgetObserver {
  evicted(info: {
    stream: string;
    session: string;
    tenant: string;
    bytes: number;
    scope: "instance" | "tenant";
    idleMs: number;
  }): void;
}

export interface StreamRegistryOptions {
  /** Told of every stream the buffer budget drops. */
  budget?: BudgetObserver;
  /**
   * Distributed mode: every stream's events are mirrored to Redis, and a Last-Event-ID of a stream
   * another instance holds is resumed from there (src/store/redis/event-log.ts). Absent: streams live
   * in this process only (embedded mode).
   */
  events?: StreamEventLog;
}

/** Every resumable stream of this process, with expiry and keep-alives. */
export class StreamRegistry {
  readonly #limits: StreamLimits;
  readonly #streams = new Map<string, EdgeStream>();
  readonly #standalone = new Map<string, EdgeStream>();
  readonly #timer: NodeJS.Timeout;
  readonly #ids = new StreamIds();
  readonly #events: StreamEventLog | undefined;
  readonly #observer: BudgetObserver | undefined;
  /** Buffered event bytes of every registered stream, and per tenant. */
  #bytes = 0;
  readonly #tenantBytes = new Map<string, number>();
  /** Streams the budget dropped since start. */
  evictions = 0;

  constructor(limits: StreamLimits, options: StreamRegistryOptions = {}) {
    this.#limits = limits;
    this.#events = options.events;
    this.#observer = options.budget;
    this.#timer = setInterval(() => this.sweep(Date.now()), Math.min(5000, limits.keepAlive));
    this.#timer.unref();
  }

  get limits(): StreamLimits {
    return this.#limits;
  }

  /** True in distributed mode (a shared event log is wired). */
  get shared(): boolean {
    return this.#events !== undefined;
  }

  /**
   * A stream whose every event reached its client is done with: only streams with undelivered
   * events are kept for `streams.ttl` (memory stays flat under load). One function for every stream.
   */
  readonly #settled = (done: EdgeStream): void => {
    if (done.settled && this.#streams.get(done.id) === done) this.#drop(done);
  };

  /** Buffered event bytes held now (every stream together). */
  get bufferedBytes(): number {
    return this.#bytes;
  }

  /**
   * Accounting of buffered bytes, and the budget: past the tenant's share, that tenant's least
   * recently read streams are dropped; past the whole budget, anyone's. One function for every stream.
   */
  readonly #charge = (s: EdgeStream, delta: number): void => {
    if (delta === 0) return;
    this.#bytes += delta;
    const t = (this.#tenantBytes.get(s.tenant) ?? 0) + delta;
    if (t <= 0) this.#tenantBytes.delete(s.tenant);
    else this.#tenantBytes.set(s.tenant, t);
    const budget = this.#limits.bufferBudget ?? 0;
    if (delta < 0 || budget <= 0) return;
    const share = budget * (this.#limits.tenantShare ?? 1);
    if (t > share)
      this.#evictUntil(
        "tenant",
        (x) => x.tenant === s.tenant,
        () => this.#tenant(s.tenant) > share,
      );
    if (this.#bytes > budget)
      this.#evictUntil(
        "instance",
        () => true,
        () => this.#bytes > budget,
      );
  };

  #tenant(tenant: string): number {
    return this.#tenantBytes.get(tenant) ?? 0;
  }

  #evictUntil(scope: "instance" | "tenant", which: (s: EdgeStream) => boolean, over: () => boolean): void {
    const candidates = [...this.#streams.values()]
      .filter((s) => s.bufferedBytes > 0 && which(s))
      .sort((a, b) => a.lastReadAt - b.lastReadAt);
    const now = Date.now();
    for (const s of candidates) {
      if (!over()) return;
      const bytes = s.bufferedBytes;
      this.evictions++;
      this.#observer?.evicted({
        stream: s.id,
        session: s.sessionId,
        tenant: s.tenant,
        bytes,
        scope,
        idleMs: now - s.lastReadAt,
      });
      s.evict(new GatewayError("EDGE_STREAM_BUDGET_EXCEEDED"));
      if (this.#streams.get(s.id) === s) this.#drop(s);
    }
  }

  create(sessionId: string, kind: "request" | "standalone", tenant?: string | null): EdgeStream {
    const s = new EdgeStream(this.#ids.next(), sessionId, kind, this.#limits, this.#events, tenant ?? "");
    this.#streams.set(s.id, s);
    s.onSettled = this.#settled;
    s.onBytes = this.#charge;
    if (kind === "standalone") {
      const old = this.#standalone.get(sessionId);
      if (old) this.#drop(old);
      this.#standalone.set(sessionId, s);
    }
    return s;
  }

  /**
   * A request stream taken over from an instance that died (its events up to `last` are in the
   * mirror): registered under its id, numbering on after `last`.
   */
  adopt(taken: TakenOverStream): EdgeStream {
    const s = new EdgeStream(
      taken.id,
      taken.sessionId,
      "request",
      this.#limits,
      this.#events,
      "",
      taken.last,
    );
    s.takeover = taken.state;
    this.#streams.set(s.id, s);
    s.onSettled = this.#settled;
    return s;
  }

  standaloneOf(sessionId: string): EdgeStream | undefined {
    const s = this.#standalone.get(sessionId);
    return s && !s.done ? s : undefined;
  }

  /**
   * Resolves a Last-Event-ID for a session. A malformed id is EDGE_EVENT_ID_INVALID; a well-formed
   * id of a stream this process does not hold (expired, or from before a restart) gives undefined:
   * the caller opens a fresh standalone stream, as a server without resumption would.
   */
  resolve(sessionId: string, eventId: string): { stream: EdgeStream; seq: number } | undefined {
    const { streamId, seq } = parseEventId(eventId);
    const stream = this.#streams.get(streamId);
    // Another session's stream is answered exactly like an unknown one: no existence oracle, and
    // never a replay of someone else's events (MCP security best practices, session hijacking).
    if (!stream || stream.sessionId !== sessionId) return undefined;
    return { stream, seq };
  }

  /**
   * Distributed mode: resolves a Last-Event-ID this process does not hold through the shared event
   * log, for a stream another instance holds (or held); a request stream whose owner died before
   * its answers comes back claimed by this process (`TakenOverStream`: `adopt` it). Undefined in embedded mode, for this
   * process's own ids (what it does not hold is gone), for unknown ids and for another session's.
   * Throws EDGE_EVENT_ID_INVALID (malformed), EDGE_STREAM_EXPIRED (evicted events) and
   * EDGE_STORE_UNAVAILABLE (Redis down).
   */
  async resolveShared(
    sessionId: string,
    eventId: string,
  ): Promise<SharedStream | TakenOverStream | undefined> {
    const { streamId, seq } = parseEventId(eventId);
    if (!this.#events || streamId.startsWith(this.#ids.prefix) || this.#streams.has(streamId))
      return undefined;
    return this.#events.resume(sessionId, streamId, seq);
  }

  #drop(s: EdgeStream): void {
    this.#streams.delete(s.id);
    if (this.#standalone.get(s.sessionId) === s) this.#standalone.delete(s.sessionId);
    s.onBytes = undefined;
    this.#charge(s, -s.bufferedBytes);
    s.closeUpstream();
    s.finish();
    // A client that never read the end of its response no longer holds it in this process.
    if (!s.settled) s.releaseClient();
  }

  /** Ends every stream of a session (DELETE, expiry). */
  dropSession(sessionId: string): void {
    for (const s of this.#streams.values()) {
      if (s.sessionId !== sessionId) continue;
      s.discard = true;
      this.#drop(s);
    }
    this.#events?.endFollowers(sessionId);
  }

  sweep(now: number): void {
    for (const s of this.#streams.values()) {
      if (!s.attached && now - s.lastActivity > this.#limits.ttl) this.#expire(s, now);
      else s.keepAlive(now);
    }
    this.#events?.sweepFollowers(now);
  }

  /**
   * An idle stream with no client here. In distributed mode its client may be following it from
   * another instance (which notes that in Redis): then it is kept, else dropped.
   */
  #expire(s: EdgeStream, now: number): void {
    const events = this.#events;
    if (!events || !s.mirrored || s.done) return this.#drop(s);
    if (s.checking) return;
    s.checking = true;
    events.followedAt(s.id).then(
      (at) => {
        s.checking = false;
        if (at !== undefined && now - at <= this.#limits.ttl) s.lastActivity = Math.max(s.lastActivity, at);
        else if (this.#streams.get(s.id) === s) this.#drop(s);
      },
      () => {
        s.checking = false;
        if (this.#streams.get(s.id) === s) this.#drop(s);
      },
    );
  }

  /** Drain: every attached client gets a `retry` hint and its response ends. */
  closeClients(): void {
    for (const s of this.#streams.values()) s.closeClient(this.#limits.retry);
    this.#events?.closeFollowers(this.#limits.retry);
  }

  get size(): number {
    return this.#streams.size;
  }

  /**
   * Ends every stream. In distributed mode their ends (and unwritten events) are queued for Redis:
   * await `RedisEventLog.close()` afterwards, before the Redis client is closed.
   */
  close(): void {
    clearInterval(this.#timer);
    for (const s of this.#streams.values()) this.#drop(s);
    this.#events?.endFollowers();
  }
}
