/**
 * The pipeline's fold (src/pipeline/compose.ts) and its stage lists (src/pipeline/lists.ts): order,
 * around stages, branches, stages config turned off, and the compile-time check that a stage cannot
 * stand before the stage that fills what it needs.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { compose, type Stage, StageList } from "../../src/pipeline/compose.ts";
import { renderLifecycle } from "../../src/pipeline/docs.ts";
import { ERROR_CODES } from "../../src/errors/codes.ts";

interface Base {
  log: string[];
  kind: "a" | "b";
}

function step(name: string, async = false): Stage<Base> {
  return {
    name,
    does: name,
    codes: [],
    file: "test",
    run: (ctx) => {
      ctx.log.push(name);
      return async ? Promise.resolve() : undefined;
    },
  };
}

test("steps run in list order; a synchronous list returns no promise", async () => {
  const run = compose(StageList.start<Base>().then(step("one")).then(step("two")).then(step("three")));
  const ctx: Base = { log: [], kind: "a" };
  const r = run(ctx);
  assert.equal(r, undefined, "no stage awaited anything: no promise was made");
  assert.deepEqual(ctx.log, ["one", "two", "three"]);
  const ctx2: Base = { log: [], kind: "a" };
  const r2 = compose(StageList.start<Base>().then(step("one")).then(step("two", true)).then(step("three")))(
    ctx2,
  );
  assert.ok(r2 instanceof Promise);
  assert.deepEqual(ctx2.log, ["one", "two"], "the step after an async one waits for it");
  await r2;
  assert.deepEqual(ctx2.log, ["one", "two", "three"]);
});

test("an around stage holds the rest of the list and releases after it, also when it throws", async () => {
  const around: Stage<Base> = {
    name: "slot",
    does: "slot",
    codes: [],
    file: "test",
    around: async (ctx, next) => {
      ctx.log.push("take");
      try {
        await next();
      } finally {
        ctx.log.push("give");
      }
    },
  };
  const failing: Stage<Base> = {
    name: "boom",
    does: "boom",
    codes: [],
    file: "test",
    run: () => {
      throw new Error("refused");
    },
  };
  const ok: Base = { log: [], kind: "a" };
  await compose(StageList.start<Base>().then(around).then(step("work", true)))(ok);
  assert.deepEqual(ok.log, ["take", "work", "give"]);
  const bad: Base = { log: [], kind: "a" };
  await assert.rejects(async () =>
    compose(StageList.start<Base>().then(around).then(failing).then(step("never")))(bad),
  );
  assert.deepEqual(bad.log, ["take", "give"], "released once; nothing after the refusal ran");
});

test("an around stage that answers does not call the rest (a cache hit)", () => {
  const hit: Stage<Base> = {
    name: "hit",
    does: "hit",
    codes: [],
    file: "test",
    around: (ctx) => void ctx.log.push("answered"),
  };
  const ctx: Base = { log: [], kind: "a" };
  compose(StageList.start<Base>().then(hit).then(step("forward")))(ctx);
  assert.deepEqual(ctx.log, ["answered"]);
});

test("stages config turned off are left out; a branch continues with the list it picks", () => {
  const off: Stage<Base> = { name: "off", does: "off", codes: [], file: "test", run: undefined };
  const list = StageList.start<Base>()
    .then(step("first"))
    .then(off)
    .fork({
      name: "by-kind",
      does: "by kind",
      file: "test",
      lists: { a: StageList.start<Base>().then(step("a")), b: StageList.start<Base>().then(step("b")) },
      pick: (ctx) => ctx.kind,
    });
  const a: Base = { log: [], kind: "a" };
  const b: Base = { log: [], kind: "b" };
  compose(list)(a);
  compose(list)(b);
  assert.deepEqual(a.log, ["first", "a"]);
  assert.deepEqual(b.log, ["first", "b"]);
});

test("the compiler refuses a stage placed before the stage that fills what it needs", () => {
  const fills: Stage<Base, { user: string }> = {
    name: "fills",
    does: "fills",
    codes: [],
    file: "test",
    run: (ctx) => {
      ctx.user = "u";
    },
  };
  const needs: Stage<Base & { user: string }> = {
    name: "needs",
    does: "needs",
    codes: [],
    file: "test",
    run: (ctx) => void ctx.log.push(ctx.user),
  };
  // @ts-expect-error `needs` reads `user`, which no earlier stage fills (`npm run typecheck` checks this line).
  StageList.start<Base>().then(needs);
  const ctx = { log: [], kind: "a" } as Base;
  compose(StageList.start<Base>().then(fills).then(needs))(ctx);
  assert.deepEqual(ctx.log, ["u"]);
});

test("docs: every stage of every list names its file and only codes of the one table", () => {
  const doc = renderLifecycle();
  for (const row of doc.split("\n").filter((l) => /^\| \d+ \| `/.test(l))) {
    for (const code of row.match(/EDGE_[A-Z0-9_]+/g) ?? []) assert.ok(code in ERROR_CODES, code);
    assert.match(row, /`src\/pipeline\/stages\/[a-z-]+\.ts` \|$/);
  }
  // A tools/call in a session passes these stages, in this order.
  const order = [...doc.matchAll(/^\| \d+ \| `([a-z-]+)` /gm)].map((m) => m[1]);
  const session = order.slice(0, order.indexOf("forward") + 1);
  assert.deepEqual(session, [
    "host-origin",
    "auth-failure-limit",
    "method",
    "authenticate",
    "body",
    "era",
    "batch-rules",
    "audit-gate",
    "authorize",
    "session-prefetch",
    "rate-limit",
    "drain",
    "session",
    "accept",
    "get-order",
    "connection",
    "tool-list",
    "cache",
    "audit-ahead",
    "forward",
  ]);
});
