/**
 * The upstream fleet of the cluster tests: an MCP server run as a child process (this file run as
 * a program: `node test/helpers/cluster/upstream-fleet.ts --upstream --instance a`), an SDK v1
 * McpServer behind StreamableHTTPServerTransport in session mode. Every tool result names the
 * instance that served it, the upstream session it belongs to and the number of calls that session
 * has served (`n`), and a session id the instance does not hold is refused with 404 (counted:
 * `GET /stats`), so "every call reached the upstream instance holding its session" is read off the
 * results and the counters, not inferred.
 */
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { InMemoryEventStore } from "@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { spawnFixture, type SpawnedFixture } from "../spawn.ts";

/** What a tool of the upstream fixture answers (the text of its one content item, parsed). */
export interface Where {
  instance: string;
  /** The upstream's own session id (not the edge's). */
  session: string;
  /** Calls this upstream session has served, this one included. */
  n: number;
  steps?: number;
  /** The X-MCP-Edge-Identity JWT the call arrived with (signed by the edge that forwarded it). */
  identity?: string;
}

export interface UpstreamStats {
  instance: string;
  /** Sessions initialized on this instance. */
  initialized: number;
  /** Requests naming a session this instance does not hold (answered 404). */
  unknownSession: number;
  /** Of those, DELETEs: a session ended upstream twice. */
  unknownSessionDeletes: number;
  /** The last of those: method, JSON-RPC method of a POST, and when (ms since the epoch). */
  unknownLog: { method: string; rpc: string | undefined; at: number }[];
  /** Tool calls served. */
  calls: number;
  /** Live sessions and their call counts. */
  sessions: Record<string, number>;
}

export interface Upstream {
  name: string;
  url: string;
  fixture: SpawnedFixture;
  stats(): Promise<UpstreamStats>;
  stop(): Promise<void>;
}

async function runUpstream(instance: string, port: number, resumable = false): Promise<void> {
  const sessions = new Map<string, { transport: StreamableHTTPServerTransport; state: { calls: number } }>();
  const stats = {
    initialized: 0,
    unknownSession: 0,
    unknownSessionDeletes: 0,
    calls: 0,
    unknownLog: [] as UpstreamStats["unknownLog"],
  };

  const build = (state: { calls: number }): McpServer => {
    const server = new McpServer(
      { name: `cluster-upstream:${instance}`, version: "1.0.0" },
      { capabilities: { tools: {} } },
    );
    const answer = (
      x: { sessionId?: string; requestInfo?: { headers: Record<string, string | string[] | undefined> } },
      extra: Record<string, unknown> = {},
    ) => {
      state.calls++;
      stats.calls++;
      const identity = x.requestInfo?.headers["x-mcp-edge-identity"];
      const where: Where = {
        instance,
        session: x.sessionId ?? "",
        n: state.calls,
        ...(typeof identity === "string" ? { identity } : {}),
        ...extra,
      };
      return { content: [{ type: "text" as const, text: JSON.stringify(where) }] };
    };
    server.registerTool("where", { description: "Which instance and upstream session served this" }, (x) =>
      answer(x),
    );
    server.registerTool("where_limited", { description: "`where`, under a per-tool rate limit" }, (x) =>
      answer(x),
    );
    server.registerTool(
      "steps",
      {
        description: "Sends `count` progress notifications, `delayMs` apart, then answers",
        inputSchema: {
          count: z.number().int().min(0).max(1000),
          delayMs: z.number().int().min(0).max(10_000),
        },
      },
      async ({ count, delayMs }, extra) => {
        const token = extra._meta?.progressToken;
        for (let i = 1; i <= count; i++) {
          await sleep(delayMs);
          if (token !== undefined) {
            await extra.sendNotification({
              method: "notifications/progress",
              params: { progressToken: token, progress: i, total: count, message: `step ${i}/${count}` },
            });
          }
        }
        await sleep(delayMs);
        return answer(extra, { steps: count });
      },
    );
    return server;
  };

  const readBody = async (req: IncomingMessage): Promise<string> => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString("utf8");
  };
  const rpcError = (res: ServerResponse, status: number, code: number, message: string) =>
    res
      .writeHead(status, { "content-type": "application/json" })
      .end(JSON.stringify({ jsonrpc: "2.0", error: { code, message }, id: null }));

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    if (url.pathname === "/stats" && req.method === "GET") {
      const out: UpstreamStats = {
        instance,
        ...stats,
        sessions: Object.fromEntries([...sessions].map(([id, s]) => [id, s.state.calls])),
      };
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(out));
      return;
    }
    if (url.pathname !== "/mcp") {
      res.writeHead(404).end("Not Found");
      return;
    }
    let body: unknown;
    if (req.method === "POST") {
      try {
        body = JSON.parse(await readBody(req));
      } catch {
        rpcError(res, 400, -32700, "Parse error");
        return;
      }
    }
    const sid = req.headers["mcp-session-id"];
    if (typeof sid === "string") {
      const s = sessions.get(sid);
      if (!s) {
        stats.unknownSession++;
        if (req.method === "DELETE") stats.unknownSessionDeletes++;
        const rpc = (body as { method?: string } | undefined)?.method;
        stats.unknownLog = [
          ...stats.unknownLog.slice(-19),
          { method: req.method ?? "", rpc, at: Date.now() },
        ];
        rpcError(res, 404, -32001, "Session not found");
        return;
      }
      await s.transport.handleRequest(req, res, body);
      return;
    }
    if (req.method === "POST" && isInitializeRequest(body)) {
      const state = { calls: 0 };
      const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        // Resumable (MCP transports, "Resumability and Redelivery"): SSE events carry ids and a
        // GET with Last-Event-ID replays what followed and continues the stream.
        ...(resumable ? { eventStore: new InMemoryEventStore() } : {}),
        onsessioninitialized: (id) => {
          stats.initialized++;
          sessions.set(id, { transport, state });
        },
      });
      transport.onclose = () => {
        if (transport.sessionId) sessions.delete(transport.sessionId);
      };
      await build(state).connect(transport);
      await transport.handleRequest(req, res, body);
      return;
    }
    rpcError(res, 400, -32000, "Bad Request: No valid session ID provided");
  };

  const http = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      process.stderr.write(`cluster upstream ${instance}: ${String(err)}\n`);
      if (!res.headersSent) rpcError(res, 500, -32603, "Internal server error");
      else res.destroy();
    });
  });
  http.listen(port, "127.0.0.1");
  await once(http, "listening");
  const shutdown = () => {
    http.closeAllConnections();
    http.close(() => process.exit(0));
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
  process.stdout.write(`LISTENING http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp\n`);
}

/** Starts one upstream instance per name, in parallel. */
export async function startUpstreams(
  names: string[] = ["a", "b"],
  options: { resumable?: boolean } = {},
): Promise<Upstream[]> {
  const self = fileURLToPath(import.meta.url);
  const flags = options.resumable ? ["--resumable"] : [];
  const settled = await Promise.allSettled(
    names.map((name) =>
      spawnFixture(self, ["--upstream", "--instance", name, ...flags], { timeoutMs: 30_000 }),
    ),
  );
  const started = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) {
    await Promise.allSettled(started.map((f) => f.stop()));
    throw (failed as PromiseRejectedResult).reason;
  }
  return started.map((fixture, i) => ({
    name: names[i] as string,
    url: fixture.url,
    fixture,
    async stats() {
      const res = await fetch(fixture.url.replace(/\/mcp$/, "/stats"));
      return (await res.json()) as UpstreamStats;
    },
    stop: () => fixture.stop(),
  }));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      upstream: { type: "boolean", default: false },
      instance: { type: "string", default: "a" },
      port: { type: "string", default: "0" },
      resumable: { type: "boolean", default: false },
    },
  });
  if (!values.upstream) {
    process.stderr.write(
      "usage: node test/helpers/cluster/upstream-fleet.ts --upstream [--instance NAME] [--port N]\n",
    );
    process.exit(2);
  }
  runUpstream(values.instance, Number(values.port), values.resumable).catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
}
