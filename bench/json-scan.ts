/**
 * The body parse of every POST: `parseBody` (the strict single-pass reader of src/mcp/strict-json.ts:
 * duplicate names, `__proto__`, lone surrogates and the `limits.json` bounds checked while parsing)
 * beside what it replaced, `JSON.parse` then the same JSON-RPC validation (`toMessage`), on bodies
 * of typical shapes: a small tools/call, an initialize, tool arguments of ~8 KiB text, ~64 KiB of
 * nested objects and numbers.
 *
 *   node bench/json-scan.ts [--rounds N] [--ops N]
 *
 * ns/op: median over rounds (after a warm-up round) of the time of `ops` parses divided by `ops`.
 * Prints a Markdown table with the ratio strict / JSON.parse per body.
 */
import { parseArgs } from "node:util";
import { parseBody, toMessage } from "../src/mcp/jsonrpc.ts";
import { median } from "./lib/stats.ts";

const { values: opt } = parseArgs({
  options: { rounds: { type: "string" }, ops: { type: "string" } },
});
const ROUNDS = Number(opt.rounds ?? 7);
const OPS = Number(opt.ops ?? 20_000);

const call = JSON.stringify({
  jsonrpc: "2.0",
  id: 42,
  method: "tools/call",
  params: { name: "echo", arguments: { text: "hello from the benchmark" } },
});
const initialize = JSON.stringify({
  jsonrpc: "2.0",
  id: 0,
  method: "initialize",
  params: {
    protocolVersion: "2025-11-25",
    capabilities: { roots: { listChanged: true }, sampling: {}, elicitation: { form: {}, url: {} } },
    clientInfo: { name: "bench-client", title: "Bench Client", version: "1.2.3" },
  },
});
const text8k = JSON.stringify({
  jsonrpc: "2.0",
  id: "req-7",
  method: "tools/call",
  params: {
    name: "write_file",
    arguments: { path: "/tmp/a.md", content: 'Lorem ipsum dolor sit amet, "quoted"\n'.repeat(220) },
  },
});
const rows = Array.from({ length: 400 }, (_, i) => ({
  id: i,
  name: `item-${i}`,
  price: i * 1.25,
  tags: ["a", "b", "ü"],
  dims: { w: i % 7, h: 0.5, nested: { ok: i % 2 === 0 } },
}));
const nested64k = JSON.stringify({
  jsonrpc: "2.0",
  id: 9,
  method: "tools/call",
  params: { name: "bulk_insert", arguments: { rows } },
});

/**
 * Median ns per call of `a(body)` and of `b(body)`: ROUNDS rounds of `ops` calls each, the two
 * interleaved round by round (a loaded machine slows both alike), after a warm-up round.
 */
function compare(a: Parse, b: Parse, body: string, ops: number): [number, number] {
  const sa: number[] = [];
  const sb: number[] = [];
  for (let r = 0; r <= ROUNDS; r++) {
    for (const [fn, out] of [
      [a, sa],
      [b, sb],
    ] as const) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < ops; i++) fn(body);
      if (r > 0) out.push(Number(process.hrtime.bigint() - t0) / ops);
    }
  }
  return [median(sa), median(sb)];
}

type Parse = (s: string) => unknown;

const before = (s: string) => toMessage(JSON.parse(s));
const after = (s: string) => parseBody(s, { allowBatch: true });

const lines = [
  `| body | bytes | JSON.parse + validate (ns/op) | strict parseBody (ns/op) | ratio |`,
  `|---|---|---|---|---|`,
];
for (const [name, body] of [
  ["tools/call, small", call],
  ["initialize", initialize],
  ["tools/call, 8 KiB text argument", text8k],
  ["tools/call, 64 KiB nested arguments", nested64k],
] as const) {
  const ops = body.length > 10_000 ? Math.max(200, Math.floor(OPS / 50)) : OPS;
  const [a, b] = compare(before, after, body, ops);
  lines.push(`| ${name} | ${body.length} | ${a.toFixed(0)} | ${b.toFixed(0)} | ${(b / a).toFixed(2)}× |`);
}
console.log(lines.join("\n"));
