/**
 * `GET /dashboard` on the admin listener: a static page (src/admin/dashboard/) that holds
 * no data. It asks for the admin credential (root token, or a tenant admin's key with scope
 * `mcp-edge:admin`), keeps it in `sessionStorage` and sends it as `Authorization: Bearer` on its
 * fetches to `/api/*`, which authenticate and scope every answer. No cookies, so no CSRF surface:
 * a cross-site page cannot make the browser send the credential.
 *
 * The charting library (Chart.js) is served from node_modules at a fixed path: the page loads
 * nothing from another origin, which the CSP below enforces.
 */
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The page's own origin only; no inline script or style, no framing, no form posts, no <base>. */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const ASSETS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "dashboard");
/** Chart.js's UMD build (its package exports do not name it; resolve the package, then its dist). */
const CHART_DIR = path.dirname(fileURLToPath(import.meta.resolve("chart.js")));

interface Asset {
  file: string;
  type: string;
}

/** URL path → file. A fixed table: no path from the request ever reaches the file system. */
const ASSETS: ReadonlyMap<string, Asset> = new Map([
  ["/dashboard", { file: path.join(ASSETS_DIR, "index.html"), type: "text/html; charset=utf-8" }],
  ["/dashboard/", { file: path.join(ASSETS_DIR, "index.html"), type: "text/html; charset=utf-8" }],
  ["/dashboard/app.js", { file: path.join(ASSETS_DIR, "app.js"), type: "text/javascript; charset=utf-8" }],
  ["/dashboard/app.css", { file: path.join(ASSETS_DIR, "app.css"), type: "text/css; charset=utf-8" }],
  [
    "/dashboard/vendor/chart.umd.min.js",
    { file: path.join(CHART_DIR, "chart.umd.min.js"), type: "text/javascript; charset=utf-8" },
  ],
  [
    "/dashboard/vendor/chart.umd.min.js.map",
    { file: path.join(CHART_DIR, "chart.umd.min.js.map"), type: "application/json" },
  ],
]);

/** Read once, on first use (a few hundred KB; the files never change while the process runs). */
const cache = new Map<string, Buffer>();

function load(asset: Asset): Buffer {
  let body = cache.get(asset.file);
  if (!body) {
    body = readFileSync(asset.file);
    cache.set(asset.file, body);
  }
  return body;
}

/** Headers on every dashboard answer, the 404 and 405 included. */
const SECURITY_HEADERS = {
  "content-security-policy": DASHBOARD_CSP,
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "x-content-type-options": "nosniff",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
} as const;

/** True when `/dashboard` or a path under it: answered here (the asset, 404 or 405). */
export function isDashboardPath(p: string): boolean {
  return p === "/dashboard" || p.startsWith("/dashboard/");
}

/** Serves a dashboard asset. Call only for `isDashboardPath(p)`. */
export function serveDashboard(req: IncomingMessage, res: ServerResponse, p: string): void {
  req.resume();
  const asset = ASSETS.get(p);
  if (!asset) {
    res.writeHead(404, { ...SECURITY_HEADERS, "content-type": "text/plain; charset=utf-8" });
    res.end("not found\n");
    return;
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, {
      ...SECURITY_HEADERS,
      allow: "GET, HEAD",
      "content-type": "text/plain; charset=utf-8",
    });
    res.end("method not allowed\n");
    return;
  }
  const body = load(asset);
  res.writeHead(200, {
    ...SECURITY_HEADERS,
    "content-type": asset.type,
    "content-length": body.length,
    // The page is static, but a stale app.js against a newer API is worse than a refetch.
    "cache-control": "no-cache",
  });
  res.end(req.method === "HEAD" ? undefined : body);
}
