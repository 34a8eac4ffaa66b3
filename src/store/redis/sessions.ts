/**
 * Session records in Redis / Valkey (distributed mode), through ioredis.
 *
 * Keys, all under `keyPrefix` (default `mcp-edge:`):
 *   s:<id>              hash: the record (`d` JSON of the fixed fields, `up` upstream JSON, `pv`
 *                       protocol version, `seen` lastSeenAt, `srv` server, `ttl` idle TTL in ms);
 *                       expires after the route's idle TTL, refreshed by `touch`
 *   bind                hash id -> JSON [server, instance]: what `count:<server>` counts, per id
 *   count:<server>      hash instance -> number of sessions (least-loaded placement)
 *   idle:<server>       sorted set id by lastSeenAt (the idle reaper)
 *   created             sorted set id by createdAt (admin list, every server)
 *   created:<server>    sorted set id by createdAt (admin list, one server)
 *
 * Every write is one Lua script, so the record, `bind`, the counts and the indexes change together
 * (no count drifts when an instance dies between two commands). A record key that expired on its own
 * leaves its `bind` entry and index members behind; `listIdle` and `list` find those (the expiry
 * puts them below the reaper's cutoff) and clean them in the same script as `delete`, which is what
 * brings the counts back.
 *
 * Scripts build key names from the prefix, so all keys must live on one node: on Redis Cluster use
 * a prefix with a hash tag (`{mcp-edge}:`), which puts every key in one slot.
 *
 * Failure (the session store fails closed): every round trip runs through the connection's guard
 * (src/store/redis/client.ts: one command timeout from the call, `commandTimeoutMs`, default
 * 100 ms; a breaker that fails calls at once after repeated timeouts), and any failure surfaces as
 * GatewayError EDGE_STORE_UNAVAILABLE (503 + Retry-After), never as "no such session" (a 404 would
 * make every client re-initialize at once). The client reconnects on its own; the store needs no
 * restart.
 */
import { Redis } from "ioredis";
import type { SessionRecord, SessionStore, UpstreamBinding } from "../types.ts";
import {
  createRedisClient,
  guardOf,
  type RedisConnectionOptions,
  type RedisGuard,
  storeUnavailable,
} from "./client.ts";

// Keys come from ARGV[1] (the prefix) so that one script can reach another server's keys when a put
// moves a session between servers. `unbind` removes id's counted binding and index members.
const LIB = `
local P = ARGV[1]
local function unbind(id)
  local b = redis.call('HGET', P .. 'bind', id)
  if not b then return end
  local sv = cjson.decode(b)
  local n = redis.call('HINCRBY', P .. 'count:' .. sv[1], sv[2], -1)
  if n <= 0 then redis.call('HDEL', P .. 'count:' .. sv[1], sv[2]) end
  redis.call('HDEL', P .. 'bind', id)
  redis.call('ZREM', P .. 'idle:' .. sv[1], id)
  redis.call('ZREM', P .. 'created:' .. sv[1], id)
  redis.call('ZREM', P .. 'created', id)
end
local function bind(id, server, instance)
  redis.call('HSET', P .. 'bind', id, cjson.encode({server, instance}))
  redis.call('HINCRBY', P .. 'count:' .. server, instance, 1)
end
`;

/** KEYS[1] record; ARGV prefix, id, server, instance, d, up, pv, seen, createdAt, ttlMs. */
const PUT = `${LIB}
local id, server, instance = ARGV[2], ARGV[3], ARGV[4]
unbind(id)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'd', ARGV[5], 'up', ARGV[6], 'pv', ARGV[7], 'seen', ARGV[8], 'srv', server, 'ttl', ARGV[10])
redis.call('PEXPIRE', KEYS[1], ARGV[10])
bind(id, server, instance)
redis.call('ZADD', P .. 'idle:' .. server, ARGV[8], id)
redis.call('ZADD', P .. 'created:' .. server, ARGV[9], id)
redis.call('ZADD', P .. 'created', ARGV[9], id)
return 1
`;

/** KEYS[1] record; ARGV prefix, id, instance, up, pv. A missing record is left missing. */
const REBIND = `${LIB}
local server = redis.call('HGET', KEYS[1], 'srv')
if not server then return 0 end
local id = ARGV[2]
local created = redis.call('ZSCORE', P .. 'created', id)
local seen = redis.call('HGET', KEYS[1], 'seen')
unbind(id)
bind(id, server, ARGV[3])
redis.call('ZADD', P .. 'idle:' .. server, seen, id)
if created then
  redis.call('ZADD', P .. 'created:' .. server, created, id)
  redis.call('ZADD', P .. 'created', created, id)
end
redis.call('HSET', KEYS[1], 'up', ARGV[4], 'pv', ARGV[5])
return 1
`;

/**
 * KEYS: records; ARGV: prefix, then per record: id, at. Moves each lastSeenAt forward (never back)
 * and restarts its idle TTL; a record that is gone is skipped. Many sessions per call: a flush is
 * one command per TOUCH_BATCH sessions, not one per session.
 */
const TOUCH = `
local P = ARGV[1]
for i = 1, #KEYS do
  local r = redis.call('HMGET', KEYS[i], 'srv', 'seen', 'ttl')
  if r[1] then
    local at = ARGV[2 * i + 1]
    if tonumber(at) > tonumber(r[2]) then
      redis.call('HSET', KEYS[i], 'seen', at)
      redis.call('ZADD', P .. 'idle:' .. r[1], at, ARGV[2 * i])
    end
    redis.call('PEXPIRE', KEYS[i], r[3])
  end
end
return 1
`;

/** Sessions per touch script (bounds the time one script holds Redis: ~5 µs per session). */
const TOUCH_BATCH = 256;

/** KEYS[1] record; ARGV prefix, id. Returns 1 when the record was there. */
const DELETE = `${LIB}
local existed = redis.call('DEL', KEYS[1])
unbind(ARGV[2])
return existed
`;

interface SessionCommands {
  mcpeSessionPut(key: string, ...args: (string | number)[]): Promise<number>;
  mcpeSessionRebind(key: string, ...args: string[]): Promise<number>;
  mcpeSessionTouch(numKeys: number, ...args: (string | number)[]): Promise<number>;
  mcpeSessionDelete(key: string, prefix: string, id: string): Promise<number>;
}

type Pipelined = { [K in keyof SessionCommands]: (...args: Parameters<SessionCommands[K]>) => unknown };

export interface RedisSessionStoreOptions {
  /** A client to use (shared with other stores; not closed by `close`), or how to make one. */
  client: Redis | RedisConnectionOptions;
  /** Prefix of every key. Default `mcp-edge:`. */
  keyPrefix?: string;
  /**
   * A session's idle TTL in ms, per server (`servers.<name>.sessions.idleTtl`): its record expires
   * that long after its last write or touch. Default 24 h.
   */
  idleTtlMs?: number | ((server: string) => number);
  /** How often pending touches are written, in ms (one round trip, one command per 256). Default 1000. */
  touchFlushMs?: number;
  /** Called when a background touch flush fails (the touches are kept for the next one). */
  onError?: (err: unknown) => void;
}

type FixedFields = Omit<SessionRecord, "upstream" | "protocolVersion" | "lastSeenAt">;

/** How many ids `list` and `listIdle` read per round trip. */
const PAGE = 200;

/**
 * Session records in Redis / Valkey. Touches are batched like the SQLite store's: kept in memory
 * (latest wins, visible to `get` at once) and written every `touchFlushMs` in one pipeline.
 */
export class RedisSessionStore implements SessionStore {
  readonly #client: Redis;
  readonly #guard: RedisGuard;
  readonly #cmd: SessionCommands;
  readonly #ownsClient: boolean;
  readonly #prefix: string;
  readonly #ttl: (server: string) => number;
  readonly #pending = new Map<string, number>();
  readonly #timer: NodeJS.Timeout;
  readonly #onError: (err: unknown) => void;

  constructor(options: RedisSessionStoreOptions) {
    this.#ownsClient = !(options.client instanceof Redis);
    this.#client = options.client instanceof Redis ? options.client : createRedisClient(options.client);
    this.#guard = guardOf(this.#client);
    this.#prefix = options.keyPrefix ?? "mcp-edge:";
    const ttl = options.idleTtlMs ?? 24 * 3600_000;
    this.#ttl = typeof ttl === "number" ? () => ttl : ttl;
    this.#onError = options.onError ?? (() => undefined);
    // defineCommand: EVALSHA, with EVAL when the server does not know the script yet.
    this.#client.defineCommand("mcpeSessionPut", { numberOfKeys: 1, lua: PUT });
    this.#client.defineCommand("mcpeSessionRebind", { numberOfKeys: 1, lua: REBIND });
    this.#client.defineCommand("mcpeSessionTouch", { lua: TOUCH });
    this.#client.defineCommand("mcpeSessionDelete", { numberOfKeys: 1, lua: DELETE });
    this.#cmd = this.#client as unknown as SessionCommands;
    this.#timer = setInterval(() => {
      this.flush().catch(this.#onError);
    }, options.touchFlushMs ?? 1000);
    this.#timer.unref();
  }

  /** The client (to share with the counter store, or to watch its status). */
  get client(): Redis {
    return this.#client;
  }

  #key(id: string): string {
    return `${this.#prefix}s:${id}`;
  }

  async get(id: string): Promise<SessionRecord | undefined> {
    try {
      const h = await this.#guard.run(() => this.#client.hgetall(this.#key(id)));
      const rec = toRecord(h);
      if (!rec) return undefined;
      const pending = this.#pending.get(id);
      if (pending !== undefined && pending > rec.lastSeenAt) rec.lastSeenAt = pending;
      return rec;
    } catch (err) {
      throw storeUnavailable(err);
    }
  }

  async put(r: SessionRecord): Promise<void> {
    const fixed: FixedFields = {
      id: r.id,
      server: r.server,
      principal: r.principal,
      tenant: r.tenant,
      transport: r.transport,
      initParams: r.initParams,
      createdAt: r.createdAt,
    };
    try {
      await this.#guard.run(() =>
        this.#cmd.mcpeSessionPut(
          this.#key(r.id),
          this.#prefix,
          r.id,
          r.server,
          r.upstream.instance,
          JSON.stringify(fixed),
          JSON.stringify(r.upstream),
          r.protocolVersion,
          r.lastSeenAt,
          r.createdAt,
          Math.max(1, Math.ceil(this.#ttl(r.server))),
        ),
      );
    } catch (err) {
      throw storeUnavailable(err);
    }
  }

  async rebind(id: string, upstream: UpstreamBinding, protocolVersion: string): Promise<void> {
    try {
      await this.#guard.run(() =>
        this.#cmd.mcpeSessionRebind(
          this.#key(id),
          this.#prefix,
          id,
          upstream.instance,
          JSON.stringify({ instance: upstream.instance, sessionId: upstream.sessionId }),
          protocolVersion,
        ),
      );
    } catch (err) {
      throw storeUnavailable(err);
    }
  }

  touch(id: string, at: number): void {
    const prev = this.#pending.get(id);
    if (prev === undefined || at > prev) this.#pending.set(id, at);
  }

  async delete(id: string): Promise<boolean> {
    this.#pending.delete(id);
    try {
      return (
        (await this.#guard.run(() => this.#cmd.mcpeSessionDelete(this.#key(id), this.#prefix, id))) === 1
      );
    } catch (err) {
      throw storeUnavailable(err);
    }
  }

  async listIdle(server: string, cutoff: number, limit: number): Promise<SessionRecord[]> {
    await this.flush();
    const out: SessionRecord[] = [];
    try {
      // Members whose record expired are cleaned and the range read again; stale members are few
      // (the reaper runs far more often than records expire), so this loop ends quickly.
      for (let round = 0; out.length < limit && round < 100; round++) {
        const want = Math.min(PAGE, limit - out.length);
        // The records read so far stay at the head of the range (stale members are removed).
        const ids = await this.#guard.run(() =>
          this.#client.zrangebyscore(
            `${this.#prefix}idle:${server}`,
            "-inf",
            `(${cutoff}`,
            "LIMIT",
            out.length,
            want,
          ),
        );
        const { found, stale } = await this.#read(ids);
        out.push(...found);
        await this.#clean(stale);
        if (stale.length === 0 && ids.length < want) break;
      }
    } catch (err) {
      throw storeUnavailable(err);
    }
    return out.slice(0, limit);
  }

  async list(filter: { server?: string; tenant?: string }, limit: number): Promise<SessionRecord[]> {
    await this.flush();
    const index = filter.server ? `${this.#prefix}created:${filter.server}` : `${this.#prefix}created`;
    const out: SessionRecord[] = [];
    try {
      for (let offset = 0; out.length < limit;) {
        const ids = await this.#guard.run(() => this.#client.zrevrange(index, offset, offset + PAGE - 1));
        if (ids.length === 0) break;
        const { found, stale } = await this.#read(ids);
        for (const r of found) if (!filter.tenant || r.tenant === filter.tenant) out.push(r);
        await this.#clean(stale);
        offset += ids.length - stale.length;
        if (ids.length < PAGE) break;
      }
    } catch (err) {
      throw storeUnavailable(err);
    }
    return out.slice(0, limit);
  }

  async #read(ids: string[]): Promise<{ found: SessionRecord[]; stale: string[] }> {
    const pipe = this.#client.pipeline();
    for (const id of ids) pipe.hgetall(this.#key(id));
    const results = (await this.#guard.run(() => pipe.exec())) ?? [];
    const found: SessionRecord[] = [];
    const stale: string[] = [];
    ids.forEach((id, i) => {
      const [err, h] = results[i] ?? [new Error("no reply"), null];
      if (err) throw err;
      const rec = toRecord(h as Record<string, string>);
      if (rec) found.push(rec);
      else stale.push(id);
    });
    return { found, stale };
  }

  /** Unbinds ids whose record expired: their counts and index members go (the delete script). */
  async #clean(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const pipe = this.#client.pipeline() as unknown as Pipelined & { exec(): Promise<unknown> };
    for (const id of ids) pipe.mcpeSessionDelete(this.#key(id), this.#prefix, id);
    await this.#guard.run(() => pipe.exec());
  }

  async countByInstance(server: string): Promise<Map<string, number>> {
    try {
      const h = await this.#guard.run(() => this.#client.hgetall(`${this.#prefix}count:${server}`));
      const counts = new Map<string, number>();
      for (const [instance, n] of Object.entries(h)) if (Number(n) > 0) counts.set(instance, Number(n));
      return counts;
    } catch (err) {
      throw storeUnavailable(err);
    }
  }

  /**
   * Writes pending touches in one round trip: one script per TOUCH_BATCH sessions, all sent
   * together. On failure they are kept for the next flush.
   */
  async flush(): Promise<void> {
    if (this.#pending.size === 0) return;
    const batch = [...this.#pending];
    this.#pending.clear();
    const sent: Promise<number>[] = [];
    for (let i = 0; i < batch.length; i += TOUCH_BATCH) {
      const part = batch.slice(i, i + TOUCH_BATCH);
      const args: (string | number)[] = [part.length];
      for (const [id] of part) args.push(this.#key(id));
      args.push(this.#prefix);
      for (const [id, at] of part) args.push(id, at);
      sent.push(
        this.#guard.run(() => this.#cmd.mcpeSessionTouch(...(args as [number, ...(string | number)[]]))),
      );
    }
    try {
      // Every part settles first; on any failure the whole batch is put back (below).
      const results = await Promise.allSettled(sent);
      const failed = results.find((r) => r.status === "rejected");
      if (failed) throw failed.reason;
    } catch (err) {
      // Put back what is not newer already (a touch may have come in meanwhile); a touch that was
      // written twice is harmless (the script never moves lastSeenAt back).
      for (const [id, at] of batch) this.touch(id, at);
      throw storeUnavailable(err);
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    try {
      await this.flush();
    } finally {
      if (this.#ownsClient) this.#client.disconnect();
    }
  }
}

function toRecord(h: Record<string, string> | null | undefined): SessionRecord | undefined {
  if (!h || h["d"] === undefined || h["up"] === undefined) return undefined;
  const fixed = JSON.parse(h["d"]) as FixedFields;
  const up = JSON.parse(h["up"]) as UpstreamBinding;
  return {
    id: fixed.id,
    server: fixed.server,
    principal: fixed.principal,
    tenant: fixed.tenant,
    transport: fixed.transport,
    protocolVersion: h["pv"] ?? "",
    initParams: fixed.initParams,
    upstream: { instance: up.instance, sessionId: up.sessionId },
    createdAt: fixed.createdAt,
    lastSeenAt: Number(h["seen"]),
  };
}
