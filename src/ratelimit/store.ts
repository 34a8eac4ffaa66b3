/**
 * Where rate-limit counters live. One small interface, so the distributed store (Redis / Valkey,
 * SPEC §1) slots in behind it: `RateLimiterRedis` with a memory insurance limiter for when Redis is
 * down (security.md §3: the global limiter fails open to conservative local caps, and a store error
 * is never shown as a 429).
 *
 * The memory store is rate-limiter-flexible's `RateLimiterMemory`, one per configured policy, and
 * adds what the library does not do: taking from several counters all or nothing.
 */
import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";

/** What a counter counts: `quota` points per fixed window, or (windowSec 0) points held until given back. */
export interface CounterSpec {
  readonly quota: number;
  /** Window in whole seconds; 0 = no window: an in-flight count, given back with `give`. */
  readonly windowSec: number;
}

/** A counter made by a store (opaque to callers). */
export interface Counter {
  readonly spec: CounterSpec;
}

/** One part of a decision: `points` from `counter` under `key`. */
export interface Take {
  counter: Counter;
  key: string;
  points: number;
}

/** Why a take was refused: which part, and when that counter has room again. */
export interface Refusal {
  /** Index into the takes. */
  readonly index: number;
  /** Milliseconds until the refusing counter's window ends; -1 when it has no window. */
  readonly msBeforeNext: number;
}

export interface CounterStore {
  /**
   * A counter for a policy. Called at boot, once per policy. `name` (the policy: `key`,
   * `tool.search`...) identifies it in a shared store, the same on every instance.
   */
  counter(spec: CounterSpec, name?: string): Counter;
  /**
   * Takes every part, or none: when one counter has no room, nothing is taken from any (a call
   * refused by one limit consumes nothing from the others). Resolves undefined when admitted.
   */
  take(takes: readonly Take[]): Promise<Refusal | undefined>;
  /** Gives points back to an in-flight counter (windowSec 0). */
  give(counter: Counter, key: string, points: number): void;
}

interface MemoryCounter extends Counter {
  readonly rl: RateLimiterMemory;
}

/**
 * Counters in this process. rate-limiter-flexible's memory limiter counts synchronously when
 * `consume` is called and answers through a promise; taking from several counters at once is done
 * by consuming all, then refunding all if any refused. Decisions run one after another (a promise
 * chain of a few microtasks each), so no other decision ever sees a count raised by a call that is
 * about to be refunded: all-or-nothing is exact within the process, with no lock held across I/O.
 */
export class MemoryCounterStore implements CounterStore {
  #tail: Promise<unknown> = Promise.resolve();

  counter(spec: CounterSpec): Counter {
    // keyPrefix "": the library would otherwise build `prefix:key` on every call; each policy has
    // its own limiter (its own map), so keys cannot collide across policies.
    const rl = new RateLimiterMemory({ points: spec.quota, duration: spec.windowSec, keyPrefix: "" });
    const counter: MemoryCounter = { spec, rl };
    return counter;
  }

  take(takes: readonly Take[]): Promise<Refusal | undefined> {
    // Both handlers: one decision that failed must not stall the ones queued after it.
    const next = () => this.#takeNow(takes);
    const run = this.#tail.then(next, next);
    this.#tail = run;
    return run;
  }

  async #takeNow(takes: readonly Take[]): Promise<Refusal | undefined> {
    // Every consume counts at once, in this tick; their answers come together.
    const pending = takes.map((t) => (t.counter as MemoryCounter).rl.consume(t.key, t.points));
    const results = await Promise.allSettled(pending);
    let refusal: Refusal | undefined;
    let failure: unknown;
    for (let i = 0; i < results.length; i++) {
      const r = results[i] as PromiseSettledResult<RateLimiterRes>;
      if (r.status === "fulfilled") continue;
      if (!(r.reason instanceof RateLimiterRes)) failure ??= r.reason;
      else if (refusal === undefined || r.reason.msBeforeNext > refusal.msBeforeNext) {
        refusal = { index: i, msBeforeNext: r.reason.msBeforeNext };
      }
    }
    if (refusal === undefined && failure === undefined) return undefined;
    // Refused: give back everything this call took, the refusing counters included (a refused
    // call leaves every count as it was).
    for (const t of takes) await this.#giveNow(t.counter as MemoryCounter, t.key, t.points);
    if (failure !== undefined) throw failure;
    return refusal;
  }

  give(counter: Counter, key: string, points: number): void {
    // In the chain, so that dropping an idle key never races a take of the same key.
    const next = () => this.#giveNow(counter as MemoryCounter, key, points);
    const run = this.#tail.then(next, next);
    run.catch(() => undefined); // nothing awaits a give; the memory store never fails one
    this.#tail = run;
  }

  async #giveNow(counter: MemoryCounter, key: string, points: number): Promise<void> {
    const res = await counter.rl.reward(key, points);
    // In-flight counters have no window: a key whose count is back to zero is removed, else every
    // session that ever made a call would keep an entry.
    if (counter.spec.windowSec === 0 && res.consumedPoints <= 0) await counter.rl.delete(key);
  }
}
