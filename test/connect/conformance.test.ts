/**
 * The official conformance suite's client mode (0.1.16) against `mcp-edge connect`, driven as a
 * desktop client drives it (test/connect/conformance-driver.ts: the SDK v1 stdio client spawning
 * the bridge; an HTTP client plays the browser for the auth scenarios). A subset that runs in well
 * under a minute; `node test/connect/conformance-run.ts` runs every scenario, beside mcp-remote
 * (docs/connect.md has the table).
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { CONFORMANCE_0_1 } from "../helpers/conformance.ts";
import { runScenario } from "./conformance-run.ts";

const SCENARIOS = [
  "initialize",
  "tools_call",
  "sse-retry",
  "auth/metadata-default",
  "auth/scope-step-up",
  "auth/pre-registration",
];

test("conformance client scenarios pass against mcp-edge connect", { timeout: 120_000 }, async () => {
  const out = mkdtempSync(path.join(tmpdir(), "connect-conformance-"));
  // Two at a time: the machine's two cores also run the bridges, the suite's servers and the driver.
  const results = [];
  for (let i = 0; i < SCENARIOS.length; i += 2) {
    const pair = SCENARIOS.slice(i, i + 2);
    results.push(...(await Promise.all(pair.map((s) => runScenario(CONFORMANCE_0_1, s, "edge", out)))));
  }
  for (const r of results) {
    assert.equal(r.verdict, "PASS", `${r.scenario}: ${r.failures.join("; ")}`);
    assert.ok(r.passed > 0, `${r.scenario}: some check ran`);
  }
});
