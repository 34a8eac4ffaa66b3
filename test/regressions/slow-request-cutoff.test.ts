/**
 * Regression: `limits.headersTimeout` / `limits.requestTimeout` were only enforced every 30 s.
 * Node checks both every `connectionsCheckingInterval` (default 30 000 ms), which the listener
 * left at its default, so a slowloris client held a connection for up to 30 s whatever the
 * configured limit. Fixed in src/gateway.ts (#listen sets connectionsCheckingInterval from the
 * limits). The bound below separates "at the limit" from "at Node's 30 s sweep"; it is not a
 * speed measurement.
 */
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, test } from "node:test";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

const BOUND_MS = 12_000;
let edge: InProcessEdge;
before(async () => {
  edge = await startEdge({
    limits: { headersTimeout: "1s", requestTimeout: "2s" },
    servers: {
      demo: {
        route: "/mcp",
        upstream: { stdio: { command: NODE_BIN, args: [`${REPO_ROOT}/src/demo/server.ts`] } },
        auth: ["none"],
      },
    },
  });
});
after(async () => {
  await edge.stop();
});

function hold(text: string): Promise<{ data: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect(edge.gw.port, "127.0.0.1");
    let data = "";
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => {
      data += d;
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNREFUSED") reject(err);
    });
    const timer = setTimeout(() => socket.destroy(), BOUND_MS * 3);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ data, ms: Date.now() - started });
    });
    socket.write(text);
  });
}

test("slow headers are cut off at headersTimeout with 408", async () => {
  const r = await hold(`POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${edge.gw.port}\r\nX-Slow: a`);
  assert.ok(r.ms < BOUND_MS, `closed after ${r.ms} ms`);
  assert.match(r.data, /^HTTP\/1\.1 408 /);
  assert.match(r.data, /"code":"EDGE_REQUEST_TIMEOUT"/);
});

test("a slow body is cut off at requestTimeout, and it is not logged as an internal error", async () => {
  const r = await hold(
    `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${edge.gw.port}\r\nContent-Type: application/json\r\n` +
      'Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{"jsonrpc":',
  );
  assert.ok(r.ms < BOUND_MS, `closed after ${r.ms} ms`);
  assert.match(r.data, /^HTTP\/1\.1 408 /);
  await new Promise((res) => setTimeout(res, 100)); // under test: no EDGE_INTERNAL line comes after the cut
  assert.equal(
    edge.logs().filter((l) => l.includes("EDGE_INTERNAL")).length,
    0,
    "the cut-off body is EDGE_CLIENT_CLOSED, not EDGE_INTERNAL",
  );
});
