/**
 * Audit in distributed mode against a real PostgreSQL: AuditLog over
 * PostgresAuditStore chains on the store side, so several edge processes can write the same
 * tenant chains.
 *
 * - two AuditLogs, each with its own pool (two processes), writing the same chains at once: the
 *   chains verify and every record is stored once;
 * - PostgreSQL out of reach mid-run (a TCP proxy in front of it stopped: connections refused and
 *   cut), hung (the append lock held by another session past the statement timeout) and its
 *   connections killed (pg_terminate_backend): records spool unchained, are replayed after what
 *   the other instance stored meanwhile, nothing is lost or doubled, the chains verify;
 * - a commit whose answer was lost: the retry stores each record once (write keys);
 * - the admin API's audit routes and `mcp-edge audit verify|query|export|tail -c FILE` on
 *   PostgreSQL.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import path from "node:path";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { Client } from "pg";
import { auditRoute } from "../../src/audit/api.ts";
import { verifyChains } from "../../src/audit/chain.ts";
import { AuditLog } from "../../src/audit/log.ts";
import { PostgresAuditStore } from "../../src/store/postgres/audit.ts";
import { argsPolicy, type AuditDraft, type AuditRecord, type FinalRecord } from "../../src/audit/record.ts";
import type { AppendChainedOptions, ChainedRecord } from "../../src/store/types.ts";
import { runAudit } from "../../src/cli/audit.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { LOCK_NAMESPACE, openPostgres, type PostgresDb } from "../../src/store/postgres/db.ts";
import { tempDir } from "../helpers/edge.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { waitForExit } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const pg = postgresFixture();
const skip = await postgresSkipReason();

const log = createLogger({
  level: "silent",
  destination: new Writable({ write: (_c, _e, cb) => cb() }),
});

let clock = Date.parse("2026-03-01T00:00:00Z");

function draft(id: string, tenant: string | null = "acme"): AuditDraft {
  clock += 1;
  return {
    time: new Date(clock).toISOString(),
    type: "call",
    tenant,
    subject: "ci",
    principal: `key:github:${tenant}:ci`,
    auth: "apiKey",
    clientId: null,
    keyId: "k1",
    session: null,
    server: "github",
    instance: null,
    method: "tools/call",
    target: "search",
    rpcId: "1",
    decision: "allowed",
    code: null,
    status: 200,
    outcome: { kind: "result", isError: false },
    latencyMs: 1,
    upstreamMs: 1,
    requestId: id,
    traceId: null,
    detail: null,
    rawArgs: { q: id },
  };
}

async function openLog(db: PostgresDb, store = new PostgresAuditStore(db), spoolPath?: string) {
  return AuditLog.open({
    store,
    spoolPath: spoolPath ?? path.join(tempDir(), "audit-spool.jsonl"),
    flushInterval: 20,
    retryInterval: 50,
    args: argsPolicy({ mode: "digest" }),
    log,
  });
}

/** Every stored record, by request id, read from a separate pool. */
async function storedRecords(schema: string): Promise<AuditRecord[]> {
  const reader = new PostgresAuditStore(await pg.open(schema));
  const out: AuditRecord[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await reader.query({}, { limit: 1000, ...(cursor !== undefined ? { cursor } : {}) });
    out.push(...page.records);
    if (!page.more) return out;
    cursor = page.next ?? undefined;
  }
}

function assertEachOnce(records: AuditRecord[], ids: string[]): void {
  const counts = new Map<string, number>();
  for (const r of records) counts.set(r.requestId ?? "", (counts.get(r.requestId ?? "") ?? 0) + 1);
  const missing = ids.filter((id) => !counts.has(id));
  const doubled = [...counts].filter(([, n]) => n > 1).map(([id]) => id);
  assert.deepEqual({ missing, doubled }, { missing: [], doubled: [] });
  assert.equal(records.length, ids.length);
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  await waitFor(cond, { what, timeout: ms });
}

/** A TCP proxy in front of PostgreSQL: stopping it refuses new connections and cuts open ones. */
class PgProxy {
  readonly #target = new URL(POSTGRES_URL);
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  port = 0;

  get url(): string {
    const u = new URL(POSTGRES_URL);
    u.hostname = "127.0.0.1";
    u.port = String(this.port);
    return u.toString();
  }

  async start(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(Number(this.#target.port || 5432), this.#target.hostname);
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on("close", () => this.#sockets.delete(s));
        s.on("error", () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.#server = server;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const s of this.#sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** A side connection (as an operator's psql would be). */
async function side(): Promise<Client> {
  const c = new Client({ connectionString: POSTGRES_URL });
  await c.connect();
  return c;
}

if (skip !== undefined) {
  test("audit on PostgreSQL", { skip }, () => {});
} else {
  test("two AuditLogs (two pools, as two processes) write the same tenant chains at once: verify passes, each record once", async () => {
    const schema = pg.schema();
    const dbs = [await pg.open(schema), await pg.open(schema)];
    const logs = await Promise.all(dbs.map((db) => openLog(db)));
    const tenants = ["acme", "globex", null];
    const ids: string[] = [];
    await Promise.all(
      logs.map(async (audit, w) => {
        for (let i = 0; i < 400; i++) {
          const id = `w${w}-${i}`;
          ids.push(id);
          audit.enqueue(draft(id, tenants[i % 3] ?? null));
          if (i % 25 === 0) await sleep(1 + w); // bursts, flushed by the 20 ms timers and by hand
          if (i % 60 === 0) await audit.flush();
        }
      }),
    );
    for (const audit of logs) {
      const report = await audit.verify();
      assert.equal(report.ok, true, JSON.stringify(report.chains.filter((c) => !c.ok)));
      assert.equal(report.pending, 0);
    }
    const stats = logs.map((l) => l.stats());
    assert.deepEqual(
      stats.map((s) => s.written),
      [400, 400],
    );
    for (const audit of logs) await audit.close();
    const records = await storedRecords(schema);
    assertEachOnce(records, ids);
    const acme = records.filter((r) => r.chain === "acme");
    const writers = acme.map((r) => r.requestId?.slice(0, 2));
    assert.ok(
      writers.some((w, i) => i > 0 && w !== writers[i - 1]),
      "the two processes' records interleave in one chain",
    );
    const report = await verifyChains(new PostgresAuditStore(await pg.open(schema)));
    assert.equal(report.ok, true);
    assert.deepEqual(
      report.chains.map((c) => [c.chain, c.records]),
      [
        ["", 266],
        ["acme", 268],
        ["globex", 266],
      ],
    );
  });

  test("PostgreSQL out of reach mid-run (proxy stopped): unchained records spool, replay after the other instance's, nothing lost", async (t) => {
    const schema = pg.schema();
    const proxy = new PgProxy();
    await proxy.start();
    const direct = await pg.open(schema);
    // The pool reached PostgreSQL through the proxy; the proxy is gone now: closing it is immediate.
    const viaProxy = pg.track(
      await openPostgres(proxy.url, {
        schema,
        max: 4,
        connectTimeoutMs: 1000,
        queryTimeoutMs: 2000,
        onError: () => undefined,
      }),
    );
    const spoolPath = path.join(tempDir(), "a-spool.jsonl");
    const a = await openLog(viaProxy, undefined, spoolPath);
    const b = await openLog(direct);
    const ids: string[] = [];
    let sawSpool = "";
    t.after(() => proxy.stop());
    for (let i = 0; i < 240; i++) {
      for (const [name, audit] of [
        ["a", a],
        ["b", b],
      ] as const) {
        const id = `${name}${i}`;
        ids.push(id);
        audit.enqueue(draft(id, i % 2 ? "acme" : "globex"));
      }
      if (i === 60) await proxy.stop();
      if (i === 150) {
        await until("a spooled", () => a.stats().spooled > 0);
        assert.equal(a.stats().storeUp, false);
        assert.equal(a.accepting(), true, "spool below its cap: calls still run");
        sawSpool = readFileSync(spoolPath, "utf8");
        await proxy.start();
      }
      await sleep(2); // the writers' pace, so that the outage falls in the middle of the run
    }
    await until("a's spool replayed", () => a.stats().spooled === 0 && a.stats().storeUp);
    // While PostgreSQL was away the spool held finalized records, not chained ones.
    const lines = sawSpool
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { key?: string; final?: FinalRecord; hash?: string });
    assert.ok(lines.length > 0);
    for (const l of lines) {
      assert.equal(typeof l.key, "string");
      assert.equal(l.hash, undefined);
      assert.equal((l.final as unknown as { seq?: number }).seq, undefined);
    }
    for (const audit of [a, b]) {
      const report = await audit.verify();
      assert.equal(
        report.ok,
        true,
        `${audit === a ? "a" : "b"}: ${JSON.stringify(report.chains.filter((c) => !c.ok))} ${JSON.stringify(audit.stats())}`,
      );
    }
    await a.close();
    await b.close();
    assert.equal(readFileSync(spoolPath, "utf8"), "", "spool emptied");
    const records = await storedRecords(schema);
    assertEachOnce(records, ids);
    // The spooled records come after what b stored meanwhile, in a's own order.
    const aOrder = records
      .filter((r) => r.requestId?.startsWith("a"))
      .map((r) => Number(r.requestId?.slice(1)));
    assert.deepEqual(
      aOrder,
      [...aOrder].sort((x, y) => x - y),
    );
    // (The first spooled batch may have been committed already: its answer was cut. The last one
    // was written while the proxy was down.)
    const lastSpooled = lines.at(-1)?.final?.requestId;
    const at = records.findIndex((r) => r.requestId === lastSpooled);
    assert.ok(
      records.slice(0, at).some((r) => r.requestId?.startsWith("b") && Number(r.requestId.slice(1)) > 70),
      "b kept writing while a was cut off; a's spooled records follow",
    );
  });

  test("PostgreSQL hung (append lock held elsewhere past the statement timeout), then its connections killed: spool, replay, chain verifies", async () => {
    const schema = pg.schema();
    const db = pg.track(
      await openPostgres(POSTGRES_URL, { schema, max: 3, queryTimeoutMs: 300, onError: () => undefined }),
    );
    const spoolPath = path.join(tempDir(), "spool.jsonl");
    const audit = await openLog(db, undefined, spoolPath);
    const ids: string[] = [];
    const write = async (n: number, prefix: string) => {
      for (let i = 0; i < n; i++) {
        ids.push(`${prefix}${i}`);
        audit.enqueue(draft(`${prefix}${i}`));
      }
      await audit.flush();
    };
    await write(20, "before");
    const op = await side();
    try {
      // Another session holds the append lock: every append waits, then fails at the timeout.
      await op.query("SELECT pg_advisory_lock($1, hashtext($2))", [
        LOCK_NAMESPACE,
        `audit-append:"${schema}"`,
      ]);
      const t0 = Date.now();
      await write(10, "hung");
      assert.ok(Date.now() - t0 < 2000, "the flush gave up at the statement timeout");
      assert.equal(audit.stats().storeUp, false);
      assert.equal(audit.stats().spooled, 10);
      await write(5, "queued");
      assert.equal(audit.stats().spooled, 15);
      await op.query("SELECT pg_advisory_unlock($1, hashtext($2))", [
        LOCK_NAMESPACE,
        `audit-append:"${schema}"`,
      ]);
      // Now kill the pool's connections (their pids: every connection of the pool, busy at once).
      const pids = await Promise.all(
        [0, 1, 2].map(
          async () =>
            (await db.pool.query<{ pid: number }>("SELECT pg_backend_pid() AS pid, pg_sleep(0.05)")).rows[0]
              ?.pid,
        ),
      );
      const killed = await op.query<{ n: number }>(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM unnest($1::int[]) AS pid",
        [[...new Set(pids)]],
      );
      assert.ok((killed.rows[0]?.n ?? 0) > 0, "killed the pool's connections");
      // A moment for the terminated backends' closes to reach the pool: no event marks it (the
      // pool's 'error' fires for some of its idle clients only, not dependably for all).
      await sleep(50);
      await write(10, "after");
      await until("spool replayed", async () => {
        await audit.flush();
        return audit.stats().spooled === 0 && audit.stats().queued === 0;
      });
    } finally {
      await op.end();
    }
    const report = await audit.verify();
    assert.equal(report.ok, true, JSON.stringify(report));
    await audit.close();
    const records = await storedRecords(schema);
    assertEachOnce(records, ids);
    assert.deepEqual(
      records.map((r) => r.requestId),
      ids,
      "in order",
    );
    assert.deepEqual(
      records.map((r) => r.seq),
      ids.map((_, i) => i + 1),
    );
  });

  test("a commit whose answer was lost: the record is retried and stored once (write keys)", async () => {
    class LosesAnswer extends PostgresAuditStore {
      lose = 0;
      override async appendChained(
        records: readonly FinalRecord[],
        options?: AppendChainedOptions,
      ): Promise<ChainedRecord[]> {
        const out = await super.appendChained(records, options);
        if (this.lose > 0) {
          this.lose--;
          throw new GatewayError(
            "EDGE_STORE_UNAVAILABLE",
            "PostgreSQL is unavailable (connection lost at COMMIT).",
          );
        }
        return out;
      }
    }
    const schema = pg.schema();
    const db = await pg.open(schema);
    for (const spooled of [true, false]) {
      const store = new LosesAnswer(db);
      const audit = await AuditLog.open({
        store,
        ...(spooled ? { spoolPath: path.join(tempDir(), "spool.jsonl") } : {}),
        flushInterval: 60_000,
        retryInterval: 0,
        args: argsPolicy({ mode: "digest" }),
        log,
      });
      const ids = Array.from({ length: 5 }, (_, i) => `${spooled ? "s" : "m"}${i}`);
      for (const id of ids.slice(0, 3)) audit.enqueue(draft(id));
      store.lose = 1;
      await audit.flush();
      assert.equal(audit.stats().storeUp, false);
      for (const id of ids.slice(3)) audit.enqueue(draft(id));
      await audit.flush();
      assert.equal(audit.stats().spooled + audit.stats().queued, 0);
      assert.equal((await audit.verify()).ok, true);
      await audit.close();
      const mine = (await storedRecords(schema)).filter((r) => r.requestId?.startsWith(spooled ? "s" : "m"));
      assertEachOnce(mine, ids);
    }
  });

  test("admin API audit routes and `mcp-edge audit -c FILE` (verify, query, export, tail) read PostgreSQL", async () => {
    const schema = pg.schema();
    const db = await pg.open(schema);
    const audit = await openLog(db);
    for (let i = 0; i < 6; i++) audit.enqueue(draft(`r${i}`, i % 2 ? "globex" : "acme"));
    // api.ts: tenant-scoped query, verify.
    const page = (await auditRoute(audit, [], new URLSearchParams({ limit: "10" }), "acme")) as {
      records: AuditRecord[];
      pending: number;
    };
    assert.deepEqual(
      page.records.map((r) => r.requestId),
      ["r0", "r2", "r4"],
    );
    assert.equal(page.pending, 0);
    const verified = (await auditRoute(audit, ["verify"], new URLSearchParams(), undefined)) as {
      ok: boolean;
      chains: { chain: string; records: number }[];
    };
    assert.equal(verified.ok, true);
    assert.deepEqual(
      verified.chains.map((c) => [c.chain, c.records]),
      [
        ["acme", 3],
        ["globex", 3],
      ],
    );
    await audit.close();

    // The CLI, from a config naming the PostgreSQL store.
    const dir = tempDir();
    const config = path.join(dir, "mcp-edge.yaml");
    writeFileSync(
      config,
      JSON.stringify({
        store: {
          sqlite: path.join(dir, "edge.db"),
          redis: { url: "redis://127.0.0.1:6379" },
          postgres: { url: "${PG_URL}", schema },
        },
        servers: {
          github: { route: "/github/mcp", upstream: { urls: ["http://127.0.0.1:9/mcp"] }, auth: ["apiKey"] },
        },
      }),
    );
    const env = { PG_URL: POSTGRES_URL };
    const cli = async (args: string[]) => {
      const io = { out: "", err: "" };
      const code = await runAudit(args, {
        stdout: { write: (s: string) => (io.out += s) },
        stderr: { write: (s: string) => (io.err += s) },
        env,
      });
      return { code, ...io };
    };
    let r = await cli(["verify", "-c", config]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /the audit chains hold/);
    r = await cli(["verify", "-c", config, "--json", "--tenant", "globex"]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(
      (JSON.parse(r.out) as { chains: { chain: string }[] }).chains.map((c) => c.chain),
      ["globex"],
    );
    r = await cli(["query", "-c", config, "--tenant", "acme", "--json"]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(
      (JSON.parse(r.out) as { records: AuditRecord[] }).records.map((x) => x.requestId),
      ["r0", "r2", "r4"],
    );
    const out = path.join(dir, "export.jsonl");
    r = await cli(["export", "-c", config, "--out", out]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(
      readFileSync(out, "utf8")
        .trim()
        .split("\n")
        .map((l) => (JSON.parse(l) as AuditRecord).requestId),
      ["r0", "r1", "r2", "r3", "r4", "r5"],
    );
    assert.equal((await cli(["verify", "-c", config, "--db", "x.db"])).code, 2, "one source");

    // A record edited in the table: verify names it and exits 1.
    const op = await side();
    try {
      await op.query(
        `UPDATE "${schema}".audit SET record = replace(record, '"decision":"allowed"', '"decision":"refused"')
         WHERE chain = 'globex' AND seq = 2`,
      );
    } finally {
      await op.end();
    }
    r = await cli(["verify", "-c", config]);
    assert.equal(r.code, 1);
    assert.match(r.out, /at record 2: record 2 was altered/);

    // tail: the last records, then new ones as another process writes them (a real process, Ctrl-C).
    const child = spawn(
      process.execPath,
      [
        "src/main.ts",
        "audit",
        "tail",
        "-c",
        config,
        "--json",
        "-n",
        "2",
        "--interval",
        "100",
        "--tenant",
        "acme",
      ],
      { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let tailed = "";
    let errText = "";
    child.stdout.on("data", (d: Buffer) => (tailed += d.toString()));
    child.stderr.on("data", (d: Buffer) => (errText += d.toString()));
    const ids = () =>
      tailed
        .trim()
        .split("\n")
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as AuditRecord).requestId);
    try {
      await until("tail shows the last 2", () => ids().length >= 2, 15_000);
      assert.deepEqual(ids(), ["r2", "r4"]);
      const writer = await openLog(await pg.open(schema));
      writer.enqueue(draft("new-acme", "acme"));
      writer.enqueue(draft("new-globex", "globex"));
      await writer.close();
      await until("tail follows", () => ids().length >= 3, 15_000);
      await sleep(300); // under test: the other tenant's record never shows
      assert.deepEqual(ids(), ["r2", "r4", "new-acme"]);
    } finally {
      child.kill("SIGINT");
      const code = await waitForExit(child, 10_000);
      assert.equal(code, 0, errText);
    }
  });
}
