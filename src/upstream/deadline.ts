import { setMaxListeners } from "node:events";

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
    setTimeout(
      () => {
        if (slots.get(ms) === slot) slots.delete(ms);
        controller.abort(new DOMException("The operation was aborted due to timeout", "TimeoutError"));
      },
      Math.ceil(end - now),
    ).unref();
    return controller.signal;
  }
}
