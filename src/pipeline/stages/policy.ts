import type { Authenticator } from "../../auth/authenticate.ts";
import { authorize as authorizeCalls, filterToolsList, toolAllowed } from "../../auth/authorize.ts";
import type { Parsed } from "../../context.ts";
import { GatewayError } from "../../errors/errors.ts";
import { isRequest } from "../../mcp/jsonrpc.ts";
import type { RequestFacts } from "../../observability/channels.ts";
import type { CallLimiter } from "../../ratelimit/limiter.ts";
import type { Stage } from "../compose.ts";

const FILE = "src/pipeline/stages/policy.ts";

/**
 * Audit gate (fault policy "audit sink"): every path to the upstream passes here, so a tools/call
 * is refused (503) rather than run unaudited while the audit spool is full. Other methods continue.
 * The refusal is itself queued for the audit log.
 */
export function auditGate(audit: AuditAdmission | undefined): Stage<Parsed> {
  return {
    name: "audit-gate",
    does: "Refuses a `tools/call` (503) while the audit log cannot take records; other methods pass.",
    codes: ["EDGE_AUDIT_UNAVAILABLE"],
    file: FILE,
    run: audit
      ? (ctx) => {
          if (audit.accepting()) return;
          if (ctx.messages.some((m) => isRequest(m) && m.method === "tools/call"))
            throw new GatewayError("EDGE_AUDIT_UNAVAILABLE");
        }
      : undefined,
  };
}

/** What the audit stages need of the audit log (src/audit/log.ts). */
export interface AuditAdmission {
  accepting(): boolean;
  ahead(facts: RequestFacts): Promise<void> | undefined;
}

/**
 * Write-ahead audit: the last stage before the forward stage, so that every audited call that
 * can reach the upstream has a stored entry first. The call's record replaces it; an instance that
 * dies before the answer leaves it, and it is recovered as a record with outcome `unknown`.
 */
export function auditAhead(audit: AuditAdmission | undefined): Stage<Parsed> {
  return {
    name: "audit-ahead",
    does: "Stores a write-ahead audit entry for each audited call (tools/call, resources/read, prompts/get) before it is forwarded; if the instance dies before the answer, the entry becomes a record with outcome `unknown`.",
    codes: ["EDGE_AUDIT_UNAVAILABLE"],
    file: FILE,
    run: audit ? (ctx) => audit.ahead(ctx) : undefined,
  };
}

/**
 * Per-call authorization from the body (the headers were checked against it), before any upstream
 * call or session work: tool allow-lists and scopes. A tools/list answer is rewritten to hide the
 * tools the principal may not call.
 */
export function authorize(authenticator: Authenticator): Stage<Parsed> {
  return {
    name: "authorize",
    does: "Checks each call against the principal's scopes and the tool allow-lists (key, route); tools/list answers are filtered to the tools it may call.",
    codes: ["EDGE_AUTH_INSUFFICIENT_SCOPE", "EDGE_TOOL_FORBIDDEN"],
    file: FILE,
    run: (ctx) => {
      const principal = ctx.principal;
      const messages = ctx.messages;
      if (messages.length === 0 || principal.method === "none") return;
      const route = ctx.route;
      authorizeCalls(route.config, principal, messages, (scope) =>
        authenticator.challenge(route, "insufficient_scope", scope),
      );
      if (messages.some((m) => isRequest(m) && m.method === "tools/list")) {
        ctx.rewrite = (data) => filterToolsList(data, (tool) => toolAllowed(route.config, principal, tool));
      }
    },
  };
}

/**
 * Rate limits (src/ratelimit/limiter.ts): after authorize, so a call refused there spends no quota;
 * before session work and the upstream, so a refused call costs neither. Counts the MCP calls in
 * the body against every limit that applies, all or none. An in-flight slot
 * (`limits.concurrency.session`) is taken here and given back here when the call's work is over:
 * the answer sent, or, after a client left mid-call, the upstream done with it (a session-era
 * disconnect is not a cancellation, so releasing on the client's close would let a client exceed
 * the cap by hanging up).
 */
export function rateLimit(limiter: CallLimiter): Stage<Parsed> {
  const stage = {
    name: "rate-limit",
    does: "Counts the calls of the body against the key, session, tenant, initialize and per-tool limits (all or none); holds an in-flight slot until the call's work is over.",
    codes: ["EDGE_RATE_LIMITED"] as const,
    file: FILE,
  };
  if (!limiter.tracksInflight) return { ...stage, run: (ctx) => limiter.admit(ctx) };
  const rest = (ctx: Parsed, next: () => void | Promise<void>): void | Promise<void> => {
    let r: void | Promise<void>;
    try {
      r = next();
    } catch (err) {
      limiter.release(ctx);
      throw err;
    }
    if (r === undefined) return limiter.release(ctx);
    return r.then(
      () => limiter.release(ctx),
      (err: unknown) => {
        limiter.release(ctx);
        throw err;
      },
    );
  };
  return {
    ...stage,
    around: (ctx, next) => {
      const admitted = limiter.admit(ctx);
      return admitted ? admitted.then(() => rest(ctx, next)) : rest(ctx, next);
    },
  };
}
