import type { IncomingMessage, ServerResponse } from "node:http";
import type { Principal } from "./auth/types.ts";
import type { ServerConfig } from "./config/schema.ts";
import type { EgressDecision } from "./egress/proxy.ts";
import type { RpcMessage } from "./mcp/jsonrpc.ts";
import type { CallOutcome } from "./observability/channels.ts";
import type { Logger } from "./observability/logger.ts";
import type { SessionRecord } from "./store/types.ts";
import type { Upstream } from "./upstream/types.ts";

/** A configured server at run time: its config and its upstream. */
export interface Route {
  readonly name: string;
  readonly config: ServerConfig;
  readonly upstream: Upstream;
}

export type { Principal };

/** Which endpoint of a route the request hit. */
export type Endpoint = "mcp" | "legacy-sse" | "legacy-messages";

/**
 * Everything one request carries through the pipeline. Each stage reads what earlier stages set
 * and adds its own part; nothing else is shared between stages.
 */
export interface RequestContext {
  readonly requestId: string;
  readonly startedAt: number;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly route: Route;
  readonly endpoint: Endpoint;
  readonly log: Logger;
  /** Aborted when the client goes away before the answer is complete. */
  readonly clientGone: AbortSignal;
  principal?: Principal;
  /** The raw body text, when the request has one. */
  body?: string;
  messages?: RpcMessage[];
  batch?: boolean;
  era?: "session" | "stateless";
  /**
   * Rewrites an upstream answer before the client sees it (tools/list filtered to the tools the
   * principal may call); returns the text to send, or undefined to send the upstream's as is.
   */
  rewrite?: (data: string) => string | undefined;
  /** How each JSON-RPC request of the body ended (key: requestIdKey), for audit and metrics. */
  outcomes?: Map<string, CallOutcome>;
  /** The upstream instance that served the call, and how long the upstream took (ms). */
  upstream?: { instance: string; ms: number };
  /** performance.now() when the forward stage started talking to the upstream (tracing.ts marks it). */
  upstreamAt?: number;
  session?: SessionRecord;
  /**
   * Outbound requests a stdio server made through the egress proxy while this request was in
   * flight, allowed or denied (src/egress/proxy.ts); copied into the call's audit record.
   */
  egress?: EgressDecision[];
}

/**
 * The context of a request on the public listener. Every field is there from the start (one
 * object shape for every request), and `clientGone` is made only when something reads it: most
 * requests never do, and an AbortController per request costs more than the flag it stands for.
 */
export class PublicRequestContext implements RequestContext {
  readonly requestId: string;
  readonly startedAt: number;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly route: Route;
  readonly endpoint: Endpoint;
  readonly log: Logger;
  principal?: Principal = undefined;
  body?: string = undefined;
  messages?: RpcMessage[] = undefined;
  batch?: boolean = undefined;
  era?: "session" | "stateless" = undefined;
  rewrite?: (data: string) => string | undefined = undefined;
  outcomes?: Map<string, CallOutcome> = undefined;
  upstream?: { instance: string; ms: number } = undefined;
  upstreamAt?: number = undefined;
  session?: SessionRecord = undefined;
  egress?: EgressDecision[] = undefined;
  #gone: AbortController | undefined = undefined;
  #left = false;

  constructor(
    requestId: string,
    req: IncomingMessage,
    res: ServerResponse,
    route: Route,
    endpoint: Endpoint,
    log: Logger,
  ) {
    this.requestId = requestId;
    this.startedAt = performance.now();
    this.req = req;
    this.res = res;
    this.route = route;
    this.endpoint = endpoint;
    this.log = log;
    res.on("close", () => {
      if (res.writableFinished) return;
      this.#left = true;
      this.#gone?.abort();
    });
  }

  get clientGone(): AbortSignal {
    if (!this.#gone) {
      this.#gone = new AbortController();
      if (this.#left) this.#gone.abort();
    }
    return this.#gone.signal;
  }

  /** Whether the client went away before the answer was complete (`clientGone.aborted`, without making it). */
  get clientLeft(): boolean {
    return this.#left;
  }
}

/** `ctx.clientGone.aborted`, without making the signal of a context that has none yet. */
export function clientLeft(ctx: RequestContext): boolean {
  return ctx instanceof PublicRequestContext ? ctx.clientLeft : ctx.clientGone.aborted;
}
