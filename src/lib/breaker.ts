/**
 * A circuit breaker for a dependency the edge waits on (Redis, PostgreSQL), and the deadline its
 * calls run under.
 *
 *   closed     calls go; `failures` consecutive failures (timeouts, the dependency unreachable)
 *              open it. Any answer, an error answer included, counts as a success.
 *   open       calls fail at once (BreakerOpenError) for `openMs`.
 *   half-open  after `openMs`, the next call goes as the probe; every other call still fails at
 *              once. The probe's success closes the breaker; its failure opens it for another
 *              `openMs`.
 *
 * Deadlines measure the dependency, not the event loop (`deadlineTimer`): time the loop spent
 * blocked (a stall at start-up, a long synchronous task) does not count, and a deadline rejects
 * only after the loop's poll phase has read what arrived meanwhile, so a reply already on the socket
 * wins over its own deadline.
 */

export type BreakerState = "closed" | "open" | "half-open";

export interface BreakerOptions {
  /** Consecutive failures that open the breaker. Default 5. */
  failures?: number;
  /** How long it stays open before a probe may go (ms). Default 1000. */
  openMs?: number;
  /** Every change of state; `cause` is the failure that opened it (open only). */
  onChange?: (to: BreakerState, from: BreakerState, cause?: unknown) => void;
  /** The clock (ms). Default `performance.now`. */
  now?: () => number;
}

/** A call refused without being tried: the breaker is open (or a probe is already out). */
export class BreakerOpenError extends Error {
  /** When a probe may go (ms from now; at least 1). */
  readonly retryAfterMs: number;
  constructor(name: string, retryAfterMs: number) {
    super(`${name}: circuit breaker open (calls fail fast until a probe succeeds)`);
    this.name = "BreakerOpenError";
    this.retryAfterMs = retryAfterMs;
  }
}

/** A call that did not settle within its deadline. */
export class DeadlineError extends Error {
  readonly timeoutMs: number;
  constructor(what: string, timeoutMs: number) {
    super(`${what}: no answer within ${timeoutMs} ms`);
    this.name = "DeadlineError";
    this.timeoutMs = timeoutMs;
  }
}

/** A timer that fires this much later than due was held up by the event loop (ms). */
const LATE_MS = 20;

/**
 * Calls `fire` once `ms` of event-loop time have passed: when the timer fires late (the loop was
 * blocked), the lateness is granted once more, then `fire` runs in a `setImmediate`, after the
 * loop's poll phase (the replies that arrived meanwhile are read first). Returns the cancel.
 */
export function deadlineTimer(ms: number, fire: () => void): () => void {
  let due = performance.now() + ms;
  let extended = false;
  let immediate: NodeJS.Immediate | undefined;
  const check = () => {
    const late = performance.now() - due;
    if (late > LATE_MS && !extended) {
      extended = true;
      due += late;
      timer = setTimeout(check, late);
      return;
    }
    immediate = setImmediate(fire);
  };
  let timer = setTimeout(check, ms);
  return () => {
    clearTimeout(timer);
    if (immediate !== undefined) clearImmediate(immediate);
  };
}

/** `promise`, or a rejection with `onTimeout()` once its deadline (`deadlineTimer`) has passed. */
export function withDeadline<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const cancel = deadlineTimer(ms, () => reject(onTimeout()));
    promise.then(
      (value) => {
        cancel();
        resolve(value);
      },
      (err: unknown) => {
        cancel();
        reject(err as Error);
      },
    );
  });
}

export interface RunOptions {
  /** Deadline of the call (ms); none when absent (the operation bounds itself). */
  timeoutMs?: number;
  /** Whether an error is the dependency failing (counted) rather than an answer. Default: every error. */
  isFailure?: (err: unknown) => boolean;
}

export class Breaker {
  readonly name: string;
  readonly #threshold: number;
  readonly #openMs: number;
  readonly #onChange: BreakerOptions["onChange"];
  readonly #now: () => number;
  #state: BreakerState = "closed";
  #failures = 0;
  #openedAt = 0;
  /** Times the breaker opened (since start). */
  opened = 0;

  constructor(name: string, options: BreakerOptions = {}) {
    this.name = name;
    this.#threshold = Math.max(1, options.failures ?? 5);
    this.#openMs = Math.max(0, options.openMs ?? 1000);
    this.#onChange = options.onChange;
    this.#now = options.now ?? (() => performance.now());
  }

  get state(): BreakerState {
    return this.#state;
  }

  /** Whether a call would go now (closed, or open long enough for a probe). Changes nothing. */
  admits(): boolean {
    if (this.#state === "closed") return true;
    return this.#state === "open" && this.#now() - this.#openedAt >= this.#openMs;
  }

  /** Ms before a probe may go (0 when closed). */
  retryAfterMs(): number {
    if (this.#state === "closed") return 0;
    return Math.max(1, Math.ceil(this.#openedAt + this.#openMs - this.#now()));
  }

  /**
   * Takes the right to call: "call" when closed, "probe" for the one call of half-open, or throws
   * BreakerOpenError. Pair it with `settle`.
   */
  acquire(): "call" | "probe" {
    if (this.#state === "closed") return "call";
    if (this.#state === "open" && this.#now() - this.#openedAt >= this.#openMs) {
      this.#set("half-open");
      return "probe";
    }
    throw new BreakerOpenError(this.name, this.retryAfterMs());
  }

  /** The outcome of a call `acquire` let go: `failed` with the cause, or not. */
  settle(kind: "call" | "probe", failed: boolean, cause?: unknown): void {
    if (!failed) {
      if (kind === "probe" || this.#state === "closed") {
        this.#failures = 0;
        if (this.#state !== "closed") this.#set("closed");
      }
      return;
    }
    if (kind === "probe") {
      this.#open(cause);
      return;
    }
    // A call that was already out when the breaker opened changes nothing.
    if (this.#state === "closed" && ++this.#failures >= this.#threshold) this.#open(cause);
  }

  /** Runs `op` through the breaker, under its deadline when one is given. */
  async run<T>(op: () => Promise<T>, options: RunOptions = {}): Promise<T> {
    const kind = this.acquire();
    const { timeoutMs, isFailure } = options;
    try {
      const value = await (timeoutMs === undefined
        ? op()
        : withDeadline(op(), timeoutMs, () => new DeadlineError(this.name, timeoutMs)));
      this.settle(kind, false);
      return value;
    } catch (err) {
      const failed = err instanceof DeadlineError || isFailure === undefined || isFailure(err);
      this.settle(kind, failed, err);
      throw err;
    }
  }

  #open(cause: unknown): void {
    this.#openedAt = this.#now();
    this.#failures = 0;
    this.opened++;
    this.#set("open", cause);
  }

  #set(to: BreakerState, cause?: unknown): void {
    const from = this.#state;
    this.#state = to;
    if (from !== to) this.#onChange?.(to, from, cause);
  }
}
