import { accessSync, constants, existsSync, statSync } from "node:fs";
import path from "node:path";
import pg from "pg";
import type { Config } from "../config/schema.ts";
import { assessConfig } from "../config/warnings.ts";
import { isLoopbackHost } from "../lib/hosts.ts";
import { Egress } from "../egress/index.ts";
import { SCHEMA_VERSION } from "../store/postgres/db.ts";
import { createRedisClient } from "../store/redis/client.ts";
import { redactUrl } from "../store/distributed.ts";
import { CheckCannotRun, runCheck } from "../check/run.ts";

/**
 * `mcp-edge doctor`: the production checklist evaluated against a config and what it points at.
 * Unlike `validate` (offline, instant), every item here may open a connection: the stores
 * (reachable, latency, migrations), the upstreams (reachable, era, their own `check` grade), the
 * OAuth issuers (reachable, clock skew from their HTTP Date header), and with `--url` the running
 * edge itself. Each item is pass / warn / fail with the reason and the fix. Nothing is written:
 * PostgreSQL is read (the migration table), never migrated; Redis gets a PING.
 *
 * (One file of ~690 lines on purpose: it is the production checklist, item after item, in the
 * order `doctor` prints it.)
 */

export type ItemStatus = "pass" | "warn" | "fail";

export interface DoctorItem {
  id: string;
  title: string;
  status: ItemStatus;
  reason: string;
  /** What to do about a warn or fail. */
  fix?: string;
}

export interface DoctorOptions {
  /** The edge's public MCP URL(s) to probe live (`--url`). */
  url?: string;
  /** Credentials for the live probe of `url`. */
  headers: Record<string, string>;
  /** Milliseconds per network probe. Default 3000. */
  timeoutMs: number;
  /** Where relative store paths resolve (the edge's working directory). */
  cwd: string;
}

export interface DoctorReport {
  file: string;
  items: DoctorItem[];
  ok: boolean;
}

/** Clock skew beyond this is a warning; beyond the token leeway a failure (tokens look expired or not yet valid). */
const SKEW_WARN_MS = 5_000;

function item(id: string, title: string, status: ItemStatus, reason: string, fix?: string): DoctorItem {
  return { id, title, status, reason, ...(fix && status !== "pass" ? { fix } : {}) };
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value?: T; error?: string; ms: number }> {
  const t = performance.now();
  try {
    const value = await fn();
    return { value, ms: Math.round(performance.now() - t) };
  } catch (err) {
    const e = err as { code?: string; message?: string };
    return {
      error: `${e.code ? `${e.code}: ` : ""}${e.message ?? String(err)}`,
      ms: Math.round(performance.now() - t),
    };
  }
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function redisItem(config: Config, timeoutMs: number): Promise<DoctorItem> {
  const r = config.store.redis!;
  const client = createRedisClient({ url: r.url, commandTimeoutMs: timeoutMs });
  client.options.retryStrategy = () => null; // one attempt: doctor reports, it does not wait
  // Connect first, then time one PING: the latency a session request pays, not the handshake.
  const connected = await timed(() =>
    withDeadline(
      new Promise<void>((resolve, reject) => {
        if (client.status === "ready") return resolve();
        client.once("ready", () => resolve());
        client.once("end", () => reject(new Error("connection refused or closed")));
        client.once("error", (err: Error) => reject(err));
      }),
      timeoutMs,
      "connect",
    ),
  );
  const res = connected.error ? connected : await timed(() => withDeadline(client.ping(), timeoutMs, "PING"));
  client.disconnect();
  const where = redactUrl(r.url);
  if (res.error)
    return item(
      "store.redis",
      "Redis reachable",
      "fail",
      `${where}: ${res.error}. While Redis is down, session requests answer 503 and rate limits fall back to per-instance counters.`,
      `start Redis/Valkey at ${where} (or correct store.redis.url), then run mcp-edge doctor again`,
    );
  const slow = res.ms > 50;
  return item(
    "store.redis",
    "Redis reachable",
    slow ? "warn" : "pass",
    `${where}: PING in ${res.ms} ms`,
    "Redis is on every session request's path: keep it within a few ms of the edge (same zone)",
  );
}

async function postgresItems(config: Config, timeoutMs: number): Promise<DoctorItem[]> {
  const p = config.store.postgres!;
  const where = redactUrl(p.url);
  const pool = new pg.Pool({
    connectionString: p.url,
    max: 1,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  });
  pool.on("error", () => undefined);
  try {
    // The first query opens the connection; the second is the latency a request pays.
    const opened = await timed(() => pool.query("SELECT 1"));
    const ping = opened.error ? opened : await timed(() => pool.query("SELECT 1"));
    if (ping.error)
      return [
        item(
          "store.postgres",
          "PostgreSQL reachable",
          "fail",
          `${where}: ${ping.error}. The edge cannot start without it (keys, audit, identity keys).`,
          `start PostgreSQL at ${where} (or correct store.postgres.url), then run mcp-edge doctor again`,
        ),
      ];
    const items = [
      item(
        "store.postgres",
        "PostgreSQL reachable",
        ping.ms > 50 ? "warn" : "pass",
        `${where}: SELECT 1 in ${ping.ms} ms`,
        "keep PostgreSQL close to the edge",
      ),
    ];
    const schema = p.schema;
    const v = await timed(() =>
      pool.query<{ v: number }>(
        `SELECT COALESCE(MAX(version), 0)::int AS v FROM "${schema}".mcp_edge_migrations`,
      ),
    );
    const version = v.value?.rows[0]?.v;
    if (version === undefined) {
      items.push(
        item(
          "store.migrations",
          "Database migrations applied",
          "fail",
          `schema "${schema}" has no migration table (${v.error ?? "empty"})`,
          "start mcp-edge serve once with this config: it creates the schema and applies the migrations at start",
        ),
      );
    } else if (version < SCHEMA_VERSION) {
      items.push(
        item(
          "store.migrations",
          "Database migrations applied",
          "fail",
          `schema "${schema}" is at version ${version}, this mcp-edge needs ${SCHEMA_VERSION}`,
          "start this mcp-edge version once: it applies the missing migrations under an advisory lock",
        ),
      );
    } else {
      items.push(
        item(
          "store.migrations",
          "Database migrations applied",
          "pass",
          version > SCHEMA_VERSION
            ? `schema "${schema}" at version ${version}, newer than this binary's ${SCHEMA_VERSION} (a rolling upgrade: fine)`
            : `schema "${schema}" at version ${version}`,
        ),
      );
    }
    return items;
  } finally {
    await pool.end().catch(() => undefined);
  }
}

function sqliteItem(config: Config, cwd: string): DoctorItem {
  const file = path.resolve(cwd, config.store.sqlite);
  const dir = path.dirname(file);
  try {
    if (existsSync(file)) accessSync(file, constants.R_OK | constants.W_OK);
    else {
      // The edge creates the directory at start: the nearest existing ancestor must be writable.
      let d = dir;
      while (!existsSync(d)) d = path.dirname(d);
      if (!statSync(d).isDirectory()) throw new Error(`${d} is not a directory`);
      accessSync(d, constants.W_OK);
    }
    return item(
      "store.sqlite",
      "Embedded store writable",
      "pass",
      `${file}${existsSync(file) ? "" : " (created at first start)"}`,
    );
  } catch (err) {
    return item(
      "store.sqlite",
      "Embedded store writable",
      "fail",
      `${file}: ${(err as Error).message}`,
      `make ${dir} writable by the user running mcp-edge, or point store.sqlite elsewhere`,
    );
  }
}

function commandFound(command: string): boolean {
  if (command.includes("/")) return existsSync(command);
  return (process.env.PATH ?? "").split(path.delimiter).some((d) => d && existsSync(path.join(d, command)));
}

async function upstreamItems(config: Config, timeoutMs: number): Promise<DoctorItem[]> {
  const out: DoctorItem[] = [];
  for (const [name, server] of Object.entries(config.servers)) {
    const up = server.upstream;
    if (up.stdio) {
      const ok = commandFound(up.stdio.command);
      out.push(
        item(
          `upstream.${name}`,
          `Upstream ${name} (stdio)`,
          ok ? "pass" : "fail",
          ok
            ? `${up.stdio.command} found; it is spawned per session or shared`
            : `${up.stdio.command} not found`,
          `install ${up.stdio.command} or give its absolute path in servers.${name}.upstream.stdio.command`,
        ),
      );
      continue;
    }
    const urls = up.urls ?? (up.sse ? [up.sse] : []);
    for (const u of urls) {
      if (up.sse) {
        out.push(await legacyItem(name, u, timeoutMs));
        continue;
      }
      try {
        const report = await runCheck({
          url: u,
          headers: {},
          era: "auto",
          callTools: [],
          probeLimits: false,
          timeoutMs,
          maxRequests: 80,
        });
        const c = report.counts;
        const needsAuth = report.eras.length === 0;
        const summary = `${needsAuth ? "answers 401 (credentials held by the edge)" : `eras ${report.eras.join(", ")}`}; its own check: grade ${report.grade} (${c.failRequired} required, ${c.failRecommended} recommended failed)`;
        const failedIds = report.findings.filter((f) => f.status === "fail").map((f) => f.id);
        out.push(
          item(
            `upstream.${name}`,
            `Upstream ${name} (${u})`,
            c.failRequired > 0 ? "warn" : "pass",
            `${summary}${failedIds.length ? `: ${failedIds.join(", ")}` : ""}`,
            `run mcp-edge check ${u} -v for the evidence; the edge in front answers Origin/Host and auth itself, transport findings pass through to clients`,
          ),
        );
      } catch (err) {
        out.push(
          item(
            `upstream.${name}`,
            `Upstream ${name} (${u})`,
            "fail",
            err instanceof CheckCannotRun ? err.message : String(err),
            `start the server at ${u} or correct servers.${name}.upstream`,
          ),
        );
      }
    }
  }
  return out;
}

async function legacyItem(name: string, url: string, timeoutMs: number): Promise<DoctorItem> {
  const egress = new Egress({ connectTimeout: timeoutMs });
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const res = await egress.request(url, {
      method: "GET",
      headers: { accept: "text/event-stream" },
      stream: true,
      signal: ac.signal,
      headersTimeout: timeoutMs,
    });
    let text = "";
    for await (const chunk of res.body) {
      text += chunk.toString();
      if (/event:\s*endpoint/.test(text) || text.length > 4096) break;
    }
    res.body.destroy();
    const ok = res.status === 200 && /event:\s*endpoint/.test(text);
    return item(
      `upstream.${name}`,
      `Upstream ${name} (legacy SSE)`,
      ok ? "pass" : "fail",
      ok ? `${url}: endpoint event received` : `${url}: answered ${res.status} without an endpoint event`,
      `start the server or correct servers.${name}.upstream.sse`,
    );
  } catch (err) {
    return item(
      `upstream.${name}`,
      `Upstream ${name} (legacy SSE)`,
      "fail",
      `${url}: ${(err as Error).message}`,
      `start the server at ${url} or correct servers.${name}.upstream.sse`,
    );
  } finally {
    clearTimeout(timer);
    await egress.destroy();
  }
}

async function clockItems(config: Config, timeoutMs: number): Promise<DoctorItem[]> {
  const issuers = config.auth.oauth;
  if (issuers.length === 0) return [];
  const out: DoctorItem[] = [];
  const egress = new Egress({ connectTimeout: timeoutMs });
  const leewayMs = Number(config.auth.leeway);
  try {
    for (const iss of issuers) {
      const target = iss.jwksUri ?? `${iss.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
      const res = await timed(async () => {
        const r = await egress.request(target, {
          method: "GET",
          headers: { accept: "application/json" },
          headersTimeout: timeoutMs,
        });
        for await (const _ of r.body) void _;
        return r;
      });
      const date = res.value?.headers.date;
      const dateText = Array.isArray(date) ? date[0] : date;
      if (res.error || !dateText) {
        out.push(
          item(
            "clock",
            `Clock vs ${iss.issuer}`,
            res.error ? "fail" : "warn",
            res.error ? `${target}: ${res.error}` : `${target} sent no Date header`,
            res.error
              ? `make ${iss.issuer} reachable from the edge (tokens cannot be verified without its keys)`
              : "compare clocks by hand (chronyc tracking / timedatectl)",
          ),
        );
        continue;
      }
      // The Date header has one-second resolution and was stamped before the answer travelled.
      const skew = Date.now() - res.ms / 2 - Date.parse(dateText);
      const abs = Math.abs(skew);
      const status: ItemStatus =
        abs > Math.max(leewayMs, 1000) ? "fail" : abs > SKEW_WARN_MS ? "warn" : "pass";
      out.push(
        item(
          "clock",
          `Clock vs ${iss.issuer}`,
          status,
          `${Math.round(skew / 1000)} s ${skew >= 0 ? "ahead of" : "behind"} the issuer (Date header of ${target}); token leeway ${leewayMs / 1000} s`,
          "synchronize the edge's clock with NTP (chrony, systemd-timesyncd); a skewed clock rejects fresh tokens or accepts expired ones",
        ),
      );
    }
  } finally {
    await egress.destroy();
  }
  return out;
}

/** What the store probes found, for the checklist items that depend on a store. */
interface StoreState {
  redisUp: boolean;
  postgresUp: boolean;
}

function configItems(config: Config, stores: StoreState): DoctorItem[] {
  const out: DoctorItem[] = [];
  const { warnings, errors } = assessConfig(config);
  for (const e of errors)
    out.push(
      item("unsafe", "Unsafe opt-ins", "fail", e, "see the message: the edge refuses to start with this"),
    );
  for (const w of warnings)
    out.push(
      item(
        "unsafe",
        "Unsafe opt-ins",
        "warn",
        `${w.code}: ${w.message}`,
        "remove the opt-in unless it is intended; docs/config.md lists each one",
      ),
    );
  if (errors.length === 0 && warnings.length === 0)
    out.push(item("unsafe", "Unsafe opt-ins", "pass", "none"));

  const admin = config.admin.listen;
  const loopback = isLoopbackHost(admin.host);
  out.push(
    item(
      "admin.exposure",
      "Admin listener exposure",
      loopback ? "pass" : config.admin.token ? "warn" : "fail",
      loopback
        ? `${admin.host}:${admin.port} (loopback)`
        : config.admin.token
          ? `${admin.host}:${admin.port} is reachable from the network; the admin API needs the token, /metrics and health do not`
          : `${admin.host}:${admin.port} is reachable from the network and admin.token is not set`,
      "bind admin.listen.host to 127.0.0.1 (or a private interface behind a firewall) and set admin.token: ${MCP_EDGE_ADMIN_TOKEN}",
    ),
  );

  const servers = Object.entries(config.servers);
  const distributed = config.store.redis !== undefined;
  // The seven guarantees of the production checklist, as far as the config decides them.
  const oauthRoutes = servers.filter(([, s]) => s.auth.includes("oauth")).map(([n]) => n);
  out.push(
    item(
      "checklist.token-refresh",
      "1. Token refresh",
      "pass",
      oauthRoutes.length
        ? `sessions are bound to the principal, not the token (routes ${oauthRoutes.join(", ")}); issuer reachability and clock below`
        : "no OAuth routes: API keys do not expire mid-session unless revoked",
    ),
  );
  out.push(
    item(
      "checklist.session-persistence",
      "2. Session persistence",
      distributed && !stores.redisUp ? "fail" : "pass",
      !distributed
        ? "embedded: session records in SQLite survive a restart of this one instance"
        : stores.redisUp
          ? "session records in Redis: any instance resumes a session"
          : "Redis is unreachable: session requests answer 503 until it is back (the records are in Redis)",
      "bring Redis back (see Redis reachable)",
    ),
  );
  const tenancyRequired = config.tenancy.required;
  // Tokens of the edge's own authorization server carry the tenant of the sign-in (the API key's,
  // or the one the IdP's claim names); only outside issuers can send a token without one.
  const outsideTokens = oauthRoutes.length > 0 && config.auth.oauth.length > 0;
  out.push(
    item(
      "checklist.tenant-isolation",
      "3. Tenant isolation",
      outsideTokens && !tenancyRequired ? "warn" : "pass",
      outsideTokens && !tenancyRequired
        ? `a token without the ${config.tenancy.claim} claim is accepted into the default tenant`
        : outsideTokens
          ? `tenant from the ${config.tenancy.claim} claim, required`
          : oauthRoutes.length > 0
            ? "tenants come from the API keys and the sign-ins of the edge's own authorization server"
            : "tenants come from the API keys",
      "set tenancy.required: true so that a token without a tenant is refused",
    ),
  );
  const keyRoutes = servers.filter(([, s]) => s.auth.includes("apiKey")).map(([n]) => n);
  out.push(
    item(
      "checklist.key-rotation",
      "4. Key rotation",
      keyRoutes.length > 0 && !config.admin.token
        ? "fail"
        : keyRoutes.length > 0 && distributed && !(stores.redisUp && stores.postgresUp)
          ? "warn"
          : "pass",
      keyRoutes.length === 0
        ? "no API-key routes"
        : config.admin.token
          ? distributed && !(stores.redisUp && stores.postgresUp)
            ? `keys live in PostgreSQL and revocations travel over Redis: with ${stores.postgresUp ? "Redis" : "PostgreSQL"} down, ${stores.postgresUp ? "a revocation reaches other instances only when it is back" : "keys cannot be checked, created or revoked"}`
            : `keys for ${keyRoutes.join(", ")} are rotated through the admin API${distributed ? "; revocation reaches every instance over Redis" : ""}`
          : `routes ${keyRoutes.join(", ")} take API keys but admin.token is unset: no key can be created, rotated or revoked`,
      config.admin.token
        ? "bring the stores back (see below)"
        : "set admin.token: ${MCP_EDGE_ADMIN_TOKEN} (32+ characters)",
    ),
  );
  const unlimited = servers.filter(([, s]) => s.limits === undefined).map(([n]) => n);
  out.push(
    item(
      "checklist.rate-limiting",
      "5. Rate limiting",
      unlimited.length > 0 || (distributed && !stores.redisUp) ? "warn" : "pass",
      unlimited.length > 0
        ? `no limits on ${unlimited.join(", ")}`
        : distributed && !stores.redisUp
          ? "Redis is unreachable: each instance enforces quota / store.redis.instances locally until it is back"
          : `every server has limits${distributed ? " (atomic across instances in Redis)" : ""}`,
      unlimited.length === 0
        ? "bring Redis back (see Redis reachable)"
        : `add limits to each server, e.g. servers.${unlimited[0] ?? "NAME"}.limits: { key: 600/min, session: 120/min, concurrency: { session: 8 } }`,
    ),
  );
  out.push(
    item(
      "checklist.audit",
      "6. Audit",
      distributed && !stores.postgresUp ? "warn" : "pass",
      distributed && !stores.postgresUp
        ? "PostgreSQL is unreachable: records wait in the local spool (and tools/call is refused once it is full)"
        : `every tool call is recorded in ${distributed ? "PostgreSQL" : "SQLite"}, hash-chained, with a spool while the store is down`,
      "bring PostgreSQL back (see PostgreSQL reachable)",
    ),
  );
  const privateEgress = config.egress.allowPrivateNetworks || servers.some(([, s]) => s.egress.allowPrivate);
  out.push(
    item(
      "checklist.ssrf",
      "7. SSRF",
      privateEgress ? "warn" : "pass",
      privateEgress
        ? "private-network egress is opted in (see Unsafe opt-ins)"
        : "run-time URLs and redirects are checked against private, loopback, link-local and metadata ranges",
      "drop egress.allowPrivateNetworks / servers.*.egress.allowPrivate, or narrow them to allowHosts entries",
    ),
  );
  return out;
}

async function liveItems(config: Config, opts: DoctorOptions): Promise<DoctorItem[]> {
  const out: DoctorItem[] = [];
  const admin = config.admin.listen;
  const host = admin.host === "0.0.0.0" || admin.host === "::" ? "127.0.0.1" : admin.host;
  const readyz = `http://${host.includes(":") ? `[${host}]` : host}:${admin.port}/readyz`;
  const egress = new Egress({ connectTimeout: opts.timeoutMs });
  try {
    const r = await timed(async () => {
      const res = await egress.request(readyz, {
        method: "GET",
        headers: {},
        headersTimeout: opts.timeoutMs,
      });
      let body = "";
      for await (const c of res.body) body += c.toString();
      return { status: res.status, body };
    });
    out.push(
      item(
        "edge.ready",
        "Edge ready",
        r.value?.status === 200 ? "pass" : "fail",
        r.value ? `${readyz}: ${r.value.status} ${r.value.body.slice(0, 200)}` : `${readyz}: ${r.error}`,
        "start the edge (mcp-edge serve -c FILE); /readyz names the dependency that keeps it unready",
      ),
    );
  } finally {
    await egress.destroy();
  }
  try {
    const report = await runCheck({
      url: opts.url!,
      headers: opts.headers,
      era: "auto",
      callTools: [],
      probeLimits: false,
      timeoutMs: opts.timeoutMs,
      maxRequests: 120,
    });
    const c = report.counts;
    const failed = report.findings.filter((f) => f.status === "fail").map((f) => f.id);
    out.push(
      item(
        "edge.check",
        "Edge wire behaviour (mcp-edge check)",
        c.failRequired > 0 ? "fail" : c.failRecommended > 0 ? "warn" : "pass",
        `${opts.url}: eras ${report.eras.join(", ") || "none judged"}, grade ${report.grade}${failed.length ? `; failed: ${failed.join(", ")}` : ""}`,
        `run mcp-edge check ${opts.url} -v for the evidence of each finding`,
      ),
    );
  } catch (err) {
    out.push(
      item(
        "edge.check",
        "Edge wire behaviour (mcp-edge check)",
        "fail",
        (err as Error).message,
        "start the edge, or correct --url",
      ),
    );
  }
  return out;
}

const ENV_REF = /^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/;
const SCHEME_ENV_REF = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ \$\{[A-Za-z_][A-Za-z0-9_]*\}$/;

/**
 * Secrets written as values in the raw document (before `${ENV}` interpolation), beyond the upstream
 * credentials the loader already refuses: the admin token, the vault key, OAuth client secrets,
 * and passwords inside store URLs. Returns the dotted paths; never the values.
 */
export function inlineSecrets(raw: unknown): string[] {
  const out: string[] = [];
  const obj = (v: unknown): v is Record<string, unknown> =>
    v !== null && typeof v === "object" && !Array.isArray(v);
  const literal = (v: unknown) => typeof v === "string" && !ENV_REF.test(v) && !SCHEME_ENV_REF.test(v);
  if (!obj(raw)) return out;
  const at = (o: unknown, ...keys: string[]): unknown =>
    keys.reduce<unknown>((v, k) => (obj(v) ? v[k] : undefined), o);
  if (literal(at(raw, "admin", "token"))) out.push("admin.token");
  if (literal(at(raw, "vault", "key"))) out.push("vault.key");
  const issuers = at(raw, "auth", "oauth");
  if (Array.isArray(issuers))
    issuers.forEach((iss, i) => {
      if (literal(at(iss, "introspection", "clientSecret")))
        out.push(`auth.oauth[${i}].introspection.clientSecret`);
    });
  if (literal(at(raw, "auth", "authorizationServer", "login", "idp", "clientSecret")))
    out.push("auth.authorizationServer.login.idp.clientSecret");
  const connections = at(raw, "connections");
  if (obj(connections))
    for (const [n, c] of Object.entries(connections))
      if (literal(at(c, "clientSecret"))) out.push(`connections.${n}.clientSecret`);
  for (const store of ["redis", "postgres"]) {
    const u = at(raw, "store", store, "url");
    if (typeof u === "string" && !u.includes("${") && URL.canParse(u) && new URL(u).password)
      out.push(`store.${store}.url (password)`);
  }
  return out;
}

/** Evaluates a loaded config. (Loading errors — invalid config, inline secrets — are the caller's.) */
export async function runDoctorChecks(
  file: string,
  config: Config,
  opts: DoctorOptions,
  raw?: unknown,
): Promise<DoctorReport> {
  const inline = raw === undefined ? [] : inlineSecrets(raw);
  const items: DoctorItem[] = [
    item("config", "Configuration valid", "pass", file),
    inline.length === 0
      ? item(
          "secrets",
          "Secrets from the environment",
          "pass",
          "no secret is written inline (each is a ${ENV} reference)",
        )
      : item(
          "secrets",
          "Secrets from the environment",
          "fail",
          `written in the file: ${inline.join(", ")}`,
          "move each value into an environment variable and write ${NAME} in its place (the file ends up in backups, diffs and images)",
        ),
  ];
  const storeItems = config.store.redis
    ? (await Promise.all([redisItem(config, opts.timeoutMs), postgresItems(config, opts.timeoutMs)])).flat()
    : [sqliteItem(config, opts.cwd)];
  const up = (id: string) => storeItems.some((i) => i.id === id && i.status !== "fail");
  items.push(
    ...configItems(config, { redisUp: up("store.redis"), postgresUp: up("store.postgres") }),
    ...storeItems,
  );
  items.push(...(await clockItems(config, opts.timeoutMs)));
  items.push(...(await upstreamItems(config, opts.timeoutMs)));
  if (opts.url) items.push(...(await liveItems(config, opts)));
  return { file, items, ok: items.every((i) => i.status !== "fail") };
}

export function renderDoctor(report: DoctorReport): string {
  const lines = [`mcp-edge doctor ${report.file}`, ""];
  const w = Math.max(...report.items.map((i) => i.title.length));
  const mark: Record<ItemStatus, string> = { pass: "pass", warn: "WARN", fail: "FAIL" };
  for (const i of report.items) {
    lines.push(`${mark[i.status]}  ${i.title.padEnd(w)}  ${i.reason}`);
    if (i.fix) lines.push(`${" ".repeat(6 + w)}  fix: ${i.fix}`);
  }
  const n = (s: ItemStatus) => report.items.filter((i) => i.status === s).length;
  lines.push("", `${n("pass")} pass, ${n("warn")} warn, ${n("fail")} fail`);
  return lines.join("\n");
}
