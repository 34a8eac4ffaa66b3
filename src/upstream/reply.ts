import { Readable } from "node:stream";
import type { EgressResponse } from "../egress/index.ts";
import { GatewayError } from "../errors/errors.ts";
import { collectStream } from "../mcp/hygiene.ts";
import { parseMessage } from "../mcp/jsonrpc.ts";
import { type SseEvent, SseParser, SseTooLargeError } from "../mcp/sse.ts";
import { frameMessage } from "./framing.ts";
import type { UpstreamEvent, UpstreamReply } from "./types.ts";

/** Upstream error bodies (4xx/5xx, passthrough) are read up to this many bytes. */
export const MAX_UPSTREAM_BODY = 16 * 1024 * 1024;

/** `limits.maxResultBytes` by default: the largest JSON answer, SSE event or stdio line relayed. */
export const DEFAULT_MAX_RESULT_BYTES = 64 * 1024 * 1024;

/** An upstream answer over `limits.maxResultBytes` (the call's error, never a silent loss). */
export function resultTooLarge(limit: number, cause?: unknown): GatewayError {
  return new GatewayError(
    "EDGE_RESULT_TOO_LARGE",
    `The upstream's answer is over the ${limit}-byte maximum (limits.maxResultBytes).`,
    { data: { limit }, ...(cause !== undefined ? { cause } : {}) },
  );
}

export function header(res: EgressResponse, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Reads a whole body, failing past `max` bytes (an upstream is untrusted: OWASP API10:2023). */
export async function readBody(
  body: AsyncIterable<Buffer> & { destroy(): void },
  max: number,
  tooLarge: () => GatewayError = badSize,
): Promise<Buffer> {
  if (body instanceof Readable) return readStream(body, max, tooLarge);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > max) {
      body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function badSize(): GatewayError {
  return new GatewayError("EDGE_UPSTREAM_BAD_RESPONSE", "The upstream answer is over the size limit.");
}

/**
 * `readBody` of a Node stream, with listeners: what `for await` does (the stream's error, or
 * "Premature close" when it closes before its end) without an async iterator and a promise per
 * chunk on every upstream answer.
 */
function readStream(body: Readable, max: number, tooLarge: () => GatewayError): Promise<Buffer> {
  if (body.errored) return Promise.reject(body.errored);
  if (body.readableEnded) return Promise.resolve(Buffer.alloc(0));
  if (body.destroyed) return Promise.reject(prematureClose());
  return collectStream(body, max, {
    tooLarge: () => {
      body.destroy();
      return tooLarge();
    },
    // What `for await` rejects with: the stream's error, or "Premature close" before its end.
    failed: (err) => err ?? body.errored ?? prematureClose(),
  });
}

function prematureClose(): Error {
  return Object.assign(new Error("Premature close"), { code: "ERR_STREAM_PREMATURE_CLOSE" });
}

/**
 * The events of an upstream SSE body, parsed lazily as they arrive, read with listeners instead of
 * async generators: a stream held open for hours keeps a parser, a few listeners and at most one
 * pending promise, where `for await` over the body kept two suspended async generators with their
 * iterator, requests and promises.
 *
 * A consumer that stops early (the answer it waited for has come) does not destroy the body here:
 * it calls the reply's `close` (`closeBody`), which drains a body the upstream has already ended.
 * Destroying it instead built an AbortError with its stack trace on every SSE call (~2.5% of the
 * edge's CPU in the benchmark profile).
 */
class SseBody implements AsyncIterable<UpstreamEvent> {
  readonly #body: Readable & AsyncIterable<Buffer>;
  readonly #max: number;

  constructor(body: Readable & AsyncIterable<Buffer>, max: number) {
    this.#body = body;
    this.#max = max;
  }

  [Symbol.asyncIterator](): AsyncIterator<UpstreamEvent> {
    return new SseBodyIterator(this.#body, this.#max);
  }
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

/**
 * Reads an SSE body as it flows. Events parsed while nobody waits are queued and the body paused
 * until they are taken (the backpressure of `for await`). Ends as `for await` over the body does,
 * once the body has closed: done after its end; rejected with its error, or with "Premature close"
 * when it closed before the end, or with EDGE_RESULT_TOO_LARGE (the body destroyed) for an event
 * over `limits.maxResultBytes`. `return` (early exit)
 * leaves the body paused, not destroyed: the reply's `close` drains or destroys it.
 */
class SseBodyIterator implements AsyncIterator<UpstreamEvent> {
  readonly #body: Readable;
  readonly #parser: SseParser;
  #queue: UpstreamEvent[] | undefined;
  #waiting: PromiseWithResolvers<IteratorResult<UpstreamEvent>> | undefined;
  /** Set once the body has ended (`null`) or failed (the error), and no more events will come. */
  #end: unknown = undefined;
  #over = false;
  readonly #onData = (chunk: Buffer): void => this.#data(chunk);
  /** 'close' follows 'end' and 'error' alike: how the body closed tells which. */
  readonly #onClose = (): void => {
    const body = this.#body;
    this.#finish(body.readableEnded ? null : (body.errored ?? prematureClose()));
  };

  constructor(body: Readable, max: number) {
    this.#body = body;
    // The event's field lines carry its data plus a few bytes of `data: ` and line ends per line.
    this.#parser = new SseParser({ maxEventBytes: max + SSE_FIELD_SLACK });
    body.on("data", this.#onData);
    body.on("close", this.#onClose);
    // Errors are read from `errored` at 'close'; the listener keeps an error from being unhandled.
    body.on("error", ignore);
  }

  next(): Promise<IteratorResult<UpstreamEvent>> {
    const queue = this.#queue;
    if (queue !== undefined && queue.length > 0) {
      const value = queue.shift() as UpstreamEvent;
      if (queue.length === 0 && !this.#over) this.#body.resume();
      return Promise.resolve({ done: false, value });
    }
    if (this.#over) {
      const err = this.#end;
      if (err === null) return Promise.resolve(DONE);
      this.#end = null; // rejected once; done afterwards
      return Promise.reject(err);
    }
    this.#waiting = Promise.withResolvers();
    return this.#waiting.promise;
  }

  return(): Promise<IteratorResult<UpstreamEvent>> {
    if (!this.#over) {
      this.#over = true;
      this.#end = null;
      this.#detach();
      this.#body.pause();
    }
    this.#queue = undefined;
    return Promise.resolve(DONE);
  }

  #data(chunk: Buffer): void {
    let events;
    try {
      events = this.#parser.push(chunk);
    } catch (err) {
      this.#body.destroy();
      this.#finish(err instanceof SseTooLargeError ? resultTooLarge(err.limit - SSE_FIELD_SLACK, err) : err);
      return;
    }
    for (const ev of events) {
      const out = toUpstreamEvent(ev);
      if (out === null) continue;
      const waiting = this.#waiting;
      if (waiting !== undefined) {
        this.#waiting = undefined;
        waiting.resolve({ done: false, value: out });
      } else {
        (this.#queue ??= []).push(out);
      }
    }
    if (this.#queue !== undefined && this.#queue.length > 0) this.#body.pause();
  }

  #finish(err: unknown): void {
    if (this.#over) return;
    this.#over = true;
    this.#end = err;
    this.#detach();
    const waiting = this.#waiting;
    if (waiting === undefined) return;
    this.#waiting = undefined;
    if (err === null) waiting.resolve(DONE);
    else {
      this.#end = null;
      waiting.reject(err);
    }
  }

  #detach(): void {
    // The error listener stays: a body destroyed with an error later must not throw unhandled.
    this.#body.off("data", this.#onData);
    this.#body.off("close", this.#onClose);
  }
}

function ignore(): void {}

/** Bytes of SSE framing allowed on top of the answer itself. */
const SSE_FIELD_SLACK = 64 * 1024;

/**
 * Ends the edge's use of an upstream body. One whose end has already arrived (the upstream sent
 * its last event and closed the stream; only the end is still unread) is drained, so the connection
 * goes back to the pool without an abort; any other (a stream still open upstream) is destroyed.
 */
export function closeBody(body: Readable): void {
  if (body.destroyed || body.readableEnded) return;
  const state = (body as unknown as { _readableState?: { ended?: boolean } })._readableState;
  if (state?.ended === true) body.resume();
  else body.destroy();
}

/** One parsed SSE event as an UpstreamEvent; null for event types other than `message`. */
function toUpstreamEvent(ev: SseEvent): UpstreamEvent | null {
  // Only `message` events (the default type) carry JSON-RPC in Streamable HTTP.
  if (ev.event !== undefined && ev.event !== "message") return null;
  let message = null;
  if (ev.hasData && ev.data.length > 0) {
    try {
      message = parseMessage(ev.data);
    } catch {
      message = null;
    }
  }
  // A parsed message is carried as the edge's serialization (framing.ts): the upstream's data
  // field may hold raw CR/LF that the edge would otherwise write into the client's event stream.
  const data = message ? frameMessage(message) : ev.hasData ? ev.data : "";
  const out: UpstreamEvent = { data, message };
  if (ev.retry !== undefined) out.retry = ev.retry;
  if (ev.id !== undefined) out.upstreamId = ev.id;
  return out;
}

/**
 * Turns an upstream HTTP answer into an UpstreamReply. 202 → accepted; JSON → one parsed message;
 * SSE → lazy events; anything else (errors included) → passthrough, byte for byte.
 */
export async function replyFromResponse(
  res: EgressResponse,
  maxResult = DEFAULT_MAX_RESULT_BYTES,
): Promise<UpstreamReply> {
  const type = header(res, "content-type")?.split(";")[0]?.trim().toLowerCase();
  if (res.status === 202) {
    res.body.resume();
    return { kind: "accepted" };
  }
  if (res.status === 200 && type === "text/event-stream") {
    const body = res.body;
    return { kind: "stream", events: new SseBody(body, maxResult), close: () => closeBody(body) };
  }
  const buf =
    res.status === 200 && type === "application/json"
      ? await readBody(res.body, maxResult, () => resultTooLarge(maxResult))
      : await readBody(res.body, MAX_UPSTREAM_BODY);
  if (res.status === 200 && type === "application/json") {
    try {
      const message = parseMessage(buf.toString("utf8"));
      return { kind: "json", message, data: frameMessage(message) };
    } catch (err) {
      throw new GatewayError("EDGE_UPSTREAM_BAD_RESPONSE", "The upstream answered with invalid JSON-RPC.", {
        cause: err,
      });
    }
  }
  return { kind: "passthrough", status: res.status, contentType: header(res, "content-type"), body: buf };
}
