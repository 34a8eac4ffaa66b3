import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AdminApi } from "../admin/api.ts";
import { isDashboardPath, serveDashboard } from "../admin/dashboard.ts";
import type { RouteHit } from "../boot/routes.ts";
import { PublicRequestContext } from "../context.ts";
import { GatewayError } from "../errors/errors.ts";
import { sendError } from "../errors/wire.ts";
import { type Logger, logScope } from "../observability/logger.ts";
import type { Metrics } from "../observability/metrics.ts";
import type { Pipeline } from "../pipeline/pipeline.ts";
import type { Route } from "../upstream/types.ts";
import type { Inflight } from "./listener.ts";

/** Health endpoints, answered on both listeners. */
export interface Health {
  readonly routes: ReadonlyMap<string, Route>;
  readonly draining: () => boolean;
  /** This instance's stores that are down now (`redis`, `postgres`); empty when all can serve. */
  readonly storesDown: () => string[];
}

/**
 * `/healthz` (alive) and `/readyz` (this instance can take work: not draining, its stores up).
 * True when the path was one of them. An upstream that is down does not make the instance unready
 * (every instance would be, and a balancer would have nowhere to send): the admin listener's
 * `/readyz` adds each route's upstream state. The public one names no route, and no answer carries
 * session ids, tokens or instance URLs: health endpoints are often scraped unauthenticated.
 */
function health(h: Health, res: ServerResponse, path: string, admin: boolean): boolean {
  if (path === "/healthz") {
    res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
    res.end('{"status":"ok"}');
    return true;
  }
  if (path !== "/readyz") return false;
  const draining = h.draining();
  const stores = h.storesDown();
  const ok = !draining && stores.length === 0;
  const body: Record<string, unknown> = { status: ok ? "ready" : draining ? "draining" : "unavailable" };
  if (stores.length > 0) body.storesDown = stores;
  if (admin) {
    body.routes = Object.fromEntries(
      [...h.routes.values()].map((r) => [r.name, r.upstream.ready() ? "ready" : "unavailable"]),
    );
  }
  res.writeHead(ok ? 200 : 503, { "content-type": "application/json", "cache-control": "no-store" });
  res.end(JSON.stringify(body));
  return true;
}

/** A public metadata document (JSON, cacheable briefly, readable cross-origin). */
function wellKnown(req: IncomingMessage, res: ServerResponse, doc: () => unknown): void {
  req.resume();
  if (req.method !== "GET" && req.method !== "HEAD") {
    sendError(
      res,
      new GatewayError("EDGE_METHOD_NOT_ALLOWED", undefined, { headers: { allow: "GET, HEAD" } }),
    );
    return;
  }
  const body = JSON.stringify(doc());
  res.writeHead(200, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    "cache-control": "public, max-age=300",
    "access-control-allow-origin": "*",
  });
  res.end(req.method === "HEAD" ? undefined : body);
}

/** Request headers a browser MCP client sends (the CORS preflight grants them). */
const CORS_ALLOW_HEADERS =
  "Authorization, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name";
/** Answer headers a browser MCP client must read (CORS hides all others). */
const CORS_EXPOSE_HEADERS = "Mcp-Session-Id, Mcp-Protocol-Version, WWW-Authenticate, Retry-After";
const CORS_METHODS: Record<RouteHit["endpoint"], string> = {
  mcp: "GET, POST, DELETE",
  "legacy-sse": "GET",
  "legacy-messages": "POST",
};

/**
 * CORS (Fetch standard) for `security.allowedOrigins`, on a route's paths. A preflight from an
 * allowed origin is answered 204 with the transport's methods and the MCP request headers; from
 * any other origin 403 EDGE_ORIGIN_FORBIDDEN, with no grant. Requests from an allowed origin get
 * the grant and the MCP answer headers exposed. True when the request was a preflight (answered).
 * `Mcp-Param-*` headers are granted as the browser lists them, since their names vary per call.
 */
function cors(
  req: IncomingMessage,
  res: ServerResponse,
  hit: RouteHit,
  origins: ReadonlySet<string>,
): boolean {
  const origin = req.headers.origin;
  const allowed = origin !== undefined && origins.has(origin);
  if (allowed) {
    res.setHeader("access-control-allow-origin", origin);
    res.setHeader("access-control-expose-headers", CORS_EXPOSE_HEADERS);
  }
  if (origins.size > 0) res.setHeader("vary", "Origin");
  if (req.method !== "OPTIONS" || req.headers["access-control-request-method"] === undefined) return false;
  req.resume();
  if (!allowed) {
    sendError(res, new GatewayError("EDGE_ORIGIN_FORBIDDEN"));
    return true;
  }
  const params = (req.headers["access-control-request-headers"] ?? "")
    .split(",")
    .map((h) => h.trim())
    .filter((h) => /^mcp-param-[a-z0-9-]+$/i.test(h));
  res.writeHead(204, {
    "access-control-allow-methods": CORS_METHODS[hit.endpoint],
    "access-control-allow-headers": [CORS_ALLOW_HEADERS, ...params].join(", "),
    "access-control-max-age": "600",
    "cache-control": "no-store",
  });
  res.end();
  return true;
}

/**
 * The public listener's router: health, then well-known documents, then the route of the path
 * (`{route}`, `{route}/sse`, `{route}/messages`), whose request runs the pipeline. Anything else
 * is 404. Every routed request gets a request id (header `x-mcp-edge-request-id`, every log line).
 */
export function publicRouter(deps: {
  health: Health;
  wellKnown: ReadonlyMap<string, () => unknown>;
  byPath: ReadonlyMap<string, RouteHit>;
  pipeline: Pipeline;
  inflight: Inflight;
  log: Logger;
  /** `security.allowedOrigins`: browser origins granted CORS on the routes. */
  origins: ReadonlySet<string>;
  /** Pages for people (`/connect/...`): true when the path was theirs. */
  pages?:
    | ((req: IncomingMessage, res: ServerResponse, path: string, query: URLSearchParams) => boolean)
    | undefined;
}): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const socket = req.socket;
    const url = req.url ?? "/";
    const query = url.indexOf("?");
    const path = query < 0 ? url : url.slice(0, query);
    if (health(deps.health, res, path, false)) return;
    const doc = path.startsWith("/.well-known/") ? deps.wellKnown.get(path) : undefined;
    if (doc) return wellKnown(req, res, doc);
    const hit = deps.byPath.get(path);
    if (!hit && deps.pages?.(req, res, path, new URLSearchParams(query < 0 ? "" : url.slice(query + 1))))
      return;
    if (!hit) {
      // Drain the body so the connection can be reused, then 404.
      req.resume();
      sendError(res, new GatewayError("EDGE_ROUTE_NOT_FOUND"));
      return;
    }
    if (cors(req, res, hit, deps.origins)) return;
    const requestId = randomUUID();
    // Its `clientGone` is made when first read; the client's going away is noted from now on.
    const ctx = new PublicRequestContext(requestId, req, res, hit.route, hit.endpoint, deps.log);
    res.setHeader("x-mcp-edge-request-id", requestId);
    // The error answer runs inside the scope too, so its log line carries the request id.
    const work = logScope.run({ reqId: requestId, server: hit.route.name }, () =>
      deps.pipeline.serve(ctx, socket),
    );
    if (req.method === "POST") deps.inflight.add(work);
  };
}

/** The admin listener's router: health, `/metrics`, the dashboard, then the admin API. */
export function adminRouter(deps: {
  health: Health;
  metrics: Metrics | undefined;
  api: AdminApi;
}): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const url = new URL(req.url ?? "/", "http://admin");
    if (health(deps.health, res, url.pathname, true)) return;
    // GET /metrics: open on the admin listener unless `metrics.token` is set.
    if (url.pathname === "/metrics" && deps.metrics) {
      void deps.metrics.serve(req, res);
      return;
    }
    // GET /dashboard: a static page, no data; it calls /api/* with the admin credential, which
    // authenticates and scopes every answer.
    if (isDashboardPath(url.pathname)) {
      serveDashboard(req, res, url.pathname);
      return;
    }
    void deps.api.handle(req, res, url.pathname, url.searchParams).then((handled) => {
      if (!handled) {
        req.resume();
        sendError(res, new GatewayError("EDGE_ROUTE_NOT_FOUND"));
      }
    });
  };
}
