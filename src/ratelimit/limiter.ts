/**
 * The rate-limit stage (authorize → rate limit → session). It counts MCP calls,
 * not HTTP requests: every JSON-RPC request in the body is one call (a `tools/call` is one call, a
 * 2025-03-26 batch of five is five); notifications and responses posted by clients, and GET/DELETE,
 * are not counted. Per server (`servers.<name>.limits`):
 *
 *   key         per principal: an API key's consumer (a rotated key keeps the count), an OAuth
 *               subject, or the anonymous caller
 *   session     per MCP session (of that principal: a session id never spends another's budget)
 *   tenant      per tenant
 *   initialize  `initialize` calls per principal; initialize also counts against
 *               key and tenant, never session (it has none yet)
 *   tool/tools  `tools/call` per principal and tool; `tools` overrides the default `tool`
 *   concurrency.session  calls in flight per session, held until the call's work is over
 *
 * Every counter key holds the tenant and the server: no counter is shared across tenants. A call is
 * checked against every limit that applies and takes from all or none (CounterStore, src/store/types.ts). A refusal is 429
 * EDGE_RATE_LIMITED with `Retry-After`, `RateLimit-Policy` and `RateLimit`
 * (draft-ietf-httpapi-ratelimit-headers-11 §3-4) and JSON-RPC `data` naming the limit, the tool,
 * the wait and the policy, and is put on `ctx.refusal` for the audit stage.
 */
import { RateLimiterMemory } from "rate-limiter-flexible";
import type { ServerConfig } from "../config/schema.ts";
import type { IncomingHttpHeaders } from "node:http";
import type { Principal } from "../auth/types.ts";
import { GatewayError } from "../errors/errors.ts";
import { isRequest, type RpcMessage } from "../mcp/jsonrpc.ts";
import type { Logger } from "../observability/logger.ts";
import { parseRate, type RateSpec, TOOL_NAME } from "../config/rate.ts";
import { type Counter, type CounterStore, type Refusal, type Take } from "../store/types.ts";
import { MemoryCounterStore } from "../store/memory/counters.ts";

export type LimitKind = "key" | "session" | "tenant" | "tool" | "concurrency" | "initialize" | "authFailures";

/** What refused a request: on `ctx.refusal`, in the log and in the JSON-RPC error's `data`. */
export interface RateLimitRefusal {
  readonly limit: LimitKind;
  /** The tool, for `limit: "tool"` (absent when the call named no valid tool). */
  readonly tool?: string;
  /** When the refusing limit has room again (ms); 1000 for an in-flight cap (no window). */
  readonly retryAfterMs: number;
  /** The refusing policy as a RateLimit-Policy item, e.g. `"session";q=120;w=60`. */
  readonly policy: string;
}

/** In-flight slots a request holds (limits.concurrency), given back by `release`. */
export interface InflightSlot {
  readonly counter: Counter;
  readonly key: string;
  readonly points: number;
}

/**
 * What the stage reads of a request and writes back to it (the pipeline's context has these
 * fields): the refusal for the audit record, the in-flight slot to give back.
 */
export interface LimitedRequest {
  readonly route: { readonly name: string };
  readonly endpoint: string;
  readonly req: { readonly url?: string | undefined; readonly headers: IncomingHttpHeaders };
  readonly messages: readonly RpcMessage[] | undefined;
  readonly principal: Principal | undefined;
  refusal: RateLimitRefusal | undefined;
  inflightSlot: InflightSlot | undefined;
}

/** `limits.initialize` of a stdio server in `mode: session` that sets none: each one spawns a process. */
export const STDIO_INITIALIZE = parseRate("30/min");

/** One configured limit of one server. */
export interface Policy {
  readonly kind: LimitKind;
  readonly tool?: string;
  readonly quota: number;
  /** Whole seconds; 0 for an in-flight cap. */
  readonly windowSec: number;
  readonly counter: Counter;
  /** The RateLimit-Policy item. */
  readonly header: string;
  /** Words for the error message: what is counted. */
  readonly scope: string;
  /** First refusal per counter key and window is logged at info, the rest at debug. */
  readonly noticed: RateLimiterMemory;
}

interface RoutePolicies {
  key?: Policy;
  session?: Policy;
  tenant?: Policy;
  initialize?: Policy;
  tool?: Policy;
  tools: Map<string, Policy>;
  concurrency?: Policy;
}

interface LimitTake extends Take {
  policy: Policy;
}

const SCOPES: Record<LimitKind, string> = {
  key: "calls per principal",
  session: "calls per session",
  tenant: "calls per tenant",
  initialize: "initialize calls per principal",
  tool: "calls of this tool per principal",
  concurrency: "calls in flight per session",
  authFailures: "failed authentications per client address",
};

/** A policy from a rate spec (or an in-flight cap: windowSec 0). Exported for the auth-failure limiter. */
export function makePolicy(
  store: CounterStore,
  kind: LimitKind,
  spec: { quota: number; windowSec: number },
  tool?: string,
): Policy {
  const name = kind === "tool" && tool !== undefined ? `tool.${tool}` : kind;
  // RateLimit-Policy item (draft-ietf-httpapi-ratelimit-headers-11 §3.1): q = quota, w = window in
  // seconds; an in-flight cap has no window and counts `concurrent-requests` (§3.1.2).
  const header =
    spec.windowSec > 0
      ? `"${name}";q=${spec.quota};w=${spec.windowSec}`
      : `"${name}";q=${spec.quota};qu="concurrent-requests"`;
  return {
    kind,
    ...(tool !== undefined ? { tool } : {}),
    quota: spec.quota,
    windowSec: spec.windowSec,
    counter: store.counter(spec, name),
    header,
    scope: SCOPES[kind],
    noticed: new RateLimiterMemory({ points: 1, duration: spec.windowSec || 60, keyPrefix: "" }),
  };
}

/** The 429 for a refusal: headers per the RateLimit draft, `data` an agent can act on. */
export function refusalError(
  policy: Policy,
  msBeforeNext: number,
  tool: string | undefined,
): { error: GatewayError; refusal: RateLimitRefusal } {
  // No window (in-flight cap): a slot frees when some call ends; one second is a fair first wait.
  const retryAfterMs = msBeforeNext > 0 ? Math.ceil(msBeforeNext) : 1000;
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  const name = policy.header.slice(0, policy.header.indexOf(";"));
  const refusal: RateLimitRefusal = {
    limit: policy.kind,
    ...(tool !== undefined ? { tool } : {}),
    retryAfterMs,
    policy: policy.header,
  };
  const quota =
    policy.windowSec > 0
      ? `${policy.quota} ${policy.scope} per ${policy.windowSec}s`
      : `${policy.quota} ${policy.scope}`;
  const what = policy.kind === "tool" && tool !== undefined ? `"tool" (${tool})` : `"${policy.kind}"`;
  const error = new GatewayError(
    "EDGE_RATE_LIMITED",
    `Rate limit ${what} exceeded: ${quota}. Retry after ${seconds}s.`,
    {
      data: { ...refusal },
      headers: {
        // RFC 9110 §10.2.3; not earlier than the end of the effective window (draft §6).
        "retry-after": String(seconds),
        "ratelimit-policy": policy.header,
        // RateLimit (draft §4): nothing left under the refusing policy, for `t` seconds.
        ratelimit: policy.windowSec > 0 ? `${name};r=0;t=${seconds}` : `${name};r=0`,
      },
    },
  );
  return { error, refusal };
}

/** Logs the first refusal per counter key and window at info (the rest at debug). */
export function noticeRefusal(
  log: Logger,
  policy: Policy,
  key: string,
  fields: Record<string, unknown>,
): void {
  policy.noticed.consume(key).then(
    () => log.info(fields, "rate limit refused a call"),
    () => log.debug(fields, "rate limit refused a call"),
  );
}

function sessionIdOf(ctx: LimitedRequest): string | undefined {
  let id: string | string[] | null | undefined;
  if (ctx.endpoint === "legacy-messages") {
    id = new URL(ctx.req.url ?? "/", "http://edge").searchParams.get("sessionId");
  } else {
    id = ctx.req.headers["mcp-session-id"];
  }
  // The session stage validates the id; one it will refuse (400) is not worth a counter.
  return typeof id === "string" && id.length > 0 && id.length <= 256 ? id : undefined;
}

/**
 * The limits of every server, and the stage that applies them. Built at boot from the validated
 * config (a bad limit fails the start, in the schema); `store` is where counters live.
 */
export class CallLimiter {
  readonly #routes = new Map<string, RoutePolicies>();
  /** The limits of each server as configured (JSON), to keep the policies of unchanged ones. */
  readonly #configured = new Map<string, string>();
  readonly #store: CounterStore;
  readonly #log: Logger;

  constructor(
    servers: Record<string, ServerConfig>,
    log: Logger,
    store: CounterStore = new MemoryCounterStore(),
  ) {
    this.#store = store;
    this.#log = log;
    this.configure(servers);
  }

  /**
   * Sets the limits of every server (boot, and a config reload): a server whose limits are
   * unchanged keeps its policies and their counters; changed ones are made anew.
   */
  configure(servers: Record<string, ServerConfig>): void {
    for (const name of this.#configured.keys()) {
      if (name in servers) continue;
      this.#configured.delete(name);
      this.#routes.delete(name);
    }
    for (const [name, cfg] of Object.entries(servers)) {
      const text = JSON.stringify(cfg.limits ?? null);
      if (this.#configured.get(name) === text) continue;
      this.#configured.set(name, text);
      // stdio `mode: session` spawns a process per initialize: limited by default.
      const spawns = cfg.upstream.stdio?.mode === "session";
      const l = cfg.limits ?? (spawns ? { tools: {}, concurrency: {} } : undefined);
      const p = l ? this.#policiesOf(l, spawns) : undefined;
      if (p) this.#routes.set(name, p);
      else this.#routes.delete(name);
    }
  }

  #policiesOf(l: NonNullable<ServerConfig["limits"]>, spawns = false): RoutePolicies | undefined {
    const store = this.#store;
    const make = (kind: LimitKind, spec: RateSpec | undefined, tool?: string) =>
      spec ? makePolicy(store, kind, spec, tool) : undefined;
    const p: RoutePolicies = { tools: new Map() };
    const set = <K extends keyof RoutePolicies>(k: K, v: RoutePolicies[K] | undefined) => {
      if (v !== undefined) p[k] = v;
    };
    set("key", make("key", l.key));
    set("session", make("session", l.session));
    set("tenant", make("tenant", l.tenant));
    set("initialize", make("initialize", l.initialize ?? (spawns ? STDIO_INITIALIZE : undefined)));
    set("tool", make("tool", l.tool));
    for (const [tool, spec] of Object.entries(l.tools))
      p.tools.set(tool, makePolicy(store, "tool", spec, tool));
    const inflight = l.concurrency.session;
    if (inflight !== undefined)
      p.concurrency = makePolicy(store, "concurrency", { quota: inflight, windowSec: 0 });
    const any = p.key || p.session || p.tenant || p.initialize || p.tool || p.tools.size > 0 || p.concurrency;
    return any ? p : undefined;
  }

  /**
   * Whether any server has an in-flight cap (the stage then gives slots back as calls end). Read
   * when the stage is built: a reload that changes limits builds the pipeline again.
   */
  get tracksInflight(): boolean {
    for (const p of this.#routes.values()) if (p.concurrency !== undefined) return true;
    return false;
  }

  /**
   * The stage. Undefined when nothing applies (no await on the hot path of an unlimited route) or
   * when a store that counts in this process admitted the call; otherwise a promise that resolves
   * when admitted or rejects with EDGE_RATE_LIMITED.
   */
  admit(ctx: LimitedRequest): Promise<void> | undefined {
    const p = this.#routes.get(ctx.route.name);
    const messages = ctx.messages;
    const principal = ctx.principal;
    if (p === undefined || messages === undefined || principal === undefined) return undefined;
    let calls = 0;
    let inits = 0;
    for (const m of messages) {
      if (!isRequest(m)) continue;
      calls++;
      if (m.method === "initialize") inits++;
    }
    if (calls === 0) return undefined;

    // Counter keys: tenant and server first, length-prefixed where a value is free text, so no two
    // (tenant, principal, session) triples can spell the same key.
    const tenant = principal.tenant ?? "";
    const server = ctx.route.name;
    const tenantKey = `${tenant.length}:${tenant}|${server}`;
    const principalKey = `${tenantKey}|${principal.id.length}:${principal.id}`;
    const takes: LimitTake[] = [];
    const add = (policy: Policy | undefined, key: string, points: number) => {
      if (policy !== undefined && points > 0) takes.push({ policy, counter: policy.counter, key, points });
    };
    add(p.key, principalKey, calls);
    add(p.tenant, tenantKey, calls);
    add(p.initialize, principalKey, inits);
    const sessionId = p.session || p.concurrency ? sessionIdOf(ctx) : undefined;
    const sessionKey = sessionId !== undefined ? `${principalKey}|${sessionId}` : undefined;
    let slot: InflightSlot | undefined;
    if (sessionKey !== undefined) {
      add(p.session, sessionKey, calls);
      if (p.concurrency) {
        add(p.concurrency, sessionKey, calls);
        slot = { counter: p.concurrency.counter, key: sessionKey, points: calls };
      }
    }
    if (p.tool || p.tools.size > 0) {
      for (const m of messages) {
        if (!isRequest(m) || m.method !== "tools/call") continue;
        const name = (m.params as { name?: unknown } | undefined)?.name;
        const valid = typeof name === "string" && TOOL_NAME.test(name);
        // "?" cannot occur in a valid tool name: every invalid name shares one bucket.
        add(valid ? (p.tools.get(name) ?? p.tool) : p.tool, `${principalKey}|${valid ? name : "?"}`, 1);
      }
    }
    if (takes.length === 0) return undefined;
    const decided = (refused: Refusal | undefined): void => {
      if (refused === undefined) {
        if (slot !== undefined) ctx.inflightSlot = slot;
        return;
      }
      const take = takes[refused.index] as LimitTake;
      const policy = take.policy;
      const tool = policy.kind === "tool" ? (policy.tool ?? validToolOf(take.key)) : undefined;
      const { error, refusal } = refusalError(policy, refused.msBeforeNext, tool);
      ctx.refusal = refusal;
      noticeRefusal(this.#log, policy, take.key, { ...refusal, principal: principal.id });
      throw error;
    };
    // A store that counts in this process decides at once: an admitted call awaits nothing.
    if (this.#store.takeNow) {
      try {
        decided(this.#store.takeNow(takes));
        return undefined;
      } catch (err) {
        return Promise.reject(err as Error);
      }
    }
    return this.#store.take(takes).then(decided);
  }

  /** Gives back the in-flight slots of a request whose work is over. Idempotent. */
  release(ctx: LimitedRequest): void {
    const slot = ctx.inflightSlot;
    if (slot === undefined) return;
    ctx.inflightSlot = undefined;
    this.#store.give(slot.counter, slot.key, slot.points);
  }
}

/** The tool named at the end of a tool counter key, unless it is the shared invalid-name bucket. */
function validToolOf(key: string): string | undefined {
  const tool = key.slice(key.lastIndexOf("|") + 1);
  return tool === "?" ? undefined : tool;
}
