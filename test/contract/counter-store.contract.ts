/**
 * The rate-limit CounterStore contract (src/store/memory/counters.ts): every implementation (memory,
 * Redis) runs this same suite. `open` gives two handles on one set of
 * counters: two edge instances sharing Redis, or the same store twice for the memory store.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Counter, CounterSpec, CounterStore, Take } from "../../src/store/types.ts";

export interface CounterStores {
  /** Two views of the same counters (the same object twice when the store is per process). */
  a: CounterStore;
  b: CounterStore;
  close(): Promise<void>;
}

/** The same policy on both handles (policies are made at boot on every instance, in one order). */
function both(s: CounterStores, spec: CounterSpec, name: string): [Counter, Counter] {
  // The Redis store takes the policy name as a second argument; the memory store ignores it.
  const make = (store: CounterStore) =>
    (store as { counter(spec: CounterSpec, name?: string): Counter }).counter(spec, name);
  const a = make(s.a);
  return [a, s.a === s.b ? a : make(s.b)];
}

const one = (counter: Counter, key = "k", points = 1): Take[] => [{ counter, key, points }];

export function counterStoreContract(name: string, open: () => Promise<CounterStores>): void {
  describe(`CounterStore contract: ${name}`, () => {
    test("admits up to the quota, then refuses with the time left in the window", async () => {
      const s = await open();
      const [c] = both(s, { quota: 3, windowSec: 60 }, "key");
      assert.equal(await s.a.take(one(c, "k", 2)), undefined);
      assert.equal(await s.a.take(one(c)), undefined);
      const refused = await s.a.take(one(c));
      assert.equal(refused?.index, 0);
      assert.ok((refused?.msBeforeNext ?? 0) > 55_000 && (refused?.msBeforeNext ?? 0) <= 60_000);
      assert.equal(await s.a.take(one(c, "other")), undefined, "another key is another count");
      await s.close();
    });

    test("counters are separate even when their keys are equal", async () => {
      const s = await open();
      const [x] = both(s, { quota: 1, windowSec: 60 }, "key");
      const [y] = both(s, { quota: 1, windowSec: 60 }, "initialize");
      assert.equal(await s.a.take(one(x)), undefined);
      assert.equal(await s.a.take(one(y)), undefined);
      assert.equal((await s.a.take(one(x)))?.index, 0);
      await s.close();
    });

    test("a refused take consumes from no counter; the refusing part is named", async () => {
      const s = await open();
      const [roomyA, roomyB] = both(s, { quota: 10, windowSec: 60 }, "key");
      const [tightA, tightB] = both(s, { quota: 2, windowSec: 60 }, "session");
      const takes = (i: number): Take[] => [
        { counter: i % 2 ? roomyA : roomyB, key: "k", points: 1 },
        { counter: i % 2 ? tightA : tightB, key: "k", points: 1 },
      ];
      const stores = (i: number) => (i % 2 ? s.a : s.b);
      const results = await Promise.all(Array.from({ length: 6 }, (_, i) => stores(i).take(takes(i))));
      assert.equal(results.filter((r) => r === undefined).length, 2);
      for (const r of results) if (r !== undefined) assert.equal(r.index, 1);
      // roomy was charged only for the two admitted takes: 8 more fit.
      for (let i = 0; i < 8; i++) assert.equal(await s.b.take(one(roomyB)), undefined, `take ${i}`);
      assert.equal((await s.a.take(one(roomyA)))?.index, 0);
      await s.close();
    });

    test("in-flight counters (no window) give back; their refusals have no window", async () => {
      const s = await open();
      const [fa, fb] = both(s, { quota: 2, windowSec: 0 }, "concurrency");
      assert.equal(await s.a.take(one(fa, "s")), undefined);
      assert.equal(await s.b.take(one(fb, "s")), undefined);
      assert.deepEqual(await s.a.take(one(fa, "s")), { index: 0, msBeforeNext: -1 });
      s.b.give(fb, "s", 1);
      let back: unknown = "refused";
      for (let i = 0; i < 50 && back !== undefined; i++) {
        back = await s.a.take(one(fa, "s")); // a give is not awaited: it lands soon after
        if (back !== undefined) await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(back, undefined, "a slot came back");
      assert.deepEqual(await s.b.take(one(fb, "s")), { index: 0, msBeforeNext: -1 });
      await s.close();
    });

    test("a key named twice in one take counts twice (two calls of one tool in a batch)", async () => {
      const s = await open();
      const [ca, cb] = both(s, { quota: 3, windowSec: 60 }, "tool.search");
      const twice = (c: Counter, p: number, q: number): Take[] => [
        { counter: c, key: "k", points: p },
        { counter: c, key: "k", points: q },
      ];
      assert.equal((await s.a.take(twice(ca, 2, 2)))?.index, 1, "2 + 2 > 3: the second part refuses");
      assert.equal(await s.b.take(twice(cb, 1, 2)), undefined, "nothing was kept: 1 + 2 fit");
      assert.equal((await s.a.take(one(ca)))?.index, 0, "the count is 3");
      await s.close();
    });

    test("of several refusing parts, the one that frees last is named", async () => {
      const s = await open();
      const [minute] = both(s, { quota: 1, windowSec: 60 }, "key");
      const [hour] = both(s, { quota: 1, windowSec: 3600 }, "tenant");
      const [inflight] = both(s, { quota: 1, windowSec: 0 }, "concurrency");
      const all = (): Take[] => [
        { counter: inflight, key: "k", points: 1 },
        { counter: minute, key: "k", points: 1 },
        { counter: hour, key: "k", points: 1 },
      ];
      assert.equal(await s.a.take(all()), undefined);
      const refused = await s.b.take(all());
      assert.equal(refused?.index, 2, "the hour window, not the minute one or the in-flight cap");
      assert.ok((refused?.msBeforeNext ?? 0) > 3_500_000, String(refused?.msBeforeNext));
      await s.close();
    });

    test("giving back more than is held leaves no room above the quota", async () => {
      const s = await open();
      const [fa, fb] = both(s, { quota: 2, windowSec: 0 }, "concurrency");
      assert.equal(await s.a.take(one(fa, "s", 2)), undefined);
      s.b.give(fb, "s", 5); // a give twice over (e.g. a slot released by two paths) cannot go below 0
      let back: unknown = "refused";
      for (let i = 0; i < 50 && back !== undefined; i++) {
        back = await s.a.take(one(fa, "s", 2));
        if (back !== undefined) await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(back, undefined, "the two slots came back");
      assert.deepEqual(await s.b.take(one(fb, "s")), { index: 0, msBeforeNext: -1 }, "and only two");
      await s.close();
    });

    test("500 concurrent takes against a quota of 100, from two instances, admit exactly 100", async () => {
      const s = await open();
      const [ca, cb] = both(s, { quota: 100, windowSec: 60 }, "tenant");
      const results = await Promise.all(
        Array.from({ length: 500 }, (_, i) => (i % 2 ? s.a.take(one(ca, "t")) : s.b.take(one(cb, "t")))),
      );
      assert.equal(results.filter((r) => r === undefined).length, 100);
      await s.close();
    });

    test("concurrent multi-part takes from two instances: exact admits, nothing kept from refusals", async () => {
      const s = await open();
      const [roomyA, roomyB] = both(s, { quota: 1000, windowSec: 60 }, "key");
      const [tightA, tightB] = both(s, { quota: 100, windowSec: 60 }, "tool");
      const results = await Promise.all(
        Array.from({ length: 300 }, (_, i) =>
          (i % 2 ? s.a : s.b).take([
            { counter: i % 2 ? roomyA : roomyB, key: "k", points: 1 },
            { counter: i % 2 ? tightA : tightB, key: "k", points: 1 },
          ]),
        ),
      );
      assert.equal(results.filter((r) => r === undefined).length, 100);
      // The roomy counter holds exactly the 100 admitted: 900 more fit, the next one does not.
      assert.equal(await s.a.take(one(roomyA, "k", 900)), undefined);
      assert.equal((await s.b.take(one(roomyB)))?.index, 0);
      await s.close();
    });
  });
}
