/**
 * The Redis / Valkey client every Redis store uses, the guard every store operation runs through,
 * and the error their failures become.
 *
 * One command timeout per operation, counted from when the store issues it. ioredis sends
 * auto-pipelined commands one pipeline at a time per connection, and its own `commandTimeout`
 * starts when a command is written: behind a pipeline that Redis does not answer, a command would
 * wait for that pipeline's timeout, then its own (two timeouts, ~500 ms at 250 ms). So the
 * guard's deadline starts at the call; the per-command timer armed at the write (below) only frees
 * the connection's pipeline queue, and is not ioredis's (it would fire late after an event-loop
 * stall and fail a command whose answer is already on the socket: see src/lib/breaker.ts).
 *
 * After repeated timeouts the guard's breaker opens: operations fail at once (sessions: 503 with
 * Retry-After; rate limits: the local fallback) and one probe at a time tests whether Redis is back.
 */
import { type Command, Redis, type RedisOptions, ReplyError } from "ioredis";
import { GatewayError } from "../../errors/errors.ts";
import { Breaker, BreakerOpenError, type BreakerOptions, deadlineTimer } from "../../lib/breaker.ts";

/** Connection options shared by the Redis stores (config `store.redis`). */
export interface RedisConnectionOptions {
  /** `redis://[user:pass@]host:port[/db]` or `rediss://` for TLS. */
  url: string;
  /** Per-operation timeout in ms (queued commands included). Default 100. */
  commandTimeoutMs?: number;
  /** Longest wait between reconnect attempts in ms. Default 1000. */
  maxReconnectDelayMs?: number;
  /** The breaker of this connection (consecutive failures, open time, state changes). */
  breaker?: BreakerOptions;
}

/** What runs every store operation on one Redis connection: its breaker and its deadline. */
export class RedisGuard {
  readonly client: Redis;
  readonly timeoutMs: number;
  readonly breaker: Breaker;

  constructor(client: Redis, timeoutMs: number, breaker: BreakerOptions = {}) {
    this.client = client;
    this.timeoutMs = timeoutMs;
    this.breaker = new Breaker("redis", breaker);
  }

  /**
   * `op` (one or more commands issued now) under the breaker and one command timeout. Rejects with
   * what Redis answered (a ReplyError: not a failure of Redis), a timeout, a connection error, or
   * BreakerOpenError without trying.
   */
  run<T>(op: () => Promise<T>): Promise<T> {
    return this.breaker.run(op, { timeoutMs: this.timeoutMs, isFailure: isRedisFailure });
  }

  /** Whether an operation would be tried now: connected, and the breaker lets calls (or a probe) go. */
  available(): boolean {
    return this.client.status === "ready" && this.breaker.admits();
  }
}

/** Redis answered with an error (a script error, a wrong type): it is up. Anything else is a failure. */
function isRedisFailure(err: unknown): boolean {
  return !(err instanceof ReplyError);
}

/** The guard of each client made here (a client given to a store from elsewhere gets its own). */
const guards = new WeakMap<Redis, RedisGuard>();

/**
 * The guard of `client`: the one it was made with, or for a client made elsewhere a new one whose
 * deadline is the client's own `commandTimeout` (1 s when it has none).
 */
export function guardOf(client: Redis): RedisGuard {
  let g = guards.get(client);
  if (g === undefined) {
    g = new RedisGuard(client, client.options.commandTimeout ?? 1000);
    guards.set(client, g);
  }
  return g;
}

/**
 * An ioredis client for the edge's stores: quick reconnects, no retry of a command that failed
 * (the caller decides: 503 for sessions, local fallback for limits), and its guard (`guardOf`).
 */
export function createRedisClient(options: RedisConnectionOptions): Redis {
  const maxDelay = options.maxReconnectDelayMs ?? 1000;
  const timeoutMs = options.commandTimeoutMs ?? 100;
  const redisOptions: RedisOptions = {
    connectTimeout: 2000,
    // A command queued while disconnected fails by its own timeout; it is not replayed later.
    maxRetriesPerRequest: 0,
    retryStrategy: (times) => Math.min(times * 50, maxDelay),
    enableAutoPipelining: true,
  };
  const client = new Redis(options.url, redisOptions);
  // Errors reach the callers through their commands; an unhandled 'error' event would crash.
  client.on("error", () => undefined);
  armWrites(client, timeoutMs);
  guards.set(client, new RedisGuard(client, timeoutMs, options.breaker));
  return client;
}

/**
 * Each command written on `client` fails once `ms` have passed without its answer (`deadlineTimer`:
 * loop stalls do not count), so a pipeline Redis never answers does not hold the ones behind it.
 * A command goes through `sendCommand` again when the offline queue is flushed: armed once.
 */
function armWrites(client: Redis, ms: number): void {
  const send = client.sendCommand.bind(client);
  const armed = new WeakSet<Command>();
  client.sendCommand = (command: Command, stream?: Parameters<Redis["sendCommand"]>[1]) => {
    if (!armed.has(command)) {
      armed.add(command);
      const cancel = deadlineTimer(ms, () => {
        if (!command.isResolved) command.reject(new Error("Command timed out"));
      });
      command.promise.then(cancel, cancel);
    }
    return send(command, stream);
  };
}

/** The error every failed store operation becomes (the session store fails closed). */
export function storeUnavailable(cause: unknown): GatewayError {
  if (cause instanceof GatewayError) return cause;
  // Open breaker: Retry-After says when the next probe may go (otherwise the code's default).
  const headers: Record<string, string> =
    cause instanceof BreakerOpenError ? { "retry-after": String(Math.ceil(cause.retryAfterMs / 1000)) } : {};
  return new GatewayError("EDGE_STORE_UNAVAILABLE", undefined, { cause, headers });
}
