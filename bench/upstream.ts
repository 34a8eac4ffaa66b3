/**
 * MCP upstreams for the benchmarks, with one tool: `echo { text }`.
 *
 *   node bench/upstream.ts --mode json|sse|stateless|trivial-json|trivial-sse|trivial-stateless [--port N]
 *
 * The official SDK servers (a realistic upstream):
 * - `json`: SDK v1 (`@modelcontextprotocol/sdk`) McpServer + StreamableHTTPServerTransport with
 *   stateful sessions (one server and transport per session), answers as JSON bodies
 *   (`enableJsonResponse: true`).
 * - `sse`: the same, answers as SSE streams (one `message` event, then the stream ends).
 * - `stateless`: SDK v2 (`@modelcontextprotocol/server`) `createMcpHandler` for protocol
 *   2026-07-28 only (`legacy: "reject"`): no sessions, one McpServer per request (the SDK's
 *   design), served from node:http through a small web Request/Response bridge.
 *
 * The trivial upstream (`trivial-*`): a hand-written node:http server doing the least a correct MCP
 * server does — parse the body, answer `initialize` with a fresh session id, 202 for notifications,
 * `tools/call echo` with its text — so that a proxy's own cost is most of what a path adds:
 * - `trivial-json`: session era, JSON answers; `GET` opens a standalone SSE stream that stays open
 *   (the memory benchmark holds thousands); `DELETE` ends the session.
 * - `trivial-sse`: the same with each answer as a one-event SSE stream.
 * - `trivial-stateless`: 2026-07-28, no session, JSON answers.
 *
 * Binds 127.0.0.1; prints `LISTENING http://127.0.0.1:<port>/mcp` once ready. SIGTERM stops it.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { McpServer as V1McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { createMcpHandler, McpServer as V2McpServer } from "@modelcontextprotocol/server";
import { z } from "zod";

type Mode = "json" | "sse" | "stateless" | "trivial-json" | "trivial-sse" | "trivial-stateless";
const MODES: readonly Mode[] = [
  "json",
  "sse",
  "stateless",
  "trivial-json",
  "trivial-sse",
  "trivial-stateless",
];
type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => Promise<void>;

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function rpcError(res: ServerResponse, status: number, message: string): void {
  if (res.headersSent) return void res.end();
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify({ jsonrpc: "2.0", error: { code: -32000, message }, id: null }));
}

// ---------------------------------------------------------------- session era (SDK v1)

function v1Server(): V1McpServer {
  const server = new V1McpServer({ name: "bench-upstream", version: "1.0.0" });
  server.registerTool(
    "echo",
    { description: "Returns the given text unchanged.", inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: "text", text }] }),
  );
  return server;
}

function sessionHandler(enableJsonResponse: boolean): { handle: Handler; close(): Promise<void> } {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const handle: Handler = async (req, res, body) => {
    const sid = req.headers["mcp-session-id"];
    const parsed: unknown = body ? JSON.parse(body) : undefined;
    if (typeof sid === "string") {
      const t = transports.get(sid);
      if (!t) return rpcError(res, 404, "Session not found");
      return t.handleRequest(req, res, parsed);
    }
    if (req.method !== "POST" || !isInitializeRequest(parsed)) {
      return rpcError(res, 400, "Bad Request: no session id");
    }
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse,
      onsessioninitialized: (id) => {
        transports.set(id, transport);
      },
    });
    transport.onclose = () => {
      if (transport.sessionId) transports.delete(transport.sessionId);
    };
    await v1Server().connect(transport);
    await transport.handleRequest(req, res, parsed);
  };
  return {
    handle,
    async close() {
      await Promise.allSettled([...transports.values()].map((t) => t.close()));
    },
  };
}

// ---------------------------------------------------------------- stateless era (SDK v2)

function v2Server(): V2McpServer {
  const server = new V2McpServer({ name: "bench-upstream", version: "2.0.0" });
  server.registerTool(
    "echo",
    { description: "Returns the given text unchanged.", inputSchema: z.object({ text: z.string() }) },
    async ({ text }) => ({ content: [{ type: "text" as const, text }] }),
  );
  return server;
}

function statelessHandler(): { handle: Handler; close(): Promise<void> } {
  const mcp = createMcpHandler(() => v2Server(), { legacy: "reject", onerror: () => {} });
  const handle: Handler = async (req, res, body) => {
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined) continue;
      if (Array.isArray(value)) for (const v of value) headers.append(name, v);
      else headers.set(name, value);
    }
    const method = req.method ?? "GET";
    const request = new Request(`http://${req.headers.host ?? "127.0.0.1"}${req.url ?? "/"}`, {
      method,
      headers,
      ...(method === "POST" ? { body } : {}),
    });
    const response = await mcp.fetch(request);
    const out: Record<string, string> = {};
    response.headers.forEach((v, k) => {
      out[k] = v;
    });
    res.writeHead(response.status, out);
    if (!response.body) return void res.end();
    // Small answers: the whole body at once (a 2026-07-28 JSON answer, or a short SSE stream).
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) res.write(chunk);
    res.end();
  };
  return { handle, close: () => mcp.close() };
}

// ---------------------------------------------------------------- trivial (hand-written)

const TRIVIAL_TOOLS = {
  tools: [
    {
      name: "echo",
      description: "Returns the given text unchanged.",
      inputSchema: { type: "object", properties: { text: { type: "string" } }, required: ["text"] },
    },
  ],
};

function trivialHandler(kind: "json" | "sse" | "stateless"): { handle: Handler; close(): Promise<void> } {
  const sessions = new Set<string>();
  const streams = new Set<ServerResponse>();
  const answer = (res: ServerResponse, message: unknown, extra: Record<string, string> = {}) => {
    const text = JSON.stringify(message);
    if (kind === "sse") {
      const body = `event: message\ndata: ${text}\n\n`;
      res.writeHead(200, {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        "content-length": Buffer.byteLength(body),
        ...extra,
      });
      res.end(body);
    } else {
      res.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(text),
        ...extra,
      });
      res.end(text);
    }
  };
  const handle: Handler = async (req, res, body) => {
    const sid = req.headers["mcp-session-id"];
    if (kind !== "stateless" && req.method !== "POST") {
      if (typeof sid !== "string" || !sessions.has(sid)) return rpcError(res, 404, "Session not found");
      if (req.method === "DELETE") {
        sessions.delete(sid);
        res.writeHead(200, { "content-length": "0" }).end();
        return;
      }
      if (req.method === "GET") {
        // A standalone stream: open until the client (or the session) goes.
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        res.flushHeaders();
        streams.add(res);
        res.on("close", () => streams.delete(res));
        return;
      }
      res.writeHead(405, { allow: "GET, POST, DELETE" }).end();
      return;
    }
    if (req.method !== "POST") {
      res.writeHead(405, { allow: "POST" }).end();
      return;
    }
    let msg: { id?: unknown; method?: string; params?: Record<string, unknown> };
    try {
      msg = JSON.parse(body) as typeof msg;
    } catch {
      return rpcError(res, 400, "Parse error");
    }
    if (msg.id === undefined) {
      res.writeHead(202, { "content-length": "0" }).end();
      return;
    }
    const reply = (result: unknown, extra?: Record<string, string>) =>
      answer(res, { jsonrpc: "2.0", id: msg.id, result }, extra);
    if (kind !== "stateless") {
      if (msg.method === "initialize") {
        const id = randomUUID();
        sessions.add(id);
        const version = (msg.params?.protocolVersion as string | undefined) ?? "2025-11-25";
        return reply(
          {
            protocolVersion: version,
            capabilities: { tools: {} },
            serverInfo: { name: "bench-trivial", version: "1.0.0" },
          },
          { "mcp-session-id": id },
        );
      }
      if (typeof sid !== "string" || !sessions.has(sid)) return rpcError(res, 404, "Session not found");
    }
    switch (msg.method) {
      case "tools/call": {
        const args = (msg.params?.arguments ?? {}) as { text?: unknown };
        return reply({ content: [{ type: "text", text: String(args.text ?? "") }] });
      }
      case "tools/list":
        return reply(TRIVIAL_TOOLS);
      case "ping":
        return reply({});
      case "server/discover":
        return reply({
          supportedVersions: ["2026-07-28"],
          capabilities: { tools: {} },
          serverInfo: { name: "bench-trivial", version: "1.0.0" },
        });
      default:
        return answer(res, {
          jsonrpc: "2.0",
          id: msg.id,
          error: { code: -32601, message: `Method not found: ${msg.method}` },
        });
    }
  };
  return {
    handle,
    async close() {
      for (const s of streams) s.end();
    },
  };
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { mode: { type: "string", default: "json" }, port: { type: "string", default: "0" } },
  });
  const mode = values.mode as Mode;
  if (!MODES.includes(mode)) throw new Error(`unknown --mode ${mode}`);
  const h =
    mode === "trivial-json"
      ? trivialHandler("json")
      : mode === "trivial-sse"
        ? trivialHandler("sse")
        : mode === "trivial-stateless"
          ? trivialHandler("stateless")
          : mode === "stateless"
            ? statelessHandler()
            : sessionHandler(mode === "json");
  const http = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    if ((req.url ?? "/").split("?")[0] !== "/mcp") {
      req.resume();
      res.writeHead(404).end();
      return;
    }
    readBody(req)
      .then((body) => h.handle(req, res, body))
      .catch((err: unknown) => {
        process.stderr.write(`upstream(${mode}): ${(err as Error).stack ?? String(err)}\n`);
        rpcError(res, 500, "Internal error");
      });
  });
  await new Promise<void>((resolve) => http.listen(Number(values.port), "127.0.0.1", resolve));
  const stop = () => {
    void h.close().finally(() => {
      http.closeAllConnections();
      http.close(() => process.exit(0));
    });
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  process.stdout.write(`LISTENING http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
