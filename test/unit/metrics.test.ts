/**
 * src/observability/metrics.ts without a network: label caps, outcome labels (recorded outcomes
 * first, the HTTP exchange otherwise), instance labels without secrets, and events of another
 * gateway in the same process left alone. Events are published on the real channels.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { RequestContext, Route } from "../../src/context.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import type { CallOutcome, RequestEndEvent } from "../../src/observability/channels.ts";
import { requestEndChannel, sessionChannel } from "../../src/observability/channels.ts";
import { LabelCap, Metrics, OTHER } from "../../src/observability/metrics.ts";
import type { InstanceHealth } from "../../src/upstream/types.ts";

function route(name: string, health: InstanceHealth[] = []): Route {
  return { name, config: {}, upstream: { health: () => health } } as unknown as Route;
}

function metricsFor(
  routes: Route[],
  config: Partial<ConstructorParameters<typeof Metrics>[0]["config"]> = {},
) {
  const m = new Metrics({
    config: { enabled: true, maxTools: 3, maxTenants: 2, process: false, otel: false, ...config },
    routes: new Map(routes.map((r) => [r.name, r])),
    streams: () => 4,
  });
  m.start();
  return m;
}

let nextId = 1;
function call(
  r: Route,
  tool: string,
  opts: { tenant?: string; outcome?: CallOutcome; status?: number; error?: GatewayError } = {},
): void {
  const id = nextId++;
  const ctx = {
    route: r,
    req: { method: "POST", headers: {} },
    headers: {},
    httpMethod: "POST",
    messages: [
      { jsonrpc: "2.0", id, method: "tools/call", params: { name: tool, arguments: { secret: "x" } } },
    ],
    principal: opts.tenant ? { id: "p", tenant: opts.tenant } : undefined,
    outcomes: opts.outcome ? new Map([[`n:${id}`, opts.outcome]]) : undefined,
  } as unknown as RequestContext;
  const ev: RequestEndEvent = { request: ctx, status: opts.status ?? 200, error: opts.error, durationMs: 12 };
  requestEndChannel.publish(ev);
}

async function page(m: Metrics): Promise<string> {
  return (await m.render()).body;
}

function value(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("LabelCap", () => {
  test("keeps the first N distinct values, then answers (other); `always` values do not count", () => {
    const cap = new LabelCap(2, ["tools/call"]);
    assert.equal(cap.value("a"), "a");
    assert.equal(cap.value("tools/call"), "tools/call");
    assert.equal(cap.value("b"), "b");
    assert.equal(cap.value("c"), OTHER);
    assert.equal(cap.value("a"), "a");
    assert.equal(cap.value("x".repeat(129)), OTHER);
    assert.equal(cap.size, 2);
    assert.equal(new LabelCap(0).value("anything"), OTHER);
  });
});

describe("Metrics", () => {
  test("calls: tool and tenant capped per label, outcomes from recorded outcomes first", async () => {
    const r = route("s");
    const m = metricsFor([r]);
    try {
      call(r, "t1", { tenant: "acme", outcome: { kind: "result", isError: false } });
      call(r, "t1", { tenant: "acme", outcome: { kind: "result", isError: true } });
      call(r, "t2", { tenant: "beta", outcome: { kind: "rpc_error", code: -32602 } });
      call(r, "t3", { tenant: "gamma", outcome: { kind: "aborted" } });
      call(r, "t4", { tenant: "delta" });
      call(r, "t5", { status: 0 });
      call(r, "t1", {
        status: 429,
        error: new GatewayError("EDGE_RATE_LIMITED", undefined, { data: { limit: "tool" } }),
      });
      call(r, "t1", { status: 502, error: new GatewayError("EDGE_UPSTREAM_ERROR") });
      const text = await page(m);
      const c = (tool: string, tenant: string, outcome: string) =>
        value(
          text,
          `mcp_edge_calls_total{server="s",method="tools/call",tool="${tool}",tenant="${tenant}",outcome="${outcome}"}`,
        );
      assert.equal(c("t1", "acme", "ok"), 1);
      assert.equal(c("t1", "acme", "tool_error"), 1);
      assert.equal(c("t2", "beta", "rpc_error"), 1);
      // Third tool kept (cap 3), third tenant not (cap 2).
      assert.equal(c("t3", OTHER, "aborted"), 1);
      assert.equal(c(OTHER, OTHER, "ok"), 1);
      assert.equal(c(OTHER, "", "aborted"), 1);
      assert.equal(c("t1", "", "refused"), 1);
      assert.equal(c("t1", "", "failed"), 1);
      assert.equal(value(text, 'mcp_edge_rate_limited_total{server="s",limit="tool"}'), 1);
      assert.equal(value(text, 'mcp_edge_errors_total{server="s",code="EDGE_UPSTREAM_ERROR"}'), 1);
      assert.equal(value(text, 'mcp_edge_request_duration_seconds_count{server="s",method="tools/call"}'), 8);
      assert.equal(value(text, "mcp_edge_streams_open"), 4);
      assert.ok(!text.includes("secret"));
    } finally {
      m.stop();
    }
  });

  test("another gateway's routes (same names, other objects) are not counted", async () => {
    const mine = route("s");
    const m = metricsFor([mine]);
    try {
      call(route("s"), "t1");
      sessionChannel.publish({
        kind: "start",
        sessionId: "sid",
        server: "elsewhere",
        tenant: null,
        principal: "p",
      });
      const text = await page(m);
      assert.equal(text.includes("mcp_edge_calls_total{"), false);
      assert.equal(text.includes("elsewhere"), false);
    } finally {
      m.stop();
    }
  });

  test("instances are labelled by host: no userinfo, path or query; duplicates stay apart", async () => {
    const r = route("s", [
      { id: "http://user:pw@10.0.0.1:8080/mcp?token=abc", healthy: true, sessions: 2, inflight: 1 },
      { id: "http://10.0.0.1:8080/other", healthy: false, sessions: 0, inflight: 0 },
      { id: "stdio", healthy: true, sessions: 1, inflight: 0 },
    ]);
    const m = metricsFor([r]);
    try {
      const text = await page(m);
      assert.equal(value(text, 'mcp_edge_upstream_up{server="s",instance="10.0.0.1:8080#0"}'), 1);
      assert.equal(value(text, 'mcp_edge_upstream_up{server="s",instance="10.0.0.1:8080#1"}'), 0);
      assert.equal(value(text, 'mcp_edge_upstream_sessions{server="s",instance="10.0.0.1:8080#0"}'), 2);
      assert.equal(value(text, 'mcp_edge_upstream_up{server="s",instance="stdio"}'), 1);
      for (const secret of ["pw", "token=", "abc", "/mcp", "/other"])
        assert.ok(!text.includes(secret), secret);
    } finally {
      m.stop();
    }
  });

  test("a registered gauge that throws keeps its last reading and does not fail the page", async () => {
    const m = metricsFor([route("s")]);
    try {
      let reads = 0;
      m.registerGauge("mcp_edge_broken", "Throws after its first reading.", () => {
        if (reads++ > 0) throw new Error("boom");
        return 9;
      });
      assert.equal(value(await page(m), "mcp_edge_broken"), 9);
      m.registerGauge("mcp_edge_fine", "Reads.", () => 5);
      const text = await page(m);
      assert.equal(value(text, "mcp_edge_fine"), 5);
      assert.equal(value(text, "mcp_edge_broken"), 9);
    } finally {
      m.stop();
    }
  });
});
