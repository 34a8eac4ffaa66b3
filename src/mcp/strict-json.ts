/**
 * The strict JSON reader of client bodies: one pass that parses the text and refuses, on the way,
 * everything two JSON readers could read differently or that costs the edge or the upstream more
 * than the configured bounds. The edge judges a message and then forwards its bytes unchanged, so
 * the upstream's parser must see the same message: a body that could be read two ways is refused,
 * never repaired.
 *
 * - Duplicate member names (RFC 8259 §4: "names within an object SHOULD be unique"; with duplicates
 *   "the behavior of software that receives such an object is unpredictable": first-match and
 *   last-match parsers disagree) → EDGE_JSON_DUPLICATE_MEMBER, at any depth (I-JSON, RFC 7493 §2.3).
 * - `"__proto__"` members, and `"constructor"` members whose value holds `"prototype"`: a reader
 *   that assigns members with `[[Set]]` (`Object.assign`, naive merges) turns them into a prototype
 *   and sees members the edge did not → EDGE_JSON_FORBIDDEN_MEMBER (the default of fastify's
 *   secure-json-parse).
 * - Lone surrogates, escaped (`"\ud800"`) or raw in a string passed in → EDGE_INVALID_UNICODE
 *   (RFC 7493 §2.1: I-JSON text MUST NOT hold them; RFC 8259 §8.2: their reading is unpredictable).
 *   Invalid UTF-8 bytes are refused before this, by the strict decoder (`decodeBody`).
 * - Bounds (`JsonLimits`): nesting depth, members per object, elements per array, string length,
 *   number length, and numbers a double cannot hold (`1e400`) → EDGE_JSON_LIMIT with `data.limit`
 *   and `data.max`.
 *
 * Everything else is RFC 8259 exactly (no comments, trailing commas, leading zeros, NaN, BOM):
 * invalid JSON → EDGE_PARSE_ERROR, as JSON.parse would refuse it. Objects are ordinary objects with
 * own data properties, as JSON.parse makes them; `"__proto__"` never reaches them. The structure
 * is walked here, every check on the way; a string with escapes is decoded by JSON.parse on its own
 * slice (native, the same RFC 8259 §7 unescaping). `node bench/json-scan.ts` compares the whole
 * with JSON.parse. Pure: no I/O.
 */
import { GatewayError } from "../errors/errors.ts";

/** Bounds of a client body's JSON (config `limits.json`). */
export interface JsonLimits {
  /** Objects and arrays nested in one another, the outermost counting 1. */
  readonly maxDepth: number;
  /** Members of one object. */
  readonly maxMembers: number;
  /** Elements of one array. */
  readonly maxElements: number;
  /** UTF-16 code units of one string (member names included), after unescaping. */
  readonly maxStringLength: number;
  /** Characters of one number as written. */
  readonly maxNumberLength: number;
}

export const DEFAULT_JSON_LIMITS: JsonLimits = {
  maxDepth: 64,
  maxMembers: 1000,
  maxElements: 10_000,
  maxStringLength: 1_048_576,
  maxNumberLength: 40,
};

type LimitName = "depth" | "members" | "elements" | "stringLength" | "numberLength" | "numberRange";

/** Strings up to this long are read char by char (cheaper than a native search for short ones). */
const SHORT = 24;
const CONTROL = /[\u0000-\u001f]/;

/** Parses `text` as one JSON value under `limits`; throws the coded errors listed above. */
export function parseStrictJson(text: string, limits: JsonLimits = DEFAULT_JSON_LIMITS): unknown {
  // Raw lone surrogates anywhere (only strings may hold them: elsewhere they are a syntax error
  // either way). A text decoded from UTF-8 by `decodeBody` holds none; a string passed in may.
  if (!text.isWellFormed()) throw unicode(firstLoneSurrogate(text));
  const s = new Scanner(text, limits);
  s.ws();
  const v = s.value(0);
  s.ws();
  if (s.pos !== text.length) throw s.syntax("unexpected data after the JSON value");
  return v;
}

class Scanner {
  readonly t: string;
  readonly n: number;
  readonly l: JsonLimits;
  pos = 0;
  /** The next backslash at or after the last search (`n` when there is none). */
  bs = -1;

  constructor(text: string, limits: JsonLimits) {
    this.t = text;
    this.n = text.length;
    this.l = limits;
  }

  ws(): void {
    const t = this.t;
    let p = this.pos;
    for (;;) {
      const c = t.charCodeAt(p);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) p++;
      else break;
    }
    this.pos = p;
  }

  value(depth: number): unknown {
    const c = this.t.charCodeAt(this.pos);
    if (c === 0x22) return this.string();
    if (c === 0x7b) return this.object(depth + 1);
    if (c === 0x5b) return this.array(depth + 1);
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    if (c === 0x74 && this.t.startsWith("true", this.pos)) {
      this.pos += 4;
      return true;
    }
    if (c === 0x66 && this.t.startsWith("false", this.pos)) {
      this.pos += 5;
      return false;
    }
    if (c === 0x6e && this.t.startsWith("null", this.pos)) {
      this.pos += 4;
      return null;
    }
    throw this.syntax(this.pos >= this.n ? "unexpected end of the body" : "unexpected character");
  }

  /**
   * Enters a container at `pos` (its opening bracket) at `depth`: true when it is empty (then
   * already closed by `close`).
   */
  open(depth: number, close: number): boolean {
    if (depth > this.l.maxDepth) throw this.limit("depth", this.l.maxDepth);
    this.pos++;
    this.ws();
    if (this.t.charCodeAt(this.pos) !== close) return false;
    this.pos++;
    return true;
  }

  /** After a member or element: true on a comma (another follows), false on `close` (the end). */
  more(close: number): boolean {
    this.ws();
    const c = this.t.charCodeAt(this.pos);
    this.pos++;
    if (c === 0x2c) {
      this.ws();
      return true;
    }
    if (c === close) return false;
    this.pos--;
    throw this.syntax(close === 0x7d ? 'expected "," or "}"' : 'expected "," or "]"');
  }

  object(depth: number): Record<string, unknown> {
    const o: Record<string, unknown> = {};
    if (this.open(depth, 0x7d)) return o;
    let members = 0;
    for (;;) {
      if (this.t.charCodeAt(this.pos) !== 0x22) throw this.syntax("expected a member name");
      const at = this.pos;
      const key = this.string();
      this.ws();
      if (this.t.charCodeAt(this.pos) !== 0x3a) throw this.syntax('expected ":"');
      this.pos++;
      this.ws();
      const v = this.value(depth);
      if (++members > this.l.maxMembers) throw this.limit("members", this.l.maxMembers);
      if (Object.hasOwn(o, key)) {
        throw new GatewayError(
          "EDGE_JSON_DUPLICATE_MEMBER",
          `The body repeats the member name ${quote(key)} in one object (offset ${at}).`,
        );
      }
      if (key === "__proto__" || (key === "constructor" && hasPrototype(v))) {
        throw new GatewayError(
          "EDGE_JSON_FORBIDDEN_MEMBER",
          `The body holds a member named ${quote(key === "__proto__" ? key : "constructor.prototype")} (offset ${at}).`,
        );
      }
      o[key] = v;
      if (!this.more(0x7d)) return o;
    }
  }

  array(depth: number): unknown[] {
    const a: unknown[] = [];
    if (this.open(depth, 0x5d)) return a;
    const max = this.l.maxElements;
    for (;;) {
      if (a.length >= max) throw this.limit("elements", max);
      a.push(this.value(depth));
      if (!this.more(0x5d)) return a;
    }
  }

  /**
   * A string at `pos` (on its opening quote). Short ones are read char by char; longer ones run by
   * run between escapes, each run found and checked natively (`indexOf`, a regex test for control
   * characters). Raw surrogates were checked for the whole text at once.
   */
  string(): string {
    const t = this.t;
    const start = this.pos + 1;
    let p = start;
    const stop = Math.min(start + SHORT, this.n);
    for (; p < stop; p++) {
      const c = t.charCodeAt(p);
      if (c === 0x22) {
        this.pos = p + 1;
        // A short string is within every maxStringLength the schema allows.
        return t.slice(start, p);
      }
      if (c === 0x5c || c < 0x20) break;
    }
    return this.longString(start, p);
  }

  /**
   * The rest of a string that began at `start` ([start, p) holds only plain characters): its end
   * found natively (the next quote not escaped), its text decoded natively by JSON.parse when it
   * holds escapes (RFC 8259 §7 exactly), then checked: control characters refused by that grammar,
   * escaped lone surrogates (`"\\ud800"`, which JSON.parse accepts) refused here.
   */
  longString(start: number, p: number): string {
    const t = this.t;
    let q = t.indexOf('"', p);
    for (;;) {
      if (q < 0) throw this.syntax("unterminated string", this.n);
      let k = q - 1;
      while (t.charCodeAt(k) === 0x5c) k--;
      if ((q - 1 - k) % 2 === 0) break; // an even run of backslashes: the quote ends the string
      q = t.indexOf('"', q + 1);
    }
    const max = this.l.maxStringLength;
    if (this.bs < p) {
      const b = t.indexOf("\\", p);
      this.bs = b < 0 ? this.n : b;
    }
    let s: string;
    if (this.bs > q) {
      s = t.slice(start, q);
      if (CONTROL.test(s)) throw this.syntax("control character in a string", start);
    } else {
      let v: unknown;
      try {
        v = JSON.parse(t.slice(start - 1, q + 1));
      } catch {
        throw this.syntax("invalid string", start);
      }
      s = v as string;
      if (!s.isWellFormed()) throw unicode(start);
    }
    if (s.length > max) throw this.limit("stringLength", max);
    this.pos = q + 1;
    return s;
  }

  /** A number at `pos`, by the RFC 8259 §6 grammar. */
  number(): number {
    const t = this.t;
    const start = this.pos;
    let p = start;
    if (t.charCodeAt(p) === 0x2d) p++;
    let c = t.charCodeAt(p);
    if (c === 0x30) p++;
    else if (c >= 0x31 && c <= 0x39) p = digits(t, p);
    else throw this.syntax("invalid number", p);
    c = t.charCodeAt(p);
    if (c === 0x2e) {
      const q = digits(t, p + 1);
      if (q === p + 1) throw this.syntax("invalid number", p);
      p = q;
      c = t.charCodeAt(p);
    }
    if (c === 0x65 || c === 0x45) {
      p++;
      c = t.charCodeAt(p);
      if (c === 0x2b || c === 0x2d) p++;
      const q = digits(t, p);
      if (q === p) throw this.syntax("invalid number", p);
      p = q;
    }
    if (p - start > this.l.maxNumberLength) throw this.limit("numberLength", this.l.maxNumberLength);
    this.pos = p;
    const v = Number(t.slice(start, p));
    // 1e400: JSON.parse reads Infinity, other readers refuse it or keep it exact.
    if (!Number.isFinite(v)) throw this.limit("numberRange", Number.MAX_VALUE);
    return v;
  }

  syntax(what: string, at = this.pos): GatewayError {
    return new GatewayError("EDGE_PARSE_ERROR", `Invalid JSON: ${what} at offset ${at}.`);
  }

  limit(limit: LimitName, max: number): GatewayError {
    return new GatewayError(
      "EDGE_JSON_LIMIT",
      `The body is over the JSON limit ${limit} (${max}) at offset ${this.pos}.`,
      { data: { limit, max } },
    );
  }
}

function digits(t: string, p: number): number {
  for (;;) {
    const c = t.charCodeAt(p);
    if (c >= 0x30 && c <= 0x39) p++;
    else return p;
  }
}

function firstLoneSurrogate(t: string): number {
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    if (c <= 0xdbff && isLow(t.charCodeAt(i + 1))) i++;
    else return i;
  }
  return -1;
}

function isLow(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

function hasPrototype(v: unknown): boolean {
  return v !== null && typeof v === "object" && !Array.isArray(v) && Object.hasOwn(v, "prototype");
}

function unicode(at: number): GatewayError {
  return new GatewayError(
    "EDGE_INVALID_UNICODE",
    `The body holds a lone surrogate (invalid Unicode) at offset ${at}.`,
  );
}

/** A member name for a message: quoted, cut to 64 characters. */
function quote(key: string): string {
  return JSON.stringify(key.length > 64 ? `${key.slice(0, 64)}…` : key);
}
