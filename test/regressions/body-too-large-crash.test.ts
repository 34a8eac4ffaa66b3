/**
 * Regression: a chunked request body over `limits.maxBodyBytes` crashed the edge process.
 * gateway.ts read `req.socket` in the 413's "finish" callback, where it is already null
 * (TypeError: Cannot read properties of null (reading 'destroy'), uncaught). And readBody left a
 * `for await` loop over the request, which destroyed the socket before the 413 was written.
 * Fixed in src/gateway.ts (#onPublic takes the socket up front, lingering close) and
 * src/mcp/hygiene.ts (readBody pauses instead of destroying).
 */
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, test } from "node:test";
import { type SpawnedEdge, spawnEdge } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

let edge: SpawnedEdge | undefined;
after(async () => {
  await edge?.kill();
});

function chunkedOverCap(port: number, bytes: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let data = "";
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => {
      data += d;
    });
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(data));
    socket.on("connect", async () => {
      const write = (s: string) => new Promise<void>((r) => socket.write(s, () => r()));
      await write(
        `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\n` +
          "Accept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
      );
      const part = "x".repeat(4096);
      for (let sent = 0; sent < bytes && !socket.destroyed; sent += part.length) {
        await write(`${part.length.toString(16)}\r\n${part}\r\n`);
      }
      if (!socket.destroyed) socket.write("0\r\n\r\n");
    });
  });
}

test("a chunked body over the cap gets 413 and the process stays up", async () => {
  edge = await spawnEdge({
    limits: { maxBodyBytes: 16 * 1024 },
    servers: {
      demo: {
        route: "/mcp",
        upstream: { stdio: { command: NODE_BIN, args: [`${REPO_ROOT}/src/demo/server.ts`] } },
        auth: ["none"],
      },
    },
  });
  const port = Number(new URL(edge.baseUrl).port);
  for (let i = 0; i < 3; i++) {
    const answer = await chunkedOverCap(port, 256 * 1024);
    assert.match(answer, /^HTTP\/1\.1 413 /, `attempt ${i}: ${answer.slice(0, 80)}`);
    assert.match(answer, /"code":"EDGE_BODY_TOO_LARGE"/);
  }
  // A request answered after them: anything the 413s left behind (a rejection, a throw in a
  // callback) has had its turn to crash the process.
  const after = await fetch(`${edge.baseUrl}/mcp`, { method: "GET" });
  await after.arrayBuffer();
  assert.equal(edge.child.exitCode, null, `the edge is still running:\n${edge.output()}`);
  assert.doesNotMatch(edge.output(), /TypeError|EDGE_INTERNAL/);
  assert.equal(await edge.stop(), 0);
});
