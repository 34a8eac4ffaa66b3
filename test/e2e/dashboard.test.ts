/**
 * The dashboard end to end: a real edge in process in front of
 * the conformance fixture, a scripted workload from SDK v1 clients in two tenants (allowed calls,
 * tool errors, 429s from a per-tool limit, a refusal by a key's tool allow-list), then Chromium
 * (Debian's package, driven by playwright-core) signs in as the root admin and as a tenant admin.
 * The figures the page shows (read from data-testid elements) must equal what /api/stats answers
 * and what the audit records hold, and the tenant admin must see its own tenant only.
 *
 * Screenshots go to test-artifacts/dashboard/ (git-ignored).
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { BrowserContext, Page } from "playwright-core";
import { CHROMIUM, launchChromium } from "../helpers/chromium.ts";
import type { AuditRecord } from "../../src/audit/record.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { REPO_ROOT, type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";

const ADMIN_TOKEN = "dashboard-admin-token-0123456789abcdef-0123456789";
const ARTIFACTS = path.join(REPO_ROOT, "test-artifacts", "dashboard");
const EVIL_TENANT = `evil"><img src=x onerror="window.__pwned=1">`;
const EVIL_TOOL = `<img src=x onerror="window.__pwned=2">`;
const haveChromium = existsSync(CHROMIUM);

if (!haveChromium) {
  if (process.env.CI === "true") {
    // CI installs it (.ci/run); a missing browser there is a broken pipeline, never a skip.
    test("chromium is installed at /usr/bin/chromium", () => {
      assert.fail(`${CHROMIUM} is missing under CI=true: install Debian's chromium package (see .ci/run)`);
    });
  } else {
    process.stderr.write(
      `\n*** SKIPPING the dashboard e2e test: ${CHROMIUM} is missing. ` +
        "Install it with `apt-get update && apt-get install -y chromium`. ***\n\n",
    );
  }
}

interface Figures {
  calls: number;
  errors: number;
  refused: number;
  rate_limited: number;
  p50_ms: number | null;
  p95_ms: number | null;
}

/** The expected figures, computed here from audit records on their own (not with src/admin/stats.ts). */
function expected(records: AuditRecord[]): Figures {
  const lat = records
    .filter((r) => r.decision === "allowed" && typeof r.latencyMs === "number")
    .map((r) => r.latencyMs as number)
    .sort((a, b) => a - b);
  const rank = (p: number) =>
    lat.length === 0 ? null : (lat[Math.ceil((p / 100) * lat.length) - 1] ?? null);
  const failed = (r: AuditRecord) =>
    r.decision === "refused" ||
    (r.outcome !== null && (r.outcome.kind !== "result" || r.outcome.isError === true));
  return {
    calls: records.length,
    errors: records.filter(failed).length,
    refused: records.filter((r) => r.decision === "refused").length,
    rate_limited: records.filter((r) => r.status === 429).length,
    p50_ms: rank(50),
    p95_ms: rank(95),
  };
}

const pick = (f: Figures): Figures => ({
  calls: f.calls,
  errors: f.errors,
  refused: f.refused,
  rate_limited: f.rate_limited,
  p50_ms: f.p50_ms,
  p95_ms: f.p95_ms,
});

describe("dashboard", { skip: !haveChromium }, () => {
  let upstream: SpawnedFixture;
  let edge: InProcessEdge;
  let admin: string;
  let context: BrowserContext;
  let profileDir: string;
  const clients: Client[] = [];
  const keys: Record<string, { id: string; key: string }> = {};
  /** Every call record of the workload, from /api/audit as the root admin. */
  let records: AuditRecord[] = [];
  const pageErrors: string[] = [];
  const foreignRequests: string[] = [];

  async function api(p: string, token = ADMIN_TOKEN): Promise<{ status: number; json: any }> {
    const res = await fetch(`${admin}${p}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: res.status, json: await res.json() };
  }

  async function createKey(body: Record<string, unknown>): Promise<{ id: string; key: string }> {
    const res = await fetch(`${admin}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const json = (await res.json()) as { id: string; key: string };
    assert.equal(res.status, 201, JSON.stringify(json));
    return { id: json.id, key: json.key };
  }

  async function connect(server: string, key: string): Promise<Client> {
    const client = new Client({ name: "dashboard-workload", version: "1.0.0" });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(edge.url(server)), {
        requestInit: { headers: { authorization: `Bearer ${key}` } },
      }),
    );
    clients.push(client);
    return client;
  }

  /** Calls a tool n times; returns how many calls threw (HTTP 4xx answers reject in SDK v1). */
  async function call(client: Client, tool: string, n: number): Promise<number> {
    let threw = 0;
    for (let i = 0; i < n; i++) {
      try {
        await client.callTool({ name: tool, arguments: {} });
      } catch {
        threw++;
      }
    }
    return threw;
  }

  before(async () => {
    upstream = await spawnFixture("test/fixtures/conformance-server.ts");
    edge = await startEdge({
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      servers: {
        // whoami: 3 calls a minute per principal, so the workload gets a known number of 429s.
        alpha: {
          route: "/alpha/mcp",
          upstream: { urls: [upstream.url] },
          auth: ["apiKey"],
          limits: { tools: { whoami: "3/min" } },
        },
        beta: { route: "/beta/mcp", upstream: { urls: [upstream.url] }, auth: ["apiKey"] },
      },
    });
    admin = edge.gw.adminUrl;

    keys.acmeAlpha = await createKey({
      name: "acme-alpha",
      server: "alpha",
      tenant: "acme",
      expires_in: "30d",
    });
    keys.acmeBeta = await createKey({ name: "acme-beta", server: "beta", tenant: "acme" });
    keys.globexAlpha = await createKey({ name: "globex-alpha", server: "alpha", tenant: "globex" });
    keys.globexBeta = await createKey({
      name: "globex-beta",
      server: "beta",
      tenant: "globex",
      tools: ["test_simple_text"],
    });
    keys.evil = await createKey({ name: "evil", server: "beta", tenant: EVIL_TENANT });
    keys.acmeAdmin = await createKey({
      name: "acme-admin",
      server: "alpha",
      tenant: "acme",
      scopes: ["mcp-edge:admin"],
    });
    // An old key nobody has used for 30 days: the view that says it is safe to revoke.
    const day = 86_400_000;
    const old = await edge.gw.keys.create(
      { name: "acme-legacy", server: "alpha", tenant: "acme" },
      Date.now() - 40 * day,
    );
    keys.acmeLegacy = { id: old.record.id, key: old.key };
    edge.gw.keys.store.touch(old.record.id, Date.now() - 30 * day);

    // The workload. acme: 14 tools/call (2 of them 429, 2 tool errors); globex: 8 (1 refused by
    // the key's tool allow-list); the evil tenant: 1 (an unknown tool whose name is markup).
    const acmeA = await connect("alpha", keys.acmeAlpha.key);
    assert.equal(await call(acmeA, "test_simple_text", 4), 0);
    assert.equal(await call(acmeA, "whoami", 5), 2, "two whoami calls over 3/min");
    assert.equal(await call(acmeA, "test_error_handling", 2), 0, "tool errors are results");
    const acmeB = await connect("beta", keys.acmeBeta.key);
    assert.equal(await call(acmeB, "test_simple_text", 3), 0);
    const globexA = await connect("alpha", keys.globexAlpha.key);
    assert.equal(await call(globexA, "test_simple_text", 2), 0);
    assert.equal(await call(globexA, "whoami", 3), 0, "its own whoami budget");
    const globexB = await connect("beta", keys.globexBeta.key);
    assert.equal(await call(globexB, "test_simple_text", 2), 0);
    assert.equal(await call(globexB, "test_error_handling", 1), 1, "not in the key's tool list");
    const evil = await connect("beta", keys.evil.key);
    await call(evil, EVIL_TOOL, 1);

    // Five wrong keys on alpha: refused authentications, which the root admin's page counts.
    for (let i = 0; i < 5; i++) {
      const res = await fetch(edge.url("alpha"), {
        method: "POST",
        headers: {
          authorization: `Bearer mcpe_wrongwrong${i}_${"z".repeat(43)}`,
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
        },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
      });
      assert.equal(res.status, 401);
    }

    // Audit flush (the admin API's audit query flushes too) and key last-use flush.
    await edge.gw.audit.flush();
    await edge.gw.keys.store.flush();
    const page = await api("/api/audit?type=call&limit=1000");
    assert.equal(page.status, 200);
    records = page.json.records as AuditRecord[];

    mkdirSync(ARTIFACTS, { recursive: true });
    profileDir = mkdtempSync(path.join(tmpdir(), "mcp-edge-chromium-"));
    context = await launchChromium(profileDir, { viewport: { width: 1440, height: 900 } });
  });

  after(async () => {
    await context?.close();
    if (profileDir) rmSync(profileDir, { recursive: true, force: true });
    for (const c of clients) await c.close().catch(() => {});
    await edge?.stop();
    await upstream?.stop();
  });

  async function openPage(label: string): Promise<Page> {
    const page = await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(`${label}: ${e.message}`));
    page.on("console", (m) => {
      // The browser logs every non-2xx fetch; the wrong-credential step answers 401 on purpose.
      if (m.type() === "error" && !/status of 401/.test(m.text()))
        pageErrors.push(`${label}: console: ${m.text()}`);
    });
    page.on("response", (r) => {
      if (r.status() >= 400 && r.status() !== 401) pageErrors.push(`${label}: ${r.status()} ${r.url()}`);
    });
    page.on("request", (r) => {
      if (!r.url().startsWith(admin) && !r.url().startsWith("data:")) foreignRequests.push(r.url());
    });
    return page;
  }

  async function signIn(page: Page, credential: string): Promise<void> {
    const res = await page.goto(`${admin}/dashboard`);
    assert.equal(res?.status(), 200);
    await page.getByTestId("login-token").fill(credential);
    await page.getByTestId("login-submit").click();
    await page.waitForSelector('body[data-state="ready"]', { timeout: 15_000 });
  }

  async function ready(page: Page): Promise<void> {
    await page.waitForSelector('body[data-state="ready"]', { timeout: 15_000 });
  }

  /** Totals tiles as numbers (latency tiles read "12.3 ms" or "–"). */
  async function tiles(page: Page): Promise<Figures> {
    const text = async (id: string) => (await page.getByTestId(id).textContent())?.trim() ?? "";
    const num = (t: string) => (t === "–" ? null : Number.parseFloat(t));
    return {
      calls: Number(await text("total-calls")),
      errors: Number(await text("total-errors")),
      refused: Number(await text("total-refused")),
      rate_limited: Number(await text("total-rate-limited")),
      p50_ms: num(await text("total-p50")),
      p95_ms: num(await text("total-p95")),
    };
  }

  /** Rows of a figures table, keyed by a data attribute. */
  async function rows(page: Page, testid: string, keyAttrs: string[]): Promise<Map<string, Figures>> {
    return new Map(
      await page.getByTestId(testid).evaluateAll((els, attrs) => {
        const cell = (tr: Element, id: string) =>
          tr.querySelector(`[data-testid="${id}"]`)?.textContent ?? "";
        const num = (t: string) => (t === "–" ? null : Number.parseFloat(t));
        return els.map((tr) => [
          attrs.map((a) => tr.getAttribute(a) ?? "").join("|"),
          {
            calls: Number(cell(tr, "calls")),
            errors: Number(cell(tr, "errors")),
            refused: tr.querySelector('[data-testid="refused"]') ? Number(cell(tr, "refused")) : -1,
            rate_limited: Number(cell(tr, "rate-limited")),
            p50_ms: num(cell(tr, "p50")),
            p95_ms: num(cell(tr, "p95")),
          },
        ]) as [string, Figures][];
      }, keyAttrs),
    );
  }

  /** Group records by a key and compute the expected figures of each group. */
  function groups(of: AuditRecord[], key: (r: AuditRecord) => string): Map<string, Figures> {
    const m = new Map<string, AuditRecord[]>();
    for (const r of of) m.set(key(r), [...(m.get(key(r)) ?? []), r]);
    return new Map([...m].map(([k, v]) => [k, expected(v)]));
  }

  function withoutRefused(m: Map<string, Figures>): Map<string, Omit<Figures, "refused">> {
    return new Map([...m].map(([k, { refused: _r, ...f }]) => [k, f]));
  }

  /** The page's figures == /api/stats == the audit records, for one scope. */
  async function checkFigures(page: Page, scoped: AuditRecord[], statsQuery: string, token = ADMIN_TOKEN) {
    const stats = await api(`/api/stats?window=1h${statsQuery}`, token);
    assert.equal(stats.status, 200);
    const s = stats.json;
    const want = expected(scoped);
    assert.deepEqual(pick(s.totals), want, "/api/stats totals == audit records");
    assert.deepEqual(await tiles(page), want, "page tiles == audit records");

    const byServer = groups(scoped, (r) => r.server ?? "");
    assert.deepEqual(
      withoutRefused(await rows(page, "server-row", ["data-server"])),
      withoutRefused(byServer),
      "per server",
    );
    assert.deepEqual(
      new Map(s.by_server.map((r: any) => [r.server ?? "", pick(r)])),
      byServer,
      "/api/stats per server",
    );
    const byTenant = groups(scoped, (r) => r.tenant ?? "");
    assert.deepEqual(
      withoutRefused(await rows(page, "tenant-row", ["data-tenant"])),
      withoutRefused(byTenant),
      "per tenant",
    );
    assert.deepEqual(new Map(s.by_tenant.map((r: any) => [r.tenant ?? "", pick(r)])), byTenant);
    const byTool = groups(scoped, (r) => `${r.server}|${r.method}|${r.target}`);
    assert.deepEqual(
      await rows(page, "tool-row", ["data-server", "data-method", "data-tool"]),
      byTool,
      "per tool",
    );
    assert.deepEqual(
      new Map(s.by_tool.map((r: any) => [`${r.server}|${r.method}|${r.tool}`, pick(r)])),
      byTool,
    );

    // Top tools: tools/call by calls; the page lists what the API ranks.
    const top = await page.getByTestId("top-tool-row").evaluateAll((els) =>
      els.map((tr) => ({
        server: tr.getAttribute("data-server"),
        tool: tr.getAttribute("data-tool"),
        calls: Number(tr.querySelector('[data-testid="calls"]')?.textContent),
      })),
    );
    assert.deepEqual(
      top,
      s.top_tools.map((t: any) => ({ server: t.server, tool: t.tool, calls: t.calls })),
    );
    for (const t of top) assert.equal(t.calls, byTool.get(`${t.server}|tools/call|${t.tool}`)?.calls);

    // The charts are drawn from the same figures (Chart.js holds the data it drew).
    const drawn = await page.evaluate(() => {
      const get = (id: string) =>
        (globalThis as any).Chart.getChart(document.querySelector(`[data-testid="${id}"]`)).data.datasets.map(
          (d: { label: string; data: (number | null)[] }) => ({
            label: d.label,
            sum: d.data.reduce((a: number, b) => a + (b ?? 0), 0),
          }),
        );
      return { traffic: get("chart-traffic"), breakdown: get("chart-breakdown") };
    });
    assert.deepEqual(drawn.traffic, [
      { label: "calls", sum: want.calls },
      { label: "errors", sum: want.errors },
      { label: "429s", sum: want.rate_limited },
    ]);
    assert.equal(
      drawn.breakdown.reduce((a: number, d: { sum: number }) => a + d.sum, 0),
      want.calls,
      "the per-server breakdown adds up to the calls",
    );
    return s;
  }

  test("the page is static and locked down: CSP, no framing, no referrer, no data without a credential", async () => {
    const res = await fetch(`${admin}/dashboard`);
    assert.equal(res.status, 200);
    const csp = res.headers.get("content-security-policy") ?? "";
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(res.headers.get("x-frame-options"), "DENY");
    assert.equal(res.headers.get("referrer-policy"), "no-referrer");
    assert.equal(res.headers.get("set-cookie"), null);
    const html = await res.text();
    assert.doesNotMatch(html, /acme|globex/, "the page holds no data");
    const lib = await fetch(`${admin}/dashboard/vendor/chart.umd.min.js`);
    assert.equal(lib.status, 200);
    assert.match(lib.headers.get("content-type") ?? "", /javascript/);
    await lib.arrayBuffer();
    assert.equal((await fetch(`${admin}/dashboard/../../package.json`)).status, 404);
    assert.equal((await fetch(`${admin}/dashboard/nope.js`)).status, 404);
    assert.equal((await fetch(`${admin}/dashboard`, { method: "POST" })).status, 405);
    assert.equal((await api("/api/stats", "not-a-credential")).status, 401);
    assert.equal((await api("/api/stats", keys.acmeAlpha!.key)).status, 401, "a key without the admin scope");
  });

  test("the workload is in the audit: the known counts per tenant", () => {
    const acme = expected(records.filter((r) => r.tenant === "acme"));
    const globex = expected(records.filter((r) => r.tenant === "globex"));
    assert.deepEqual([acme.calls, acme.rate_limited, acme.refused, acme.errors], [14, 2, 2, 4]);
    assert.deepEqual([globex.calls, globex.rate_limited, globex.refused, globex.errors], [8, 0, 1, 1]);
    assert.equal(records.filter((r) => r.tenant === EVIL_TENANT).length, 1);
    assert.equal(records.length, 23);
  });

  test("root admin: every tenant, figures equal /api/stats and the audit records", async () => {
    const page = await openPage("root");
    await page.goto(`${admin}/dashboard`);
    assert.equal(await page.getByTestId("login").isVisible(), true);
    // A wrong credential is refused on the form, and nothing is kept.
    await page.getByTestId("login-token").fill("wrong-token");
    await page.getByTestId("login-submit").click();
    await page.waitForFunction(
      () => document.querySelector('[data-testid="login-error"]')?.textContent !== "",
    );
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);

    await signIn(page, ADMIN_TOKEN);
    assert.equal(await page.getByTestId("scope").textContent(), "root admin");
    // Refused authentications: the five wrong keys, by route and reason, and their address.
    assert.equal(await page.getByTestId("total-auth-refused").textContent(), "5");
    const refusedRow = page.locator('[data-testid="auth-refused-row"][data-server="alpha"]');
    assert.equal(await refusedRow.getAttribute("data-reason"), "EDGE_AUTH_INVALID_TOKEN");
    assert.equal(await refusedRow.getByTestId("count").textContent(), "5");
    assert.equal(
      await page
        .locator('[data-testid="auth-refused-address"][data-address="127.0.0.1"]')
        .getByTestId("count")
        .textContent(),
      "5",
    );
    const s = await checkFigures(page, records, "");
    assert.equal(s.scope, "all");

    // Keys: all of them, with expiry and last use as the API has them; the old one marked idle.
    const apiKeys = (await api("/api/keys")).json.keys as any[];
    const keyRows = await page.getByTestId("key-row").evaluateAll((els) =>
      els.map((tr) => ({
        id: tr.getAttribute("data-key-id"),
        tenant: tr.getAttribute("data-tenant"),
        lastUsed: tr.querySelector('[data-testid="key-last-used"]')?.textContent,
        idle: tr.querySelector('[data-testid="key-idle"]')?.textContent,
        idleBadge: tr.querySelector('[data-testid="key-idle"] .idle') !== null,
      })),
    );
    assert.equal(keyRows.length, apiKeys.length);
    for (const k of apiKeys) {
      const row = keyRows.find((r) => r.id === k.id);
      assert.ok(row, `key ${k.name} shown`);
      assert.equal(
        row.lastUsed,
        k.last_used ? `${k.last_used.slice(0, 10)} ${k.last_used.slice(11, 19)}` : "never",
      );
    }
    assert.equal(keyRows[0]?.id, keys.acmeLegacy!.id, "least recently used first");
    assert.equal(keyRows[0]?.idle, "idle 30d");
    assert.equal(keyRows[0]?.idleBadge, true);
    assert.ok(keyRows.find((r) => r.id === keys.acmeAlpha!.id)?.lastUsed !== "never");

    // Live sessions: the workload's five clients are still connected.
    const apiSessions = (await api("/api/sessions")).json.sessions as any[];
    assert.equal(apiSessions.length, 5);
    assert.equal(await page.getByTestId("session-row").count(), 5);

    // Audit search: newest first; by tool.
    assert.equal(await page.getByTestId("audit-row").count(), records.length);
    await page.getByTestId("audit-filter-tool").fill("whoami");
    await page.getByTestId("audit-submit").click();
    await page.waitForFunction(
      (n) => document.querySelectorAll('[data-testid="audit-row"]').length === n,
      records.filter((r) => r.target === "whoami").length,
    );
    const decisions = await page
      .locator('[data-testid="audit-row"] [data-testid="audit-decision"]')
      .allTextContents();
    assert.deepEqual(decisions.sort(), [
      "allowed",
      "allowed",
      "allowed",
      "allowed",
      "allowed",
      "allowed",
      "refused",
      "refused",
    ]);

    // Hostile names render as text: no element, no script.
    assert.equal(await page.evaluate(() => (globalThis as any).__pwned), undefined);
    assert.equal(await page.locator("main img").count(), 0);
    assert.ok(
      (await page.getByTestId("tenant-row").allTextContents()).some((t) => t.includes(EVIL_TENANT)),
      "the tenant name is shown literally",
    );
    assert.ok((await page.getByTestId("by-tool").textContent())?.includes(EVIL_TOOL));

    await page.screenshot({ path: path.join(ARTIFACTS, "root.png"), fullPage: true });

    // Root narrows to one tenant: every view follows.
    await page.getByTestId("tenant-filter").selectOption("globex");
    await ready(page);
    await checkFigures(
      page,
      records.filter((r) => r.tenant === "globex"),
      "&tenant=globex",
    );
    assert.deepEqual(
      new Set(
        await page
          .locator('[data-testid="key-row"]')
          .evaluateAll((e) => e.map((x) => x.getAttribute("data-tenant"))),
      ),
      new Set(["globex"]),
    );
    await page.screenshot({ path: path.join(ARTIFACTS, "root-globex.png"), fullPage: true });
    await page.close();
  });

  test("tenant admin: its own tenant only, on every view", async () => {
    const token = keys.acmeAdmin!.key;
    // The API itself: another tenant is answered like an unknown object.
    assert.equal((await api("/api/stats?tenant=globex", token)).status, 404);

    const page = await openPage("tenant");
    await signIn(page, token);
    assert.equal(await page.getByTestId("scope").textContent(), "tenant admin · acme");
    assert.equal(await page.getByTestId("tenant-filter").isVisible(), false);
    assert.equal(await page.getByTestId("auth-refused").isVisible(), false, "refusals belong to no tenant");
    const acme = records.filter((r) => r.tenant === "acme");
    const s = await checkFigures(page, acme, "", token);
    assert.equal(s.scope, "tenant");
    assert.equal(s.tenant, "acme");

    const tenantsShown = async (testid: string) =>
      new Set(await page.getByTestId(testid).evaluateAll((e) => e.map((x) => x.getAttribute("data-tenant"))));
    assert.deepEqual(await tenantsShown("tenant-row"), new Set(["acme"]));
    assert.deepEqual(await tenantsShown("key-row"), new Set(["acme"]));
    assert.equal(
      await page.getByTestId("key-row").count(),
      4,
      "acme-alpha, acme-beta, acme-admin, acme-legacy",
    );
    assert.deepEqual(await tenantsShown("session-row"), new Set(["acme"]));
    assert.equal(await page.getByTestId("session-row").count(), 2);
    assert.deepEqual(await tenantsShown("audit-row"), new Set(["acme"]));
    assert.equal(await page.getByTestId("audit-row").count(), acme.length);
    const text = (await page.locator("main").textContent()) ?? "";
    assert.doesNotMatch(text, /globex|evil/, "nothing of another tenant on the page");

    await page.screenshot({ path: path.join(ARTIFACTS, "tenant-acme.png"), fullPage: true });

    // The credential lives in this tab's sessionStorage only; signing out drops it.
    assert.equal(await page.evaluate(() => sessionStorage.length), 1);
    assert.equal((await context.cookies()).length, 0, "no cookies");
    await page.getByTestId("logout").click();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    assert.equal(await page.getByTestId("login").isVisible(), true);
    await page.close();
  });

  test("no script errors, no CSP violations, nothing fetched from another origin", () => {
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(foreignRequests, []);
  });
});
