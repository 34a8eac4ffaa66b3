/**
 * A real SDK v1 MCP server (McpServer over StreamableHTTPServerTransport, one per session) that
 * records what reached it: every POST body byte for byte, and every tool it ran. Tools may be added
 * at run time (`addTool`): each live session's McpServer sends `notifications/tools/list_changed`
 * on its GET stream, as the SDK does for tools registered after connect. For tests of what the edge
 * let through (hostile input, tool names); `postAs` sends such tests' bodies through the edge.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";

export interface RecordingUpstream {
  url: string;
  /** Raw bodies of every POST received, in order. */
  bodies: string[];
  /** Names of the tools run, in order. */
  ran: string[];
  /** Registers a tool on every live session and on sessions to come. */
  addTool(name: string): void;
  /** POSTs whose JSON-RPC method is `method` (unparseable bodies are skipped). */
  posts(method: string): Record<string, unknown>[];
  stop(): Promise<void>;
}

async function readRaw(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** Starts the server on 127.0.0.1, port 0, with the tools `names` (each echoes its `text`). */
export async function startRecordingUpstream(names: string[]): Promise<RecordingUpstream> {
  const bodies: string[] = [];
  const ran: string[] = [];
  const tools = [...names];
  const servers = new Set<McpServer>();
  const transports = new Map<string, StreamableHTTPServerTransport>();

  const register = (mcp: McpServer, name: string) =>
    mcp.registerTool(
      name,
      { description: `The tool ${name}`, inputSchema: { text: z.string().optional() } },
      async (args) => {
        ran.push(name);
        return { content: [{ type: "text" as const, text: `${name}: ${args.text ?? ""}` }] };
      },
    );

  const server = createServer((req, res) => {
    void (async () => {
      const raw = req.method === "POST" ? await readRaw(req) : "";
      if (req.method === "POST") bodies.push(raw);
      const body = raw ? (JSON.parse(raw) as unknown) : undefined;
      const sid = req.headers["mcp-session-id"];
      let transport = typeof sid === "string" ? transports.get(sid) : undefined;
      if (!transport && isInitializeRequest(body)) {
        const t = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => void transports.set(id, t),
        });
        const mcp = new McpServer({ name: "recording-upstream", version: "1.0.0" });
        for (const name of tools) register(mcp, name);
        servers.add(mcp);
        t.onclose = () => servers.delete(mcp);
        await mcp.connect(t);
        transport = t;
      }
      if (!transport) {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(
          JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32001, message: "Session not found" } }),
        );
        return;
      }
      await transport.handleRequest(req, res, body);
    })().catch(() => {
      if (!res.headersSent) res.writeHead(400).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    bodies,
    ran,
    addTool(name) {
      tools.push(name);
      for (const mcp of servers) register(mcp, name);
    },
    posts(method) {
      const out: Record<string, unknown>[] = [];
      for (const b of bodies) {
        try {
          const m = JSON.parse(b) as Record<string, unknown>;
          if (m["method"] === method) out.push(m);
        } catch {
          // not JSON
        }
      }
      return out;
    },
    async stop() {
      for (const t of transports.values()) await t.close().catch(() => undefined);
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** An edge's answer to one POST, with its request id (to find the audit record) and session id. */
export interface PostAnswer {
  status: number;
  requestId: string;
  sessionId: string | null;
  text: string;
}

/** POSTs `body` (its bytes as given) to `url` with the API key `key` and extra headers. */
export async function postAs(
  url: string,
  key: string | undefined,
  body: string | Buffer,
  headers: Record<string, string> = {},
): Promise<PostAnswer> {
  const res = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...headers,
    },
    body: typeof body === "string" ? body : new Uint8Array(body),
    signal: AbortSignal.timeout(15_000),
  });
  return {
    status: res.status,
    requestId: res.headers.get("x-mcp-edge-request-id") ?? "",
    sessionId: res.headers.get("mcp-session-id"),
    text: await res.text(),
  };
}
