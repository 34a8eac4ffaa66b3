/**
 * `maxResponseBytes` on every body shape a server can send (RFC 9112 §6.3): chunked in one chunk,
 * in many small ones, dripped slowly, close-delimited, with a declared length over the cap, with a
 * declared length smaller than what is sent, compressed. Real servers on 127.0.0.1, the real
 * Egress. Each consumer must see the body fail with EDGE_EGRESS_RESPONSE_TOO_LARGE past the cap
 * and never receive more than the cap.
 */
import assert from "node:assert/strict";
import { createServer, type Server, type ServerResponse } from "node:http";
import {
  type AddressInfo,
  createServer as createTcpServer,
  type Server as TcpServer,
  type Socket,
} from "node:net";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import { Egress } from "../../src/egress/index.ts";
import { GatewayError } from "../../src/errors/errors.ts";

const CAP = 5 * 1024;
const TEN_KB = 10 * 1024;
const GZIPPED = gzipSync(Buffer.from(Array.from({ length: 4000 }, (_, i) => i.toString(36)).join(",")), {
  level: 0,
});

let http: Server;
let raw: TcpServer;
let httpPort = 0;
let rawPort = 0;
const rawSockets = new Set<Socket>();
let egress: Egress;

function drip(res: ServerResponse, count: number, size: number): void {
  let i = 0;
  const t = setInterval(() => {
    if (res.destroyed || i++ === count) {
      clearInterval(t);
      if (!res.destroyed) res.end();
      return;
    }
    res.write(Buffer.alloc(size, 0x61));
  }, 5);
}

before(async () => {
  http = createServer((req, res) => {
    const p = req.url ?? "/";
    if (p === "/redirect") {
      res.writeHead(302, { location: "/one-chunk" });
      return void res.end();
    }
    if (p === "/declared") {
      res.writeHead(200, { "content-length": String(TEN_KB) });
      return void res.end(Buffer.alloc(TEN_KB, 0x61));
    }
    if (p === "/small-declared") {
      res.writeHead(200, { "content-length": "2000" });
      return void res.end(Buffer.alloc(2000, 0x61));
    }
    if (p === "/gzip") {
      res.writeHead(200, { "content-encoding": "gzip", "content-type": "text/plain" });
      return void res.end(GZIPPED);
    }
    res.writeHead(200, { "content-type": "application/json" }); // no length: chunked
    if (p === "/one-chunk") return void res.end(Buffer.alloc(TEN_KB, 0x61));
    if (p === "/at-cap") return void res.end(Buffer.alloc(CAP, 0x61));
    if (p === "/many-chunks") {
      for (let i = 0; i < 40; i++) res.write(Buffer.alloc(256, 0x61));
      return void res.end();
    }
    if (p === "/drip") return drip(res, 20, 512);
    res.end("{}");
  });
  http.listen(0, "127.0.0.1");
  await new Promise((r) => http.once("listening", r));
  httpPort = (http.address() as AddressInfo).port;

  // Shapes node:http will not send: a length smaller than the body, a close-delimited body.
  raw = createTcpServer((socket) => {
    rawSockets.add(socket);
    socket.on("close", () => rawSockets.delete(socket));
    socket.on("error", () => undefined);
    socket.once("data", (d) => {
      const path = d.toString("latin1").split(" ")[1];
      const body = Buffer.alloc(TEN_KB, 0x62);
      if (path === "/short-length") {
        socket.end(Buffer.concat([Buffer.from("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"), body]));
      } else {
        socket.end(Buffer.concat([Buffer.from("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"), body]));
      }
    });
  });
  raw.listen(0, "127.0.0.1");
  await new Promise((r) => raw.once("listening", r));
  rawPort = (raw.address() as AddressInfo).port;

  // Config trust: the loopback origin is the operator's own (as for an upstream).
  egress = new Egress({ connectTimeout: 2000, maxResponseBytes: CAP });
});

after(async () => {
  await egress.destroy();
  http.closeAllConnections();
  for (const s of rawSockets) s.destroy();
  await Promise.all([new Promise((r) => http.close(r)), new Promise((r) => raw.close(r))]);
});

/** Reads the whole body; returns the bytes seen and the error that ended it, if any. */
async function consume(
  url: string,
  maxResponseBytes?: number,
): Promise<{ seen: number; body: Buffer; err?: unknown }> {
  const res = await egress.request(url, {
    method: "GET",
    headers: {},
    ...(maxResponseBytes !== undefined ? { maxResponseBytes } : {}),
  });
  const chunks: Buffer[] = [];
  let seen = 0;
  try {
    for await (const c of res.body) {
      seen += c.length;
      chunks.push(c);
    }
  } catch (err) {
    return { seen, body: Buffer.concat(chunks), err };
  }
  return { seen, body: Buffer.concat(chunks) };
}

function assertTooLarge(r: { seen: number; err?: unknown }, cap = CAP): void {
  assert.ok(r.err instanceof GatewayError, `the body failed with a GatewayError, not ${String(r.err)}`);
  assert.equal(r.err.code, "EDGE_EGRESS_RESPONSE_TOO_LARGE");
  assert.ok(r.seen <= cap, `the consumer got ${r.seen} bytes, over the ${cap}-byte cap`);
}

describe("maxResponseBytes holds for every body shape", () => {
  test("chunked, one chunk over the cap (sent with the headers)", async () => {
    assertTooLarge(await consume(`http://127.0.0.1:${httpPort}/one-chunk`));
  });

  test("chunked, many small chunks summing over the cap", async () => {
    assertTooLarge(await consume(`http://127.0.0.1:${httpPort}/many-chunks`));
  });

  test("chunked, a slow drip over the cap", async () => {
    assertTooLarge(await consume(`http://127.0.0.1:${httpPort}/drip`));
  });

  test("chunked, exactly the cap: passes whole", async () => {
    const r = await consume(`http://127.0.0.1:${httpPort}/at-cap`);
    assert.equal(r.err, undefined);
    assert.equal(r.seen, CAP);
  });

  test("a per-request cap overrides the Egress default", async () => {
    assertTooLarge(await consume(`http://127.0.0.1:${httpPort}/at-cap`, 1024), 1024);
    const r = await consume(`http://127.0.0.1:${httpPort}/one-chunk`, 64 * 1024);
    assert.equal(r.err, undefined);
    assert.equal(r.seen, TEN_KB);
  });

  test("chunked over the cap after a redirect", async () => {
    assertTooLarge(await consume(`http://127.0.0.1:${httpPort}/redirect`));
  });

  test("close-delimited (no length, not chunked) over the cap", async () => {
    assertTooLarge(await consume(`http://127.0.0.1:${rawPort}/close-delimited`));
  });

  test("a declared Content-Length over the cap is refused before the body is read", async () => {
    await assert.rejects(
      egress.request(`http://127.0.0.1:${httpPort}/declared`, { method: "GET", headers: {} }),
      (e: GatewayError) => e instanceof GatewayError && e.code === "EDGE_EGRESS_RESPONSE_TOO_LARGE",
    );
  });

  test("a declared Content-Length smaller than what is sent: only the declared bytes", async () => {
    const r = await consume(`http://127.0.0.1:${rawPort}/short-length`);
    assert.equal(r.err, undefined);
    assert.equal(r.seen, 100);
  });

  test("compressed: the egress does not decode; the cap counts the bytes on the wire", async () => {
    assert.ok(GZIPPED.length > CAP, "the fixture is over the cap compressed");
    assertTooLarge(await consume(`http://127.0.0.1:${httpPort}/gzip`));
    const r = await consume(`http://127.0.0.1:${httpPort}/gzip`, 64 * 1024);
    assert.equal(r.err, undefined);
    assert.deepEqual(r.body, GZIPPED, "handed on as sent, still gzip");
  });

  test("a body destroyed unread by its caller, or failed by the cap unread, never crashes the process", async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.prependListener("uncaughtException", onUncaught);
    try {
      // The whole body has arrived; the caller refuses it without reading (as a size check does).
      const a = await egress.request(`http://127.0.0.1:${httpPort}/small-declared`, {
        method: "GET",
        headers: {},
      });
      await new Promise((r) => setTimeout(r, 20));
      a.body.destroy();
      // The cap fails a body nobody reads yet; a later read still sees the coded error.
      const b = await egress.request(`http://127.0.0.1:${httpPort}/one-chunk`, {
        method: "GET",
        headers: {},
      });
      await new Promise((r) => setTimeout(r, 50));
      await assert.rejects(
        (async () => {
          for await (const _ of b.body) void _;
        })(),
        (e: GatewayError) => e instanceof GatewayError && e.code === "EDGE_EGRESS_RESPONSE_TOO_LARGE",
      );
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      process.off("uncaughtException", onUncaught);
    }
    assert.deepEqual(uncaught, []);
  });
});
