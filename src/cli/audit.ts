import { createWriteStream, type WriteStream } from "node:fs";
import { resolve } from "node:path";
import { verifyChains } from "../audit/chain.ts";
import type { AuditOutcome, AuditRecord } from "../audit/record.ts";
import { escapeText } from "../audit/record.ts";
import { SqliteAuditStore } from "../store/sqlite/audit.ts";
import type { AuditFilter, AuditStore } from "../store/types.ts";
import { parseTime } from "../audit/api.ts";
import { loadConfigFile } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { Egress } from "../egress/index.ts";
import { readBody } from "../upstream/reply.ts";
import { type CommandIo, parseCommandArgs, processIo } from "./args.ts";
import { adminBase } from "./admin-client.ts";
import { adminToken, table } from "./keys.ts";

export const AUDIT_USAGE = `Usage: mcp-edge audit <query|tail|verify|export> [options]

Read, follow, verify and export audit records (docs/audit.md).

  audit query  [filters] [--limit N] [--cursor C] [--desc]   one page of records (a table)
  audit tail   [filters] [-n N] [--interval 1s]              the last N records, then new ones as they come
  audit verify [--tenant T]                                  check the hash chains; exit 1 when one breaks
  audit export [filters] [--out FILE]                        every matching record as JSON lines

Filters:
  --tenant T  --subject S  --tool NAME  --type call|request|session.start|session.end|admin|connection
  --since T  --until T       ISO 8601, epoch ms, or a duration ago (15m, 24h, 7d)

Options:
  --url URL          admin API (default: $MCP_EDGE_ADMIN_URL, else the quickstart's of this
                     folder (./.mcp-edge/admin-url), else http://127.0.0.1:8788)
  -c, --config FILE  read the audit store the config names directly instead of the admin API:
                     PostgreSQL when it sets store.postgres (every command, tail included),
                     else its SQLite file (query, verify, export)
  --db FILE          read an SQLite store file directly instead of the admin API (query, verify, export)
  --json             print JSON instead of a table
  -h, --help         show this help

The admin token comes from $MCP_EDGE_ADMIN_TOKEN, else ./.mcp-edge/admin-token (the quickstart's).
A tenant admin key (scope mcp-edge:admin) works as the token and sees its own tenant only.`;

interface Page {
  records: AuditRecord[];
  next: string | null;
  more: boolean;
  pending?: number;
}

interface ChainView {
  tenant: string | null;
  records: number;
  ok: boolean;
  head: string | null;
  break?: { seq: number; reason: string };
}

/** Where records come from: the admin API, or a store file read directly. */
interface Source {
  page(filter: AuditFilter, limit: number, cursor: string | undefined, desc: boolean): Promise<Page>;
  verify(tenant: string | undefined): Promise<{ ok: boolean; chains: ChainView[]; pending?: number }>;
  close(): Promise<void>;
}

class ApiError extends Error {}

function apiSource(base: string, token: string): Source {
  const egress = new Egress({ connectTimeout: 5000 });
  const get = async (path: string): Promise<unknown> => {
    let res;
    try {
      res = await egress.request(`${base}${path}`, {
        method: "GET",
        headers: { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(60_000),
      });
    } catch (err) {
      throw new ApiError(`cannot reach the admin API at ${base}: ${(err as Error).message}`);
    }
    const text = (await readBody(res.body, 64 * 1024 * 1024)).toString("utf8");
    const json = (text ? JSON.parse(text) : {}) as { error?: { code?: string; message?: string } };
    if (res.status >= 400) {
      throw new ApiError(`${json.error?.code ?? res.status}: ${json.error?.message ?? "request failed"}`);
    }
    return json;
  };
  return {
    async page(filter, limit, cursor, desc) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(filter)) if (v !== undefined) q.set(k, String(v));
      q.set("limit", String(limit));
      if (cursor !== undefined) q.set("cursor", cursor);
      if (desc) q.set("order", "desc");
      return (await get(`/api/audit?${q}`)) as Page;
    },
    async verify(tenant) {
      return (await get(
        `/api/audit/verify${tenant !== undefined ? `?tenant=${encodeURIComponent(tenant)}` : ""}`,
      )) as {
        ok: boolean;
        chains: ChainView[];
      };
    },
    close: () => egress.close(),
  };
}

function dbSource(file: string): Source {
  return storeSource(new SqliteAuditStore(file, { busyTimeoutMs: 5000 }), async () => {});
}

/**
 * The PostgreSQL audit store of a distributed deployment (config `store.postgres`), read directly.
 * Opening it applies any missing migration, as an instance starting would.
 */
async function postgresSource(pg: NonNullable<Config["store"]["postgres"]>): Promise<Source> {
  // Loaded here only: the SQLite and admin API paths do not need the driver.
  const { openPostgres } = await import("../store/postgres/db.ts");
  const { PostgresAuditStore } = await import("../store/postgres/audit.ts");
  const db = await openPostgres(pg.url, { schema: pg.schema, max: 2, queryTimeoutMs: pg.queryTimeout });
  return storeSource(new PostgresAuditStore(db), () => db.close());
}

function storeSource(store: AuditStore, end: () => Promise<void>): Source {
  return {
    page: (filter, limit, cursor, desc) =>
      store.query(filter, {
        limit,
        order: desc ? "desc" : "asc",
        ...(cursor !== undefined ? { cursor } : {}),
      }),
    verify: (tenant) => verifyChains(store, tenant !== undefined ? { tenant } : {}),
    close: async () => {
      await store.close();
      await end();
    },
  };
}

function outcomeText(o: AuditOutcome | null): string {
  if (!o) return "-";
  switch (o.kind) {
    case "result":
      return o.isError === null ? "result" : o.isError ? "isError" : "ok";
    case "rpc_error":
      return `rpc ${o.code}`;
    case "http_error":
      return `http ${o.status}${o.code ? ` ${o.code}` : ""}`;
    case "aborted":
      return o.code ? `aborted ${o.code}` : "aborted";
    case "unknown":
      return "unknown";
  }
}

/** A table cell: escaped for the terminal (a stored value was escaped already; an edited one may not be). */
function cell(v: string | number | null | undefined, max = 48): string {
  if (v === null || v === undefined || v === "") return "-";
  const s = escapeText(String(v));
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

function rows(records: AuditRecord[]): string[][] {
  const out = [
    ["TIME", "TENANT", "SUBJECT", "TYPE", "TARGET", "DECISION", "STATUS", "OUTCOME", "MS", "REQUEST"],
  ];
  for (const r of records) {
    out.push([
      r.time.replace("T", " ").replace("Z", ""),
      cell(r.tenant, 24),
      cell(r.subject, 24),
      cell(
        r.type === "call" || r.type === "admin" || r.type === "connection" ? (r.method ?? r.type) : r.type,
        20,
      ),
      cell(r.target, 40),
      r.decision,
      cell(r.status),
      cell(outcomeText(r.outcome), 40),
      cell(r.latencyMs),
      cell(r.requestId, 36),
    ]);
  }
  return out;
}

export async function runAudit(argv: string[], io: CommandIo = processIo): Promise<number> {
  const parsed = parseCommandArgs(
    argv,
    {
      url: { type: "string" },
      config: { type: "string", short: "c" },
      db: { type: "string" },
      json: { type: "boolean" },
      tenant: { type: "string" },
      subject: { type: "string" },
      tool: { type: "string" },
      type: { type: "string" },
      since: { type: "string" },
      until: { type: "string" },
      limit: { type: "string" },
      cursor: { type: "string" },
      desc: { type: "boolean" },
      out: { type: "string" },
      n: { type: "string", short: "n" },
      interval: { type: "string" },
    },
    AUDIT_USAGE,
    io,
  );
  if (typeof parsed === "number") return parsed;
  const [action] = parsed.positionals;
  const v = parsed.values;
  if (!["query", "tail", "verify", "export"].includes(action ?? "")) {
    io.stderr.write(`${action ? `unknown audit command: ${action}\n\n` : ""}${AUDIT_USAGE}\n`);
    return 2;
  }
  const filter: AuditFilter = {};
  try {
    if (v.tenant !== undefined) filter.tenant = v.tenant;
    if (v.subject !== undefined) filter.subject = v.subject;
    if (v.tool !== undefined) filter.tool = v.tool;
    if (v.type !== undefined) filter.type = v.type;
    if (v.since !== undefined) filter.since = parseTime("--since", v.since);
    if (v.until !== undefined) filter.until = parseTime("--until", v.until);
  } catch (err) {
    io.stderr.write(`${(err as Error).message}\n`);
    return 2;
  }
  const source = await openSource(v, action === "tail", io);
  if (typeof source === "number") return source;
  try {
    switch (action) {
      case "query":
        return await query(source, filter, v, io);
      case "tail":
        return await tail(source, filter, v, io);
      case "verify":
        return await verify(source, v.tenant, v.json === true, io);
      default:
        return await exportAll(source, filter, v.out, io);
    }
  } catch (err) {
    io.stderr.write(`${(err as Error).message}\n`);
    return 1;
  } finally {
    await source.close();
  }
}

/** Where the records are read: the admin API, an SQLite file, or the PostgreSQL store of a config. */
async function openSource(
  v: { url?: string; db?: string; config?: string },
  tail: boolean,
  io: CommandIo,
): Promise<Source | number> {
  if ([v.url, v.db, v.config].filter((x) => x !== undefined).length > 1) {
    io.stderr.write("--url, --db and --config name different sources: give one\n");
    return 2;
  }
  let sqliteFile = v.db;
  if (v.config !== undefined) {
    try {
      const config = loadConfigFile(resolve(v.config), io.env);
      if (config.store.postgres) return await postgresSource(config.store.postgres);
      sqliteFile = config.audit.sqlite ?? config.store.sqlite;
    } catch (err) {
      io.stderr.write(`${(err as Error).message}\n`);
      return 1;
    }
  }
  if (sqliteFile !== undefined) {
    if (tail) {
      io.stderr.write("audit tail reads the admin API or PostgreSQL (not an SQLite file)\n");
      return 2;
    }
    return dbSource(sqliteFile);
  }
  const base = adminBase(v.url, io.env);
  const token = adminToken(io.env);
  if (!token) {
    io.stderr.write("no admin token: set MCP_EDGE_ADMIN_TOKEN (or use -c FILE or --db FILE)\n");
    return 1;
  }
  return apiSource(base, token);
}

async function query(
  source: Source,
  filter: AuditFilter,
  v: { limit?: string; cursor?: string; desc?: boolean; json?: boolean },
  io: CommandIo,
): Promise<number> {
  const limit = Number(v.limit ?? 50);
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
    io.stderr.write("--limit: an integer from 1 to 1000\n");
    return 2;
  }
  const page = await source.page(filter, limit, v.cursor, v.desc === true);
  if (v.json) {
    io.stdout.write(`${JSON.stringify(page, null, 2)}\n`);
    return 0;
  }
  io.stdout.write(`${table(rows(page.records))}\n`);
  if (page.more && page.next !== null) io.stdout.write(`more: --cursor ${page.next}\n`);
  if (page.pending) io.stdout.write(`${page.pending} record(s) not in the store yet (spooled)\n`);
  return 0;
}

async function tail(
  source: Source,
  filter: AuditFilter,
  v: { n?: string; interval?: string; json?: boolean },
  io: CommandIo,
): Promise<number> {
  const n = Math.min(Math.max(Number(v.n ?? 20) || 20, 1), 1000);
  const interval = Math.max(Number.parseInt(v.interval ?? "1000", 10) || 1000, 100);
  const print = (records: AuditRecord[]) => {
    if (records.length === 0) return;
    if (v.json) for (const r of records) io.stdout.write(`${JSON.stringify(r)}\n`);
    else io.stdout.write(`${table(rows(records)).split("\n").slice(1).join("\n")}\n`);
  };
  // Where "now" is in the store (an ascending page that matches nothing ends there), then the last
  // n records up to it, shown oldest first, then everything after it as it comes.
  const start = await source.page({ ...filter, since: Date.now() + 86_400_000 }, 1, undefined, false);
  let cursor = start.next ?? undefined;
  const upTo = cursor !== undefined ? String(Number(cursor) + 1) : undefined;
  const last = await source.page(filter, n, upTo, true);
  if (!v.json) io.stdout.write(`${table(rows([])).trimEnd()}\n`);
  print([...last.records].reverse());
  let stop = false;
  const onSignal = () => {
    stop = true;
  };
  process.once("SIGINT", onSignal);
  try {
    while (!stop) {
      await new Promise((r) => setTimeout(r, interval));
      let more = true;
      while (more && !stop) {
        const page = await source.page(filter, 500, cursor, false);
        print(page.records);
        cursor = page.next ?? cursor;
        more = page.more;
      }
    }
  } finally {
    process.off("SIGINT", onSignal);
  }
  return 0;
}

async function verify(
  source: Source,
  tenant: string | undefined,
  json: boolean,
  io: CommandIo,
): Promise<number> {
  const report = await source.verify(tenant);
  if (json) {
    io.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return report.ok ? 0 : 1;
  }
  const out = [["TENANT", "RECORDS", "CHAIN", "HEAD / BREAK"]];
  for (const c of report.chains) {
    out.push([
      cell(c.tenant ?? "(none)", 32),
      String(c.records),
      c.ok ? "ok" : "BROKEN",
      c.ok ? (c.head ?? "-").slice(0, 16) : `at record ${c.break?.seq}: ${c.break?.reason}`,
    ]);
  }
  io.stdout.write(`${table(out)}\n`);
  if (report.pending) io.stdout.write(`${report.pending} record(s) not in the store yet (spooled)\n`);
  io.stdout.write(report.ok ? "the audit chains hold\n" : "an audit chain is broken\n");
  return report.ok ? 0 : 1;
}

async function exportAll(
  source: Source,
  filter: AuditFilter,
  out: string | undefined,
  io: CommandIo,
): Promise<number> {
  let file: WriteStream | undefined;
  const write = async (text: string) => {
    if (!file) return void io.stdout.write(text);
    if (!file.write(text)) await new Promise<void>((r) => file?.once("drain", () => r()));
  };
  if (out) file = createWriteStream(out, { mode: 0o600 });
  let cursor: string | undefined;
  let count = 0;
  for (;;) {
    const page = await source.page(filter, 1000, cursor, false);
    if (page.records.length > 0) await write(page.records.map((r) => `${JSON.stringify(r)}\n`).join(""));
    count += page.records.length;
    if (out) io.stderr.write(`\rexported ${count} records`);
    if (!page.more) break;
    cursor = page.next ?? undefined;
  }
  if (file) {
    await new Promise<void>((resolve, reject) =>
      file?.end((err?: Error | null) => (err ? reject(err) : resolve())),
    );
    io.stderr.write(`\rexported ${count} records to ${out}\n`);
  }
  return 0;
}
