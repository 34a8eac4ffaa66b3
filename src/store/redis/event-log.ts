/**
 * SSE event buffers in Redis / Valkey (distributed mode; one file of ~780 lines on purpose: the
 * writer, the reader and the follower share one key layout and one set of Lua scripts). A client resumes on
 * instance B, with Last-Event-ID, a stream that began on instance A, and gets every event after its
 * id exactly once, the events A read from the upstream while the client was away included, then the
 * live ones, then the end.
 *
 * Construction (the gateway, when `store.redis` is set):
 *
 *   const events = new RedisEventLog({
 *     client,                        // the shared ioredis client (createRedisClient); not closed here
 *     keyPrefix: "mcp-edge:",        // the stores' prefix (hash-tagged on Redis Cluster)
 *     limits: config.streams,
 *     onError: (err, what) => log.warn({ err }, `stream events: Redis ${what} failed`),
 *   });
 *   const streams = new StreamRegistry(config.streams, { events });
 *   ...
 *   // stop: streams.closeClients(); ... streams.close(); then, before the Redis client closes:
 *   await events.close();
 *
 * The subscriber connection (one per process) is `client.duplicate()` unless `subscriber` gives one
 * (a client, not closed here) or a factory (its client is closed here). `stats` counts failures for
 * metrics.
 *
 * Keys, all under `keyPrefix` (all keys must live on one node: on Redis Cluster the prefix carries a
 * hash tag, `{mcp-edge}:`, as for the session store):
 *   ev:<stream>     Redis Stream of the stream's SSE frames, entry id `0-<seq>`, field `f` the frame
 *                   as written to clients (`id: <stream>.<seq>` included). Trimmed to A's buffer
 *                   window (`streams.bufferEvents` / `bufferBytes`, evaluated by A) on every write.
 *   evm:<stream>    hash: `s` session id, `k` kind, `i` owner instance, `last` highest seq written,
 *                   `ev` highest seq trimmed (a resume after an older seq is EDGE_STREAM_EXPIRED),
 *                   `end` 1 once the stream finished on A, `fa` when a client on another instance
 *                   last followed it (ms), `u` the upstream's event id of the newest event written
 *                   (when it gave ids), `rq` a request stream's TakeoverState (its POST's request id,
 *                   protocol version and the JSON-RPC ids not answered yet). Both keys expire
 *                   `streams.ttl` after the last write or follow.
 *   evo:<instance>  an instance's heartbeat, renewed every `heartbeatMs` (5 s) and by every write,
 *                   expiring three beats later.
 * Channel `evi:<instance>`: each instance's subscriber connection subscribes to its own, and an
 * owner is alive while its heartbeat exists and that channel has a subscriber (PUBSUB NUMSUB): a
 * killed process loses its connections at once, so its death is seen at once, not three beats
 * later. A stream whose owner is gone without writing its end (SIGKILL) is treated as ended (at
 * once on a resume; by a follower after two sweeps that find it gone), except a request stream with
 * answers pending, which the instance the client resumes on takes over (below).
 * Channel `evc:<stream>` (pub/sub): `<last>` after each write, `<last>e` with the end. A hint only:
 * followers read the frames from the Redis Stream.
 *
 * Writes (instance A): appends and the end mark the stream; once per event-loop turn (setImmediate)
 * each marked stream's new frames go out in one script (XADD + XTRIM + HSET + PEXPIRE + PUBLISH,
 * atomic, auto-pipelined), never awaited on the client's delivery path. A stream that settled within
 * that turn (its client got every event and the end, the usual POST answered with one event) is
 * never written at all; one that settled later is deleted. A write that fails is reported once per
 * failure run (`onError`, `stats.writeFailures`) and A's own client and same-instance resumes are
 * untouched (the local buffer). The script keeps what Redis holds contiguous: when a batch does not
 * follow on from `last` (a failed write, keys that expired) what came before is trimmed as if
 * evicted, so a resume from before the hole is EDGE_STREAM_EXPIRED, never a silent gap.
 *
 * Resume (instance B, RemoteStream): read meta + frames after the client's seq in one script that
 * checks the session first (another session's stream reads as unknown: nothing of it is returned or
 * touched) and otherwise only stamps `fa` and the TTL; ended (or owner gone) → replay and end; else SUBSCRIBE to the stream's channel, then
 * read again from the last seq delivered, and again on every notification and every sweep
 * (`keepAlive` period, at most 5 s; the backstop for notifications lost while the subscriber
 * reconnects). Exactly once: B keeps `delivered`, every read asks for seqs after it, reads are
 * serialized, and a frame is written only when its seq is `delivered + 1`; every write A makes after
 * the SUBSCRIBE was acknowledged publishes a notification B receives, which triggers a read after
 * the current one, and every write before it is seen by the first read after it. A frame whose seq jumps ahead (a hole, or events trimmed before B got them)
 * ends the response (the client resumes: EDGE_STREAM_EXPIRED from here, or its events from A).
 * While B follows, its sweep stamps `fa` and refreshes the TTL, so A neither drops the stream
 * (closing its upstream) nor lets Redis expire it while the client is away from A.
 *
 * Takeover (instance B, `resume`): a request stream not ended, its owner dead, answers pending, is
 * claimed by B in one script (owner still the dead one, not ended → `i` = B): one instance wins.
 * B gets every frame after the client's seq and numbers on after `last` under the same stream id,
 * resuming the upstream after `u` (src/forward/streamable.ts); its writes go through the same
 * APPEND. APPEND refuses (-1) a writer that is no longer the owner, and that writer stops pumping
 * the stream (`lost`): an owner wrongly thought dead (its subscriber connection reconnecting) never
 * writes beside the new one.
 *
 * Failure: Redis down during a resume → EDGE_STORE_UNAVAILABLE (503); during a follow, reads are
 * retried on the next sweeps, and after 3 failures in a row the response ends (the client resumes).
 */
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { GatewayError } from "../../errors/errors.ts";
import { formatComment, formatEvent } from "../../mcp/sse.ts";
import { guardOf, type RedisGuard, storeUnavailable } from "./client.ts";
import type {
  EventLogLimits,
  MirroredStream,
  SharedStream,
  StreamEventLog,
  StreamSink,
  TakenOverStream,
  TakeoverState,
} from "../types.ts";

/** How often an instance renews its heartbeat key (which lives three times as long), by default. */
const HEARTBEAT_MS = 5000;
/** Frames read per round trip when following or replaying. */
const PAGE = 500;
/** Failed reads in a row after which a follower's response ends. */
const MAX_FOLLOW_FAILURES = 3;
/** Sweeps in a row that found the owner's heartbeat gone before a follower gives up on it. */
const OWNER_GONE_STRIKES = 2;

/**
 * KEYS[1] frames (stream), KEYS[2] meta. ARGV: session, kind, owner, ttl ms, evicted, flags (`e`
 * end, `d` drop), channel, top (A's highest seq), owner heartbeat key, its ttl ms, upstream event
 * id ("" if none), takeover state ("" if none), then seq/frame pairs in ascending seq (a write
 * renews the owner's heartbeat too). Whatever A gave that Redis does not hold (a failed write, keys
 * lost) counts as evicted: what Redis holds stays contiguous. -1 when another instance took the
 * stream over (its owner is no longer ARGV[3]): nothing is written.
 */
const APPEND = `
local owner = redis.call('HGET', KEYS[2], 'i')
if owner and owner ~= ARGV[3] then return -1 end
local last = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
local ev = tonumber(redis.call('HGET', KEYS[2], 'ev') or '0')
local given = tonumber(ARGV[5])
if given > ev then ev = given end
local n = #ARGV
redis.call('SET', ARGV[9], '1', 'PX', ARGV[10])
if n >= 14 then
  local first = tonumber(ARGV[13])
  if first > last + 1 and first - 1 > ev then ev = first - 1 end
  for i = 13, n - 1, 2 do
    local seq = tonumber(ARGV[i])
    if seq > last then
      redis.call('XADD', KEYS[1], '0-' .. ARGV[i], 'f', ARGV[i + 1])
      last = seq
    end
  end
end
local top = tonumber(ARGV[8])
if last < top then
  ev = top
  last = top
end
if ev > last then last = ev end
local flags = ARGV[6]
if string.find(flags, 'd', 1, true) then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('PUBLISH', ARGV[7], string.format('%d', last) .. 'e')
  return 0
end
if ev > 0 then redis.call('XTRIM', KEYS[1], 'MINID', '0-' .. string.format('%d', ev + 1)) end
redis.call('HSET', KEYS[2], 's', ARGV[1], 'k', ARGV[2], 'i', ARGV[3], 'last', string.format('%d', last), 'ev', string.format('%d', ev))
if ARGV[11] ~= '' then redis.call('HSET', KEYS[2], 'u', ARGV[11]) end
if ARGV[12] ~= '' then redis.call('HSET', KEYS[2], 'rq', ARGV[12]) end
local mark = string.format('%d', last)
if string.find(flags, 'e', 1, true) then
  redis.call('HSET', KEYS[2], 'end', '1')
  mark = mark .. 'e'
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[7], mark)
return 1
`;

/**
 * KEYS[1] frames, KEYS[2] meta. ARGV: session, after seq, count, owner key prefix, follow-at ms (0:
 * read only), ttl ms, owner liveness channel prefix. Nil for an unknown stream or another
 * session's; else kind, last, evicted, ended, owner alive, [[id, [f, frame]], ...], owner,
 * upstream event id, takeover state. The owner is alive while its heartbeat key exists and its
 * subscriber connection is subscribed to its liveness channel (a process killed loses that
 * connection at once; its heartbeat lives on for up to three beats).
 */
const FETCH = `
local m = redis.call('HMGET', KEYS[2], 's', 'k', 'i', 'last', 'ev', 'end', 'u', 'rq')
if not m[1] or m[1] ~= ARGV[1] then return false end
if ARGV[5] ~= '0' then
  redis.call('HSET', KEYS[2], 'fa', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
local alive = redis.call('EXISTS', ARGV[4] .. (m[3] or ''))
if alive == 1 then
  local subs = redis.call('PUBSUB', 'NUMSUB', ARGV[7] .. (m[3] or ''))
  if tonumber(subs[2]) == 0 then alive = 0 end
end
local entries = redis.call('XRANGE', KEYS[1], '(0-' .. ARGV[2], '+', 'COUNT', ARGV[3])
return { m[2] or 'request', m[4] or '0', m[5] or '0', m[6] or '0', alive, entries, m[3] or '', m[7] or '', m[8] or '' }
`;

/**
 * KEYS[2] meta (KEYS[1] frames). ARGV: the owner found dead, the new owner, ttl ms. 1 when the
 * stream, not ended, still had that owner and now has the new one; else 0 (another instance
 * claimed it first, or it ended).
 */
const CLAIM = `
local m = redis.call('HMGET', KEYS[2], 'i', 'end')
if m[1] ~= ARGV[1] or m[2] == '1' then return 0 end
redis.call('HSET', KEYS[2], 'i', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
`;

interface EventCommands {
  mcpeEventsAppend(k1: string, k2: string, ...args: (string | number)[]): Promise<number>;
  mcpeEventsFetch(
    k1: string,
    k2: string,
    session: string,
    after: number,
    count: number,
    ownerPrefix: string,
    followAt: number,
    ttl: number,
    livenessPrefix: string,
  ): Promise<FetchReply | null>;
  mcpeEventsClaim(k1: string, k2: string, dead: string, owner: string, ttl: number): Promise<number>;
}

type FetchReply = [string, string, string, string, number, [string, string[]][], string, string, string];

/** One read of a stream from Redis. */
interface Snapshot {
  kind: "request" | "standalone";
  last: number;
  evicted: number;
  ended: boolean;
  ownerAlive: boolean;
  frames: [number, string][];
  owner: string;
  upstreamId: string | undefined;
  takeover: TakeoverState | undefined;
}

function takeoverState(json: string): TakeoverState | undefined {
  if (json === "") return undefined;
  try {
    const t = JSON.parse(json) as TakeoverState;
    return typeof t.requestId === "string" && Array.isArray(t.ids) ? t : undefined;
  } catch {
    return undefined;
  }
}

export interface RedisEventLogOptions {
  /** The shared client (commands, scripts); not closed by `close`. */
  client: Redis;
  /**
   * The pub/sub connection: a client (not closed by `close`) or a factory (its client is closed by
   * `close`). Default `client.duplicate()` (closed by `close`).
   */
  subscriber?: Redis | (() => Redis);
  /** Prefix of every key and channel, as the other Redis stores'. */
  keyPrefix: string;
  /** Config `streams`: the buffer window is A's (evaluated locally), the TTL applies to the keys. */
  limits: EventLogLimits;
  /** Called once per run of failures of a kind (the next success re-arms it). */
  onError?: (err: unknown, what: "write" | "read") => void;
  /** How often this instance renews its heartbeat key (which lives three times as long). Default 5 s. */
  heartbeatMs?: number;
}

/** The Redis side of the edge's resumable streams: A's writes, B's followers (module header). */
export class RedisEventLog implements StreamEventLog {
  /** This process's owner id (heartbeat key `evo:<instance>`). */
  readonly instance = randomBytes(9).toString("base64url");
  /** Failures for metrics: background writes of A, and reads of B while following. */
  readonly stats = { writeFailures: 0, readFailures: 0 };
  readonly #client: Redis;
  readonly #guard: RedisGuard;
  readonly #cmd: EventCommands;
  readonly #sub: Redis;
  readonly #ownsSub: boolean;
  readonly #prefix: string;
  readonly #limits: EventLogLimits;
  readonly #onError: (err: unknown, what: "write" | "read") => void;
  readonly #dirty = new Set<MirroredStream>();
  #scheduled: NodeJS.Immediate | undefined;
  readonly #writes = new Set<Promise<unknown>>();
  #writeFailing = false;
  #readFailing = false;
  /** Followers by channel (pub/sub routing; `ready` once SUBSCRIBE was acknowledged) and all of them. */
  readonly #channels = new Map<string, { set: Set<RemoteStream>; ready: Promise<unknown> }>();
  readonly #followers = new Set<RemoteStream>();
  readonly #heartbeat: NodeJS.Timeout;
  readonly #heartbeatTtl: number;
  #closed = false;

  constructor(options: RedisEventLogOptions) {
    this.#client = options.client;
    this.#guard = guardOf(this.#client);
    this.#prefix = options.keyPrefix;
    this.#limits = options.limits;
    this.#onError = options.onError ?? (() => undefined);
    this.#client.defineCommand("mcpeEventsAppend", { numberOfKeys: 2, lua: APPEND });
    this.#client.defineCommand("mcpeEventsFetch", { numberOfKeys: 2, lua: FETCH });
    this.#client.defineCommand("mcpeEventsClaim", { numberOfKeys: 2, lua: CLAIM });
    this.#cmd = this.#client as unknown as EventCommands;
    const sub = options.subscriber;
    this.#ownsSub = sub === undefined || typeof sub === "function";
    this.#sub = sub === undefined ? this.#client.duplicate() : typeof sub === "function" ? sub() : sub;
    if (this.#ownsSub) this.#sub.on("error", () => undefined);
    this.#sub.on("message", (channel: string, message: string) => this.#notify(channel, message));
    // Liveness: while this process lives, its subscriber connection is subscribed to its channel
    // (other instances count subscribers to tell a killed owner from one whose heartbeat lingers).
    this.#sub.subscribe(this.#liveness(this.instance)).catch(() => undefined);
    // After a reconnect (ioredis resubscribes): notifications may have been missed meanwhile.
    this.#sub.on("ready", () => {
      for (const f of this.#followers) f.pull();
    });
    const beat = options.heartbeatMs ?? HEARTBEAT_MS;
    this.#heartbeatTtl = 3 * beat;
    this.#beat();
    this.#heartbeat = setInterval(() => this.#beat(), beat);
    this.#heartbeat.unref();
  }

  #key(streamId: string): string {
    return `${this.#prefix}ev:${streamId}`;
  }

  #meta(streamId: string): string {
    return `${this.#prefix}evm:${streamId}`;
  }

  #channel(streamId: string): string {
    return `${this.#prefix}evc:${streamId}`;
  }

  #liveness(instance: string): string {
    return `${this.#prefix}evi:${instance}`;
  }

  get #ownerKey(): string {
    return `${this.#prefix}evo:${this.instance}`;
  }

  #beat(): void {
    this.#client.set(this.#ownerKey, "1", "PX", this.#heartbeatTtl).catch(() => undefined);
  }

  // ---------------------------------------------------------------- instance A: writes

  /** StreamMirror: the stream has new events or has ended; written on the next turn. */
  mark(s: MirroredStream): void {
    this.#dirty.add(s);
    this.#scheduled ??= setImmediate(() => this.flush());
  }

  /** Writes every marked stream now (one script each, pipelined); never throws. */
  flush(): void {
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    const batch = [...this.#dirty];
    this.#dirty.clear();
    for (const s of batch) this.#write(s);
  }

  #write(s: MirroredStream): void {
    const u = s.unmirrored();
    // Settled: its client got every event and the end, so nothing is left to resume. Discarded: its
    // session ended. Either way Redis need not keep it (nor get it at all when it never had it).
    const drop = s.settled || s.discard;
    if (drop && !s.mirrored) return;
    if (!drop && u.events.length === 0 && !u.end) return;
    s.mirrored = true;
    const args: (string | number)[] = [
      s.sessionId,
      s.kind,
      this.instance,
      Math.max(1, Math.ceil(this.#limits.ttl)),
      u.evicted,
      drop ? "d" : u.end ? "e" : "",
      this.#channel(s.id),
      s.lastSeq,
      this.#ownerKey,
      this.#heartbeatTtl,
      u.upstreamId ?? "",
      u.resume ?? "",
    ];
    if (!drop) for (const e of u.events) args.push(e.seq, e.frame);
    const p = this.#guard
      .run(() => this.#cmd.mcpeEventsAppend(this.#key(s.id), this.#meta(s.id), ...args))
      .then(
        (written) => {
          this.#writeFailing = false;
          // Another instance found this one dead and took the stream over: it pumps it now.
          if (written === -1) s.lost();
        },
        (err: unknown) => {
          this.stats.writeFailures++;
          if (!this.#writeFailing) {
            this.#writeFailing = true;
            this.#onError(err, "write");
          }
        },
      );
    this.#writes.add(p);
    void p.finally(() => this.#writes.delete(p));
  }

  /** When a client on another instance last followed the stream (A's sweep keeps it then). */
  async followedAt(streamId: string): Promise<number | undefined> {
    const at = await this.#guard.run(() => this.#client.hget(this.#meta(streamId), "fa"));
    return at === null ? undefined : Number(at);
  }

  // ---------------------------------------------------------------- instance B: resume and follow

  async #fetch(
    sessionId: string,
    streamId: string,
    after: number,
    follow: boolean,
  ): Promise<Snapshot | undefined> {
    const r = await this.#guard.run(() =>
      this.#cmd.mcpeEventsFetch(
        this.#key(streamId),
        this.#meta(streamId),
        sessionId,
        after,
        PAGE,
        `${this.#prefix}evo:`,
        follow ? Date.now() : 0,
        Math.max(1, Math.ceil(this.#limits.ttl)),
        `${this.#prefix}evi:`,
      ),
    );
    if (r === null) return undefined;
    const [kind, last, evicted, ended, alive, entries, owner, upstreamId, takeover] = r;
    return {
      kind: kind === "standalone" ? "standalone" : "request",
      last: Number(last),
      evicted: Number(evicted),
      ended: ended === "1",
      ownerAlive: alive === 1,
      frames: entries.map(([id, fields]) => [Number(id.slice(id.indexOf("-") + 1)), fields[1] ?? ""]),
      owner,
      upstreamId: upstreamId === "" ? undefined : upstreamId,
      takeover: takeoverState(takeover),
    };
  }

  /**
   * Opens a stream for a client resuming after `afterSeq`: undefined when Redis does not hold it for
   * this session; EDGE_STREAM_EXPIRED when events after `afterSeq` were trimmed; EDGE_STORE_UNAVAILABLE
   * when Redis fails. A stream still live on its owner is subscribed to before this returns: attach
   * the client's sink, or `release` it.
   */
  async open(sessionId: string, streamId: string, afterSeq: number): Promise<RemoteStream | undefined> {
    return (await this.#open(sessionId, streamId, afterSeq, false)) as RemoteStream | undefined;
  }

  /** `open`, taking over a request stream whose owner died before its answers (StreamEventLog). */
  resume(
    sessionId: string,
    streamId: string,
    afterSeq: number,
  ): Promise<RemoteStream | TakenOverStream | undefined> {
    return this.#open(sessionId, streamId, afterSeq, true);
  }

  async #open(
    sessionId: string,
    streamId: string,
    afterSeq: number,
    takeOver: boolean,
  ): Promise<RemoteStream | TakenOverStream | undefined> {
    if (this.#closed) return undefined;
    let stream: RemoteStream | undefined;
    try {
      let snap = await this.#fetch(sessionId, streamId, afterSeq, true);
      if (!snap) return undefined;
      if (afterSeq < snap.evicted) throw new GatewayError("EDGE_STREAM_EXPIRED");
      const frames = snap.frames;
      // A request stream whose owner died before every answer: this instance takes it over.
      const takeover = snap.takeover;
      if (
        takeOver &&
        snap.kind === "request" &&
        !snap.ended &&
        !snap.ownerAlive &&
        takeover &&
        takeover.ids.length > 0
      ) {
        const ttl = Math.max(1, Math.ceil(this.#limits.ttl));
        const dead = snap.owner;
        const claimed = await this.#guard.run(() =>
          this.#cmd.mcpeEventsClaim(this.#key(streamId), this.#meta(streamId), dead, this.instance, ttl),
        );
        if (claimed === 1) return await this.#takenOver(sessionId, streamId, afterSeq, snap, takeover);
        // Claimed by another instance (or ended) meanwhile: read it again, as any live stream.
        snap = (await this.#fetch(sessionId, streamId, afterSeq, true)) ?? snap;
        frames.splice(0, frames.length, ...snap.frames);
      }
      // A finished stream is replayed whole here (a live one is read on by the follower).
      while (snap.frames.length === PAGE && (snap.ended || !snap.ownerAlive)) {
        const after = frames[frames.length - 1]?.[0] ?? afterSeq;
        const next = await this.#fetch(sessionId, streamId, after, false);
        if (!next) break;
        snap = next;
        frames.push(...next.frames);
      }
      const done = snap.ended || !snap.ownerAlive;
      stream = new RemoteStream(this, streamId, sessionId, snap.kind, afterSeq, frames, done);
      if (!done) await this.#subscribe(stream);
      return stream;
    } catch (err) {
      if (stream) this.release(stream);
      throw err instanceof GatewayError ? err : storeUnavailable(err);
    }
  }

  /** The stream this instance claimed: every frame after the client's, read whole. */
  async #takenOver(
    sessionId: string,
    streamId: string,
    afterSeq: number,
    snap: Snapshot,
    state: TakeoverState,
  ): Promise<TakenOverStream> {
    const frames = snap.frames.map(([, f]) => f);
    let page = snap;
    let after = snap.frames.at(-1)?.[0] ?? afterSeq;
    while (page.frames.length === PAGE) {
      const next = await this.#fetch(sessionId, streamId, after, false);
      if (!next) break;
      page = next;
      frames.push(...next.frames.map(([, f]) => f));
      after = next.frames.at(-1)?.[0] ?? after;
    }
    return {
      takeover: true,
      id: streamId,
      sessionId,
      frames,
      last: snap.last,
      upstreamId: snap.upstreamId,
      state,
    };
  }

  async #subscribe(f: RemoteStream): Promise<void> {
    const channel = this.#channel(f.id);
    let entry = this.#channels.get(channel);
    if (!entry) {
      const created: { set: Set<RemoteStream>; ready: Promise<unknown> } = {
        set: new Set(),
        ready: Promise.resolve(),
      };
      created.ready = this.#sub.subscribe(channel).catch((err: unknown) => {
        // The next follower subscribes again; those waiting on this one fail (503) and are released.
        if (this.#channels.get(channel) === created) {
          this.#channels.delete(channel);
          this.#sub.unsubscribe(channel).catch(() => undefined);
        }
        throw err;
      });
      this.#channels.set(channel, created);
      entry = created;
    }
    entry.set.add(f);
    this.#followers.add(f);
    await entry.ready;
  }

  /** Forgets a follower; the last one of a channel unsubscribes it. */
  release(f: RemoteStream): void {
    if (!this.#followers.delete(f)) return;
    const channel = this.#channel(f.id);
    const entry = this.#channels.get(channel);
    if (!entry) return;
    entry.set.delete(f);
    if (entry.set.size === 0) {
      this.#channels.delete(channel);
      this.#sub.unsubscribe(channel).catch(() => undefined);
    }
  }

  #notify(channel: string, message: string): void {
    const entry = this.#channels.get(channel);
    if (!entry) return;
    const ended = message.endsWith("e");
    const last = Number(ended ? message.slice(0, -1) : message);
    for (const f of entry.set) f.notify(last, ended);
  }

  /** @internal Reads a follower's next frames; failures counted and reported once per run. */
  async read(f: RemoteStream, after: number, follow: boolean): Promise<Snapshot | undefined> {
    try {
      const snap = await this.#fetch(f.sessionId, f.id, after, follow);
      this.#readFailing = false;
      return snap;
    } catch (err) {
      this.stats.readFailures++;
      if (!this.#readFailing) {
        this.#readFailing = true;
        this.#onError(err, "read");
      }
      throw err;
    }
  }

  /** Keep-alives, and a read per follower (stamps `fa`, catches up on missed notifications). */
  sweepFollowers(now: number): void {
    for (const f of this.#followers) f.sweep(now, this.#limits.keepAlive);
  }

  /** Drain: followers get a `retry` hint and their responses end. */
  closeFollowers(retryMs: number): void {
    for (const f of [...this.#followers]) f.closeClient(retryMs);
  }

  /** Ends followers' responses: of one session (DELETE, expiry) or all. */
  endFollowers(sessionId?: string): void {
    for (const f of [...this.#followers]) if (sessionId === undefined || f.sessionId === sessionId) f.end();
  }

  /** Followers on this instance (a gauge). */
  get followers(): number {
    return this.#followers.size;
  }

  /**
   * Writes what is still queued (the ends `StreamRegistry.close` queued), waits for every write,
   * removes the heartbeat and closes the subscriber. Call after `StreamRegistry.close`, before the
   * Redis client is closed.
   */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#heartbeat);
    this.flush();
    this.endFollowers();
    await Promise.allSettled([...this.#writes]);
    await this.#client.del(this.#ownerKey).catch(() => undefined);
    if (this.#ownsSub) this.#sub.disconnect();
    else await this.#sub.unsubscribe(this.#liveness(this.instance)).catch(() => undefined);
  }
}

/**
 * A stream another instance holds (or held), as a client on this one resumes it. `frames` are the
 * events after the client's id read when opening; `done` when the stream had ended (or its owner
 * was gone) then. `attach` writes them and, for a live stream, follows on until the end.
 */
export class RemoteStream implements SharedStream {
  readonly id: string;
  readonly sessionId: string;
  readonly kind: "request" | "standalone";
  readonly frames: ReadonlyArray<readonly [number, string]>;
  readonly done: boolean;
  readonly #log: RedisEventLog;
  #delivered: number;
  #sink: StreamSink | undefined;
  #pulling = false;
  #again = false;
  #follow = false;
  #failures = 0;
  #ownerGone = 0;
  #finished = false;

  constructor(
    log: RedisEventLog,
    id: string,
    sessionId: string,
    kind: "request" | "standalone",
    afterSeq: number,
    frames: [number, string][],
    done: boolean,
  ) {
    this.#log = log;
    this.id = id;
    this.sessionId = sessionId;
    this.kind = kind;
    this.#delivered = afterSeq;
    this.frames = frames;
    this.done = done;
  }

  /** The frames read when opening (a finished stream's remainder). */
  framesAfter(): string[] {
    return this.frames.map(([, frame]) => frame);
  }

  /** Writes the frames read when opening; ends the response when done, else follows on. */
  attach(sink: StreamSink): void {
    this.#sink = sink;
    if (!this.#deliver(this.frames)) return;
    if (this.done) return this.end();
    this.pull();
  }

  detach(sink: StreamSink): void {
    if (this.#sink !== sink) return;
    this.#sink = undefined;
    this.#finished = true;
    this.#log.release(this);
  }

  /** Ends the response (after what was written) and stops following. */
  end(): void {
    this.#finished = true;
    this.#sink?.end();
    this.#log.release(this);
  }

  closeClient(retryMs: number): void {
    this.#finished = true;
    this.#sink?.end(formatEvent({ retry: retryMs }));
    this.#log.release(this);
  }

  /**
   * Writes frames in seq order, each once: seqs already delivered are skipped; a seq past the next
   * one (a hole in what Redis holds) ends the response, which the client then resumes. False when
   * the response ended or the client is gone.
   */
  #deliver(frames: ReadonlyArray<readonly [number, string]>): boolean {
    const sink = this.#sink;
    if (!sink?.open) {
      this.#gone();
      return false;
    }
    for (const [seq, frame] of frames) {
      if (seq <= this.#delivered) continue;
      if (seq !== this.#delivered + 1) {
        this.end();
        return false;
      }
      if (!sink.write(frame)) {
        this.#gone();
        return false;
      }
      this.#delivered = seq;
    }
    return true;
  }

  #gone(): void {
    this.#finished = true;
    this.#log.release(this);
  }

  /** A notification: the stream's frames now go up to `last` (and it ended, when `ended`). */
  notify(last: number, ended: boolean): void {
    if (ended || !(last <= this.#delivered)) this.pull();
  }

  sweep(now: number, keepAlive: number): void {
    const sink = this.#sink;
    if (!sink?.open) {
      if (sink) this.#gone();
      return;
    }
    if (now - sink.lastWriteAt >= keepAlive) sink.write(formatComment("keep-alive"));
    this.#follow = true;
    this.pull();
  }

  /** Reads what follows the last delivered seq; serialized (a call during a read reads again after). */
  pull(): void {
    if (this.#finished || !this.#sink) return;
    if (this.#pulling) {
      this.#again = true;
      return;
    }
    this.#pulling = true;
    void this.#pullLoop().finally(() => {
      this.#pulling = false;
    });
  }

  async #pullLoop(): Promise<void> {
    do {
      this.#again = false;
      const follow = this.#follow;
      this.#follow = false;
      let snap: Snapshot | undefined;
      try {
        snap = await this.#log.read(this, this.#delivered, follow);
        this.#failures = 0;
      } catch {
        // Retried on the next sweep; a Redis that stays down ends the response (the client resumes).
        if (++this.#failures >= MAX_FOLLOW_FAILURES) this.end();
        return;
      }
      if (this.#finished) return;
      // Gone from Redis (deleted when it settled or its session ended, or expired): nothing more.
      if (!snap || this.#delivered < snap.evicted) return this.end();
      if (!this.#deliver(snap.frames)) return;
      if (snap.frames.length === PAGE) {
        this.#again = true;
        continue;
      }
      if (this.#delivered >= snap.last) {
        if (snap.ended) return this.end();
        this.#ownerGone = snap.ownerAlive ? 0 : this.#ownerGone + 1;
        if (this.#ownerGone >= OWNER_GONE_STRIKES) return this.end();
      }
    } while (this.#again && !this.#finished);
  }
}
