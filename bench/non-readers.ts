/**
 * Edge RSS with clients that ask for large results and never read, with and without the stream
 * buffer budget.
 *
 *   node bench/non-readers.ts [--clients 100] [--kib 4096] [--budgets 0,64MiB,256MiB]
 *
 * Per budget: a fresh edge process (`serve`, auth none on loopback, `streams.bufferBudget` set) in
 * front of the SDK v1 fixture (Streamable HTTP, SSE answers); RSS read from /proc (VmRSS) after
 * start, then after `--clients` raw sockets each sent a `large_text` call of `--kib` KiB and stopped
 * reading (once the edge's buffered bytes stop growing), then whether a reading SDK client still
 * gets a 1 MiB result whole. Prints one Markdown row per budget.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { largeText } from "../test/fixtures/conformance-server.ts";
import { type NonReader, nonReader } from "../test/helpers/non-reader.ts";
import { edgeAnnouncement } from "./lib/edge.ts";
import { listeningLine, NODE_BIN, REPO_ROOT, rssBytes, start } from "./lib/proc.ts";

const { values: opt } = parseArgs({
  options: {
    clients: { type: "string", default: "100" },
    kib: { type: "string", default: "4096" },
    budgets: { type: "string", default: "0,64MiB,256MiB" },
  },
});
const clients = Number(opt.clients);
const kib = Number(opt.kib);
const FIXTURE = path.join(REPO_ROOT, "test/fixtures/conformance-server.ts");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (b: number) => (b / 1e6).toFixed(0);

const up = await start({
  name: "sdk-v1",
  command: NODE_BIN,
  args: [FIXTURE],
  parse: listeningLine,
  expect: ["url"],
});
const rows: string[] = [];
try {
  for (const budget of (opt.budgets ?? "").split(",")) {
    const dir = mkdtempSync(path.join(os.tmpdir(), "mcp-edge-nonreaders-"));
    const file = path.join(dir, "edge.yaml");
    writeFileSync(
      file,
      JSON.stringify({
        listen: { host: "127.0.0.1", port: 0 },
        admin: { listen: { host: "127.0.0.1", port: 0 } },
        store: { sqlite: path.join(dir, "edge.db") },
        log: { level: "error" },
        // A tenant's share (half the budget) must hold one result: results stay under 16 MiB here.
        limits: { maxResultBytes: "16MiB" },
        streams: { bufferBudget: budget === "0" ? 0 : budget },
        servers: { s: { route: "/mcp", upstream: { urls: [up.announced.url] }, auth: ["none"] } },
      }),
    );
    const edge = await start({
      name: "mcp-edge",
      command: NODE_BIN,
      args: [path.join(REPO_ROOT, "src/main.ts"), "serve", "-c", file],
      cwd: dir,
      parse: edgeAnnouncement,
      expect: ["s", "admin:"],
    });
    const url = edge.announced.s as string;
    const metric = async (name: string) =>
      Number(
        new RegExp(`^${name} (\\d+)`, "m").exec(
          await (await fetch(`${edge.announced["admin:"]}/metrics`)).text(),
        )?.[1] ?? 0,
      );
    const readers: NonReader[] = [];
    try {
      await sleep(1000);
      const before = rssBytes(edge.pid);
      for (let i = 0; i < clients; i++) readers.push(await nonReader(url, kib));
      // Settled: the buffered bytes stop changing.
      let last = -1;
      for (let i = 0; i < 120; i++) {
        await sleep(1000);
        const now = await metric("mcp_edge_stream_buffer_bytes");
        if (now === last) break;
        last = now;
      }
      const after = rssBytes(edge.pid);
      const evicted = await metric("mcp_edge_stream_buffer_evictions_total");
      const client = new Client({ name: "reader", version: "1" });
      await client.connect(new StreamableHTTPClientTransport(new URL(url)));
      const r = (await client.callTool({ name: "large_text", arguments: { kib: 1024 } })) as {
        content: { text: string }[];
      };
      const whole = r.content[0]?.text === largeText(1024);
      await client.close();
      rows.push(
        `| ${budget === "0" ? "none" : budget} | ${clients} × ${kib} KiB | ${mb(before)} | ${mb(after)} | ${mb(last)} | ${evicted} | ${whole ? "yes" : "no"} |`,
      );
      process.stderr.write(`${rows.at(-1)}\n`);
    } finally {
      for (const r of readers) r.socket.destroy();
      await edge.stop();
    }
  }
} finally {
  await up.stop();
}
process.stdout.write(
  [
    "| budget | non-readers | RSS before MB | RSS after MB | buffered MB | streams dropped | reading client whole |",
    "|---|---|---:|---:|---:|---:|---|",
    ...rows,
  ].join("\n") + "\n",
);
