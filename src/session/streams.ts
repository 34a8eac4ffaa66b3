import { randomBytes } from "node:crypto";
import type { ServerResponse } from "node:http";
import { GatewayError } from "../errors/errors.ts";
import { formatComment, formatEvent } from "../listen/sse.ts";

/** Buffer and lifetime limits of resumable streams (config `streams`). */
export interface StreamLimits {
  bufferEvents: number;
  bufferBytes: number;
  ttl: number;
  keepAlive: number;
  retry: number;
}

/**
 * Stream ids: a random per-process prefix and a counter, 16 characters. They need not be secret or
 * unpredictable (a Last-Event-ID only resolves within its own session), only unique, and a counter
 * costs nothing per stream where randomBytes did.
 */
const STREAM_PREFIX = randomBytes(6).toString("base64url");
let streamCounter = 0;
function nextStreamId(): string {
  return STREAM_PREFIX + (streamCounter++).toString(36).padStart(8, "0").slice(-8);
}

/** A client whose socket has this many unsent bytes is cut off; it resumes with Last-Event-ID. */
const MAX_CLIENT_BACKLOG = 1024 * 1024;

interface Buffered {
  seq: number;
  frame: string;
}

/** The client end of a stream: an SSE response being written. */
export class Sink {
  readonly res: ServerResponse;
  lastWriteAt = Date.now();
  #ended = false;

  constructor(res: ServerResponse) {
    this.res = res;
  }

  get open(): boolean {
    return !this.#ended && !this.res.destroyed && !this.res.writableEnded;
  }

  /** Writes a frame; false when the client is gone or too far behind (then it is cut off). */
  write(frame: string): boolean {
    if (!this.open) return false;
    this.res.write(frame);
    this.lastWriteAt = Date.now();
    if (this.res.writableLength > MAX_CLIENT_BACKLOG) {
      this.res.destroy();
      return false;
    }
    return true;
  }

  end(frame?: string): void {
    if (!this.open) return;
    this.#ended = true;
    this.res.end(frame);
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
  readonly #limits: StreamLimits;
  readonly #events: Buffered[] = [];
  #bytes = 0;
  #nextSeq = 1;
  /** Highest seq evicted from the buffer. */
  #evicted = 0;
  #sink: Sink | undefined;
  #lastWritten = 0;
  #endedCleanly = false;
  done = false;
  lastActivity = Date.now();
  /** Closes the upstream side (set by whoever pumps it). */
  closeUpstream: () => void = () => {};

  constructor(sessionId: string, kind: "request" | "standalone", limits: StreamLimits) {
    this.id = nextStreamId();
    this.sessionId = sessionId;
    this.kind = kind;
    this.#limits = limits;
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

  /** Adds one event (the data as the upstream sent it) and delivers it if a client is attached. */
  append(data: string, retry?: number): void {
    const seq = this.#nextSeq++;
    // "" is a priming event (an id and no data line): a `data:` line would dispatch an empty message.
    const frame = formatEvent({
      id: `${this.id}.${seq}`,
      ...(data !== "" ? { data } : {}),
      ...(retry !== undefined ? { retry } : {}),
    });
    this.#events.push({ seq, frame });
    this.#bytes += frame.length;
    while (
      this.#events.length > 1 &&
      (this.#events.length > this.#limits.bufferEvents || this.#bytes > this.#limits.bufferBytes)
    ) {
      const old = this.#events.shift() as Buffered;
      this.#bytes -= old.frame.length;
      this.#evicted = old.seq;
    }
    this.lastActivity = Date.now();
    if (this.#sink?.write(frame)) this.#lastWritten = seq;
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
      if (ev.seq > from && sink.write(ev.frame)) this.#lastWritten = ev.seq;
    }
    if (this.done && sink.open) {
      sink.end();
      this.#endedCleanly = true;
      this.onSettled?.(this);
    }
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
    this.done = true;
    this.lastActivity = Date.now();
    if (this.#sink?.open) {
      this.#sink.end();
      this.#endedCleanly = true;
    }
    this.onSettled?.(this);
  }

  /** Called when the stream finishes; the registry drops settled streams at once. */
  onSettled: ((s: EdgeStream) => void) | undefined;

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

/** Every resumable stream of this process, with expiry and keep-alives. */
export class StreamRegistry {
  readonly #limits: StreamLimits;
  readonly #streams = new Map<string, EdgeStream>();
  readonly #standalone = new Map<string, EdgeStream>();
  readonly #timer: NodeJS.Timeout;

  constructor(limits: StreamLimits) {
    this.#limits = limits;
    this.#timer = setInterval(() => this.sweep(Date.now()), Math.min(5000, limits.keepAlive));
    this.#timer.unref();
  }

  get limits(): StreamLimits {
    return this.#limits;
  }

  create(sessionId: string, kind: "request" | "standalone"): EdgeStream {
    const s = new EdgeStream(sessionId, kind, this.#limits);
    this.#streams.set(s.id, s);
    // A stream whose every event reached its client is done with: only streams with undelivered
    // events are kept for `streams.ttl` (memory stays flat under load).
    s.onSettled = (done) => {
      if (done.settled && this.#streams.get(done.id) === done) this.#drop(done);
    };
    if (kind === "standalone") {
      const old = this.#standalone.get(sessionId);
      if (old) this.#drop(old);
      this.#standalone.set(sessionId, s);
    }
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
    const dot = eventId.lastIndexOf(".");
    if (dot <= 0 || !/^[A-Za-z0-9_-]{16}$/.test(eventId.slice(0, dot)))
      throw new GatewayError("EDGE_EVENT_ID_INVALID");
    const stream = this.#streams.get(eventId.slice(0, dot));
    const seq = stream?.seqOf(eventId);
    if (seq === undefined && stream) throw new GatewayError("EDGE_EVENT_ID_INVALID");
    // Another session's stream is answered exactly like an unknown one: no existence oracle, and
    // never a replay of someone else's events (MCP security best practices, session hijacking).
    if (!stream || seq === undefined || stream.sessionId !== sessionId) return undefined;
    return { stream, seq };
  }

  #drop(s: EdgeStream): void {
    this.#streams.delete(s.id);
    if (this.#standalone.get(s.sessionId) === s) this.#standalone.delete(s.sessionId);
    s.closeUpstream();
    s.finish();
  }

  /** Ends every stream of a session (DELETE, expiry). */
  dropSession(sessionId: string): void {
    for (const s of this.#streams.values()) if (s.sessionId === sessionId) this.#drop(s);
  }

  sweep(now: number): void {
    for (const s of this.#streams.values()) {
      if (!s.attached && now - s.lastActivity > this.#limits.ttl) this.#drop(s);
      else s.keepAlive(now);
    }
  }

  /** Drain: every attached client gets a `retry` hint and its response ends. */
  closeClients(): void {
    for (const s of this.#streams.values()) s.closeClient(this.#limits.retry);
  }

  get size(): number {
    return this.#streams.size;
  }

  close(): void {
    clearInterval(this.#timer);
    for (const s of this.#streams.values()) this.#drop(s);
  }
}
