/**
 * Identity binding through a real edge, real issuers (test/helpers/idp.ts: JWKS over HTTP, ES256
 * tokens) and a real upstream (a stdio server that records every message it reads):
 *
 * - issuers bound to tenants: with `auth.oauth[].tenants`, a token of issuer B naming a tenant of
 *   issuer A is 403 EDGE_TENANT_NOT_ALLOWED (as is one naming none, or a tenant not listed); an
 *   issuer without a list may assert only tenants no other issuer lists. Nothing reaches the
 *   upstream; the audit records the refusal.
 * - sessions bound to the client application: the same user's token minted for another client
 *   (`client_id`, or `azp`) gets 404 on the session, as another user does, and nothing reaches the
 *   upstream; a refreshed token of the same client continues the session.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { AuditRecord } from "../../src/audit/record.ts";
import { freePort, type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { TestIdp } from "../helpers/idp.ts";
import { mcpPost } from "../helpers/mcp.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

const ADMIN_TOKEN = "identity-binding-admin-token-0123456789abcdef";
const FIXTURE = path.join(REPO_ROOT, "test/fixtures/line-splitting-server.ts");
const dir = tempDir();
const RECORD = path.join(dir, "upstream.jsonl");
let idpA: TestIdp; // trusted for acme, acme-labs
let idpB: TestIdp; // trusted for globex
let idpC: TestIdp; // no list: any tenant nobody lists
let edge: InProcessEdge;
let resource: string;

before(async () => {
  [idpA, idpB, idpC] = await Promise.all([TestIdp.start(), TestIdp.start(), TestIdp.start()]);
  const port = await freePort();
  const publicUrl = `http://127.0.0.1:${port}`;
  resource = `${publicUrl}/mcp`;
  edge = await startEdge(
    {
      listen: { host: "127.0.0.1", port },
      publicUrl,
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      audit: { flushInterval: "50ms" },
      tenancy: { claim: "org" },
      // Each refused case comes from its own address (X-Forwarded-For, trusted here): the audit
      // keeps a bounded sample of refused authentications per address and minute.
      security: { trustForwardedHeaders: true },
      auth: {
        oauth: [
          { issuer: idpA.issuer, jwksUri: idpA.jwksUri, tenants: ["acme", "acme-labs"] },
          { issuer: idpB.issuer, jwksUri: idpB.jwksUri, tenants: ["globex"] },
          { issuer: idpC.issuer, jwksUri: idpC.jwksUri },
        ],
      },
      servers: {
        s: {
          route: "/mcp",
          upstream: { stdio: { command: NODE_BIN, args: [FIXTURE, RECORD], mode: "shared" } },
          auth: ["oauth"],
        },
      },
    },
    dir,
  );
});

after(async () => {
  await edge?.stop();
  await Promise.all([idpA?.stop(), idpB?.stop(), idpC?.stop()]);
});

/** Every message the upstream process read. */
function upstreamMessages(): { method?: string; params?: { name?: string } }[] {
  if (!existsSync(RECORD)) return [];
  return readFileSync(RECORD, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => (JSON.parse(l) as { message: { method?: string } }).message);
}

async function auditOf(requestId: string): Promise<AuditRecord[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    await edge.gw.audit.flush();
    const res = await fetch(`${edge.gw.adminUrl}/api/audit?limit=1000`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const recs = ((await res.json()) as { records: AuditRecord[] }).records.filter(
      (r) => r.requestId === requestId,
    );
    if (recs.length > 0 || Date.now() > deadline) return recs;
    await new Promise((r) => setTimeout(r, 50));
  }
}

function token(idp: TestIdp, claims: Record<string, unknown>): Promise<string> {
  return idp.mint({ aud: resource, sub: "alice", ...claims });
}

let nextId = 1;
const INIT = () => ({
  jsonrpc: "2.0",
  id: nextId++,
  method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "binding", version: "1" } },
});
const CALL = (text: string) => ({
  jsonrpc: "2.0",
  id: nextId++,
  method: "tools/call",
  params: { name: "echo", arguments: { text } },
});

describe("issuers bound to tenants", () => {
  const refused: { name: string; idp: () => TestIdp; org: string | undefined }[] = [
    { name: "issuer B naming a tenant of issuer A", idp: () => idpB, org: "acme" },
    { name: "issuer B naming another tenant of issuer A", idp: () => idpB, org: "acme-labs" },
    { name: "issuer A naming the tenant of issuer B", idp: () => idpA, org: "globex" },
    { name: "issuer A naming a tenant nobody lists", idp: () => idpA, org: "initech" },
    { name: "issuer A naming no tenant", idp: () => idpA, org: undefined },
    { name: "issuer A, tenant differing only by case", idp: () => idpA, org: "ACME" },
    { name: "issuer C (no list) naming a tenant issuer A lists", idp: () => idpC, org: "acme" },
  ];
  for (const [i, c] of refused.entries()) {
    test(`${c.name} → 403 EDGE_TENANT_NOT_ALLOWED, audited, nothing reaches the upstream`, async () => {
      const before = upstreamMessages().length;
      const r = await mcpPost(resource, INIT(), {
        credential: await token(c.idp(), { org: c.org }),
        headers: { "x-forwarded-for": `203.0.113.${i + 1}` },
      });
      assert.equal(r.status, 403, JSON.stringify(r.body));
      assert.equal(r.body.error.data.code, "EDGE_TENANT_NOT_ALLOWED");
      assert.equal(r.sessionId, null);
      assert.equal(upstreamMessages().length, before);
      const [rec, ...more] = await auditOf(r.requestId);
      assert.equal(more.length, 0);
      assert.equal(rec?.decision, "refused");
      assert.equal(rec?.code, "EDGE_TENANT_NOT_ALLOWED");
    });
  }

  const allowed: { name: string; idp: () => TestIdp; org: string | undefined }[] = [
    { name: "issuer A naming its tenant", idp: () => idpA, org: "acme-labs" },
    { name: "issuer B naming its tenant", idp: () => idpB, org: "globex" },
    { name: "issuer C naming a tenant nobody lists", idp: () => idpC, org: "initech" },
  ];
  for (const c of allowed) {
    test(`${c.name} → a session in that tenant`, async () => {
      const credential = await token(c.idp(), { org: c.org });
      const r = await mcpPost(resource, INIT(), { credential });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const sessionId = r.sessionId as string;
      assert.ok(sessionId);
      const call = await mcpPost(resource, CALL(`tenant ${c.org}`), { credential, sessionId });
      assert.equal(call.status, 200, JSON.stringify(call.body));
      const [rec] = await auditOf(call.requestId);
      assert.equal(rec?.tenant, c.org);
      assert.equal(rec?.decision, "allowed");
    });
  }
});

describe("sessions bound to the client application", () => {
  let sid: string;
  const alice = (claims: Record<string, unknown>) => token(idpA, { org: "acme", ...claims });

  before(async () => {
    const r = await mcpPost(resource, INIT(), { credential: await alice({ client_id: "app-1" }) });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    sid = r.sessionId as string;
    const note = await mcpPost(
      resource,
      { jsonrpc: "2.0", method: "notifications/initialized" },
      { credential: await alice({ client_id: "app-1" }), sessionId: sid },
    );
    assert.equal(note.status, 202);
  });

  test("the same user's token for another client → 404 on the session; the upstream sees nothing", async () => {
    for (const claims of [{ client_id: "app-2" }, { azp: "app-2" }, {}, { client_id: "app-1 " }]) {
      const before = upstreamMessages().length;
      const r = await mcpPost(resource, CALL(`from ${JSON.stringify(claims)}`), {
        credential: await alice(claims),
        sessionId: sid,
      });
      assert.equal(r.status, 404, `${JSON.stringify(claims)}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error.data.code, "EDGE_SESSION_NOT_FOUND");
      assert.equal(upstreamMessages().length, before, JSON.stringify(claims));
      const [rec] = await auditOf(r.requestId);
      assert.equal(rec?.decision, "refused");
      assert.equal(rec?.code, "EDGE_SESSION_NOT_FOUND");
    }
  });

  test("another user of the same client → 404 too", async () => {
    const r = await mcpPost(resource, CALL("bob"), {
      credential: await alice({ sub: "bob", client_id: "app-1" }),
      sessionId: sid,
    });
    assert.equal(r.status, 404);
  });

  test("a refreshed token of the same client (client_id or azp) continues the session", async () => {
    for (const claims of [
      { client_id: "app-1", jti: "refreshed-1" },
      { azp: "app-1", jti: "refreshed-2" },
    ]) {
      const text = `continued ${claims.jti}`;
      const r = await mcpPost(resource, CALL(text), { credential: await alice(claims), sessionId: sid });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body.result.content, [{ type: "text", text: "echo ran" }]);
      const calls = upstreamMessages().filter(
        (m) =>
          m.method === "tools/call" &&
          (m.params as { arguments?: { text?: string } })?.arguments?.text === text,
      );
      assert.equal(calls.length, 1, "the upstream ran the call once");
      const [rec] = await auditOf(r.requestId);
      assert.equal(rec?.decision, "allowed");
      assert.equal(rec?.clientId, "app-1");
      assert.equal(rec?.target, "echo");
    }
  });
});
