/**
 * Transparency: a conformant server stays conformant behind mcp-edge. The official conformance
 * suite runs against each upstream directly and through the edge in the same test, and the
 * per-check results must match.
 *
 * - 0.1.16, all active scenarios, against the project's SDK v1 fixture: 40 of 40 both ways,
 *   dns-rebinding-protection included (it needs a localhost URL);
 * - 0.1.16 against @modelcontextprotocol/server-everything (which fails some checks on its own):
 *   no check that passes direct fails through the edge;
 * - 0.2.0-alpha.12 with --requirements 2025-11-25 and 2026-07-28 against the SDK v2 fixture: the
 *   same per-check results through the edge as direct.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import {
  type ConformanceCheck,
  type ConformanceRun,
  runConformance016,
  runConformanceRequirements,
} from "../helpers/conformance.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT, type SpawnedFixture, spawnFixture, spawnListening } from "../helpers/spawn.ts";

function localhost(url: string): string {
  const u = new URL(url);
  u.hostname = "localhost";
  return u.toString();
}

const key = (c: ConformanceCheck) => `${c.scenario} / ${c.id}`;

/**
 * Checks that carry a verdict: SUCCESS and FAILURE. INFO lines log what happened; WARNINGs never
 * fail a run (the suite's own rule) and can differ for a good reason: the edge numbers SSE events,
 * so a resumption check that a server without event ids cannot reach is reached through the edge
 * (server-sse-polling). Warnings are printed, not compared.
 */
function verdicts(run: ConformanceRun): Map<string, string> {
  const m = new Map<string, string>();
  for (const c of run.checks) {
    if (c.status === "WARNING") console.log(`  warning: ${key(c)}: ${c.errorMessage ?? ""}`.slice(0, 300));
    if (c.status !== "SUCCESS" && c.status !== "FAILURE") continue;
    // A check id may repeat within a scenario; keep the worst status.
    const prev = m.get(key(c));
    if (!prev || prev === "SUCCESS") m.set(key(c), c.status);
  }
  return m;
}

function diff(direct: Map<string, string>, edge: Map<string, string>): string[] {
  const out: string[] = [];
  for (const k of new Set([...direct.keys(), ...edge.keys()])) {
    if (direct.get(k) !== edge.get(k)) out.push(`${k}: direct=${direct.get(k)} edge=${edge.get(k)}`);
  }
  return out.sort();
}

async function edgeFor(upstreamUrl: string): Promise<InProcessEdge> {
  return startEdge({
    servers: { up: { route: "/mcp", upstream: { urls: [upstreamUrl] }, auth: ["none"] } },
  });
}

describe("conformance through the edge", { timeout: 600_000 }, () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  test("0.1.16 active scenarios, SDK v1 fixture: 40/40 direct and 40/40 through the edge, same checks", async () => {
    const fx = await spawnFixture("test/fixtures/conformance-server.ts");
    cleanups.push(() => fx.stop());
    const edge = await edgeFor(fx.url);
    cleanups.push(() => edge.stop());
    const direct = await runConformance016(localhost(fx.url));
    const through = await runConformance016(localhost(edge.url()));
    assert.equal(direct.passed, 40, direct.stdout.slice(-2000));
    assert.equal(through.passed, 40, through.stdout.slice(-2000));
    assert.equal(through.failed, 0);
    assert.deepEqual(diff(verdicts(direct), verdicts(through)), []);
    assert.ok(verdicts(through).has("dns-rebinding-protection / localhost-host-rebinding-rejected"));
  });

  test("0.1.16 against server-everything: nothing that passes direct fails through the edge", async () => {
    // server-everything listens on every interface and has no host option: a preload binds it to
    // loopback (tests never open a port beyond 127.0.0.1).
    const everything = await spawnListening(
      NODE_BIN,
      [
        "--import",
        `${REPO_ROOT}/test/helpers/bind-loopback.ts`,
        `${REPO_ROOT}/node_modules/@modelcontextprotocol/server-everything/dist/index.js`,
        "streamableHttp",
      ],
      { env: { PORT: "0", MCP_EDGE_ANNOUNCE: "1" } },
    );
    cleanups.push(() => everything.stop());
    const edge = await edgeFor(everything.url);
    cleanups.push(() => edge.stop());
    const direct = verdicts(await runConformance016(localhost(everything.url)));
    const through = verdicts(await runConformance016(localhost(edge.url())));
    const regressions = [...direct]
      .filter(([k, status]) => status === "SUCCESS" && through.get(k) !== "SUCCESS")
      .map(([k]) => `${k}: ${through.get(k)}`);
    // These two call fixture tools server-everything does not have: direct they "pass" on its
    // isError "Tool … not found" result (the checks read only the result's shape). The edge refuses
    // a tool the server does not list before the server sees it (EDGE_TOOL_UNKNOWN, -32602).
    const unlisted = [
      "tools-call-error / tools-call-error",
      "tools-call-simple-text / tools-call-simple-text",
    ];
    assert.deepEqual(
      regressions.filter((r) => !unlisted.some((u) => r.startsWith(`${u}:`))),
      [],
    );
    assert.ok(
      [...direct.values()].some((s) => s === "SUCCESS"),
      "server-everything passes some checks",
    );
  });

  for (const requirements of ["2025-11-25", "2026-07-28"] as const) {
    test(`0.2.x --requirements ${requirements}, SDK v2 fixture: same per-check results through the edge`, async () => {
      const fx: SpawnedFixture = await spawnFixture("test/fixtures/v2-server.ts");
      cleanups.push(() => fx.stop());
      const edge = await edgeFor(fx.url);
      cleanups.push(() => edge.stop());
      const direct = await runConformanceRequirements(localhost(fx.url), requirements);
      const through = await runConformanceRequirements(localhost(edge.url()), requirements);
      assert.ok(direct.checks.length > 0, "the suite ran");
      assert.deepEqual(diff(verdicts(direct), verdicts(through)), []);
    });
  }
});
