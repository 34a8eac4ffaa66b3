/**
 * Server-Sent Events: an incremental parser and serializers.
 *
 * Parsing follows the WHATWG HTML "event stream interpretation" rules
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation),
 * with one deliberate difference for a proxy: a block is dispatched whenever it carried at least one
 * effective field (`data`, `event`, a valid `id` or a valid `retry`), even with an empty data buffer.
 * Browsers drop such blocks, but MCP 2025-11-25 "priming events" (an `id` and no data) must reach the
 * client, so `hasData` tells the caller whether any `data` line was seen.
 *
 * The parser works on bytes: line terminators (CR, LF, CRLF) are ASCII and never occur inside a
 * multi-byte UTF-8 sequence, so lines are cut on bytes and only field values are decoded (invalid
 * UTF-8 becomes U+FFFD, as the spec's decoder does). Pure: no I/O.
 */

export interface SseEvent {
  /** The `id` field of this block, when it had a valid one (the spec's last-event-ID persists: see `SseParser.lastEventId`). */
  id?: string;
  /** The `event` field of this block, when it had a non-empty one (the spec's default type is "message"). */
  event?: string;
  /** The data buffer: `data` lines joined with "\n". Empty when `hasData` is false. */
  data: string;
  /** The `retry` field, when it was all ASCII digits. */
  retry?: number;
  /** True when the block had at least one `data` line (possibly empty). */
  hasData: boolean;
}

export interface SseParserOptions {
  /** Cap on the bytes one event may buffer (its retained field lines plus an unterminated line). Default 16 MiB. */
  maxEventBytes?: number;
}

/** Thrown by `SseParser.push` when one event grows past `maxEventBytes`. The parser is unusable afterwards. */
export class SseTooLargeError extends Error {
  readonly limit: number;
  constructor(limit: number) {
    super(`SSE event exceeds ${limit} bytes`);
    this.name = "SseTooLargeError";
    this.limit = limit;
  }
}

export const DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024;

const LF = 0x0a;
const CR = 0x0d;
const COLON = 0x3a;
const SPACE = 0x20;

const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const EMPTY_BYTES = new Uint8Array(0);

/**
 * Incremental event-stream parser. Feed it the body chunks with `push`; each call returns the events
 * completed by that chunk. Chunks may split the stream anywhere (inside a UTF-8 character, between CR
 * and LF). Chunks are not retained: an unterminated tail is copied.
 */
export class SseParser {
  readonly maxEventBytes: number;

  #lastEventId = "";
  /** Unterminated line bytes carried over from previous chunks. */
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** The previous chunk ended in CR: an LF at the start of the next one belongs to it. */
  #skipLf = false;
  /** Up to 3 leading bytes held back while deciding whether the stream starts with a BOM. */
  #head: Uint8Array | null = EMPTY_BYTES;
  #failed = false;

  // The block being built.
  #data = "";
  #hasData = false;
  #event = "";
  #id: string | undefined = undefined;
  #retry: number | undefined = undefined;
  #hasField = false;
  #eventBytes = 0;

  #out: SseEvent[] | null = null;

  constructor(options: SseParserOptions = {}) {
    const max = options.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES;
    if (!Number.isSafeInteger(max) || max <= 0)
      throw new RangeError("maxEventBytes must be a positive integer");
    this.maxEventBytes = max;
  }

  /** The spec's "last event ID buffer": the most recent valid `id` field, persisting across events. */
  get lastEventId(): string {
    return this.#lastEventId;
  }

  push(chunk: Uint8Array): SseEvent[] {
    if (this.#failed) throw new SseTooLargeError(this.maxEventBytes);
    const out: SseEvent[] = [];
    if (chunk.length === 0) return out;
    let bytes = chunk;
    if (this.#head !== null) {
      const stripped = this.#stripBom(chunk);
      if (stripped === null) return out;
      bytes = stripped;
    }
    this.#out = out;
    try {
      this.#scan(bytes);
    } catch (err) {
      this.#fail();
      throw err;
    } finally {
      this.#out = null;
    }
    return out;
  }

  /**
   * End of stream. Per the spec an incomplete event (no terminating blank line) is discarded, so this
   * always returns an empty list; it resets the parser (keeping `lastEventId`).
   */
  end(): SseEvent[] {
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#skipLf = false;
    this.#resetBlock();
    return [];
  }

  #fail(): void {
    this.#failed = true;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#resetBlock();
  }

  /** Returns the bytes to scan, or null while the first 3 bytes are still undecided. */
  #stripBom(chunk: Uint8Array): Uint8Array | null {
    const head = this.#head!;
    const total = head.length + chunk.length;
    const bytes = head.length === 0 ? chunk : concat([head, chunk], total);
    // Compare the bytes we have against EF BB BF.
    const n = Math.min(3, bytes.length);
    let matched = 0;
    while (matched < n && bytes[matched] === BOM[matched]) matched++;
    if (matched < n) {
      this.#head = null; // not a BOM
      return bytes;
    }
    if (n < 3) {
      this.#head = bytes.slice(); // still a BOM prefix: wait for more
      return null;
    }
    this.#head = null;
    return bytes.subarray(3);
  }

  #scan(bytes: Uint8Array): void {
    const len = bytes.length;
    let pos = 0;
    if (this.#skipLf) {
      this.#skipLf = false;
      if (bytes[0] === LF) pos = 1;
    }
    let nextLf = -2;
    let nextCr = -2;
    while (pos < len) {
      if (nextLf !== -1 && nextLf < pos) nextLf = bytes.indexOf(LF, pos);
      if (nextCr !== -1 && nextCr < pos) nextCr = bytes.indexOf(CR, pos);
      let eol: number;
      if (nextLf === -1) eol = nextCr;
      else if (nextCr === -1) eol = nextLf;
      else eol = Math.min(nextLf, nextCr);
      if (eol === -1) {
        this.#keep(bytes, pos, len);
        return;
      }
      if (this.#pendingBytes > 0) {
        this.#pending.push(bytes.subarray(pos, eol));
        const line = concat(this.#pending, this.#pendingBytes + (eol - pos));
        this.#pending = [];
        this.#pendingBytes = 0;
        this.#line(line, 0, line.length);
      } else {
        this.#line(bytes, pos, eol);
      }
      pos = eol + 1;
      if (bytes[eol] === CR) {
        if (pos < len) {
          if (bytes[pos] === LF) pos++;
        } else {
          this.#skipLf = true;
        }
      }
    }
  }

  /** Keeps an unterminated tail (copied: the caller may reuse its buffer). */
  #keep(bytes: Uint8Array, from: number, to: number): void {
    const n = to - from;
    if (n === 0) return;
    this.#pendingBytes += n;
    if (this.#pendingBytes + this.#eventBytes > this.maxEventBytes)
      throw new SseTooLargeError(this.maxEventBytes);
    this.#pending.push(bytes.slice(from, to));
  }

  #line(b: Uint8Array, start: number, end: number): void {
    if (start === end) {
      this.#dispatch();
      return;
    }
    const first = b[start];
    if (first === COLON) return; // comment
    // Only the four known field names matter; anything else is ignored (unknown field).
    // The name ends at the first colon, or is the whole line.
    let field: number; // 1 data, 2 event, 3 id, 4 retry
    let nameLen: number;
    if (first === 0x64 /* d */ && matches(b, start, end, DATA)) {
      field = 1;
      nameLen = 4;
    } else if (first === 0x65 /* e */ && matches(b, start, end, EVENT)) {
      field = 2;
      nameLen = 5;
    } else if (first === 0x69 /* i */ && matches(b, start, end, ID)) {
      field = 3;
      nameLen = 2;
    } else if (first === 0x72 /* r */ && matches(b, start, end, RETRY)) {
      field = 4;
      nameLen = 5;
    } else {
      return;
    }
    let vs = start + nameLen;
    if (vs < end) {
      vs++; // the colon
      if (vs < end && b[vs] === SPACE) vs++;
    }
    switch (field) {
      case 1: {
        this.#count(end - start);
        const value = vs === end ? "" : decoder.decode(b.subarray(vs, end));
        if (this.#hasData) this.#data = `${this.#data}\n${value}`;
        else {
          this.#data = value;
          this.#hasData = true;
        }
        this.#hasField = true;
        return;
      }
      case 2:
        this.#count(end - start);
        this.#event = vs === end ? "" : decoder.decode(b.subarray(vs, end));
        this.#hasField = true;
        return;
      case 3: {
        for (let i = vs; i < end; i++) if (b[i] === 0) return; // an id with NUL is ignored
        this.#count(end - start);
        const id = vs === end ? "" : decoder.decode(b.subarray(vs, end));
        this.#id = id;
        this.#lastEventId = id;
        this.#hasField = true;
        return;
      }
      default: {
        if (vs === end) return;
        let n = 0;
        for (let i = vs; i < end; i++) {
          const c = b[i]!;
          if (c < 0x30 || c > 0x39) return; // not all digits: ignored
          n = n * 10 + (c - 0x30);
        }
        if (!Number.isSafeInteger(n)) return;
        this.#retry = n;
        this.#hasField = true;
      }
    }
  }

  #count(n: number): void {
    this.#eventBytes += n;
    if (this.#eventBytes + this.#pendingBytes > this.maxEventBytes)
      throw new SseTooLargeError(this.maxEventBytes);
  }

  #dispatch(): void {
    if (this.#hasField) {
      const ev: SseEvent = { data: this.#data, hasData: this.#hasData };
      if (this.#id !== undefined) ev.id = this.#id;
      if (this.#event !== "") ev.event = this.#event;
      if (this.#retry !== undefined) ev.retry = this.#retry;
      this.#out!.push(ev);
    }
    this.#resetBlock();
  }

  #resetBlock(): void {
    this.#data = "";
    this.#hasData = false;
    this.#event = "";
    this.#id = undefined;
    this.#retry = undefined;
    this.#hasField = false;
    this.#eventBytes = 0;
  }
}

const BOM = [0xef, 0xbb, 0xbf];
const DATA = [0x64, 0x61, 0x74, 0x61];
const EVENT = [0x65, 0x76, 0x65, 0x6e, 0x74];
const ID = [0x69, 0x64];
const RETRY = [0x72, 0x65, 0x74, 0x72, 0x79];

/** True when the line's field name is exactly `name` (followed by a colon or the end of the line). */
function matches(b: Uint8Array, start: number, end: number, name: readonly number[]): boolean {
  const n = name.length;
  if (end - start < n) return false;
  for (let i = 1; i < n; i++) if (b[start + i] !== name[i]) return false;
  return start + n === end || b[start + n] === COLON;
}

function concat(parts: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Serialization

export interface SseEventInit {
  id?: string;
  event?: string;
  data?: string;
  retry?: number;
}

const CR_LF_NUL = /[\r\n\0]/;
const CR_LF = /[\r\n]/;
const NEWLINES = /\r\n|\r|\n/;

/**
 * Serializes one event: `event`, `id`, `retry`, then one `data:` line per line of `data` (CRLF and CR
 * normalized to LF), then the blank line that dispatches it. `data: undefined` writes no data line
 * (an id-only priming event); `data: ""` writes one empty data line. Throws a TypeError when `id`
 * contains CR, LF or NUL, `event` contains CR or LF, `retry` is not a non-negative integer, or the
 * event has no field at all.
 */
export function formatEvent(ev: SseEventInit): string {
  let s = "";
  if (ev.event !== undefined) {
    if (CR_LF.test(ev.event)) throw new TypeError("SSE event type must not contain CR or LF");
    s = `event: ${ev.event}\n`;
  }
  if (ev.id !== undefined) {
    if (CR_LF_NUL.test(ev.id)) throw new TypeError("SSE id must not contain CR, LF or NUL");
    s += `id: ${ev.id}\n`;
  }
  if (ev.retry !== undefined) {
    if (!Number.isSafeInteger(ev.retry) || ev.retry < 0)
      throw new TypeError("SSE retry must be a non-negative integer");
    s += `retry: ${ev.retry}\n`;
  }
  const data = ev.data;
  if (data !== undefined) {
    if (!CR_LF.test(data)) s += `data: ${data}\n`;
    else for (const line of data.split(NEWLINES)) s += `data: ${line}\n`;
  } else if (s === "") {
    throw new TypeError("SSE event has no field");
  }
  return `${s}\n`;
}

/** A comment block (`: text`), e.g. a keep-alive; multi-line text becomes one comment line per line. */
export function formatComment(text = ""): string {
  if (text === "") return ":\n\n";
  if (!CR_LF.test(text)) return `: ${text}\n\n`;
  let s = "";
  for (const line of text.split(NEWLINES)) s += line === "" ? ":\n" : `: ${line}\n`;
  return `${s}\n`;
}
