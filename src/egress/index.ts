import type { Readable } from "node:stream";
import { Agent, type Dispatcher, request } from "undici";

/**
 * The only way out of mcp-edge (DESIGN.md convention 5; a lint rule forbids fetch/undici
 * elsewhere). Upstream URLs written in the operator's config are trusted as written; redirects are
 * never followed automatically (undici's request does not follow them), so a 3xx from an upstream
 * reaches the caller as a status, not as a connection to wherever it points.
 *
 * Calls and long-lived streams use separate connection pools: with one shared pool, open SSE
 * streams can take every connection and make each POST wait (DESIGN.md, hot-path facts).
 */
export interface EgressOptions {
  /** Milliseconds to establish a TCP connection. */
  connectTimeout: number;
  /** Connections per origin for request/response calls. */
  callConnections?: number;
  /** Connections per origin for long-lived SSE streams. */
  streamConnections?: number;
}

export interface EgressRequest {
  method: "GET" | "POST" | "DELETE" | "OPTIONS";
  headers: Record<string, string>;
  body?: string | Buffer;
  signal?: AbortSignal;
  /** The answer is a long-lived stream (SSE GET or a POST whose answer may stream). */
  stream?: boolean;
  /** Milliseconds to wait for response headers. */
  headersTimeout?: number;
}

export interface EgressResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable & AsyncIterable<Buffer>;
}

export class Egress {
  readonly #calls: Agent;
  readonly #streams: Agent;

  constructor(options: EgressOptions) {
    const common = { connectTimeout: options.connectTimeout, keepAliveTimeout: 30_000 };
    this.#calls = new Agent({ ...common, connections: options.callConnections ?? 256, pipelining: 1 });
    this.#streams = new Agent({ ...common, connections: options.streamConnections ?? 4096, pipelining: 1 });
  }

  /** One HTTP request to a configured upstream. Throws on connection failure (see `isConnectError`). */
  async request(url: string, req: EgressRequest): Promise<EgressResponse> {
    const dispatcher: Dispatcher = req.stream ? this.#streams : this.#calls;
    const res = await request(url, {
      method: req.method,
      headers: req.headers,
      body: req.body ?? null,
      signal: req.signal ?? null,
      dispatcher,
      headersTimeout: req.headersTimeout ?? 300_000,
      // Streams may idle for a long time between events; the caller's signal bounds them.
      bodyTimeout: req.stream ? 0 : 300_000,
    });
    return {
      status: res.statusCode,
      headers: res.headers,
      body: res.body as unknown as EgressResponse["body"],
    };
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.#calls.close(), this.#streams.close()]);
  }

  async destroy(): Promise<void> {
    await Promise.allSettled([this.#calls.destroy(), this.#streams.destroy()]);
  }
}

/**
 * True when the request never reached the upstream application (nothing was sent that it could
 * have acted on): refused, unreachable, DNS failure, connect timeout. Only then may a
 * non-idempotent MCP request be retried elsewhere (RFC 9110 §9.2.2).
 */
export function isConnectError(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  return (
    code === "ECONNREFUSED" ||
    code === "EHOSTUNREACH" ||
    code === "ENETUNREACH" ||
    code === "ENOTFOUND" ||
    code === "EAI_AGAIN" ||
    code === "UND_ERR_CONNECT_TIMEOUT"
  );
}
