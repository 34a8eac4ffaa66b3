/**
 * The circuit breaker's state machine (closed → open → half-open → closed or open again) on a
 * clock the test moves, and the deadline its calls run under (event-loop stalls do not count).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  Breaker,
  BreakerOpenError,
  type BreakerState,
  DeadlineError,
  withDeadline,
} from "../../src/lib/breaker.ts";

function clocked(failures = 3, openMs = 1000) {
  let now = 0;
  const changes: string[] = [];
  const b = new Breaker("dep", {
    failures,
    openMs,
    now: () => now,
    onChange: (to: BreakerState, from: BreakerState) => changes.push(`${from}>${to}`),
  });
  return { b, changes, advance: (ms: number) => (now += ms) };
}

const fail = (b: Breaker, kind: "call" | "probe" = b.acquire()) => b.settle(kind, true, new Error("timeout"));
const ok = (b: Breaker, kind: "call" | "probe" = b.acquire()) => b.settle(kind, false);

/** Blocks the event loop for `ms` (a synchronous stall). */
function stall(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy
  }
}

describe("circuit breaker", () => {
  test("closed: opens after `failures` consecutive failures; a success in between starts the count again", () => {
    const { b, changes } = clocked(3);
    fail(b);
    fail(b);
    ok(b);
    fail(b);
    fail(b);
    assert.equal(b.state, "closed");
    fail(b);
    assert.equal(b.state, "open");
    assert.deepEqual(changes, ["closed>open"]);
    assert.equal(b.opened, 1);
  });

  test("open: every call fails at once with the time before a probe may go", () => {
    const { b, advance } = clocked(1, 1000);
    fail(b);
    advance(400);
    assert.equal(b.admits(), false);
    assert.throws(
      () => b.acquire(),
      (err: unknown) => err instanceof BreakerOpenError && err.retryAfterMs === 600,
    );
    assert.equal(b.state, "open", "a refused call changes nothing");
  });

  test("half-open: after the open time exactly one call goes as the probe; the others still fail fast", () => {
    const { b, advance, changes } = clocked(1, 1000);
    fail(b);
    advance(1000);
    assert.equal(b.admits(), true);
    assert.equal(b.acquire(), "probe");
    assert.equal(b.state, "half-open");
    assert.equal(b.admits(), false);
    assert.throws(() => b.acquire(), BreakerOpenError);
    assert.deepEqual(changes, ["closed>open", "open>half-open"]);
  });

  test("a probe's success closes the breaker; calls go again and failures count from zero", () => {
    const { b, advance, changes } = clocked(2, 1000);
    fail(b);
    fail(b);
    advance(1000);
    ok(b, b.acquire());
    assert.equal(b.state, "closed");
    assert.deepEqual(changes, ["closed>open", "open>half-open", "half-open>closed"]);
    assert.equal(b.acquire(), "call");
    fail(b);
    assert.equal(b.state, "closed", "one failure after closing is not two");
  });

  test("a probe's failure opens it again for a whole open time", () => {
    const { b, advance, changes } = clocked(1, 1000);
    fail(b);
    advance(1500);
    fail(b, b.acquire());
    assert.equal(b.state, "open");
    assert.equal(b.retryAfterMs(), 1000);
    advance(999);
    assert.throws(() => b.acquire(), BreakerOpenError);
    advance(1);
    assert.equal(b.acquire(), "probe");
    assert.deepEqual(changes, ["closed>open", "open>half-open", "half-open>open", "open>half-open"]);
    assert.equal(b.opened, 2);
  });

  test("calls that were already out when it opened change nothing when they settle", () => {
    const { b } = clocked(2, 1000);
    const late = [b.acquire(), b.acquire(), b.acquire()];
    fail(b, late[0]);
    fail(b, late[1]);
    assert.equal(b.state, "open");
    ok(b, late[2]); // a slow success from before: only the probe decides
    assert.equal(b.state, "open");
  });

  test("run: a deadline passed and a failure count; an error answer (isFailure false) is a success", async () => {
    const b = new Breaker("dep", { failures: 2, openMs: 60_000 });
    const never = new Promise<never>(() => undefined);
    await assert.rejects(
      b.run(() => never, { timeoutMs: 5 }),
      DeadlineError,
    );
    const answer = new Error("WRONGTYPE");
    for (let i = 0; i < 3; i++) {
      await assert.rejects(
        b.run(() => Promise.reject(answer), { isFailure: (e) => e !== answer }),
        (e: unknown) => e === answer,
      );
    }
    assert.equal(b.state, "closed", "answers reset the count");
    await assert.rejects(b.run(() => Promise.reject(new Error("ECONNRESET"))));
    await assert.rejects(b.run(() => never, { timeoutMs: 5 }));
    assert.equal(b.state, "open");
    let called = false;
    await assert.rejects(
      b.run(async () => {
        called = true;
      }),
      BreakerOpenError,
    );
    assert.equal(called, false, "an open breaker does not try");
    assert.equal(await new Breaker("x").run(async () => 42, { timeoutMs: 1000 }), 42);
  });
});

describe("deadline", () => {
  test("settles with the promise when it is first, rejects with onTimeout when the deadline is", async () => {
    assert.equal(await withDeadline(Promise.resolve(1), 50, () => new Error("late")), 1);
    const err = new Error("late");
    await assert.rejects(
      withDeadline(new Promise(() => undefined), 10, () => err),
      (e: unknown) => e === err,
    );
  });

  test("an event-loop stall longer than the deadline does not count against it", async () => {
    const started = withDeadline(
      new Promise<string>((resolve) => {
        // The answer needs the loop after the stall: it is scheduled once the stall is over.
        setImmediate(() => setTimeout(() => resolve("answered"), 10));
      }),
      50,
      () => new Error("deadline"),
    );
    stall(200);
    assert.equal(await started, "answered");
  });
});
