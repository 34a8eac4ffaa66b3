import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import { createLogger, logScope } from "../../src/observability/logger.ts";

function capture(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  const out: string[] = [];
  const stream = new Writable({
    write(chunk, _e, cb) {
      out.push(...String(chunk).split("\n").filter(Boolean));
      cb();
    },
  });
  return { stream, lines: () => out.map((l) => JSON.parse(l)) };
}

test("every line written inside a request's scope carries its request id, wherever it is written", async () => {
  const c = capture();
  const log = createLogger({ level: "info", destination: c.stream });
  await logScope.run({ reqId: "req-1", server: "github" }, async () => {
    log.info("sync line");
    await new Promise((r) => setImmediate(r)); // a later turn of the event loop
    log.child({ part: "upstream" }).warn("after an await, from a child logger");
  });
  log.info("outside any request");
  const [a, b, c3] = c.lines();
  assert.equal(a?.reqId, "req-1");
  assert.equal(b?.reqId, "req-1");
  assert.equal(b?.server, "github");
  assert.equal(c3?.reqId, undefined);
});

test("credentials and session ids are redacted", () => {
  const c = capture();
  const log = createLogger({ level: "info", destination: c.stream });
  log.info(
    {
      headers: {
        authorization: "Bearer secret-token",
        "x-api-key": "mk_secret",
        "mcp-session-id": "sid-secret",
      },
      token: "tok-secret",
      upstream: { sessionId: "up-secret", token: "nested-secret" },
    },
    "request",
  );
  const text = JSON.stringify(c.lines());
  for (const secret of [
    "secret-token",
    "mk_secret",
    "sid-secret",
    "tok-secret",
    "up-secret",
    "nested-secret",
  ]) {
    assert.ok(!text.includes(secret), `${secret} must not be logged`);
  }
  assert.match(text, /\[redacted\]/);
});
