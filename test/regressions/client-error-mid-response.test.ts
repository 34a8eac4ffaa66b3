/**
 * Regression: bytes that do not parse as HTTP, sent on a connection whose answer was already under
 * way (an SSE stream), were answered by writing `HTTP/1.1 400 ...` into the middle of that stream's
 * body: the clientError handler wrote to the socket unconditionally. Node's own default handler
 * only does so when no response has started. Fixed in src/gateway.ts (#listen tracks responses per
 * connection; clientError closes the connection instead when one has started).
 */
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, test } from "node:test";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

let edge: InProcessEdge | undefined;
after(async () => {
  await edge?.stop();
});

test("garbage after a request whose SSE answer is under way closes the connection, injects nothing", async () => {
  edge = await startEdge({
    servers: {
      demo: {
        route: "/mcp",
        upstream: { stdio: { command: NODE_BIN, args: [`${REPO_ROOT}/src/demo/server.ts`] } },
        auth: ["none"],
      },
    },
  });
  const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
  const init = await fetch(edge.url(), {
    method: "POST",
    headers,
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "r", version: "1" } },
    }),
  });
  const sessionId = init.headers.get("mcp-session-id") ?? "";
  await init.text();
  const session = { ...headers, "mcp-session-id": sessionId, "mcp-protocol-version": "2025-11-25" };
  const ack = await fetch(edge.url(), {
    method: "POST",
    headers: session,
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  });
  assert.equal(ack.status, 202);

  const port = edge.gw.port;
  const body = JSON.stringify({
    jsonrpc: "2.0",
    id: 2,
    method: "tools/call",
    params: { name: "slow", arguments: { steps: 20, delayMs: 100 }, _meta: { progressToken: "p" } },
  });
  const socket = connect(port, "127.0.0.1");
  let data = "";
  socket.setEncoding("latin1");
  socket.on("error", () => undefined);
  const closed = new Promise<void>((r) => socket.on("close", () => r()));
  const progressed = new Promise<void>((r) =>
    socket.on("data", (d: string) => {
      data += d;
      if (data.includes("notifications/progress")) r();
    }),
  );
  socket.write(
    `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\n` +
      `Accept: application/json, text/event-stream\r\nMcp-Session-Id: ${sessionId}\r\n` +
      `MCP-Protocol-Version: 2025-11-25\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  await progressed;
  socket.write("NOT HTTP AT ALL\r\n\r\n");
  await closed;
  assert.match(data, /^HTTP\/1\.1 200 /);
  assert.equal(data.match(/HTTP\/1\.1 /g)?.length, 1, `no second status line inside the stream:\n${data}`);
});
