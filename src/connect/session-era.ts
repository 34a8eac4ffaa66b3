/**
 * Toward a Streamable HTTP server of the session era (MCP 2025-03-26 … 2025-11-25,
 * basic/transports "Streamable HTTP"): every client message is its own POST; the answer is JSON or
 * an SSE stream; `Mcp-Session-Id` from the initialize answer goes on every later request with
 * `MCP-Protocol-Version`; a standalone GET stream carries server-initiated messages.
 * (One file of ~550 lines on purpose: the session, its streams and their resumption share one
 * state machine, which reads best in one place.)
 *
 * What makes the session survive:
 * - An SSE stream that breaks before the answer arrived is resumed with GET + `Last-Event-ID`
 *   (transports "Resumability and Redelivery"), after the server's `retry` or a backoff; the server
 *   replays only what came after that id, so every event reaches the client once.
 * - A 404 on the session ("Session Management": the client MUST start a new session) re-initializes
 *   transparently with the client's original `initialize` and its `notifications/initialized`. The
 *   request that got the 404 was refused, not run, so it is re-sent on the new session; a request
 *   that was *running* when the session was lost (its stream could not be resumed) is reported to
 *   the caller as LostError — the bridge re-sends it only if it is safe to repeat.
 * - An unreachable server (refused, DNS, connect timeout: nothing was sent) is retried with
 *   backoff for `retry.giveUpAfter`, for any request.
 */
import type { RpcMessage, RpcNotification, RpcRequest, RpcResponse } from "../mcp/jsonrpc.ts";
import { parseMessage } from "../mcp/jsonrpc.ts";
import { discard, header, type HttpResponse, readText, send } from "./http.ts";
import {
  AnswerError,
  type AuthHook,
  backoff,
  bridgeError,
  delay,
  type Exchange,
  httpError,
  isConnectFailure,
  LostError,
  type RetryPolicy,
  rpcErrorOf,
  sseEvents,
  type TransportHooks,
} from "./remote.ts";

export interface HttpTransportOptions {
  url: URL;
  headers: Record<string, string>;
  auth: AuthHook;
  hooks: TransportHooks;
  retry: RetryPolicy;
}

interface StreamState {
  lastEventId: string | undefined;
  retry: number | undefined;
  /** The internal answer looked for (re-initialize), when found. */
  found?: RpcResponse;
}

const LATEST_SESSION_VERSION = "2025-11-25";

export class SessionEraTransport {
  readonly #o: HttpTransportOptions;
  readonly #closed = new AbortController();
  #sessionId: string | undefined;
  #protocolVersion: string | undefined;
  #init: RpcRequest | undefined;
  #initialized: RpcNotification | undefined;
  #generation = 0;
  #reinit: Promise<void> | undefined;
  #getLoop: Promise<void> | undefined;
  #getAbort: AbortController | undefined;
  #getLastEventId: string | undefined;
  #getUnsupported = false;
  /**
   * Settles once the standalone GET stream answered (opened, refused, or failed). Requests wait
   * for it (bounded), so that what the server sends on that stream in answer to them has a stream
   * to go to.
   */
  #getOpened: Promise<void> = Promise.resolve();
  #markGetOpened: () => void = () => undefined;
  #getPending = false;
  #internalSeq = 0;
  /** Sessions re-initialized so far (tests and logs read it). */
  reinitializations = 0;

  constructor(options: HttpTransportOptions) {
    this.#o = options;
  }

  get sessionId(): string | undefined {
    return this.#sessionId;
  }

  /**
   * The client's initialize. Returns the server's answer (the bridge delivers it). A 400/404/405
   * answer throws AnswerError with `data.fallback = true` (the caller may try legacy HTTP+SSE).
   */
  async initialize(msg: RpcRequest): Promise<RpcResponse> {
    this.#init = msg;
    const answer = await this.#handshake(msg);
    return answer;
  }

  /** Sends the handshake and reads its answer; sets the session and the negotiated version. */
  async #handshake(msg: RpcRequest): Promise<RpcResponse> {
    this.#sessionId = undefined;
    const res = await this.#post(msg, true);
    if (res.status === 400 || res.status === 404 || res.status === 405) {
      const text = await readText(res).catch(() => "");
      const err = httpError(res.status, text);
      throw new AnswerError({ ...err.rpc, data: { ...(err.rpc.data as object), fallback: true } });
    }
    if (res.status < 200 || res.status > 299)
      throw httpError(res.status, await readText(res).catch(() => ""));
    const sid = header(res, "mcp-session-id");
    const answer = await this.#readAnswer(res, msg.id);
    if (!answer) throw new LostError("the initialize answer never came");
    this.#sessionId = sid;
    const result = "result" in answer ? (answer.result as { protocolVersion?: unknown }) : undefined;
    this.#protocolVersion =
      typeof result?.protocolVersion === "string" ? result.protocolVersion : LATEST_SESSION_VERSION;
    return answer;
  }

  /** A notification or a response to a server request. */
  /** From now until the GET stream answers, requests wait for it (see #getOpened). */
  #expectGetStream(): void {
    if (this.#getPending || this.#getUnsupported) return;
    this.#getPending = true;
    this.#getOpened = new Promise<void>((resolve) => {
      this.#markGetOpened = () => {
        this.#getPending = false;
        resolve();
      };
    });
  }

  async notify(msg: RpcNotification | RpcResponse): Promise<void> {
    if ("method" in msg && msg.method === "notifications/initialized") {
      this.#initialized = msg;
      this.#expectGetStream();
    }
    for (let attempt = 0; attempt < 3; attempt++) {
      const gen = this.#generation;
      let res: HttpResponse;
      try {
        res = await this.#post(msg);
      } catch (err) {
        this.#o.hooks.log.warn(`could not send ${describe(msg)}: ${(err as Error).message}`);
        return;
      }
      if (this.#isSessionLost(res, await peek(res))) {
        // A response to a request of the lost session has no one to go to; a notification is re-sent.
        await this.#reinitialize(gen);
        if (!("method" in msg)) return;
        continue;
      }
      if (res.status >= 300) {
        this.#o.hooks.log.warn(`the server refused ${describe(msg)}: HTTP ${res.status}`);
      }
      await discard(res);
      if (msg === this.#initialized) this.#startGetStream();
      return;
    }
  }

  /** One client request; resolves once its answer was delivered. */
  async request(ex: Exchange): Promise<void> {
    await Promise.race([this.#getOpened, delay(2000, this.#closed.signal)]);
    for (let attempt = 0; attempt < 4; attempt++) {
      const gen = this.#generation;
      let res: HttpResponse;
      try {
        res = await this.#post(ex.msg);
      } catch (err) {
        if (isConnectFailure(err)) throw unreachable(this.#o.url, err);
        if (this.#closed.signal.aborted) throw err;
        throw new LostError(`the connection broke after the request was sent (${(err as Error).message})`);
      }
      const text = await peek(res);
      if (this.#isSessionLost(res, text)) {
        // The server refused the request because it no longer knows the session: nothing ran.
        await this.#reinitialize(gen);
        continue;
      }
      if (res.status === 202) {
        // Not how a request is answered; the answer, if any, comes on the GET stream.
        await ex.done;
        return;
      }
      if (res.status < 200 || res.status > 299) throw httpError(res.status, text ?? "");
      if (text !== undefined) {
        this.#deliverText(text);
        if (!ex.answered) throw new LostError("the JSON answer was not this request's answer");
        return;
      }
      const state = await this.#consume(res, ex);
      if (ex.answered) return;
      if (state.lastEventId === undefined) {
        throw new LostError(
          "the answer stream broke before the answer, and it carried no event id to resume from",
        );
      }
      await this.#resume(ex, state, gen);
      return;
    }
    throw bridgeError(
      "EDGE_CONNECT_SESSION_UNSTABLE",
      "The server keeps losing the session; giving up on this request.",
    );
  }

  /** Stream ended early: GET + Last-Event-ID until the answer arrives (the server may close again: polling). */
  async #resume(ex: Exchange, state: StreamState, sessionGen: number): Promise<void> {
    const started = Date.now();
    let attempt = 0;
    let last = state.lastEventId as string;
    let wait = state.retry;
    while (!ex.answered) {
      await delay(wait ?? backoff(this.#o.retry, attempt), this.#closed.signal);
      if (this.#closed.signal.aborted) throw new LostError("the bridge is closing");
      // Event ids belong to the session that sent them: once it was replaced (the GET stream found
      // it lost and re-initialized), there is nothing to resume.
      if (this.#reinit) await this.#reinit.catch(() => undefined);
      if (this.#generation !== sessionGen) {
        throw new LostError("the server lost the session while the request was running");
      }
      const gen = this.#generation;
      let res: HttpResponse;
      try {
        res = await this.#get(last);
      } catch (err) {
        if (Date.now() - started > this.#o.retry.giveUpAfter) {
          throw new LostError(`could not resume the answer stream: ${(err as Error).message}`);
        }
        attempt++;
        wait = undefined;
        continue;
      }
      if (res.status === 404 || this.#isSessionLost(res, await peek(res))) {
        await discard(res);
        await this.#reinitialize(gen);
        throw new LostError("the server lost the session while the request was running");
      }
      if (res.status !== 200) {
        await discard(res);
        if (res.status === 503 && Date.now() - started < this.#o.retry.giveUpAfter) {
          attempt++;
          continue;
        }
        throw new LostError(`the server refused to resume the stream (HTTP ${res.status})`);
      }
      this.#o.hooks.log.debug(`resuming a stream after event ${last}`);
      const next = await this.#consume(res, ex);
      if (next.lastEventId !== undefined) last = next.lastEventId;
      wait = next.retry;
      attempt = 0;
    }
  }

  /** Reads an SSE answer, delivering every message, until the exchange is answered or the stream ends. */
  async #consume(res: HttpResponse, ex?: Exchange, lookFor?: string | number): Promise<StreamState> {
    const state: StreamState = { lastEventId: undefined, retry: undefined };
    try {
      for await (const ev of sseEvents(res)) {
        if (ev.id !== undefined && ev.id !== "") state.lastEventId = ev.id;
        if (ev.retry !== undefined) state.retry = ev.retry;
        if (!ev.hasData || ev.data === "" || (ev.event !== undefined && ev.event !== "message")) continue;
        let msg: RpcMessage;
        try {
          msg = parseMessage(ev.data);
        } catch (err) {
          this.#o.hooks.log.warn(`dropped an invalid message from the server: ${(err as Error).message}`);
          continue;
        }
        if (lookFor !== undefined && "id" in msg && msg.id === lookFor && !("method" in msg)) {
          state.found = msg;
          break;
        }
        this.#o.hooks.deliver(msg);
        if (ex?.answered) break;
      }
    } catch (err) {
      this.#o.hooks.log.debug(`stream broke: ${(err as Error).message}`);
    } finally {
      res.body.destroy();
    }
    return state;
  }

  #deliverText(text: string): void {
    try {
      this.#o.hooks.deliver(parseMessage(text));
    } catch (err) {
      this.#o.hooks.log.warn(`dropped an invalid answer from the server: ${(err as Error).message}`);
    }
  }

  /** Reads the answer to an internal request (the handshake) from a JSON or SSE body. */
  async #readAnswer(res: HttpResponse, id: string | number): Promise<RpcResponse | undefined> {
    const text = await peek(res);
    if (text !== undefined) {
      const msg = parseMessage(text);
      return "method" in msg ? undefined : msg;
    }
    const state = await this.#consume(res, undefined, id);
    return state.found;
  }

  /**
   * 404 with a session is the spec's "session terminated". Some servers (the SDK's sample apps)
   * answer an unknown session with 400 and a JSON-RPC error naming the session instead: that is
   * read the same way.
   */
  #isSessionLost(res: HttpResponse, text: string | undefined): boolean {
    if (this.#sessionId === undefined) return false;
    if (res.status === 404) return true;
    if (res.status === 400 && text !== undefined) {
      const rpc = rpcErrorOf(text);
      return rpc !== undefined && /session/i.test(rpc.message) && rpc.code !== -32600;
    }
    return false;
  }

  /** Single flight: concurrent losers of one session share one new session. */
  #reinitialize(gen: number): Promise<void> {
    if (this.#reinit) return this.#reinit;
    if (gen !== this.#generation) return Promise.resolve();
    const init = this.#init;
    if (!init) return Promise.reject(bridgeError("EDGE_CONNECT_NOT_INITIALIZED", "No initialize to replay."));
    this.#reinit = (async () => {
      this.#getAbort?.abort();
      this.#getLastEventId = undefined;
      const started = Date.now();
      for (let attempt = 0; ; attempt++) {
        const replay: RpcRequest = { ...init, id: `mcp-edge-connect:reinit:${++this.#internalSeq}` };
        try {
          await this.#handshake(replay);
          break;
        } catch (err) {
          if (this.#closed.signal.aborted || Date.now() - started > this.#o.retry.giveUpAfter) throw err;
          this.#o.hooks.log.debug(`re-initialize failed (${(err as Error).message}); retrying`);
          await delay(backoff(this.#o.retry, attempt), this.#closed.signal);
        }
      }
      this.#generation++;
      this.reinitializations++;
      this.#o.hooks.log.info(
        "the server had lost the session: re-initialized it with the client's initialize",
      );
      if (this.#initialized) {
        const res = await this.#post(this.#initialized).catch(() => undefined);
        if (res) await discard(res);
        this.#startGetStream(true);
      }
    })().finally(() => {
      this.#reinit = undefined;
    });
    return this.#reinit;
  }

  /** The standalone GET stream (server-initiated messages), kept open with reconnects. */
  #startGetStream(restart = false): void {
    if (this.#getUnsupported || this.#closed.signal.aborted) return;
    if (this.#getLoop && !restart) return;
    this.#getAbort?.abort();
    const abort = new AbortController();
    this.#getAbort = abort;
    this.#expectGetStream();
    const loop = this.#runGetStream(abort.signal).catch((err: unknown) => {
      this.#o.hooks.log.debug(`GET stream stopped: ${(err as Error).message}`);
    });
    this.#getLoop = loop;
  }

  async #runGetStream(signal: AbortSignal): Promise<void> {
    let attempt = 0;
    while (!signal.aborted && !this.#closed.signal.aborted) {
      const gen = this.#generation;
      let res: HttpResponse;
      try {
        res = await this.#get(this.#getLastEventId, signal);
      } catch (err) {
        this.#markGetOpened();
        if (signal.aborted) return;
        this.#o.hooks.log.debug(`GET stream: ${(err as Error).message}; reconnecting`);
        await delay(backoff(this.#o.retry, attempt++), signal);
        continue;
      }
      this.#markGetOpened();
      if (res.status === 405) {
        await discard(res);
        this.#getUnsupported = true; // the server offers no standalone stream (allowed by the spec)
        return;
      }
      if (this.#isSessionLost(res, await peek(res))) {
        await discard(res);
        await this.#reinitialize(gen).catch(() => undefined);
        return; // the re-initialize starts a new loop
      }
      if (res.status !== 200) {
        await discard(res);
        await delay(backoff(this.#o.retry, attempt++), signal);
        continue;
      }
      attempt = 0;
      const state = await this.#consume(res);
      if (state.lastEventId !== undefined) this.#getLastEventId = state.lastEventId;
      if (signal.aborted) return;
      await delay(state.retry ?? backoff(this.#o.retry, attempt++), signal);
    }
  }

  async #headers(): Promise<Record<string, string>> {
    const h: Record<string, string> = { ...this.#o.headers, ...(await this.#o.auth.headers()) };
    if (this.#sessionId !== undefined) h["mcp-session-id"] = this.#sessionId;
    if (this.#protocolVersion !== undefined) h["mcp-protocol-version"] = this.#protocolVersion;
    return h;
  }

  /**
   * POST with auth handling (401 → refresh or login, then one retry; 403 insufficient_scope →
   * step-up) and retries while the server cannot be reached (nothing was sent).
   */
  async #post(msg: RpcMessage, handshake = false): Promise<HttpResponse> {
    const started = Date.now();
    let attempt = 0;
    let authRetries = 0;
    for (;;) {
      const headers = await this.#headers();
      if (handshake) {
        delete headers["mcp-session-id"];
        delete headers["mcp-protocol-version"];
      }
      let res: HttpResponse;
      try {
        res = await send(this.#o.url.href, {
          method: "POST",
          headers: {
            ...headers,
            "content-type": "application/json",
            accept: "application/json, text/event-stream",
          },
          body: JSON.stringify(msg),
          signal: this.#closed.signal,
        });
      } catch (err) {
        if (
          isConnectFailure(err) &&
          !this.#closed.signal.aborted &&
          Date.now() - started < this.#o.retry.giveUpAfter
        ) {
          this.#o.hooks.log.debug(`server unreachable (${(err as Error).message}); retrying`);
          await delay(backoff(this.#o.retry, attempt++), this.#closed.signal);
          continue;
        }
        throw err;
      }
      if (res.status === 401 && authRetries < 3) {
        await discard(res);
        authRetries++;
        if (await this.#o.auth.onUnauthorized(res, headers["authorization"])) continue;
        return res;
      }
      if (res.status === 403 && authRetries < 3 && (await this.#o.auth.onForbidden(res))) {
        await discard(res);
        authRetries++;
        continue;
      }
      if (res.status === 503 && Date.now() - started < this.#o.retry.giveUpAfter) {
        // 503 means the request was not taken (a gateway draining, a dependency down): safe to retry.
        await discard(res);
        await delay(retryAfterMs(res) ?? backoff(this.#o.retry, attempt++), this.#closed.signal);
        continue;
      }
      return res;
    }
  }

  async #get(lastEventId: string | undefined, signal?: AbortSignal): Promise<HttpResponse> {
    let authRetries = 0;
    for (;;) {
      const headers = await this.#headers();
      const res = await send(this.#o.url.href, {
        method: "GET",
        headers: {
          ...headers,
          accept: "text/event-stream",
          ...(lastEventId !== undefined ? { "last-event-id": lastEventId } : {}),
        },
        signal: signal ? AbortSignal.any([signal, this.#closed.signal]) : this.#closed.signal,
      });
      if (res.status === 401 && authRetries < 3) {
        await discard(res);
        authRetries++;
        if (await this.#o.auth.onUnauthorized(res, headers["authorization"])) continue;
      }
      return res;
    }
  }

  /** Ends the session: stop the GET stream and DELETE the session (the server MAY answer 405). */
  async close(): Promise<void> {
    this.#getAbort?.abort();
    const sid = this.#sessionId;
    if (sid !== undefined) {
      try {
        const headers = await Promise.race([
          this.#headers(),
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error("no token")), 1000)),
        ]);
        const res = await send(this.#o.url.href, {
          method: "DELETE",
          headers,
          signal: AbortSignal.timeout(2000),
        });
        await discard(res);
      } catch {
        // best effort: the server expires idle sessions anyway
      }
    }
    this.#closed.abort();
  }
}

/** The body as text when it is JSON (or any non-SSE body); undefined for an SSE stream (left unread). */
async function peek(res: HttpResponse): Promise<string | undefined> {
  const type = header(res, "content-type") ?? "";
  if (/^text\/event-stream/i.test(type)) return undefined;
  if ((res as { _text?: string })._text !== undefined) return (res as { _text?: string })._text;
  const text = await readText(res, 64 * 1024 * 1024).catch(() => "");
  (res as { _text?: string })._text = text;
  return text;
}

/** `Retry-After` in seconds, as milliseconds (at most 30 s). */
export function retryAfterMs(res: HttpResponse): number | undefined {
  const v = header(res, "retry-after");
  if (v === undefined || !/^\d+$/.test(v)) return undefined;
  return Math.min(Number(v) * 1000, 30_000);
}

export function unreachable(url: URL, err: unknown): AnswerError {
  return bridgeError(
    "EDGE_CONNECT_UNREACHABLE",
    `The server ${url.origin} could not be reached (${(err as Error).message}); the bridge kept trying and gave up on this request.`,
  );
}

function describe(msg: RpcMessage): string {
  return "method" in msg ? msg.method : `the response to ${JSON.stringify(msg.id)}`;
}
