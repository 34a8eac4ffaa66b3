import type { Distributed } from "../store/distributed.ts";

/** How often PostgreSQL is probed, and how long a probe may take before it counts as down (ms). */
const PROBE_EVERY_MS = 2000;
const PROBE_TIMEOUT_MS = 1500;

/**
 * Whether this instance's own stores can serve, for `/readyz`. Embedded mode has nothing that can
 * be down (SQLite is a local file). Distributed mode: Redis by its connection state, PostgreSQL by
 * a `SELECT 1` every 2 s that must answer within 1.5 s (a database that accepts connections but
 * never answers is down too). `/readyz` reads the last outcome and never waits on a store.
 */
export class StoreReadiness {
  readonly #shared: Distributed | undefined;
  #postgresUp = true;
  #probing = false;
  readonly #timer: NodeJS.Timeout | undefined;

  constructor(shared: Distributed | undefined) {
    this.#shared = shared;
    if (shared) {
      this.#timer = setInterval(() => void this.#probe(), PROBE_EVERY_MS);
      this.#timer.unref();
    }
  }

  /** The stores that are down now (`redis`, `postgres`), empty when all can serve. */
  down(): string[] {
    const s = this.#shared;
    if (!s) return [];
    const down: string[] = [];
    if (!s.redisReady()) down.push("redis");
    if (!this.#postgresUp) down.push("postgres");
    return down;
  }

  /** One probe at a time: a hung one holds a pooled connection until its query timeout. */
  #probe(): void {
    if (this.#probing || !this.#shared) return;
    this.#probing = true;
    const late = setTimeout(() => (this.#postgresUp = false), PROBE_TIMEOUT_MS);
    this.#shared.pg.pool
      .query("SELECT 1")
      .then(
        () => (this.#postgresUp = true),
        () => (this.#postgresUp = false),
      )
      .finally(() => {
        clearTimeout(late);
        this.#probing = false;
      });
  }

  close(): void {
    clearInterval(this.#timer);
  }
}
