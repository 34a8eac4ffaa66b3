/** The Redis / Valkey client every Redis store uses, and the error their failures become. */
import { Redis, type RedisOptions } from "ioredis";
import { GatewayError } from "../../errors/errors.ts";

/** Connection options shared by the Redis stores (config `store.redis`). */
export interface RedisConnectionOptions {
  /** `redis://[user:pass@]host:port[/db]` or `rediss://` for TLS. */
  url: string;
  /** Per-command timeout in ms (queued commands included). Default 100. */
  commandTimeoutMs?: number;
  /** Longest wait between reconnect attempts in ms. Default 1000. */
  maxReconnectDelayMs?: number;
}

/**
 * An ioredis client for the edge's stores: short command timeout, quick reconnects, no retry of a
 * command that failed (the caller decides: 503 for sessions, local fallback for limits).
 */
export function createRedisClient(options: RedisConnectionOptions): Redis {
  const maxDelay = options.maxReconnectDelayMs ?? 1000;
  const redisOptions: RedisOptions = {
    commandTimeout: options.commandTimeoutMs ?? 100,
    connectTimeout: 2000,
    // A command queued while disconnected fails by its own timeout; it is not replayed later.
    maxRetriesPerRequest: 0,
    retryStrategy: (times) => Math.min(times * 50, maxDelay),
    enableAutoPipelining: true,
  };
  const client = new Redis(options.url, redisOptions);
  // Errors reach the callers through their commands; an unhandled 'error' event would crash.
  client.on("error", () => undefined);
  return client;
}

/** The error every failed store operation becomes (the session store fails closed). */
export function storeUnavailable(cause: unknown): GatewayError {
  return cause instanceof GatewayError
    ? cause
    : new GatewayError("EDGE_STORE_UNAVAILABLE", undefined, { cause });
}
