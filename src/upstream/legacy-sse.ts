import { randomBytes } from "node:crypto";
import type { UpstreamConfig } from "../config/schema.ts";
import type { Egress } from "../egress/index.ts";
import { GatewayError } from "../errors/errors.ts";
import { parseMessage, type RpcMessage, type RpcRequest } from "../mcp/jsonrpc.ts";
import { SseParser, SseTooLargeError } from "../mcp/sse.ts";
import type { Logger } from "../observability/logger.ts";
import type { UpstreamBinding } from "../store/types.ts";
import { ChannelSession, type MessageChannel, type Oversized, oversized } from "./channel.ts";
import { frameMessage } from "./framing.ts";
import { createCredentials, type UpstreamCredentials } from "./credentials.ts";
import { DEFAULT_MAX_RESULT_BYTES, readBody } from "./reply.ts";
import {
  type ForwardContext,
  type InitializeOutcome,
  type InstanceHealth,
  type Upstream,
  type UpstreamReply,
  type UpstreamSession,
  UpstreamSessionLost,
} from "./types.ts";

/**
 * One connection to a legacy HTTP+SSE (2024-11-05) server: a GET stream whose first `endpoint`
 * event names the URL to POST messages to; answers come back on the stream as `message` events.
 * The endpoint must stay on the stream's origin, so a server cannot point the edge elsewhere.
 */
export class LegacySseChannel implements MessageChannel {
  readonly #egress: Egress;
  readonly #url: string;
  readonly #headers: Record<string, string>;
  readonly #creds: UpstreamCredentials;
  readonly #abort = new AbortController();
  #endpoint: string | undefined;
  #onMessage: (msg: RpcMessage, text: string) => void = () => {};
  #onOversized: (dropped: Oversized) => void = () => {};
  readonly #maxResult: number;
  readonly #onClose: ((reason: string) => void)[] = [];
  #closed = false;
  #sendChain: Promise<void> = Promise.resolve();

  private constructor(
    egress: Egress,
    url: string,
    headers: Record<string, string>,
    creds: UpstreamCredentials,
    maxResult: number,
  ) {
    this.#egress = egress;
    this.#url = url;
    this.#headers = headers;
    this.#creds = creds;
    this.#maxResult = maxResult;
  }

  /** Connects and waits for the `endpoint` event. */
  static async connect(
    egress: Egress,
    url: string,
    headers: Record<string, string>,
    timeoutMs: number,
    log: Logger,
    creds: UpstreamCredentials = createCredentials(undefined, egress, log),
    maxResult = DEFAULT_MAX_RESULT_BYTES,
  ): Promise<LegacySseChannel> {
    const ch = new LegacySseChannel(egress, url, headers, creds, maxResult);
    await ch.#open(timeoutMs, log);
    return ch;
  }

  async #open(timeoutMs: number, log: Logger): Promise<void> {
    const connect = async (creds: Record<string, string>) =>
      this.#egress.request(this.#url, {
        method: "GET",
        headers: { ...this.#headers, ...creds, accept: "text/event-stream" },
        signal: this.#abort.signal,
        stream: true,
        headersTimeout: timeoutMs,
      });
    const creds = await this.#creds.headers(AbortSignal.timeout(timeoutMs));
    let res = await connect(creds);
    // A 401 on connect: renew the credentials once and reconnect.
    if (
      res.status === 401 &&
      Object.keys(creds).length > 0 &&
      (await this.#creds.refreshAfterRejection(creds))
    ) {
      res.body.resume();
      res = await connect(await this.#creds.headers(AbortSignal.timeout(timeoutMs)));
    }
    if (res.status !== 200) {
      await readBody(res.body, 64 * 1024).catch(() => undefined);
      throw new GatewayError("EDGE_UPSTREAM_ERROR", `The legacy SSE upstream answered ${res.status}.`);
    }
    const ready = Promise.withResolvers<void>();
    const timer = setTimeout(
      () =>
        ready.reject(new GatewayError("EDGE_UPSTREAM_TIMEOUT", "No endpoint event from the SSE upstream.")),
      timeoutMs,
    );
    // An event is one message plus its `data: ` prefixes and line ends.
    const parser = new SseParser({ maxEventBytes: this.#maxResult + 64 * 1024 });
    const origin = new URL(this.#url).origin;
    void (async () => {
      try {
        for await (const chunk of res.body) {
          for (const ev of parser.push(chunk)) {
            if (ev.event === "endpoint") {
              const endpoint = new URL(ev.data.trim(), this.#url);
              if (endpoint.origin !== origin) {
                ready.reject(
                  new GatewayError("EDGE_UPSTREAM_BAD_RESPONSE", "The SSE endpoint is on another origin."),
                );
                this.#abort.abort();
                return;
              }
              this.#endpoint = endpoint.href;
              ready.resolve();
            } else if ((ev.event === undefined || ev.event === "message") && ev.data) {
              try {
                this.#onMessage(parseMessage(ev.data), ev.data);
              } catch {
                log.warn({ upstream: this.#url }, "legacy SSE upstream sent an event that is not JSON-RPC");
              }
            }
          }
        }
        this.#finish("stream ended");
      } catch (err) {
        // The parser cannot go on past an event over the maximum: its call gets the coded error,
        // then the connection (and the session on it) ends.
        if (err instanceof SseTooLargeError) this.#onOversized(oversized("", "", this.#maxResult));
        this.#finish(`stream failed: ${String(err)}`);
      } finally {
        clearTimeout(timer);
        ready.reject(
          new GatewayError("EDGE_UPSTREAM_ERROR", "The SSE upstream closed before its endpoint event."),
        );
      }
    })();
    await ready.promise;
    clearTimeout(timer);
  }

  get closed(): boolean {
    return this.#closed;
  }

  #finish(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const cb of this.#onClose) cb(reason);
  }

  /**
   * Messages are POSTed in order: the legacy transport has no other ordering guarantee. The body is
   * the edge's serialization of the message (framing.ts), never the client's bytes.
   */
  send(msg: RpcMessage): void {
    const text = frameMessage(msg);
    const endpoint = this.#endpoint;
    if (this.#closed || !endpoint) throw new GatewayError("EDGE_UPSTREAM_ERROR", "The SSE upstream is gone.");
    this.#sendChain = this.#sendChain.then(async () => {
      try {
        const signal = AbortSignal.timeout(30_000);
        const post = async (creds: Record<string, string>) =>
          this.#egress.request(endpoint, {
            method: "POST",
            headers: { ...this.#headers, ...creds, "content-type": "application/json" },
            body: text,
            signal,
          });
        const creds = await this.#creds.headers(signal);
        let res = await post(creds);
        // The message was not processed (401): one retry with renewed credentials.
        if (
          res.status === 401 &&
          Object.keys(creds).length > 0 &&
          (await this.#creds.refreshAfterRejection(creds))
        ) {
          res.body.resume();
          res = await post(await this.#creds.headers(signal));
        }
        res.body.resume();
        if (res.status >= 400) this.#finish(`POST answered ${res.status}`);
      } catch (err) {
        this.#finish(`POST failed: ${String(err)}`);
      }
    });
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

  async close(): Promise<void> {
    this.#abort.abort();
    this.#finish("closed by the edge");
  }
}

/** A legacy HTTP+SSE upstream: one SSE connection per MCP session. */
export class LegacySseUpstream implements Upstream {
  readonly kind = "sse" as const;
  readonly #cfg: UpstreamConfig;
  readonly #egress: Egress;
  readonly #log: Logger;
  readonly #creds: UpstreamCredentials;
  readonly #sessions = new Map<string, ChannelSession>();
  readonly #maxResult: number;

  constructor(
    cfg: UpstreamConfig,
    egress: Egress,
    log: Logger,
    credentials: UpstreamCredentials = createCredentials(undefined, egress, log),
    maxResultBytes = DEFAULT_MAX_RESULT_BYTES,
  ) {
    this.#cfg = cfg;
    this.#egress = egress;
    this.#log = log;
    this.#creds = credentials;
    this.#maxResult = maxResultBytes;
  }

  async start(): Promise<void> {}

  async stop(): Promise<void> {
    this.#creds.stop();
    await Promise.allSettled([...this.#sessions.values()].map((s) => s.terminate()));
  }

  health(): InstanceHealth[] {
    return [{ id: this.#cfg.sse as string, healthy: true, sessions: this.#sessions.size, inflight: 0 }];
  }

  ready(): boolean {
    return true;
  }

  async initialize(request: RpcRequest, body: string, ctx: ForwardContext): Promise<InitializeOutcome> {
    let channel: LegacySseChannel;
    try {
      channel = await LegacySseChannel.connect(
        this.#egress,
        this.#cfg.sse as string,
        this.#cfg.headers,
        this.#cfg.connectTimeout,
        this.#log,
        this.#creds,
        this.#maxResult,
      );
    } catch (err) {
      if (err instanceof GatewayError) throw err;
      throw new GatewayError("EDGE_UPSTREAM_UNAVAILABLE", undefined, { cause: err });
    }
    const instance = `sse:${randomBytes(9).toString("base64url")}`;
    const session = new ChannelSession({ instance, sessionId: null }, channel, () =>
      this.#sessions.delete(instance),
    );
    this.#sessions.set(instance, session);
    return { session, reply: await session.post(body, [request], ctx) };
  }

  attach(binding: UpstreamBinding): UpstreamSession {
    const s = this.#sessions.get(binding.instance);
    if (!s || s.lost) throw new UpstreamSessionLost("the session's SSE connection is gone");
    return s;
  }

  async stateless(_body: string, _messages: RpcMessage[], _ctx: ForwardContext): Promise<UpstreamReply> {
    throw new GatewayError(
      "EDGE_SESSION_REQUIRED",
      "This server speaks the session era: send initialize first.",
    );
  }
}
