/**
 * Failed authentications are visible: wrong and missing credentials are counted by route, reason
 * and source address in /metrics and /api/stats, and a bounded sample of them is audited — never
 * the credential presented, and a flood does not grow the store past the sampling bound.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, test } from "node:test";
import { PER_ADDRESS_PER_MINUTE } from "../../src/audit/auth-refusals.ts";
import { type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { mcpPost } from "../helpers/mcp.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

const ADMIN_TOKEN = "auth-refusals-admin-token-0123456789abcdef";
let edge: InProcessEdge;
const INIT = {
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "1" } },
};

before(async () => {
  edge = await startEdge({
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    // The failed-auth limiter would answer 429 before the credential is checked: off, to flood.
    rateLimits: { authFailures: "off" },
    audit: { flushInterval: "50ms" },
    servers: {
      demo: {
        route: "/mcp",
        upstream: { stdio: { command: NODE_BIN, args: [path.join(REPO_ROOT, "src/demo/server.ts")] } },
        auth: ["apiKey"],
      },
    },
  });
});
after(async () => {
  await edge?.stop();
});

async function admin(p: string): Promise<any> {
  const res = await fetch(`${edge.gw.adminUrl}${p}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(res.status, 200, p);
  return res.json();
}

async function metric(line: RegExp): Promise<number> {
  const text = await (await fetch(`${edge.gw.adminUrl}/metrics`)).text();
  const m = line.exec(text);
  return m ? Number(m[1]) : 0;
}

test("five wrong keys and two missing ones: counted per route, reason and address; audited with the address, never the key", async () => {
  const wrong = Array.from({ length: 5 }, (_, i) => `mcpe_aaaaaaaaaaa${i}_${"x".repeat(43)}`);
  for (const key of wrong) assert.equal((await mcpPost(edge.url(), INIT, { credential: key })).status, 401);
  for (let i = 0; i < 2; i++) assert.equal((await mcpPost(edge.url(), INIT)).status, 401);

  assert.equal(
    await metric(/^mcp_edge_auth_refused\{server="demo",reason="EDGE_AUTH_INVALID_TOKEN"\} (\d+)$/m),
    5,
  );
  assert.equal(
    await metric(/^mcp_edge_auth_refused\{server="demo",reason="EDGE_AUTH_REQUIRED"\} (\d+)$/m),
    2,
  );
  assert.equal(await metric(/^mcp_edge_auth_refused_by_address\{address="127\.0\.0\.1"\} (\d+)$/m), 7);

  const stats = await admin("/api/stats?window=1h");
  assert.equal(stats.auth_refused.total, 7);
  assert.deepEqual(stats.auth_refused.by_route, [
    { server: "demo", reason: "EDGE_AUTH_INVALID_TOKEN", count: 5 },
    { server: "demo", reason: "EDGE_AUTH_REQUIRED", count: 2 },
  ]);
  assert.deepEqual(stats.auth_refused.top_addresses, [{ address: "127.0.0.1", count: 7 }]);
  // A tenant's view has none (they belong to no tenant).
  assert.equal((await admin("/api/stats?window=1h&tenant=default")).auth_refused, null);

  await edge.gw.audit.flush();
  const audit = await admin("/api/audit?type=request&limit=100");
  const records = audit.records as { code: string; status: number; detail: Record<string, string> }[];
  // Sampled: at most 5 a minute per address (7 refusals: all but 2 unless a minute began between).
  assert.ok(records.length >= PER_ADDRESS_PER_MINUTE && records.length <= 7, `${records.length} records`);
  for (const r of records) {
    assert.equal(r.status, 401);
    assert.equal(r.detail.address, "127.0.0.1");
    assert.equal(r.detail.reason, r.code);
  }
  const text = JSON.stringify(audit);
  for (const key of wrong) assert.ok(!text.includes(key.slice(5)), "no presented key in the audit");
});

test("a flood of wrong keys: every one counted, the audit bounded", async () => {
  const before = (await admin("/api/audit?type=request&limit=1000")).records.length as number;
  const n = 300;
  for (let i = 0; i < n; i += 30) {
    await Promise.all(
      Array.from({ length: 30 }, async (_, j) => {
        const r = await mcpPost(edge.url(), INIT, {
          credential: `mcpe_flood${String(i + j).padStart(7, "0")}_secret`,
        });
        assert.equal(r.status, 401);
      }),
    );
  }
  assert.equal(
    await metric(/^mcp_edge_auth_refused\{server="demo",reason="EDGE_AUTH_INVALID_TOKEN"\} (\d+)$/m),
    305,
  );
  await edge.gw.audit.flush();
  const after = (await admin("/api/audit?type=request&limit=1000")).records.length as number;
  // Within one minute: nothing more from this address; across a minute boundary, one more minute's worth.
  assert.ok(after - before <= PER_ADDRESS_PER_MINUTE, `${after - before} more records for ${n} refusals`);
  const stats = await admin("/api/stats?window=1h");
  assert.equal(stats.auth_refused.total, 307);
  assert.ok(stats.auth_refused.not_audited >= n - PER_ADDRESS_PER_MINUTE);
  assert.ok((await metric(/^mcp_edge_auth_refused_not_audited (\d+)$/m)) >= n - PER_ADDRESS_PER_MINUTE);
});
