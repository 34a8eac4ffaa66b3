import type { UpstreamConfig } from "../config/schema.ts";
import { type Egress, type EgressRequest, type EgressResponse, isConnectError } from "../egress/index.ts";
import { GatewayError } from "../errors/errors.ts";
import type { RpcMessage, RpcRequest } from "../mcp/jsonrpc.ts";
import type { Logger } from "../observability/logger.ts";
import type { UpstreamBinding } from "../store/types.ts";
import { createCredentials, type UpstreamCredentials } from "./credentials.ts";
import { abortedWith } from "./deadline.ts";
import { DEFAULT_MAX_RESULT_BYTES, header, MAX_UPSTREAM_BODY, readBody, replyFromResponse } from "./reply.ts";
import {
  type ForwardContext,
  type InitializeOutcome,
  type InstanceHealth,
  type Upstream,
  type UpstreamReply,
  type UpstreamSession,
  UpstreamSessionLost,
} from "./types.ts";

interface Instance {
  url: string;
  healthy: boolean;
  failures: number;
  inflight: number;
  sessions: number;
}

/**
 * Sample servers of the v1 SDK answer an unknown session id with 400 and a message about the
 * session instead of the 404 the spec asks for; both mean the state is gone.
 */
function looksLikeLostSession(status: number, body: Buffer): boolean {
  if (status === 404) return true;
  if (status !== 400) return false;
  return /session/i.test(body.subarray(0, 2048).toString("utf8"));
}

/**
 * Streamable HTTP upstream with one or more instances. New sessions go to the healthy instance
 * with the fewest sessions and calls in flight; a session stays on its instance for its life
 * (its state lives there). Instances are probed actively (any HTTP answer below 500 is alive) and
 * marked down at once when a connection to them fails.
 */
export class HttpUpstream implements Upstream {
  readonly kind = "http" as const;
  readonly #instances: Instance[];
  readonly #cfg: UpstreamConfig;
  readonly #egress: Egress;
  readonly #log: Logger;
  readonly #creds: UpstreamCredentials;
  readonly #maxResult: number;
  #timer: NodeJS.Timeout | undefined;
  #rr = 0;

  constructor(
    cfg: UpstreamConfig,
    egress: Egress,
    log: Logger,
    sessionCounts?: Map<string, number>,
    credentials: UpstreamCredentials = createCredentials(undefined, egress, log),
    maxResultBytes = DEFAULT_MAX_RESULT_BYTES,
  ) {
    this.#cfg = cfg;
    this.#egress = egress;
    this.#log = log;
    this.#creds = credentials;
    this.#maxResult = maxResultBytes;
    this.#instances = (cfg.urls ?? []).map((url) => ({
      url,
      healthy: true,
      failures: 0,
      inflight: 0,
      sessions: sessionCounts?.get(url) ?? 0,
    }));
  }

  async start(): Promise<void> {
    await this.#probeAll();
    this.#timer = setInterval(() => void this.#probeAll(), this.#cfg.health.interval);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#creds.stop();
  }

  health(): InstanceHealth[] {
    return this.#instances.map((i) => ({
      id: i.url,
      healthy: i.healthy,
      sessions: i.sessions,
      inflight: i.inflight,
    }));
  }

  ready(): boolean {
    return this.#instances.some((i) => i.healthy);
  }

  async #probeAll(): Promise<void> {
    await Promise.all(this.#instances.map((i) => this.#probe(i)));
  }

  async #probe(inst: Instance): Promise<void> {
    let ok: boolean;
    try {
      // OPTIONS touches no MCP state: SDK servers answer it 405 without opening a stream.
      const res = await this.#egress.request(inst.url, {
        method: "OPTIONS",
        headers: {},
        signal: AbortSignal.timeout(this.#cfg.health.timeout),
        headersTimeout: this.#cfg.health.timeout,
      });
      res.body.resume();
      ok = res.status < 500;
    } catch {
      ok = false;
    }
    if (ok) {
      if (!inst.healthy) this.#log.info({ instance: inst.url }, "upstream instance is healthy again");
      inst.healthy = true;
      inst.failures = 0;
    } else if (++inst.failures >= this.#cfg.health.unhealthyAfter && inst.healthy) {
      inst.healthy = false;
      this.#log.warn({ instance: inst.url }, "upstream instance failed its health checks");
    }
  }

  #markDown(inst: Instance, err: unknown): void {
    if (inst.healthy)
      this.#log.warn({ instance: inst.url, err: String(err) }, "upstream instance unreachable");
    inst.healthy = false;
    inst.failures = this.#cfg.health.unhealthyAfter;
  }

  /** Healthy instances, least loaded first; ties broken round-robin. */
  #candidates(): Instance[] {
    const healthy = this.#instances.filter((i) => i.healthy);
    const start = this.#rr++ % Math.max(1, healthy.length);
    const rotated = [...healthy.slice(start), ...healthy.slice(0, start)];
    return rotated.sort((a, b) => a.sessions + a.inflight - (b.sessions + b.inflight));
  }

  #headers(ctx: ForwardContext, sessionId: string | null): Record<string, string> {
    const h: Record<string, string> = {
      ...this.#cfg.headers,
      ...ctx.headers,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "x-mcp-edge-request-id": ctx.requestId,
    };
    if (ctx.protocolVersion) h["mcp-protocol-version"] = ctx.protocolVersion;
    if (sessionId) h["mcp-session-id"] = sessionId;
    return h;
  }

  async #send(
    inst: Instance,
    method: "POST" | "GET" | "DELETE",
    headers: Record<string, string>,
    body: string | undefined,
    ctx: ForwardContext,
    longLived = method === "GET",
  ): Promise<EgressResponse> {
    inst.inflight++;
    try {
      const attempt = (creds: Record<string, string>) => {
        const req: EgressRequest = {
          method,
          // Credentials last: they replace any same-named static or forwarded header.
          headers: hasAny(creds) ? { ...headers, ...creds } : headers,
          signal: ctx.signal,
          stream: longLived,
          headersTimeout: this.#cfg.timeout,
          // No cap on the whole answer: each message of it is bounded by limits.maxResultBytes where
          // it is read (readBody for JSON, the SSE parser per event), with its own coded error.
          maxResponseBytes: Number.POSITIVE_INFINITY,
        };
        if (body !== undefined) req.body = body;
        return this.#egress.request(inst.url, req);
      };
      // The request's own (the user's token from the vault), else the upstream's configured ones.
      const source = ctx.credentials ?? this.#creds;
      const creds = source.now?.() ?? (await source.headers(ctx.signal));
      const res = await attempt(creds);
      // A 401 means the upstream did not process the request (RFC 9110 §15.5.2, RFC 6750 §3.1), so
      // sending it once more with renewed credentials is safe even for tools/call. One retry only;
      // a second 401 reaches the client as the upstream sent it.
      if (
        res.status !== 401 ||
        Object.keys(creds).length === 0 ||
        !(await source.refreshAfterRejection(creds))
      )
        return res;
      res.body.resume();
      return await attempt(await source.headers(ctx.signal));
    } catch (err) {
      if (isConnectError(err)) this.#markDown(inst, err);
      throw err;
    } finally {
      inst.inflight--;
    }
  }

  async initialize(_request: RpcRequest, body: string, ctx: ForwardContext): Promise<InitializeOutcome> {
    const candidates = this.#candidates();
    if (candidates.length === 0) throw new GatewayError("EDGE_UPSTREAM_UNAVAILABLE");
    let lastErr: unknown;
    // Nothing reached an instance that refused the connection, so the next one may be tried.
    for (const inst of candidates) {
      let res: EgressResponse;
      try {
        res = await this.#send(inst, "POST", this.#headers(ctx, null), body, ctx);
      } catch (err) {
        lastErr = err;
        if (isConnectError(err)) continue;
        throw upstreamFailure(err, ctx);
      }
      const upstreamSession = header(res, "mcp-session-id") ?? null;
      const reply = await readReply(res, ctx, this.#maxResult);
      if (reply.kind === "passthrough") return { session: null, reply };
      inst.sessions++;
      return { session: new HttpSession(this, inst, upstreamSession), reply };
    }
    throw new GatewayError("EDGE_UPSTREAM_UNAVAILABLE", undefined, { cause: lastErr });
  }

  attach(binding: UpstreamBinding): UpstreamSession {
    const inst = this.#instances.find((i) => i.url === binding.instance);
    if (!inst) throw new UpstreamSessionLost(`instance ${binding.instance} is no longer configured`);
    if (!inst.healthy) throw new UpstreamSessionLost(`instance ${binding.instance} is down`);
    return new HttpSession(this, inst, binding.sessionId);
  }

  async stateless(body: string, messages: RpcMessage[], ctx: ForwardContext): Promise<UpstreamReply> {
    const candidates = this.#candidates();
    if (candidates.length === 0) throw new GatewayError("EDGE_UPSTREAM_UNAVAILABLE");
    // The 2026-07-28 notification stream stays open indefinitely: stream pool, no idle timeout.
    const longLived = (messages[0] as { method?: string } | undefined)?.method === "subscriptions/listen";
    for (const inst of candidates) {
      try {
        const res = await this.#send(inst, "POST", this.#headers(ctx, null), body, ctx, longLived);
        return await replyFromResponse(res, this.#maxResult);
      } catch (err) {
        if (isConnectError(err)) continue;
        throw upstreamFailure(err, ctx);
      }
    }
    throw new GatewayError("EDGE_UPSTREAM_UNAVAILABLE");
  }

  /** @internal used by HttpSession */
  async sessionRequest(
    inst: Instance,
    sessionId: string | null,
    method: "POST" | "GET" | "DELETE",
    body: string | undefined,
    ctx: ForwardContext,
    lastEventId?: string,
  ): Promise<UpstreamReply> {
    const headers = this.#headers(ctx, sessionId);
    if (method !== "POST") {
      delete headers["content-type"];
      headers.accept = "text/event-stream";
    }
    if (lastEventId) headers["last-event-id"] = lastEventId;
    let res: EgressResponse;
    try {
      res = await this.#send(inst, method, headers, body, ctx);
    } catch (err) {
      if (isConnectError(err))
        throw new UpstreamSessionLost(`instance ${inst.url} is unreachable`, { cause: err });
      throw upstreamFailure(err, ctx);
    }
    if (sessionId !== null && res.status >= 400 && res.status < 500) {
      const buf = await readBody(res.body, MAX_UPSTREAM_BODY).catch((err: unknown) => {
        throw upstreamFailure(err, ctx);
      });
      if (looksLikeLostSession(res.status, buf)) {
        throw new UpstreamSessionLost(`instance ${inst.url} no longer knows the session (${res.status})`);
      }
      return { kind: "passthrough", status: res.status, contentType: header(res, "content-type"), body: buf };
    }
    return readReply(res, ctx, this.#maxResult);
  }

  /** @internal */
  released(inst: Instance): void {
    inst.sessions = Math.max(0, inst.sessions - 1);
  }
}

/** Whether an object has an own enumerable key (without building the list of keys). */
function hasAny(o: Record<string, string>): boolean {
  for (const _ in o) return true;
  return false;
}

/**
 * The reply of an answer whose headers arrived: its body is read under the same deadline, so an
 * upstream that drips its body past `upstream.timeout` is a timeout (504, the request's id), not an
 * internal error.
 */
function readReply(res: EgressResponse, ctx: ForwardContext, maxResult: number): Promise<UpstreamReply> {
  return replyFromResponse(res, maxResult).catch((err: unknown) => {
    throw upstreamFailure(err, ctx);
  });
}

function upstreamFailure(err: unknown, ctx: ForwardContext): GatewayError {
  const aborted = abortedWith(ctx.signal, err);
  if (aborted) return aborted;
  if (err instanceof GatewayError) return err;
  const code = (err as { code?: string }).code;
  if (code === "UND_ERR_HEADERS_TIMEOUT")
    return new GatewayError("EDGE_UPSTREAM_TIMEOUT", undefined, { cause: err });
  return new GatewayError("EDGE_UPSTREAM_ERROR", undefined, { cause: err });
}

class HttpSession implements UpstreamSession {
  readonly binding: UpstreamBinding;
  readonly #up: HttpUpstream;
  readonly #inst: Instance;

  constructor(up: HttpUpstream, inst: Instance, sessionId: string | null) {
    this.#up = up;
    this.#inst = inst;
    this.binding = { instance: inst.url, sessionId };
  }

  post(body: string, _messages: RpcMessage[], ctx: ForwardContext): Promise<UpstreamReply> {
    return this.#up.sessionRequest(this.#inst, this.binding.sessionId, "POST", body, ctx);
  }

  listen(ctx: ForwardContext, lastUpstreamEventId?: string): Promise<UpstreamReply> {
    return this.#up.sessionRequest(
      this.#inst,
      this.binding.sessionId,
      "GET",
      undefined,
      ctx,
      lastUpstreamEventId,
    );
  }

  async terminate(): Promise<void> {
    this.#up.released(this.#inst);
    if (this.binding.sessionId === null) return;
    try {
      const reply = await this.#up.sessionRequest(this.#inst, this.binding.sessionId, "DELETE", undefined, {
        requestId: "terminate",
        protocolVersion: undefined,
        headers: {},
        signal: AbortSignal.timeout(5000),
      });
      if (reply.kind === "stream") reply.close();
    } catch {
      // The session is being ended anyway; an instance that is gone has nothing left to end.
    }
  }
}
