/**
 * `GET /api/audit` and `GET /api/audit/verify`, called by the admin API after it has
 * authenticated the caller and fixed the tenant scope: a tenant admin's `tenant` is always its own.
 */
import { parseDuration } from "../config/units.ts";
import { GatewayError } from "../errors/errors.ts";
import type { AuditLog } from "./log.ts";
import type { AuditFilter } from "../store/types.ts";

const MAX_LIMIT = 1000;

/** A time bound: ISO 8601, milliseconds since the epoch, or a duration ago ("15m", "24h"). */
export function parseTime(name: string, v: string, now = Date.now()): number {
  if (/^\d{12,}$/.test(v)) return Number(v);
  if (/^\d{4}-\d{2}-\d{2}/.test(v)) {
    const t = Date.parse(v);
    if (Number.isFinite(t)) return t;
  } else {
    try {
      return now - parseDuration(v);
    } catch {
      // fall through
    }
  }
  throw new GatewayError(
    "EDGE_ADMIN_BAD_REQUEST",
    `${name}: expected an ISO 8601 time, epoch milliseconds or a duration ago such as 15m`,
  );
}

/** The JSON answer of an audit route, or undefined when the path is not one. */
export async function auditRoute(
  audit: AuditLog,
  rest: string[],
  query: URLSearchParams,
  tenant: string | undefined,
): Promise<unknown> {
  if (rest.length === 1 && rest[0] === "verify") {
    const report = await audit.verify(tenant);
    return report;
  }
  if (rest.length !== 0) return undefined;
  const filter: AuditFilter = {};
  if (tenant !== undefined) filter.tenant = tenant;
  const subject = query.get("subject");
  if (subject) filter.subject = subject;
  const tool = query.get("tool");
  if (tool) filter.tool = tool;
  const type = query.get("type");
  if (type) filter.type = type;
  const since = query.get("since");
  if (since) filter.since = parseTime("since", since);
  const until = query.get("until");
  if (until) filter.until = parseTime("until", until);
  const limitText = query.get("limit");
  const limit = limitText === null ? 100 : Number(limitText);
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
    throw new GatewayError("EDGE_ADMIN_BAD_REQUEST", `limit: an integer from 1 to ${MAX_LIMIT}`);
  }
  const order = query.get("order") ?? "asc";
  if (order !== "asc" && order !== "desc")
    throw new GatewayError("EDGE_ADMIN_BAD_REQUEST", "order: asc or desc");
  const cursor = query.get("cursor") ?? undefined;
  if (cursor !== undefined && !/^-?\d{1,16}$/.test(cursor)) {
    throw new GatewayError("EDGE_ADMIN_BAD_REQUEST", "cursor: as returned in `next`");
  }
  const page = await audit.query(filter, { limit, order, ...(cursor !== undefined ? { cursor } : {}) });
  const stats = audit.stats();
  return {
    records: page.records,
    next: page.next,
    more: page.more,
    // Records not in the store yet (spooled while it is down): a reader knows the view is partial.
    pending: stats.queued + stats.spooled,
  };
}
