import { randomBytes } from "node:crypto";
import { sessionHash } from "../lib/session-hash.ts";
import type { Principal } from "../auth/types.ts";
import { GatewayError } from "../errors/errors.ts";
import type { RpcRequest } from "../mcp/jsonrpc.ts";
import { type SessionEvent, sessionChannel } from "../observability/channels.ts";
import type { Logger } from "../observability/logger.ts";
import type { SessionRecord, SessionStore } from "../store/types.ts";
import {
  type ForwardContext,
  type Route,
  type UpstreamSession,
  UpstreamSessionLost,
} from "../upstream/types.ts";
import { common, commonParamsOf } from "./intern.ts";
import type { StreamRegistry } from "./streams.ts";

/** 256 random bits, base64url: visible ASCII, no structure. */
export function mintSessionId(): string {
  return randomBytes(32).toString("base64url");
}

/**
 * Who owns a session: every later request on it must come from the same owner (else 404). The
 * principal, and for OAuth also the client application the token was issued to (`client_id`, else
 * `azp`): the same user's token minted for another client is another owner, as another user is
 * (MCP security best practices, "Session Hijacking": bind sessions to user-specific information),
 * while a refreshed token of the same client continues the session. The client id is appended as
 * JSON text (`#client="app"`, `#client=null` for a token naming none).
 */
export function sessionOwner(principal: Principal | undefined): string {
  if (!principal) return "anonymous";
  if (principal.method !== "oauth") return principal.id;
  return `${principal.id}#client=${JSON.stringify(principal.clientId ?? null)}`;
}

/** A short, stable, non-reversible tag for logs: session ids themselves are never logged. */
export { sessionHash };

/**
 * Distributed mode (src/store/distributed.ts): other instances serve the same sessions. Given to
 * the manager, it makes the hot cache a short-lived copy (re-read after `hotTtlMs`, dropped at
 * once when another instance announces a change), fails session requests closed and fast while
 * the shared store is unreachable (503, never 404), and lets one instance at a
 * time reap idle sessions or re-initialize a given session upstream.
 */
export interface SessionSharing {
  hotTtlMs: number;
  /** The shared store is connected (a session with a fresh local copy can be served). */
  ready(): boolean;
  /** The shared store is connected and its breaker lets calls go (a new session can be stored). */
  available(): boolean;
  tryLock(name: string, ttlMs: number): Promise<boolean>;
  /** Tells the other instances that this session ended or moved upstream. */
  announce(id: string): void;
}

interface HotEntry {
  rec: SessionRecord;
  /** When the record was read from (or written to) the store. */
  at: number;
}

/** How long a failed session read answers the reads that join it (ms; see `#read`). */
const FAILED_READ_JOIN_MS = 100;

/** How long an instance waits for another one that is re-initializing the same session (ms). */
const REINIT_WAIT_MS = 10_000;

/**
 * Owns session records: lookup with owner binding, creation, re-initialization on backend loss,
 * ending, and the idle reaper.
 */
export class SessionManager {
  readonly #store: SessionStore;
  readonly #streams: StreamRegistry;
  readonly #log: Logger;
  readonly #routes: Map<string, Route>;
  readonly #reinit = new Map<string, Promise<UpstreamSession>>();
  /**
   * Hot cache of session records (memory for hot caches), so a call does not read the
   * store. Every change made here (create, rebind, end) updates it; the store stays the truth
   * after a restart. Bounded: the oldest entries go first.
   */
  readonly #hot = new Map<string, HotEntry>();
  /** Store reads under way, by session id (`#read`). */
  readonly #reading = new Map<string, Promise<SessionRecord | undefined>>();
  static readonly HOT_MAX = 50_000;
  readonly #timer: NodeJS.Timeout;
  readonly #reapEvery: number;
  readonly #sharing: SessionSharing | undefined;
  #reapFailedAt = 0;

  constructor(
    store: SessionStore,
    streams: StreamRegistry,
    routes: Map<string, Route>,
    log: Logger,
    sharing?: SessionSharing,
  ) {
    this.#store = store;
    this.#streams = streams;
    this.#routes = routes;
    this.#log = log;
    this.#sharing = sharing;
    const minTtl = Math.min(...[...routes.values()].map((r) => r.config.sessions.idleTtl));
    this.#reapEvery = Math.max(1000, Math.min(60_000, minTtl / 10));
    this.#timer = setInterval(() => void this.reap(), this.#reapEvery);
    this.#timer.unref();
  }

  /**
   * Another instance changed this session (ended it, or re-bound it upstream): forget the local
   * copy; when the record is gone, end this instance's streams of it too.
   */
  changedElsewhere(id: string): void {
    this.#hot.delete(id);
    this.#store.get(id).then(
      (rec) => {
        if (!rec) this.#streams.dropSession(id);
      },
      () => undefined, // store down: the streams end with their TTL or at the session's next request
    );
  }

  /** Every local copy is suspect (the broadcast was cut off): read records again. */
  forgetAll(): void {
    this.#hot.clear();
  }

  /** Session work cannot start while the shared store is unreachable (503 + Retry-After, fast). */
  assertAvailable(): void {
    if (this.#sharing && !this.#sharing.ready()) throw new GatewayError("EDGE_STORE_UNAVAILABLE");
  }

  /**
   * A new session cannot start while its record could not be stored: the store unreachable, or its
   * breaker open after repeated timeouts (503 + Retry-After at once, before the upstream opens one).
   */
  assertCanOpen(): void {
    if (this.#sharing && !this.#sharing.available()) throw new GatewayError("EDGE_STORE_UNAVAILABLE");
  }

  get store(): SessionStore {
    return this.#store;
  }

  /**
   * Distributed mode: starts reading a session whose local copy is missing or older than
   * `hotTtlMs`, so that the read leaves with the call's rate-limit decision (ioredis sends the
   * commands of one event-loop turn in one write: one round trip per call) instead of after it. The
   * record read becomes the local copy; `load` joins a read still under way. Nothing else happens
   * here (no touch, no idle check, no ownership check: `load` does those). A no-op in embedded mode,
   * for a fresh copy, and while the store is unreachable.
   */
  prefetch(id: string): void {
    if (!this.#sharing || !this.#sharing.ready()) return;
    const hit = this.#hot.get(id);
    if (hit && Date.now() - hit.at < this.#sharing.hotTtlMs) return;
    this.#read(id).catch(() => undefined); // `load` reads again and answers the error
  }

  /**
   * One store read per session at a time (a `load` joins the read a `prefetch` started); the record
   * read becomes the local copy before the read is over, so a `load` after it finds it fresh.
   */
  #read(id: string): Promise<SessionRecord | undefined> {
    let pending = this.#reading.get(id);
    if (pending === undefined) {
      pending = this.#store.get(id).then(
        (rec) => {
          this.#reading.delete(id);
          if (rec) this.#remember(rec);
          else this.#hot.delete(id);
          return rec;
        },
        (err: unknown) => {
          // A failed read stays joinable for a moment: the `load` of the request whose prefetch it
          // was (after the rate-limit decision that shared its round trip) takes this answer
          // instead of waiting for the store a second time.
          setTimeout(() => {
            if (this.#reading.get(id) === pending) this.#reading.delete(id);
          }, FAILED_READ_JOIN_MS).unref();
          throw err;
        },
      );
      this.#reading.set(id, pending);
    }
    return pending;
  }

  /**
   * The session a request names. Unknown, expired, another route's or another owner's session
   * all answer the same 404: the id alone proves nothing and reveals nothing.
   * `owner` is `sessionOwner(principal)`.
   */
  async load(route: Route, id: string, owner: string): Promise<SessionRecord> {
    this.assertAvailable();
    let now = Date.now();
    const hit = this.#hot.get(id);
    let rec = hit && (!this.#sharing || now - hit.at < this.#sharing.hotTtlMs) ? hit.rec : undefined;
    const fromCache = rec !== undefined;
    if (!rec) {
      rec = await this.#read(id); // the local copy from now on (or none)
      now = Date.now();
    }
    if (!rec || rec.server !== route.name || rec.principal !== owner) {
      throw new GatewayError("EDGE_SESSION_NOT_FOUND");
    }
    if (now - rec.lastSeenAt > route.config.sessions.idleTtl && fromCache && this.#sharing) {
      // Idle by this instance's copy only: the client may have been served by another one since.
      rec = await this.#store.get(id);
      if (!rec) {
        this.#hot.delete(id);
        throw new GatewayError("EDGE_SESSION_NOT_FOUND");
      }
      this.#remember(rec);
    }
    if (now - rec.lastSeenAt > route.config.sessions.idleTtl) {
      await this.end(route, rec, "idle");
      throw new GatewayError("EDGE_SESSION_NOT_FOUND");
    }
    this.#store.touch(id, now);
    rec.lastSeenAt = now;
    return rec;
  }

  /**
   * A new session of `route` for `principal`, bound to the upstream session just opened: the one
   * place a session record is made (Streamable HTTP and legacy SSE alike). Stored before the client
   * learns its id.
   */
  async open(
    route: Route,
    principal: Principal | undefined,
    opened: {
      /** The id to use (legacy SSE names it in its endpoint event first); minted when absent. */
      id?: string;
      transport: SessionRecord["transport"];
      protocolVersion: string;
      initParams: Record<string, unknown>;
      upstream: SessionRecord["upstream"];
    },
  ): Promise<SessionRecord> {
    const now = Date.now();
    const rec: SessionRecord = {
      id: opened.id ?? mintSessionId(),
      server: route.name,
      principal: sessionOwner(principal),
      tenant: principal?.tenant ?? null,
      transport: opened.transport,
      protocolVersion: opened.protocolVersion,
      initParams: opened.initParams,
      upstream: opened.upstream,
      createdAt: now,
      lastSeenAt: now,
    };
    await this.create(rec);
    return rec;
  }

  async create(rec: SessionRecord): Promise<void> {
    try {
      await this.#store.put(rec);
    } catch (err) {
      // No record, no session: end the one just opened upstream rather than leave it orphaned.
      const route = this.#routes.get(rec.server);
      if (route)
        void route.upstream
          .attach(rec.upstream, rec.id)
          .terminate()
          .catch(() => undefined);
      throw err;
    }
    this.#remember(rec);
    if (sessionChannel.hasSubscribers) {
      const event: SessionEvent = {
        kind: "start",
        sessionId: rec.id,
        server: rec.server,
        tenant: rec.tenant,
        principal: rec.principal,
        createdAt: rec.createdAt,
        protocolVersion: rec.protocolVersion,
      };
      sessionChannel.publish(event);
    }
    this.#log.info(
      { session: sessionHash(rec.id), server: rec.server, instance: rec.upstream.instance },
      "session started",
    );
  }

  /**
   * The live upstream session of a record, re-created when its instance or process is gone and the
   * route says `reinitialize`: the client's initialize is replayed on a healthy instance, followed
   * by notifications/initialized, and the record is re-bound. Concurrent callers share one replay.
   */
  async upstreamOf(
    route: Route,
    rec: SessionRecord,
    lost?: UpstreamSessionLost,
    headers: Record<string, string> = {},
  ): Promise<UpstreamSession> {
    if (!lost) {
      try {
        return route.upstream.attach(rec.upstream, rec.id);
      } catch (err) {
        if (!(err instanceof UpstreamSessionLost)) throw err;
        lost = err;
      }
    }
    if (this.#sharing) {
      // Another instance may have moved the session already (or is moving it right now).
      const moved = await this.#movedElsewhere(route, rec);
      if (moved) return moved;
    }
    if (route.config.sessions.onBackendLoss === "expire") {
      await this.end(route, rec, "backend lost");
      throw new GatewayError("EDGE_SESSION_BACKEND_LOST", undefined, { cause: lost });
    }
    let pending = this.#reinit.get(rec.id);
    if (!pending) {
      pending = this.#reinitialize(route, rec, lost, headers).finally(() => this.#reinit.delete(rec.id));
      this.#reinit.set(rec.id, pending);
    }
    return pending;
  }

  /**
   * Distributed mode: the session as another instance re-bound it, if it did; when another
   * instance holds the re-initialize lock, waits for its new binding. Undefined: this instance
   * re-initializes.
   */
  async #movedElsewhere(route: Route, rec: SessionRecord): Promise<UpstreamSession | undefined> {
    const sharing = this.#sharing as SessionSharing;
    const failed = rec.upstream;
    const attachIfMoved = async (): Promise<UpstreamSession | undefined> => {
      const now = await this.#store.get(rec.id);
      if (!now) throw new GatewayError("EDGE_SESSION_NOT_FOUND");
      if (now.upstream.instance === failed.instance && now.upstream.sessionId === failed.sessionId)
        return undefined;
      try {
        const s = route.upstream.attach(now.upstream, rec.id);
        rec.upstream = now.upstream;
        rec.protocolVersion = now.protocolVersion;
        this.#remember(rec);
        return s;
      } catch (err) {
        if (err instanceof UpstreamSessionLost) return undefined; // moved to what this instance cannot reach
        throw err;
      }
    };
    const moved = await attachIfMoved();
    if (moved) return moved;
    if (await sharing.tryLock(`reinit:${rec.id}`, REINIT_WAIT_MS)) return undefined;
    const deadline = Date.now() + REINIT_WAIT_MS;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      const s = await attachIfMoved();
      if (s) return s;
    }
    return undefined;
  }

  async #reinitialize(
    route: Route,
    rec: SessionRecord,
    cause: UpstreamSessionLost,
    headers: Record<string, string>,
  ): Promise<UpstreamSession> {
    const request: RpcRequest = {
      jsonrpc: "2.0",
      id: `mcp-edge-reinit-${randomBytes(6).toString("hex")}`,
      method: "initialize",
      params: rec.initParams,
    };
    const ctx: ForwardContext = {
      requestId: `reinit-${sessionHash(rec.id)}`,
      protocolVersion: undefined,
      // The identity of the request that found the session lost: the upstream binds the new
      // session to the same principal.
      headers,
      signal: AbortSignal.timeout(route.config.upstream.connectTimeout + 30_000),
      tenant: rec.tenant, // a respawned stdio process's egress credential names the session's tenant
    };
    const { session, reply } = await route.upstream.initialize(request, JSON.stringify(request), ctx);
    let result: { protocolVersion?: unknown } | undefined;
    if (reply.kind === "json") result = (reply.message as { result?: { protocolVersion?: unknown } }).result;
    if (reply.kind === "stream") {
      for await (const ev of reply.events) {
        const m = ev.message as { id?: unknown; result?: { protocolVersion?: unknown } } | null;
        if (m && m.id === request.id) {
          result = m.result;
          break;
        }
      }
      reply.close();
    }
    if (!session || !result) {
      await session?.terminate();
      throw new GatewayError("EDGE_UPSTREAM_UNAVAILABLE", "Re-initializing the session upstream failed.", {
        cause,
      });
    }
    const version = typeof result.protocolVersion === "string" ? result.protocolVersion : rec.protocolVersion;
    const initialized = JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" });
    const ack = await session.post(initialized, [JSON.parse(initialized)], {
      ...ctx,
      protocolVersion: version,
    });
    if (ack.kind === "stream") ack.close();
    rec.upstream = session.binding;
    rec.protocolVersion = version;
    await this.#store.rebind(rec.id, session.binding, version);
    this.#remember(rec);
    this.#sharing?.announce(rec.id);
    this.#log.info(
      {
        session: sessionHash(rec.id),
        server: route.name,
        instance: session.binding.instance,
        reason: cause.message,
      },
      "session re-initialized on a healthy upstream",
    );
    return session;
  }

  /** Ends a session: upstream first (DELETE / stop process), then its streams and record. */
  async end(route: Route, rec: SessionRecord, reason: string): Promise<void> {
    this.#streams.dropSession(rec.id);
    this.#hot.delete(rec.id);
    const existed = await this.#store.delete(rec.id);
    if (existed) this.#sharing?.announce(rec.id);
    if (existed && sessionChannel.hasSubscribers) {
      const event: SessionEvent = {
        kind: "end",
        sessionId: rec.id,
        server: rec.server,
        tenant: rec.tenant,
        principal: rec.principal,
        createdAt: rec.createdAt,
        protocolVersion: rec.protocolVersion,
        reason,
      };
      sessionChannel.publish(event);
    }
    try {
      await route.upstream.attach(rec.upstream, rec.id).terminate();
    } catch {
      // Nothing left upstream to end.
    }
    this.#log.info({ session: sessionHash(rec.id), server: rec.server, reason }, "session ended");
  }

  #remember(rec: SessionRecord): void {
    rec.server = common(rec.server);
    rec.principal = common(rec.principal);
    if (rec.tenant !== null) rec.tenant = common(rec.tenant);
    rec.protocolVersion = common(rec.protocolVersion);
    rec.upstream.instance = common(rec.upstream.instance);
    rec.initParams = commonParamsOf(rec.initParams);
    if (this.#hot.size >= SessionManager.HOT_MAX) {
      const oldest = this.#hot.keys().next().value;
      if (oldest !== undefined) this.#hot.delete(oldest);
    }
    this.#hot.delete(rec.id); // re-inserted last: the oldest entries are the first keys
    this.#hot.set(rec.id, { rec, at: Date.now() });
  }

  /**
   * Ends sessions idle past their route's TTL. In distributed mode one instance reaps per interval
   * (a lock); a store failure is logged and the next interval tries again.
   */
  async reap(): Promise<void> {
    try {
      if (this.#sharing && !(await this.#sharing.tryLock("reaper", this.#reapEvery))) return;
      const now = Date.now();
      for (const route of this.#routes.values()) {
        const idle = await this.#store.listIdle(route.name, now - route.config.sessions.idleTtl, 500);
        for (const rec of idle) await this.end(route, rec, "idle");
      }
    } catch (err) {
      const now = Date.now();
      if (now - this.#reapFailedAt > 60_000) {
        this.#reapFailedAt = now;
        this.#log.warn({ err: String(err) }, "idle-session reaper: store unavailable, retrying");
      }
    }
  }

  close(): void {
    clearInterval(this.#timer);
  }
}
