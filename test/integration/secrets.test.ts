/**
 * No credential anywhere it could leak (audit, metrics): API keys (valid
 * and wrong), OAuth access tokens, the upstream secret the edge holds and the admin token are used
 * for real calls, then every log line, every audit record, the /metrics page, every trace span and
 * every byte of the store files is searched for each of them.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { propagation, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";
import { freePort, type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { TestIdp } from "../helpers/idp.ts";
import { type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";

const ADMIN_TOKEN = "secrets-test-admin-token-0123456789abcdefghij";
const UPSTREAM_SECRET = "upstream-secret-value-9f8e7d6c5b4a";
const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
let idp: TestIdp;
let upstream: SpawnedFixture;
let edge: InProcessEdge;
let dir: string;
let resource: string;

before(async () => {
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  process.env.MCP_EDGE_TEST_UPSTREAM_SECRET = UPSTREAM_SECRET;
  idp = await TestIdp.start();
  upstream = await spawnFixture("test/fixtures/conformance-server.ts");
  dir = tempDir();
  const port = await freePort();
  const publicUrl = `http://127.0.0.1:${port}`;
  resource = `${publicUrl}/mcp`;
  edge = await startEdge(
    {
      listen: { host: "127.0.0.1", port },
      publicUrl,
      log: { level: "debug" },
      tracing: { enabled: true },
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      auth: { oauth: [{ issuer: idp.issuer, jwksUri: idp.jwksUri }] },
      servers: {
        s: {
          route: "/mcp",
          upstream: { urls: [upstream.url] },
          auth: ["apiKey", "oauth"],
          credentials: { headers: { "x-upstream-key": "${MCP_EDGE_TEST_UPSTREAM_SECRET}" } },
        },
      },
    },
    dir,
  );
});

after(async () => {
  await edge?.stop();
  await upstream?.stop();
  await idp?.stop();
  await provider.shutdown();
  trace.disable();
  propagation.disable();
  delete process.env.MCP_EDGE_TEST_UPSTREAM_SECRET;
});

async function session(credential: string): Promise<Client> {
  const client = new Client({ name: "secrets", version: "1.0.0" });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(resource), {
      requestInit: { headers: { authorization: `Bearer ${credential}` } },
    }),
  );
  return client;
}

test("no credential appears in logs, audit records, metrics, traces or the store", async () => {
  const { key } = await edge.gw.keys.create({ name: "ci", scopes: [] });
  const now = Math.floor(Date.now() / 1000);
  const token = await idp.mint({ sub: "alice", aud: resource, exp: now + 300 });
  const wrongKey = `mcpe_${"z".repeat(12)}_${"W".repeat(43)}`;
  const forged = await idp.mint({ sub: "mallory", aud: "http://elsewhere/mcp", exp: now + 300 });

  for (const credential of [key, token]) {
    const client = await session(credential);
    await client.listTools();
    // The upstream gets the edge's secret header: the call works end to end.
    const seen = JSON.parse(
      ((await client.callTool({ name: "echo_headers", arguments: {} })).content as { text: string }[])[0]
        ?.text ?? "{}",
    );
    assert.equal(seen["x-upstream-key"], UPSTREAM_SECRET);
    assert.equal(seen.authorization, undefined);
    await client.close();
  }
  for (const bad of [wrongKey, forged]) {
    const res = await fetch(resource, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        authorization: `Bearer ${bad}`,
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "whoami" } }),
    });
    assert.equal(res.status, 401);
    await res.text();
  }
  // What the edge holds in memory goes to disk now, so the dumps below see every record.
  await edge.gw.audit.flush();
  await edge.gw.keys.store.flush();

  const admin = async (p: string) =>
    (await fetch(`${edge.gw.adminUrl}${p}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
  const audit = await admin("/api/audit?limit=1000");
  assert.match(audit, /tools\/call/, "the calls were audited");
  const metrics = await (await fetch(`${edge.gw.adminUrl}/metrics`)).text();
  assert.match(metrics, /mcp_edge_calls_total/);
  const spans = JSON.stringify(
    exporter.getFinishedSpans().map((s) => ({ name: s.name, attributes: s.attributes, events: s.events })),
  );
  assert.ok(exporter.getFinishedSpans().length > 0, "spans were recorded");
  const logs = edge.logs().join("\n");
  const store = readdirSync(dir)
    .map((f) => readFileSync(path.join(dir, f)).toString("latin1"))
    .join("\n");

  const secrets: Record<string, string> = {
    "API key": key,
    "API key secret part": key.split("_").slice(2).join("_"),
    "wrong API key": wrongKey,
    "access token signature": token.split(".")[2] as string,
    "forged token signature": forged.split(".")[2] as string,
    "upstream secret": UPSTREAM_SECRET,
    "admin token": ADMIN_TOKEN,
  };
  const places: Record<string, string> = { logs, audit, metrics, spans, store };
  for (const [what, secret] of Object.entries(secrets)) {
    for (const [where, text] of Object.entries(places)) {
      assert.ok(!text.includes(secret), `${what} found in ${where}`);
    }
  }
});
