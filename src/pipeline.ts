import type { Authenticator } from "./auth/authenticate.ts";
import { authorize, filterToolsList, toolAllowed } from "./auth/authorize.ts";
import type { Principal, RequestContext } from "./context.ts";
import { GatewayError } from "./errors/errors.ts";
import type { LegacyBridge } from "./forward/legacy.ts";
import type { Forwarder } from "./forward/streamable.ts";
import { detectEra, isKnownVersion, metaProtocolVersion, validateStatelessHeaders } from "./listen/era.ts";
import {
  checkHostAndOrigin,
  checkPostHeaders,
  checkSessionId,
  readBody,
  single,
  validSessionId,
} from "./listen/hygiene.ts";
import { decodeBody, isRequest, parseBody } from "./listen/jsonrpc.ts";
import { logScope } from "./observability/logger.ts";
import type { CallLimiter } from "./ratelimit/limiter.ts";
import { type SessionManager, sessionOwner } from "./session/manager.ts";

export interface PipelineDeps {
  authenticator: Authenticator;
  forwarder: Forwarder;
  legacy: LegacyBridge;
  sessions: SessionManager;
  /** Host header values served; undefined = any. */
  hosts: () => Set<string> | undefined;
  origins: ReadonlySet<string>;
  maxBodyBytes: number;
  /** Rate limits (src/ratelimit/limiter.ts); absent: none. */
  limiter?: CallLimiter;
  /** The audit log's admission check (src/audit/log.ts); absent = no audit gate. */
  audit?: { accepting(): boolean };
}

/**
 * The request pipeline: the one place where the order of the stages lives (DESIGN.md). Each step
 * says why it stands where it does. Config turns stages on and tunes them; it never reorders them.
 *
 *   host/origin → method → authenticate (+ tenant) → body → era → authorize → rate limit
 *     → session → forward
 *
 * docs/lifecycle.md draws the same picture with what each stage answers.
 */
export class Pipeline {
  readonly #d: PipelineDeps;

  constructor(deps: PipelineDeps) {
    this.#d = deps;
  }

  async handle(ctx: RequestContext): Promise<void> {
    const { req } = ctx;

    // 1. Host and Origin, first of all: a page that rebinds DNS to the edge, or a foreign site,
    //    must learn nothing, not even an auth challenge (MCP transports, Security Warning; 403).
    checkHostAndOrigin(req, this.#d.hosts(), this.#d.origins);

    // 2. Method: the transport's methods per endpoint (405 with Allow otherwise).
    const method = req.method ?? "";
    const allowed =
      ctx.endpoint === "mcp" ? ["GET", "POST", "DELETE"] : ctx.endpoint === "legacy-sse" ? ["GET"] : ["POST"];
    if (!allowed.includes(method)) {
      throw new GatewayError("EDGE_METHOD_NOT_ALLOWED", undefined, {
        headers: { allow: allowed.join(", ") },
      });
    }

    // 3. Authenticate before reading the body: credentials are in the headers, and a client that
    //    cannot authenticate must not make the edge buffer a body. Every request authenticates;
    //    a session id never does (security.md D38).
    ctx.principal = await this.#d.authenticator.authenticate(req, ctx.route);
    const scope = logScope.getStore();
    if (scope) scope.tenant = ctx.principal.tenant;

    // 4. Body: capped (413), JSON only (415), a valid JSON-RPC message (400 -32700 / -32600).
    if (method === "POST") {
      checkPostHeaders(req, ctx.endpoint === "mcp");
      // Decoded once: the text parsed is the text forwarded.
      const body = decodeBody(await readBody(req, this.#d.maxBodyBytes));
      const parsed = parseBody(body, { allowBatch: true });
      ctx.body = body;
      ctx.messages = parsed.messages;
      ctx.batch = parsed.batch;
    }
    const first = ctx.messages?.[0];
    const rpcId = first && isRequest(first) && !ctx.batch ? first.id : null;
    try {
      await this.#afterBody(ctx, method);
    } catch (err) {
      throw err instanceof GatewayError ? err.withRpcId(rpcId) : err;
    }
  }

  async #afterBody(ctx: RequestContext, method: string): Promise<void> {
    const { req } = ctx;
    if (ctx.endpoint === "legacy-sse") return this.#d.legacy.open(ctx);
    if (ctx.endpoint === "legacy-messages") {
      this.#authorize(ctx);
      // Rate limits, as in 5c below (session: the `sessionId` of the messages URL).
      const limited = this.#d.limiter?.admit(ctx);
      if (limited) await limited;
      return this.#d.legacy.message(ctx);
    }

    // 5. Era, per request (a dual-era endpoint picks per request: 2026-07-28 transports). Header
    //    claims are checked against the body before anything relies on them (routing, limits).
    const version = single(req, "mcp-protocol-version");
    const sessionHeader = single(req, "mcp-session-id");
    const first = ctx.messages?.[0];
    const rpcMethod = first && "method" in first ? first.method : undefined;
    const metaVersion = first && !ctx.batch ? metaProtocolVersion(first) : undefined;
    const unknownVersion =
      (version !== undefined && !isKnownVersion(version)) ||
      (metaVersion !== undefined && !isKnownVersion(metaVersion));
    // A session negotiated a version the edge knows: anything else on it is refused here. Without a
    // session, only the upstream knows which versions it supports, so a request in a version unknown
    // to the edge goes there statelessly and the upstream's own -32022 (listing them) answers it.
    if (unknownVersion && (sessionHeader !== undefined || rpcMethod === undefined)) {
      throw new GatewayError(
        "EDGE_PROTOCOL_VERSION_UNSUPPORTED",
        `Unsupported MCP-Protocol-Version: ${(version ?? metaVersion ?? "").slice(0, 40)}`,
      );
    }
    ctx.era =
      unknownVersion && rpcMethod !== "initialize"
        ? "stateless"
        : detectEra({
            method: rpcMethod,
            headerVersion: version,
            metaVersion,
            hasSessionHeader: sessionHeader !== undefined,
          });
    if (ctx.era === "stateless") {
      // 2026-07-28 is POST only (GET/DELETE → 405) and has no batches.
      if (method !== "POST") {
        throw new GatewayError("EDGE_METHOD_NOT_ALLOWED", undefined, { headers: { allow: "POST" } });
      }
      if (ctx.batch) throw new GatewayError("EDGE_BATCH_REJECTED");
      validateStatelessHeaders({ get: (n) => single(req, n) }, first as NonNullable<typeof first>);
      this.#authorize(ctx);
      // Rate limits, as in 5c below (no session in this era: key, tenant, tool).
      const limited = this.#d.limiter?.admit(ctx);
      if (limited) await limited;
      return this.#d.forwarder.stateless(ctx);
    }

    // 5b. Authorize (both eras): tool allow-lists and scopes, from the body (the headers were
    //     checked against it), before any upstream call or session work.
    this.#authorize(ctx);

    // 5c. Rate limits (src/ratelimit/limiter.ts): after authorize, so a call refused there spends
    //     no quota; before session work and the upstream, so a refused call costs neither. Counts
    //     the MCP calls in the body (not notifications or responses), against every limit that
    //     applies, all or none. Undefined when nothing applies or the memory store admitted it.
    //     Distributed mode: a session record this instance has no fresh copy of is read in the
    //     same round trip as the decision (a read only: the session stage below still decides).
    const isInitialize = rpcMethod === "initialize";
    if (!isInitialize && sessionHeader !== undefined && validSessionId(sessionHeader))
      this.#d.sessions.prefetch(sessionHeader);
    const limited = this.#d.limiter?.admit(ctx);
    if (limited) await limited;

    // 6. Session (session era): the id must name a live session of this route owned by this
    //    principal; anything else is 404, a missing id 400 (MCP transports, Session Management).
    if (!isInitialize) {
      if (sessionHeader === undefined) throw new GatewayError("EDGE_SESSION_REQUIRED");
      checkSessionId(sessionHeader);
      ctx.session = await this.#d.sessions.load(ctx.route, sessionHeader, sessionOwner(ctx.principal));
    } else {
      // A session that could not be stored would be lost: refuse before the upstream opens one.
      this.#d.sessions.assertAvailable();
    }

    // 7. Forward.
    if (method === "POST") return this.#d.forwarder.post(ctx);
    if (method === "GET") {
      const accept = (req.headers.accept ?? "").toLowerCase();
      if (!accept.includes("text/event-stream") && !accept.includes("*/*")) {
        throw new GatewayError("EDGE_NOT_ACCEPTABLE", "GET needs Accept: text/event-stream.");
      }
      return this.#d.forwarder.get(ctx);
    }
    return this.#d.forwarder.delete(ctx);
  }

  /**
   * Per-call authorization, and the tools/list rewrite that hides tools the principal may not call.
   */
  #authorize(ctx: RequestContext): void {
    const principal = ctx.principal as Principal;
    const messages = ctx.messages;
    // Audit gate (security.md fault policy "Audit sink"): every path to the upstream passes here,
    // so a tools/call is refused (503) rather than run unaudited while the audit spool is full.
    // Other methods continue. The refusal is itself queued for the audit log.
    if (
      this.#d.audit?.accepting() === false &&
      messages?.some((m) => isRequest(m) && m.method === "tools/call")
    ) {
      throw new GatewayError("EDGE_AUDIT_UNAVAILABLE");
    }
    if (!messages || principal.method === "none") return;
    const route = ctx.route;
    authorize(route.config, principal, messages, (scope) =>
      this.#d.authenticator.challenge(route, "insufficient_scope", scope),
    );
    if (messages.some((m) => isRequest(m) && m.method === "tools/list")) {
      ctx.rewrite = (data) => filterToolsList(data, (tool) => toolAllowed(route.config, principal, tool));
    }
  }
}
