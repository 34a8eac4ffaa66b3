/**
 * Failed authentications per client address (a security-sensitive limiter is
 * closed). Fed by the edge's 401 answers to a presented credential (EDGE_AUTH_INVALID_TOKEN); a
 * bare 401 to a request without one is the first step of OAuth discovery and is not a failure.
 * Once an address has used up its budget, every request it sends to an authenticating route is
 * refused with 429 before its credential is checked (no oracle: a right guess gets the same 429),
 * until the window ends.
 *
 * The hot path is one Map lookup: only addresses over their budget are in the map. The counting
 * itself is rate-limiter-flexible's memory limiter, off the hot path (failures only).
 *
 * The address is the socket's peer, never X-Forwarded-For unless `security.trustForwardedHeaders`
 * (then the last entry: the one the trusted proxy added). IPv6 addresses count per /64, the block
 * one host usually holds; IPv4-mapped IPv6 addresses count as the IPv4 address.
 */
import type { IncomingMessage } from "node:http";
import { isIPv6 } from "node:net";
import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import type { GatewayError } from "../errors/errors.ts";
import type { Logger } from "../observability/logger.ts";
import { makePolicy, noticeRefusal, type Policy, type RateLimitRefusal, refusalError } from "./limiter.ts";
import type { RateSpec } from "../config/rate.ts";
import { MemoryCounterStore } from "../store/memory/counters.ts";

/** Beyond this many blocked addresses, expired ones are swept on insert. */
const SWEEP_AT = 10_000;

/** The /64 of an IPv6 address, as text. */
function ipv6Prefix(addr: string): string {
  const zone = addr.indexOf("%");
  const a = zone >= 0 ? addr.slice(0, zone) : addr;
  const gap = a.indexOf("::");
  const head = (gap >= 0 ? a.slice(0, gap) : a).split(":").filter((g) => g !== "");
  const tail =
    gap >= 0
      ? a
          .slice(gap + 2)
          .split(":")
          .filter((g) => g !== "")
      : [];
  // An embedded IPv4 tail (a.b.c.d) stands for two groups.
  const width = (gs: string[]) => gs.reduce((n, g) => n + (g.includes(".") ? 2 : 1), 0);
  const missing = gap >= 0 ? 8 - width(head) - width(tail) : 0;
  const groups = [...head, ...Array<string>(Math.max(0, missing)).fill("0"), ...tail];
  return `${groups
    .slice(0, 4)
    .map((g) => (g.includes(".") ? g : Number.parseInt(g, 16).toString(16)))
    .join(":")}::/64`;
}

/** The key an address counts under. No allocation for plain IPv4. */
export function addressKey(addr: string): string {
  if (!addr.includes(":")) return addr;
  const lower = addr.toLowerCase();
  if (lower.startsWith("::ffff:") && lower.includes(".")) return lower.slice(7);
  return isIPv6(lower.split("%")[0] as string) ? ipv6Prefix(lower) : lower;
}

export class AuthFailureLimiter {
  readonly #policy: Policy | undefined;
  readonly #failures: RateLimiterMemory | undefined;
  readonly #trustForwarded: boolean;
  readonly #log: Logger;
  /** Addresses over their budget → when their window ends (ms since epoch). */
  readonly #blocked = new Map<string, number>();

  constructor(spec: RateSpec | "off", trustForwardedHeaders: boolean, log: Logger) {
    if (spec !== "off") {
      // The policy gives the 429 its headers and message; the failures are counted here directly,
      // outside the call limits' all-or-nothing decisions (they are never part of one).
      this.#policy = makePolicy(new MemoryCounterStore(), "authFailures", spec);
      this.#failures = new RateLimiterMemory({ points: spec.quota, duration: spec.windowSec, keyPrefix: "" });
    }
    this.#trustForwarded = trustForwardedHeaders;
    this.#log = log;
  }

  /** False with `rateLimits.authFailures: off` (the stage is then left out of the pipeline). */
  get enabled(): boolean {
    return this.#policy !== undefined;
  }

  /** The client address of a request, as counted. */
  address(req: IncomingMessage): string {
    if (this.#trustForwarded) {
      const xff = req.headers["x-forwarded-for"];
      const value = Array.isArray(xff) ? xff.at(-1) : xff;
      const last = value?.split(",").at(-1)?.trim();
      if (last) return addressKey(last);
    }
    return addressKey(req.socket.remoteAddress ?? "");
  }

  /**
   * Before authentication: the 429 to answer when the request's address is over its budget (and
   * `ctx.refusal` set), else undefined. Routes that authenticate nobody (`auth: [none]`) pass.
   */
  check(ctx: {
    readonly route: { readonly config: { readonly auth: readonly string[] } };
    readonly req: IncomingMessage;
    refusal: RateLimitRefusal | undefined;
  }): GatewayError | undefined {
    const policy = this.#policy;
    if (policy === undefined || this.#blocked.size === 0) return undefined;
    const auth = ctx.route.config.auth;
    if (auth.length === 1 && auth[0] === "none") return undefined;
    const key = this.address(ctx.req);
    const until = this.#blocked.get(key);
    if (until === undefined) return undefined;
    const left = until - Date.now();
    if (left <= 0) {
      this.#blocked.delete(key);
      return undefined;
    }
    const { error, refusal } = refusalError(policy, left, undefined);
    ctx.refusal = refusal;
    noticeRefusal(this.#log, policy, key, { ...refusal, address: key });
    return error;
  }

  /** After a 401 answered to a presented credential. */
  failed(req: IncomingMessage): void {
    const failures = this.#failures;
    if (failures === undefined) return;
    const key = this.address(req);
    const block = (res: RateLimiterRes) => {
      if (this.#blocked.size >= SWEEP_AT) {
        const now = Date.now();
        for (const [k, t] of this.#blocked) if (t <= now) this.#blocked.delete(k);
      }
      this.#blocked.set(key, Date.now() + res.msBeforeNext);
    };
    // The failure that uses up the budget blocks the address at once: the next request is refused
    // before authentication.
    void failures.consume(key).then(
      (res) => {
        if (res.remainingPoints <= 0) block(res);
      },
      (res: unknown) => {
        if (res instanceof RateLimiterRes) block(res);
      },
    );
  }
}
