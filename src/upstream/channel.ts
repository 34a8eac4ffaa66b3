import type { EgressSink } from "../egress/proxy.ts";
import { GatewayError } from "../errors/errors.ts";
import { isRequest, isResponse, type RpcId, type RpcMessage, requestIdKey } from "../mcp/jsonrpc.ts";
import type { UpstreamBinding } from "../store/types.ts";
import { frameMessage } from "./framing.ts";
import { resultTooLarge } from "./reply.ts";
import type { ForwardContext, UpstreamEvent, UpstreamReply, UpstreamSession } from "./types.ts";

/**
 * A bidirectional JSON-RPC message pipe to one upstream server: a child's stdio, or a legacy
 * HTTP+SSE connection. Message transports have no HTTP framing of their own, so ChannelSession
 * below gives them the request/stream shape of Streamable HTTP.
 */
export interface MessageChannel {
  /**
   * Sends one message. A channel takes the message, never text: it writes its own serialization
   * (framing.ts), so no client byte sequence reaches the upstream's framing.
   */
  send(msg: RpcMessage): void;
  /** Registers the receiver of every message the server sends (one receiver). */
  onMessage(cb: (msg: RpcMessage, text: string) => void): void;
  onClose(cb: (reason: string) => void): void;
  /** Registers the receiver of messages the channel dropped for being over `limits.maxResultBytes`. */
  onOversized(cb: (dropped: Oversized) => void): void;
  close(): Promise<void>;
  readonly closed: boolean;
}

/** A message dropped for its size: what its ends tell of it. */
export interface Oversized {
  /** The id of the response it was, when its ends show one. */
  id: RpcId | undefined;
  /** Its ends show a request or notification (no call waits for it). */
  notResponse: boolean;
  limit: number;
}

/** What the first and last bytes of a dropped message (empty when unknown) tell of it. */
export function oversized(head: string, tail: string, limit: number): Oversized {
  const id = oversizedId(head, tail);
  return { id, notResponse: id === undefined && HEAD_METHOD.test(head), limit };
}

/** A JSON value that can be an id: a number or a JSON string (RFC 8259 §6, §7). */
const ID_VALUE = String.raw`(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|"(?:[^"\\]|\\.)*")`;
/** `{"id":…` or `{"jsonrpc":"2.0","id":…` at the start of a message. */
const HEAD_ID = new RegExp(String.raw`^\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*${ID_VALUE}`);
/** `…,"id":…}` (or followed by `"jsonrpc":"2.0"`) at the end of a message. */
const TAIL_ID = new RegExp(String.raw`,\s*"id"\s*:\s*${ID_VALUE}\s*(?:,\s*"jsonrpc"\s*:\s*"2\.0"\s*)?\}\s*$`);
/** A request or notification: `"method"` among the first keys. */
const HEAD_METHOD = /^\s*\{[^{[]*"method"\s*:/;

/**
 * The id of a message too large to parse, read from its ends: JSON-RPC envelopes put `id` first
 * (after `jsonrpc`) or last, and a `"id"` inside a string value is escaped (`\"id\"`), so an
 * unescaped one right at either end is the envelope's. Undefined when neither end shows it.
 */
export function oversizedId(head: string, tail: string): RpcId | undefined {
  const m = HEAD_ID.exec(head) ?? TAIL_ID.exec(tail);
  if (!m) return undefined;
  try {
    const id = JSON.parse(m[1] as string) as unknown;
    return typeof id === "string" || typeof id === "number" ? id : undefined;
  } catch {
    return undefined;
  }
}

/** An async queue of upstream events, ended by the producer. Bounded: a stuck consumer fails it. */
export class EventQueue implements AsyncIterable<UpstreamEvent> {
  readonly #items: UpstreamEvent[] = [];
  #waiter: (() => void) | undefined;
  #ended = false;
  #error: unknown;
  readonly #max: number;

  constructor(max = 10_000) {
    this.#max = max;
  }

  get ended(): boolean {
    return this.#ended;
  }

  push(ev: UpstreamEvent): void {
    if (this.#ended) return;
    if (this.#items.length >= this.#max) {
      this.fail(new GatewayError("EDGE_UPSTREAM_ERROR", "Too many undelivered upstream messages."));
      return;
    }
    this.#items.push(ev);
    this.#wake();
  }

  end(): void {
    this.#ended = true;
    this.#wake();
  }

  fail(err: unknown): void {
    this.#error = err;
    this.end();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<UpstreamEvent> {
    for (;;) {
      const item = this.#items.shift();
      if (item) {
        yield item;
        continue;
      }
      if (this.#ended) {
        if (this.#error !== undefined) throw this.#error;
        return;
      }
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
      });
    }
  }
}

interface Exchange {
  queue: EventQueue;
  outstanding: Set<string>;
  startedAt: number;
  /** The request's egress recorder (ForwardContext.egress). */
  egress: EgressSink | undefined;
}

function progressTokenOf(msg: RpcMessage): string | undefined {
  const params = (msg as { params?: unknown }).params;
  if (params === null || typeof params !== "object" || Array.isArray(params)) return undefined;
  const p = params as { progressToken?: unknown; _meta?: { progressToken?: unknown } };
  const token = p._meta?.progressToken ?? p.progressToken;
  return typeof token === "string" || typeof token === "number" ? `${typeof token}:${token}` : undefined;
}

/**
 * Streamable HTTP semantics over a message channel, for one MCP session:
 * - a client request opens an exchange; its response, its progress notifications, and server
 *   requests or notifications sent while it is the newest one in flight come back on its stream
 *   (stdio carries no "related request" marker, so the newest exchange is the best owner);
 * - with no exchange in flight, server-initiated messages go to the standalone stream (GET), or
 *   wait in a bounded backlog for it.
 */
export class ChannelSession implements UpstreamSession {
  readonly binding: UpstreamBinding;
  readonly #channel: MessageChannel;
  readonly #byRequest = new Map<string, Exchange>();
  readonly #byProgress = new Map<string, Exchange>();
  readonly #exchanges = new Set<Exchange>();
  #standalone: EventQueue | undefined;
  readonly #backlog: UpstreamEvent[] = [];
  #lostReason: string | undefined;
  readonly #onEnd: () => void;

  constructor(binding: UpstreamBinding, channel: MessageChannel, onEnd: () => void = () => {}) {
    this.binding = binding;
    this.#channel = channel;
    this.#onEnd = onEnd;
    channel.onMessage((msg) => this.#route(msg));
    channel.onClose((reason) => this.#closed(reason));
    channel.onOversized((dropped) => this.#oversized(dropped));
  }

  /**
   * A message over the result maximum: the call it answers fails with EDGE_RESULT_TOO_LARGE. Its
   * id is read from its ends; when they do not show it, the only call in flight (or, with several,
   * every one: one of them will never get its answer) fails. A request or notification is dropped.
   */
  #oversized(dropped: Oversized): void {
    const err = resultTooLarge(dropped.limit);
    if (dropped.id !== undefined) {
      const ex = this.#byRequest.get(requestIdKey(dropped.id));
      if (ex) this.#fail(ex, err);
      return;
    }
    if (dropped.notResponse) return;
    for (const ex of [...this.#exchanges]) this.#fail(ex, err);
  }

  #fail(ex: Exchange, err: GatewayError): void {
    for (const key of ex.outstanding) this.#byRequest.delete(key);
    this.#exchanges.delete(ex);
    for (const [k, v] of this.#byProgress) if (v === ex) this.#byProgress.delete(k);
    ex.queue.fail(err);
  }

  /** A call is in flight on the session. */
  get busy(): boolean {
    return this.#exchanges.size > 0;
  }

  get lost(): boolean {
    return this.#lostReason !== undefined || this.#channel.closed;
  }

  #route(msg: RpcMessage): void {
    // The edge's serialization of what it parsed, not the upstream's line (framing.ts).
    const ev: UpstreamEvent = { data: frameMessage(msg), message: msg };
    if (isResponse(msg)) {
      const key = requestIdKey(msg.id as RpcId);
      const ex = this.#byRequest.get(key);
      if (!ex) return; // a response to nothing we sent: refused
      this.#byRequest.delete(key);
      ex.outstanding.delete(key);
      ex.queue.push(ev);
      if (ex.outstanding.size === 0) this.#finish(ex);
      return;
    }
    const token = progressTokenOf(msg);
    const owner = (token && this.#byProgress.get(token)) || this.#newest();
    if (owner && !(this.#standalone && !isRequest(msg) && token === undefined)) {
      owner.queue.push(ev);
      return;
    }
    if (this.#standalone && !this.#standalone.ended) {
      this.#standalone.push(ev);
      return;
    }
    if (this.#backlog.length < 1000) this.#backlog.push(ev);
  }

  #newest(): Exchange | undefined {
    let newest: Exchange | undefined;
    for (const ex of this.#exchanges) if (!newest || ex.startedAt >= newest.startedAt) newest = ex;
    return newest;
  }

  #finish(ex: Exchange): void {
    this.#exchanges.delete(ex);
    for (const [k, v] of this.#byProgress) if (v === ex) this.#byProgress.delete(k);
    ex.queue.end();
  }

  #closed(reason: string): void {
    this.#lostReason = reason;
    const err = new GatewayError("EDGE_UPSTREAM_ERROR", "The upstream server went away during the request.");
    for (const ex of this.#exchanges) ex.queue.fail(err);
    this.#exchanges.clear();
    this.#byRequest.clear();
    this.#byProgress.clear();
    this.#standalone?.end();
    this.#onEnd();
  }

  /** `_body` (the client's bytes) is never sent: each message is framed by the channel. */
  async post(_body: string, messages: RpcMessage[], ctx: ForwardContext): Promise<UpstreamReply> {
    if (this.lost) throw new GatewayError("EDGE_UPSTREAM_ERROR", "The upstream server is gone.");
    const requests = messages.filter(isRequest);
    if (requests.length === 0) {
      for (const m of messages) this.#channel.send(m);
      return { kind: "accepted" };
    }
    const ex: Exchange = {
      queue: new EventQueue(),
      outstanding: new Set(),
      startedAt: performance.now(),
      egress: ctx.egress,
    };
    for (const r of requests) {
      const key = requestIdKey(r.id);
      ex.outstanding.add(key);
      this.#byRequest.set(key, ex);
      const token = progressTokenOf(r);
      if (token) this.#byProgress.set(token, ex);
    }
    this.#exchanges.add(ex);
    ctx.signal.addEventListener("abort", () => this.#finish(ex), { once: true });
    // One message per send: a batch (2025-03-26) is sent as its elements.
    for (const m of messages) this.#channel.send(m);
    return { kind: "stream", events: ex.queue, close: () => this.#finish(ex) };
  }

  /**
   * Egress proxy attribution: the recorders of the requests in flight on this session now. A
   * process's outbound request carries no JSON-RPC id, so it is attributed to every call the
   * session has outstanding when it arrives (usually one).
   */
  egressSinks(): EgressSink[] {
    const sinks: EgressSink[] = [];
    for (const ex of this.#exchanges) if (ex.egress) sinks.push(ex.egress);
    return sinks;
  }

  async listen(): Promise<UpstreamReply> {
    if (this.lost) throw new GatewayError("EDGE_UPSTREAM_ERROR", "The upstream server is gone.");
    this.#standalone?.end();
    const q = new EventQueue();
    for (const ev of this.#backlog.splice(0)) q.push(ev);
    this.#standalone = q;
    return {
      kind: "stream",
      events: q,
      close: () => {
        q.end();
        if (this.#standalone === q) this.#standalone = undefined;
      },
    };
  }

  async terminate(): Promise<void> {
    await this.#channel.close();
  }
}
