/**
 * CORS for browser MCP clients (`security.allowedOrigins`), from a real Chromium page: the official
 * SDK client (`@modelcontextprotocol/client`, its browser build, loaded as plain ES modules through
 * an import map served by a test server) connects to the edge from another origin with an API key,
 * lists and calls tools and ends its session — every preflight answered, the session id and the
 * challenge readable. A page of an origin that is not allowed gets no grant: the browser refuses
 * to hand it anything.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import type { BrowserContext } from "playwright-core";
import { chromiumMissing, launchChromium } from "../helpers/chromium.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

const NM = path.join(REPO_ROOT, "node_modules");
const missing = chromiumMissing("the browser CORS test");

// ---- an import map for the SDK's browser build, by the package.json `exports` rules ----------

const CONDITIONS = ["browser", "import", "default"];

function pick(entry: unknown): string | undefined {
  if (typeof entry === "string") return entry;
  if (entry && typeof entry === "object") {
    for (const c of CONDITIONS) {
      const hit = pick((entry as Record<string, unknown>)[c]);
      if (hit) return hit;
    }
  }
  return undefined;
}

/** A bare specifier → its file under node_modules (packages are hoisted: one copy each). */
function resolveBare(spec: string): string {
  const parts = spec.split("/");
  const n = spec.startsWith("@") ? 2 : 1;
  const pkg = parts.slice(0, n).join("/");
  const sub = parts.length > n ? `./${parts.slice(n).join("/")}` : ".";
  const json = JSON.parse(readFileSync(path.join(NM, pkg, "package.json"), "utf8")) as Record<
    string,
    unknown
  >;
  let exp = json.exports as unknown;
  if (exp !== undefined) {
    if (typeof exp === "string" || !Object.keys(exp as object).some((k) => k.startsWith(".")))
      exp = { ".": exp };
    const target = pick((exp as Record<string, unknown>)[sub]);
    if (!target) throw new Error(`${spec}: no browser/import export`);
    return path.join(pkg, target);
  }
  if (sub !== ".") return path.join(pkg, sub);
  return path.join(
    pkg,
    (json.module as string | undefined) ?? (json.main as string | undefined) ?? "index.js",
  );
}

/** Every bare specifier the module graph from `entry` imports, mapped to `/nm/<file>`. */
function importMap(entry: string): Record<string, string> {
  const imports: Record<string, string> = { [entry]: `/nm/${resolveBare(entry)}` };
  const seen = new Set<string>();
  const walk = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const text = readFileSync(path.join(NM, file), "utf8");
    const re =
      /(?:import|export)\s[^'";]*?from\s*['"]([^'"]+)['"]|import\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]/g;
    for (const m of text.matchAll(re)) {
      const spec = (m[1] ?? m[2] ?? m[3]) as string;
      if (spec.startsWith(".")) walk(path.join(path.dirname(file), spec));
      else {
        const target = resolveBare(spec);
        imports[spec] = `/nm/${target}`;
        walk(target);
      }
    }
  };
  walk(resolveBare(entry));
  return imports;
}

/** A page server: `/` an empty page with the import map, `/nm/…` files of node_modules. */
async function pageServer(map: Record<string, string>): Promise<{ server: Server; origin: string }> {
  const html = `<!doctype html><meta charset="utf-8"><title>browser client</title>
<script type="importmap">${JSON.stringify({ imports: map })}</script>`;
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/") {
      res.writeHead(200, { "content-type": "text/html" });
      return res.end(html);
    }
    const file = path.normalize(path.join(NM, decodeURIComponent(url.pathname.slice(4))));
    if (!url.pathname.startsWith("/nm/") || !file.startsWith(NM) || !existsSync(file)) {
      res.writeHead(404);
      return res.end();
    }
    res.writeHead(200, { "content-type": "text/javascript" });
    res.end(readFileSync(file));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, origin: `http://127.0.0.1:${(server.address() as { port: number }).port}` };
}

// ---- the test ------------------------------------------------------------------------------

let edge: InProcessEdge;
let allowedPage: { server: Server; origin: string };
let otherPage: { server: Server; origin: string };
let context: BrowserContext | undefined;
let profileDir: string | undefined;
let key: string;

before(async () => {
  if (missing) return;
  const map = importMap("@modelcontextprotocol/client");
  allowedPage = await pageServer(map);
  otherPage = await pageServer(map);
  edge = await startEdge({
    security: { allowedOrigins: [allowedPage.origin] },
    servers: {
      demo: {
        route: "/mcp",
        upstream: { stdio: { command: NODE_BIN, args: [path.join(REPO_ROOT, "src/demo/server.ts")] } },
        auth: ["apiKey"],
      },
    },
  });
  key = (await edge.gw.keys.create({ name: "browser" })).key;
  profileDir = mkdtempSync(path.join(tmpdir(), "mcp-edge-chromium-"));
  context = await launchChromium(profileDir);
});

after(async () => {
  await context?.close();
  if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  await edge?.stop();
  for (const p of [allowedPage, otherPage]) await new Promise((r) => p?.server.close(r));
});

/** In a page of `origin`: the SDK client against the edge; what it saw, or the error it got. */
async function runClient(origin: string, url: string, credential: string | undefined) {
  const page = await context!.newPage();
  try {
    await page.goto(`${origin}/`);
    return await page.evaluate(
      async ({ url, credential }) => {
        const out: Record<string, unknown> = {};
        try {
          const sdk = await import("@modelcontextprotocol/client");
          const transport = new sdk.StreamableHTTPClientTransport(new URL(url), {
            requestInit: credential ? { headers: { Authorization: `Bearer ${credential}` } } : {},
          });
          const client = new sdk.Client({ name: "browser-page", version: "1.0.0" });
          await client.connect(transport);
          out.sessionId = transport.sessionId;
          out.tools = (await client.listTools()).tools.map((t: { name: string }) => t.name).sort();
          const r = await client.callTool({ name: "echo", arguments: { text: "from the browser" } });
          out.echo = (r.content as { text: string }[])[0]?.text;
          await transport.terminateSession();
          out.terminated = transport.sessionId === undefined;
          await client.close();
        } catch (err) {
          out.error = String(err);
        }
        // A raw request too: the 401 challenge must be readable (exposed) from the page.
        try {
          const res = await fetch(url, {
            method: "POST",
            headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
            body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
          });
          out.anonymous = { status: res.status, challenge: res.headers.get("www-authenticate") };
        } catch (err) {
          out.anonymousError = String(err);
        }
        return out;
      },
      { url, credential },
    );
  } finally {
    await page.close();
  }
}

test(
  "an allowed origin: the SDK client in Chromium connects, calls, reads the session id and the challenge, ends its session",
  { skip: missing },
  async () => {
    const seen = await runClient(allowedPage.origin, edge.url("demo"), key);
    assert.equal(seen.error, undefined, String(seen.error));
    assert.match(String(seen.sessionId), /\S{16,}/);
    assert.deepEqual(seen.tools, ["add", "echo", "fetch_url", "large", "slow"]);
    assert.equal(seen.echo, "from the browser");
    assert.equal(seen.terminated, true);
    const anonymous = seen.anonymous as { status: number; challenge: string | null };
    assert.equal(anonymous.status, 401);
    assert.match(String(anonymous.challenge), /^Bearer realm="mcp-edge"/);
  },
);

test(
  "another origin: no grant — the browser hands the page nothing; the preflight is refused",
  { skip: missing },
  async () => {
    const seen = await runClient(otherPage.origin, edge.url("demo"), key);
    assert.match(String(seen.error), /Failed to fetch|NetworkError|TypeError/);
    assert.equal(seen.sessionId, undefined);
    assert.match(String(seen.anonymousError), /Failed to fetch/);
    // The same preflight, seen on the wire.
    const preflight = (origin: string) =>
      fetch(edge.url("demo"), {
        method: "OPTIONS",
        headers: {
          origin,
          "access-control-request-method": "POST",
          "access-control-request-headers":
            "authorization, content-type, mcp-protocol-version, mcp-param-region",
        },
      });
    const refused = await preflight(otherPage.origin);
    assert.equal(refused.status, 403);
    assert.equal(refused.headers.get("access-control-allow-origin"), null);
    const granted = await preflight(allowedPage.origin);
    assert.equal(granted.status, 204);
    assert.equal(granted.headers.get("access-control-allow-origin"), allowedPage.origin);
    assert.equal(granted.headers.get("access-control-allow-methods"), "GET, POST, DELETE");
    const allowHeaders = (granted.headers.get("access-control-allow-headers") ?? "").toLowerCase();
    for (const h of [
      "authorization",
      "content-type",
      "mcp-session-id",
      "mcp-protocol-version",
      "last-event-id",
      "mcp-method",
      "mcp-name",
      "mcp-param-region",
    ])
      assert.ok(allowHeaders.split(", ").includes(h), `${h} is granted: ${allowHeaders}`);
  },
);
