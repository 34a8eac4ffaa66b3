/**
 * Audit end to end, in process:
 *   (d) refused calls (401 bad key, 403 tool forbidden, 404 session) are recorded with the right
 *       decision; an allowed call names tenant, subject, key, session, server, instance, tool,
 *       argument digest, outcome, latency, request and trace id; client-supplied fields overwrite
 *       nothing;
 *   (e) CR/LF/ANSI/1 MB strings in tool names and arguments stay parseable and bounded (API, export
 *       lines, CLI table);
 *   (f) GET /api/audit is tenant-scoped: a tenant admin key sees its own tenant only;
 *   (c) the audit store made unavailable (its SQLite file locked by another connection): records
 *       spool, a full spool refuses tools/call with 503 (tools/list continues), and once the lock
 *       is gone every record is in the store, in order, and the chain verifies;
 *   (b) editing or deleting one record in the SQLite file makes verify (API and CLI) name it.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, test } from "node:test";
import type { AuditRecord } from "../../src/audit/record.ts";
import { runAudit } from "../../src/cli/audit.ts";
import { type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";
import { mcpPost } from "../helpers/mcp.ts";
import { waitFor } from "../helpers/wait.ts";

const ADMIN_TOKEN = "test-admin-token-0123456789abcdef-0123456789";
const TRACE = "0af7651916cd43dd8448eb211c80319c";
let upstream: SpawnedFixture;
let edge: InProcessEdge;
let dir: string;
let auditDb: string;
let admin: string;
const keys: Record<string, string> = {};

before(async () => {
  upstream = await spawnFixture("test/fixtures/conformance-server.ts");
  dir = tempDir();
  auditDb = path.join(dir, "audit.db");
  edge = await startEdge(
    {
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      audit: { arguments: "redacted", sqlite: auditDb, spool: { maxBytes: "24KiB" } },
      servers: {
        github: { route: "/github/mcp", upstream: { urls: [upstream.url] }, auth: ["apiKey"] },
      },
    },
    dir,
  );
  admin = edge.gw.adminUrl;
  keys.acme = await createKey({ name: "acme-ci", tenant: "acme" });
  keys.globex = await createKey({ name: "globex-ci", tenant: "globex" });
  keys.limited = await createKey({ name: "acme-limited", tenant: "acme", tools: ["test_simple_text"] });
  keys.acmeAdmin = await createKey({ name: "acme-admin", tenant: "acme", scopes: ["mcp-edge:admin"] });
});

after(async () => {
  await edge?.stop();
  await upstream?.stop();
});

async function api(p: string, token = ADMIN_TOKEN, method = "GET", body?: unknown) {
  const res = await fetch(`${admin}${p}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, json: (await res.json()) as any };
}

async function createKey(body: Record<string, unknown>): Promise<string> {
  const r = await api("/api/keys", ADMIN_TOKEN, "POST", { server: "github", ...body });
  assert.equal(r.status, 201, JSON.stringify(r.json));
  return r.json.key as string;
}

interface Answer {
  status: number;
  requestId: string;
  body: any;
  sessionId: string | null;
}

function mcp(
  key: string | undefined,
  body: object,
  sessionId?: string,
  extra: Record<string, string> = {},
): Promise<Answer> {
  return mcpPost(edge.url("github"), body, {
    ...(key ? { credential: key } : {}),
    ...(sessionId ? { sessionId } : {}),
    headers: extra,
  });
}

async function initialize(key: string): Promise<string> {
  const r = await mcp(key, {
    jsonrpc: "2.0",
    id: 0,
    method: "initialize",
    params: {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "audit-test", version: "1" },
    },
  });
  assert.equal(r.status, 200);
  const sid = r.sessionId as string;
  await mcp(key, { jsonrpc: "2.0", method: "notifications/initialized" }, sid);
  return sid;
}

let nextId = 1;
function call(
  key: string | undefined,
  sid: string | undefined,
  name: string,
  args: unknown,
  extra?: Record<string, string>,
) {
  return mcp(
    key,
    { jsonrpc: "2.0", id: nextId++, method: "tools/call", params: { name, arguments: args } },
    sid,
    extra,
  );
}

async function records(query = "", token = ADMIN_TOKEN): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  let cursor: string | undefined;
  for (;;) {
    const r = await api(`/api/audit?limit=1000${query}${cursor ? `&cursor=${cursor}` : ""}`, token);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    out.push(...(r.json.records as AuditRecord[]));
    if (!r.json.more) return out;
    cursor = r.json.next;
  }
}

async function byRequest(requestId: string): Promise<AuditRecord[]> {
  return (await records()).filter((r) => r.requestId === requestId);
}

const sha = (s: string) => `sha256:${createHash("sha256").update(s).digest("hex")}`;

describe("audit", () => {
  let sid: string;

  test("(d) an allowed call: every field, from the edge, none from the client", async () => {
    sid = await initialize(keys.acme as string);
    const a = await call(
      keys.acme,
      sid,
      "test_simple_text",
      { q: "hello", tenant: "evil", requestId: "forged", password: "hunter2" },
      { traceparent: `00-${TRACE}-b7ad6b7169203331-01` },
    );
    assert.equal(a.status, 200);
    const [rec, ...more] = await byRequest(a.requestId);
    assert.equal(more.length, 0);
    assert.ok(rec);
    assert.equal(rec.type, "call");
    assert.equal(rec.tenant, "acme");
    assert.equal(rec.subject, "acme-ci");
    assert.ok(rec.keyId && keys.acme?.includes(rec.keyId));
    assert.equal(rec.server, "github");
    assert.equal(rec.method, "tools/call");
    assert.equal(rec.target, "test_simple_text");
    assert.equal(rec.decision, "allowed");
    assert.equal(rec.status, 200);
    assert.equal(rec.traceId, TRACE);
    assert.ok(rec.session && !rec.session.includes(sid));
    assert.ok(typeof rec.latencyMs === "number");
    assert.ok(rec.outcome?.kind === "result");
    // The digest is over the canonical JSON of the arguments as sent (keys sorted).
    assert.equal(
      rec.args?.digest,
      sha('{"password":"hunter2","q":"hello","requestId":"forged","tenant":"evil"}'),
    );
    assert.deepEqual(rec.args?.value, {
      q: "hello",
      tenant: "evil",
      requestId: "forged",
      password: "[REDACTED]",
    });
    const starts = (await records("&type=session.start")).filter((r) => r.tenant === "acme");
    assert.ok(starts.some((r) => r.session === rec.session));
  });

  test("(d) refused calls: 401 bad key, 403 tool forbidden, 404 session", async () => {
    const bad = await call("mcpe_nope_nope", sid, "test_simple_text", {});
    assert.equal(bad.status, 401);
    const [r401] = await byRequest(bad.requestId);
    assert.equal(r401?.decision, "refused");
    assert.equal(r401?.status, 401);
    assert.equal(r401?.code, "EDGE_AUTH_INVALID_TOKEN");
    assert.equal(r401?.type, "request");

    const lsid = await initialize(keys.limited as string);
    const forbidden = await call(keys.limited, lsid, "echo_headers", {});
    assert.equal(forbidden.status, 403);
    const [r403] = await byRequest(forbidden.requestId);
    assert.equal(r403?.decision, "refused");
    assert.equal(r403?.code, "EDGE_TOOL_FORBIDDEN");
    assert.equal(r403?.target, "echo_headers");
    assert.equal(r403?.tenant, "acme");

    const gone = await call(keys.acme, "no-such-session", "test_simple_text", {});
    assert.equal(gone.status, 404);
    const [r404] = await byRequest(gone.requestId);
    assert.equal(r404?.decision, "refused");
    assert.equal(r404?.code, "EDGE_SESSION_NOT_FOUND");
    assert.equal(r404?.target, "test_simple_text");
  });

  test("(d) admin actions are recorded, refused ones too", async () => {
    const adminRecs = await records("&type=admin");
    assert.ok(
      adminRecs.some((r) => r.method === "key.create" && r.tenant === "globex" && r.decision === "allowed"),
    );
    const refused = await api("/api/keys/nope", "wrong-token-wrong-token-wrong-token", "DELETE");
    assert.equal(refused.status, 401);
    const after = await records("&type=admin");
    assert.ok(after.some((r) => r.decision === "refused" && r.detail?.actor === "unauthenticated"));
  });

  test("(e) CR/LF/ANSI/1 MB in tool names and arguments: parseable, bounded, escaped", async () => {
    const nasty = 'evil\r\n{"tenant":"x"}\u001b[31mred\u001b[0m\u2028';
    const big = "A".repeat(1024 * 1024);
    const r = await call(keys.acme, sid, `${nasty}${"n".repeat(5000)}`, { [nasty]: big, list: [nasty] });
    assert.ok(r.status < 500, String(r.status));
    const [rec] = await byRequest(r.requestId);
    assert.ok(rec);
    const text = JSON.stringify(rec);
    assert.ok(text.length < 16 * 1024, `record is ${text.length} bytes`);
    const raw = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
    assert.doesNotMatch(rec.target ?? "", raw);
    assert.ok((rec.target ?? "").startsWith("evil\\u000d\\u000a"));
    assert.match(rec.target ?? "", /…\[\+\d+ chars, sha256:[0-9a-f]{16}\]$/);
    assert.equal(rec.tenant, "acme");
    assert.equal(rec.args?.truncated, true);
    // No raw control character anywhere in the recorded arguments (keys or values).
    const walk = (v: unknown): void => {
      if (typeof v === "string") assert.doesNotMatch(v, raw);
      else if (v && typeof v === "object") {
        for (const [k, x] of Object.entries(v)) {
          assert.doesNotMatch(k, raw);
          walk(x);
        }
      }
    };
    walk(rec.args?.value);
    // Export: one JSON line per record, every line parses; the CLI table holds no raw control bytes.
    let out = "";
    const io = {
      stdout: { write: (s: string) => (out += s) },
      stderr: { write: () => true },
      env: { MCP_EDGE_ADMIN_TOKEN: ADMIN_TOKEN },
    };
    assert.equal(await runAudit(["export", "--url", admin, "--tenant", "acme"], io), 0);
    const lines = out.trim().split("\n");
    assert.ok(lines.length >= 3);
    const exported = lines.map((l) => JSON.parse(l) as AuditRecord);
    assert.ok(exported.some((e) => e.requestId === r.requestId));
    out = "";
    assert.equal(await runAudit(["query", "--url", admin, "--tenant", "acme", "--limit", "1000"], io), 0);
    assert.doesNotMatch(out, /\u001b|\r/);
    assert.ok(out.includes(r.requestId));
  });

  test("(f) a tenant admin sees its own tenant only; naming another is 404", async () => {
    await call(keys.globex, await initialize(keys.globex as string), "test_simple_text", { g: 1 });
    const all = await records();
    assert.ok(all.some((r) => r.tenant === "globex"));
    const mine = await records("", keys.acmeAdmin);
    assert.ok(mine.length > 0);
    assert.ok(
      mine.every((r) => r.tenant === "acme"),
      "only acme records",
    );
    assert.equal((await api("/api/audit?tenant=globex", keys.acmeAdmin)).status, 404);
    const v = await api("/api/audit/verify", keys.acmeAdmin);
    assert.equal(v.status, 200);
    assert.deepEqual(
      v.json.chains.map((c: { chain: string }) => c.chain),
      ["acme"],
    );
    assert.equal((await api("/api/audit", keys.globex)).status, 401, "a plain key is no admin credential");
  });

  test("(c) store locked: records spool; spool full → tools/call 503, tools/list continues; unlocked → nothing lost", async () => {
    const lock = new DatabaseSync(auditDb);
    lock.exec("PRAGMA busy_timeout = 5000; BEGIN EXCLUSIVE");
    const made: string[] = [];
    let refused: Answer | undefined;
    try {
      for (let i = 0; i < 200 && !refused; i++) {
        const r = await call(keys.acme, sid, "test_simple_text", { spool: i, pad: "p".repeat(400) });
        made.push(r.requestId);
        if (r.status === 503) refused = r;
        else assert.equal(r.status, 200);
      }
      assert.ok(refused, "the spool filled up and tools/call was refused");
      assert.equal(refused.body?.error?.data?.code, "EDGE_AUDIT_UNAVAILABLE");
      assert.ok(edge.gw.audit.stats().spooled > 0);
      const list = await mcp(keys.acme, { jsonrpc: "2.0", id: nextId++, method: "tools/list" }, sid);
      assert.equal(list.status, 200, "tools/list is not gated by the audit");
      const partial = await api("/api/audit?limit=1");
      assert.ok(partial.json.pending > 0, "readers are told that records are pending");
    } finally {
      lock.exec("COMMIT");
      lock.close();
    }
    // The store is retried every second; the spool is replayed in order before anything new.
    await waitFor(
      async () => {
        await edge.gw.audit.flush();
        return edge.gw.audit.stats().spooled === 0;
      },
      { what: "the spool to be replayed into the unlocked store", timeout: 10_000, interval: 100 },
    );
    const after = await call(keys.acme, sid, "test_simple_text", { after: true });
    assert.equal(after.status, 200, "tools/call works again");
    const all = await records();
    for (const id of made)
      assert.equal(all.filter((r) => r.requestId === id).length, 1, `one record for ${id}`);
    const refusedRec = all.find((r) => r.requestId === refused?.requestId);
    assert.equal(refusedRec?.code, "EDGE_AUDIT_UNAVAILABLE");
    assert.equal(refusedRec?.decision, "refused");
    const acme = all.filter((r) => r.chain === "acme").map((r) => r.seq);
    assert.deepEqual(
      acme,
      Array.from({ length: acme.length }, (_, i) => i + 1),
      "acme chain in order, no gaps",
    );
    assert.equal((await api("/api/audit/verify")).json.ok, true);
  });

  test("(b) editing or deleting one record in the SQLite file: verify names it (API and CLI)", async () => {
    await edge.gw.audit.flush();
    let io = { out: "" };
    const cli = (args: string[]) =>
      runAudit(args, {
        stdout: { write: (s: string) => (io.out += s) },
        stderr: { write: (s: string) => (io.out += s) },
        env: { MCP_EDGE_ADMIN_TOKEN: ADMIN_TOKEN },
      });
    assert.equal(await cli(["verify", "--url", admin]), 0, io.out);
    assert.match(io.out, /the audit chains hold/);
    const db = new DatabaseSync(auditDb);
    try {
      db.exec("PRAGMA busy_timeout = 5000");
      const row = db
        .prepare("SELECT seq, record FROM audit WHERE chain = 'globex' ORDER BY seq LIMIT 1 OFFSET 1")
        .get() as {
        seq: number;
        record: string;
      };
      db.prepare("UPDATE audit SET record = ? WHERE chain = 'globex' AND seq = ?").run(
        row.record.replace('"decision":"allowed"', '"decision":"refused"'),
        row.seq,
      );
      let v = await api("/api/audit/verify");
      assert.equal(v.json.ok, false);
      const g = v.json.chains.find((c: { chain: string }) => c.chain === "globex");
      assert.equal(g.break.seq, row.seq);
      assert.match(g.break.reason, /altered/);
      assert.equal(v.json.chains.find((c: { chain: string }) => c.chain === "acme").ok, true);
      io = { out: "" };
      assert.equal(await cli(["verify", "--db", auditDb]), 1);
      assert.match(io.out, new RegExp(`at record ${row.seq}: record ${row.seq} was altered`));
      db.prepare("UPDATE audit SET record = ? WHERE chain = 'globex' AND seq = ?").run(row.record, row.seq);
      assert.equal((await api("/api/audit/verify")).json.ok, true);
      // Deleting one record of acme's chain.
      const del = db
        .prepare("SELECT seq FROM audit WHERE chain = 'acme' ORDER BY seq LIMIT 1 OFFSET 3")
        .get() as { seq: number };
      db.prepare("DELETE FROM audit WHERE chain = 'acme' AND seq = ?").run(del.seq);
      v = await api("/api/audit/verify?tenant=acme");
      assert.equal(v.json.ok, false);
      assert.equal(v.json.chains[0].break.seq, del.seq);
      assert.match(v.json.chains[0].break.reason, /missing/);
      io = { out: "" };
      assert.equal(await cli(["verify", "--url", admin, "--tenant", "acme", "--json"]), 1);
      assert.equal(JSON.parse(io.out).chains[0].break.seq, del.seq);
    } finally {
      db.close();
    }
  });
});
