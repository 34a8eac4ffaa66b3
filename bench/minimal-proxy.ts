/**
 * The Node limit, for comparison: a minimal pass-through reverse proxy (node:http server + undici
 * keep-alive pool), with no MCP awareness at all. The request body is buffered (small JSON-RPC
 * bodies: cheaper than streaming them); the answer is streamed, so SSE
 * answers pass as they come.
 *
 *   node bench/minimal-proxy.ts --map /json/mcp=http://127.0.0.1:4001/mcp [--map ...] [--port N]
 *
 * Binds 127.0.0.1; prints `LISTENING http://127.0.0.1:<port>` once ready. SIGTERM stops it.
 */
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { Agent, request } from "undici";

/** Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the proxy sets itself. */
const HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  "content-length",
]);

function strip(headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>) {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !HOP.has(k)) out[k] = v;
  return out;
}

const { values } = parseArgs({
  options: { map: { type: "string", multiple: true, default: [] }, port: { type: "string", default: "0" } },
});
const routes = new Map<string, string>();
for (const m of values.map) {
  const i = m.indexOf("=");
  if (i < 1) throw new Error(`--map wants /path=http://upstream, got ${m}`);
  routes.set(m.slice(0, i), m.slice(i + 1));
}

const agent = new Agent({ connections: 256, pipelining: 1, keepAliveTimeout: 30_000 });

const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  const target = routes.get((req.url ?? "/").split("?")[0] as string);
  if (!target) {
    req.resume();
    res.writeHead(404).end();
    return;
  }
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const body = chunks.length ? Buffer.concat(chunks) : null;
    const headers = strip(req.headers);
    if (body) headers["content-length"] = String(body.length);
    request(target, {
      method: req.method as "GET" | "POST" | "DELETE",
      headers,
      body,
      dispatcher: agent,
    })
      .then((up) => {
        res.writeHead(up.statusCode, strip(up.headers));
        up.body.on("data", (c: Buffer) => res.write(c));
        up.body.on("end", () => res.end());
        up.body.on("error", () => res.destroy());
        res.on("close", () => {
          if (!res.writableFinished) up.body.destroy();
        });
      })
      .catch(() => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
  });
});

server.listen(Number(values.port), "127.0.0.1", () => {
  process.stdout.write(`LISTENING http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
const stop = () => {
  server.closeAllConnections();
  server.close(() => void agent.close().finally(() => process.exit(0)));
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
