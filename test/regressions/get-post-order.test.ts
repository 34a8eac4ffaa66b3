/**
 * Regression: the edge reordered a client's GET (standalone stream) and its next POST. Servers send
 * server-to-client requests (sampling, elicitation) on the standalone stream when one is open and
 * drop them when none is; the GET path through the edge was slower than the POST path, so the POST
 * reached the upstream first and the sampling request was lost (conformance tools-call-sampling
 * timed out through the edge under load, never direct). POSTs of a session now wait for its GET to
 * be open upstream.
 */
import assert from "node:assert/strict";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, test } from "node:test";
import { startEdge } from "../helpers/edge.ts";
import { waitFor } from "../helpers/wait.ts";

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  // Bounded: a cleanup that cannot finish must not hold the whole run.
  for (const c of cleanups.reverse()) {
    await Promise.race([c().catch(() => undefined), new Promise((r) => setTimeout(r, 5000).unref())]);
  }
});

test(
  "a POST sent after a GET reaches the upstream after the GET stream is open",
  { timeout: 30_000 },
  async () => {
    let standalone: ServerResponse | undefined;
    let getArrived = false;
    const server = createServer((req, res) => {
      if (req.method !== "GET" && req.method !== "POST") {
        res.writeHead(405).end(); // the edge's health probes (OPTIONS)
        return;
      }
      if (req.method === "GET") {
        if (req.headers["mcp-session-id"]) getArrived = true; // the session's stream, not a probe
        // A slow stream open: the upstream registers the stream only after a while.
        // Under test: the stream opens 300 ms late.
        setTimeout(() => {
          res.writeHead(200, { "content-type": "text/event-stream" });
          res.flushHeaders();
          standalone = res;
        }, 300);
        return;
      }
      let body = "";
      req.on("data", (d: Buffer) => {
        body += d.toString();
      });
      req.on("end", () => {
        const msg = JSON.parse(body) as { id?: number; method?: string };
        if (msg.method === "initialize") {
          res.writeHead(200, { "content-type": "application/json", "mcp-session-id": "up" });
          res.end(
            JSON.stringify({
              jsonrpc: "2.0",
              id: msg.id,
              result: {
                protocolVersion: "2025-11-25",
                capabilities: {},
                serverInfo: { name: "o", version: "1" },
              },
            }),
          );
          return;
        }
        if (msg.id === undefined) {
          res.writeHead(202).end();
          return;
        }
        if (msg.method === "tools/list") {
          // The edge reads the tool list before it judges the call (the `tool-list` stage).
          res.writeHead(200, { "content-type": "application/json" });
          res.end(
            JSON.stringify({
              jsonrpc: "2.0",
              id: msg.id,
              result: { tools: [{ name: "x", inputSchema: {} }] },
            }),
          );
          return;
        }
        // Like an SDK server: the server-to-client message goes to the standalone stream if open.
        const open = standalone !== undefined;
        standalone?.write(
          `data: ${JSON.stringify({ jsonrpc: "2.0", method: "notifications/message", params: { level: "info", data: "hi" } })}\n\n`,
        );
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ jsonrpc: "2.0", id: msg.id, result: { standaloneWasOpen: open } }));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    cleanups.push(() => {
      standalone?.end();
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r(undefined)));
    });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
    const edge = await startEdge({
      servers: { s: { route: "/mcp", upstream: { urls: [url] }, auth: ["none"] } },
    });
    cleanups.push(() => edge.stop());

    const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
    const init = await fetch(edge.url(), {
      method: "POST",
      headers,
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: {} }),
    });
    await init.text();
    const sid = init.headers.get("mcp-session-id") as string;
    const h = { ...headers, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" };
    const abort = new AbortController();
    cleanups.push(async () => abort.abort());
    // The GET is sent first, not awaited (as SDK clients do), then the call.
    const get = fetch(edge.url(), {
      method: "GET",
      headers: { ...h, accept: "text/event-stream" },
      signal: abort.signal,
    });
    await waitFor(() => getArrived, { what: "the GET to reach the upstream" });
    const call = await fetch(edge.url(), {
      method: "POST",
      headers: h,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: { name: "x", arguments: {} },
      }),
    });
    const text = await call.text();
    assert.equal(call.status, 200, text);
    const answer = JSON.parse(text) as { result: { standaloneWasOpen: boolean } };
    assert.equal(answer.result.standaloneWasOpen, true, "the upstream saw the GET before the POST");
    const stream = await get;
    assert.equal(stream.status, 200);
  },
);
