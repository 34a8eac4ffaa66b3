/**
 * Distributed mode for the benchmarks: a Redis key prefix and a PostgreSQL schema unique to one run,
 * a check that the edge really used them (a tree without the distributed wiring starts anyway, in
 * embedded mode, and must not be reported as distributed), and their removal afterwards.
 */
import { Redis } from "ioredis";
import pg from "pg";

export const REDIS_URL = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
export const POSTGRES_URL = process.env.BENCH_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";

export interface DistributedStore {
  redis: { url: string; keyPrefix: string };
  postgres: { url: string; schema: string };
}

/** Stores made by this process and not removed yet (removed on an interruption too). */
const made = new Set<DistributedStore>();
let seq = 0;

/** A prefix and a schema no other run (or test) uses. */
export function uniqueStore(tag: string): DistributedStore {
  const id = `${process.pid}_${Date.now().toString(36)}_${seq++}`;
  const store = {
    redis: { url: REDIS_URL, keyPrefix: `bench:${tag}:${id}:` },
    postgres: { url: POSTGRES_URL, schema: `bench_${tag.replace(/[^a-z0-9]/g, "_")}_${id}`.toLowerCase() },
  };
  made.add(store);
  return store;
}

/** Removes every store this process made and has not removed yet (Ctrl-C, errors). */
export async function removeAllStores(log: (line: string) => void): Promise<void> {
  await Promise.allSettled([...made].map((s) => removeStore(s, log)));
}

function redisClient(): Redis {
  const r = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0 });
  r.on("error", () => undefined);
  return r;
}

/** Undefined when Redis and PostgreSQL answer; otherwise why not. */
export async function servicesDown(): Promise<string | undefined> {
  const r = redisClient();
  try {
    await r.connect();
    await r.ping();
  } catch (err) {
    return `Redis at ${REDIS_URL} does not answer (${(err as Error).message})`;
  } finally {
    r.disconnect();
  }
  const c = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
    await c.query("SELECT 1");
  } catch (err) {
    return `PostgreSQL at ${POSTGRES_URL} does not answer (${(err as Error).message})`;
  } finally {
    await c.end().catch(() => undefined);
  }
  return undefined;
}

/** What the edge wrote: Redis keys under the prefix, tables in the schema. */
export async function usage(s: DistributedStore): Promise<{ redisKeys: number; pgTables: number }> {
  const r = redisClient();
  let redisKeys = 0;
  try {
    await r.connect();
    let cursor = "0";
    do {
      const [next, keys] = await r.scan(cursor, "MATCH", `${s.redis.keyPrefix}*`, "COUNT", 1000);
      cursor = next;
      redisKeys += keys.length;
    } while (cursor !== "0" && redisKeys < 10_000);
  } finally {
    r.disconnect();
  }
  const c = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
    const res = await c.query<{ n: string }>(
      "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = $1",
      [s.postgres.schema],
    );
    return { redisKeys, pgTables: Number(res.rows[0]?.n ?? 0) };
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Deletes every key under the prefix and drops the schema. Never throws (best effort, logged). */
export async function removeStore(s: DistributedStore, log: (line: string) => void): Promise<void> {
  made.delete(s);
  const r = redisClient();
  try {
    await r.connect();
    let cursor = "0";
    let n = 0;
    do {
      const [next, keys] = await r.scan(cursor, "MATCH", `${s.redis.keyPrefix}*`, "COUNT", 1000);
      cursor = next;
      if (keys.length > 0) n += await r.unlink(...keys);
    } while (cursor !== "0");
    if (n > 0) log(`removed ${n} Redis keys under ${s.redis.keyPrefix}`);
  } catch (err) {
    log(`could not remove the Redis keys under ${s.redis.keyPrefix}: ${(err as Error).message}`);
  } finally {
    r.disconnect();
  }
  const c = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS "${s.postgres.schema}" CASCADE`);
  } catch (err) {
    log(`could not drop the PostgreSQL schema ${s.postgres.schema}: ${(err as Error).message}`);
  } finally {
    await c.end().catch(() => undefined);
  }
}
