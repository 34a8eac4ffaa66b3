/**
 * The public request context (src/context.ts): `clientGone` is made only when read, and says the
 * same as a signal made at once would (aborted when the response closed before it finished).
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import { test } from "node:test";
import { PublicRequestContext, type Route } from "../../src/context.ts";
import type { Logger } from "../../src/observability/logger.ts";

function make(): { ctx: PublicRequestContext; res: EventEmitter & { writableFinished: boolean } } {
  const res = Object.assign(new EventEmitter(), { writableFinished: false });
  const ctx = new PublicRequestContext(
    "r1",
    { socket: { remoteAddress: "127.0.0.1" } } as IncomingMessage,
    res as unknown as ServerResponse,
    { name: "s" } as Route,
    "mcp",
    {} as Logger,
  );
  return { ctx, res };
}

test("clientGone read before the client leaves is aborted when it leaves", () => {
  const { ctx, res } = make();
  const signal = ctx.clientGone;
  let fired = 0;
  signal.addEventListener("abort", () => fired++);
  assert.equal(signal.aborted, false);
  assert.equal(ctx.clientLeft, false);
  res.emit("close");
  assert.equal(signal.aborted, true);
  assert.equal(fired, 1);
  assert.equal(ctx.clientLeft, true);
  assert.equal(ctx.clientGone, signal);
});

test("clientGone first read after the client left is already aborted", () => {
  const { ctx, res } = make();
  res.emit("close");
  assert.equal(ctx.clientLeft, true);
  assert.equal(ctx.clientGone.aborted, true);
  assert.equal((ctx.clientGone.reason as Error).name, "AbortError");
});

test("a response that finished is no departure, even read later", () => {
  const { ctx, res } = make();
  res.writableFinished = true;
  res.emit("close");
  assert.equal(ctx.clientLeft, false);
  assert.equal(ctx.clientGone.aborted, false);
});
