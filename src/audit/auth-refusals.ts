/**
 * Refused authentications made visible: every 401 (and 403 for a credential's tenant) that a route
 * answers before reading the body is counted by route and reason and by source address, for
 * `/metrics`, `/api/stats` and the dashboard, and a bounded sample of them is audited.
 *
 * Bounds, so a flood of bad credentials costs neither memory nor store:
 * - counts by (route, reason): both sets are finite (configured routes, error codes);
 * - counts by address: at most `MAX_ADDRESSES` addresses (IPv6 per /64); later ones count as
 *   `other` until the table is reset by its hourly rotation (the previous hour's is kept);
 * - the audit trail: per address at most `PER_ADDRESS_PER_MINUTE` records a minute, and at most
 *   `TOTAL_PER_MINUTE` over all addresses; a record written after some were left out says how
 *   many (`detail.suppressed`). The presented credential is never recorded, only the address and
 *   the reason.
 *
 * The address is the socket's peer, or with `security.trustForwardedHeaders` the last
 * X-Forwarded-For entry (the one the trusted proxy added), as the failed-auth limiter counts it.
 */
import diagnostics_channel from "node:diagnostics_channel";
import type { RequestEndEvent } from "../observability/channels.ts";
import { addressKey } from "../ratelimit/auth-failures.ts";
import type { Route } from "../upstream/types.ts";
import type { AuditDraft } from "./record.ts";
import { draftFromAuthRefusal, isAuthRefusal } from "./events.ts";

export const MAX_ADDRESSES = 10_000;
export const PER_ADDRESS_PER_MINUTE = 5;
export const TOTAL_PER_MINUTE = 120;
const MINUTE = 60_000;
const HOUR = 3_600_000;
const OTHER = "other";

export interface AuthRefusalFigures {
  since: string;
  total: number;
  by_route: { server: string; reason: string; count: number }[];
  /** The addresses with the most refusals in the current and previous hour, most first. */
  top_addresses: { address: string; count: number }[];
  audited: number;
  not_audited: number;
}

export class AuthRefusals {
  readonly #routes: { has(route: Route): boolean };
  readonly #enqueue: (d: AuditDraft) => void;
  readonly #trustForwarded: boolean;
  readonly #since = Date.now();
  readonly #byRoute = new Map<string, { server: string; reason: string; count: number }>();
  #addresses = new Map<string, number>();
  #previous = new Map<string, number>();
  #rotatedAt = Date.now();
  /** Sampling for the audit: this minute's records per address, and in all. */
  #minute = 0;
  #minuteCounts = new Map<string, number>();
  #minuteTotal = 0;
  /** Refusals left out of the audit since an address's last record. */
  readonly #suppressed = new Map<string, number>();
  #total = 0;
  #audited = 0;
  #notAudited = 0;
  #subscribed = false;

  constructor(o: {
    routes: { has(route: Route): boolean };
    audit: (d: AuditDraft) => void;
    trustForwarded: boolean;
  }) {
    this.#routes = o.routes;
    this.#enqueue = o.audit;
    this.#trustForwarded = o.trustForwarded;
  }

  readonly #onEnd = (m: unknown) => this.note(m as RequestEndEvent);

  subscribe(): void {
    if (this.#subscribed) return;
    this.#subscribed = true;
    diagnostics_channel.subscribe("mcp-edge:request:end", this.#onEnd);
  }

  unsubscribe(): void {
    if (!this.#subscribed) return;
    this.#subscribed = false;
    diagnostics_channel.unsubscribe("mcp-edge:request:end", this.#onEnd);
  }

  #address(ev: RequestEndEvent): string {
    const r = ev.request;
    if (this.#trustForwarded) {
      const xff = r.headers["x-forwarded-for"];
      const last = (Array.isArray(xff) ? xff.at(-1) : xff)?.split(",").at(-1)?.trim();
      if (last) return addressKey(last);
    }
    return addressKey(r.clientAddress ?? "");
  }

  /** Counts a request's end if it was a refused authentication before its body (and samples it). */
  note(ev: RequestEndEvent, now = Date.now()): void {
    const error = ev.error;
    if (!isAuthRefusal(error) || ev.request.messages !== undefined || !this.#routes.has(ev.request.route))
      return;
    const reason = (error as NonNullable<typeof error>).code;
    const server = ev.request.route.name;
    const address = this.#address(ev);
    this.#total++;
    const rk = `${server}\u0000${reason}`;
    const row = this.#byRoute.get(rk);
    if (row) row.count++;
    else this.#byRoute.set(rk, { server, reason, count: 1 });
    if (now - this.#rotatedAt >= HOUR) {
      this.#previous = this.#addresses;
      this.#addresses = new Map();
      this.#rotatedAt = now;
    }
    const key = this.#addresses.has(address) || this.#addresses.size < MAX_ADDRESSES ? address : OTHER;
    this.#addresses.set(key, (this.#addresses.get(key) ?? 0) + 1);
    this.#sample(ev, address, now);
  }

  #sample(ev: RequestEndEvent, address: string, now: number): void {
    const minute = Math.floor(now / MINUTE);
    if (minute !== this.#minute) {
      this.#minute = minute;
      this.#minuteCounts = new Map();
      this.#minuteTotal = 0;
    }
    const mine = this.#minuteCounts.get(address) ?? 0;
    if (mine >= PER_ADDRESS_PER_MINUTE || this.#minuteTotal >= TOTAL_PER_MINUTE) {
      this.#notAudited++;
      // Bounded like the address table: beyond it, left-out counts are not attributed.
      if (this.#suppressed.has(address) || this.#suppressed.size < MAX_ADDRESSES)
        this.#suppressed.set(address, (this.#suppressed.get(address) ?? 0) + 1);
      return;
    }
    if (this.#minuteCounts.size < MAX_ADDRESSES) this.#minuteCounts.set(address, mine + 1);
    this.#minuteTotal++;
    const suppressed = this.#suppressed.get(address) ?? 0;
    this.#suppressed.delete(address);
    this.#audited++;
    this.#enqueue(draftFromAuthRefusal(ev, address, suppressed, now));
  }

  /** The figures since start (per instance), for `/api/stats` and the dashboard. */
  figures(top = 20): AuthRefusalFigures {
    const merged = new Map(this.#previous);
    for (const [a, n] of this.#addresses) merged.set(a, (merged.get(a) ?? 0) + n);
    return {
      since: new Date(this.#since).toISOString(),
      total: this.#total,
      by_route: [...this.#byRoute.values()]
        .map((r) => ({ ...r }))
        .sort((a, b) => b.count - a.count || a.server.localeCompare(b.server)),
      top_addresses: [...merged]
        .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
        .slice(0, top)
        .map(([address, count]) => ({ address, count })),
      audited: this.#audited,
      not_audited: this.#notAudited,
    };
  }
}
