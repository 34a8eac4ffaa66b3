/**
 * Waiting on events, with a bound. A test waits for the condition it means (a log line, an audit
 * row, a metric value, a process exit), never for a fixed time: a fixed wait is either too short
 * on a loaded machine (a flaky failure) or longer than needed (a slow suite).
 *
 *   await waitFor(() => lines.some((l) => l.includes("ready")), { what: "the ready log line" });
 *   const row = await waitFor(async () => (await db.query(q)).rows[0], { what: "the audit row" });
 *   await onceWithin(child, "exit", { what: "the edge to exit" });
 *
 * Every wait fails with a message naming what it waited for, how long, and the probe's last error.
 */
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";

export interface WaitOptions {
  /** What is awaited, for the failure message ("the audit row of call 3"). */
  what: string;
  /** Give up after this many ms (default 10 000). */
  timeout?: number;
  /** Poll every this many ms (default 20). */
  interval?: number;
}

/** Not there yet: a probe answers one of these until the condition holds. */
type Pending = undefined | null | false;

/**
 * Polls `probe` until it answers something other than undefined, null or false, and returns that.
 * A probe that throws counts as "not yet" (a connection refused while a process starts, say); its
 * last error is part of the failure message.
 */
export async function waitFor<T>(
  probe: () => T | Pending | Promise<T | Pending>,
  o: WaitOptions,
): Promise<T> {
  const timeout = o.timeout ?? 10_000;
  const interval = o.interval ?? 20;
  const deadline = Date.now() + timeout;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== null && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError === undefined ? "" : ` (last probe error: ${String(lastError)})`;
      throw new Error(`gave up waiting for ${o.what} after ${timeout} ms${why}`);
    }
    await sleep(interval);
  }
}

/** Polls `probe` until it returns something other than undefined (errors count as undefined). */
export function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeout = 10_000,
  interval = 25,
): Promise<T> {
  return waitFor(
    async () => {
      const v = await probe();
      return v === undefined ? undefined : { v };
    },
    { what, timeout, interval },
  ).then((box) => box.v);
}

/** `events.once` with a bound: the event's arguments, or a failure naming what was awaited. */
export async function onceWithin(
  emitter: NodeJS.EventEmitter,
  event: string,
  o: { what: string; timeout?: number },
): Promise<unknown[]> {
  const timeout = o.timeout ?? 10_000;
  try {
    return await once(emitter, event, { signal: AbortSignal.timeout(timeout) });
  } catch (err) {
    if ((err as Error).name === "AbortError" || (err as Error).name === "TimeoutError")
      throw new Error(`gave up waiting for ${o.what} ('${event}') after ${timeout} ms`, { cause: err });
    throw err;
  }
}

/** Resolves with `p`'s value, or fails naming what was awaited once `timeout` ms have passed. */
export async function within<T>(p: Promise<T>, o: { what: string; timeout?: number }): Promise<T> {
  const timeout = o.timeout ?? 10_000;
  const ac = new AbortController();
  try {
    return await Promise.race([
      p,
      sleep(timeout, undefined, { signal: ac.signal, ref: false }).then(() => {
        throw new Error(`gave up waiting for ${o.what} after ${timeout} ms`);
      }),
    ]);
  } finally {
    ac.abort();
  }
}
