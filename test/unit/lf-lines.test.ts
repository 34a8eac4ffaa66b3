/** LfLines (src/upstream/stdio.ts): the edge's reader of a stdio server's output. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { oversized, oversizedId } from "../../src/upstream/channel.ts";
import { LfLines } from "../../src/upstream/stdio.ts";

function read(chunks: (string | Buffer)[], max = 1024): { lines: string[]; tooLong: number } {
  const lines: string[] = [];
  let tooLong = 0;
  const r = new LfLines(max, () => tooLong++);
  r.on("line", (l) => lines.push(l));
  for (const c of chunks) r.push(typeof c === "string" ? Buffer.from(c, "utf8") : c);
  return { lines, tooLong };
}

describe("LfLines", () => {
  test("splits at LF only: CR, U+2028, U+2029, NEL, VT, FF stay inside the line", () => {
    const line = '{"a":"x\r y\u2028z\u2029w\u0085v\vu\ft"}';
    assert.deepEqual(read([`${line}\n`]).lines, [line]);
  });

  test("CRLF endings lose their CR; a line may arrive in pieces, even inside a UTF-8 character", () => {
    const bytes = Buffer.from("é\u2028ü\r\nsecond\n", "utf8");
    const pieces = Array.from(bytes).map((b) => Buffer.from([b]));
    assert.deepEqual(read(pieces).lines, ["é\u2028ü", "second"]);
  });

  test("an unterminated tail waits for its LF", () => {
    assert.deepEqual(read(["one\ntw", "o"]).lines, ["one"]);
  });

  test("a line over the limit is dropped whole and reported; the next line is read", () => {
    const r = read(["x".repeat(600), "y".repeat(600), "\nok\n"], 1024);
    assert.deepEqual(r.lines, ["ok"]);
    assert.equal(r.tooLong, 1);
  });
});

describe("a line over the maximum: its ends name the call it answered", () => {
  test("LfLines hands over the first and last bytes of the dropped line", () => {
    const ends: [string, string][] = [];
    const r = new LfLines(64, (head, tail) => ends.push([head, tail]));
    const line = `{"result":{"text":"${"x".repeat(20_000)}"},"jsonrpc":"2.0","id":42}`;
    for (let i = 0; i < line.length; i += 997) r.push(Buffer.from(line.slice(i, i + 997)));
    r.push(Buffer.from("\r\n"));
    assert.equal(ends.length, 1);
    assert.ok(ends[0]?.[0].startsWith('{"result"'));
    assert.ok(ends[0]?.[1].endsWith('"id":42}'));
    assert.equal(oversizedId(...(ends[0] as [string, string])), 42);
  });

  test("oversizedId reads the envelope's id at either end, never one inside a string", () => {
    assert.equal(oversizedId('{"jsonrpc":"2.0","id":"a\\"b","result":{', ""), 'a"b');
    assert.equal(oversizedId('{"id":7,"jsonrpc":"2.0","result":', ""), 7);
    assert.equal(oversizedId('{"result":{"content":[', 'x"}]},"id":-3 }'), -3);
    assert.equal(oversizedId('{"result":{"content":[', ',\\"id\\":5}"}]}}'), undefined);
    assert.equal(oversizedId("", ""), undefined);
    assert.deepEqual(oversized('{"jsonrpc":"2.0","method":"notifications/message","params":{', "", 9), {
      id: undefined,
      notResponse: true,
      limit: 9,
    });
  });
});
