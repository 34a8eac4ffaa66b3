/**
 * A least-recently-used map bounded by entry count and by total bytes (each value states its own
 * size). A Map keeps insertion order, so "recently used" is "re-inserted": a `get` moves the entry
 * to the end and eviction takes from the front. Expiry is the caller's business (it passes `now`
 * and the entry's deadline); an expired entry found by `get` is removed. No timers.
 */
export interface Sized {
  /** Bytes the value holds (counted against `maxBytes`). */
  readonly bytes: number;
  /** Milliseconds since epoch after which the value is not served. */
  readonly expiresAt: number;
}

export interface LruLimits {
  maxEntries: number;
  maxBytes: number;
}

export class BoundedLru<V extends Sized> {
  readonly #map = new Map<string, V>();
  readonly #limits: LruLimits;
  #bytes = 0;

  constructor(limits: LruLimits) {
    if (!(limits.maxEntries >= 1) || !(limits.maxBytes >= 1))
      throw new RangeError("maxEntries and maxBytes must be at least 1");
    this.#limits = limits;
  }

  get size(): number {
    return this.#map.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** The live value under `key` (now the most recently used), or undefined. */
  get(key: string, now: number): V | undefined {
    const v = this.#map.get(key);
    if (v === undefined) return undefined;
    this.#map.delete(key);
    if (v.expiresAt <= now) {
      this.#bytes -= v.bytes;
      return undefined;
    }
    this.#map.set(key, v);
    return v;
  }

  /**
   * Stores `value` as the most recently used, evicting the least recently used entries until both
   * bounds hold. A value larger than `maxBytes` on its own is not stored (returns false).
   */
  set(key: string, value: V): boolean {
    this.delete(key);
    if (value.bytes > this.#limits.maxBytes) return false;
    this.#map.set(key, value);
    this.#bytes += value.bytes;
    for (const [k, v] of this.#map) {
      if (this.#map.size <= this.#limits.maxEntries && this.#bytes <= this.#limits.maxBytes) break;
      this.#map.delete(k);
      this.#bytes -= v.bytes;
    }
    return true;
  }

  delete(key: string): boolean {
    const v = this.#map.get(key);
    if (v === undefined) return false;
    this.#map.delete(key);
    this.#bytes -= v.bytes;
    return true;
  }

  /** Removes every entry the predicate matches; returns how many. */
  deleteWhere(match: (value: V, key: string) => boolean): number {
    let n = 0;
    for (const [k, v] of this.#map) {
      if (!match(v, k)) continue;
      this.#map.delete(k);
      this.#bytes -= v.bytes;
      n++;
    }
    return n;
  }

  clear(): void {
    this.#map.clear();
    this.#bytes = 0;
  }
}
