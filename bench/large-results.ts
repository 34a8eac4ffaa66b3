/**
 * Large tool results, direct and through mcp-edge: size received and time per call, over every
 * upstream transport.
 *
 *   node bench/large-results.ts [--sizes 1,5,20] [--repeat 3]
 *
 * Upstreams: the SDK v1 fixture (test/fixtures/conformance-server.ts, tool `large_text`) as a
 * Streamable HTTP server answering with SSE, the same answering with JSON (`--json`), a legacy
 * HTTP+SSE server (`--sse`) and a stdio server. mcp-edge runs as its own process (`serve`, auth
 * none on loopback, defaults otherwise: `limits.maxResultBytes` 64 MiB). The client is the SDK v1
 * client in this process: StreamableHTTPClientTransport to the edge and to the HTTP upstreams,
 * SSEClientTransport to the legacy one, StdioClientTransport to a directly spawned stdio server.
 * Per cell the median of `--repeat` calls (after one warm-up call of 64 KiB); each answer is
 * checked whole (its length and its last line). Prints a Markdown table on stdout.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { largeText } from "../test/fixtures/conformance-server.ts";
import { edgeAnnouncement } from "./lib/edge.ts";
import { listeningLine, NODE_BIN, REPO_ROOT, type Started, start } from "./lib/proc.ts";
import { median } from "./lib/stats.ts";

const { values: opt } = parseArgs({
  options: { sizes: { type: "string", default: "1,5,20" }, repeat: { type: "string", default: "3" } },
});
const sizes = (opt.sizes ?? "1,5,20").split(",").map(Number);
const repeat = Number(opt.repeat);
const FIXTURE = path.join(REPO_ROOT, "test/fixtures/conformance-server.ts");

function fixture(name: string, args: string[]): Promise<Started> {
  return start({ name, command: NODE_BIN, args: [FIXTURE, ...args], parse: listeningLine, expect: ["url"] });
}

interface Cell {
  ok: boolean;
  bytes: number;
  ms: number;
  error?: string;
}

async function call(transport: () => Transport, kib: number): Promise<Cell> {
  const client = new Client({ name: "bench-large", version: "1.0.0" });
  await client.connect(transport());
  const t0 = performance.now();
  try {
    const r = (await client.callTool({ name: "large_text", arguments: { kib } }, undefined, {
      timeout: 120_000,
    })) as { content: { text?: string }[] };
    const ms = performance.now() - t0;
    const text = r.content[0]?.text ?? "";
    const want = largeText(kib);
    return { ok: text === want, bytes: text.length, ms };
  } catch (err) {
    return { ok: false, bytes: 0, ms: performance.now() - t0, error: String(err).slice(0, 120) };
  } finally {
    await client.close().catch(() => undefined);
  }
}

const upSse = await fixture("sdk-v1 (SSE answers)", []);
const upJson = await fixture("sdk-v1 (JSON answers)", ["--json"]);
const upLegacy = await fixture("sdk-v1 (legacy SSE)", ["--sse"]);
const dir = mkdtempSync(path.join(os.tmpdir(), "mcp-edge-large-"));
const file = path.join(dir, "edge.yaml");
const servers = {
  sse: { route: "/sse-up/mcp", upstream: { urls: [upSse.announced.url] }, auth: ["none"] },
  json: { route: "/json-up/mcp", upstream: { urls: [upJson.announced.url] }, auth: ["none"] },
  legacy: { route: "/legacy-up/mcp", upstream: { sse: upLegacy.announced.url }, auth: ["none"] },
  stdio: {
    route: "/stdio-up/mcp",
    upstream: { stdio: { command: NODE_BIN, args: [FIXTURE, "--stdio"] } },
    auth: ["none"],
  },
};
writeFileSync(
  file,
  JSON.stringify({
    listen: { host: "127.0.0.1", port: 0 },
    admin: { listen: { host: "127.0.0.1", port: 0 } },
    store: { sqlite: path.join(dir, "edge.db") },
    log: { level: "warn" },
    servers,
  }),
);
const edge = await start({
  name: "mcp-edge",
  command: NODE_BIN,
  args: [path.join(REPO_ROOT, "src/main.ts"), "serve", "-c", file],
  cwd: dir,
  parse: edgeAnnouncement,
  expect: Object.keys(servers),
  timeoutMs: 30_000,
});

const http = (url: string) => () => new StreamableHTTPClientTransport(new URL(url));
const paths: [string, string, () => Transport][] = [
  ["Streamable HTTP, SSE answers", "direct", http(upSse.announced.url as string)],
  ["Streamable HTTP, SSE answers", "edge", http(edge.announced.sse as string)],
  ["Streamable HTTP, JSON answers", "direct", http(upJson.announced.url as string)],
  ["Streamable HTTP, JSON answers", "edge", http(edge.announced.json as string)],
  ["legacy HTTP+SSE", "direct", () => new SSEClientTransport(new URL(upLegacy.announced.url as string))],
  ["legacy HTTP+SSE", "edge", http(edge.announced.legacy as string)],
  [
    "stdio",
    "direct",
    () => new StdioClientTransport({ command: NODE_BIN, args: [FIXTURE, "--stdio"], stderr: "ignore" }),
  ],
  ["stdio", "edge", http(edge.announced.stdio as string)],
];

const rows: string[] = [];
try {
  for (const [upstream, via, transport] of paths) {
    await call(transport, 64);
    for (const mib of sizes) {
      const cells: Cell[] = [];
      for (let i = 0; i < repeat; i++) cells.push(await call(transport, mib * 1024));
      const ok = cells.filter((c) => c.ok);
      const failed = cells.find((c) => !c.ok);
      rows.push(
        `| ${upstream} | ${via} | ${mib} MiB | ${ok.length}/${cells.length} | ${
          ok.length > 0 ? (median(ok.map((c) => c.bytes)) / 1048576).toFixed(2) : "0"
        } MiB | ${ok.length > 0 ? median(ok.map((c) => c.ms)).toFixed(0) : "–"} | ${failed?.error ?? ""} |`,
      );
      process.stderr.write(`${rows.at(-1)}\n`);
    }
  }
} finally {
  await edge.stop();
  await Promise.all([upSse.stop(), upJson.stop(), upLegacy.stop()]);
}
process.stdout.write(
  [
    "| upstream | path | result | whole | received | median ms | failure |",
    "|---|---|---:|---:|---:|---:|---|",
    ...rows,
  ].join("\n") + "\n",
);
