import type { ListCache } from "../cache/list-cache.ts";
import type { Config } from "../config/schema.ts";
import type { Endpoint } from "../context.ts";
import type { Egress } from "../egress/index.ts";
import { callRecorder, type EgressProxy } from "../egress/proxy.ts";
import { GatewayError } from "../errors/errors.ts";
import type { Logger } from "../observability/logger.ts";
import type { Distributed } from "../store/distributed.ts";
import { createCredentials, type OAuthCredentialsConfig } from "../upstream/credentials.ts";
import { HttpUpstream } from "../upstream/http.ts";
import { LegacySseUpstream } from "../upstream/legacy-sse.ts";
import { type ProcessBudget, StdioUpstream } from "../upstream/stdio.ts";
import { RedisTokenVault } from "../store/redis/token-vault.ts";
import type { ForwardInterceptor, Route, Upstream } from "../upstream/types.ts";

/** What the router maps a path to. */
export interface RouteHit {
  readonly route: Route;
  readonly endpoint: Endpoint;
}

export interface Routes {
  /** By server name. */
  readonly byName: Map<string, Route>;
  /** By request path: `{route}` (MCP endpoint), `{route}/sse` and `{route}/messages` (legacy). */
  readonly byPath: Map<string, RouteHit>;
  /**
   * Every route this edge has served since it started (a reload makes new route objects; requests
   * in flight keep theirs): observers record a request when its route is one of these.
   */
  readonly owned: WeakSet<Route>;
  /** The list-result cache every upstream is observed by. */
  readonly cache: ListCache;
}

/** The upstream of one server: Streamable HTTP instances, a legacy SSE server, or a stdio command. */
function createUpstream(
  name: string,
  cfg: Config["servers"][string],
  egress: Egress,
  log: Logger,
  egressProxy: EgressProxy | undefined,
  shared: Distributed | undefined,
  sessionCounts: Map<string, number> | undefined,
  maxResult: number,
  processes: ProcessBudget | undefined,
): Upstream {
  const u = cfg.upstream;
  const child = log.child({ server: name });
  if (u.stdio && cfg.credentials)
    throw new GatewayError(
      "EDGE_CONFIG_INVALID",
      `servers.${name}.credentials: a stdio upstream takes no HTTP credentials (pass secrets in its env)`,
    );
  if (cfg.credentials?.connection !== undefined && !u.urls)
    throw new GatewayError(
      "EDGE_CONFIG_INVALID",
      `servers.${name}.credentials.connection: users' own tokens go to Streamable HTTP upstreams (upstream.urls) only`,
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
  if (u.urls) return new HttpUpstream(u, egress, child, sessionCounts, credentials, maxResult);
  if (u.sse) return new LegacySseUpstream(u, egress, child, credentials, maxResult);
  // Egress proxy: the spawned processes' HTTP_PROXY, checked against this server's egress block.
  return new StdioUpstream(
    u,
    child,
    egressProxy ? { proxy: egressProxy, server: name, rules: cfg.egress } : undefined,
    maxResult,
    processes,
  );
}

/** The egress recorder of a call: decisions of the call's spawned process go to `request.egress`. */
const recordEgress: ForwardInterceptor = (request, outgoing) => {
  outgoing.egress = callRecorder(request);
};

/** What routes are built with (boot and reload). */
export interface RouteDeps {
  egress: Egress;
  log: Logger;
  egressProxy: EgressProxy | undefined;
  shared: Distributed | undefined;
  cache: ListCache;
  /** `limits.maxResultBytes`: the largest upstream message relayed. */
  maxResultBytes: number;
  /** `limits.maxStdioProcesses`: live `mode: session` processes over every stdio server. */
  processes?: ProcessBudget;
}

/**
 * The route of one server: its upstream wrapped by the list-result cache, the egress recorder as
 * interceptor when it spawns processes through the egress proxy. `sessionCounts`: sessions already
 * placed per instance URL (a reload that replaces an upstream keeps its placement counts).
 */
export function buildRoute(
  name: string,
  cfg: Config["servers"][string],
  deps: RouteDeps,
  sessionCounts?: Map<string, number>,
): Route {
  const upstream = deps.cache.observe(
    name,
    createUpstream(
      name,
      cfg,
      deps.egress,
      deps.log,
      deps.egressProxy,
      deps.shared,
      sessionCounts,
      deps.maxResultBytes,
      deps.processes,
    ),
  );
  // A spawned process's outbound requests through the egress proxy are recorded on the call
  // that was in flight (its audit record's `egress`); routes without one never pay for it.
  const interceptors: ForwardInterceptor[] = cfg.upstream.stdio && deps.egressProxy ? [recordEgress] : [];
  return { name, config: cfg, upstream, interceptors };
}

/** Sets the paths of a route: `{route}` (MCP endpoint), `{route}/sse` and `{route}/messages` (legacy). */
export function addPaths(byPath: Map<string, RouteHit>, route: Route): void {
  byPath.set(route.config.route, { route, endpoint: "mcp" });
  const base = route.config.route === "/" ? "" : route.config.route;
  byPath.set(`${base}/sse`, { route, endpoint: "legacy-sse" });
  byPath.set(`${base}/messages`, { route, endpoint: "legacy-messages" });
}

/**
 * One route per configured server, its upstream wrapped once by the list-result cache (every
 * upstream is observed, so list-changed notifications on any of its streams invalidate, whichever
 * endpoint reads them). Interceptors: the egress recorder here, tracing by the observers
 * (boot/observers.ts), all before the listener opens.
 */
export function buildRoutes(config: Config, deps: RouteDeps): Routes {
  const byName = new Map<string, Route>();
  const byPath = new Map<string, RouteHit>();
  const owned = new WeakSet<Route>();
  for (const [name, cfg] of Object.entries(config.servers)) {
    const route = buildRoute(name, cfg, deps);
    byName.set(name, route);
    owned.add(route);
    addPaths(byPath, route);
  }
  return { byName, byPath, owned, cache: deps.cache };
}
