/**
 * Rate-limit counters in this process (the CounterStore interface is in src/store/types.ts). The
 * distributed store (Redis / Valkey, src/store/redis/counters.ts) runs one Lua script per decision,
 * with this memory store as the local fallback for when Redis is down (the global limiter fails open to
 * conservative local caps, and a store error is never shown as a 429).
 *
 * The memory store counts in this process, with the fixed windows of rate-limiter-flexible's
 * `RateLimiterMemory` (which it replaced on the hot path: see MemoryWindow), and adds what the
 * library does not do: taking from several counters all or nothing.
 */
import type { Counter, CounterSpec, CounterStore, Refusal, Take } from "../types.ts";

/** One key's count in a MemoryWindow. */
interface Slot {
  value: number;
  /** When the window ends (ms since epoch); 0 = no window (an in-flight count). */
  expiresAt: number;
}

/**
 * Fixed-window counters of one policy, with the semantics of rate-limiter-flexible's
 * `RateLimiterMemory` (its MemoryStorage `incrby`): a key's window starts with its first point and
 * lasts `windowSec`; a point added after the end starts a new window; a count over the quota is
 * refused with the time left in the window (-1 without one). The library did this per call with
 * a promise, a result object and two Date objects per counter, a timer per key and window, and a
 * new record per in-flight take (its key is deleted when it drops to zero): ~2-3% of the edge's
 * CPU with four limits on a route. Here: one Map, and expired keys swept at most once per window
 * when new keys come (memory stays bounded by the keys of about two windows; no timers).
 */
export class MemoryWindow {
  readonly #slots = new Map<string, Slot>();
  readonly #windowMs: number;
  #sweepAt = 0;

  constructor(windowSec: number) {
    this.#windowMs = windowSec * 1000;
  }

  /** Adds `points` (negative: gives back); the new count and the ms left in its window (-1: none). */
  add(key: string, points: number, now: number): { value: number; msBeforeNext: number } {
    const slot = this.#slots.get(key);
    if (slot !== undefined) {
      const left = slot.expiresAt === 0 ? -1 : slot.expiresAt - now;
      if (slot.expiresAt === 0 || left > 0) {
        slot.value += points;
        return { value: slot.value, msBeforeNext: left };
      }
    } else if (this.#windowMs > 0 && now >= this.#sweepAt) {
      this.#sweep(now);
    }
    const expiresAt = this.#windowMs > 0 ? now + this.#windowMs : 0;
    if (slot !== undefined) {
      slot.value = points;
      slot.expiresAt = expiresAt;
    } else {
      this.#slots.set(key, { value: points, expiresAt });
    }
    return { value: points, msBeforeNext: this.#windowMs > 0 ? this.#windowMs : -1 };
  }

  delete(key: string): void {
    this.#slots.delete(key);
  }

  /** The live count of a key at `now` (0 when it has none or its window is over). */
  count(key: string, now: number): number {
    const slot = this.#slots.get(key);
    if (slot === undefined || (slot.expiresAt !== 0 && slot.expiresAt <= now)) return 0;
    return slot.value;
  }

  /** The live count of a key (the read API of rate-limiter-flexible's limiters), or null. */
  async get(key: string): Promise<{ consumedPoints: number; msBeforeNext: number } | null> {
    const slot = this.#slots.get(key);
    if (slot === undefined) return null;
    const left = slot.expiresAt === 0 ? -1 : slot.expiresAt - Date.now();
    if (slot.expiresAt !== 0 && left <= 0) return null;
    return { consumedPoints: slot.value, msBeforeNext: left };
  }

  #sweep(now: number): void {
    this.#sweepAt = now + this.#windowMs;
    for (const [key, slot] of this.#slots) if (slot.expiresAt <= now) this.#slots.delete(key);
  }
}

interface MemoryCounter extends Counter {
  readonly rl: MemoryWindow;
}

/**
 * Counters in this process. Every decision is made synchronously, when it is asked for: taking
 * from several counters adds to all, then takes back from all if any refused, in one step, so no
 * other decision ever sees a count raised by a call that is about to be refunded: all-or-nothing
 * is exact, with no lock and no promise chain.
 */
export class MemoryCounterStore implements CounterStore {
  counter(spec: CounterSpec): Counter {
    const counter: MemoryCounter = { spec, rl: new MemoryWindow(spec.windowSec) };
    return counter;
  }

  take(takes: readonly Take[]): Promise<Refusal | undefined> {
    return Promise.resolve(this.takeNow(takes));
  }

  takeNow(takes: readonly Take[]): Refusal | undefined {
    const now = Date.now();
    let refusal: Refusal | undefined;
    for (let i = 0; i < takes.length; i++) {
      const t = takes[i] as Take;
      const r = (t.counter as MemoryCounter).rl.add(t.key, t.points, now);
      if (
        r.value > t.counter.spec.quota &&
        (refusal === undefined || r.msBeforeNext > refusal.msBeforeNext)
      ) {
        refusal = { index: i, msBeforeNext: r.msBeforeNext };
      }
    }
    if (refusal === undefined) return undefined;
    // Refused: give back everything this call took, the refusing counters included (a refused
    // call leaves every count as it was).
    for (const t of takes) this.#giveNow(t.counter as MemoryCounter, t.key, t.points, now);
    return refusal;
  }

  give(counter: Counter, key: string, points: number): void {
    this.#giveNow(counter as MemoryCounter, key, points, Date.now());
  }

  /** The live count of `key` in `counter` (0 when none): what the Redis store's fallback holds. */
  count(counter: Counter, key: string): number {
    return (counter as MemoryCounter).rl.count(key, Date.now());
  }

  #giveNow(counter: MemoryCounter, key: string, points: number, now: number): void {
    const res = counter.rl.add(key, -points, now);
    // In-flight counters have no window: a key whose count is back to zero is removed, else every
    // session that ever made a call would keep an entry.
    if (counter.spec.windowSec === 0 && res.value <= 0) counter.rl.delete(key);
  }
}
