import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { DatabaseSync } from "node:sqlite";
import { dirname, join } from "node:path";
import { AdminApi } from "./admin/api.ts";
import { isDashboardPath, serveDashboard } from "./admin/dashboard.ts";
import { KeyService } from "./admin/keys.ts";
import { Authenticator } from "./auth/authenticate.ts";
import { protectedResourceMetadata, resourceMetadataUrl, resourceUrl } from "./auth/challenge.ts";
import { IdentitySigner, SqliteIdentityKeyStore } from "./auth/identity.ts";
import { PostgresIdentityKeyStore } from "./auth/identity-postgres.ts";
import { OAuthVerifier } from "./auth/oauth.ts";
import { AuditLog } from "./audit/log.ts";
import { argsPolicy } from "./audit/record.ts";
import { PostgresAuditStore } from "./audit/postgres.ts";
import { SqliteAuditStore } from "./audit/sqlite.ts";
import { ListCache } from "./cache/list-cache.ts";
import type { Config } from "./config/schema.ts";
import { assessConfig } from "./config/warnings.ts";
import { type Endpoint, PublicRequestContext, type RequestContext, type Route } from "./context.ts";
import { Egress } from "./egress/index.ts";
import { EgressProxy } from "./egress/proxy.ts";
import { GatewayError } from "./errors/errors.ts";
import { sendError, toGatewayError } from "./errors/wire.ts";
import { LegacyBridge } from "./forward/legacy.ts";
import { Forwarder } from "./forward/streamable.ts";
import { allowedHostSet } from "./listen/hygiene.ts";
import { type RequestEndEvent, requestEndChannel } from "./observability/channels.ts";
import { createLogger, type Logger, logScope } from "./observability/logger.ts";
import { Metrics } from "./observability/metrics.ts";
import { Tracing } from "./observability/tracing.ts";
import { Pipeline } from "./pipeline.ts";
import { AuthFailureLimiter } from "./ratelimit/auth-failures.ts";
import { CallLimiter } from "./ratelimit/limiter.ts";
import { RedisCounterStore } from "./ratelimit/redis-store.ts";
import { SessionManager } from "./session/manager.ts";
import { RedisEventLog } from "./session/redis-events.ts";
import { StreamRegistry } from "./session/streams.ts";
import { type Distributed, openDistributed } from "./store/distributed.ts";
import { PostgresApiKeyStore } from "./store/postgres.ts";
import { RedisSessionStore } from "./store/redis.ts";
import { openDatabase, SqliteApiKeyStore, SqliteSessionStore } from "./store/sqlite.ts";
import type { ApiKeyStore, SessionStore } from "./store/types.ts";
import { createCredentials, type OAuthCredentialsConfig } from "./upstream/credentials.ts";
import { RedisTokenVault } from "./upstream/token-vault.ts";
import { HttpUpstream } from "./upstream/http.ts";
import { LegacySseUpstream } from "./upstream/legacy-sse.ts";
import { StdioUpstream } from "./upstream/stdio.ts";
import type { Upstream } from "./upstream/types.ts";

export interface GatewayOptions {
  logger?: Logger;
}

/** What `start` prepares (I/O) before the gateway is assembled. */
interface GatewayDeps {
  db: DatabaseSync;
  identity: IdentitySigner;
  oauth: OAuthVerifier | undefined;
  egress: Egress;
  log: Logger;
  audit: AuditLog;
  /** The egress proxy of stdio servers (started); undefined when no route spawns a process. */
  egressProxy: EgressProxy | undefined;
  /** Distributed mode: Redis and PostgreSQL shared with the other instances. */
  shared: Distributed | undefined;
}

/** Distributed mode: a hot session record is read again from Redis after this long (ms). */
const SHARED_HOT_TTL_MS = 5000;

/** Track promises of work in flight, for the drain. */
class Inflight {
  readonly #set = new Set<Promise<unknown>>();
  add(p: Promise<unknown>): void {
    // One reaction for both outcomes (settled() waits with allSettled, so a rejection is fine).
    const done = () => this.#set.delete(p);
    p.then(done, done);
    this.#set.add(p);
  }
  get size(): number {
    return this.#set.size;
  }
  async settled(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.#set.size > 0 && Date.now() < deadline) {
      await Promise.race([Promise.allSettled([...this.#set]), new Promise((r) => setTimeout(r, 100))]);
    }
    return this.#set.size === 0;
  }
}

function createUpstream(
  route: string,
  cfg: Config["servers"][string],
  egress: Egress,
  log: Logger,
  egressProxy?: EgressProxy,
  shared?: Distributed,
): Upstream {
  const u = cfg.upstream;
  const child = log.child({ server: route });
  if (u.stdio && cfg.credentials)
    throw new GatewayError(
      "EDGE_CONFIG_INVALID",
      `servers.${route}.credentials: a stdio upstream takes no HTTP credentials (pass secrets in its env)`,
    );
  // Validated here, at boot: a bad credentials block fails the start, not the first request.
  // Distributed mode: client-credentials tokens shared and refreshed by one instance at a time.
  const vault = shared
    ? (o: OAuthCredentialsConfig) =>
        new RedisTokenVault({
          redis: shared.redis,
          prefix: shared.prefix,
          identity: JSON.stringify([o.tokenUrl, o.clientId, o.scope ?? "", o.resource ?? ""]),
          secret: o.clientSecret,
          owner: shared.bus.id,
        })
    : undefined;
  const credentials = createCredentials(cfg.credentials, egress, child, vault);
  if (u.urls) return new HttpUpstream(u, egress, child, undefined, credentials);
  if (u.sse) return new LegacySseUpstream(u, egress, child, credentials);
  // Egress proxy: the spawned processes' HTTP_PROXY, checked against this server's egress block.
  return new StdioUpstream(
    u,
    child,
    egressProxy ? { proxy: egressProxy, server: route, rules: cfg.egress } : undefined,
  );
}

/**
 * The running edge: the public listener (MCP routes, health), the admin listener (health for now),
 * the session store, streams and upstreams. `start` resolves once both listeners accept; `stop`
 * drains (SIGTERM semantics).
 */
export class Gateway {
  readonly config: Config;
  readonly log: Logger;
  readonly routes = new Map<string, Route>();
  readonly #byPath = new Map<string, { route: Route; endpoint: Endpoint }>();
  readonly #egress: Egress;
  /** The egress proxy of spawned stdio servers (src/egress/proxy.ts), when a route spawns any. */
  readonly egressProxy: EgressProxy | undefined;
  readonly #db: DatabaseSync;
  readonly #shared: Distributed | undefined;
  readonly #store: SessionStore;
  readonly #keyStore: ApiKeyStore;
  readonly #counters: RedisCounterStore | undefined;
  readonly #events: RedisEventLog | undefined;
  readonly #identity: IdentitySigner;
  readonly #oauth: OAuthVerifier | undefined;
  readonly #admin: AdminApi;
  /** Audit records (src/audit): fed by diagnostics channels, written off the request path. */
  readonly audit: AuditLog;
  /** Key administration (the admin API's, also used by the quickstart to create its dev key). */
  readonly keys: KeyService;
  readonly #wellKnown = new Map<string, () => unknown>();
  readonly #streams: StreamRegistry;
  readonly #sessions: SessionManager;
  readonly #legacy: LegacyBridge;
  readonly #pipeline: Pipeline;
  /** Rate limits of MCP calls (src/ratelimit/limiter.ts) and failed authentications per address. */
  readonly #limits: CallLimiter;
  readonly #authFailures: AuthFailureLimiter;
  readonly #inflight = new Inflight();
  /** Prometheus metrics (src/observability/metrics.ts); undefined when `metrics.enabled` is false. */
  readonly #metrics: Metrics | undefined;
  #tracing: Tracing | undefined;
  readonly #sockets = new Set<Socket>();
  #public: Server | undefined;
  #adminServer: Server | undefined;
  #hosts: Set<string> | undefined;
  #draining = false;
  #stopped: Promise<void> | undefined;

  private constructor(config: Config, deps: GatewayDeps) {
    this.config = config;
    this.log = deps.log;
    this.#egress = deps.egress;
    this.egressProxy = deps.egressProxy;
    this.#db = deps.db;
    this.#identity = deps.identity;
    this.#oauth = deps.oauth;
    this.audit = deps.audit;
    // List-result cache (src/cache/list-cache.ts): every upstream is observed so that list-changed
    // notifications on any of its streams invalidate, whichever endpoint reads them.
    const cache = new ListCache({ servers: config.servers, log: this.log });
    for (const [name, cfg] of Object.entries(config.servers)) {
      const upstream = cache.observe(
        name,
        createUpstream(name, cfg, this.#egress, this.log, this.egressProxy, deps.shared),
      );
      const route: Route = { name, config: cfg, upstream };
      this.routes.set(name, route);
      this.#byPath.set(cfg.route, { route, endpoint: "mcp" });
      const base = cfg.route === "/" ? "" : cfg.route;
      this.#byPath.set(`${base}/sse`, { route, endpoint: "legacy-sse" });
      this.#byPath.set(`${base}/messages`, { route, endpoint: "legacy-messages" });
    }
    // Stores: embedded (SQLite) or shared with the other instances (distributed mode, SPEC §1).
    const shared = deps.shared;
    this.#shared = shared;
    const storeError = (what: string) => (err: unknown) =>
      this.log.warn({ err: String(err) }, `${what}: background write failed (kept for the next one)`);
    if (shared) {
      // A record outlives its idle TTL by a grace period, so the reaper (every idleTtl / 10, at most
      // a minute) finds it and ends the session properly — upstream DELETE, session.end audit —
      // instead of Redis expiring it silently; Redis expiry remains the backstop.
      const expiry = (server: string) => {
        const ttl = config.servers[server]?.sessions.idleTtl ?? 86_400_000;
        return ttl + Math.min(ttl, 300_000) + 5000;
      };
      this.#store = new RedisSessionStore({
        client: shared.redis,
        keyPrefix: shared.prefix,
        idleTtlMs: expiry,
        onError: storeError("session activity"),
      });
      this.#keyStore = new PostgresApiKeyStore(shared.pg, {
        onError: storeError("key last use"),
        // Revocation everywhere within a second (SPEC §7.4): the other instances drop their copy.
        onChange: (id) => shared.bus.publish({ k: "key", id }),
      });
      this.#counters = new RedisCounterStore({
        client: shared.redis,
        keyPrefix: `${shared.prefix}rl:`,
        fallbackDivisor: shared.instances,
      });
    } else {
      this.#store = new SqliteSessionStore(this.#db);
      this.#keyStore = new SqliteApiKeyStore(this.#db);
    }
    // Distributed mode: stream events also go to Redis, so a client resumes on any instance.
    if (shared) {
      let lastReport = 0;
      this.#events = new RedisEventLog({
        client: shared.redis,
        keyPrefix: shared.prefix,
        limits: config.streams,
        onError: (err, what) => {
          const now = Date.now();
          if (now - lastReport < 10_000) return;
          lastReport = now;
          this.log.warn({ err: String(err) }, `stream events: Redis ${what} failed`);
        },
      });
    }
    this.#streams = new StreamRegistry(config.streams, this.#events ? { events: this.#events } : undefined);
    this.#sessions = new SessionManager(
      this.#store,
      this.#streams,
      this.routes,
      this.log,
      shared
        ? {
            hotTtlMs: SHARED_HOT_TTL_MS,
            ready: shared.redisReady,
            tryLock: shared.tryLock,
            announce: (id) => shared.bus.publish({ k: "session", id }),
          }
        : undefined,
    );
    if (shared) {
      const keyStore = this.#keyStore as PostgresApiKeyStore;
      shared.bus.on((m) => {
        if (m.k === "key") keyStore.invalidate(m.id);
        else if (m.k === "session") this.#sessions.changedElsewhere(m.id);
        else {
          keyStore.invalidate();
          this.#sessions.forgetAll();
        }
      });
    }
    const draining = () => this.#draining;
    this.#legacy = new LegacyBridge(this.#sessions, draining, config.streams.keepAlive, this.#identity);
    const forwarder = new Forwarder({
      sessions: this.#sessions,
      streams: this.#streams,
      draining,
      inflight: this.#inflight,
      identity: this.#identity,
      cache,
    });
    const authenticator = new Authenticator({
      keys: this.#keyStore,
      oauth: this.#oauth,
      publicUrl: config.publicUrl,
      tenancy: config.tenancy,
    });
    this.keys = new KeyService(this.#keyStore, [...this.routes.keys()]);
    this.#admin = new AdminApi({
      token: config.admin.token,
      keys: this.keys,
      sessions: this.#sessions,
      routes: this.routes,
      log: this.log,
      audit: this.audit,
    });
    // Public metadata: the edge's identity-signing keys, and RFC 9728 metadata per OAuth route.
    this.#wellKnown.set("/.well-known/mcp-edge/jwks.json", () => this.#identity.jwks());
    for (const route of this.routes.values()) {
      if (!route.config.auth.includes("oauth") || !config.publicUrl) continue;
      const doc = protectedResourceMetadata({
        resource: resourceUrl(config.publicUrl, route.config.route),
        authorizationServers: config.auth.oauth.map((i) => i.issuer),
        scopesSupported: [
          ...new Set([...route.config.scopes.default, ...Object.values(route.config.scopes.tools).flat()]),
        ],
      });
      this.#wellKnown.set(
        new URL(resourceMetadataUrl(config.publicUrl, route.config.route)).pathname,
        () => doc,
      );
    }
    // Rate limits: built from the validated config (a bad limit already failed the start).
    this.#limits = new CallLimiter(config.servers, this.log, this.#counters);
    this.#authFailures = new AuthFailureLimiter(
      config.rateLimits.authFailures,
      config.security.trustForwardedHeaders,
      this.log,
    );
    // Metrics subscribe to the pipeline's channels (DESIGN.md convention 7) and read gauges when
    // scraped: sessions from the store (the truth, also after a restart), open streams, upstreams.
    if (config.metrics.enabled) {
      const sessionStore = this.#store;
      // Fix (test/integration/distributed-redis-down.test.ts): with Redis down the count failed and
      // /metrics answered 500 — the page that reports mcp_edge_redis_up 0. The last count stands.
      let lastCounts: ReadonlyMap<string, number> = new Map();
      this.#metrics = new Metrics({
        config: config.metrics,
        routes: this.routes,
        streams: () => this.#streams.size,
        sessions: async () => {
          const counts = new Map<string, number>();
          try {
            for (const name of this.routes.keys()) {
              let n = 0;
              for (const c of (await sessionStore.countByInstance(name)).values()) n += c;
              counts.set(name, n);
            }
          } catch {
            return lastCounts;
          }
          lastCounts = counts;
          return counts;
        },
      });
    }
    this.#pipeline = new Pipeline({
      authenticator,
      forwarder,
      legacy: this.#legacy,
      sessions: this.#sessions,
      hosts: () => this.#hosts,
      origins: new Set(config.security.allowedOrigins),
      maxBodyBytes: config.limits.maxBodyBytes,
      limiter: this.#limits,
      audit: this.audit,
    });
    // Audit: record this gateway's routes only (channels are process-wide), from now on.
    this.audit.restrict(new Set(this.routes.values()));
    this.audit.subscribe();
  }

  /** Validates unsafe opt-ins, starts upstreams and both listeners. */
  static async start(config: Config, options: GatewayOptions = {}): Promise<Gateway> {
    const assessment = assessConfig(config);
    if (assessment.errors.length > 0) {
      throw new GatewayError(
        "EDGE_CONFIG_UNSAFE",
        `unsafe configuration:\n  ${assessment.errors.join("\n  ")}`,
      );
    }
    const log = options.logger ?? createLogger({ level: config.log.level });
    // The one guarded way out (src/egress): configured URLs as written, run-time URLs and every
    // redirect hop checked against the SSRF policy.
    const egress = new Egress({
      connectTimeout: config.egress.connectTimeout,
      rules: {
        allowPrivate: config.egress.allowPrivateNetworks,
        allowHosts: config.egress.allowHosts,
        allowCidrs: config.egress.allowCidrs,
        allowPorts: config.egress.allowPorts,
      },
      maxRedirects: config.egress.maxRedirects,
      maxResponseBytes: config.egress.maxResponseBytes,
    });
    const db = openDatabase(config.store.sqlite);
    // Distributed mode: PostgreSQL must answer at start (migrations); Redis may come later.
    const shared = config.store.redis ? await openDistributed(config.store, log) : undefined;
    // Identity-signing keys: in distributed mode shared (PostgreSQL), so every instance signs with
    // the same key and publishes the same JWKS.
    const identity = await IdentitySigner.open(
      shared ? new PostgresIdentityKeyStore(shared.pg) : new SqliteIdentityKeyStore(db),
      {
        issuer: config.publicUrl ?? "mcp-edge",
        ttl: 120_000,
        rotateEvery: 7 * 86_400_000,
        onError: (err) => log.warn({ err: String(err) }, "identity keys: store unavailable, retrying"),
      },
    );
    const oauth =
      config.auth.oauth.length > 0
        ? OAuthVerifier.create({ issuers: config.auth.oauth, leeway: config.auth.leeway, egress, log })
        : undefined;
    await oauth?.start();
    // Audit store: its own connection (short busy timeout, see src/audit/sqlite.ts); chain heads
    // loaded and any spool left by the last run replayed before the first request.
    const ac = config.audit;
    const audit = await AuditLog.open({
      // Several instances append to the same chains: PostgreSQL chains them (appendChained).
      store: shared
        ? new PostgresAuditStore(shared.pg)
        : new SqliteAuditStore(ac.sqlite ?? config.store.sqlite),
      spoolPath: ac.spool.path ?? join(dirname(config.store.sqlite), "audit-spool.jsonl"),
      spoolMaxBytes: ac.spool.maxBytes,
      flushInterval: ac.flushInterval,
      queueMax: ac.queue,
      args: argsPolicy({
        mode: ac.arguments,
        paths: ac.redact.paths,
        patterns: ac.redact.patterns,
        maxString: ac.maxStringLength,
        maxBytes: ac.maxArgumentsBytes,
      }),
      log,
    });
    // Egress proxy (src/egress/proxy.ts): loopback, a free port, before any process is spawned
    // (shared stdio processes start with the upstreams below).
    let egressProxy: EgressProxy | undefined;
    if (Object.values(config.servers).some((s) => s.upstream.stdio !== undefined)) {
      egressProxy = new EgressProxy({ log });
      await egressProxy.start("127.0.0.1");
    }
    let gw: Gateway;
    try {
      gw = new Gateway(config, { db, identity, oauth, egress, log, audit, egressProxy, shared });
    } catch (err) {
      await egressProxy?.stop(); // a boot error must not leave the proxy listening
      await audit.close();
      await shared?.close();
      throw err;
    }
    for (const w of assessment.warnings) gw.log.warn({ code: w.code }, w.message);
    // Metrics and traces start before the listeners, so the first request is counted and traced.
    gw.#metrics?.start();
    // Audit gauges (read at scrape time): what waits in memory and in the spool, records dropped.
    if (gw.#metrics) {
      const a = gw.audit;
      gw.#metrics.registerGauge(
        "mcp_edge_audit_queue_depth",
        "Audit records waiting in memory.",
        () => a.stats().queued,
      );
      gw.#metrics.registerGauge(
        "mcp_edge_audit_spool_records",
        "Audit records in the spool.",
        () => a.stats().spooled,
      );
      gw.#metrics.registerGauge(
        "mcp_edge_audit_spool_bytes",
        "Size of the audit spool.",
        () => a.stats().spoolBytes,
      );
      gw.#metrics.registerGauge(
        "mcp_edge_audit_dropped",
        "Audit records dropped (queue over its hard bound).",
        () => a.stats().dropped,
      );
      gw.#metrics.registerGauge("mcp_edge_audit_store_up", "1 while the audit store takes writes.", () =>
        a.stats().storeUp ? 1 : 0,
      );
      const counters = gw.#counters;
      if (shared && counters) {
        gw.#metrics.registerGauge(
          "mcp_edge_redis_up",
          "1 while the Redis connection (sessions, counters, streams) is up.",
          () => (shared.redisReady() ? 1 : 0),
        );
        gw.#metrics.registerGauge(
          "mcp_edge_ratelimit_fallback_decisions",
          "Rate-limit decisions the local fallback limiter made because Redis was unreachable (since start).",
          () => counters.fallbackDecisions,
        );
        const events = gw.#events;
        if (events) {
          gw.#metrics.registerGauge(
            "mcp_edge_stream_event_write_failures",
            "Stream events that could not be written to Redis (since start); resumption on another instance then misses them.",
            () => events.stats.writeFailures,
          );
          gw.#metrics.registerGauge(
            "mcp_edge_stream_followers",
            "Clients on this instance following a stream that another instance holds.",
            () => events.followers,
          );
        }
      }
    }
    gw.#tracing = await Tracing.create({
      config: config.tracing,
      routes: gw.routes,
      markUpstream: gw.#metrics !== undefined,
      log: gw.log,
    });
    gw.#tracing.start();
    await Promise.all([...gw.routes.values()].map((r) => r.upstream.start()));
    gw.#public = await gw.#listen(config.listen, (req, res) => gw.#onPublic(req, res));
    gw.#adminServer = await gw.#listen(config.admin.listen, (req, res) => gw.#onAdmin(req, res));
    gw.#hosts = allowedHostSet({
      configured: config.security.allowedHosts,
      publicUrl: config.publicUrl,
      listenHost: config.listen.host,
      port: gw.port,
    });
    gw.log.info({ url: gw.baseUrl, admin: gw.adminUrl, routes: [...gw.routes.keys()] }, "mcp-edge listening");
    return gw;
  }

  async #listen(
    where: { host: string; port: number },
    handler: (req: IncomingMessage, res: ServerResponse) => void,
  ): Promise<Server> {
    const limits = this.config.limits;
    // Responses under way per connection, so that clientError never writes into one of them.
    const inflight = new WeakMap<Socket, Set<ServerResponse>>();
    const server = createServer(
      {
        headersTimeout: limits.headersTimeout,
        requestTimeout: limits.requestTimeout,
        keepAliveTimeout: limits.keepAliveTimeout,
        maxHeaderSize: limits.maxHeaderBytes,
        // Fix (test/regressions/slow-request-cutoff.test.ts): Node checks headersTimeout and
        // requestTimeout only every `connectionsCheckingInterval` (default 30 s), so a 1 s
        // headersTimeout let a slowloris client hold its connection for up to 30 s. Check at least
        // once a second, and a few times within the shortest limit.
        connectionsCheckingInterval: Math.max(
          50,
          Math.min(1000, Math.floor(Math.min(limits.headersTimeout, limits.requestTimeout || Infinity) / 4)),
        ),
      },
      (req, res) => {
        const socket = req.socket;
        let set = inflight.get(socket);
        if (!set) {
          set = new Set();
          inflight.set(socket, set);
        }
        set.add(res);
        res.once("close", () => set.delete(res));
        handler(req, res);
      },
    );
    server.on("connection", (s: Socket) => {
      this.#sockets.add(s);
      s.on("close", () => this.#sockets.delete(s));
    });
    // Malformed requests (bad header bytes, CR/LF in values, oversized headers) never reach the
    // handler: answer them here with the same error shape, then close (Node's default is a bare 400).
    server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
      if (!socket.writable) return socket.destroy();
      // Fix (test/regressions/client-error-mid-response.test.ts): bytes that do not parse after a
      // request whose answer is already under way (e.g. an SSE stream) must not be answered by
      // writing a second status line into that answer's body; close the connection instead, as
      // Node's own default handler does.
      for (const res of inflight.get(socket) ?? []) if (res.headersSent) return socket.destroy();
      const code = err.code;
      const status = code === "HPE_HEADER_OVERFLOW" ? 431 : code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
      const ge = new GatewayError(status === 408 ? "EDGE_REQUEST_TIMEOUT" : "EDGE_BAD_HEADER");
      const body = JSON.stringify({
        jsonrpc: "2.0",
        id: null,
        error: { code: -32000, message: ge.message, data: { code: ge.code } },
      });
      const reason =
        status === 431
          ? "Request Header Fields Too Large"
          : status === 408
            ? "Request Timeout"
            : "Bad Request";
      socket.end(
        `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(where.port, where.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    return server;
  }

  get port(): number {
    return (this.#public as Server).address() ? ((this.#public as Server).address() as AddressInfo).port : 0;
  }

  get adminPort(): number {
    return (this.#adminServer as Server).address()
      ? ((this.#adminServer as Server).address() as AddressInfo).port
      : 0;
  }

  #hostForUrl(host: string): string {
    return host.includes(":") ? `[${host}]` : host === "0.0.0.0" ? "127.0.0.1" : host;
  }

  get baseUrl(): string {
    return `http://${this.#hostForUrl(this.config.listen.host)}:${this.port}`;
  }

  get adminUrl(): string {
    return `http://${this.#hostForUrl(this.config.admin.listen.host)}:${this.adminPort}`;
  }

  /** The public URL of a server's MCP endpoint. */
  url(server?: string): string {
    const route = server ? this.routes.get(server) : this.routes.values().next().value;
    if (!route) throw new Error(`no server ${server}`);
    return `${this.baseUrl}${route.config.route}`;
  }

  /** The metrics registry, for modules that add gauges (`registerGauge`); undefined when off. */
  get metrics(): Metrics | undefined {
    return this.#metrics;
  }

  get draining(): boolean {
    return this.#draining;
  }

  #health(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    if (path === "/healthz") {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end('{"status":"ok"}');
      return true;
    }
    if (path === "/readyz") {
      // Ready = not draining and every route has an upstream that can take work. No session ids,
      // tokens or instance URLs here: health endpoints are often scraped unauthenticated (D43).
      const notReady = [...this.routes.values()].filter((r) => !r.upstream.ready()).map((r) => r.name);
      const ok = !this.#draining && notReady.length === 0;
      res.writeHead(ok ? 200 : 503, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(
        JSON.stringify({ status: ok ? "ready" : this.#draining ? "draining" : "unavailable", notReady }),
      );
      return true;
    }
    return req.method === undefined;
  }

  #onAdmin(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://admin");
    if (this.#health(req, res, url.pathname)) return;
    // GET /metrics (SPEC §5): open on the admin listener unless `metrics.token` is set.
    if (url.pathname === "/metrics" && this.#metrics) {
      void this.#metrics.serve(req, res);
      return;
    }
    // GET /dashboard (SPEC §5, src/admin/dashboard.ts): static page, no data; it calls /api/* with
    // the admin credential, which authenticates and scopes every answer.
    if (isDashboardPath(url.pathname)) {
      serveDashboard(req, res, url.pathname);
      return;
    }
    void this.#admin.handle(req, res, url.pathname, url.searchParams).then((handled) => {
      if (!handled) {
        req.resume();
        sendError(res, new GatewayError("EDGE_ROUTE_NOT_FOUND"));
      }
    });
  }

  /** Public metadata documents (JSON, cacheable briefly). True when the path was one. */
  #onWellKnown(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    const doc = this.#wellKnown.get(path);
    if (!doc) return false;
    req.resume();
    if (req.method !== "GET" && req.method !== "HEAD") {
      sendError(
        res,
        new GatewayError("EDGE_METHOD_NOT_ALLOWED", undefined, { headers: { allow: "GET, HEAD" } }),
      );
      return true;
    }
    const body = JSON.stringify(doc());
    res.writeHead(200, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      "cache-control": "public, max-age=300",
      "access-control-allow-origin": "*",
    });
    res.end(req.method === "HEAD" ? undefined : body);
    return true;
  }

  #onPublic(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    const url = req.url ?? "/";
    const query = url.indexOf("?");
    const path = query < 0 ? url : url.slice(0, query);
    if (this.#health(req, res, path)) return;
    if (path.startsWith("/.well-known/") && this.#onWellKnown(req, res, path)) return;
    const hit = this.#byPath.get(path);
    if (!hit) {
      // Drain the body so the connection can be reused, then 404.
      req.resume();
      sendError(res, new GatewayError("EDGE_ROUTE_NOT_FOUND"));
      return;
    }
    const requestId = randomUUID();
    // Its `clientGone` is made when first read; the client's going away is noted from now on.
    const ctx: RequestContext = new PublicRequestContext(
      requestId,
      req,
      res,
      hit.route,
      hit.endpoint,
      this.log,
    );
    res.setHeader("x-mcp-edge-request-id", requestId);
    const scope = { reqId: requestId, server: hit.route.name };
    // Rate limits: an address over its failed-authentication budget is refused (429) before its
    // credential is checked (src/ratelimit/auth-failures.ts). One Map lookup when it is not.
    const refused = this.#authFailures.check(ctx);
    // The error handler runs inside the scope too, so its log line carries the request id.
    const work = logScope.run(scope, () => this.#serve(ctx, socket, refused));
    if (req.method === "POST") this.#inflight.add(work);
  }

  /** One request's work: the pipeline, its failure answered, its end reported. One promise. */
  async #serve(ctx: RequestContext, socket: Socket, refused: GatewayError | undefined): Promise<void> {
    let failure: GatewayError | undefined;
    try {
      if (refused) throw refused;
      await this.#pipeline.handle(ctx);
    } catch (err) {
      failure = toGatewayError(err);
      this.#failed(ctx, socket, failure);
    } finally {
      // Every request is reported once, answered, refused or failed (audit, metrics).
      if (requestEndChannel.hasSubscribers) {
        const res = ctx.res;
        const event: RequestEndEvent = {
          ctx,
          status: res.headersSent ? res.statusCode : 0,
          error: failure,
          durationMs: performance.now() - ctx.startedAt,
        };
        requestEndChannel.publish(event);
      }
    }
    // Rate limits: a call's in-flight slot (limits.concurrency) goes back when its work is over —
    // the answer sent, or, after a client left mid-call, the upstream done with it (a session-era
    // disconnect is not a cancellation, so releasing on the client's close would let a client
    // exceed the cap by hanging up).
    if (this.#limits.tracksInflight) this.#limits.release(ctx);
  }

  /** Answers a request whose pipeline threw (a coded error, or an unexpected one: EDGE_INTERNAL). */
  #failed(ctx: RequestContext, socket: Socket, err: unknown): void {
    const { req, res } = ctx;
    const ge = toGatewayError(err);
    // Rate limits: a presented credential refused with 401 counts against the client's address.
    if (ge.code === "EDGE_AUTH_INVALID_TOKEN") this.#authFailures.failed(req);
    if (ge.status >= 500) ctx.log.error({ code: ge.code, err: ge.cause ?? ge }, ge.message);
    else ctx.log.debug({ code: ge.code, status: ge.status }, ge.message);
    if (!sendError(res, ge)) res.end();
    // A refused body is not read further: close the connection rather than read the rest.
    // Fix (test/regressions/body-too-large-crash.test.ts): `req.socket` is null by the time the
    // response has finished, so reading it there threw and crashed the process on a chunked body
    // over the cap: the socket is taken when the request arrives. The close lingers briefly
    // (FIN, discard what is still in flight, then destroy) so the client reads the 413 rather
    // than a reset (nginx's lingering_close).
    if (ge.code === "EDGE_BODY_TOO_LARGE") {
      res.once("finish", () => {
        socket.end();
        req.resume();
        setTimeout(() => socket.destroy(), 2000).unref();
      });
    }
  }

  /**
   * Drain (SIGTERM): readiness fails, no new sessions or connections, calls in flight get
   * `drain.timeout` to finish, open streams get a `retry` hint and close (they are resumable
   * elsewhere or after restart), state is flushed. Sessions stay in the store.
   */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    this.#draining = true;
    this.log.info({ inflight: this.#inflight.size }, "draining");
    // Readiness fails first; the listener stays open `drain.delay` so the load balancer stops
    // sending before connections would be refused (or reset in the accept queue).
    const delay = this.config.drain.delay ?? (this.#shared ? 5000 : 0);
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    this.#public?.close();
    this.#public?.closeIdleConnections();
    // Fix (test/integration/drain.test.ts): the admin listener stays open while calls drain, so a
    // load balancer's /readyz probe reads 503 "draining" (readiness fails first, security.md I86)
    // instead of a refused connection; it closes with everything else below.
    const clean = await this.#inflight.settled(this.config.drain.timeout);
    if (!clean)
      this.log.warn({ inflight: this.#inflight.size }, "drain timeout: closing calls still in flight");
    this.#streams.closeClients();
    this.#legacy.closeAll();
    this.#adminServer?.close();
    for (const s of this.#sockets) s.destroy();
    this.#sessions.close();
    this.#streams.close();
    // End markers of the streams just closed, written before the Redis client goes.
    await this.#events
      ?.close()
      .catch((err: unknown) => this.log.warn({ err: String(err) }, "stream events close"));
    await Promise.allSettled([...this.routes.values()].map((r) => r.upstream.stop()));
    await this.egressProxy?.stop(); // after the processes that used it
    // Audit: every call above has published its end; flush it all (SIGTERM loses nothing).
    await this.audit.close();
    await this.#store
      .close()
      .catch((err: unknown) => this.log.warn({ err: String(err) }, "session store close"));
    await this.#keyStore
      .close()
      .catch((err: unknown) => this.log.warn({ err: String(err) }, "key store close"));
    await this.#counters?.close();
    await this.#oauth?.stop();
    this.#identity.close();
    this.#db.close();
    await this.#shared?.close();
    await this.#egress.destroy();
    this.#metrics?.stop();
    await this.#tracing?.stop(); // flushes spans still batched for the OTLP exporter
    this.log.info("stopped");
    this.log.flush();
  }
}
