import diagnostics_channel from "node:diagnostics_channel";
import type { IncomingHttpHeaders } from "node:http";
import type { Principal } from "../auth/types.ts";
import type { EgressDecision } from "../egress/proxy.ts";
import type { GatewayError } from "../errors/errors.ts";
import type { RpcMessage } from "../mcp/jsonrpc.ts";
import type { SessionRecord } from "../store/types.ts";
import type { Route } from "../upstream/types.ts";

/**
 * Observability without touching the hot path: the pipeline publishes named diagnostics_channel
 * events; audit, metrics and tracing subscribe. A channel without subscribers costs one boolean
 * check. Payloads are the read-only views below, made for observers: nothing here exposes the
 * request context that stages work on.
 */
export const requestEndChannel = diagnostics_channel.channel("mcp-edge:request:end");
export const sessionChannel = diagnostics_channel.channel("mcp-edge:session");
export const adminChannel = diagnostics_channel.channel("mcp-edge:admin");
export const vaultChannel = diagnostics_channel.channel("mcp-edge:vault");
export const asChannel = diagnostics_channel.channel("mcp-edge:as");

/** How one JSON-RPC request of a call ended, as the client saw it. */
export type CallOutcome =
  | { kind: "result"; isError: boolean }
  /** `edgeCode`: the error is the edge's own (the upstream's answer never came, or was refused). */
  | { kind: "rpc_error"; code: number; edgeCode?: string }
  /** The client went away, or (with its code) the edge ended the call: EDGE_DRAINED. */
  | { kind: "aborted"; code?: string };

/**
 * A request to an MCP route as observers see it once it is over: what the stages learned
 * (principal, messages, session, outcomes), never how they work. Fields a request never reached
 * are undefined (a request refused before its body was read has no `messages`).
 */
export interface RequestFacts {
  readonly requestId: string;
  /** performance.now() when the request arrived. */
  readonly startedAt: number;
  readonly route: Route;
  /** The HTTP method. */
  readonly httpMethod: string;
  /** The request's headers (audit reads `traceparent` and the presented session id). */
  readonly headers: IncomingHttpHeaders;
  readonly principal: Principal | undefined;
  readonly messages: readonly RpcMessage[] | undefined;
  readonly session: SessionRecord | undefined;
  /** How each JSON-RPC request of the body ended (key: requestIdKey). */
  readonly outcomes: ReadonlyMap<string, CallOutcome> | undefined;
  /** The upstream instance that served the call, and how long the upstream took (ms). */
  readonly upstream: { readonly instance: string; readonly ms: number } | undefined;
  /** performance.now() when the forward stage started talking to the upstream. */
  readonly upstreamAt: number | undefined;
  /** Outbound requests a stdio server made through the egress proxy during the call. */
  readonly egress: readonly EgressDecision[] | undefined;
  /** Whether the client went away before its answer was complete. */
  readonly clientLeft: boolean;
  /** The HTTP version of the request (`1.1`, `2`), for `network.protocol.version`. */
  readonly httpVersion?: string | undefined;
  /** The client's address and port as the socket saw them (`client.address`, `client.port`). */
  readonly clientAddress?: string | undefined;
  readonly clientPort?: number | undefined;
}

/** Published when a request to an MCP route is over (its answer complete, or failed). */
export interface RequestEndEvent {
  request: RequestFacts;
  /** HTTP status the client got (0 when the connection went away before an answer). */
  status: number;
  /** The edge's own refusal or failure, when there was one. */
  error: GatewayError | undefined;
  /** Wall time from the request's arrival to the end of its answer (ms). */
  durationMs: number;
}

/** Published when a session starts or ends. */
export interface SessionEvent {
  kind: "start" | "end";
  sessionId: string;
  server: string;
  tenant: string | null;
  principal: string;
  reason?: string;
  /** When the session started (ms since the epoch): an end's duration is measured from it. */
  createdAt?: number;
  /** The MCP protocol version the session negotiated. */
  protocolVersion?: string;
}

/** Published for every admin action (key created, rotated, revoked; session deleted). */
export interface AdminEvent {
  action: string;
  /** `root`, or the tenant of a tenant admin. */
  actor: string;
  tenant: string | null;
  target: string;
  outcome: "ok" | "refused";
}

/**
 * Published by the token vault (src/vault) for every connect, use, refresh (and its failure) and
 * disconnect of a user's connection. Never a token.
 */
export interface VaultEvent {
  action: "connect" | "use" | "refresh" | "disconnect";
  tenant: string;
  /** The principal id (or the vault subject, for a refresh nobody's call asked for by name). */
  principal: string;
  connection: string;
  outcome: "ok" | "failed";
  reason?: string;
  /** The server whose call used the connection (`use`). */
  server?: string;
  requestId?: string;
}

/** A leg of the edge's authorization server (src/as). */
export type AsLeg =
  | "registration"
  | "cimd_fetch"
  | "authorize"
  | "login"
  | "consent"
  | "code"
  | "token"
  | "refresh"
  | "reuse_detected"
  | "revoke";

/**
 * Published by the authorization server (src/as) for every leg of every flow, success or not.
 * Never a token, code or secret.
 */
export interface AsEvent {
  leg: AsLeg;
  outcome: "ok" | "refused";
  clientId: string | null;
  /** The host of the redirect URI the flow returns to, when known. */
  redirectHost: string | null;
  tenant: string | null;
  subject: string | null;
  /** The OAuth error code (RFC 6749 §5.2, RFC 7591 §3.2.2) of a refusal, or a short reason. */
  reason?: string;
  grantId?: string;
}
