/**
 * `GET /api/stats?tenant=&window=&bucket=`: the figures behind the dashboard, computed
 * from audit records of type `call` (one per tools/call, resources/read and prompts/get, allowed,
 * refused or failed; src/audit/events.ts). The admin API fixes the tenant scope before this runs:
 * a tenant admin's `tenant` is always its own, exactly as for `/api/audit`.
 *
 * It reads through the audit log's query API (the same one `/api/audit` pages through), so it works
 * over every audit store without a store method of its own. The cost is a scan of the window's call
 * records, bounded by `MAX_RECORDS`; past it the answer says `truncated: true`. An aggregate query
 * in the store is the next step if dashboards over millions of records are needed.
 *
 * Definitions (also in the answer's field names, so the page and a script read the same thing):
 * - `calls`: call records.
 * - `errors`: calls that did not end in a successful result: refusals (auth, scope, tenancy, 429,
 *   ...), HTTP and JSON-RPC errors, aborted calls, and tool results flagged `isError`.
 * - `refused`: calls the edge refused (decision `refused`); `rate_limited`: answered 429.
 * - `p50_ms` / `p95_ms`: nearest-rank percentiles of the edge-measured latency of the calls the edge
 *   let through (decision `allowed`); refusals are answered in microseconds and would only hide the
 *   latency of real work. Null when there is no such call.
 */
import { parseDuration } from "../config/units.ts";
import { GatewayError } from "../errors/errors.ts";
import type { AuditLog } from "../audit/log.ts";
import type { AuditRecord } from "../audit/record.ts";
import type { AuditFilter, AuditPage, AuditPageRequest } from "../store/types.ts";

/** Records scanned per answer at most (the answer says `truncated` beyond). */
export const MAX_RECORDS = 200_000;
/** Rows of `by_tool` at most (the busiest; `by_tool_omitted` counts the rest). */
export const MAX_TOOL_ROWS = 100;
/** Rows of `top_tools`. */
export const TOP_TOOLS = 10;
const MIN_WINDOW = 60_000;
const MAX_WINDOW = 31 * 86_400_000;
/** Buckets per window when `bucket` is not given (about; a nice step is chosen). */
const TARGET_BUCKETS = 60;
const MAX_BUCKETS = 1000;
/** Steps a default bucket is rounded up to: the x axis then reads in round times. */
const NICE_STEPS = [
  10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 10_800_000,
  21_600_000, 43_200_000, 86_400_000,
];

/** The figures of one bucket, server, tool or tenant. */
export interface Figures {
  calls: number;
  errors: number;
  refused: number;
  rate_limited: number;
  p50_ms: number | null;
  p95_ms: number | null;
}

export interface StatsAnswer {
  /** "tenant" when scoped to one tenant (a tenant admin, or `?tenant=`), "all" otherwise. */
  scope: "all" | "tenant";
  tenant: string | null;
  window: string;
  window_ms: number;
  bucket_ms: number;
  /** Start of the first bucket (inclusive) and end of the window (exclusive), ISO 8601. */
  since: string;
  until: string;
  /** Call records counted; `truncated`: the scan stopped at MAX_RECORDS (the newest are missing). */
  records: number;
  truncated: boolean;
  /** Audit records not in the store yet (spooled while it is down): the view may be partial. */
  pending: number;
  totals: Figures;
  /** One per bucket, oldest first, empty buckets included (a chart's x axis). */
  buckets: (Figures & { start: string })[];
  /** Per dimension: totals, and `buckets` aligned with the top-level `buckets`. */
  by_server: (Figures & { server: string | null; buckets: Figures[] })[];
  by_tool: (Figures & {
    server: string | null;
    method: string | null;
    tool: string | null;
    buckets: Figures[];
  })[];
  by_tool_omitted: number;
  by_tenant: (Figures & { tenant: string | null; buckets: Figures[] })[];
  /** The busiest tools of the window (tools/call only), by calls. */
  top_tools: {
    server: string | null;
    tool: string | null;
    calls: number;
    errors: number;
    rate_limited: number;
  }[];
}

export interface StatsRequest {
  /** Scope: undefined = every tenant (root admin only; the admin API decides). */
  tenant: string | undefined;
  windowText: string;
  windowMs: number;
  bucketMs: number;
  now: number;
}

/** Parses `window` (default 1h, 1m..31d) and `bucket` (default: about 60 buckets). */
export function statsRequest(
  query: URLSearchParams,
  tenant: string | undefined,
  now = Date.now(),
): StatsRequest {
  const windowText = query.get("window") ?? "1h";
  const windowMs = duration("window", windowText);
  if (windowMs < MIN_WINDOW || windowMs > MAX_WINDOW) {
    throw new GatewayError("EDGE_ADMIN_BAD_REQUEST", "window: from 1m to 31d");
  }
  const bucketText = query.get("bucket");
  let bucketMs: number;
  if (bucketText !== null) {
    bucketMs = duration("bucket", bucketText);
    if (bucketMs < 1000 || windowMs / bucketMs > MAX_BUCKETS) {
      throw new GatewayError(
        "EDGE_ADMIN_BAD_REQUEST",
        `bucket: at least 1s and at most ${MAX_BUCKETS} per window`,
      );
    }
  } else {
    const raw = windowMs / TARGET_BUCKETS;
    bucketMs = NICE_STEPS.find((s) => s >= raw) ?? (NICE_STEPS.at(-1) as number);
  }
  return { tenant, windowText, windowMs, bucketMs, now };
}

function duration(name: string, text: string): number {
  try {
    return parseDuration(text);
  } catch {
    throw new GatewayError("EDGE_ADMIN_BAD_REQUEST", `${name}: a duration such as 15m, 1h, 7d`);
  }
}

/** Nearest-rank percentile of sorted values (null for none). */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

/** A call that did not end in a successful result (see the module comment). */
export function isError(r: AuditRecord): boolean {
  if (r.decision === "refused") return true;
  const o = r.outcome;
  if (!o) return (r.status ?? 0) >= 400 || r.status === 0;
  return o.kind !== "result" || o.isError === true;
}

export function isRateLimited(r: AuditRecord): boolean {
  return r.status === 429 || r.code === "EDGE_RATE_LIMITED";
}

/** Running counts of one cell; latencies kept to compute percentiles at the end. */
class Acc {
  calls = 0;
  errors = 0;
  refused = 0;
  rateLimited = 0;
  readonly latencies: number[] = [];

  add(r: AuditRecord): void {
    this.calls++;
    if (isError(r)) this.errors++;
    if (r.decision === "refused") this.refused++;
    if (isRateLimited(r)) this.rateLimited++;
    if (r.decision === "allowed" && typeof r.latencyMs === "number") this.latencies.push(r.latencyMs);
  }

  figures(): Figures {
    const sorted = this.latencies.sort((a, b) => a - b);
    return {
      calls: this.calls,
      errors: this.errors,
      refused: this.refused,
      rate_limited: this.rateLimited,
      p50_ms: percentile(sorted, 50),
      p95_ms: percentile(sorted, 95),
    };
  }
}

/** One dimension value: its totals and its buckets. */
class Series {
  readonly total = new Acc();
  readonly buckets: Acc[];
  constructor(n: number) {
    this.buckets = Array.from({ length: n }, () => new Acc());
  }
  add(r: AuditRecord, i: number): void {
    this.total.add(r);
    (this.buckets[i] as Acc).add(r);
  }
  out(): Figures & { buckets: Figures[] } {
    return { ...this.total.figures(), buckets: this.buckets.map((b) => b.figures()) };
  }
}

/** The window's bucket grid: buckets aligned on multiples of the bucket size (round times). */
export function grid(req: StatsRequest): { start: number; until: number; count: number } {
  const until = req.now + 1;
  const start = Math.floor((until - req.windowMs) / req.bucketMs) * req.bucketMs;
  const count = Math.max(1, Math.ceil((until - start) / req.bucketMs));
  return { start, until, count };
}

/**
 * The answer from call records (pure: the records of the window, in any order). Records outside the
 * grid are ignored, so a caller may pass more than the window.
 */
export function aggregate(
  req: StatsRequest,
  records: Iterable<AuditRecord>,
  extra: { truncated?: boolean; pending?: number } = {},
): StatsAnswer {
  const g = grid(req);
  const all = new Series(g.count);
  const servers = new Map<string, { server: string | null; s: Series }>();
  const tools = new Map<
    string,
    { server: string | null; method: string | null; tool: string | null; s: Series }
  >();
  const tenants = new Map<string, { tenant: string | null; s: Series }>();
  let counted = 0;
  for (const r of records) {
    if (r.type !== "call") continue;
    const ts = Date.parse(r.time);
    if (!(ts >= g.start && ts < g.until)) continue;
    if (req.tenant !== undefined && r.tenant !== req.tenant) continue;
    const i = Math.min(g.count - 1, Math.floor((ts - g.start) / req.bucketMs));
    counted++;
    all.add(r, i);
    // JSON keys: null stays distinct from a name "null".
    const sk = JSON.stringify(r.server);
    let sv = servers.get(sk);
    if (!sv) servers.set(sk, (sv = { server: r.server, s: new Series(g.count) }));
    sv.s.add(r, i);
    const tk = JSON.stringify([r.server, r.method, r.target]);
    let tv = tools.get(tk);
    if (!tv)
      tools.set(tk, (tv = { server: r.server, method: r.method, tool: r.target, s: new Series(g.count) }));
    tv.s.add(r, i);
    const nk = JSON.stringify(r.tenant);
    let nv = tenants.get(nk);
    if (!nv) tenants.set(nk, (nv = { tenant: r.tenant, s: new Series(g.count) }));
    nv.s.add(r, i);
  }
  const byCalls = <T extends { s: Series }>(a: T, b: T) => b.s.total.calls - a.s.total.calls;
  const label = (v: string | null) => v ?? "";
  const toolRows = [...tools.values()].sort(
    (a, b) =>
      byCalls(a, b) ||
      label(a.server).localeCompare(label(b.server)) ||
      label(a.tool).localeCompare(label(b.tool)) ||
      label(a.method).localeCompare(label(b.method)),
  );
  const byTool = toolRows
    .slice(0, MAX_TOOL_ROWS)
    .map((t) => ({ server: t.server, method: t.method, tool: t.tool, ...t.s.out() }));
  return {
    scope: req.tenant !== undefined ? "tenant" : "all",
    tenant: req.tenant ?? null,
    window: req.windowText,
    window_ms: req.windowMs,
    bucket_ms: req.bucketMs,
    since: new Date(g.start).toISOString(),
    until: new Date(g.until).toISOString(),
    records: counted,
    truncated: extra.truncated ?? false,
    pending: extra.pending ?? 0,
    totals: all.total.figures(),
    buckets: all.buckets.map((b, i) => ({
      start: new Date(g.start + i * req.bucketMs).toISOString(),
      ...b.figures(),
    })),
    by_server: [...servers.values()]
      .sort((a, b) => byCalls(a, b) || label(a.server).localeCompare(label(b.server)))
      .map((v) => ({ server: v.server, ...v.s.out() })),
    by_tool: byTool,
    by_tool_omitted: toolRows.length - byTool.length,
    by_tenant: [...tenants.values()]
      .sort((a, b) => byCalls(a, b) || label(a.tenant).localeCompare(label(b.tenant)))
      .map((v) => ({ tenant: v.tenant, ...v.s.out() })),
    top_tools: toolRows
      .filter((t) => t.method === "tools/call")
      .slice(0, TOP_TOOLS)
      .map((t) => ({
        server: t.server,
        tool: t.tool,
        calls: t.s.total.calls,
        errors: t.s.total.errors,
        rate_limited: t.s.total.rateLimited,
      })),
  };
}

/** What `stats` needs of the audit log (its query API; a fake in unit tests). */
export interface AuditReader {
  query(filter: AuditFilter, page: AuditPageRequest): Promise<AuditPage>;
  stats(): { queued: number; spooled: number };
}

/** Reads the window's call records page by page and aggregates them. */
export async function stats(audit: AuditReader | AuditLog, req: StatsRequest): Promise<StatsAnswer> {
  const g = grid(req);
  const filter: AuditFilter = { type: "call", since: g.start, until: g.until };
  if (req.tenant !== undefined) filter.tenant = req.tenant;
  const records: AuditRecord[] = [];
  let cursor: string | undefined;
  let truncated = false;
  for (;;) {
    const page = await audit.query(filter, { limit: 1000, ...(cursor !== undefined ? { cursor } : {}) });
    for (const r of page.records) records.push(r);
    if (!page.more || page.next === null) break;
    if (records.length >= MAX_RECORDS) {
      truncated = true;
      break;
    }
    cursor = page.next;
  }
  const s = audit.stats();
  return aggregate(req, records, { truncated, pending: s.queued + s.spooled });
}
