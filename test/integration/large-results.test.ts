/**
 * Results of any size reach the client: an SDK v1 server's multi-MiB tool results arrive whole
 * through the edge over every upstream transport (Streamable HTTP with SSE and with JSON answers,
 * legacy HTTP+SSE, stdio), and a result over `limits.maxResultBytes` is a coded JSON-RPC error
 * (EDGE_RESULT_TOO_LARGE) with an audit record that says so — never a silent loss, never a crash.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { AuditRecord } from "../../src/audit/record.ts";
import { largeText } from "../fixtures/conformance-server.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { startCluster } from "../helpers/cluster/edges.ts";
import { nonReader } from "../helpers/non-reader.ts";
import { postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropTestPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { NODE_BIN, REPO_ROOT, type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const ADMIN_TOKEN = "large-results-admin-token-0123456789abcdef";
const FIXTURE = `${REPO_ROOT}/test/fixtures/conformance-server.ts`;
const ROUTES = ["sse", "json", "legacy", "stdio"] as const;

let upSse: SpawnedFixture;
let upJson: SpawnedFixture;
let upLegacy: SpawnedFixture;
let roomy: InProcessEdge;
let tight: InProcessEdge;
const clients: Client[] = [];

function servers() {
  return {
    sse: { route: "/sse/mcp", upstream: { urls: [upSse.url] }, auth: ["none"] },
    json: { route: "/json/mcp", upstream: { urls: [upJson.url] }, auth: ["none"] },
    legacy: { route: "/legacy/mcp", upstream: { sse: upLegacy.url }, auth: ["none"] },
    stdio: {
      route: "/stdio/mcp",
      upstream: { stdio: { command: NODE_BIN, args: [FIXTURE, "--stdio"] } },
      auth: ["none"],
    },
  };
}

before(async () => {
  [upSse, upJson, upLegacy] = await Promise.all([
    spawnFixture("test/fixtures/conformance-server.ts"),
    spawnFixture("test/fixtures/conformance-server.ts", ["--json"]),
    spawnFixture("test/fixtures/conformance-server.ts", ["--sse"]),
  ]);
  roomy = await startEdge({ servers: servers() });
  tight = await startEdge({
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    limits: { maxBodyBytes: "1MiB", maxResultBytes: "2MiB" },
    servers: servers(),
  });
});

after(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  await roomy?.stop();
  await tight?.stop();
  await Promise.all([upSse?.stop(), upJson?.stop(), upLegacy?.stop()]);
});

async function connect(edge: InProcessEdge, route: string): Promise<Client> {
  const client = new Client({ name: "large-results-test", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(edge.url(route))));
  clients.push(client);
  return client;
}

async function large(client: Client, kib: number): Promise<string> {
  const r = (await client.callTool({ name: "large_text", arguments: { kib } }, undefined, {
    timeout: 60_000,
  })) as { content: { text: string }[] };
  return r.content[0]?.text ?? "";
}

describe("large results", () => {
  for (const route of ROUTES) {
    test(`${route} upstream: 1 MiB and 6 MiB results arrive whole (session era)`, async () => {
      const client = await connect(roomy, route);
      for (const kib of [1024, 6 * 1024]) {
        const text = await large(client, kib);
        assert.equal(text.length, kib * 1024);
        assert.ok(text === largeText(kib), `the ${kib} KiB result is the upstream's, byte for byte`);
      }
    });
  }

  for (const route of ROUTES) {
    test(`${route} upstream: a result over limits.maxResultBytes is EDGE_RESULT_TOO_LARGE, audited; the session goes on`, async () => {
      const client = await connect(tight, route);
      let failure: unknown;
      try {
        await large(client, 3 * 1024);
      } catch (err) {
        failure = err;
      }
      assert.ok(failure, "the call fails (it never hangs or succeeds empty)");
      // JSON answers: the edge's 502 with the JSON-RPC error body; SSE: the JSON-RPC error event.
      assert.match(String((failure as Error).message), /over the 2097152-byte maximum/);
      const data = (failure as { data?: { code?: string } }).data;
      if (route !== "json") assert.equal(data?.code, "EDGE_RESULT_TOO_LARGE");
      else assert.match(String((failure as Error).message), /EDGE_RESULT_TOO_LARGE/);
      // Below the maximum, the same session (or, legacy SSE, its re-initialized upstream) answers.
      assert.equal((await large(client, 512)).length, 512 * 1024);

      await tight.gw.audit.flush();
      const res = await fetch(`${tight.gw.adminUrl}/api/audit?limit=1000`, {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      const records = ((await res.json()) as { records: AuditRecord[] }).records.filter(
        (r) => r.server === route && r.type === "call" && r.target === "large_text",
      );
      const refused = records.filter((r) => r.code === "EDGE_RESULT_TOO_LARGE");
      assert.equal(refused.length, 1, JSON.stringify(records));
      assert.notDeepEqual(refused[0]?.outcome, { kind: "result", isError: false });
    });
  }

  test("a client that stops reading mid-result and reads again later gets the whole answer", async () => {
    const paused = await nonReader(roomy.url("sse"), 6 * 1024);
    try {
      // The edge has handed the answer to the socket meanwhile; the client has read nothing.
      await new Promise((r) => setTimeout(r, 1500));
      let raw = "";
      paused.socket.setEncoding("latin1");
      paused.socket.on("data", (d: string) => {
        raw += d;
      });
      paused.socket.resume();
      await waitFor(() => raw.endsWith("0\r\n\r\n"), {
        what: "the end of the chunked answer",
        timeout: 20_000,
      });
      const body = raw.slice(raw.indexOf("\r\n\r\n") + 4).replace(/\r\n[0-9a-f]+\r\n/g, "");
      const data = body
        .split("\n")
        .filter((l) => l.startsWith("data: "))
        .map((l) => JSON.parse(l.slice(6)) as { id?: number; result?: { content: { text: string }[] } });
      const answer = data.find((m) => m.id === 2);
      assert.ok(answer?.result?.content[0]?.text === largeText(6 * 1024));
    } finally {
      paused.socket.destroy();
    }
  });
});

describe("large results, distributed mode (events mirrored to Redis)", async () => {
  const ready =
    (await redisReady("large results, distributed mode")) && (await postgresSkipReason()) === undefined;
  const prefix = testPrefix();
  const stops: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await dropTestPrefix(prefix);
  });
  const pg = ready ? postgresFixture() : undefined;

  test("a 6 MiB result arrives whole through a distributed edge", { skip: !ready }, async () => {
    const fx = await spawnFixture("test/fixtures/conformance-server.ts");
    stops.push(() => fx.stop());
    const upstream = {
      name: "a",
      url: fx.url,
      fixture: fx,
      stats: async () => ({}) as never,
      stop: () => fx.stop(),
    };
    const cluster = await startCluster({
      edges: 1,
      redisUrl: REDIS_URL,
      keyPrefix: prefix,
      pgSchema: (pg as ReturnType<typeof postgresFixture>).schema(),
      upstreams: [upstream],
    });
    stops.push(() => cluster.stop());
    const { key } = await cluster.createKey("large");
    const client = new Client({ name: "large-distributed", version: "1.0.0" });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(cluster.edgeUrl(0)), {
        requestInit: { headers: { authorization: `Bearer ${key}` } },
      }),
    );
    stops.push(() => client.close());
    assert.ok((await large(client, 6 * 1024)) === largeText(6 * 1024));
  });
});
