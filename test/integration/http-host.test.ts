/**
 * Request framing at the listener, over raw sockets (spellings an HTTP client would normalize): a
 * request with more than one Host field is refused with 400 whatever the order and spelling of the
 * repeats (RFC 9112 §3.2), as are Content-Length with Transfer-Encoding (RFC 9112 §6.1) and
 * obs-fold continuation lines (RFC 9112 §5.2). The upstream is a real stdio server that records
 * every message it reads: a refused request must not reach it.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { rawExchange } from "../helpers/raw-http.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

const FIXTURE = path.join(REPO_ROOT, "test/fixtures/line-splitting-server.ts");
const dir = tempDir();
const RECORD = path.join(dir, "upstream.jsonl");
let edge: InProcessEdge;
let port: number;
let host: string;

before(async () => {
  edge = await startEdge(
    {
      servers: {
        rec: {
          route: "/mcp",
          upstream: { stdio: { command: NODE_BIN, args: [FIXTURE, RECORD] } },
          auth: ["none"],
        },
      },
    },
    dir,
  );
  port = Number(new URL(edge.gw.baseUrl).port);
  host = `127.0.0.1:${port}`;
});

after(async () => {
  await edge?.stop();
});

function upstreamMessages(): { method?: string }[] {
  if (!existsSync(RECORD)) return [];
  return readFileSync(RECORD, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => (JSON.parse(l) as { message: { method?: string } }).message);
}

let nextId = 1;
function initialize(headerLines: string[]): string {
  const body = JSON.stringify({
    jsonrpc: "2.0",
    id: nextId++,
    method: "initialize",
    params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "1" } },
  });
  return (
    "POST /mcp HTTP/1.1\r\n" +
    headerLines.map((l) => `${l}\r\n`).join("") +
    "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n" +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}

describe("Host is sent once", () => {
  test("control: one Host → 200, and the upstream read the initialize", async () => {
    const before = upstreamMessages().length;
    const a = await rawExchange(port, initialize([`Host: ${host}`]));
    assert.equal(a.status, 200, a.raw.slice(0, 300));
    assert.equal(upstreamMessages().length, before + 1);
  });

  const cases: { name: string; lines: () => string[] }[] = [
    { name: "the served host twice", lines: () => [`Host: ${host}`, `Host: ${host}`] },
    { name: "served first, foreign second", lines: () => [`Host: ${host}`, "Host: evil.example"] },
    { name: "foreign first, served second", lines: () => [`Host: evil.example`, `Host: ${host}`] },
    { name: "names in other cases", lines: () => [`host: ${host}`, `HOST: ${host}`] },
    { name: "an empty second Host", lines: () => [`Host: ${host}`, "Host:"] },
    {
      name: "repeats apart, with other fields between",
      lines: () => [`Host: ${host}`, "X-Between: 1", `hOsT: localhost:${port}`],
    },
    { name: "three of them", lines: () => [`Host: ${host}`, `Host: ${host}`, `Host: ${host}`] },
  ];
  for (const c of cases) {
    test(`${c.name} → 400 EDGE_BAD_HEADER, nothing reaches the upstream`, async () => {
      const before = upstreamMessages().length;
      const a = await rawExchange(port, initialize(c.lines()));
      assert.equal(a.status, 400, a.raw.slice(0, 300));
      const body = JSON.parse(a.body) as { id: unknown; error: { data: { code: string } } };
      assert.equal(body.error.data.code, "EDGE_BAD_HEADER");
      assert.equal(body.id, null);
      assert.equal(upstreamMessages().length, before);
    });
  }
});

describe("other framing ambiguities stay refused", () => {
  test("Content-Length with Transfer-Encoding → 400, nothing reaches the upstream", async () => {
    const before = upstreamMessages().length;
    const req = initialize([`Host: ${host}`]).replace(
      "Connection: close\r\n",
      "Connection: close\r\nTransfer-Encoding: chunked\r\n",
    );
    const a = await rawExchange(port, req);
    assert.equal(a.status, 400, a.raw.slice(0, 300));
    assert.equal(upstreamMessages().length, before);
  });

  test("obs-fold (a header continued on the next line) → 400, nothing reaches the upstream", async () => {
    const before = upstreamMessages().length;
    const a = await rawExchange(port, initialize([`Host: ${host}`, "X-Folded: a", " b"]));
    assert.equal(a.status, 400, a.raw.slice(0, 300));
    assert.equal(upstreamMessages().length, before);
  });

  test("a folded Host → 400, nothing reaches the upstream", async () => {
    const before = upstreamMessages().length;
    const a = await rawExchange(port, initialize(["Host: evil.example", ` ${host}`]));
    assert.equal(a.status, 400, a.raw.slice(0, 300));
    assert.equal(upstreamMessages().length, before);
  });
});
