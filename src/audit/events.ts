/**
 * Drafts from the pipeline's diagnostics_channel events. These run synchronously inside `publish`
 * on the request path, so they only copy fields: no hashing, no serialization, no I/O.
 */
import { single } from "../mcp/hygiene.ts";
import { isRequest, type RpcRequest, requestIdKey } from "../mcp/jsonrpc.ts";
import type {
  AdminEvent,
  AsEvent,
  RequestEndEvent,
  SessionEvent,
  VaultEvent,
} from "../observability/channels.ts";
import { sessionHash } from "../session/manager.ts";
import type { AuditDraft, AuditOutcome } from "./record.ts";

/** The MCP methods that get a record of their own. */
export const AUDITED_METHODS: ReadonlySet<string> = new Set(["tools/call", "resources/read", "prompts/get"]);

/**
 * Error codes that mean the edge let the call through and something past it failed. Every other
 * code the edge answers with is a refusal (auth, tenancy, scope, tool allow-list, session, rate
 * limit, drain, audit spool full, bad input).
 */
const FAILURE_CODES: ReadonlySet<string> = new Set([
  "EDGE_UPSTREAM_UNAVAILABLE",
  "EDGE_UPSTREAM_ERROR",
  "EDGE_UPSTREAM_BAD_RESPONSE",
  "EDGE_UPSTREAM_TIMEOUT",
  "EDGE_INTERNAL",
  "EDGE_DRAINED",
]);

const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** Upstream instance URLs lose any userinfo before they are recorded. */
function instanceName(url: string | undefined): string | null {
  if (!url) return null;
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, "$1");
}

function target(m: RpcRequest): unknown {
  const p = m.params;
  if (!p || Array.isArray(p)) return null;
  const v = m.method === "resources/read" ? p.uri : p.name;
  return typeof v === "string" ? v : v === undefined ? null : JSON.stringify(v);
}

/** One draft per audited JSON-RPC request of the body; one `request` draft for a POST refused unread. */
export function draftsFromRequestEnd(ev: RequestEndEvent, now = Date.now()): AuditDraft[] {
  const { request: ctx, error } = ev;
  const messages = ctx.messages;
  if (!messages) {
    // Refused (or failed) before the body was read: any such POST may have been a tool call, so it
    // is recorded, with what is known. GET/DELETE carry no call. Refused authentications are the
    // exception: anyone can send them in floods, so they are recorded sampled (auth-refusals.ts).
    if (ctx.httpMethod !== "POST" || !error || isAuthRefusal(error)) return [];
    const outcome: AuditOutcome = { kind: "http_error", status: error.status, code: error.code };
    return [draftOf(ev, now, "request", null, null, null, outcome)];
  }
  let drafts: AuditDraft[] | undefined;
  for (const m of messages) {
    if (!isRequest(m) || !AUDITED_METHODS.has(m.method)) continue;
    const known = ctx.outcomes?.get(requestIdKey(m.id));
    let outcome: AuditOutcome;
    if (error?.code === "EDGE_DRAINED") outcome = { kind: "aborted", code: error.code };
    else if (error) outcome = { kind: "http_error", status: error.status, code: error.code };
    else if (known?.kind === "rpc_error") outcome = { kind: "rpc_error", code: known.code };
    else if (known) outcome = known;
    else if (ev.status === 0 || ctx.clientLeft) outcome = { kind: "aborted" };
    else if (ev.status >= 400) outcome = { kind: "http_error", status: ev.status, code: null };
    else outcome = { kind: "result", isError: null };
    const params = m.params && !Array.isArray(m.params) ? m.params : undefined;
    const rawArgs =
      m.method === "tools/call" || m.method === "prompts/get" ? (params?.arguments ?? {}) : undefined;
    const draft = draftOf(
      ev,
      now,
      "call",
      m.method,
      target(m) as string | null,
      JSON.stringify(m.id),
      outcome,
    );
    if (rawArgs !== undefined) draft.rawArgs = rawArgs;
    // The edge's own error in place of the answer: the record names its code.
    if (!error && known?.kind === "rpc_error" && known.edgeCode !== undefined) draft.code = known.edgeCode;
    // A call the edge ended (the drain) names why, as a refusal names its code.
    if (outcome.kind === "aborted" && outcome.code !== undefined) draft.code = outcome.code;
    // Egress proxy: the server's outbound requests during the call (every call of a batch gets
    // them: the process's requests carry no id). Copied: the array may still grow.
    if (ctx.egress && ctx.egress.length > 0) draft.egress = ctx.egress.slice();
    (drafts ??= []).push(draft);
  }
  return drafts ?? [];
}

/** A refused authentication: 401, or 403 for the credential's tenant (before the body is read). */
export function isAuthRefusal(error: { status: number; code: string } | undefined): boolean {
  return (
    error !== undefined &&
    (error.status === 401 || error.status === 403) &&
    (error.code.startsWith("EDGE_AUTH_") || error.code.startsWith("EDGE_TENANT_"))
  );
}

/**
 * The audit record of a refused authentication: a `request` record (the body was not read) whose
 * `detail` names the source address and the reason, and how many refusals from that address were
 * not recorded since its previous record (sampling). Nothing of the presented credential.
 */
export function draftFromAuthRefusal(
  ev: RequestEndEvent,
  address: string,
  suppressed: number,
  now = Date.now(),
): AuditDraft {
  const error = ev.error as NonNullable<RequestEndEvent["error"]>;
  const d = draftOf(ev, now, "request", null, null, null, {
    kind: "http_error",
    status: error.status,
    code: error.code,
  });
  d.detail = { address, reason: error.code, suppressed: String(suppressed) };
  return d;
}

/**
 * One draft of a request, its fields in record order (as the request's shared fields followed by
 * the call's). The time stays epoch ms until finalize.
 */
function draftOf(
  ev: RequestEndEvent,
  now: number,
  type: "call" | "request",
  method: string | null,
  target: string | null,
  rpcId: string | null,
  outcome: AuditOutcome,
): AuditDraft {
  const { request: ctx, error } = ev;
  const p = ctx.principal;
  let traceId: string | null = null;
  const tp = ctx.headers.traceparent;
  if (typeof tp === "string") traceId = TRACEPARENT.exec(tp.trim().toLowerCase())?.[1] ?? null;
  let session: string | null = ctx.session ? sessionHash(ctx.session.id) : null;
  if (!session) {
    // The id the client presented (a 404 names which one), hashed like every session id.
    let presented: string | undefined;
    try {
      presented = single(ctx, "mcp-session-id");
    } catch {
      presented = undefined;
    }
    if (presented) session = sessionHash(presented);
  }
  const refused = error !== undefined && !FAILURE_CODES.has(error.code);
  return {
    time: now,
    tenant: p?.tenant ?? null,
    subject: p?.subject ?? null,
    principal: p?.id ?? null,
    auth: p?.method ?? null,
    clientId: p?.clientId ?? null,
    keyId: p?.keyId ?? null,
    session,
    server: ctx.route.name,
    instance: instanceName(ctx.upstream?.instance ?? ctx.session?.upstream.instance),
    decision: refused ? "refused" : "allowed",
    code: error?.code ?? null,
    status: ev.status,
    latencyMs: Math.round(ev.durationMs * 10) / 10,
    upstreamMs: ctx.upstream ? Math.round(ctx.upstream.ms * 10) / 10 : null,
    requestId: ctx.requestId,
    traceId,
    detail: null,
    type,
    method,
    target,
    rpcId,
    outcome,
  };
}

/**
 * A draft of an event that is not a request: every field in record order, those a request fills
 * null; `fields` sets the event's own.
 */
function eventDraft(now: number, type: AuditDraft["type"], fields: Partial<AuditDraft>): AuditDraft {
  return {
    time: now,
    type,
    tenant: null,
    subject: null,
    principal: null,
    auth: null,
    clientId: null,
    keyId: null,
    session: null,
    server: null,
    instance: null,
    method: null,
    target: null,
    rpcId: null,
    decision: "allowed",
    code: null,
    status: null,
    outcome: null,
    latencyMs: null,
    upstreamMs: null,
    requestId: null,
    traceId: null,
    detail: null,
    ...fields,
  };
}

export function draftFromSession(ev: SessionEvent, now = Date.now()): AuditDraft {
  return eventDraft(now, ev.kind === "start" ? "session.start" : "session.end", {
    tenant: ev.tenant,
    principal: ev.principal,
    session: sessionHash(ev.sessionId),
    server: ev.server,
    detail: ev.reason !== undefined ? { reason: ev.reason } : null,
  });
}

export function draftFromAdmin(ev: AdminEvent, now = Date.now()): AuditDraft {
  return eventDraft(now, "admin", {
    tenant: ev.tenant,
    subject: ev.actor,
    method: ev.action,
    target: ev.target,
    decision: ev.outcome === "ok" ? "allowed" : "refused",
    detail: { action: ev.action, actor: ev.actor, target: ev.target },
  });
}

/** A token-vault event: `method` is `connection.<action>`, `target` the connection. */
export function draftFromVault(ev: VaultEvent, now = Date.now()): AuditDraft {
  const detail: Record<string, string> = {
    action: ev.action,
    connection: ev.connection,
    outcome: ev.outcome,
  };
  if (ev.reason !== undefined) detail.reason = ev.reason;
  return eventDraft(now, "connection", {
    tenant: ev.tenant === "" ? null : ev.tenant,
    principal: ev.principal,
    server: ev.server ?? null,
    method: `connection.${ev.action}`,
    target: ev.connection,
    decision: ev.outcome === "ok" ? "allowed" : "refused",
    requestId: ev.requestId ?? null,
    detail,
  });
}

/** An authorization-server event: `method` is `oauth.<leg>`, `target` the client. */
export function draftFromAs(ev: AsEvent, now = Date.now()): AuditDraft {
  const detail: Record<string, string> = { leg: ev.leg, outcome: ev.outcome };
  if (ev.reason !== undefined) detail.reason = ev.reason;
  if (ev.redirectHost !== null) detail.redirectHost = ev.redirectHost;
  if (ev.grantId !== undefined) detail.grant = ev.grantId;
  return eventDraft(now, "oauth", {
    tenant: ev.tenant,
    subject: ev.subject,
    clientId: ev.clientId,
    method: `oauth.${ev.leg}`,
    target: ev.clientId,
    decision: ev.outcome === "ok" ? "allowed" : "refused",
    detail,
  });
}
