/** Small statistics helpers for the benchmarks. */

/** A growable store of samples (latencies in ms), without per-sample allocation. */
export class Samples {
  #buf: Float64Array;
  #n = 0;

  constructor(capacity = 1 << 16) {
    this.#buf = new Float64Array(capacity);
  }

  push(v: number): void {
    if (this.#n === this.#buf.length) {
      const next = new Float64Array(this.#buf.length * 2);
      next.set(this.#buf);
      this.#buf = next;
    }
    this.#buf[this.#n++] = v;
  }

  get count(): number {
    return this.#n;
  }

  reset(): void {
    this.#n = 0;
  }

  /** Percentiles (0–100) by nearest rank over the sorted samples. */
  percentiles(ps: number[]): number[] {
    if (this.#n === 0) return ps.map(() => Number.NaN);
    const sorted = this.#buf.slice(0, this.#n).sort();
    return ps.map((p) => sorted[Math.min(this.#n - 1, Math.max(0, Math.ceil((p / 100) * this.#n) - 1))] ?? 0);
  }

  mean(): number {
    let s = 0;
    for (let i = 0; i < this.#n; i++) s += this.#buf[i] as number;
    return this.#n ? s / this.#n : Number.NaN;
  }
}

/** Median of the finite values (NaN when there are none). */
export function median(values: number[]): number {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}
