import diagnostics_channel from "node:diagnostics_channel";
import type { RequestContext } from "../context.ts";
import type { GatewayError } from "../errors/errors.ts";

/**
 * Observability without touching the hot path (DESIGN.md convention 7): the pipeline publishes
 * named diagnostics_channel events; audit and metrics subscribe. A channel without subscribers
 * costs one boolean check.
 */
export const requestEndChannel = diagnostics_channel.channel("mcp-edge:request:end");
export const sessionChannel = diagnostics_channel.channel("mcp-edge:session");
export const adminChannel = diagnostics_channel.channel("mcp-edge:admin");

/** How one JSON-RPC request of a call ended, as the client saw it. */
export type CallOutcome =
  { kind: "result"; isError: boolean } | { kind: "rpc_error"; code: number } | { kind: "aborted" };

/** Published when a request to an MCP route is over (its answer complete, or failed). */
export interface RequestEndEvent {
  ctx: RequestContext;
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
