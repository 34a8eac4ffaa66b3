/**
 * Drain on SIGTERM: a spawned edge receives SIGTERM while a slow tool
 * call is in flight and a standalone GET stream is open.
 *   (a) the call in flight completes for its client;
 *   (b) /readyz on the admin listener answers 503 "draining" during the drain;
 *   (c) a new initialize is refused: connection refused (the public listener is closed at once)
 *       or 503 EDGE_DRAINING with Retry-After — either is accepted, nothing else is;
 *   (d) the open standalone GET stream receives a `retry:` field before it closes;
 *   (e) the process exits 0, and the session record survives: an edge started again on the same
 *       port and state dir serves the same SDK client's session.
 * And a call still running at `drain.timeout`: its client gets the coded JSON-RPC error
 * EDGE_DRAINED on its stream at the timeout (not a bare end of stream), and the audit holds its
 * record, aborted by the drain, in a chain that verifies.
 */
import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import { after, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { freePort, type SpawnedEdge, spawnEdge, tempDir } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";
import { until as untilDefined } from "../helpers/wait.ts";
import type { AuditRecord } from "../../src/audit/record.ts";

const DEMO = `${REPO_ROOT}/src/demo/server.ts`;
const JSON_ACCEPT = { "content-type": "application/json", accept: "application/json, text/event-stream" };

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

function send(url: string, method: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, headers, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        text += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** A raw GET stream: collects every byte until the edge closes the connection. */
function openRawStream(port: number, sessionId: string): { received: () => string; closed: Promise<void> } {
  const socket = connect(port, "127.0.0.1");
  let data = "";
  socket.setEncoding("utf8");
  socket.on("data", (d: string) => {
    data += d;
  });
  socket.on("error", () => undefined);
  const closed = new Promise<void>((r) => socket.on("close", () => r()));
  socket.write(
    `GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n` +
      `Mcp-Session-Id: ${sessionId}\r\nMCP-Protocol-Version: 2025-11-25\r\n\r\n`,
  );
  return { received: () => data, closed };
}

const until = <T>(what: string, probe: () => Promise<T | undefined>): Promise<T> =>
  untilDefined(what, probe, 15_000, 50);

describe("drain on SIGTERM", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  test("in-flight call completes, readiness fails, no new sessions, streams get retry, session survives", async () => {
    const dir = tempDir();
    const port = await freePort();
    const doc = {
      listen: { host: "127.0.0.1", port },
      streams: { retry: "1500ms" },
      servers: {
        demo: { route: "/mcp", upstream: { stdio: { command: NODE_BIN, args: [DEMO] } }, auth: ["none"] },
      },
    };
    let edge: SpawnedEdge = await spawnEdge(doc, dir);
    cleanups.push(() => edge.kill());
    const mcpUrl = `${edge.baseUrl}/mcp`;

    // The SDK v1 client whose session must survive.
    const client = new Client({ name: "drain-test", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(new URL(mcpUrl));
    await client.connect(transport);
    cleanups.push(() => client.close());
    const sessionId = transport.sessionId;
    assert.ok(sessionId);
    const echo = await client.callTool({ name: "echo", arguments: { text: "before" } });
    assert.equal((echo.content as { text: string }[])[0]?.text, "before");

    // A second session, raw, with a standalone GET stream open.
    const init = await send(
      mcpUrl,
      "POST",
      JSON_ACCEPT,
      JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "raw", version: "1" },
        },
      }),
    );
    assert.equal(init.status, 200, init.text);
    const rawSession = String(init.headers["mcp-session-id"]);
    const ack = await send(
      mcpUrl,
      "POST",
      { ...JSON_ACCEPT, "mcp-session-id": rawSession, "mcp-protocol-version": "2025-11-25" },
      JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    );
    assert.equal(ack.status, 202);
    const stream = openRawStream(port, rawSession);

    // Ready before the drain.
    assert.equal((await send(`${edge.adminUrl}/readyz`, "GET", {})).status, 200);

    // A slow call, in flight once its first progress notification arrived.
    let progressed!: () => void;
    const inFlight = new Promise<void>((r) => {
      progressed = r;
    });
    const slow = client.callTool({ name: "slow", arguments: { steps: 12, delayMs: 250 } }, undefined, {
      onprogress: () => progressed(),
      timeout: 60_000,
    });
    await inFlight;

    edge.child.kill("SIGTERM");

    // (b) readiness fails during the drain, on the admin listener that is still open.
    const ready = await until("/readyz to answer 503", async () => {
      const r = await send(`${edge.adminUrl}/readyz`, "GET", {});
      return r.status === 503 ? r : undefined;
    });
    assert.equal((JSON.parse(ready.text) as { status: string }).status, "draining");

    // (c) no new session: refused connection, or 503 EDGE_DRAINING with Retry-After.
    const fresh = await send(
      mcpUrl,
      "POST",
      JSON_ACCEPT,
      JSON.stringify({
        jsonrpc: "2.0",
        id: 2,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "late", version: "1" },
        },
      }),
    ).catch((err: NodeJS.ErrnoException) => err);
    if (fresh instanceof Error) {
      assert.equal(fresh.code, "ECONNREFUSED", `a refused connection, not ${fresh.message}`);
    } else {
      assert.equal(fresh.status, 503, fresh.text);
      assert.ok(fresh.headers["retry-after"], "Retry-After");
      const body = JSON.parse(fresh.text) as { id: unknown; error: { data: { code: string } } };
      assert.equal(body.error.data.code, "EDGE_DRAINING");
      assert.equal(body.id, 2);
    }

    // (a) the call in flight completes for its client.
    const result = await slow;
    assert.equal(result.isError, undefined);
    assert.equal((result.content as { text: string }[])[0]?.text, "done after 12 steps");

    // (d) the standalone stream gets a retry hint, then closes.
    await stream.closed;
    assert.match(stream.received(), /^HTTP\/1\.1 200/);
    assert.match(stream.received(), /\r\n\r\n[\s\S]*^retry: 1500$/m, "a retry: field on the stream");

    // (e) a clean exit, and the session survives a start on the same port and state dir.
    assert.equal(await edge.exited, 0);
    assert.match(edge.output(), /"msg":"stopped"/);
    edge = await spawnEdge(doc, dir);
    cleanups.push(() => edge.kill());
    const again = await client.callTool({ name: "echo", arguments: { text: "after restart" } });
    assert.equal((again.content as { text: string }[])[0]?.text, "after restart");
    assert.equal(transport.sessionId, sessionId, "the client kept its session id");
    assert.equal(await edge.stop(), 0);
  });
});

describe("drain timeout", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  test("a call still running at drain.timeout gets EDGE_DRAINED on its stream and an audit record", async (t) => {
    const dir = tempDir();
    const token = "drain-admin-token-0123456789abcdef-0123456789";
    const doc = {
      admin: { listen: { host: "127.0.0.1", port: 0 }, token },
      drain: { timeout: "1s", delay: "0s" },
      servers: {
        demo: { route: "/mcp", upstream: { stdio: { command: NODE_BIN, args: [DEMO] } }, auth: ["none"] },
      },
    };
    let edge = await spawnEdge(doc, dir);
    cleanups.push(() => edge.kill());
    const client = new Client({ name: "drain-timeout", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${edge.baseUrl}/mcp`)));
    cleanups.push(() => client.close());

    // 40 steps of 250 ms: still running long after the drain timeout.
    let progressed!: () => void;
    const inFlight = new Promise<void>((r) => {
      progressed = r;
    });
    const slow = client
      .callTool({ name: "slow", arguments: { steps: 40, delayMs: 250 } }, undefined, {
        onprogress: () => progressed(),
        timeout: 60_000,
      })
      .then(
        () => undefined,
        (err: unknown) => err as { code?: number; message?: string; data?: { code?: string } },
      );
    await inFlight;
    const t0 = performance.now();
    edge.child.kill("SIGTERM");
    const err = await slow;
    const ms = performance.now() - t0;
    assert.ok(err, "the call fails rather than completing");
    assert.equal(err.code, -32000, String(err.message));
    assert.equal(err.data?.code, "EDGE_DRAINED", String(err.message));
    // At the drain timeout (1 s), not at the client's own timeout (60 s) nor the tool's end (10 s).
    assert.ok(ms < 8000, `EDGE_DRAINED after ${Math.round(ms)} ms`);
    assert.equal(await edge.exited, 0);
    assert.match(edge.output(), /drain timeout: ending calls still in flight/);
    t.diagnostic(`drain.timeout 1 s: EDGE_DRAINED reached the client ${Math.round(ms)} ms after SIGTERM`);

    // The record of the call: allowed, aborted by the drain, in a chain that verifies.
    edge = await spawnEdge(doc, dir);
    const admin = { authorization: `Bearer ${token}` };
    const page = (await (await fetch(`${edge.adminUrl}/api/audit?tool=slow`, { headers: admin })).json()) as {
      records: AuditRecord[];
    };
    assert.equal(page.records.length, 1, JSON.stringify(page.records));
    const rec = page.records[0] as AuditRecord;
    assert.equal(rec.decision, "allowed");
    assert.equal(rec.code, "EDGE_DRAINED");
    assert.deepEqual(rec.outcome, { kind: "aborted", code: "EDGE_DRAINED" });
    const verified = (await (
      await fetch(`${edge.adminUrl}/api/audit/verify`, { headers: admin })
    ).json()) as {
      ok: boolean;
    };
    assert.equal(verified.ok, true);
    assert.equal(await edge.stop(), 0);
  });
});
