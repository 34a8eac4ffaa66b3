/**
 * Toward a legacy HTTP+SSE server (MCP 2024-11-05, basic/transports "HTTP with SSE"): a GET opens
 * the event stream, whose first `endpoint` event names the URL to POST messages to; answers come
 * back on the stream as `message` events. Used when the server refuses the Streamable HTTP
 * `initialize` POST with 400/404/405 (2025-03-26 transports, "Backwards Compatibility").
 *
 * A legacy session lives as long as its stream: when the stream drops, the bridge opens a new one
 * (a new session) and replays the client's `initialize` and `notifications/initialized` before
 * anything else is sent. Requests that were waiting for an answer on the old stream are reported
 * lost (the bridge re-sends only those safe to repeat).
 */
import {
  parseMessage,
  type RpcMessage,
  type RpcNotification,
  type RpcRequest,
  type RpcResponse,
} from "../mcp/jsonrpc.ts";
import { checkDiscoveredUrl, discard, header, type HttpResponse, readText, send } from "./http.ts";
import {
  AnswerError,
  backoff,
  bridgeError,
  delay,
  type Exchange,
  httpError,
  isConnectFailure,
  LostError,
  sseEvents,
} from "./remote.ts";
import type { HttpTransportOptions } from "./session-era.ts";

export class LegacySseTransport {
  readonly #o: HttpTransportOptions;
  readonly #closed = new AbortController();
  #endpoint: URL | undefined;
  #ready: Promise<void> | undefined;
  #init: RpcRequest | undefined;
  #initialized: RpcNotification | undefined;
  #waiting = new Map<string, { resolve: (m: RpcResponse) => void; reject: (e: Error) => void }>();
  #exchanges = new Set<{ ex: Exchange; lost: (e: Error) => void }>();
  #seq = 0;
  reconnections = 0;

  constructor(options: HttpTransportOptions) {
    this.#o = options;
  }

  /** Opens the stream and performs the client's initialize on it. */
  async initialize(msg: RpcRequest): Promise<RpcResponse> {
    this.#init = msg;
    await this.#connect();
    return this.#internal(msg);
  }

  /** Opens the SSE stream; resolves once the `endpoint` event arrived. */
  #connect(): Promise<void> {
    this.#ready ??= (async () => {
      const started = Date.now();
      for (let attempt = 0; ; attempt++) {
        try {
          await this.#open();
          return;
        } catch (err) {
          if (
            this.#closed.signal.aborted ||
            err instanceof AnswerError ||
            Date.now() - started > this.#o.retry.giveUpAfter
          ) {
            this.#ready = undefined;
            throw err;
          }
          await delay(backoff(this.#o.retry, attempt), this.#closed.signal);
        }
      }
    })();
    return this.#ready;
  }

  async #open(): Promise<void> {
    let res: HttpResponse;
    let authRetries = 0;
    for (;;) {
      const auth = await this.#o.auth.headers();
      res = await send(this.#o.url.href, {
        method: "GET",
        headers: { ...this.#o.headers, ...auth, accept: "text/event-stream" },
        signal: this.#closed.signal,
      });
      if (res.status === 401 && authRetries++ < 3) {
        await discard(res);
        if (await this.#o.auth.onUnauthorized(res, auth["authorization"])) continue;
      }
      break;
    }
    if (res.status !== 200 || !/^text\/event-stream/i.test(header(res, "content-type") ?? "")) {
      throw httpError(res.status, await readText(res).catch(() => ""));
    }
    const events = sseEvents(res);
    // The first `endpoint` event names where to POST.
    for (;;) {
      const next = await events.next();
      if (next.done) throw new LostError("the SSE stream closed before its endpoint event");
      const ev = next.value;
      if (ev.event === "endpoint") {
        this.#endpoint = checkDiscoveredUrl(new URL(ev.data.trim(), this.#o.url).href, this.#o.url);
        if (this.#endpoint.origin !== this.#o.url.origin) {
          throw bridgeError("EDGE_CONNECT_NOT_INITIALIZED", "The SSE endpoint event names another origin.");
        }
        break;
      }
    }
    void this.#pump(events);
  }

  async #pump(events: AsyncGenerator<{ event?: string; data: string; hasData: boolean }>): Promise<void> {
    try {
      for await (const ev of events) {
        if ((ev.event ?? "message") !== "message" || !ev.hasData || ev.data === "") continue;
        let msg: RpcMessage;
        try {
          msg = parseMessage(ev.data);
        } catch {
          continue;
        }
        if (!("method" in msg) && "id" in msg && msg.id !== null && msg.id !== undefined) {
          const w = this.#waiting.get(JSON.stringify(msg.id));
          if (w) {
            this.#waiting.delete(JSON.stringify(msg.id));
            w.resolve(msg);
            continue;
          }
        }
        this.#o.hooks.deliver(msg);
      }
    } catch (err) {
      this.#o.hooks.log.debug(`legacy stream broke: ${(err as Error).message}`);
    }
    if (this.#closed.signal.aborted) return;
    // The stream (and with it the legacy session) is gone: what waited on it is lost.
    this.#ready = undefined;
    this.#endpoint = undefined;
    for (const w of this.#waiting.values()) w.reject(new LostError("the SSE stream dropped"));
    this.#waiting.clear();
    for (const e of this.#exchanges) e.lost(new LostError("the SSE stream dropped before the answer"));
    this.#exchanges.clear();
    this.reconnections++;
    this.#o.hooks.log.info("the SSE stream dropped: reconnecting with a new session");
    void this.#reopen();
  }

  async #reopen(): Promise<void> {
    try {
      await this.#connect();
      if (this.#init) await this.#internal({ ...this.#init, id: `mcp-edge-connect:reinit:${++this.#seq}` });
      if (this.#initialized) await this.#postRaw(this.#initialized);
    } catch (err) {
      this.#o.hooks.log.warn(`could not re-open the SSE session: ${(err as Error).message}`);
    }
  }

  /** A request whose answer the transport keeps for itself. */
  async #internal(msg: RpcRequest): Promise<RpcResponse> {
    const answer = new Promise<RpcResponse>((resolve, reject) => {
      this.#waiting.set(JSON.stringify(msg.id), { resolve, reject });
    });
    await this.#postRaw(msg);
    return answer;
  }

  async #postRaw(msg: RpcMessage): Promise<void> {
    await this.#connect();
    const endpoint = this.#endpoint as URL;
    let authRetries = 0;
    for (;;) {
      const auth = await this.#o.auth.headers();
      const res = await send(endpoint.href, {
        method: "POST",
        headers: { ...this.#o.headers, ...auth, "content-type": "application/json" },
        body: JSON.stringify(msg),
        signal: this.#closed.signal,
      });
      if (res.status === 401 && authRetries++ < 3) {
        await discard(res);
        if (await this.#o.auth.onUnauthorized(res, auth["authorization"])) continue;
      }
      if (res.status < 200 || res.status > 299)
        throw httpError(res.status, await readText(res).catch(() => ""));
      await discard(res);
      return;
    }
  }

  async notify(msg: RpcNotification | RpcResponse): Promise<void> {
    if ("method" in msg && msg.method === "notifications/initialized") this.#initialized = msg;
    try {
      await this.#postRaw(msg);
    } catch (err) {
      this.#o.hooks.log.warn(`could not send a message: ${(err as Error).message}`);
    }
  }

  async request(ex: Exchange): Promise<void> {
    let lost!: (e: Error) => void;
    const lostP = new Promise<never>((_, reject) => {
      lost = reject;
    });
    lostP.catch(() => undefined);
    const entry = { ex, lost };
    this.#exchanges.add(entry);
    try {
      await this.#postRaw(ex.msg);
      await Promise.race([ex.done, lostP]);
    } catch (err) {
      if (isConnectFailure(err))
        throw bridgeError("EDGE_CONNECT_UNREACHABLE", "The server could not be reached.");
      throw err;
    } finally {
      this.#exchanges.delete(entry);
    }
  }

  async close(): Promise<void> {
    this.#closed.abort();
  }
}
