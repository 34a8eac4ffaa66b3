import type { UpstreamCredentials } from "./upstream/types.ts";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { Principal } from "./auth/types.ts";
import type { CacheLookup } from "./cache/list-cache.ts";
import type { EgressDecision } from "./egress/proxy.ts";
import type { RpcId, RpcMessage } from "./mcp/jsonrpc.ts";
import type { CallOutcome, RequestFacts } from "./observability/channels.ts";
import type { Logger } from "./observability/logger.ts";
import type { InflightSlot, RateLimitRefusal } from "./ratelimit/limiter.ts";
import type { SessionRecord } from "./store/types.ts";
import type { Route } from "./upstream/types.ts";

export type { Principal, Route };

/** Which endpoint of a route the request hit. */
export type Endpoint = "mcp" | "legacy-sse" | "legacy-messages";

/**
 * Everything one request carries through the pipeline (src/pipeline/lists.ts). Each stage reads
 * what earlier stages set and adds its own part; nothing else is shared between stages. The fields
 * a stage fills are optional here; the typed views below (`Authenticated`, `Parsed`, `Sessioned`)
 * are what a stage that runs after them is handed, so no stage needs a cast.
 */
export interface RequestContext extends RequestFacts {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly endpoint: Endpoint;
  readonly log: Logger;
  /** Aborted when the client goes away before the answer is complete. */
  readonly clientGone: AbortSignal;
  principal: Principal | undefined;
  /** The body text, when the request has one (POST). */
  body: string | undefined;
  messages: RpcMessage[] | undefined;
  batch: boolean | undefined;
  /** The id an error answer carries: the body's single request's, else null. */
  rpcId: RpcId | null;
  era: "session" | "stateless" | undefined;
  /**
   * Rewrites an upstream answer before the client sees it (tools/list filtered to the tools the
   * principal may call); returns the text to send, or undefined to send the upstream's as is.
   */
  rewrite: ((data: string) => string | undefined) | undefined;
  outcomes: Map<string, CallOutcome> | undefined;
  upstream: { instance: string; ms: number } | undefined;
  upstreamAt: number | undefined;
  session: SessionRecord | undefined;
  egress: EgressDecision[] | undefined;
  /** The list-result cache's lookup of this request (a miss fills it on the way back). */
  cached: CacheLookup | undefined;
  /** Set when a rate limit refused the request (read by the audit stage and the log). */
  refusal: RateLimitRefusal | undefined;
  /** In-flight slots the request holds, given back by the rate-limit stage when its work is over. */
  inflightSlot: InflightSlot | undefined;
  /**
   * The user's own upstream credentials from the token vault (a server with
   * `credentials.connection`): sent instead of the route's, with the same refresh-on-401.
   */
  credentials: UpstreamCredentials | undefined;
}

/** After `authenticate`: who is calling. */
export type Authenticated = RequestContext & { principal: Principal };
/** After `body`: the body and its messages (empty for GET and DELETE). */
export type Parsed = Authenticated & { body: string; messages: RpcMessage[]; batch: boolean };
/** After `era`: which protocol era the request belongs to. */
export type EraKnown = Parsed & { era: "session" | "stateless" };
/** After `session` on a request of a live session (not initialize). */
export type Sessioned = EraKnown & { session: SessionRecord };

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
  principal: Principal | undefined = undefined;
  body: string | undefined = undefined;
  messages: RpcMessage[] | undefined = undefined;
  batch: boolean | undefined = undefined;
  rpcId: RpcId | null = null;
  era: "session" | "stateless" | undefined = undefined;
  rewrite: ((data: string) => string | undefined) | undefined = undefined;
  outcomes: Map<string, CallOutcome> | undefined = undefined;
  upstream: { instance: string; ms: number } | undefined = undefined;
  upstreamAt: number | undefined = undefined;
  session: SessionRecord | undefined = undefined;
  egress: EgressDecision[] | undefined = undefined;
  cached: CacheLookup | undefined = undefined;
  refusal: RateLimitRefusal | undefined = undefined;
  inflightSlot: InflightSlot | undefined = undefined;
  credentials: UpstreamCredentials | undefined = undefined;
  #gone: AbortController | undefined = undefined;
  #left = false;
  /** The socket the request came on (`req.socket` is null once the response finished). */
  readonly #socket: IncomingMessage["socket"];

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
    this.#socket = req.socket;
    res.on("close", () => {
      if (res.writableFinished) return;
      this.#left = true;
      this.#gone?.abort();
    });
  }

  get httpMethod(): string {
    return this.req.method ?? "";
  }

  get headers(): IncomingHttpHeaders {
    return this.req.headers;
  }

  get httpVersion(): string {
    return this.req.httpVersion;
  }

  get clientAddress(): string | undefined {
    return this.#socket?.remoteAddress;
  }

  get clientPort(): number | undefined {
    return this.#socket?.remotePort;
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
