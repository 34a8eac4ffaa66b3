import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import type { Route } from "../../src/context.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { SessionManager } from "../../src/session/manager.ts";
import { StreamRegistry } from "../../src/session/streams.ts";
import { MemorySessionStore } from "../../src/store/memory/sessions.ts";
import type { SessionRecord } from "../../src/store/types.ts";

const limits = { bufferEvents: 3, bufferBytes: 1 << 20, ttl: 60_000, keepAlive: 15_000, retry: 1000 };
const route = { name: "s", config: { sessions: { idleTtl: 3_600_000 } } } as unknown as Route;

function record(id: string, params: Record<string, unknown>): SessionRecord {
  const now = Date.now();
  return {
    id,
    server: "s",
    // Built at run time, as a request's copies are (not one interned literal).
    principal: ["key", "k1"].join(":"),
    tenant: ["acme"].join(""),
    transport: "streamable",
    protocolVersion: ["2025", "11", "25"].join("-"),
    initParams: params,
    upstream: { instance: "http://127.0.0.1:1/mcp", sessionId: `up-${id}` },
    createdAt: now,
    lastSeenAt: now,
  };
}

describe("SessionManager hot cache", () => {
  const streams = new StreamRegistry(limits);
  const manager = new SessionManager(
    new MemorySessionStore(),
    streams,
    new Map([["s", route]]),
    createLogger({ level: "silent" }),
  );
  after(() => {
    manager.close();
    streams.close();
  });

  test("sessions with the same initialize params share one frozen copy; the request's own stays as it was", async () => {
    const params = () => ({
      protocolVersion: "2025-11-25",
      capabilities: { sampling: {} },
      clientInfo: { name: "c", version: "1" },
    });
    const p1 = params();
    const a = record("a", p1);
    const b = record("b", params());
    await manager.create(a);
    await manager.create(b);
    assert.equal(a.initParams, b.initParams);
    assert.deepEqual(a.initParams, p1);
    assert.notEqual(a.initParams, p1);
    assert.ok(Object.isFrozen(a.initParams) && Object.isFrozen(a.initParams.clientInfo));
    assert.ok(!Object.isFrozen(p1));
    assert.throws(() => {
      (a.initParams.clientInfo as { name: string }).name = "other";
    }, TypeError);
    const other = record("c", { ...params(), clientInfo: { name: "d", version: "1" } });
    await manager.create(other);
    assert.notEqual(other.initParams, a.initParams);
    // What the records hold is unchanged, and what a request loads is the same record.
    const loaded = await manager.load(route, "b", "key:k1");
    assert.equal(loaded, b);
    assert.deepEqual(
      { principal: b.principal, tenant: b.tenant, version: b.protocolVersion },
      { principal: "key:k1", tenant: "acme", version: "2025-11-25" },
    );
  });
});
