import { setMaxListeners } from "node:events";
import { GatewayError } from "../errors/errors.ts";

/**
 * The error a call ends with when its signal was aborted: the coded reason it was aborted with
 * (EDGE_DRAINED at the drain timeout), EDGE_UPSTREAM_TIMEOUT for a deadline; undefined when the
 * signal is not aborted or for another reason (a client that went away).
 */
export function abortedWith(signal: AbortSignal, cause?: unknown): GatewayError | undefined {
  if (!signal.aborted) return undefined;
  const reason: unknown = signal.reason;
  if (reason instanceof GatewayError && reason.code === "EDGE_DRAINED") return reason;
  if ((reason as { name?: string } | undefined)?.name === "TimeoutError")
    return new GatewayError("EDGE_UPSTREAM_TIMEOUT", undefined, { cause });
  return undefined;
}

/**
 * Shared coarse deadlines for upstream requests. `AbortSignal.timeout(ms)` per call costs a timer,
 * a weak registration and, once undici listens on it, a strong one, for every call. Calls whose
 * deadline falls in the same short slot share one controller and one timer instead: the signal is
 * aborted with the same reason `AbortSignal.timeout` gives (a DOMException named TimeoutError), never
 * before `ms` has passed since the call and at most one slot later (a slot is 1/20 of the timeout,
 * at most 50 ms).
 */
interface Slot {
  /** performance.now() at which the signal is aborted. */
  end: number;
  controller: AbortController;
}

const MAX_SLOT_MS = 50;

/** The deadline slots of one forwarder (instance state: two edges in one process share nothing). */
export class Deadlines {
  readonly #slots = new Map<number, Slot>();
  /** Every slot whose deadline has not passed (a newer slot of the same length replaces one in `#slots`). */
  readonly #live = new Set<Slot>();

  /** An AbortSignal aborted (reason: TimeoutError) once `ms` milliseconds have passed, shared by nearby calls. */
  signal(ms: number): AbortSignal {
    const slots = this.#slots;
    const now = performance.now();
    const due = now + ms;
    const current = slots.get(ms);
    if (current !== undefined && due <= current.end) return current.controller.signal;
    const width = Math.min(MAX_SLOT_MS, Math.max(1, ms / 20));
    const end = due + width;
    const controller = new AbortController();
    // Every call of the slot may listen on it (undici does): no leak warning past ten.
    setMaxListeners(0, controller.signal);
    const slot: Slot = { end, controller };
    slots.set(ms, slot);
    this.#live.add(slot);
    setTimeout(
      () => {
        if (slots.get(ms) === slot) slots.delete(ms);
        this.#live.delete(slot);
        controller.abort(new DOMException("The operation was aborted due to timeout", "TimeoutError"));
      },
      Math.ceil(end - now),
    ).unref();
    return controller.signal;
  }

  /**
   * Aborts every deadline still running, with `reason` (drain: the calls still in flight at
   * `drain.timeout` end with it). Later calls get fresh slots.
   */
  abortAll(reason: Error): void {
    const live = [...this.#live];
    this.#live.clear();
    this.#slots.clear();
    for (const s of live) s.controller.abort(reason);
  }
}
