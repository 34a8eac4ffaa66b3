import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { KeyService } from "./admin/keys.ts";
import type { AuditLog } from "./audit/log.ts";
import { assemble, closeEdge, type Edge } from "./boot/assemble.ts";
import { StoreReadiness } from "./boot/readiness.ts";
import { type ReloadOutcome, reloadEdge } from "./boot/reload.ts";
import type { Config } from "./config/schema.ts";
import { GatewayError, isGatewayError } from "./errors/errors.ts";
import type { EgressProxy } from "./egress/proxy.ts";
import { allowedHostSet } from "./mcp/hygiene.ts";
import { createLogger, type Logger } from "./observability/logger.ts";
import type { Metrics } from "./observability/metrics.ts";
import { listenOn, type SocketSet } from "./server/listener.ts";
import type { StreamRegistry } from "./session/streams.ts";
import { adminRouter, type Health, publicRouter } from "./server/router.ts";
import type { Route } from "./upstream/types.ts";

/** How long the calls ended at the drain timeout get to write their EDGE_DRAINED answers (ms). */
const DRAINED_WRITE_MS = 1000;

export interface GatewayOptions {
  logger?: Logger;
  /**
   * Where a reload reads the config from (the file `serve -c` was given, read and validated
   * again). Without it, `reload()` without a config answers EDGE_RELOAD_UNAVAILABLE.
   */
  source?: () => Config;
}

/**
 * The running edge: an assembled edge (boot/assemble.ts) behind two listeners, the public one (MCP
 * routes, health, well-known documents) and the admin one (health, metrics, dashboard, admin API).
 * `start` resolves once both accept; `stop` drains (SIGTERM semantics).
 */
export class Gateway {
  readonly log: Logger;
  /** The routes by server name (a reload changes this map in place). */
  readonly routes: ReadonlyMap<string, Route>;
  /** Audit records (src/audit): fed by diagnostics channels, written off the request path. */
  readonly audit: AuditLog;
  /** Key administration (the admin API's, also used by the quickstart to create its dev key). */
  readonly keys: KeyService;
  readonly #edge: Edge;
  #config: Config;
  readonly #source: (() => Config) | undefined;
  /** Reloads run one at a time, in the order they were asked for. */
  #reloading: Promise<unknown> = Promise.resolve();
  readonly #public: Server;
  readonly #admin: Server;
  readonly #sockets: SocketSet;
  readonly #readiness: StoreReadiness;
  #stopped: Promise<void> | undefined;

  private constructor(
    config: Config,
    log: Logger,
    edge: Edge,
    servers: [Server, Server],
    sockets: SocketSet,
    readiness: StoreReadiness,
    source: (() => Config) | undefined,
  ) {
    this.#config = config;
    this.log = log;
    this.routes = edge.routes.byName;
    this.audit = edge.stores.audit;
    this.keys = edge.keys;
    this.#edge = edge;
    this.#source = source;
    [this.#public, this.#admin] = servers;
    this.#sockets = sockets;
    this.#readiness = readiness;
  }

  /** Assembles the edge (unsafe config refused, stores opened, upstreams started), then listens. */
  static async start(config: Config, options: GatewayOptions = {}): Promise<Gateway> {
    const log = options.logger ?? createLogger({ level: config.log.level });
    const edge = await assemble(config, log);
    const readiness = new StoreReadiness(edge.stores.shared);
    const health: Health = {
      routes: edge.routes.byName,
      draining: () => edge.state.draining,
      storesDown: () => readiness.down(),
    };
    const sockets: SocketSet = new Set();
    const { wellKnown, pipeline, inflight } = edge;
    const publicHandler = publicRouter({
      health,
      wellKnown,
      byPath: edge.routes.byPath,
      pipeline,
      inflight,
      log,
      origins: new Set(config.security.allowedOrigins),
      pages:
        (edge.connectPages || edge.as) &&
        ((req, res, path, query) =>
          (edge.connectPages?.handle(req, res, path, query) ?? false) ||
          (edge.as?.handle(req, res, path, query) ?? false)),
    });
    const adminHandler = adminRouter({ health, metrics: edge.observers.metrics, api: edge.admin });
    // A listener that cannot bind (a taken port, an address this host does not have) fails the
    // start at once, naming the address, and stops what was already started (spawned processes,
    // the egress proxy, stores), so the process can exit.
    const servers: Server[] = [];
    try {
      servers.push(await listenOn("public", config.listen, config.limits, sockets, publicHandler));
      servers.push(await listenOn("admin", config.admin.listen, config.limits, sockets, adminHandler));
    } catch (err) {
      readiness.close();
      for (const s of servers) s.close();
      await closeEdge(edge, log);
      throw err;
    }
    const gw = new Gateway(
      config,
      log,
      edge,
      servers as [Server, Server],
      sockets,
      readiness,
      options.source,
    );
    edge.admin.setReload(() => gw.reload());
    // DNS-rebinding protection: the Host values this listener serves (its port is known now).
    edge.state.hosts = allowedHostSet({
      configured: config.security.allowedHosts,
      publicUrl: config.publicUrl,
      listenHost: config.listen.host,
      port: gw.port,
    });
    log.info({ url: gw.baseUrl, admin: gw.adminUrl, routes: [...gw.routes.keys()] }, "mcp-edge listening");
    return gw;
  }

  /** The config the edge runs (after a reload: the running one with the reloaded live parts). */
  get config(): Config {
    return this.#config;
  }

  /** The egress proxy of spawned stdio servers, when a route spawns any. */
  get egressProxy(): EgressProxy | undefined {
    return this.#edge.egressProxy;
  }

  /**
   * Reloads the configuration: `next`, or the source's (the config file, read and validated
   * again). What changes live is applied at once without dropping sessions or streams
   * (src/boot/reload.ts); what does not is named in `restartRequired`. On any error the running
   * config stays, the error is logged and thrown (EDGE_RELOAD_REFUSED, EDGE_RELOAD_UNAVAILABLE).
   */
  reload(next?: Config): Promise<ReloadOutcome> {
    const run = this.#reloading.then(() => this.#reload(next));
    this.#reloading = run.catch(() => undefined);
    return run;
  }

  async #reload(given: Config | undefined): Promise<ReloadOutcome> {
    try {
      if (this.#stopped) throw new GatewayError("EDGE_RELOAD_UNAVAILABLE", "the edge is stopping");
      let next = given;
      if (!next) {
        if (!this.#source) throw new GatewayError("EDGE_RELOAD_UNAVAILABLE");
        try {
          next = this.#source();
        } catch (err) {
          // The file's own code (invalid, secret inline, env missing) leads the message.
          const code = isGatewayError(err) ? `${err.code}: ` : "";
          throw new GatewayError("EDGE_RELOAD_REFUSED", `${code}${(err as Error).message}`, { cause: err });
        }
      }
      const { config, outcome } = await reloadEdge(this.#edge, this.#config, next, this.log);
      this.#config = config;
      this.log.info(outcome, "configuration reloaded");
      if (outcome.restartRequired.length > 0)
        this.log.warn(
          { restartRequired: outcome.restartRequired },
          "configuration reloaded: these settings keep their running value until a restart",
        );
      return outcome;
    } catch (err) {
      const code = isGatewayError(err) ? err.code : "EDGE_INTERNAL";
      this.log.error(
        { code, err: (err as Error).message },
        "configuration reload refused; the running configuration stays",
      );
      throw err;
    }
  }

  get port(): number {
    return (this.#public.address() as AddressInfo | null)?.port ?? 0;
  }

  get adminPort(): number {
    return (this.#admin.address() as AddressInfo | null)?.port ?? 0;
  }

  get baseUrl(): string {
    return `http://${hostForUrl(this.config.listen.host)}:${this.port}`;
  }

  get adminUrl(): string {
    return `http://${hostForUrl(this.config.admin.listen.host)}:${this.adminPort}`;
  }

  /** The public URL of a server's MCP endpoint (the first server's without a name). */
  url(server?: string): string {
    const route = server ? this.routes.get(server) : this.routes.values().next().value;
    if (!route) throw new Error(`no server ${server}`);
    return `${this.baseUrl}${route.config.route}`;
  }

  /** The resumable streams of this instance (their buffered bytes and budget evictions). */
  get streams(): StreamRegistry {
    return this.#edge.streams;
  }

  /** The metrics registry, for modules that add gauges (`registerGauge`); undefined when off. */
  get metrics(): Metrics | undefined {
    return this.#edge.observers.metrics;
  }

  get draining(): boolean {
    return this.#edge.state.draining;
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
    const e = this.#edge;
    e.state.draining = true;
    this.log.info({ inflight: e.inflight.size }, "draining");
    // Readiness fails first; the listener stays open `drain.delay` so the load balancer stops
    // sending before connections would be refused (or reset in the accept queue).
    const delay = this.config.drain.delay ?? (e.stores.shared ? 5000 : 0);
    if (delay > 0) await new Promise((res) => setTimeout(res, delay));
    this.#public.close();
    this.#public.closeIdleConnections();
    // The admin listener stays open while calls drain, so a load balancer's /readyz probe reads
    // 503 "draining" instead of a refused connection; it closes with everything else below.
    if (!(await e.inflight.settled(this.config.drain.timeout))) {
      // Each call still running gets a coded JSON-RPC error (EDGE_DRAINED) on its own answer, not a
      // bare end of stream, and its audit record says it was aborted by the drain.
      this.log.warn(
        { inflight: e.inflight.size },
        "drain timeout: ending calls still in flight (EDGE_DRAINED)",
      );
      e.forwarder.abortCalls();
      await e.inflight.settled(DRAINED_WRITE_MS);
    }
    e.streams.closeClients();
    e.legacy.closeAll();
    this.#admin.close();
    for (const s of this.#sockets) s.destroy();
    this.#readiness.close();
    await closeEdge(e, this.log);
    this.log.info("stopped");
    this.log.flush();
  }
}

function hostForUrl(host: string): string {
  return host.includes(":") ? `[${host}]` : host === "0.0.0.0" ? "127.0.0.1" : host;
}
