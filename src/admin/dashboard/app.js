/* global document, sessionStorage, getComputedStyle, FormData, Chart */
/**
 * The mcp-edge dashboard (served by src/admin/dashboard.ts). Plain browser JavaScript, no build.
 *
 * - The admin credential is typed into the sign-in form, kept in sessionStorage (this tab only) and
 *   sent as `Authorization: Bearer` to /api/*. No cookies: nothing a cross-site page can ride on.
 * - Every value from the API is rendered with textContent or setAttribute, never innerHTML; charts
 *   are drawn by Chart.js on canvas (labels included).
 * - The API decides the scope: a tenant admin's answers hold its tenant only, whatever it asks.
 */
"use strict";

(() => {
  const STORAGE_KEY = "mcp-edge.admin-credential";
  const IDLE_MS = 7 * 86_400_000;
  const COLORS = ["#2f6fde", "#d9534f", "#e39b1b", "#2a9d8f", "#8e5ad6", "#5f6b7a", "#c2185b", "#6d9e2e"];
  const MAX_SERIES = 8;

  const $ = (id) => document.getElementById(id);
  const charts = new Map();
  const state = {
    /** Set when the credential is a tenant admin's: the API scopes to it, the page says so. */
    fixedTenant: null,
    stats: null,
    auditNext: null,
    auditShown: 0,
  };

  // ---- DOM helpers: text only ----------------------------------------------------------------------

  /** An element with attributes and text children (strings become text nodes, never markup). */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") e.className = v;
      else e.setAttribute(k, String(v));
    }
    for (const c of children) if (c !== undefined && c !== null) e.append(c);
    return e;
  }

  function td(text, attrs) {
    return el("td", attrs, text === null || text === undefined ? "" : String(text));
  }

  function emptyRow(tbody, columns, text) {
    tbody.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan: columns }, text)));
  }

  const name = (v) => (v === null || v === undefined || v === "" ? "(none)" : v);
  const ms = (v) => (v === null || v === undefined ? "–" : String(v));

  function utc(iso) {
    if (!iso) return "";
    return `${iso.slice(0, 10)} ${iso.slice(11, 19)}`;
  }

  function span(msValue) {
    const a = Math.abs(msValue);
    if (a < 60_000) return `${Math.round(a / 1000)}s`;
    if (a < 3_600_000) return `${Math.round(a / 60_000)}m`;
    if (a < 86_400_000) return `${Math.round(a / 3_600_000)}h`;
    return `${Math.round(a / 86_400_000)}d`;
  }

  // ---- API -----------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, params) {
    const token = sessionStorage.getItem(STORAGE_KEY);
    if (!token) throw new ApiError(401, "EDGE_ADMIN_UNAUTHORIZED", "not signed in");
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {}))
      if (v !== undefined && v !== null && v !== "") qs.set(k, v);
    const url = `/api/${path}${qs.size > 0 ? `?${qs}` : ""}`;
    const res = await fetch(url, {
      headers: { authorization: `Bearer ${token}`, accept: "application/json" },
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
    const body = await res.json().catch(() => null);
    if (!res.ok) {
      const err = body && body.error ? body.error : {};
      throw new ApiError(res.status, err.code || "", err.message || `HTTP ${res.status}`);
    }
    return body;
  }

  /** The tenant the page asks for: the fixed one of a tenant admin, else the root's choice. */
  function tenantParam() {
    if (state.fixedTenant !== null) return undefined; // the API scopes a tenant admin by itself
    return $("tenant-filter").value || undefined;
  }

  // ---- sign in / out -------------------------------------------------------------------------------

  function showLogin(message) {
    document.body.dataset.state = "login";
    $("app").hidden = true;
    $("controls").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    document.querySelector('[data-testid="scope"]').textContent = "";
    $("login-token").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(STORAGE_KEY);
    state.fixedTenant = null;
    for (const c of charts.values()) c.destroy();
    charts.clear();
    showLogin(message);
  }

  async function signIn(token) {
    sessionStorage.setItem(STORAGE_KEY, token);
    try {
      // Who is this? Ask for every tenant: a tenant admin's answer comes back scoped to its own.
      const probe = await api("stats", { window: $("window").value });
      state.fixedTenant = probe.scope === "tenant" ? probe.tenant : null;
    } catch (err) {
      sessionStorage.removeItem(STORAGE_KEY);
      const msg =
        err instanceof ApiError && (err.status === 401 || err.status === 404)
          ? "This credential is not an admin credential (root token or a key with scope mcp-edge:admin)."
          : `Sign-in failed: ${err.message}`;
      showLogin(msg);
      return;
    }
    $("login").hidden = true;
    $("app").hidden = false;
    $("controls").hidden = false;
    $("tenant-filter-label").hidden = state.fixedTenant !== null;
    document.querySelector('[data-testid="scope"]').textContent =
      state.fixedTenant !== null ? `tenant admin · ${state.fixedTenant}` : "root admin";
    await refresh();
  }

  // ---- rendering -----------------------------------------------------------------------------------

  function renderTotals(s) {
    const t = s.totals;
    const set = (id, v) => (document.querySelector(`[data-testid="${id}"]`).textContent = v);
    set("total-calls", String(t.calls));
    set("total-errors", String(t.errors));
    set("total-refused", String(t.refused));
    set("total-rate-limited", String(t.rate_limited));
    set("total-p50", t.p50_ms === null ? "–" : `${t.p50_ms} ms`);
    set("total-p95", t.p95_ms === null ? "–" : `${t.p95_ms} ms`);
  }

  /** Refused authentications (root admins only: they belong to no tenant), since the edge started. */
  function renderAuthRefused(s) {
    const a = s.auth_refused;
    document.querySelector('[data-testid="auth-refused-tile"]').hidden = !a;
    document.querySelector('[data-testid="auth-refused"]').hidden = !a;
    if (!a) return;
    document.querySelector('[data-testid="total-auth-refused"]').textContent = String(a.total);
    document.querySelector('[data-testid="auth-refused-since"]').textContent =
      `since ${a.since.slice(0, 16).replace("T", " ")} UTC · ${a.audited} audited, ${a.not_audited} left out by sampling`;
    const routes = $("auth-refused-routes");
    if (a.by_route.length === 0) emptyRow(routes, 3, "None.");
    else
      routes.replaceChildren(
        ...a.by_route.map((r) =>
          el(
            "tr",
            { "data-testid": "auth-refused-row", "data-server": r.server, "data-reason": r.reason },
            td(r.server),
            td(r.reason),
            td(r.count, { class: "num", "data-testid": "count" }),
          ),
        ),
      );
    const addresses = $("auth-refused-addresses");
    if (a.top_addresses.length === 0) emptyRow(addresses, 2, "None.");
    else
      addresses.replaceChildren(
        ...a.top_addresses.map((r) =>
          el(
            "tr",
            { "data-testid": "auth-refused-address", "data-address": r.address },
            td(r.address),
            td(r.count, { class: "num", "data-testid": "count" }),
          ),
        ),
      );
  }

  function figureCells(f, withRefused) {
    return [
      td(f.calls, { class: "num", "data-testid": "calls" }),
      td(f.errors, { class: "num", "data-testid": "errors" }),
      withRefused ? td(f.refused, { class: "num", "data-testid": "refused" }) : null,
      td(f.rate_limited, { class: "num", "data-testid": "rate-limited" }),
      td(ms(f.p50_ms), { class: "num", "data-testid": "p50" }),
      td(ms(f.p95_ms), { class: "num", "data-testid": "p95" }),
    ];
  }

  function renderTables(s) {
    const servers = $("by-server");
    if (s.by_server.length === 0) emptyRow(servers, 6, "No calls in this window.");
    else
      servers.replaceChildren(
        ...s.by_server.map((r) =>
          el(
            "tr",
            { "data-testid": "server-row", "data-server": r.server ?? "" },
            td(name(r.server), { "data-testid": "name" }),
            ...figureCells(r, false),
          ),
        ),
      );
    const tenants = $("by-tenant");
    if (s.by_tenant.length === 0) emptyRow(tenants, 6, "No calls in this window.");
    else
      tenants.replaceChildren(
        ...s.by_tenant.map((r) =>
          el(
            "tr",
            { "data-testid": "tenant-row", "data-tenant": r.tenant ?? "" },
            td(name(r.tenant), { "data-testid": "name" }),
            ...figureCells(r, false),
          ),
        ),
      );
    const tools = $("by-tool");
    if (s.by_tool.length === 0) emptyRow(tools, 9, "No calls in this window.");
    else {
      const rows = s.by_tool.map((r) =>
        el(
          "tr",
          {
            "data-testid": "tool-row",
            "data-server": r.server ?? "",
            "data-method": r.method ?? "",
            "data-tool": r.tool ?? "",
          },
          td(name(r.server)),
          td(name(r.method)),
          td(name(r.tool), { "data-testid": "name", title: r.tool ?? "" }),
          ...figureCells(r, true),
        ),
      );
      if (s.by_tool_omitted > 0) {
        rows.push(
          el(
            "tr",
            {},
            el("td", { class: "empty", colspan: 9 }, `${s.by_tool_omitted} quieter rows not shown`),
          ),
        );
      }
      tools.replaceChildren(...rows);
    }
    const top = $("top-tools");
    if (s.top_tools.length === 0) emptyRow(top, 5, "No tool calls in this window.");
    else
      top.replaceChildren(
        ...s.top_tools.map((r, i) =>
          el(
            "tr",
            {
              "data-testid": "top-tool-row",
              "data-rank": i + 1,
              "data-server": r.server ?? "",
              "data-tool": r.tool ?? "",
            },
            td(name(r.server)),
            td(name(r.tool), { "data-testid": "name" }),
            td(r.calls, { class: "num", "data-testid": "calls" }),
            td(r.errors, { class: "num", "data-testid": "errors" }),
            td(r.rate_limited, { class: "num", "data-testid": "rate-limited" }),
          ),
        ),
      );
  }

  function bucketLabels(s) {
    const longWindow = s.window_ms > 86_400_000;
    return s.buckets.map((b) =>
      longWindow ? `${b.start.slice(5, 10)} ${b.start.slice(11, 16)}` : b.start.slice(11, 16),
    );
  }

  function lineDataset(label, data, i) {
    const color = COLORS[i % COLORS.length];
    return {
      label,
      data,
      borderColor: color,
      backgroundColor: color,
      borderWidth: 2,
      // A point where there is something (a lone busy bucket still shows); none along zeros.
      pointRadius: (ctx) => (ctx.raw ? 2 : 0),
      pointHoverRadius: 3,
      tension: 0.2,
      spanGaps: true,
    };
  }

  const baseOptions = (yTitle, integer) => ({
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    interaction: { mode: "index", intersect: false },
    plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    scales: {
      x: { ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 12 } },
      y: {
        beginAtZero: true,
        title: { display: true, text: yTitle },
        ticks: integer ? { precision: 0 } : {},
      },
    },
  });

  function draw(id, config) {
    const old = charts.get(id);
    if (old) old.destroy();
    charts.set(id, new Chart($(id), config));
  }

  function renderCharts(s) {
    const labels = bucketLabels(s);
    draw("chart-traffic", {
      type: "line",
      data: {
        labels,
        datasets: [
          lineDataset(
            "calls",
            s.buckets.map((b) => b.calls),
            0,
          ),
          lineDataset(
            "errors",
            s.buckets.map((b) => b.errors),
            1,
          ),
          lineDataset(
            "429s",
            s.buckets.map((b) => b.rate_limited),
            2,
          ),
        ],
      },
      options: baseOptions("calls per bucket", true),
    });
    draw("chart-latency", {
      type: "line",
      data: {
        labels,
        datasets: [
          lineDataset(
            "p50",
            s.buckets.map((b) => b.p50_ms),
            0,
          ),
          lineDataset(
            "p95",
            s.buckets.map((b) => b.p95_ms),
            4,
          ),
        ],
      },
      options: baseOptions("ms", false),
    });
    renderBreakdown();
    draw("chart-top", {
      type: "bar",
      data: {
        labels: s.top_tools.map((t) => `${name(t.tool)} (${name(t.server)})`),
        datasets: [
          { label: "calls", data: s.top_tools.map((t) => t.calls), backgroundColor: COLORS[0] },
          { label: "errors", data: s.top_tools.map((t) => t.errors), backgroundColor: COLORS[1] },
        ],
      },
      options: {
        ...baseOptions("calls", true),
        indexAxis: "y",
        scales: { x: { beginAtZero: true, ticks: { precision: 0 } }, y: { ticks: { autoSkip: false } } },
      },
    });
  }

  function renderBreakdown() {
    const s = state.stats;
    if (!s) return;
    const dim = $("breakdown-dim").value;
    const metric = $("breakdown-metric").value;
    const label = (r) =>
      dim === "by_server"
        ? name(r.server)
        : dim === "by_tenant"
          ? name(r.tenant)
          : `${name(r.server)} · ${name(r.tool)}`;
    const rows = s[dim].slice(0, MAX_SERIES);
    draw("chart-breakdown", {
      type: "line",
      data: {
        labels: bucketLabels(s),
        datasets: rows.map((r, i) =>
          lineDataset(
            label(r),
            r.buckets.map((b) => b[metric]),
            i,
          ),
        ),
      },
      options: baseOptions(metric.endsWith("_ms") ? "ms" : "per bucket", !metric.endsWith("_ms")),
    });
  }

  function renderKeys(keys) {
    const tbody = $("keys");
    if (keys.length === 0) return emptyRow(tbody, 8, "No keys.");
    const now = Date.now();
    const usable = (k) => k.status === "active" || k.status === "rotating" || k.status === "revoking";
    const lastTouch = (k) => Date.parse(k.last_used ?? k.created);
    const sorted = [...keys].sort(
      (a, b) =>
        Number(usable(b)) - Number(usable(a)) || lastTouch(a) - lastTouch(b) || a.name.localeCompare(b.name),
    );
    tbody.replaceChildren(
      ...sorted.map((k) => {
        const idleMs = now - lastTouch(k);
        let idle;
        if (!usable(k)) idle = el("span", { class: "badge" }, "—");
        else if (k.last_used === null)
          idle = el(
            "span",
            { class: idleMs >= IDLE_MS ? "badge idle" : "badge" },
            `never used (${span(idleMs)} old)`,
          );
        else if (idleMs < 86_400_000) idle = el("span", { class: "badge ok" }, `used ${span(idleMs)} ago`);
        else idle = el("span", { class: idleMs >= IDLE_MS ? "badge idle" : "badge" }, `idle ${span(idleMs)}`);
        let expires = "never";
        if (k.expires) {
          const left = Date.parse(k.expires) - now;
          expires = `${utc(k.expires)} (${left > 0 ? `in ${span(left)}` : "passed"})`;
        }
        const statusClass = k.status === "active" ? "badge ok" : usable(k) ? "badge idle" : "badge bad";
        return el(
          "tr",
          { "data-testid": "key-row", "data-key-id": k.id, "data-tenant": k.tenant ?? "" },
          td(k.name, { "data-testid": "key-name" }),
          td(k.prefix),
          td(name(k.server)),
          td(name(k.tenant), { "data-testid": "key-tenant" }),
          el("td", { "data-testid": "key-status" }, el("span", { class: statusClass }, k.status)),
          td(expires, { "data-testid": "key-expires" }),
          td(k.last_used ? utc(k.last_used) : "never", { "data-testid": "key-last-used" }),
          el("td", { "data-testid": "key-idle", "data-idle-ms": usable(k) ? idleMs : "" }, idle),
        );
      }),
    );
  }

  function renderSessions(sessions) {
    const tbody = $("sessions");
    if (sessions.length === 0) return emptyRow(tbody, 8, "No live sessions.");
    tbody.replaceChildren(
      ...sessions.map((x) =>
        el(
          "tr",
          { "data-testid": "session-row", "data-tenant": x.tenant ?? "" },
          // The id is a bearer handle: a prefix is enough to tell sessions apart on screen.
          td(`${String(x.id).slice(0, 8)}…`),
          td(name(x.server)),
          td(name(x.tenant), { "data-testid": "session-tenant" }),
          td(x.principal ?? "", { title: x.principal ?? "" }),
          td(x.transport ?? ""),
          td(x.protocol_version ?? ""),
          td(utc(x.created)),
          td(utc(x.last_seen)),
        ),
      ),
    );
  }

  function outcomeText(r) {
    const o = r.outcome;
    if (!o) return r.code ?? "";
    if (o.kind === "result") return o.isError ? "tool error" : "ok";
    if (o.kind === "rpc_error") return `rpc ${o.code}`;
    if (o.kind === "http_error") return o.code ?? `http ${o.status}`;
    return o.kind;
  }

  function auditRow(r) {
    return el(
      "tr",
      { "data-testid": "audit-row", "data-tenant": r.tenant ?? "" },
      td(utc(r.time)),
      td(r.type),
      td(name(r.tenant), { "data-testid": "audit-tenant" }),
      td(r.subject ?? "", { title: r.subject ?? "" }),
      td(r.keyId ?? ""),
      td(r.server ?? ""),
      td(r.method ?? ""),
      td(r.target ?? "", { "data-testid": "audit-tool", title: r.target ?? "" }),
      el(
        "td",
        { "data-testid": "audit-decision" },
        el("span", { class: r.decision === "allowed" ? "badge ok" : "badge bad" }, r.decision),
      ),
      td(outcomeText(r), { "data-testid": "audit-outcome" }),
      td(r.status ?? "", { class: "num" }),
      td(r.latencyMs ?? "", { class: "num" }),
    );
  }

  async function searchAudit(more) {
    const form = $("audit-form");
    const f = new FormData(form);
    const params = {
      tenant: tenantParam(),
      subject: String(f.get("subject") || "").trim(),
      tool: String(f.get("tool") || "").trim(),
      since: String(f.get("since") || "").trim(),
      until: String(f.get("until") || "").trim(),
      type: String(f.get("type") || ""),
      order: "desc",
      limit: "50",
      cursor: more ? state.auditNext : undefined,
    };
    $("audit-error").textContent = "";
    let page;
    try {
      page = await api("audit", params);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401)
        return signOut("The credential is no longer accepted.");
      $("audit-error").textContent = err.message;
      return;
    }
    const tbody = $("audit");
    const rows = page.records.map(auditRow);
    if (more) tbody.append(...rows);
    else if (rows.length === 0) emptyRow(tbody, 12, "No matching records.");
    else tbody.replaceChildren(...rows);
    state.auditShown = (more ? state.auditShown : 0) + page.records.length;
    state.auditNext = page.more ? page.next : null;
    $("audit-more").hidden = !page.more;
    $("audit-count").textContent =
      `${state.auditShown} record${state.auditShown === 1 ? "" : "s"} shown, newest first` +
      (page.more ? "; older ones exist" : "") +
      (page.pending > 0 ? ` (${page.pending} not stored yet)` : "");
  }

  function updateTenantChoices(s, keys) {
    if (state.fixedTenant !== null) return;
    const select = $("tenant-filter");
    const current = select.value;
    const names = new Set();
    for (const r of s.by_tenant) if (r.tenant) names.add(r.tenant);
    for (const k of keys) if (k.tenant) names.add(k.tenant);
    if (current) names.add(current);
    select.replaceChildren(
      el("option", { value: "" }, "all tenants"),
      ...[...names].sort().map((t) => el("option", { value: t }, t)),
    );
    select.value = current;
  }

  async function refresh() {
    document.body.dataset.state = "loading";
    const tenant = tenantParam();
    try {
      const [s, keys, sessions] = await Promise.all([
        api("stats", { window: $("window").value, tenant }),
        api("keys", { tenant }),
        api("sessions", { tenant }),
      ]);
      state.stats = s;
      renderTotals(s);
      renderAuthRefused(s);
      renderTables(s);
      renderCharts(s);
      renderKeys(keys.keys);
      renderSessions(sessions.sessions);
      updateTenantChoices(s, keys.keys);
      await searchAudit(false);
      $("status").textContent =
        `Updated ${new Date().toISOString().slice(11, 19)} UTC · window ${s.window} (${utc(s.since)} – ${utc(s.until)} UTC)` +
        ` · ${span(s.bucket_ms)} buckets · ${s.records} call records` +
        (s.truncated ? " · TRUNCATED: the newest records are not counted" : "") +
        (s.pending > 0 ? ` · ${s.pending} records not stored yet` : "");
      document.body.dataset.state = "ready";
    } catch (err) {
      if (err instanceof ApiError && err.status === 401)
        return signOut("The credential is no longer accepted.");
      $("status").textContent = `Could not load: ${err.message}`;
      document.body.dataset.state = "error";
    }
  }

  // ---- wiring --------------------------------------------------------------------------------------

  function start() {
    if (typeof Chart === "undefined") {
      document.body.dataset.state = "error";
      document.body.prepend(el("p", { class: "error" }, "The charting library did not load."));
      return;
    }
    Chart.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
    Chart.defaults.color = "#5f6b7a";
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("login-token").value.trim();
      $("login-token").value = "";
      if (token) void signIn(token);
    });
    $("logout").addEventListener("click", () => signOut(""));
    $("refresh").addEventListener("click", () => void refresh());
    $("window").addEventListener("change", () => void refresh());
    $("tenant-filter").addEventListener("change", () => void refresh());
    $("breakdown-dim").addEventListener("change", renderBreakdown);
    $("breakdown-metric").addEventListener("change", renderBreakdown);
    $("audit-form").addEventListener("submit", (e) => {
      e.preventDefault();
      void searchAudit(false);
    });
    $("audit-more").addEventListener("click", () => void searchAudit(true));
    const token = sessionStorage.getItem(STORAGE_KEY);
    if (token) void signIn(token);
    else showLogin("");
  }

  start();
})();
