/**
 * The backup and restore recipes of docs/operations.md, as written there:
 * - embedded mode: `VACUUM INTO` through Node's built-in SQLite (the command the docs give for the
 *   container, which has no sqlite3) while the edge runs; a new edge on the copy accepts the key
 *   issued before, and the audit chain of the calls made before verifies;
 * - distributed mode: `pg_dump --format=custom --schema=...`, the schema dropped, `pg_restore`, and
 *   the edge started again on it: same key, same audit chain.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { Client as PgClient } from "pg";
import { connectSdk, whereOf } from "../helpers/cluster/clients.ts";
import { startUpstreams, type Upstream } from "../helpers/cluster/upstream-fleet.ts";
import { until } from "../helpers/wait.ts";
import { type SpawnedEdge, spawnEdge, tempDir } from "../helpers/edge.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { REDIS_URL, redisReady } from "../helpers/redis.ts";
import { NODE_BIN } from "../helpers/spawn.ts";
import { run } from "./podman.ts";

const ADMIN = "backup-test-admin-token-0123456789abcdef0123456789";

let upstreams: Upstream[] = [];
const running: SpawnedEdge[] = [];

before(async () => {
  upstreams = await startUpstreams(["a"]);
});
after(async () => {
  await Promise.allSettled(running.map((e) => e.stop()));
  await Promise.allSettled(upstreams.map((u) => u.stop()));
});

function doc(store: Record<string, unknown>) {
  return {
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN },
    store,
    servers: { app: { route: "/mcp", upstream: { urls: [upstreams[0]?.url as string] }, auth: ["apiKey"] } },
  };
}

async function start(store: Record<string, unknown>, dir: string): Promise<SpawnedEdge> {
  const e = await spawnEdge(doc(store), dir, 60_000);
  running.push(e);
  return e;
}

async function admin(e: SpawnedEdge, method: string, p: string, body?: unknown): Promise<any> {
  const res = await fetch(`${e.adminUrl}${p}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const json = (await res.json()) as unknown;
  assert.ok(res.status < 300, `${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** Two tool calls with `key` through `e`; returns the upstream's call counts. */
async function calls(e: SpawnedEdge, key: string): Promise<number[]> {
  const { client } = await connectSdk(`${e.baseUrl}/mcp`, key, "backup-test");
  try {
    const out = [];
    for (let i = 0; i < 2; i++) out.push(whereOf(await client.callTool({ name: "where", arguments: {} })).n);
    return out;
  } finally {
    await client.close();
  }
}

/** The number of audit records of tools/call `where`, once the edge has flushed `atLeast` of them. */
async function auditedCalls(e: SpawnedEdge, atLeast: number): Promise<number> {
  return until(`${atLeast} audit records`, async () => {
    const r = (await admin(e, "GET", "/api/audit?tool=where")) as { records: unknown[] };
    return r.records.length >= atLeast ? r.records.length : undefined;
  });
}

describe("embedded mode: VACUUM INTO while the edge runs, restore into a new edge", () => {
  test("the copy has the keys and the verified audit chain", async () => {
    const dir = tempDir("mcp-edge-backup-");
    const a = await start({ sqlite: path.join(dir, "mcp-edge.db") }, dir);
    const { key } = (await admin(a, "POST", "/api/keys", { name: "before-backup" })) as { key: string };
    await calls(a, key);
    assert.equal(await auditedCalls(a, 2), 2);

    // docs/operations.md, "Backup and restore": the command for the container, run as is.
    const copy = path.join(dir, "backup.db");
    const backup = await run(NODE_BIN, [
      "-e",
      `new (require('node:sqlite').DatabaseSync)(${JSON.stringify(path.join(dir, "mcp-edge.db"))}).exec("VACUUM INTO '${copy}'")`,
    ]);
    assert.equal(backup.code, 0, backup.stderr);
    await running.splice(running.indexOf(a), 1)[0]?.stop();

    // Restore: a new edge whose store is the copy.
    const dir2 = tempDir("mcp-edge-restore-");
    const b = await start({ sqlite: copy }, dir2);
    const keys = (await admin(b, "GET", "/api/keys")) as { keys: { name: string }[] };
    assert.deepEqual(
      keys.keys.map((k) => k.name),
      ["before-backup"],
    );
    assert.equal(await auditedCalls(b, 2), 2, "the audit records made before the backup");
    assert.equal(((await admin(b, "GET", "/api/audit/verify")) as { ok: boolean }).ok, true);
    // The key still authenticates.
    assert.equal((await calls(b, key)).length, 2);
  });
});

const pgSkip = await postgresSkipReason();
if (pgSkip === undefined && (await redisReady("pg_dump / pg_restore"))) {
  describe("distributed mode: pg_dump, drop, pg_restore", () => {
    const prefix = `mcp-edge-backup-${randomBytes(4).toString("hex")}:`;
    after(async () => {
      await Promise.allSettled(running.map((e) => e.stop()));
      const redis = new Redis(REDIS_URL);
      try {
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length > 0) await redis.del(...keys);
      } finally {
        redis.disconnect();
      }
    });
    const pg = postgresFixture();
    const schema = pg.schema();

    test("the restored schema has the keys and the verified audit chain", async () => {
      const dir = tempDir("mcp-edge-backup-pg-");
      const store = {
        sqlite: path.join(dir, "mcp-edge.db"),
        redis: { url: REDIS_URL, keyPrefix: prefix, instances: 1 },
        postgres: { url: POSTGRES_URL, schema },
      };
      const a = await start(store, dir);
      const { key } = (await admin(a, "POST", "/api/keys", { name: "before-dump" })) as { key: string };
      await calls(a, key);
      assert.equal(await auditedCalls(a, 2), 2);
      await running.splice(running.indexOf(a), 1)[0]?.stop();

      const dump = path.join(dir, "mcp-edge.dump");
      const dumped = await run("pg_dump", [
        "--format=custom",
        `--schema=${schema}`,
        `--file=${dump}`,
        POSTGRES_URL,
      ]);
      assert.equal(dumped.code, 0, dumped.stderr);
      const db = new PgClient({ connectionString: POSTGRES_URL });
      await db.connect();
      try {
        await db.query(`DROP SCHEMA "${schema}" CASCADE`);
      } finally {
        await db.end();
      }
      const restored = await run("pg_restore", [`--dbname=${POSTGRES_URL}`, "--no-owner", dump]);
      assert.equal(restored.code, 0, restored.stderr);

      const b = await start(store, tempDir("mcp-edge-restore-pg-"));
      const keys = (await admin(b, "GET", "/api/keys")) as { keys: { name: string }[] };
      assert.deepEqual(
        keys.keys.map((k) => k.name),
        ["before-dump"],
      );
      assert.equal(await auditedCalls(b, 2), 2);
      assert.equal(((await admin(b, "GET", "/api/audit/verify")) as { ok: boolean }).ok, true);
      assert.equal((await calls(b, key)).length, 2);
    });
  });
} else if (pgSkip !== undefined) {
  process.stderr.write(`\n!! SKIPPING the pg_dump / pg_restore test: ${pgSkip}\n\n`);
}
