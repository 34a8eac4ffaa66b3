/**
 * The strict reader of client bodies (src/mcp/strict-json.ts): RFC 8259 JSON read exactly as
 * JSON.parse reads it, except for what it refuses on purpose (repeated member names, `__proto__`,
 * lone surrogates, shapes over the limits). Checked against JSON.parse on generated documents and
 * on every one-character mutation of them (seeded, so a failure replays).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ErrorCode } from "../../src/errors/codes.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import { DEFAULT_JSON_LIMITS, type JsonLimits, parseStrictJson } from "../../src/mcp/strict-json.ts";

function refused(text: string, code: ErrorCode, limits?: JsonLimits): GatewayError {
  let caught: unknown;
  try {
    parseStrictJson(text, limits);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof GatewayError, `expected ${code} for ${text.slice(0, 80)}`);
  assert.equal(caught.code, code, `${text.slice(0, 80)}: ${caught.message}`);
  return caught;
}

/** A small seeded PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = ["a", "é", "\u4e16", "😀", '"', "\\", "\n", "\u0001", "/", " ", "x\ty", "\u2028"];

function genValue(r: () => number, depth: number): unknown {
  const k = Math.floor(r() * (depth > 4 ? 5 : 7));
  if (k === 0) return null;
  if (k === 1) return r() < 0.5;
  if (k === 2) {
    const forms = [0, -1, 1.5, -0.25, 1e21, 123456789, 2.5e-7, -0, 9007199254740991];
    return forms[Math.floor(r() * forms.length)];
  }
  if (k === 3 || k === 4) {
    let s = "";
    const n = Math.floor(r() * 6);
    for (let i = 0; i < n; i++) s += PIECES[Math.floor(r() * PIECES.length)];
    return s;
  }
  if (k === 5) {
    const n = Math.floor(r() * 4);
    return Array.from({ length: n }, () => genValue(r, depth + 1));
  }
  const o: Record<string, unknown> = {};
  const n = Math.floor(r() * 4);
  for (let i = 0; i < n; i++) o[`k${i}${PIECES[Math.floor(r() * 4)]}`] = genValue(r, depth + 1);
  return o;
}

describe("strict JSON reader: the same reading as JSON.parse", () => {
  it("generated documents (compact and spaced, escaped and raw) read as JSON.parse reads them", () => {
    const r = rng(14);
    for (let i = 0; i < 2000; i++) {
      const v = genValue(r, 0);
      for (const text of [JSON.stringify(v), JSON.stringify(v, null, i % 2 ? "\t" : " ")]) {
        assert.deepEqual(parseStrictJson(text), JSON.parse(text), text);
      }
    }
  });

  it("every one-character mutation: refused when JSON.parse refuses, else the same value", () => {
    const r = rng(7);
    const alphabet = ['"', "\\", "{", "}", "[", "]", ",", ":", "0", "-", ".", "e", "u", " ", "x", "\r"];
    let compared = 0;
    for (let i = 0; i < 600; i++) {
      const text = JSON.stringify(genValue(r, 0));
      for (let pos = 0; pos < text.length; pos++) {
        const ch = alphabet[Math.floor(r() * alphabet.length)] as string;
        const mutated =
          r() < 0.2
            ? text.slice(0, pos) + text.slice(pos + 1)
            : text.slice(0, pos) + ch + text.slice(pos + 1);
        let expected: unknown;
        let parses = true;
        try {
          expected = JSON.parse(mutated);
        } catch {
          parses = false;
        }
        let got: unknown;
        let code: string | undefined;
        try {
          got = parseStrictJson(mutated);
        } catch (err) {
          assert.ok(err instanceof GatewayError, `a coded error for ${mutated}: ${String(err)}`);
          code = err.code;
        }
        const cutPair = code === "EDGE_INVALID_UNICODE" && !mutated.isWellFormed();
        if (!parses) {
          assert.ok(
            code === "EDGE_PARSE_ERROR" || cutPair,
            `JSON.parse refuses ${JSON.stringify(mutated)}: ${code}`,
          );
        } else if (code === undefined) {
          assert.deepEqual(got, expected, mutated);
        } else {
          // Refused on purpose only: a repeated name (a mutation can make two keys equal), or a
          // surrogate pair cut in two.
          const infinite =
            code === "EDGE_JSON_LIMIT" &&
            (mutated.match(/-?\d+(\.\d+)?[eE][+-]?\d+/g) ?? []).some((m) => !Number.isFinite(Number(m)));
          assert.ok(
            cutPair || infinite || code === "EDGE_JSON_DUPLICATE_MEMBER",
            `${JSON.stringify(mutated)}: ${code}`,
          );
        }
        compared++;
      }
    }
    assert.ok(compared > 2000, `${compared} mutations compared`);
  });

  it("keeps JSON's whitespace only (space, tab, LF, CR) and refuses a BOM", () => {
    assert.deepEqual(parseStrictJson(' \t\r\n{ "a" :\r[ 1 ,\t2 ] }\r\n'), { a: [1, 2] });
    for (const ws of ["\u00a0", "\u2028", "\u000b", "\u000c", "\ufeff"])
      refused(`${ws}{}`, "EDGE_PARSE_ERROR");
  });
});

describe("strict JSON reader: one reading only", () => {
  it("refuses a repeated member name at any depth, escaped or not", () => {
    for (const text of [
      '{"method":"a","method":"b"}',
      '{"params":{"name":"echo","name":"forbidden"}}',
      '{"params":{"arguments":{"x":{"y":[{"z":1,"z":2}]}}}}',
      '{"name":"echo","n\\u0061me":"forbidden"}',
      '{"a":1,"b":2,"a":1}',
      '[{"k":1},{"k":1,"k":1}]',
    ])
      refused(text, "EDGE_JSON_DUPLICATE_MEMBER");
    assert.deepEqual(parseStrictJson('[{"k":1},{"k":2}]'), [{ k: 1 }, { k: 2 }]);
  });

  it("refuses __proto__ (escaped too) and constructor.prototype; keeps other names as own data", () => {
    for (const text of [
      '{"__proto__":{"name":"forbidden"}}',
      '{"params":{"__proto__":{"name":"forbidden"},"name":"echo"}}',
      '{"a":[{"\\u005f_proto__":1}]}',
      '{"constructor":{"prototype":{"isAdmin":true}}}',
    ])
      refused(text, "EDGE_JSON_FORBIDDEN_MEMBER");
    const v = parseStrictJson(
      '{"constructor":"c","toString":1,"hasOwnProperty":[],"prototype":{}}',
    ) as Record<string, unknown>;
    assert.equal(Object.getPrototypeOf(v), Object.prototype);
    assert.deepEqual(Object.keys(v), ["constructor", "toString", "hasOwnProperty", "prototype"]);
    assert.equal(v["toString"], 1);
  });

  it("refuses lone surrogates, escaped or raw, in names and values; keeps pairs", () => {
    for (const text of [
      '"\\ud800"',
      '"\\udc00"',
      '"\\ud800x"',
      '"\\ud800\\u0041"',
      '"\\udbff\\ud800"',
      '{"\\ud83d":1}',
      '"\ud800"',
      '"a\udfff"',
      '{"k\ud800":1}',
      '"\ud83d\ud83d\ude00"',
    ])
      refused(text, "EDGE_INVALID_UNICODE");
    assert.equal(parseStrictJson('"\\ud83d\\ude00"'), "😀");
    assert.equal(parseStrictJson('"\ud83d\ude00"'), "😀");
    assert.equal(parseStrictJson('"\\uD83D\\uDE00"'), "😀");
  });
});

describe("strict JSON reader: bounded shapes", () => {
  const L = DEFAULT_JSON_LIMITS;
  const nest = (n: number, open: string, close: string) => open.repeat(n) + close.repeat(n);

  it("depth: 64 nested containers pass, 65 are refused (objects, arrays, mixed)", () => {
    parseStrictJson(nest(64, "[", "]"));
    parseStrictJson(`${'{"a":'.repeat(63)}[]${"}".repeat(63)}`);
    for (const text of [
      nest(65, "[", "]"),
      `${'{"a":'.repeat(64)}[]${"}".repeat(64)}`,
      nest(100_000, "[", "]"),
    ]) {
      const err = refused(text, "EDGE_JSON_LIMIT");
      assert.deepEqual(err.data, { limit: "depth", max: 64 });
    }
  });

  it("members, elements, string and number length", () => {
    const members = (n: number) => `{${Array.from({ length: n }, (_, i) => `"k${i}":0`).join(",")}}`;
    parseStrictJson(members(L.maxMembers));
    assert.deepEqual(refused(members(L.maxMembers + 1), "EDGE_JSON_LIMIT").data, {
      limit: "members",
      max: L.maxMembers,
    });
    const elements = (n: number) => `[${"0,".repeat(n - 1)}0]`;
    parseStrictJson(elements(L.maxElements));
    assert.deepEqual(refused(elements(L.maxElements + 1), "EDGE_JSON_LIMIT").data, {
      limit: "elements",
      max: L.maxElements,
    });
    const small: JsonLimits = { ...L, maxStringLength: 256 };
    parseStrictJson(`"${"x".repeat(256)}"`, small);
    refused(`"${"x".repeat(257)}"`, "EDGE_JSON_LIMIT", small);
    refused(`"${"\\n".repeat(257)}"`, "EDGE_JSON_LIMIT", small);
    refused(`{"${"k".repeat(257)}":1}`, "EDGE_JSON_LIMIT", small);
    parseStrictJson(`${"1".repeat(40)}`);
    for (const n of ["1".repeat(41), `0.${"1".repeat(40)}`, `1e${"0".repeat(39)}1`, `-${"9".repeat(40)}`])
      assert.equal(refused(n, "EDGE_JSON_LIMIT").data?.["limit" as never], "numberLength");
    for (const n of ["1e400", "-1e309"])
      assert.deepEqual(refused(n, "EDGE_JSON_LIMIT").data, { limit: "numberRange", max: Number.MAX_VALUE });
  });
});
