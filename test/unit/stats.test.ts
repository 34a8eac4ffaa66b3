/**
 * `/api/stats` figures (src/admin/stats.ts): table-driven, fixed records and frozen time.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  aggregate,
  type AuditReader,
  grid,
  isError,
  MAX_RECORDS,
  percentile,
  stats,
  statsRequest,
} from "../../src/admin/stats.ts";
import type { AuditOutcome, AuditRecord } from "../../src/audit/record.ts";
import type { AuditFilter, AuditPageRequest } from "../../src/store/types.ts";
import { GatewayError } from "../../src/errors/errors.ts";

const NOW = Date.parse("2026-01-01T12:00:00.000Z");
const OK: AuditOutcome = { kind: "result", isError: false };

let seq = 0;
function rec(p: Partial<AuditRecord> & { at: number }): AuditRecord {
  const { at, ...rest } = p;
  return {
    v: 1,
    chain: rest.tenant ?? "",
    seq: ++seq,
    time: new Date(at).toISOString(),
    type: "call",
    tenant: "acme",
    subject: "s",
    principal: null,
    auth: "apiKey",
    clientId: null,
    keyId: "k1",
    session: null,
    server: "alpha",
    instance: null,
    method: "tools/call",
    target: "search",
    rpcId: "1",
    args: null,
    decision: "allowed",
    code: null,
    status: 200,
    outcome: OK,
    latencyMs: 10,
    upstreamMs: 8,
    requestId: null,
    traceId: null,
    detail: null,
    prev: "",
    hash: "",
    ...rest,
  };
}

const q = (s: string) => new URLSearchParams(s);

describe("statsRequest", () => {
  test("defaults: 1h window, 1m buckets", () => {
    const r = statsRequest(q(""), undefined, NOW);
    assert.deepEqual([r.windowText, r.windowMs, r.bucketMs], ["1h", 3_600_000, 60_000]);
  });
  for (const [window, bucket] of [
    ["15m", 30_000],
    ["6h", 600_000],
    ["24h", 1_800_000],
    ["7d", 10_800_000],
    ["31d", 86_400_000],
  ] as const) {
    test(`window ${window}: a round bucket of ${bucket} ms`, () => {
      assert.equal(statsRequest(q(`window=${window}`), undefined, NOW).bucketMs, bucket);
    });
  }
  for (const bad of [
    "window=abc",
    "window=10s",
    "window=40d",
    "window=1h&bucket=1ms",
    "window=7d&bucket=1s",
  ]) {
    test(`refuses ${bad}`, () => {
      assert.throws(
        () => statsRequest(q(bad), undefined, NOW),
        (e: unknown) => e instanceof GatewayError && e.code === "EDGE_ADMIN_BAD_REQUEST",
      );
    });
  }
});

describe("percentile (nearest rank)", () => {
  const cases: [number[], number, number | null][] = [
    [[], 50, null],
    [[7], 50, 7],
    [[7], 95, 7],
    [[1, 2, 3, 4], 50, 2],
    [[1, 2, 3, 4], 95, 4],
    [Array.from({ length: 100 }, (_, i) => i + 1), 95, 95],
    [Array.from({ length: 20 }, (_, i) => i + 1), 95, 19],
  ];
  for (const [values, p, want] of cases) {
    test(`p${p} of ${values.length} values = ${want}`, () => assert.equal(percentile(values, p), want));
  }
});

describe("isError", () => {
  const cases: [string, Partial<AuditRecord>, boolean][] = [
    ["a result", {}, false],
    ["a tool result flagged isError", { outcome: { kind: "result", isError: true } }, true],
    ["a result the edge did not read", { outcome: { kind: "result", isError: null } }, false],
    ["a JSON-RPC error", { outcome: { kind: "rpc_error", code: -32602 } }, true],
    [
      "a 429",
      {
        decision: "refused",
        status: 429,
        code: "EDGE_RATE_LIMITED",
        outcome: { kind: "http_error", status: 429, code: "EDGE_RATE_LIMITED" },
      },
      true,
    ],
    ["an upstream 502", { status: 502, outcome: { kind: "http_error", status: 502, code: null } }, true],
    ["aborted", { status: 0, outcome: { kind: "aborted" } }, true],
  ];
  for (const [name, p, want] of cases) test(name, () => assert.equal(isError(rec({ at: NOW, ...p })), want));
});

describe("aggregate", () => {
  const req = statsRequest(q("window=1h"), undefined, NOW);
  const g = grid(req);
  const limited = {
    decision: "refused" as const,
    status: 429,
    code: "EDGE_RATE_LIMITED",
    outcome: { kind: "http_error", status: 429, code: "EDGE_RATE_LIMITED" } as AuditOutcome,
    latencyMs: 0.2,
  };
  const records = [
    rec({ at: NOW - 30 * 60_000, latencyMs: 10 }),
    rec({ at: NOW - 30 * 60_000, latencyMs: 30, target: "fetch" }),
    rec({ at: NOW - 1000, latencyMs: 20, tenant: "globex", server: "beta" }),
    rec({ at: NOW - 1000, ...limited }),
    rec({ at: NOW - 500, latencyMs: 40, outcome: { kind: "result", isError: true } }),
    rec({ at: NOW - 500, method: "resources/read", target: "file:///x", latencyMs: 5 }),
    // Outside the window, or not a call: not counted.
    rec({ at: NOW - 2 * 3_600_000 }),
    rec({ at: NOW, type: "session.start", method: null, target: null }),
  ];
  const s = aggregate(req, records);

  test("the grid: round buckets covering the window up to now", () => {
    assert.equal(g.start % 60_000, 0);
    assert.ok(g.start <= NOW - 3_600_000 && g.until === NOW + 1);
    assert.equal(s.buckets.length, g.count);
    assert.equal(s.buckets[0]?.start, new Date(g.start).toISOString());
    assert.equal(s.since, new Date(g.start).toISOString());
  });

  test("totals", () => {
    assert.equal(s.records, 6);
    assert.deepEqual(s.totals, { calls: 6, errors: 2, refused: 1, rate_limited: 1, p50_ms: 20, p95_ms: 40 });
  });

  test("buckets add up to the totals, and hold each call where it happened", () => {
    assert.equal(
      s.buckets.reduce((a, b) => a + b.calls, 0),
      6,
    );
    // The last bucket is the one holding `now`; the calls of the last second are in the one before.
    assert.equal(s.buckets.at(-1)?.start, new Date(NOW).toISOString());
    const recent = s.buckets.find((b) => b.start === new Date(NOW - 60_000).toISOString());
    assert.deepEqual(recent && [recent.calls, recent.rate_limited, recent.errors], [4, 1, 2]);
    const half = s.buckets.find((b) => b.start === new Date(NOW - 30 * 60_000).toISOString());
    assert.deepEqual(half && [half.calls, half.p50_ms, half.p95_ms], [2, 10, 30]);
  });

  test("per server, per tenant, per tool, each with aligned buckets; busiest first", () => {
    assert.deepEqual(
      s.by_server.map((r) => [r.server, r.calls, r.buckets.length]),
      [
        ["alpha", 5, g.count],
        ["beta", 1, g.count],
      ],
    );
    assert.deepEqual(
      s.by_tenant.map((r) => [r.tenant, r.calls, r.rate_limited]),
      [
        ["acme", 5, 1],
        ["globex", 1, 0],
      ],
    );
    assert.deepEqual(
      s.by_tool.map((r) => [r.server, r.method, r.tool, r.calls, r.errors]),
      [
        ["alpha", "tools/call", "search", 3, 2],
        ["alpha", "tools/call", "fetch", 1, 0],
        ["alpha", "resources/read", "file:///x", 1, 0],
        ["beta", "tools/call", "search", 1, 0],
      ],
    );
    assert.equal(s.by_tool_omitted, 0);
  });

  test("top tools: tools/call only", () => {
    assert.deepEqual(
      s.top_tools.map((t) => [t.server, t.tool, t.calls]),
      [
        ["alpha", "search", 3],
        ["alpha", "fetch", 1],
        ["beta", "search", 1],
      ],
    );
  });

  test("a tenant scope keeps that tenant's records only", () => {
    const t = aggregate(statsRequest(q(""), "globex", NOW), records);
    assert.equal(t.scope, "tenant");
    assert.equal(t.tenant, "globex");
    assert.deepEqual(
      t.by_tenant.map((r) => r.tenant),
      ["globex"],
    );
    assert.equal(t.totals.calls, 1);
  });

  test("nothing in the window: zeros, null latencies, empty buckets", () => {
    const e = aggregate(req, []);
    assert.deepEqual(e.totals, {
      calls: 0,
      errors: 0,
      refused: 0,
      rate_limited: 0,
      p50_ms: null,
      p95_ms: null,
    });
    assert.equal(e.buckets.length, g.count);
    assert.deepEqual([e.by_server, e.by_tool, e.by_tenant, e.top_tools], [[], [], [], []]);
  });
});

describe("stats over the audit query API", () => {
  /** A reader over an array, paging like the stores (ascending, numeric cursor). */
  function reader(all: AuditRecord[]): AuditReader & { filters: AuditFilter[] } {
    const filters: AuditFilter[] = [];
    return {
      filters,
      async query(filter: AuditFilter, page: AuditPageRequest) {
        filters.push(filter);
        const from = page.cursor === undefined ? 0 : Number(page.cursor);
        const records = all.slice(from, from + page.limit);
        const next = from + records.length;
        return { records, next: String(next), more: next < all.length };
      },
      stats: () => ({ queued: 2, spooled: 1 }),
    };
  }

  test("pages through every record and asks for calls of the window and the tenant only", async () => {
    const all = Array.from({ length: 2500 }, (_, i) => rec({ at: NOW - 1000 - i }));
    const r = reader(all);
    const s = await stats(r, statsRequest(q("window=1h"), "acme", NOW));
    assert.equal(s.totals.calls, 2500);
    assert.equal(r.filters.length, 3);
    const f = r.filters[0] as AuditFilter;
    assert.deepEqual([f.type, f.tenant, f.until], ["call", "acme", NOW + 1]);
    assert.equal(s.pending, 3);
    assert.equal(s.truncated, false);
  });

  test("stops at MAX_RECORDS and says so", async () => {
    const many: AuditRecord[] = new Array(MAX_RECORDS + 1500).fill(rec({ at: NOW - 1000 }));
    const s = await stats(reader(many), statsRequest(q("window=1h"), undefined, NOW));
    assert.equal(s.truncated, true);
    assert.equal(s.totals.calls, MAX_RECORDS);
  });
});
