/**
 * Rate-limit counters in Redis / Valkey (distributed mode, SPEC.md §1): one rate-limiter-flexible
 * `RateLimiterRedis` per policy, so every edge instance counts against the same numbers (the
 * library's Lua script increments and reads a counter in one atomic step).
 *
 * All or nothing across several counters keeps the memory store's rule: consume every part, and
 * when any refuses, give every part back. A refusal therefore never over-admits (each count is
 * exact), and a refused call leaves every count as it was once its refunds land. Between its
 * consume and its refund (one round trip) another instance can see the raised count: the cost is
 * at most a spurious refusal there, never a call past a limit.
 *
 * Failure (security.md §3, "Global rate limiter": open to a local fallback): each limiter has an
 * insurance `RateLimiterMemory` with conservative caps (`quota / fallbackDivisor`, at least 1).
 * When Redis errors, times out (the client's short command timeout) or is not connected, the
 * library asks the insurance limiter instead, so the answer is a local admit or a local 429 and a
 * store error never becomes a 429. `fallbackDecisions` counts decisions that used it.
 */
import type { Redis } from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import { createRedisClient, type RedisConnectionOptions } from "../store/redis.ts";
import type { Counter, CounterSpec, CounterStore, Refusal, Take } from "./store.ts";

export interface RedisCounterStoreOptions {
  /** A client to use (shared with the session store; not closed by `close`), or how to make one. */
  client: Redis | RedisConnectionOptions;
  /** Prefix of every key. Default `mcp-edge:rl:`. */
  keyPrefix?: string;
  /**
   * The local fallback allows `quota / fallbackDivisor` (rounded down, at least 1) per counter and
   * window on each instance while Redis is unreachable. Set it to the number of edge instances to
   * keep the fleet's total near the configured quota. Default 2.
   */
  fallbackDivisor?: number;
  /**
   * In-flight counters (windowSec 0) expire this long after they were created in Redis, so slots
   * held by an instance that died are not held forever. Longer than any call may run. Default 3600.
   */
  inflightTtlSec?: number;
}

/** Marks a decision that the insurance limiter answered (passed through the library's options). */
interface DecisionMark {
  fallback: boolean;
}

/** The insurance limiter: a memory limiter that notes each use on the decision it serves. */
class InsuranceLimiter extends RateLimiterMemory {
  override consume(
    key: string | number,
    points?: number,
    options?: { [key: string]: unknown },
  ): Promise<RateLimiterRes> {
    const mark = options?.["mark"] as DecisionMark | undefined;
    if (mark) mark.fallback = true;
    return super.consume(key, points, options);
  }
}

interface RedisCounter extends Counter {
  readonly rl: RateLimiterRedis;
}

/** Counters shared by every instance through Redis, with a local fallback when Redis is down. */
export class RedisCounterStore implements CounterStore {
  readonly #client: Redis;
  readonly #ownsClient: boolean;
  readonly #prefix: string;
  readonly #divisor: number;
  readonly #inflightTtlSec: number;
  #policies = 0;
  /** Decisions (takes) answered at least in part by the local fallback: export as a metric. */
  fallbackDecisions = 0;

  constructor(options: RedisCounterStoreOptions) {
    this.#ownsClient = !isClient(options.client);
    this.#client = isClient(options.client) ? options.client : createRedisClient(options.client);
    this.#prefix = options.keyPrefix ?? "mcp-edge:rl:";
    this.#divisor = Math.max(1, options.fallbackDivisor ?? 2);
    this.#inflightTtlSec = Math.max(1, Math.floor(options.inflightTtlSec ?? 3600));
  }

  /** The client (to share, or to watch its status). */
  get client(): Redis {
    return this.#client;
  }

  /**
   * Resolves once the client is connected. Until then every decision is the local fallback's
   * (`rejectIfRedisNotReady`): call it at boot so the first requests are counted in Redis.
   */
  async ready(): Promise<void> {
    if (this.#client.status === "ready") return;
    await new Promise<void>((resolve, reject) => {
      const onReady = () => {
        this.#client.off("end", onEnd);
        resolve();
      };
      const onEnd = () => {
        this.#client.off("ready", onReady);
        reject(new Error("the Redis connection ended before it was ready"));
      };
      this.#client.once("ready", onReady);
      this.#client.once("end", onEnd);
    });
  }

  /**
   * A counter for a policy. `name` (the policy: `key`, `session`, `tool.search`...) keeps policies
   * whose take keys look alike apart in Redis; without it, counters are told apart by their order
   * of creation, which matches across instances only when they boot from the same config. The
   * spec is part of the key too: a changed quota or window starts new counts, never mixes them.
   */
  counter(spec: CounterSpec, name?: string): Counter {
    const id = name ?? `#${this.#policies}`;
    this.#policies++;
    const windowed = spec.windowSec > 0;
    const insurance = new InsuranceLimiter({
      points: Math.max(1, Math.floor(spec.quota / this.#divisor)),
      duration: spec.windowSec,
      keyPrefix: "",
    });
    const rl = new RateLimiterRedis({
      storeClient: this.#client,
      points: spec.quota,
      duration: windowed ? spec.windowSec : this.#inflightTtlSec,
      keyPrefix: `${this.#prefix}${id}:${spec.quota}:${spec.windowSec}`,
      // Not connected: the insurance answers at once instead of a queued command timing out.
      rejectIfRedisNotReady: true,
      insuranceLimiter: insurance,
    });
    const counter: RedisCounter = { spec, rl };
    return counter;
  }

  async take(takes: readonly Take[]): Promise<Refusal | undefined> {
    const mark: DecisionMark = { fallback: false };
    const results = await Promise.allSettled(
      takes.map((t) => (t.counter as RedisCounter).rl.consume(t.key, t.points, { mark })),
    );
    if (mark.fallback) this.fallbackDecisions++;
    let refusal: Refusal | undefined;
    let failure: unknown;
    for (let i = 0; i < results.length; i++) {
      const r = results[i] as PromiseSettledResult<RateLimiterRes>;
      if (r.status === "fulfilled") continue;
      if (!(r.reason instanceof RateLimiterRes)) failure ??= r.reason;
      else {
        const ms = (takes[i] as Take).counter.spec.windowSec === 0 ? -1 : r.reason.msBeforeNext;
        if (refusal === undefined || ms > refusal.msBeforeNext) refusal = { index: i, msBeforeNext: ms };
      }
    }
    if (refusal === undefined && failure === undefined) return undefined;
    // Refused: give back every part that was taken (the refusing ones too: their count went past
    // the quota by these points).
    await Promise.all(takes.map((t) => this.#give(t.counter as RedisCounter, t.key, t.points)));
    // Both stores failed: the insurance limiter never throws anything but a refusal, so this is a
    // programming error, not a store outage.
    if (failure !== undefined) throw failure;
    return refusal;
  }

  give(counter: Counter, key: string, points: number): void {
    void this.#give(counter as RedisCounter, key, points);
  }

  /** Gives points back; a failure is dropped (the count then expires with its window or TTL). */
  async #give(counter: RedisCounter, key: string, points: number): Promise<void> {
    try {
      await counter.rl.reward(key, points);
    } catch {
      // Redis and the insurance both failed: nothing to do; nobody awaits a give.
    }
  }

  /** Closes the client when this store made it. */
  async close(): Promise<void> {
    if (this.#ownsClient) this.#client.disconnect();
  }
}

function isClient(c: Redis | RedisConnectionOptions): c is Redis {
  return typeof (c as Redis).defineCommand === "function";
}
