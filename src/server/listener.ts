import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Config } from "../config/schema.ts";
import { GatewayError } from "../errors/errors.ts";

/** Every socket of the edge's listeners, so the drain can close what is left. */
export type SocketSet = Set<Socket>;

/**
 * An HTTP/1.1 listener with the edge's limits (`limits.*`): header and request timeouts checked
 * often enough to matter, header size, keep-alive. Malformed requests (bad header bytes, CR/LF in
 * values, oversized headers) never reach the handler: they are answered here with the edge's error
 * shape, then the connection closes (Node's default is a bare 400).
 */
export async function listen(
  where: { host: string; port: number },
  limits: Config["limits"],
  sockets: SocketSet,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<Server> {
  // Responses under way per connection, so that clientError never writes into one of them.
  const inflight = new WeakMap<Socket, Set<ServerResponse>>();
  const server = createServer(
    {
      headersTimeout: limits.headersTimeout,
      requestTimeout: limits.requestTimeout,
      keepAliveTimeout: limits.keepAliveTimeout,
      maxHeaderSize: limits.maxHeaderBytes,
      // Node checks headersTimeout and requestTimeout only every `connectionsCheckingInterval`
      // (default 30 s), so a 1 s headersTimeout would let a slowloris client hold its connection
      // for up to 30 s. Check at least once a second, and a few times within the shortest limit.
      connectionsCheckingInterval: Math.max(
        50,
        Math.min(1000, Math.floor(Math.min(limits.headersTimeout, limits.requestTimeout || Infinity) / 4)),
      ),
    },
    (req, res) => {
      const socket = req.socket;
      let set = inflight.get(socket);
      if (!set) {
        set = new Set();
        inflight.set(socket, set);
      }
      set.add(res);
      res.once("close", () => set.delete(res));
      handler(req, res);
    },
  );
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    if (!socket.writable) return socket.destroy();
    // Bytes that do not parse after a request whose answer is already under way (e.g. an SSE
    // stream) must not be answered by writing a second status line into that answer's body: close
    // the connection instead, as Node's own default handler does.
    for (const res of inflight.get(socket) ?? []) if (res.headersSent) return socket.destroy();
    socket.end(clientErrorAnswer(err.code));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(where.port, where.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return server;
}

/** `listen`, with an error that names the listener and its address. */
export async function listenOn(
  which: "public" | "admin",
  where: { host: string; port: number },
  limits: Config["limits"],
  sockets: SocketSet,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<Server> {
  try {
    return await listen(where, limits, sockets, handler);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    throw new Error(
      `cannot listen on ${where.host.includes(":") ? `[${where.host}]` : where.host}:${where.port} (${which} listener): ${code}`,
      {
        cause: err,
      },
    );
  }
}

/** The raw HTTP answer to a request Node's parser refused (431, 408 or 400), connection closing. */
function clientErrorAnswer(code: string | undefined): string {
  const status = code === "HPE_HEADER_OVERFLOW" ? 431 : code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
  const ge = new GatewayError(status === 408 ? "EDGE_REQUEST_TIMEOUT" : "EDGE_BAD_HEADER");
  const body = JSON.stringify({
    jsonrpc: "2.0",
    id: null,
    error: { code: -32000, message: ge.message, data: { code: ge.code } },
  });
  const reason =
    status === 431 ? "Request Header Fields Too Large" : status === 408 ? "Request Timeout" : "Bad Request";
  return `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/** Track promises of work in flight, for the drain. */
export class Inflight {
  readonly #set = new Set<Promise<unknown>>();

  add(p: Promise<unknown>): void {
    // One reaction for both outcomes (settled() waits with allSettled, so a rejection is fine).
    const done = () => this.#set.delete(p);
    p.then(done, done);
    this.#set.add(p);
  }

  get size(): number {
    return this.#set.size;
  }

  /** Resolves true once nothing is in flight, false when `timeoutMs` passed first. */
  async settled(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.#set.size > 0 && Date.now() < deadline) {
      await Promise.race([Promise.allSettled([...this.#set]), new Promise((r) => setTimeout(r, 100))]);
    }
    return this.#set.size === 0;
  }
}
