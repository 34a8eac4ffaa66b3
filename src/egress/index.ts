import type { Readable } from "node:stream";
import type { Agent } from "undici";
import {
  createGuardedAgent,
  type GuardedRequestOptions,
  guardedRequest,
  type Resolver,
  type Trust,
} from "./guard.ts";
import { type EgressRules, namedTarget, validateRules } from "./policy.ts";

/**
 * The only way out of mcp-edge. Every request goes through a guarded undici Agent (guard.ts): the host is resolved
 * once and the socket opened to that address, redirects are followed by hand and each hop that
 * leaves the configured origin is checked against the address policy (policy.ts).
 *
 * Trust (`EgressRequest.trust`):
 * - "config" (default): the URL was written by the operator (an upstream, an issuer, a token
 *   endpoint). Its origin is trusted as written — a private upstream is normal — but a redirect to
 *   any other origin is checked like a run-time URL.
 * - "runtime": the URL was discovered or supplied at run time (a `jwks_uri` from metadata, a
 *   client metadata document, a `resource_metadata` URL): every hop is checked.
 *
 * Calls and long-lived streams use separate connection pools: with one shared pool, open SSE
 * streams can take every connection and make each POST wait. Checked
 * (run-time and off-origin) requests have their own pool, so a connection opened unchecked for a
 * configured origin is never reused by a run-time request to the same origin.
 */
export interface EgressOptions {
  /** Milliseconds to establish a TCP (and TLS) connection. */
  connectTimeout: number;
  /** Connections per origin for request/response calls. */
  callConnections?: number;
  /** Connections per origin for long-lived SSE streams. */
  streamConnections?: number;
  /**
   * The address policy for run-time URLs and redirect hops. Default: nothing private
   * (`{ allowPrivate: false }`), no exceptions. `egress.allowPrivateNetworks`, `allowHosts`,
   * `allowCidrs` in the config.
   */
  rules?: EgressRules;
  /** Redirects followed per request; one more is EDGE_EGRESS_DENIED. Default 5. */
  maxRedirects?: number;
  /**
   * Largest response body (bytes) of a request that is not a long-lived stream; more fails the
   * body with EDGE_EGRESS_RESPONSE_TOO_LARGE. Default 64 MiB.
   */
  maxResponseBytes?: number;
  /** Name resolution (default dns.lookup, all addresses). Tests inject their own DNS. */
  resolver?: Resolver;
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
  /** Where the URL came from (see the class comment). Default "config". */
  trust?: Trust;
  /** Largest body in bytes for this request (overrides the Egress default; ignored for streams). */
  maxResponseBytes?: number;
  /**
   * A URL written in the config that this run-time request stems from (the issuer whose metadata
   * named a `jwks_uri`): its `host:port` counts as named for the port rule (policy.ts `checkPort`).
   */
  namedBy?: string;
}

export interface EgressResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable & AsyncIterable<Buffer>;
}

export const EGRESS_DEFAULTS = {
  maxRedirects: 5,
  maxResponseBytes: 64 * 1024 * 1024,
} as const;

export class Egress {
  readonly #calls: Agent;
  readonly #streams: Agent;
  readonly #checked: Agent;
  readonly #rules: EgressRules;
  readonly #maxRedirects: number;
  readonly #maxResponseBytes: number;

  constructor(options: EgressOptions) {
    this.#rules = options.rules ?? { allowPrivate: false };
    validateRules(this.#rules); // a malformed exception fails at boot (convention 3)
    this.#maxRedirects = options.maxRedirects ?? EGRESS_DEFAULTS.maxRedirects;
    this.#maxResponseBytes = options.maxResponseBytes ?? EGRESS_DEFAULTS.maxResponseBytes;
    const common = {
      rules: this.#rules,
      connectTimeout: options.connectTimeout,
      keepAliveTimeout: 30_000,
      ...(options.resolver ? { resolver: options.resolver } : {}),
    };
    this.#calls = createGuardedAgent({
      ...common,
      check: false,
      connections: options.callConnections ?? 256,
    });
    this.#streams = createGuardedAgent({
      ...common,
      check: false,
      connections: options.streamConnections ?? 4096,
    });
    this.#checked = createGuardedAgent({
      ...common,
      check: true,
      connections: options.callConnections ?? 256,
    });
  }

  /**
   * One HTTP request. Throws on connection failure (see `isConnectError`), EDGE_EGRESS_DENIED when
   * the policy refuses a hop (the refused hop is never contacted), EDGE_UPSTREAM_TIMEOUT on a
   * header timeout. A 3xx is followed (checked); one without `Location` is returned as is.
   */
  request(url: string, req: EgressRequest): Promise<EgressResponse> {
    const opts: GuardedRequestOptions = {
      method: req.method,
      headers: req.headers,
      headersTimeout: req.headersTimeout ?? 300_000,
      // Streams may idle for a long time between events; the caller's signal bounds them.
      bodyTimeout: req.stream ? 0 : 300_000,
      maxRedirects: this.#maxRedirects,
    };
    if (req.body !== undefined) opts.body = req.body;
    if (req.signal) opts.signal = req.signal;
    if (!req.stream) opts.maxResponseBytes = req.maxResponseBytes ?? this.#maxResponseBytes;
    // The guarded response is the answer as is (it has the EgressResponse fields): no copy, and no
    // async layer of its own on every upstream call.
    return guardedRequest(url, opts, {
      trust: req.trust ?? "config",
      rules: this.#rules,
      ...(req.namedBy !== undefined ? { named: [namedTarget(new URL(req.namedBy))] } : {}),
      trusted: req.stream ? this.#streams : this.#calls,
      checked: this.#checked,
    });
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.#calls.close(), this.#streams.close(), this.#checked.close()]);
  }

  async destroy(): Promise<void> {
    await Promise.allSettled([this.#calls.destroy(), this.#streams.destroy(), this.#checked.destroy()]);
  }
}

/**
 * True when the request never reached the upstream application (nothing was sent that it could
 * have acted on): refused, unreachable, DNS failure, connect timeout. Only then may a
 * non-idempotent MCP request be retried elsewhere (RFC 9110 §9.2.2). EDGE_EGRESS_DENIED is not
 * one: the instance was reached and redirected somewhere refused.
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

export type { EgressRules } from "./policy.ts";
export type { Resolver, Trust } from "./guard.ts";
