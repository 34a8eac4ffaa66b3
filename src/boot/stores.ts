import type { DatabaseSync } from "node:sqlite";
import { dirname, join } from "node:path";
import { IdentitySigner } from "../auth/identity.ts";
import { PostgresIdentityKeyStore } from "../store/postgres/identity-keys.ts";
import { SqliteIdentityKeyStore } from "../store/sqlite/identity-keys.ts";
import { AuditLog } from "../audit/log.ts";
import { PostgresAuditStore } from "../store/postgres/audit.ts";
import { argsPolicy } from "../audit/record.ts";
import { SqliteAuditStore } from "../store/sqlite/audit.ts";
import type { Config } from "../config/schema.ts";
import type { Logger } from "../observability/logger.ts";
import { RedisCounterStore } from "../store/redis/counters.ts";
import { RedisEventLog } from "../store/redis/event-log.ts";
import { type Distributed, openDistributed } from "../store/distributed.ts";
import { PostgresApiKeyStore } from "../store/postgres/api-keys.ts";
import { RedisSessionStore } from "../store/redis/sessions.ts";
import { SqliteApiKeyStore } from "../store/sqlite/api-keys.ts";
import { openDatabase } from "../store/sqlite/db.ts";
import { SqliteSessionStore } from "../store/sqlite/sessions.ts";
import type { ApiKeyStore, ConnectionStore, SessionStore } from "../store/types.ts";
import { SqliteConnectionStore } from "../store/sqlite/connections.ts";
import { PostgresConnectionStore } from "../store/postgres/connections.ts";

/**
 * Every store of one instance: embedded (SQLite, memory) or shared with the other instances
 * (distributed mode: Redis and PostgreSQL). Same interfaces either way; nothing above this file
 * knows which.
 */
export interface Stores {
  readonly db: DatabaseSync;
  /** Distributed mode: the Redis client, PostgreSQL pool, broadcast bus and locks. */
  readonly shared: Distributed | undefined;
  readonly sessions: SessionStore;
  readonly keys: ApiKeyStore;
  /** Forgets cached key records (one, or all): a key changed on another instance. */
  readonly forgetKey: (id?: string) => void;
  /** Distributed mode: rate-limit counters in Redis (embedded: the limiter's memory store). */
  readonly counters: RedisCounterStore | undefined;
  /** Distributed mode: stream events mirrored to Redis, so a client resumes on any instance. */
  readonly events: RedisEventLog | undefined;
  readonly identity: IdentitySigner;
  readonly audit: AuditLog;
  /** Users' connections (the token vault's records): SQLite embedded, PostgreSQL distributed. */
  readonly connections: ConnectionStore;
}

/**
 * A session record outlives its idle TTL by a grace period, so the reaper (every idleTtl / 10, at
 * most a minute) finds it and ends the session properly (upstream DELETE, session.end audit)
 * instead of Redis expiring it silently; Redis expiry remains the backstop.
 */
function sessionExpiry(config: Config): (server: string) => number {
  return (server) => {
    const ttl = config.servers[server]?.sessions.idleTtl ?? 86_400_000;
    return ttl + Math.min(ttl, 300_000) + 5000;
  };
}

export async function openStores(config: Config, log: Logger): Promise<Stores> {
  const db = openDatabase(config.store.sqlite);
  // Distributed mode: PostgreSQL must answer at start (migrations); Redis may come later.
  const shared = config.store.redis ? await openDistributed(config.store, log) : undefined;
  const background = (what: string) => (err: unknown) =>
    log.warn({ err: String(err) }, `${what}: background write failed (kept for the next one)`);
  let sessions: SessionStore;
  let keys: ApiKeyStore;
  let forgetKey: (id?: string) => void = () => undefined;
  let counters: RedisCounterStore | undefined;
  let events: RedisEventLog | undefined;
  if (shared) {
    sessions = new RedisSessionStore({
      client: shared.redis,
      keyPrefix: shared.prefix,
      idleTtlMs: sessionExpiry(config),
      onError: background("session activity"),
    });
    const pgKeys = new PostgresApiKeyStore(shared.pg, {
      staleMs: config.store.postgres?.keyStaleness,
      onError: background("key last use"),
      // Revocation everywhere within a second: the other instances drop their copy.
      onChange: (id) => shared.bus.publish({ k: "key", id }),
    });
    keys = pgKeys;
    forgetKey = (id) => pgKeys.invalidate(id);
    counters = new RedisCounterStore({
      client: shared.redis,
      keyPrefix: `${shared.prefix}rl:`,
      fallbackDivisor: shared.instances,
    });
    let lastReport = 0;
    events = new RedisEventLog({
      client: shared.redis,
      keyPrefix: shared.prefix,
      limits: config.streams,
      onError: (err, what) => {
        const now = Date.now();
        if (now - lastReport < 10_000) return;
        lastReport = now;
        log.warn({ err: String(err) }, `stream events: Redis ${what} failed`);
      },
    });
  } else {
    sessions = new SqliteSessionStore(db);
    keys = new SqliteApiKeyStore(db);
  }
  // Identity-signing keys: in distributed mode shared (PostgreSQL), so every instance signs with
  // the same key and publishes the same JWKS.
  const identity = await IdentitySigner.open(
    shared ? new PostgresIdentityKeyStore(shared.pg) : new SqliteIdentityKeyStore(db),
    {
      issuer: config.publicUrl ?? "mcp-edge",
      ttl: 120_000,
      rotateEvery: 7 * 86_400_000,
      onError: (err) => log.warn({ err: String(err) }, "identity keys: store unavailable, retrying"),
    },
  );
  // Audit store: its own connection (short busy timeout, see src/audit/sqlite.ts); chain heads
  // loaded and any spool left by the last run replayed before the first request. Several instances
  // append to the same chains: PostgreSQL chains them (appendChained).
  const ac = config.audit;
  const audit = await AuditLog.open({
    store: shared
      ? new PostgresAuditStore(shared.pg)
      : new SqliteAuditStore(ac.sqlite ?? config.store.sqlite),
    spoolPath: ac.spool.path ?? join(dirname(config.store.sqlite), "audit-spool.jsonl"),
    spoolMaxBytes: ac.spool.maxBytes,
    flushInterval: ac.flushInterval,
    queueMax: ac.queue,
    args: argsPolicy({
      mode: ac.arguments,
      paths: ac.redact.paths,
      patterns: ac.redact.patterns,
      maxString: ac.maxStringLength,
      maxBytes: ac.maxArgumentsBytes,
    }),
    log,
  });
  const connections = shared ? new PostgresConnectionStore(shared.pg) : new SqliteConnectionStore(db);
  return { db, shared, sessions, keys, forgetKey, counters, events, identity, audit, connections };
}

/** Closes the stores, in order, after everything that used them stopped. Never throws. */
export async function closeStores(s: Stores, log: Logger): Promise<void> {
  // Audit: every call has published its end; flush it all (SIGTERM loses nothing).
  await s.audit.close();
  await s.sessions.close().catch((err: unknown) => log.warn({ err: String(err) }, "session store close"));
  await s.keys.close().catch((err: unknown) => log.warn({ err: String(err) }, "key store close"));
  await s.connections
    .close()
    .catch((err: unknown) => log.warn({ err: String(err) }, "connection store close"));
  await s.counters?.close();
  s.identity.close();
  s.db.close();
  await s.shared?.close();
}
