/**
 * Distributed mode under test (issue 6): N real edge processes sharing Redis and PostgreSQL,
 * behind a round-robin balancer with no affinity, in front of two instances of a real MCP server.
 *
 *   const up = await startUpstreams(["a", "b"]);
 *   const cluster = await startCluster({ edges: 3, redisUrl, keyPrefix, pgSchema, upstreams: up });
 *   const { key } = await cluster.createKey("ci");
 *   ... SDK clients on cluster.mcpUrl (the balancer) with `Authorization: Bearer <key>` ...
 *   await cluster.stop(); await stopAll(up);
 *
 * Pieces:
 * - The upstream fixture (this file run as a program: `node test/helpers/cluster.ts --upstream
 *   --instance a`): an SDK v1 McpServer behind StreamableHTTPServerTransport in session mode. Every
 *   tool result names the instance that served it, the upstream session it belongs to and the
 *   number of calls that session has served (`n`), and a session id the instance does not hold is
 *   refused with 404 (counted: `GET /stats`), so "every call reached the upstream instance holding
 *   its session" is read off the results and the counters, not inferred.
 * - `Balancer`: a node:http reverse proxy on 127.0.0.1, round robin over the edges with no affinity
 *   at all (consecutive requests of one session go to different edges). Request bodies are buffered
 *   (as nginx does by default) so that a connection refused before the edge saw the request is
 *   retried on the next edge (passive health check: that edge is skipped for a moment); responses,
 *   SSE included, are streamed through as they come. An edge can be drained: `remove(i)`, or
 *   `watchReadiness()`, which polls each edge's admin /readyz: an answer other than 200 takes the edge
 *   out at once, three probes without an answer too (a load balancer's readiness probe). Every request is logged (method,
 *   session, edge, status) and every answer carries `x-balancer-backend: <edge index>`.
 * - `startPersistentRedis`: a private redis-server with an append-only file (`appendfsync always`)
 *   in a temp dir, which can be SIGKILLed and restarted on the same port with its data, as a
 *   production Redis with persistence comes back.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request as httpRequest,
  type Server,
  type ServerResponse,
} from "node:http";
import {
  type AddressInfo,
  connect as netConnect,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { Client as PgClient } from "pg";
import { z } from "zod";
import { type EdgeConfigDoc, freePort, type SpawnedEdge, tempDir, withTestDefaults } from "./edge.ts";
import { POSTGRES_URL } from "./postgres.ts";
import { NODE_BIN, REPO_ROOT, spawnFixture, type SpawnedFixture } from "./spawn.ts";

export const ADMIN_TOKEN = "cluster-admin-token-0123456789abcdef-0123456789";
export const ROUTE = "/mcp";
export const SERVER = "conf";
export const TENANT = "acme";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `probe` until it returns something other than undefined (errors count as undefined). */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  boundMs = 10_000,
  everyMs = 25,
): Promise<T> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what} after ${boundMs} ms`);
    await sleep(everyMs);
  }
}

// ---- the upstream MCP server (child process) ------------------------------------------------------

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

async function runUpstream(instance: string, port: number): Promise<void> {
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
export async function startUpstreams(names: string[] = ["a", "b"]): Promise<Upstream[]> {
  const self = fileURLToPath(import.meta.url);
  const settled = await Promise.allSettled(
    names.map((name) => spawnFixture(self, ["--upstream", "--instance", name], { timeoutMs: 30_000 })),
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

// ---- a private Redis with persistence --------------------------------------------------------------

export interface PersistentRedis {
  url: string;
  port: number;
  /** SIGKILL: gone mid-traffic, no shutdown save (the append-only file has every write). */
  kill(): Promise<void>;
  /** Starts again on the same port and data dir; resolves once it answers PING. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

async function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(port, "127.0.0.1");
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.on("error", () => done(false));
    s.on("connect", () => s.write("PING\r\n"));
    s.on("data", (d) => done(d.toString().startsWith("+PONG")));
  });
}

/**
 * A redis-server of one test, persistent as in production: `appendonly yes`, `appendfsync always`,
 * its files in a temp dir. A SIGKILL loses nothing that was acknowledged.
 */
export async function startPersistentRedis(): Promise<PersistentRedis> {
  const port = await freePort();
  const dir = tempDir("mcp-edge-redis-");
  let child: ChildProcess | undefined;
  const start = async () => {
    const c = spawn(
      "redis-server",
      [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        dir,
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--daemonize",
        "no",
      ],
      { stdio: "ignore" },
    );
    child = c;
    for (let i = 0; i < 200; i++) {
      if (c.exitCode !== null) throw new Error(`redis-server on port ${port} exited with ${c.exitCode}`);
      if (await redisPing(port)) return;
      await sleep(25);
    }
    throw new Error(`redis-server on port ${port} did not answer within 5 s`);
  };
  const kill = async () => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    const exited = once(c, "exit");
    c.kill("SIGKILL");
    await exited;
  };
  await start();
  return { url: `redis://127.0.0.1:${port}`, port, kill, restart: start, stop: kill };
}

// ---- a TCP proxy that can cut a dependency off ---------------------------------------------------

/**
 * A TCP pass-through on 127.0.0.1 in front of a service (PostgreSQL, say). `cut()` closes the
 * listener and destroys every open connection, so the edges see their connections drop and new
 * ones refused, as when the database host goes away; `restore()` listens again on the same port.
 */
export class TcpProxy {
  readonly #target: { host: string; port: number };
  readonly #sockets = new Set<Socket>();
  #server: NetServer | undefined;
  port = 0;

  private constructor(target: { host: string; port: number }) {
    this.#target = target;
  }

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const p = new TcpProxy(target);
    await p.#listen(0);
    return p;
  }

  async #listen(port: number): Promise<void> {
    const server = createNetServer((client) => {
      const upstream = netConnect(this.#target.port, this.#target.host);
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on("close", () => this.#sockets.delete(s));
        s.on("error", () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    server.listen(port, "127.0.0.1");
    await once(server, "listening");
    this.#server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  /** The dependency is gone: open connections drop, new ones are refused. */
  async cut(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const s of this.#sockets) s.destroy();
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }

  async restore(): Promise<void> {
    if (!this.#server) await this.#listen(this.port);
  }

  close(): Promise<void> {
    return this.cut();
  }
}

// ---- the balancer ----------------------------------------------------------------------------------

interface Backend {
  index: number;
  url: URL;
  adminUrl: string | undefined;
  /** Taken out by `remove`. */
  out: boolean;
  /** Taken out by the readiness probe. */
  unready: boolean;
  probeFailures: number;
  /** Passive health: skipped until then after a refused connection. */
  downUntil: number;
  served: number;
}

export interface BalancerLogEntry {
  method: string;
  session: string | undefined;
  lastEventId: string | undefined;
  backend: number;
  status: number;
  /** ms from the request to its response head (0 when it had none). */
  headMs: number;
  /** The RPC method(s) of a POST body. */
  rpc: string | undefined;
  /** Why the request failed (status 0): the error code, and whether the edge had the whole request. */
  error?: string;
}

interface Active {
  backend: number;
  method: string;
  session: string | undefined;
  rpc: string | undefined;
  res: ServerResponse;
  upstream: ReturnType<typeof httpRequest> | undefined;
}

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
  "content-length",
]);

function forwardable(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

function rpcOf(body: Buffer): string | undefined {
  try {
    const m = JSON.parse(body.toString("utf8")) as { method?: string } | { method?: string }[];
    return Array.isArray(m) ? m.map((x) => x.method).join(",") : m.method;
  } catch {
    return undefined;
  }
}

/** Round robin, no affinity; passive health on refused connections; drain via remove or /readyz. */
export class Balancer {
  readonly #server: Server;
  readonly #backends: Backend[] = [];
  readonly #active = new Set<Active>();
  readonly #sockets = new Set<Socket>();
  #next = 0;
  #watch: NodeJS.Timeout | undefined;
  /** Every request, in the order their answers started (or failed). */
  readonly log: BalancerLogEntry[] = [];
  /** Requests answered 502 because no edge took them (every edge refused or was out). */
  noBackend = 0;
  /** Connections refused by an edge, retried on another one. */
  retriedRefused = 0;
  /** Answers cut by the edge after their head (the client sees its stream end abruptly). */
  readonly cutByEdge: {
    backend: number;
    session: string | undefined;
    rpc: string | undefined;
    error: string;
  }[] = [];
  url = "";
  port = 0;

  private constructor() {
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(502).end(String(err));
        else res.destroy();
      });
    });
    this.#server.on("connection", (s: Socket) => {
      this.#sockets.add(s);
      s.on("close", () => this.#sockets.delete(s));
    });
  }

  static async start(): Promise<Balancer> {
    const b = new Balancer();
    b.#server.listen(0, "127.0.0.1");
    await once(b.#server, "listening");
    b.port = (b.#server.address() as AddressInfo).port;
    b.url = `http://127.0.0.1:${b.port}`;
    return b;
  }

  add(baseUrl: string, adminUrl?: string): number {
    const index = this.#backends.length;
    this.#backends.push({
      index,
      url: new URL(baseUrl),
      adminUrl,
      out: false,
      unready: false,
      probeFailures: 0,
      downUntil: 0,
      served: 0,
    });
    return index;
  }

  /** Takes an edge out of rotation (drain): no new request goes there. */
  remove(i: number): void {
    const b = this.#backends[i];
    if (b) b.out = true;
  }

  restore(i: number): void {
    const b = this.#backends[i];
    if (b) b.out = false;
  }

  isOut(i: number): boolean {
    const b = this.#backends[i];
    return b === undefined || b.out || b.unready;
  }

  /** Requests in flight now (open SSE streams included): their edge, method, session, RPC method. */
  inFlight(): { backend: number; method: string; session: string | undefined; rpc: string | undefined }[] {
    return [...this.#active].map(({ backend, method, session, rpc }) => ({ backend, method, session, rpc }));
  }

  /** Requests each edge answered (response head received). */
  served(): number[] {
    return this.#backends.map((b) => b.served);
  }

  /**
   * Readiness probe: every `intervalMs`, GET <admin>/readyz of each edge; anything but 200 (503
   * "draining", a refused connection, a timeout) takes it out, 200 puts it back.
   */
  watchReadiness(intervalMs = 100): void {
    if (this.#watch) return;
    const probe = async (b: Backend) => {
      if (!b.adminUrl) return;
      try {
        const res = await fetch(`${b.adminUrl}/readyz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        // An answer counts at once: 503 "draining" takes the edge out, 200 puts it back.
        b.unready = res.status !== 200;
        b.probeFailures = 0;
      } catch {
        // No answer (refused, timed out): out after 3 in a row, as a slow probe on a loaded
        // machine is not a dead edge (a load balancer's unhealthy threshold).
        if (++b.probeFailures >= 3) b.unready = true;
      }
    };
    let running = false;
    this.#watch = setInterval(() => {
      if (running) return;
      running = true;
      void Promise.allSettled(this.#backends.map(probe)).finally(() => {
        running = false;
      });
    }, intervalMs);
  }

  /**
   * Cuts client connections of requests in flight that match (their streams stop mid-way, as when
   * a client's network drops); the edge sees its client go away. Returns how many were cut.
   */
  cut(
    match: (a: {
      backend: number;
      method: string;
      session: string | undefined;
      rpc: string | undefined;
    }) => boolean,
  ): number {
    let n = 0;
    for (const a of this.#active) {
      if (!match(a)) continue;
      n++;
      this.#active.delete(a);
      a.res.socket?.destroy();
      a.upstream?.destroy();
    }
    return n;
  }

  /**
   * The next edge in turn: in rotation (not removed, ready) and not refusing connections lately;
   * else one that refused lately; else, when the probe has every edge out, any edge not removed
   * (a load balancer's panic mode: better a try than a certain 502).
   */
  #pick(tried: Set<number>): Backend | undefined {
    const now = Date.now();
    const n = this.#backends.length;
    const passes: ((b: Backend) => boolean)[] = [
      (b) => !b.unready && b.downUntil <= now,
      (b) => !b.unready,
      () => true,
    ];
    for (const ok of passes) {
      for (let k = 0; k < n; k++) {
        const b = this.#backends[(this.#next + k) % n] as Backend;
        if (b.out || tried.has(b.index) || !ok(b)) continue;
        this.#next = (b.index + 1) % n;
        return b;
      }
    }
    return undefined;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const session = req.headers["mcp-session-id"] as string | undefined;
    const lastEventId = req.headers["last-event-id"] as string | undefined;
    const rpc = req.method === "POST" ? rpcOf(body) : undefined;
    const method = req.method ?? "GET";
    const tried = new Set<number>();
    const started = Date.now();
    for (;;) {
      const b = this.#pick(tried);
      if (!b) {
        this.noBackend++;
        this.log.push({ method, session, lastEventId, backend: -1, status: 502, headMs: 0, rpc });
        res.writeHead(502, { "content-type": "text/plain" }).end("no edge available");
        return;
      }
      tried.add(b.index);
      const outcome = await this.#forward(b, req, res, body, { method, session, rpc });
      if (typeof outcome === "object") {
        this.log.push({
          method,
          session,
          lastEventId,
          backend: b.index,
          status: 0,
          headMs: 0,
          rpc,
          error: outcome.failed,
        });
        return;
      }
      if (outcome === "refused") {
        // Nothing reached the edge: the next one gets the request (passive health check).
        this.retriedRefused++;
        b.downUntil = Date.now() + 1000;
        continue;
      }
      this.log.push({
        method,
        session,
        lastEventId,
        backend: b.index,
        status: outcome,
        headMs: Date.now() - started,
        rpc,
      });
      return;
    }
  }

  /** Resolves with the status once the response head was written, "refused", or why it failed. */
  #forward(
    b: Backend,
    req: IncomingMessage,
    res: ServerResponse,
    body: Buffer,
    info: { method: string; session: string | undefined; rpc: string | undefined },
  ): Promise<number | "refused" | { failed: string }> {
    return new Promise((resolve) => {
      const headers = forwardable(req.headers);
      if (body.length > 0 || info.method === "POST") headers["content-length"] = String(body.length);
      const active: Active = { backend: b.index, ...info, res, upstream: undefined };
      let answered = false;
      const up = httpRequest(
        {
          host: b.url.hostname,
          port: b.url.port,
          method: info.method,
          path: req.url,
          headers,
          agent: false,
        },
        (upRes) => {
          answered = true;
          b.served++;
          const h = forwardable(upRes.headers);
          h["x-balancer-backend"] = String(b.index);
          res.writeHead(upRes.statusCode ?? 502, h);
          res.flushHeaders();
          resolve(upRes.statusCode ?? 502);
          upRes.on("data", (d: Buffer) => {
            if (!res.destroyed) res.write(d);
          });
          upRes.on("end", () => {
            this.#active.delete(active);
            res.end();
          });
          const cutByEdge = (why: string) => {
            if (!this.#active.delete(active)) return; // already ended or cut by the test
            this.cutByEdge.push({ backend: b.index, session: info.session, rpc: info.rpc, error: why });
            res.destroy();
          };
          upRes.on("error", (err: NodeJS.ErrnoException) => cutByEdge(err.code ?? err.message));
          upRes.on("aborted", () => cutByEdge("aborted"));
        },
      );
      active.upstream = up;
      this.#active.add(active);
      // The client went away: the edge must see it (its stream is then resumable elsewhere).
      res.on("close", () => {
        this.#active.delete(active);
        if (!up.destroyed) up.destroy();
      });
      up.on("error", (err: NodeJS.ErrnoException) => {
        this.#active.delete(active);
        if (answered) {
          res.destroy();
          return;
        }
        if (err.code === "ECONNREFUSED") {
          resolve("refused");
          return;
        }
        res.destroy();
        const sent = up.writableFinished ? "request sent" : "request not fully sent";
        resolve({ failed: `${err.code ?? err.message} (${sent}, reused socket: ${up.reusedSocket})` });
      });
      up.end(body);
    });
  }

  async close(): Promise<void> {
    if (this.#watch) clearInterval(this.#watch);
    for (const a of this.#active) a.upstream?.destroy();
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }
}

// ---- the cluster -----------------------------------------------------------------------------------

export interface ClusterOptions {
  edges?: number;
  redisUrl: string;
  keyPrefix: string;
  /** PostgreSQL schema shared by every edge (created and migrated by the edges). */
  pgSchema: string;
  upstreams: Upstream[];
  /** Merged into the server's config (e.g. `limits`). */
  server?: Record<string, unknown>;
  /** Merged into `store.redis`. */
  redis?: Record<string, unknown>;
  /** The PostgreSQL URL the edges use (default: the test database), e.g. through a TcpProxy. */
  postgresUrl?: string;
  /** Merged into the top level of the config (e.g. `streams`, `drain`). */
  extra?: Record<string, unknown>;
}

export interface Cluster {
  edges: SpawnedEdge[];
  lb: Balancer;
  /** The MCP URL through the balancer. */
  mcpUrl: string;
  /** The MCP URL of one edge, bypassing the balancer. */
  edgeUrl(i: number): string;
  admin(i: number, method: string, p: string, body?: unknown): Promise<{ status: number; json: any }>;
  createKey(name: string, extra?: Record<string, unknown>): Promise<{ key: string; id: string }>;
  /** SIGTERM every edge still running (SIGKILL after `graceMs`), close the balancer. */
  stop(graceMs?: number): Promise<void>;
}

export function edgeConfig(o: ClusterOptions, dir: string, publicUrl: string): EdgeConfigDoc {
  return {
    listen: { host: "127.0.0.1", port: 0 },
    // The balancer's address is the one clients use: Host checks and metadata follow it.
    publicUrl,
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    store: {
      sqlite: path.join(dir, "edge.db"),
      redis: { url: o.redisUrl, keyPrefix: o.keyPrefix, instances: o.edges ?? 3, ...o.redis },
      postgres: { url: o.postgresUrl ?? POSTGRES_URL, schema: o.pgSchema, poolSize: 4 },
    },
    // No readiness grace unless a test asks for it (the rolling-restart test keeps the product's
    // default): it would add 5 s to every teardown.
    drain: { timeout: "5s", delay: "0s" },
    ...o.extra,
    servers: {
      [SERVER]: {
        route: ROUTE,
        upstream: { urls: o.upstreams.map((u) => u.url) },
        auth: ["apiKey"],
        ...o.server,
      },
    },
  };
}

/**
 * `mcp-edge serve` as a child process, as spawnEdge (test/helpers/edge.ts) does, except that a child
 * that does not come up in time is killed (not left running to hold the test process open), and
 * the wait is longer: three edges compiling their TypeScript at once on a loaded 2-core machine.
 */
async function spawnClusterEdge(doc: EdgeConfigDoc, dir: string, timeoutMs = 60_000): Promise<SpawnedEdge> {
  const file = path.join(dir, "edge.yaml");
  writeFileSync(file, JSON.stringify({ ...withTestDefaults(doc, dir), log: { level: "info" } }));
  const child = spawn(NODE_BIN, [path.join(REPO_ROOT, "src/main.ts"), "serve", "-c", file], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stderr?.on("data", (d: Buffer) => {
    output += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  };
  try {
    const ready = await new Promise<{ url: string; admin: string }>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`edge did not start in ${timeoutMs} ms:\n${output}`)),
        timeoutMs,
      );
      createInterface({ input: child.stdout! }).on("line", (line) => {
        output += `${line}\n`;
        try {
          const rec = JSON.parse(line) as { msg?: string; url?: string; admin?: string };
          if (rec.msg === "mcp-edge listening" && rec.url && rec.admin) {
            clearTimeout(timer);
            resolve({ url: rec.url, admin: rec.admin });
          }
        } catch {
          // not a log line
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`edge exited (${code}) before listening:\n${output}`));
      });
    });
    return {
      child,
      baseUrl: ready.url,
      adminUrl: ready.admin,
      output: () => output,
      exited,
      async stop() {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
        const code = await exited;
        clearTimeout(timer);
        return code;
      },
      kill,
    };
  } catch (err) {
    await kill();
    throw err;
  }
}

async function stopEdge(e: SpawnedEdge, graceMs: number): Promise<void> {
  const c = e.child;
  if (c.exitCode !== null || c.signalCode !== null) return;
  c.kill("SIGTERM");
  const timer = setTimeout(() => c.kill("SIGKILL"), graceMs);
  await e.exited;
  clearTimeout(timer);
}

/** Starts the balancer, then the edges (in parallel), and puts the edges behind the balancer. */
export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  const lb = await Balancer.start();
  const n = o.edges ?? 3;
  const settled = await Promise.allSettled(
    Array.from({ length: n }, () => {
      const dir = tempDir("mcp-edge-cluster-");
      return spawnClusterEdge(edgeConfig(o, dir, lb.url), dir);
    }),
  );
  const edges = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) {
    await Promise.allSettled(edges.map((e) => e.kill()));
    await lb.close();
    throw (failed as PromiseRejectedResult).reason;
  }
  for (const e of edges) lb.add(e.baseUrl, e.adminUrl);

  const admin = async (i: number, method: string, p: string, body?: unknown) => {
    const res = await fetch(`${(edges[i] as SpawnedEdge).adminUrl}${p}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, json: json as any };
  };
  return {
    edges,
    lb,
    mcpUrl: `${lb.url}${ROUTE}`,
    edgeUrl: (i) => `${(edges[i] as SpawnedEdge).baseUrl}${ROUTE}`,
    admin,
    async createKey(name, extra = {}) {
      const r = await admin(0, "POST", "/api/keys", { name, server: SERVER, tenant: TENANT, ...extra });
      assert.equal(r.status, 201, `POST /api/keys: ${JSON.stringify(r.json)}`);
      return { key: r.json.key as string, id: r.json.id as string };
    },
    async stop(graceMs = 8000) {
      await Promise.allSettled(edges.map((e) => stopEdge(e, graceMs)));
      await lb.close();
    },
  };
}

// ---- clients -------------------------------------------------------------------------------------

export interface SdkClient {
  client: Client;
  transport: StreamableHTTPClientTransport;
  /** Errors the transport reported (stream disconnects, failed reconnects...). */
  errors: Error[];
}

/** An SDK v1 client with an API key in the Authorization header; quick stream reconnection. */
export async function connectSdk(url: string, key: string, name = "cluster-test"): Promise<SdkClient> {
  const client = new Client({ name, version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { authorization: `Bearer ${key}` } },
    reconnectionOptions: {
      initialReconnectionDelay: 50,
      maxReconnectionDelay: 500,
      reconnectionDelayGrowFactor: 1.5,
      maxRetries: 10,
    },
  });
  const errors: Error[] = [];
  await client.connect(transport);
  // After connect: the Client installs its own onerror; chain it.
  const prev = transport.onerror;
  transport.onerror = (e) => {
    errors.push(e);
    prev?.(e);
  };
  return { client, transport, errors };
}

/** The `Where` of a tool result. */
export function whereOf(r: unknown): Where {
  const content = (r as { content?: { type: string; text?: string }[] }).content ?? [];
  const text = content[0]?.text;
  assert.ok(text, `a text result, got ${JSON.stringify(r)}`);
  return JSON.parse(text) as Where;
}

export const JSON_SSE = { "content-type": "application/json", accept: "application/json, text/event-stream" };

/** A raw session-era session (initialize + initialized) through `url`; returns its id. */
export async function rawSession(url: string, key: string): Promise<string> {
  const init = await fetch(url, {
    method: "POST",
    headers: { ...JSON_SSE, authorization: `Bearer ${key}` },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "1" } },
    }),
  });
  const text = await init.text();
  assert.equal(init.status, 200, text);
  const sid = init.headers.get("mcp-session-id");
  assert.ok(sid, "initialize answers with Mcp-Session-Id");
  const ack = await fetch(url, {
    method: "POST",
    headers: sessionHeaders(key, sid),
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  });
  await ack.arrayBuffer();
  assert.equal(ack.status, 202);
  return sid;
}

export function sessionHeaders(key: string, sid: string): Record<string, string> {
  return {
    ...JSON_SSE,
    authorization: `Bearer ${key}`,
    "mcp-session-id": sid,
    "mcp-protocol-version": "2025-11-25",
  };
}

/** A raw `tools/call where` POST on a session (no SDK client): the answer as fetch gives it. */
export function postWhere(url: string, key: string, sid: string, id: number): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: sessionHeaders(key, sid),
    body: JSON.stringify({
      jsonrpc: "2.0",
      id,
      method: "tools/call",
      params: { name: "where", arguments: {} },
    }),
  });
}

export interface SseEvent {
  id?: string;
  data: string;
  retry?: number;
}

/** Minimal SSE reader over a fetch body: one {id, data, retry} per event. */
export async function* sse(body: AsyncIterable<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of body) {
    buf += decoder.decode(chunk, { stream: true }).replace(/\r\n/g, "\n");
    let idx = buf.indexOf("\n\n");
    while (idx >= 0) {
      const block = buf.slice(0, idx);
      buf = buf.slice(idx + 2);
      let id: string | undefined;
      let retry: number | undefined;
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("id:")) id = line.slice(3).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        else if (line.startsWith("retry:")) retry = Number(line.slice(6).trim());
      }
      if (data.length > 0 || id !== undefined || retry !== undefined)
        yield {
          ...(id !== undefined ? { id } : {}),
          ...(retry !== undefined ? { retry } : {}),
          data: data.join("\n"),
        };
      idx = buf.indexOf("\n\n");
    }
  }
}

/** Rows of the audit table (tools/call records of `tool`), by outcome kind. */
export async function auditCalls(
  schema: string,
  tool: string,
): Promise<{ total: number; results: number; byDecision: Record<string, number> }> {
  const pg = new PgClient({ connectionString: POSTGRES_URL });
  await pg.connect();
  try {
    const { rows } = await pg.query<{ decision: string; kind: string | null; n: string }>(
      `SELECT record::jsonb->>'decision' AS decision, record::jsonb->'outcome'->>'kind' AS kind, count(*) AS n
         FROM "${schema}".audit WHERE type = 'call' AND target = $1 GROUP BY 1, 2`,
      [tool],
    );
    let total = 0;
    let results = 0;
    const byDecision: Record<string, number> = {};
    for (const r of rows) {
      const n = Number(r.n);
      total += n;
      if (r.kind === "result") results += n;
      const k = `${r.decision}/${r.kind}`;
      byDecision[k] = (byDecision[k] ?? 0) + n;
    }
    return { total, results, byDecision };
  } finally {
    await pg.end();
  }
}

// ---- program entry: the upstream fixture -------------------------------------------------------

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      upstream: { type: "boolean", default: false },
      instance: { type: "string", default: "a" },
      port: { type: "string", default: "0" },
    },
  });
  if (!values.upstream) {
    process.stderr.write("usage: node test/helpers/cluster.ts --upstream [--instance NAME] [--port N]\n");
    process.exit(2);
  }
  runUpstream(values.instance, Number(values.port)).catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
}
