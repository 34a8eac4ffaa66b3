/**
 * The memory budget for buffered streams (`streams.bufferBudget`, `streams.tenantShare`): clients
 * that ask for large results and never read (raw sockets, paused) cannot make the edge hold more
 * than the budget; the least recently read streams go first, with a metric and a log line; a
 * client that reads is unaffected.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { largeText } from "../fixtures/conformance-server.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { type NonReader, nonReader } from "../helpers/non-reader.ts";
import { type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
let up: SpawnedFixture;
let edge: InProcessEdge;
let tenants: InProcessEdge;
const readers: NonReader[] = [];
const ADMIN_TOKEN = "stream-budget-admin-token-0123456789abcdef";

before(async () => {
  up = await spawnFixture("test/fixtures/conformance-server.ts");
  edge = await startEdge({
    limits: { maxResultBytes: "16MiB" },
    streams: { bufferBudget: "24MiB", tenantShare: 1, bufferBytes: "16MiB" },
    servers: { s: { route: "/mcp", upstream: { urls: [up.url] }, auth: ["none"] } },
  });
  tenants = await startEdge({
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    limits: { maxResultBytes: "16MiB" },
    streams: { bufferBudget: "96MiB", tenantShare: 0.2, bufferBytes: "16MiB" },
    servers: { s: { route: "/mcp", upstream: { urls: [up.url] }, auth: ["apiKey"] } },
  });
});

after(async () => {
  for (const r of readers) r.socket.destroy();
  await edge?.stop();
  await tenants?.stop();
  await up?.stop();
});

describe("stream buffer budget", () => {
  test("non-reading clients are dropped least recently read first; the budget holds; a reading client is unaffected", async () => {
    const streams = edge.gw.streams;
    // 8 clients × 8 MiB = 64 MiB asked for, against a 24 MiB budget (the kernel takes a few MiB of
    // each answer into its socket buffers; the rest stays with the edge).
    for (let i = 0; i < 8; i++) readers.push(await nonReader(edge.url(), 8 * 1024));
    await waitFor(() => streams.evictions >= 3, { what: "evictions", timeout: 30_000 });
    assert.ok(streams.bufferedBytes <= 24 * MiB, `${streams.bufferedBytes} bytes held`);
    // The dropped clients' connections were closed by the edge, before their answer was whole: a
    // paused socket sees that once it reads again.
    const seen = readers.map((r) => {
      const state = { bytes: 0, closed: false };
      r.socket.on("data", (d: Buffer) => {
        state.bytes += d.length;
      });
      void r.closed.then(() => {
        state.closed = true;
      });
      r.socket.resume();
      return state;
    });
    const closedEarly = await waitFor(
      () => {
        const early = seen.filter((s) => s.closed && s.bytes < 8 * MiB).length;
        return early >= 3 ? early : undefined;
      },
      { what: "dropped connections", timeout: 15_000 },
    );
    assert.ok(closedEarly >= 3);
    // A client that reads gets its result whole while the flood holds its share.
    const client = new Client({ name: "reader", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(edge.url())));
    try {
      const r = (await client.callTool({ name: "large_text", arguments: { kib: 4096 } })) as {
        content: { text: string }[];
      };
      assert.ok(r.content[0]?.text === largeText(4096));
    } finally {
      await client.close();
    }
    assert.ok(streams.bufferedBytes <= 24 * MiB);
    // The metric and the log line.
    const metrics = await (await fetch(`${edge.gw.adminUrl}/metrics`)).text();
    const count = Number(/^mcp_edge_stream_buffer_evictions_total (\d+)/m.exec(metrics)?.[1]);
    assert.ok(
      count >= 3,
      metrics
        .split("\n")
        .filter((l) => l.includes("stream_buffer"))
        .join("\n"),
    );
    assert.match(metrics, /^mcp_edge_stream_buffer_bytes \d+/m);
    const lines = edge.logs().filter((l) => l.includes("stream buffer budget spent"));
    assert.ok(lines.length >= 3);
    const line = JSON.parse(lines[0] as string) as { bytes: number; scope: string; session: string };
    assert.ok(line.scope === "instance" || line.scope === "tenant", line.scope);
    assert.ok(line.bytes > 0);
  });

  test("one tenant's flood takes its own share only: another tenant's unread stream is kept", async () => {
    const key = async (tenant: string) => {
      const r = await fetch(`${tenants.gw.adminUrl}/api/keys`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ name: `${tenant}-ci`, server: "s", tenant }),
      });
      assert.equal(r.status, 201);
      return { authorization: `Bearer ${((await r.json()) as { key: string }).key}` };
    };
    const acme = await key("acme");
    const globex = await key("globex");
    const streams = tenants.gw.streams;
    // globex's client asks first (its stream is the least recently read of all), then stops reading.
    const quiet = await nonReader(tenants.url(), 8 * 1024, globex);
    readers.push(quiet);
    await waitFor(() => streams.bufferedBytes > 0, { what: "globex's buffer" });
    // acme floods: 6 × 8 MiB against its share of 0.2 × 96 MiB.
    for (let i = 0; i < 6; i++) readers.push(await nonReader(tenants.url(), 8 * 1024, acme));
    await waitFor(() => streams.evictions >= 2, { what: "evictions", timeout: 30_000 });
    const drops = tenants
      .logs()
      .filter((l) => l.includes("stream buffer budget spent"))
      .map((l) => JSON.parse(l) as { tenant: string; scope: string });
    assert.ok(drops.length >= 2);
    for (const d of drops) assert.deepEqual([d.tenant, d.scope], ["acme", "tenant"]);
    // globex's answer is still whole: it reads now and gets every byte of it.
    let got = 0;
    quiet.socket.on("data", (d: Buffer) => {
      got += d.length;
    });
    quiet.socket.resume();
    await waitFor(() => got >= 8 * MiB, { what: "globex's whole answer", timeout: 15_000 });
  });
});
