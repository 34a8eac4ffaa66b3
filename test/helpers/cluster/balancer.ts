/**
 * The balancer of the cluster tests: a node:http reverse proxy on 127.0.0.1, round robin over the
 * edges with no affinity at all (consecutive requests of one session go to different edges).
 * Request bodies are buffered (as nginx does by default) so that a connection refused before the
 * edge saw the request is retried on the next edge (passive health check: that edge is skipped
 * for a moment); responses, SSE included, are streamed through as they come. An edge can be
 * drained: `remove(i)`, or `watchReadiness()`, which polls each edge's admin /readyz: an answer
 * other than 200 takes the edge out at once, three probes without an answer too (a load
 * balancer's readiness probe). Every request is logged (method, session, edge, status) and every
 * answer carries `x-balancer-backend: <edge index>`.
 */
import { once } from "node:events";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request as httpRequest,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo, Socket } from "node:net";

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
