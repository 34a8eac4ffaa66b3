/**
 * THE ORDER of the request pipeline: the only place it lives. Every check a request to an MCP
 * route passes is a stage below, in the order it runs; config turns stages on and off and tunes
 * them, never reorders them. docs/lifecycle.md is generated from these lists
 * (src/pipeline/docs.ts) and a test fails when the two disagree.
 *
 * Before the pipeline, the router (src/server/router.ts) answers health and well-known documents
 * and maps the path to a route and endpoint (`{route}`, `{route}/sse`, `{route}/messages`).
 */
import type { Authenticator } from "../auth/authenticate.ts";
import type { ListCache } from "../cache/list-cache.ts";
import type { EraKnown, Parsed, RequestContext } from "../context.ts";
import type { GetOrder } from "../forward/get-order.ts";
import type { JsonLimits } from "../mcp/strict-json.ts";
import type { LegacyBridge } from "../forward/legacy.ts";
import type { Forwarder } from "../forward/streamable.ts";
import type { AuthFailureLimiter } from "../ratelimit/auth-failures.ts";
import type { CallLimiter } from "../ratelimit/limiter.ts";
import type { SessionManager } from "../session/manager.ts";
import { StageList } from "./compose.ts";
import { forwardSession, forwardStateless, legacyMessage, legacyOpen, cache } from "./stages/forward.ts";
import { authenticate, authFailureLimit } from "./stages/identity.ts";
import { hostOrigin, method } from "./stages/ingress.ts";
import { acceptStream, batchRules, body, era, legacyRules, statelessRules } from "./stages/message.ts";
import { type AuditAdmission, auditAhead, auditGate, authorize, rateLimit } from "./stages/policy.ts";
import { drain, getOrder, prefetchSession, session } from "./stages/session.ts";
import { connection } from "./stages/vault.ts";
import { toolList } from "./stages/tools.ts";
import type { ToolCatalog } from "../cache/tool-catalog.ts";
import type { Vault } from "../vault/vault.ts";

/** What the stages are built from, once, at boot. */
export interface PipelineDeps {
  /** Host header values served; undefined = any. Read per request: known once the listener is bound. */
  hosts: () => Set<string> | undefined;
  origins: ReadonlySet<string>;
  maxBodyBytes: number;
  /** Bounds of a body's JSON (config `limits.json`). */
  jsonLimits: JsonLimits;
  authenticator: Authenticator;
  authFailures: AuthFailureLimiter;
  limiter: CallLimiter;
  /** The audit log's admission check and write-ahead entries; absent = neither. */
  audit: AuditAdmission | undefined;
  sessions: SessionManager;
  /** Distributed mode: session records live in Redis (the prefetch stage then runs). */
  distributed: boolean;
  draining: () => boolean;
  getOrder: GetOrder;
  cache: ListCache | undefined;
  /** The edge's view of each server's tools (the `tool-list` stage). */
  tools: ToolCatalog;
  forwarder: Forwarder;
  legacy: LegacyBridge;
  /** The token vault, when connections are configured. */
  vault: Vault | undefined;
}

/**
 * Session era (Streamable HTTP 2025-03-26 … 2025-11-25), after `era`. Refusals that cost nothing
 * come first; quota is spent only on calls that passed every check that does not need the session;
 * the session is loaded only for calls within their limits.
 */
function sessionEra(d: PipelineDeps) {
  return (
    StageList.start<EraKnown>()
      // Framing rules that need only the request: before any work is spent on it.
      .then(batchRules())
      // Before authorize and limits: a call that would run unaudited is refused outright.
      .then(auditGate(d.audit))
      // From the body (the headers were checked against it), before any quota or session work.
      .then(authorize(d.authenticator))
      // Distributed mode: the session read leaves in the same round trip as the limit decision.
      .then(prefetchSession(d.sessions, d.distributed))
      // After authorize (a refused call spends no quota), before session and upstream work.
      .then(rateLimit(d.limiter))
      // No new session on an instance that is going away.
      .then(drain(d.draining))
      // Owner-bound session lookup (404 for anything not this principal's on this route).
      .then(session(d.sessions))
      .then(acceptStream())
      // The server sees a session's GET and POST in the order the client sent them.
      .then(getOrder(d.getOrder))
      // The user's own upstream token: only for a call that passed every check and holds its session.
      .then(connection(d.vault))
      // After rate-limit (an unknown tool still counts) and connection (the edge's own tools/list
      // goes with the user's token, in the session, as the call would).
      .then(toolList(d, "mcp"))
      // A hit never reaches the upstream (and was filtered for this principal like any answer).
      .then(cache(d.cache))
      // Last before the upstream: an audited call has its write-ahead entry before it is sent.
      .then(auditAhead(d.audit))
      .then(forwardSession(d.forwarder))
  );
}

/** Stateless era (2026-07-28), after `era`: no session; headers mirror the body. */
function statelessEra(d: PipelineDeps) {
  return (
    StageList.start<EraKnown>()
      // Header claims are checked against the body before anything relies on them.
      .then(statelessRules())
      .then(auditGate(d.audit))
      .then(authorize(d.authenticator))
      // Key, tenant and tool limits (no session in this era).
      .then(rateLimit(d.limiter))
      .then(connection(d.vault))
      .then(toolList(d, "mcp"))
      .then(cache(d.cache))
      .then(auditAhead(d.audit))
      .then(forwardStateless(d.forwarder))
  );
}

/** Legacy HTTP+SSE messages (2024-11-05): `POST {route}/messages?sessionId=…`. */
function legacyMessages(d: PipelineDeps) {
  return (
    StageList.start<Parsed>()
      .then(legacyRules())
      .then(auditGate(d.audit))
      .then(authorize(d.authenticator))
      // The session is the `sessionId` of the messages URL.
      .then(rateLimit(d.limiter))
      .then(connection(d.vault))
      .then(toolList(d, "legacy"))
      .then(auditAhead(d.audit))
      .then(legacyMessage(d.legacy))
  );
}

/** Legacy HTTP+SSE stream (2024-11-05): `GET {route}/sse`. It carries no call: nothing to authorize or count. */
function legacyStream(d: PipelineDeps) {
  return StageList.start<Parsed>().then(drain(d.draining)).then(legacyOpen(d.legacy));
}

/** The pipeline of every request to an MCP route, from the first check to the forward stage. */
export function stageLists(d: PipelineDeps): StageList<RequestContext, unknown> {
  const parsed = StageList.start<RequestContext>()
    // First of all: a rebinding page or a foreign site learns nothing, not even a challenge.
    .then(hostOrigin({ hosts: d.hosts, origins: d.origins }))
    // An address over its failed-authentication budget is refused before its credential is read.
    .then(authFailureLimit(d.authFailures))
    .then(method())
    // Before the body: a client that cannot authenticate must not make the edge buffer one.
    .then(authenticate(d.authenticator, d.authFailures))
    .then(body(d.maxBodyBytes, d.jsonLimits));
  const mcp = StageList.start<typeof parsed extends StageList<RequestContext, infer C> ? C : never>()
    .then(era())
    .fork({
      name: "by-era",
      does: "The era picks the rest: session era or 2026-07-28 stateless.",
      file: "src/pipeline/lists.ts",
      lists: { session: sessionEra(d), stateless: statelessEra(d) },
      pick: (ctx) => ctx.era,
    });
  return parsed.fork({
    name: "by-endpoint",
    does: "The endpoint picks the rest: the MCP endpoint, or the legacy SSE stream or messages URL.",
    file: "src/pipeline/lists.ts",
    lists: { mcp, "legacy-sse": legacyStream(d), "legacy-messages": legacyMessages(d) },
    pick: (ctx) => ctx.endpoint,
  });
}
