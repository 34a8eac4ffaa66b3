import { randomBytes } from "node:crypto";
import { GatewayError } from "../errors/errors.ts";
import {
  isNotification,
  isRequest,
  isResponse,
  type RpcId,
  type RpcMessage,
  type RpcRequest,
  requestIdKey,
} from "../mcp/jsonrpc.ts";
import type { Logger } from "../observability/logger.ts";
import type { UpstreamBinding } from "../store/types.ts";
import { ChannelSession, type MessageChannel, type Oversized } from "./channel.ts";
import { frameMessage } from "./framing.ts";
import { type ForwardContext, type InitializeOutcome, UpstreamSessionLost } from "./types.ts";

interface Outstanding {
  vid: string;
  id: RpcId;
  token?: string | number;
  tokenKey?: string;
  /** Set for the edge's own initialize of the process: the answer goes here, not to a session. */
  resolve?: (msg: RpcMessage) => void;
}

type Params = Record<string, unknown> & { _meta?: Record<string, unknown> };

function paramsOf(msg: RpcMessage): Params | undefined {
  const p = (msg as { params?: unknown }).params;
  return p !== null && typeof p === "object" && !Array.isArray(p) ? (p as Params) : undefined;
}

/**
 * One stdio process shared by every session of a route (`mode: shared`), for servers that are
 * expensive to start. The process is initialized once; later sessions get the cached
 * InitializeResult. Request ids and progress tokens are rewritten so that sessions cannot see or
 * answer each other's traffic; responses go back only to the session that asked; server requests
 * go to the session with the newest call in flight; other notifications go to every session.
 * Limitation (documented): the protocol version is the one negotiated by the first session.
 */
export class SharedChannel {
  readonly #factory: () => MessageChannel;
  readonly #backoff: number;
  readonly #log: Logger;
  #real: MessageChannel | undefined;
  #generation = "";
  #stopped = false;
  #initResult: unknown;
  #initializing: Promise<unknown> | undefined;
  readonly #virtual = new Map<string, VirtualChannel>();
  readonly #sessions = new Map<string, ChannelSession>();
  readonly #outstanding = new Map<string, Outstanding>();
  readonly #serverRequests = new Map<string, string>();
  readonly #tokens = new Map<string, Outstanding>();
  #next = 1;

  constructor(factory: () => MessageChannel, backoffMs: number, log: Logger) {
    this.#factory = factory;
    this.#backoff = backoffMs;
    this.#log = log;
  }

  get up(): boolean {
    return this.#real !== undefined && !this.#real.closed;
  }

  get sessions(): number {
    return this.#sessions.size;
  }

  start(): void {
    this.#spawn();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#real?.close();
  }

  #spawn(): void {
    if (this.#stopped) return;
    const real = this.#factory();
    this.#real = real;
    this.#generation = randomBytes(6).toString("base64url");
    this.#initResult = undefined;
    this.#initializing = undefined;
    real.onMessage((msg) => this.#fromServer(msg));
    real.onOversized((dropped) => this.#oversized(dropped));
    real.onClose((reason) => {
      this.#log.warn({ reason }, "shared stdio upstream exited; its sessions are lost");
      for (const v of this.#virtual.values()) v.lost(reason);
      this.#virtual.clear();
      this.#sessions.clear();
      this.#outstanding.clear();
      this.#serverRequests.clear();
      this.#tokens.clear();
      if (!this.#stopped) setTimeout(() => this.#spawn(), this.#backoff).unref();
    });
  }

  #instance(): string {
    return `stdio:shared:${this.#generation}`;
  }

  attach(binding: UpstreamBinding): ChannelSession {
    const s = binding.sessionId ? this.#sessions.get(binding.sessionId) : undefined;
    if (!s || s.lost || binding.instance !== this.#instance()) {
      throw new UpstreamSessionLost("the shared process that held the session is gone");
    }
    return s;
  }

  async initialize(request: RpcRequest, ctx: ForwardContext): Promise<InitializeOutcome> {
    if (!this.up) throw new GatewayError("EDGE_UPSTREAM_UNAVAILABLE");
    const vid = randomBytes(9).toString("base64url");
    const channel = new VirtualChannel(vid, this);
    this.#virtual.set(vid, channel);
    const session = new ChannelSession({ instance: this.#instance(), sessionId: vid }, channel, () => {
      this.#virtual.delete(vid);
      this.#sessions.delete(vid);
    });
    this.#sessions.set(vid, session);
    if (this.#initResult === undefined) {
      this.#initializing ??= this.#initializeProcess(request, ctx);
      try {
        this.#initResult = await this.#initializing;
      } catch (err) {
        this.#initializing = undefined;
        await session.terminate();
        throw err;
      }
    }
    const message = { jsonrpc: "2.0" as const, id: request.id, result: this.#initResult };
    return { session, reply: { kind: "json", message, data: JSON.stringify(message) } };
  }

  async #initializeProcess(request: RpcRequest, ctx: ForwardContext): Promise<unknown> {
    const id = `init-${this.#next++}`;
    const real = this.#real as MessageChannel;
    const result = new Promise<unknown>((resolve, reject) => {
      const onAbort = () => reject(new GatewayError("EDGE_UPSTREAM_TIMEOUT"));
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      this.#outstanding.set(requestIdKey(id), {
        vid: "",
        id,
        resolve: (msg: RpcMessage) => {
          ctx.signal.removeEventListener("abort", onAbort);
          const r = msg as { result?: unknown; error?: { message?: string } };
          if (r.error)
            reject(new GatewayError("EDGE_UPSTREAM_ERROR", "The shared upstream refused initialize."));
          else resolve(r.result);
        },
      });
    });
    real.send({ ...request, id });
    const out = await result;
    real.send({ jsonrpc: "2.0", method: "notifications/initialized" });
    return out;
  }

  /** A message from one session's client, rewritten for the shared process. */
  fromSession(vid: string, msg: RpcMessage): void {
    const real = this.#real;
    if (!real || real.closed)
      throw new GatewayError("EDGE_UPSTREAM_ERROR", "The shared upstream is restarting.");
    if (isRequest(msg)) {
      const upstreamId = this.#next++;
      const entry: Outstanding = { vid, id: msg.id };
      const params = paramsOf(msg);
      let outParams = params;
      const token = params?._meta?.progressToken;
      if (typeof token === "string" || typeof token === "number") {
        const t = `p${upstreamId}`;
        entry.token = token;
        entry.tokenKey = t;
        this.#tokens.set(t, entry);
        outParams = { ...params, _meta: { ...params?._meta, progressToken: t } };
      }
      this.#outstanding.set(requestIdKey(upstreamId), entry);
      real.send({ ...msg, id: upstreamId, ...(outParams ? { params: outParams } : {}) } as RpcMessage);
      return;
    }
    if (isResponse(msg)) {
      // An answer to a server request: only the session the request went to may answer it.
      const key = requestIdKey(msg.id as RpcId);
      if (this.#serverRequests.get(key) !== vid) return;
      this.#serverRequests.delete(key);
      real.send(msg);
      return;
    }
    if (isNotification(msg)) {
      if (msg.method === "notifications/initialized") return; // the edge sent it once for everyone
      if (msg.method === "notifications/cancelled") {
        const requestId = paramsOf(msg)?.requestId;
        for (const [k, o] of this.#outstanding) {
          if (o.vid === vid && o.id === requestId) {
            const upstreamId = k.slice(2);
            real.send({
              ...msg,
              params: { ...paramsOf(msg), requestId: k.startsWith("n:") ? Number(upstreamId) : upstreamId },
            });
          }
        }
        return;
      }
      real.send(msg);
    }
  }

  /** A dropped answer goes to its session under the session's own id; an unknown one to every session. */
  #oversized(dropped: Oversized): void {
    if (dropped.id !== undefined) {
      const key = requestIdKey(dropped.id);
      const o = this.#outstanding.get(key);
      if (!o || !o.vid) return;
      this.#outstanding.delete(key);
      if (o.tokenKey) this.#tokens.delete(o.tokenKey);
      this.#virtual.get(o.vid)?.dropped({ ...dropped, id: o.id });
      return;
    }
    if (!dropped.notResponse) for (const v of this.#virtual.values()) v.dropped(dropped);
  }

  #fromServer(msg: RpcMessage): void {
    if (isResponse(msg)) {
      const key = requestIdKey(msg.id as RpcId);
      const o = this.#outstanding.get(key) as
        (Outstanding & { resolve?: (m: RpcMessage) => void }) | undefined;
      if (!o) return;
      this.#outstanding.delete(key);
      if (o.tokenKey) this.#tokens.delete(o.tokenKey);
      if (o.resolve) {
        o.resolve(msg);
        return;
      }
      this.#virtual.get(o.vid)?.deliver({ ...msg, id: o.id } as RpcMessage);
      return;
    }
    if (isRequest(msg)) {
      const vid = this.#newestSession();
      if (!vid) return;
      this.#serverRequests.set(requestIdKey(msg.id), vid);
      this.#virtual.get(vid)?.deliver(msg);
      return;
    }
    const token = paramsOf(msg)?.progressToken;
    if (msg.method === "notifications/progress" && typeof token === "string") {
      const o = this.#tokens.get(token);
      if (o)
        this.#virtual.get(o.vid)?.deliver({ ...msg, params: { ...paramsOf(msg), progressToken: o.token } });
      return;
    }
    for (const v of this.#virtual.values()) v.deliver(msg);
  }

  #newestSession(): string | undefined {
    let vid: string | undefined;
    for (const o of this.#outstanding.values()) if (o.vid) vid = o.vid; // Map keeps insertion order
    return vid ?? this.#virtual.keys().next().value;
  }
}

/** The MessageChannel one session sees of the shared process. */
class VirtualChannel implements MessageChannel {
  readonly #vid: string;
  readonly #shared: SharedChannel;
  #onMessage: (msg: RpcMessage, text: string) => void = () => {};
  #onOversized: (dropped: Oversized) => void = () => {};
  readonly #onClose: ((reason: string) => void)[] = [];
  #closed = false;

  constructor(vid: string, shared: SharedChannel) {
    this.#vid = vid;
    this.#shared = shared;
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(msg: RpcMessage): void {
    this.#shared.fromSession(this.#vid, msg);
  }

  deliver(msg: RpcMessage): void {
    if (!this.#closed) this.#onMessage(msg, frameMessage(msg));
  }

  onMessage(cb: (msg: RpcMessage, text: string) => void): void {
    this.#onMessage = cb;
  }

  onClose(cb: (reason: string) => void): void {
    this.#onClose.push(cb);
  }

  onOversized(cb: (dropped: Oversized) => void): void {
    this.#onOversized = cb;
  }

  dropped(d: Oversized): void {
    if (!this.#closed) this.#onOversized(d);
  }

  lost(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const cb of this.#onClose) cb(reason);
  }

  async close(): Promise<void> {
    this.lost("session ended");
  }
}
