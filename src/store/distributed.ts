/**
 * Distributed mode: what the instances of one fleet share, opened once per process
 * from config `store.redis` + `store.postgres`.
 *
 *   Redis / Valkey   session records and routing (RedisSessionStore), rate-limit counters
 *                    (RedisCounterStore), SSE event buffers (src/store/redis/event-log.ts), the
 *                    broadcast bus below, and short locks (`tryLock`)
 *   PostgreSQL       API keys (PostgresApiKeyStore), audit (PostgresAuditStore), identity keys
 *
 * The bus: one pub/sub channel (`<prefix>bus`) carrying small JSON messages that tell the other
 * instances to drop what they cache: a key changed (revocation, rotation, expiry: reaches every
 * instance well within a second), a session ended or moved to another upstream
 * instance. Messages can be lost while an instance is disconnected from Redis, so every cache they
 * invalidate also has a short bound of its own (key records: 1 s; hot session records: a few
 * seconds), and on reconnect the subscriber reports a `resync` so the caches are cleared at once.
 *
 * Failure: the clients fail fast (`store.redis.commandTimeout`, default 250 ms;
 * `store.postgres.queryTimeout`) and reconnect on their own; each store has a circuit breaker
 * (src/lib/breaker.ts: `store.*.breaker`) that stops waiting on it after repeated timeouts and
 * probes for its return; nothing here needs a restart when Redis or PostgreSQL come back.
 */
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import type { Config } from "../config/schema.ts";
import type { Logger } from "../observability/logger.ts";
import type { BreakerOptions, BreakerState } from "../lib/breaker.ts";
import { openPostgres, type PostgresDb } from "./postgres/db.ts";
import { createRedisClient, guardOf, type RedisGuard } from "./redis/client.ts";

/** A message on the bus. `from` is the sending instance (it has applied the change already). */
export type BusMessage =
  | { k: "key"; id: string; from?: string }
  | { k: "session"; id: string; from?: string }
  | { k: "revoked"; id: string; from?: string }
  | { k: "resync"; from?: string };

type Handler = (m: BusMessage) => void;

/**
 * Cache invalidation across instances over Redis pub/sub. `publish` never throws and never waits
 * on the caller's path: a message that cannot be sent is logged (the receivers' own cache bounds
 * still hold).
 */
export class Bus {
  readonly id = randomBytes(6).toString("base64url");
  readonly #pub: Redis;
  readonly #sub: Redis;
  readonly #channel: string;
  readonly #handlers: Handler[] = [];
  readonly #log: Logger;
  #lastError = 0;
  #wasReady = false;

  constructor(pub: Redis, channel: string, log: Logger) {
    this.#pub = pub;
    this.#channel = channel;
    this.#log = log;
    // A subscribed connection can run nothing else: its own connection, same settings.
    this.#sub = pub.duplicate();
    this.#sub.on("error", () => undefined);
    this.#sub.on("message", (_channel: string, text: string) => this.#receive(text));
    this.#sub.on("ready", () => {
      // Messages sent while this instance was cut off are lost: every receiver drops its caches.
      if (this.#wasReady) this.#emit({ k: "resync" });
      this.#wasReady = true;
    });
  }

  /** Subscribes; resolves once the subscription is active (or after `timeoutMs`, logged). */
  async start(timeoutMs = 3000): Promise<void> {
    try {
      await Promise.race([
        this.#sub.subscribe(this.#channel),
        new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), timeoutMs).unref()),
      ]);
    } catch (err) {
      this.#log.warn({ err: String(err) }, "broadcast bus: subscription not active yet (retrying)");
    }
  }

  on(handler: Handler): void {
    this.#handlers.push(handler);
  }

  publish(m: BusMessage): void {
    const text = JSON.stringify({ ...m, from: this.id });
    this.#pub.publish(this.#channel, text).catch((err: unknown) => {
      const now = Date.now();
      if (now - this.#lastError > 10_000) {
        this.#lastError = now;
        this.#log.warn({ err: String(err), kind: m.k }, "broadcast bus: publish failed");
      }
    });
  }

  #receive(text: string): void {
    let m: BusMessage;
    try {
      m = JSON.parse(text) as BusMessage;
    } catch {
      return;
    }
    if (m.from === this.id) return;
    this.#emit(m);
  }

  #emit(m: BusMessage): void {
    for (const h of this.#handlers) {
      try {
        h(m);
      } catch (err) {
        this.#log.error({ err }, "broadcast bus handler failed");
      }
    }
  }

  close(): void {
    this.#sub.disconnect();
  }
}

/** What the instances of a fleet share. */
export interface Distributed {
  /** Commands (auto-pipelined, short timeout). Shared by the Redis stores. */
  readonly redis: Redis;
  /** The breaker and deadline every Redis store operation runs through. */
  readonly redisGuard: RedisGuard;
  readonly prefix: string;
  readonly pg: PostgresDb;
  readonly bus: Bus;
  /** Assumed fleet size: the local rate-limit fallback allows quota / instances. */
  readonly instances: number;
  /** True while the Redis connection is up (session requests fail closed, fast, when it is not). */
  redisReady(): boolean;
  /**
   * True while the Redis connection is up and its breaker lets calls go: what a new session needs
   * (its record must be stored before the client learns its id).
   */
  redisAvailable(): boolean;
  /**
   * A short lock (SET NX PX): true when this instance got it. For work one instance should do at
   * a time (the idle reaper, re-initializing one session upstream). Never throws: false on failure.
   */
  tryLock(name: string, ttlMs: number): Promise<boolean>;
  close(): Promise<void>;
}

/** `redis://user:secret@host` → `redis://user:***@host`, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparsable URL)";
  }
}

/**
 * Opens Redis and PostgreSQL (migrations at start). PostgreSQL must be reachable at start (503
 * EDGE_STORE_UNAVAILABLE otherwise: an instance cannot check a key without it); Redis may come up
 * later (requests answer 503 until it does).
 */
export async function openDistributed(store: Config["store"], log: Logger): Promise<Distributed> {
  const r = store.redis;
  const p = store.postgres;
  if (!r || !p) throw new Error("distributed mode needs store.redis and store.postgres");
  const pg = await openPostgres(p.url, {
    schema: p.schema,
    max: p.poolSize,
    queryTimeoutMs: p.queryTimeout,
    onError: (err) => log.warn({ err: String(err) }, "PostgreSQL: idle connection lost"),
    breaker: breakerOptions("postgres", p.breaker, log),
  });
  const redis = createRedisClient({
    url: r.url,
    commandTimeoutMs: r.commandTimeout,
    breaker: breakerOptions("redis", r.breaker, log),
  });
  const redisGuard = guardOf(redis);
  const prefix = r.keyPrefix;
  let lastDown = 0;
  redis.on("ready", () => log.info({ redis: redactUrl(r.url) }, "Redis connected"));
  redis.on("close", () => {
    const now = Date.now();
    if (now - lastDown > 10_000) {
      lastDown = now;
      log.warn({ redis: redactUrl(r.url) }, "Redis connection lost (reconnecting)");
    }
  });
  const bus = new Bus(redis, `${prefix}bus`, log);
  await Promise.all([bus.start(), connected(redis, 3000, log)]);
  log.info(
    { redis: redactUrl(r.url), postgres: redactUrl(p.url), schema: p.schema, version: pg.version },
    "distributed mode: shared stores open",
  );
  return {
    redis,
    redisGuard,
    prefix,
    pg,
    bus,
    instances: r.instances,
    redisReady: () => redis.status === "ready",
    redisAvailable: () => redisGuard.available(),
    async tryLock(name, ttlMs) {
      try {
        const set = () => redis.set(`${prefix}lock:${name}`, bus.id, "PX", ttlMs, "NX");
        return (await redisGuard.run(set)) === "OK";
      } catch {
        return false;
      }
    },
    async close() {
      bus.close();
      redis.disconnect();
      await pg.close();
    },
  };
}

/**
 * A store's breaker settings with its log lines: one line when it opens (with the failure that
 * opened it) and one when it closes again; a probe (half-open) is logged at debug.
 */
function breakerOptions(
  store: "redis" | "postgres",
  cfg: { failures: number; openFor: number },
  log: Logger,
): BreakerOptions {
  return {
    failures: cfg.failures,
    openMs: cfg.openFor,
    onChange: (to: BreakerState, from: BreakerState, cause?: unknown) => {
      if (to === "open" && from === "closed") {
        log.warn(
          { store, breaker: to, failures: cfg.failures, openForMs: cfg.openFor, err: String(cause) },
          `${store}: circuit breaker open (calls fail fast; probing every ${cfg.openFor} ms)`,
        );
      } else if (to === "closed") {
        log.info({ store, breaker: to }, `${store}: circuit breaker closed (the store answers again)`);
      } else {
        log.debug(
          { store, breaker: to, err: cause === undefined ? undefined : String(cause) },
          `${store}: circuit breaker ${to}`,
        );
      }
    },
  };
}

/**
 * Waits (at most `timeoutMs`) until the Redis connection is ready, so that an instance does not
 * announce itself ready and then refuse its first session requests because it was still
 * connecting. Redis may still come later: past the wait, requests answer 503 until it does.
 */
async function connected(redis: Redis, timeoutMs: number, log: Logger): Promise<void> {
  if (redis.status === "ready") return;
  let timer: NodeJS.Timeout | undefined;
  let onReady: (() => void) | undefined;
  const ready = await Promise.race([
    new Promise<boolean>((resolve) => {
      onReady = () => resolve(true);
      redis.once("ready", onReady);
    }),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (onReady) redis.off("ready", onReady);
  if (!ready) log.warn({}, "Redis: not connected yet (session requests answer 503 until it is)");
}
