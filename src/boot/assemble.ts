import { AdminApi } from "../admin/api.ts";
import { KeyService } from "../admin/keys.ts";
import { Authenticator } from "../auth/authenticate.ts";
import { OAuthVerifier } from "../auth/oauth.ts";
import { ListCache } from "../cache/list-cache.ts";
import { ToolCatalog } from "../cache/tool-catalog.ts";
import type { Config } from "../config/schema.ts";
import { assessConfig } from "../config/warnings.ts";
import { Egress } from "../egress/index.ts";
import { EgressProxy } from "../egress/proxy.ts";
import { GatewayError } from "../errors/errors.ts";
import { GetOrder } from "../forward/get-order.ts";
import { LegacyBridge } from "../forward/legacy.ts";
import { Forwarder } from "../forward/streamable.ts";
import type { Logger } from "../observability/logger.ts";
import { type PipelineDeps, stageLists } from "../pipeline/lists.ts";
import { Pipeline } from "../pipeline/pipeline.ts";
import { AuthFailureLimiter } from "../ratelimit/auth-failures.ts";
import { AuthRefusals } from "../audit/auth-refusals.ts";
import { CallLimiter } from "../ratelimit/limiter.ts";
import { Inflight } from "../server/listener.ts";
import { SessionManager, sessionHash } from "../session/manager.ts";
import { StreamRegistry } from "../session/streams.ts";
import { type Observers, startObservers } from "./observers.ts";
import { ProcessBudget } from "../upstream/stdio.ts";
import { buildRoutes, type RouteDeps, type Routes } from "./routes.ts";
import { closeStores, openStores, type Stores } from "./stores.ts";
import { wellKnownDocuments } from "./well-known.ts";
import { createVault } from "./vault.ts";
import { createAuthorizationServer } from "./as.ts";
import type { AuthorizationServer } from "../as/server.ts";
import type { Vault } from "../vault/vault.ts";
import type { ConnectPages } from "../vault/http.ts";

/** Distributed mode: a hot session record is read again from Redis after this long (ms). */
const SHARED_HOT_TTL_MS = 5000;

/** Everything an edge instance runs, built from one validated config, before its listeners open. */
export interface Edge {
  readonly stores: Stores;
  readonly egress: Egress;
  readonly oauth: OAuthVerifier | undefined;
  /** The egress proxy of spawned stdio servers, when a route spawns any (a reload may start it). */
  egressProxy: EgressProxy | undefined;
  readonly routes: Routes;
  /** What routes are built with (a reload builds the routes of new and changed servers). */
  readonly routeDeps: RouteDeps;
  readonly streams: StreamRegistry;
  readonly sessions: SessionManager;
  readonly legacy: LegacyBridge;
  /** Calls in flight (POSTs and the streams they pump), for the drain. */
  readonly inflight: Inflight;
  /** The Streamable HTTP forwarder (the drain ends its calls still in flight at `drain.timeout`). */
  readonly forwarder: Forwarder;
  readonly pipeline: Pipeline;
  /** What the stage lists were built from (a reload builds them again with its changes). */
  readonly pipelineDeps: PipelineDeps;
  readonly keys: KeyService;
  readonly admin: AdminApi;
  /** Well-known documents by path (a reload sets the protected-resource metadata of its routes). */
  readonly wellKnown: Map<string, () => unknown>;
  readonly observers: Observers;
  /** Refused authentications: counted, sampled into the audit (src/audit/auth-refusals.ts). */
  readonly authRefusals: AuthRefusals;
  /** The token vault and its connect pages (`/connect/...`), when connections are configured. */
  readonly vault: Vault | undefined;
  readonly connectPages: ConnectPages | undefined;
  /** The edge's OAuth authorization server, when `auth.authorizationServer.enabled`. */
  readonly as: AuthorizationServer | undefined;
  /** Set by the drain; read by the pipeline (no new sessions) and `/readyz`. */
  readonly state: { draining: boolean; hosts: Set<string> | undefined };
}

/**
 * Builds an edge: refuses unsafe config, opens the stores, the OAuth verifier and the egress proxy,
 * builds routes and upstreams, sessions and streams, the pipeline from its stage lists, the admin
 * API and the observers, and starts the upstreams. The listeners are the caller's (gateway.ts).
 */
export async function assemble(config: Config, log: Logger): Promise<Edge> {
  const assessment = assessConfig(config);
  if (assessment.errors.length > 0)
    throw new GatewayError(
      "EDGE_CONFIG_UNSAFE",
      `unsafe configuration:\n  ${assessment.errors.join("\n  ")}`,
    );
  // The one guarded way out (src/egress): configured URLs as written, run-time URLs and every
  // redirect hop checked against the SSRF policy.
  const e = config.egress;
  const egress = new Egress({
    connectTimeout: e.connectTimeout,
    rules: {
      allowPrivate: e.allowPrivateNetworks,
      allowHosts: e.allowHosts,
      allowCidrs: e.allowCidrs,
      allowPorts: e.allowPorts,
    },
    maxRedirects: e.maxRedirects,
    maxResponseBytes: e.maxResponseBytes,
  });
  const stores = await openStores(config, log);
  const oauth =
    config.auth.oauth.length > 0
      ? OAuthVerifier.create({ issuers: config.auth.oauth, leeway: config.auth.leeway, egress, log })
      : undefined;
  await oauth?.start();
  // Egress proxy of stdio servers: loopback, a free port, before any process is spawned.
  let egressProxy: EgressProxy | undefined;
  if (Object.values(config.servers).some((s) => s.upstream.stdio !== undefined)) {
    egressProxy = new EgressProxy({ log });
    await egressProxy.start("127.0.0.1");
  }
  const shared = stores.shared;
  let routes: Routes;
  const tools = new ToolCatalog();
  let routeDeps: RouteDeps;
  try {
    const cache = new ListCache({
      servers: config.servers,
      log,
      onListChanged: (server, kind) => {
        if (kind === "tools") tools.invalidate(server);
      },
    });
    routeDeps = {
      egress,
      log,
      egressProxy,
      shared,
      cache,
      maxResultBytes: config.limits.maxResultBytes,
      processes: new ProcessBudget(config.limits.maxStdioProcesses),
    };
    routes = buildRoutes(config, routeDeps);
  } catch (err) {
    await egressProxy?.stop(); // a boot error must not leave the proxy listening
    await stores.audit.close();
    await shared?.close();
    throw err;
  }
  for (const w of assessment.warnings) log.warn({ code: w.code }, w.message);
  const state: Edge["state"] = { draining: false, hosts: undefined };
  const draining = () => state.draining;
  const streams = new StreamRegistry(config.streams, {
    ...(stores.events ? { events: stores.events } : {}),
    // One line per dropped stream: which session and tenant, how much, how long its client had not read.
    budget: {
      evicted: (e) =>
        log.warn(
          {
            session: sessionHash(e.session),
            tenant: e.tenant || null,
            bytes: e.bytes,
            scope: e.scope,
            idleMs: e.idleMs,
          },
          "stream buffer budget spent: dropped the least recently read stream (EDGE_STREAM_BUDGET_EXCEEDED)",
        ),
    },
  });
  const sharing = shared && {
    hotTtlMs: SHARED_HOT_TTL_MS,
    ready: shared.redisReady,
    available: shared.redisAvailable,
    tryLock: shared.tryLock,
    announce: (id: string) => shared.bus.publish({ k: "session", id }),
  };
  const sessions = new SessionManager(stores.sessions, streams, routes.byName, log, sharing);
  const vaulted = createVault(config, { store: stores.connections, egress, shared, log });
  const as = await createAuthorizationServer(config, { stores, egress, log, vault: vaulted });
  // Distributed mode: what other instances changed (keys, sessions), or everything after a resync.
  shared?.bus.on((m) => {
    if (m.k === "key") stores.forgetKey(m.id);
    else if (m.k === "session") sessions.changedElsewhere(m.id);
    else if (m.k === "revoked") as?.revokedElsewhere(m.id);
    else {
      stores.forgetKey();
      sessions.forgetAll();
    }
  });
  const getOrder = new GetOrder();
  const inflight = new Inflight();
  const legacy = new LegacyBridge(sessions, config.streams.keepAlive, stores.identity);
  const authenticator = new Authenticator({
    keys: stores.keys,
    oauth,
    publicUrl: config.publicUrl,
    tenancy: config.tenancy,
    local: as?.verifier,
  });
  const security = config.security;
  const forwarder = new Forwarder({
    sessions,
    streams,
    inflight,
    identity: stores.identity,
    getOrder,
    audit: stores.audit,
  });
  const pipelineDeps: PipelineDeps = {
    hosts: () => state.hosts,
    origins: new Set(security.allowedOrigins),
    maxBodyBytes: config.limits.maxBodyBytes,
    jsonLimits: config.limits.json,
    authenticator,
    authFailures: new AuthFailureLimiter(config.rateLimits.authFailures, security.trustForwardedHeaders, log),
    limiter: new CallLimiter(config.servers, log, stores.counters),
    audit: stores.audit,
    sessions,
    distributed: shared !== undefined,
    draining,
    getOrder,
    cache: routes.cache,
    tools,
    forwarder,
    legacy,
    vault: vaulted?.vault,
  };
  const pipeline = new Pipeline(stageLists(pipelineDeps));
  const keys = new KeyService(stores.keys, [...routes.byName.keys()]);
  const authRefusals = new AuthRefusals({
    routes: routes.owned,
    audit: (d) => stores.audit.enqueue(d),
    trustForwarded: security.trustForwardedHeaders,
  });
  authRefusals.subscribe();
  const admin = new AdminApi({
    authRefusals,
    token: config.admin.token,
    keys,
    sessions,
    routes: routes.byName,
    log,
    audit: stores.audit,
    vault: vaulted?.vault,
    as,
  });
  // Audit: record this gateway's routes only (channels are process-wide), from now on.
  stores.audit.restrict(routes.owned);
  stores.audit.subscribe();
  const observers = await startObservers(config, {
    routes: routes.byName,
    owned: routes.owned,
    stores,
    streams,
    log,
    authRefusals,
  });
  await Promise.all([...routes.byName.values()].map((r) => r.upstream.start()));
  const wellKnown = wellKnownDocuments(config, routes.byName.values(), stores.identity);
  return {
    stores,
    egress,
    oauth,
    egressProxy,
    routes,
    routeDeps,
    streams,
    sessions,
    legacy,
    inflight,
    forwarder,
    pipeline,
    pipelineDeps,
    keys,
    admin,
    wellKnown,
    observers,
    authRefusals,
    vault: vaulted?.vault,
    connectPages: vaulted?.pages,
    as,
    state,
  };
}

/** Stops what an assembled edge runs, listeners aside: sessions, streams, upstreams, stores. */
export async function closeEdge(e: Edge, log: Logger): Promise<void> {
  const warn = (what: string) => (err: unknown) => log.warn({ err: String(err) }, what);
  e.authRefusals.unsubscribe();
  e.sessions.close();
  e.streams.close();
  // End markers of the streams just closed, written before the Redis client goes.
  await e.stores.events?.close().catch(warn("stream events close"));
  await Promise.allSettled([...e.routes.byName.values()].map((route) => route.upstream.stop()));
  await e.egressProxy?.stop(); // after the processes that used it
  await closeStores(e.stores, log);
  await e.oauth?.stop();
  e.as?.close();
  await e.egress.destroy();
  await e.observers.stop();
}
