import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatComment, formatEvent, type SseEvent, SseParser, SseTooLargeError } from "../../src/mcp/sse.ts";

const enc = new TextEncoder();

function bytesOf(input: string | number[]): Uint8Array {
  return typeof input === "string" ? enc.encode(input) : Uint8Array.from(input);
}

function parseChunks(chunks: Uint8Array[], options?: { maxEventBytes?: number }): SseEvent[] {
  const p = new SseParser(options);
  const out: SseEvent[] = [];
  for (const c of chunks) out.push(...p.push(c));
  out.push(...p.end());
  return out;
}

/** Every way of feeding `bytes`: whole, byte by byte, and split at each single point. */
function* splits(bytes: Uint8Array): Generator<[string, Uint8Array[]]> {
  yield ["whole", [bytes]];
  yield ["bytewise", Array.from(bytes, (b) => Uint8Array.of(b))];
  for (let i = 1; i < bytes.length; i++) yield [`split@${i}`, [bytes.subarray(0, i), bytes.subarray(i)]];
}

const ev = (data: string, extra: Partial<SseEvent> = {}): SseEvent => ({ data, hasData: true, ...extra });
const noData = (extra: Partial<SseEvent>): SseEvent => ({ data: "", hasData: false, ...extra });

interface Case {
  name: string;
  input: string | number[];
  expected: SseEvent[];
  /** Also run with "\n" replaced by "\r\n" and by "\r". */
  variants?: boolean;
}

const cases: Case[] = [
  { name: "single data line", input: "data: hello\n\n", expected: [ev("hello")], variants: true },
  { name: "no space after colon", input: "data:hello\n\n", expected: [ev("hello")], variants: true },
  {
    name: "only one leading space stripped",
    input: "data:  two\n\n",
    expected: [ev(" two")],
    variants: true,
  },
  { name: "trailing space kept", input: "data: x \n\n", expected: [ev("x ")] },
  {
    name: "multi-line data joined with LF",
    input: "data: a\ndata: b\n\n",
    expected: [ev("a\nb")],
    variants: true,
  },
  { name: "bare data field is an empty data line", input: "data\n\n", expected: [ev("")], variants: true },
  { name: "data with empty value", input: "data:\n\n", expected: [ev("")], variants: true },
  { name: "two empty data lines", input: "data\ndata\n\n", expected: [ev("\n")], variants: true },
  { name: "colon inside value", input: "data: a:b: c\n\n", expected: [ev("a:b: c")] },
  { name: "priming event: id only", input: "id: 1\n\n", expected: [noData({ id: "1" })], variants: true },
  { name: "id and empty data", input: "id: 1\ndata:\n\n", expected: [ev("", { id: "1" })], variants: true },
  { name: "empty id is dispatched", input: "id\n\n", expected: [noData({ id: "" })] },
  { name: "id with NUL is ignored", input: "id: a\u0000b\ndata: x\n\n", expected: [ev("x")] },
  { name: "id-with-NUL-only block not dispatched", input: "id: a\u0000b\n\n", expected: [] },
  {
    name: "event type",
    input: "event: foo\ndata: x\n\n",
    expected: [ev("x", { event: "foo" })],
    variants: true,
  },
  { name: "empty event type omitted", input: "event:\ndata: x\n\n", expected: [ev("x")] },
  {
    name: "last event field wins",
    input: "event: a\nevent: b\ndata: x\n\n",
    expected: [ev("x", { event: "b" })],
  },
  { name: "retry only", input: "retry: 1000\n\n", expected: [noData({ retry: 1000 })], variants: true },
  { name: "retry zero", input: "retry: 0\ndata: x\n\n", expected: [ev("x", { retry: 0 })] },
  { name: "retry non-digit ignored", input: "retry: 10a\ndata: x\n\n", expected: [ev("x")] },
  { name: "retry negative ignored", input: "retry: -1\ndata: x\n\n", expected: [ev("x")] },
  { name: "retry fraction ignored", input: "retry: 1.5\ndata: x\n\n", expected: [ev("x")] },
  { name: "retry two spaces ignored", input: "retry:  5\ndata: x\n\n", expected: [ev("x")] },
  { name: "retry empty ignored", input: "retry:\n\n", expected: [] },
  {
    name: "retry beyond 2^53 ignored",
    input: "retry: 99999999999999999999\ndata: x\n\n",
    expected: [ev("x")],
  },
  {
    name: "all fields",
    input: "event: e\nid: 7\nretry: 5\ndata: d\n\n",
    expected: [ev("d", { event: "e", id: "7", retry: 5 })],
  },
  { name: "comment only", input: ": keep-alive\n\n", expected: [], variants: true },
  { name: "bare colon comment", input: ":\n\n", expected: [] },
  { name: "comments between fields", input: ": c\ndata: x\n: c2\n\n", expected: [ev("x")], variants: true },
  { name: "unknown field ignored", input: "foo: bar\n\n", expected: [] },
  { name: "unknown field next to data", input: "foo: bar\ndata: x\n\n", expected: [ev("x")] },
  { name: "field names are case-sensitive", input: "Data: x\nID: 1\n\n", expected: [] },
  { name: "space before colon makes an unknown field", input: "data : x\n\n", expected: [] },
  {
    name: "longer name with known prefix",
    input: "dataX: y\nidx: 1\nevents: e\nretryy: 1\n\n",
    expected: [],
  },
  { name: "prefix of a name", input: "dat: y\ni: 1\n\n", expected: [] },
  { name: "incomplete event discarded at end", input: "data: x\n", expected: [] },
  { name: "unterminated line discarded", input: "data: x", expected: [] },
  { name: "extra blank lines", input: "\n\ndata: x\n\n\n\n", expected: [ev("x")], variants: true },
  {
    name: "two events",
    input: "id: 1\ndata: a\n\nid: 2\ndata: b\n\n",
    expected: [ev("a", { id: "1" }), ev("b", { id: "2" })],
    variants: true,
  },
  {
    name: "block state resets between events",
    input: "event: e\nid: 1\nretry: 3\ndata: a\n\ndata: b\n\n",
    expected: [ev("a", { event: "e", id: "1", retry: 3 }), ev("b")],
  },
  { name: "mixed terminators", input: "data: a\r\ndata: b\rdata: c\n\r\n", expected: [ev("a\nb\nc")] },
  { name: "CR CR dispatches", input: "data: a\r\r", expected: [ev("a")] },
  { name: "LF CR is two line ends", input: "data: a\n\r", expected: [ev("a")] },
  { name: "CR LF LF is two line ends", input: "data: a\r\n\n", expected: [ev("a")] },
  { name: "BOM stripped", input: "\uFEFFdata: x\n\n", expected: [ev("x")] },
  { name: "second BOM is part of the field name", input: "\uFEFF\uFEFFdata: x\n\n", expected: [] },
  { name: "BOM inside a value kept", input: "data: \uFEFFx\n\n", expected: [ev("\uFEFFx")] },
  { name: "BOM not at start kept", input: "data: x\n\n\uFEFFdata: y\n\n", expected: [ev("x")] },
  { name: "multi-byte UTF-8", input: "data: héllo 世界 🎉\n\n", expected: [ev("héllo 世界 🎉")] },
  {
    name: "multi-byte in id and event",
    input: "id: ü\nevent: 世\ndata: x\n\n",
    expected: [ev("x", { id: "ü", event: "世" })],
  },
  {
    name: "invalid UTF-8 becomes U+FFFD",
    input: [0x64, 0x61, 0x74, 0x61, 0x3a, 0xff, 0x41, 0x0a, 0x0a],
    expected: [ev("\uFFFDA")],
  },
  {
    name: "truncated sequence before LF becomes U+FFFD",
    input: [0x64, 0x61, 0x74, 0x61, 0x3a, 0xe4, 0xb8, 0x0a, 0x0a],
    expected: [ev("\uFFFD")],
  },
  {
    name: "partial BOM is not dropped",
    input: [0xef, 0x64, 0x61, 0x74, 0x61, 0x3a, 0x78, 0x0a, 0x0a],
    expected: [],
  },
  {
    name: "JSON-RPC payload",
    input: 'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n',
    expected: [ev('{"jsonrpc":"2.0","id":1,"result":{}}', { event: "message" })],
  },
];

describe("SseParser", () => {
  for (const c of cases) {
    const inputs: [string, string | number[]][] = [["LF", c.input]];
    if (c.variants && typeof c.input === "string") {
      inputs.push(["CRLF", c.input.replaceAll("\n", "\r\n")], ["CR", c.input.replaceAll("\n", "\r")]);
    }
    it(c.name, () => {
      for (const [eol, input] of inputs) {
        for (const [how, chunks] of splits(bytesOf(input))) {
          assert.deepEqual(parseChunks(chunks), c.expected, `${c.name} (${eol}, ${how})`);
        }
      }
    });
  }

  it("split between CR and LF does not produce an extra blank line", () => {
    const p = new SseParser();
    assert.deepEqual(p.push(bytesOf("data: a\r")), []);
    assert.deepEqual(p.push(bytesOf("\ndata: b\r")), []);
    assert.deepEqual(p.push(bytesOf("\n")), []);
    assert.deepEqual(p.push(bytesOf("\r")), [ev("a\nb")]);
    assert.deepEqual(p.push(bytesOf("\n")), []); // LF completing the CR: not a second blank line
  });

  it("returns events as soon as the blank line arrives", () => {
    const p = new SseParser();
    assert.deepEqual(p.push(bytesOf("data: a\n")), []);
    assert.deepEqual(p.push(bytesOf("\n")), [ev("a")]);
    assert.deepEqual(p.push(bytesOf("data: b\n\ndata: c\n\ndata: d")), [ev("b"), ev("c")]);
    assert.deepEqual(p.push(bytesOf("\n\n")), [ev("d")]);
  });

  it("lastEventId persists across events and can be reset with an empty id", () => {
    const p = new SseParser();
    assert.equal(p.lastEventId, "");
    p.push(bytesOf("id: 5\ndata: a\n\n"));
    assert.equal(p.lastEventId, "5");
    const [second] = p.push(bytesOf("data: b\n\n"));
    assert.equal(second?.id, undefined, "the event carries only its own block's id");
    assert.equal(p.lastEventId, "5");
    p.push(bytesOf("id: a\u0000\ndata: c\n\n"));
    assert.equal(p.lastEventId, "5", "an id with NUL does not change it");
    p.push(bytesOf("id\n\n"));
    assert.equal(p.lastEventId, "");
  });

  it("does not retain the caller's chunk", () => {
    const p = new SseParser();
    const chunk = bytesOf("data: abc");
    p.push(chunk);
    chunk.fill(0x7a);
    assert.deepEqual(p.push(bytesOf("def\n\n")), [ev("abcdef")]);
  });

  it("end() discards a pending event and the parser can keep going", () => {
    const p = new SseParser();
    p.push(bytesOf("id: 1\ndata: partial"));
    assert.deepEqual(p.end(), []);
    assert.deepEqual(p.push(bytesOf("data: x\n\n")), [ev("x")]);
  });

  it("empty chunks are no-ops", () => {
    const p = new SseParser();
    assert.deepEqual(p.push(new Uint8Array(0)), []);
    assert.deepEqual(p.push(bytesOf("data: x\n\n")), [ev("x")]);
  });

  it("BOM split across three chunks", () => {
    assert.deepEqual(
      parseChunks([Uint8Array.of(0xef), Uint8Array.of(0xbb), Uint8Array.of(0xbf), bytesOf("data: x\n\n")]),
      [ev("x")],
    );
  });

  it("handles many events in one large chunk", () => {
    let s = "";
    for (let i = 0; i < 1000; i++) s += `id: ${i}\ndata: {"n":${i}}\n\n`;
    const out = parseChunks([bytesOf(s)]);
    assert.equal(out.length, 1000);
    assert.deepEqual(out[999], ev('{"n":999}', { id: "999" }));
  });

  it("a long line arriving in many small chunks", () => {
    const payload = "x".repeat(100_000);
    const bytes = bytesOf(`data: ${payload}\n\n`);
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += 7) chunks.push(bytes.subarray(i, i + 7));
    assert.deepEqual(parseChunks(chunks), [ev(payload)]);
  });
});

describe("SseParser maxEventBytes", () => {
  const limitCases: { name: string; limit: number; chunks: string[]; throws: boolean }[] = [
    { name: "event under the limit", limit: 64, chunks: ["data: 0123456789\n\n"], throws: false },
    { name: "one data line over the limit", limit: 10, chunks: ["data: 0123456789\n\n"], throws: true },
    {
      name: "many data lines over the limit",
      limit: 30,
      chunks: ["data: 0123\n".repeat(5), "\n"],
      throws: true,
    },
    {
      name: "unterminated line over the limit",
      limit: 16,
      chunks: ["data: 01234", "56789", "abcdef"],
      throws: true,
    },
    { name: "limit is per event", limit: 20, chunks: ["data: 0123456789\n\n".repeat(50)], throws: false },
    {
      name: "comments are not buffered",
      limit: 20,
      chunks: [": 0123456789\n".repeat(50), "data: x\n\n"],
      throws: false,
    },
    {
      name: "unknown fields are not buffered",
      limit: 20,
      chunks: ["foo: 0123456789\n".repeat(50), "\n"],
      throws: false,
    },
  ];
  for (const c of limitCases) {
    it(c.name, () => {
      const run = () => parseChunks(c.chunks.map(bytesOf), { maxEventBytes: c.limit });
      if (c.throws) assert.throws(run, SseTooLargeError);
      else assert.doesNotThrow(run);
    });
  }

  it("the parser stays failed after the error", () => {
    const p = new SseParser({ maxEventBytes: 8 });
    assert.throws(
      () => p.push(bytesOf("data: 0123456789")),
      (err: unknown) => {
        assert.ok(err instanceof SseTooLargeError);
        assert.equal(err.limit, 8);
        assert.equal(err.name, "SseTooLargeError");
        return true;
      },
    );
    assert.throws(() => p.push(bytesOf("\n\n")), SseTooLargeError);
  });

  it("defaults to 16 MiB and rejects a bad limit", () => {
    assert.equal(new SseParser().maxEventBytes, 16 * 1024 * 1024);
    for (const bad of [0, -1, 1.5, Number.NaN])
      assert.throws(() => new SseParser({ maxEventBytes: bad }), RangeError);
  });
});

describe("formatEvent", () => {
  const table: { name: string; input: Parameters<typeof formatEvent>[0]; expected: string }[] = [
    { name: "data", input: { data: "x" }, expected: "data: x\n\n" },
    { name: "empty data", input: { data: "" }, expected: "data: \n\n" },
    { name: "multi-line data", input: { data: "a\nb" }, expected: "data: a\ndata: b\n\n" },
    {
      name: "CRLF and CR normalized",
      input: { data: "a\r\nb\rc" },
      expected: "data: a\ndata: b\ndata: c\n\n",
    },
    { name: "trailing newline", input: { data: "a\n" }, expected: "data: a\ndata: \n\n" },
    { name: "leading space preserved", input: { data: " x" }, expected: "data:  x\n\n" },
    { name: "priming event", input: { id: "1" }, expected: "id: 1\n\n" },
    { name: "empty id", input: { id: "", data: "x" }, expected: "id: \ndata: x\n\n" },
    {
      name: "all fields",
      input: { id: "7", event: "message", retry: 5, data: "d" },
      expected: "event: message\nid: 7\nretry: 5\ndata: d\n\n",
    },
    { name: "retry only", input: { retry: 0 }, expected: "retry: 0\n\n" },
  ];
  for (const c of table) it(c.name, () => assert.equal(formatEvent(c.input), c.expected));

  const bad: { name: string; input: Parameters<typeof formatEvent>[0] }[] = [
    { name: "id with LF", input: { id: "a\nb", data: "x" } },
    { name: "id with CR", input: { id: "a\rb", data: "x" } },
    { name: "id with NUL", input: { id: "a\u0000b", data: "x" } },
    { name: "event with LF", input: { event: "a\nb", data: "x" } },
    { name: "event with CR", input: { event: "a\r", data: "x" } },
    { name: "negative retry", input: { retry: -1 } },
    { name: "fractional retry", input: { retry: 1.5 } },
    { name: "NaN retry", input: { retry: Number.NaN } },
    { name: "no field", input: {} },
  ];
  for (const c of bad) it(`throws: ${c.name}`, () => assert.throws(() => formatEvent(c.input), TypeError));

  const roundTrips: Parameters<typeof formatEvent>[0][] = [
    { data: "x" },
    { data: "" },
    { data: "a\nb\n" },
    { data: "  indented\n\nblank line above" },
    { data: ": not a comment" },
    { id: "1" },
    { id: "ü-1", event: "message", data: '{"jsonrpc":"2.0"}' },
    { retry: 3000, id: "x" },
    { data: "héllo 世界 🎉" },
  ];
  for (const input of roundTrips) {
    it(`round-trips ${JSON.stringify(input)}`, () => {
      const [parsed, ...rest] = new SseParser().push(bytesOf(formatEvent(input)));
      assert.equal(rest.length, 0);
      const expected: SseEvent = { data: input.data ?? "", hasData: input.data !== undefined };
      if (input.id !== undefined) expected.id = input.id;
      if (input.event !== undefined) expected.event = input.event;
      if (input.retry !== undefined) expected.retry = input.retry;
      assert.deepEqual(parsed, expected);
    });
  }
});

describe("formatComment", () => {
  const table: [string | undefined, string][] = [
    [undefined, ":\n\n"],
    ["", ":\n\n"],
    ["ping", ": ping\n\n"],
    ["a\nb", ": a\n: b\n\n"],
    ["a\r\n\rb", ": a\n:\n: b\n\n"],
  ];
  for (const [input, expected] of table) {
    it(JSON.stringify(input ?? null), () => {
      const s = formatComment(input);
      assert.equal(s, expected);
      assert.deepEqual(new SseParser().push(bytesOf(s)), [], "a comment dispatches nothing");
    });
  }
});

/** A direct, string-based transcription of the WHATWG rules (plus the dispatch-on-any-field rule). */
function reference(input: string): SseEvent[] {
  const text = input.startsWith("\uFEFF") ? input.slice(1) : input;
  const lines = text.split(/\r\n|\r|\n/);
  lines.pop(); // the last piece has no terminator: an incomplete line, discarded at the end
  const out: SseEvent[] = [];
  let data: string[] = [];
  let event = "";
  let id: string | undefined;
  let retry: number | undefined;
  let any = false;
  for (const line of lines) {
    if (line === "") {
      if (any) {
        const e: SseEvent = { data: data.join("\n"), hasData: data.length > 0 };
        if (id !== undefined) e.id = id;
        if (event !== "") e.event = event;
        if (retry !== undefined) e.retry = retry;
        out.push(e);
      }
      data = [];
      event = "";
      id = undefined;
      retry = undefined;
      any = false;
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") {
      data.push(value);
      any = true;
    } else if (name === "event") {
      event = value;
      any = true;
    } else if (name === "id") {
      if (!value.includes("\0")) {
        id = value;
        any = true;
      }
    } else if (name === "retry") {
      if (/^\d+$/.test(value) && Number.isSafeInteger(Number(value))) {
        retry = Number(value);
        any = true;
      }
    }
  }
  return out;
}

describe("SseParser against a reference implementation (random streams, random chunking)", () => {
  const tokens = [
    "data",
    "id",
    "event",
    "retry",
    "foo",
    ":",
    ": ",
    " ",
    "\n",
    "\n",
    "\r",
    "\r\n",
    "x",
    "é",
    "世",
    "🎉",
    "1",
    "42",
    "\u0000",
    "\uFEFF",
  ];
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  it("agrees on 3000 random streams", () => {
    for (let iter = 0; iter < 3000; iter++) {
      let s = rand(10) === 0 ? "\uFEFF" : "";
      const len = 1 + rand(40);
      for (let i = 0; i < len; i++) s += tokens[rand(tokens.length)];
      const bytes = bytesOf(s);
      const chunks: Uint8Array[] = [];
      for (let i = 0; i < bytes.length;) {
        const n = 1 + rand(6);
        chunks.push(bytes.subarray(i, i + n));
        i += n;
      }
      assert.deepEqual(parseChunks(chunks), reference(s), JSON.stringify(s));
    }
  });
});
