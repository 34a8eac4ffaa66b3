import { isDeepStrictEqual } from "node:util";
import type { Config, ServerConfig } from "../config/schema.ts";
import { assessConfig } from "../config/warnings.ts";
import { EgressProxy } from "../egress/proxy.ts";
import { GatewayError, isGatewayError } from "../errors/errors.ts";
import type { Logger } from "../observability/logger.ts";
import { stageLists } from "../pipeline/lists.ts";
import { AuthFailureLimiter } from "../ratelimit/auth-failures.ts";
import type { Route } from "../upstream/types.ts";
import type { Edge } from "./assemble.ts";
import { addPaths, buildRoute } from "./routes.ts";
import { wellKnownDocuments } from "./well-known.ts";

/**
 * Configuration reload (SIGHUP, `mcp-edge reload`, `POST /api/reload`): a new, already validated
 * config is checked against the running edge, the routes of new and changed servers are built and
 * their upstreams started, then everything that changes live is swapped in one synchronous step
 * (no request sees half of it): routes, paths, limits, the list cache, the key service's servers,
 * well-known documents and the stage lists. Requests under way finish on what they started with.
 *
 * A server whose upstream block (with its credentials and egress rules) is unchanged keeps its
 * upstream object: its connections, spawned processes and sessions go on untouched. A changed
 * upstream is built anew; sessions on an HTTP instance still listed stay on it, others follow the
 * route's `sessions.onBackendLoss`.
 */

/** Paths of the config that change live; every other difference waits for a restart. */
export const LIVE_PATHS = [
  "servers",
  "rateLimits",
  "security.allowedOrigins",
  "limits.maxBodyBytes",
  "limits.json",
  "log.level",
  "unsafe",
] as const;

/** Paths that only change at restart (listeners, stores, identities the edge published, ...). */
const RESTART_PATHS = [
  "listen",
  "publicUrl",
  "store",
  "admin",
  "metrics",
  "tracing",
  "audit",
  "egress",
  "streams",
  "drain",
  "tenancy",
  "auth",
  "connections",
  "vault",
  "limits.headersTimeout",
  "limits.requestTimeout",
  "limits.keepAliveTimeout",
  "limits.maxHeaderBytes",
  "limits.maxResultBytes",
  "limits.maxStdioProcesses",
  "security.allowedHosts",
  "security.trustForwardedHeaders",
] as const;

/** What a reload did: the answer of `POST /api/reload` and the log line of SIGHUP. */
export interface ReloadOutcome {
  /** Servers added, removed, changed (any setting), and those whose upstream was built anew. */
  servers: { added: string[]; removed: string[]; changed: string[]; upstreamReplaced: string[] };
  /** Other live settings that changed (`rateLimits`, `security.allowedOrigins`, ...). */
  changed: string[];
  /** Settings that differ in the file but keep their running value until a restart. */
  restartRequired: string[];
}

function at(config: Config, path: string): unknown {
  let v: unknown = config;
  for (const k of path.split(".")) v = (v as Record<string, unknown> | undefined)?.[k];
  return v;
}

/** The running config with the live parts of `next` in it (what the edge runs after the reload). */
function effectiveConfig(running: Config, next: Config): Config {
  return {
    ...running,
    servers: next.servers,
    rateLimits: next.rateLimits,
    unsafe: next.unsafe,
    log: { ...running.log, level: next.log.level },
    limits: { ...running.limits, maxBodyBytes: next.limits.maxBodyBytes, json: next.limits.json },
    security: { ...running.security, allowedOrigins: next.security.allowedOrigins },
  };
}

/** A server's upstream as built: the same block means the same upstream object can stay. */
function upstreamPart(s: ServerConfig): unknown {
  return { upstream: s.upstream, credentials: s.credentials, egress: s.egress };
}

function refuse(message: string): never {
  throw new GatewayError("EDGE_RELOAD_REFUSED", message);
}

/**
 * Checks that the servers of `effective` can run on what stays fixed until a restart: the OAuth
 * issuers and publicUrl their `auth` needs, the connections their credentials name.
 */
function checkAgainstRunning(effective: Config): ReturnType<typeof assessConfig>["warnings"] {
  const problems: string[] = [];
  for (const [name, s] of Object.entries(effective.servers)) {
    if (s.auth.includes("oauth") && (effective.auth.oauth.length === 0 || !effective.publicUrl))
      problems.push(
        `servers.${name}.auth: oauth needs auth.oauth issuers and publicUrl in the running config (they change at restart only)`,
      );
    const conn = s.credentials?.connection;
    if (conn !== undefined && !effective.connections[conn])
      problems.push(
        `servers.${name}.credentials.connection: ${conn} is not a connection of the running config (connections change at restart only)`,
      );
  }
  const assessment = assessConfig(effective);
  problems.push(...assessment.errors);
  if (problems.length > 0) refuse(`the new configuration cannot run here:\n  ${problems.join("\n  ")}`);
  return assessment.warnings;
}

/**
 * Applies `next` to a running edge; resolves with what changed, or throws a GatewayError (the
 * running config then stays as it was, nothing half applied). `running` is the config the edge
 * runs now; the caller keeps the returned `config` as the new running one.
 */
export async function reloadEdge(
  edge: Edge,
  running: Config,
  next: Config,
  log: Logger,
): Promise<{ config: Config; outcome: ReloadOutcome }> {
  const config = effectiveConfig(running, next);
  const warnings = checkAgainstRunning(config);
  const restartRequired = RESTART_PATHS.filter((p) => !isDeepStrictEqual(at(running, p), at(next, p)));
  const changed = [
    "rateLimits",
    "security.allowedOrigins",
    "limits.maxBodyBytes",
    "limits.json",
    "log.level",
    "unsafe",
  ].filter((p) => !isDeepStrictEqual(at(running, p), at(next, p)));

  // The egress proxy of stdio servers: started now when the first one arrives.
  const needsProxy = Object.values(config.servers).some((s) => s.upstream.stdio !== undefined);
  let startedProxy: EgressProxy | undefined;
  if (needsProxy && !edge.egressProxy) {
    startedProxy = new EgressProxy({ log });
    await startedProxy.start("127.0.0.1");
  }
  const deps = { ...edge.routeDeps, egressProxy: edge.egressProxy ?? startedProxy };
  const current = edge.routes.byName;
  const routes = new Map<string, Route>();
  const fresh: Route[] = [];
  const servers: ReloadOutcome["servers"] = { added: [], removed: [], changed: [], upstreamReplaced: [] };
  const tracing = edge.observers.tracing.interceptor();
  try {
    for (const [name, cfg] of Object.entries(config.servers)) {
      const old = current.get(name);
      if (!old) servers.added.push(name);
      else if (!isDeepStrictEqual(old.config, cfg)) servers.changed.push(name);
      if (old && isDeepStrictEqual(upstreamPart(old.config), upstreamPart(cfg))) {
        // Same upstream: same object (connections, processes, placement), new settings.
        routes.set(name, old.config === cfg ? old : { ...old, config: cfg });
        continue;
      }
      if (old) servers.upstreamReplaced.push(name);
      // Sessions already placed on instances that stay listed keep counting there.
      const counts = old ? new Map(old.upstream.health().map((h) => [h.id, h.sessions])) : undefined;
      const route = buildRoute(name, cfg, deps, counts);
      if (tracing) route.interceptors.push(tracing);
      fresh.push(route);
      routes.set(name, route);
    }
    await Promise.all(fresh.map((r) => r.upstream.start()));
  } catch (err) {
    await Promise.allSettled(fresh.map((r) => r.upstream.stop()));
    await startedProxy?.stop();
    if (isGatewayError(err) && err.code === "EDGE_RELOAD_REFUSED") throw err;
    refuse(
      `the new configuration cannot run here: ${isGatewayError(err) ? `${err.code}: ` : ""}${(err as Error).message}`,
    );
  }
  for (const name of current.keys()) if (!routes.has(name)) servers.removed.push(name);

  // ---- the swap: synchronous, so no request sees half of it ----------------------------------
  const retired = [...current.values()].filter((r) => routes.get(r.name)?.upstream !== r.upstream);
  if (startedProxy) {
    edge.egressProxy = startedProxy;
    edge.routeDeps.egressProxy = startedProxy;
  }
  current.clear();
  const byPath = edge.routes.byPath;
  byPath.clear();
  for (const [name, route] of routes) {
    current.set(name, route);
    edge.routes.owned.add(route);
    addPaths(byPath, route);
  }
  const d = edge.pipelineDeps;
  d.limiter.configure(config.servers);
  edge.routes.cache.configure(config.servers);
  edge.keys.setServers([...routes.keys()]);
  if (!isDeepStrictEqual(running.rateLimits, config.rateLimits))
    d.authFailures = new AuthFailureLimiter(
      config.rateLimits.authFailures,
      config.security.trustForwardedHeaders,
      log,
    );
  d.origins = new Set(config.security.allowedOrigins);
  d.maxBodyBytes = config.limits.maxBodyBytes;
  d.jsonLimits = config.limits.json;
  edge.pipeline.rebuild(stageLists(d));
  const docs = wellKnownDocuments(config, routes.values(), edge.stores.identity);
  edge.wellKnown.clear();
  for (const [path, doc] of docs) edge.wellKnown.set(path, doc);
  log.level = config.log.level;
  // ---- end of the swap -------------------------------------------------------------------------

  // Upstreams no longer used: an HTTP one only stops probing (exchanges under way finish); a stdio
  // one ends its processes (their sessions follow onBackendLoss on the next call).
  for (const r of retired)
    void r.upstream
      .stop()
      .catch((err: unknown) =>
        log.warn({ err: String(err), server: r.name }, "stopping a replaced upstream"),
      );
  // The unsafe opt-ins of the new config, coded as at boot.
  for (const w of warnings) log.warn({ code: w.code }, w.message);
  return { config, outcome: { servers, changed, restartRequired } };
}
