/**
 * The audit log: subscribes to the pipeline's diagnostics channels, queues drafts, and writes them
 * in batches off the request path. One file of ~660 lines on purpose: the queue, the spool, the
 * two ways of chaining and the write-ahead entries share one flush sequence and its state (what
 * is spooled decides where the next record and the next entry go).
 *
 *   publish ──▶ draft (field copies) ──▶ queue ──(every flushInterval)──▶ finalize ▶ chain ▶ store
 *                                                                                  └─ store down ▶ spool
 *
 * - The request path only builds a draft and pushes it (subscribers run inside `publish`).
 * - Each flush finalizes the drafts (argument digests, escaping, bounds), chains them per tenant and
 *   appends the batch to the store in one transaction.
 * - Who chains depends on the store. One writer (SQLite, memory): this process, with the chain
 *   heads in memory; a spooled record is chained already and keeps its place in the chain. Several
 *   writers (a store with `appendChained`, PostgreSQL): the store, after what is committed, since
 *   heads held in memory go stale as soon as another instance appends. Each finalized record then
 *   gets a write key (unique to this process) and the spool holds it finalized but unchained; a
 *   replay chains it after whatever the other instances stored meanwhile, and the key makes a
 *   replay (or a retry after an error that may have hidden a commit) store it once.
 * - When the store fails, the batch goes to the spool (fsynced JSON lines) and so does everything
 *   after it until a replay, tried every `retryInterval`, has moved the spool into the store in
 *   order.
 * - `accepting()` is false when the spool is at its cap (or the queue is), and the pipeline then
 *   refuses `tools/call` with 503 EDGE_AUDIT_UNAVAILABLE rather than run a call unaudited.
 * - On stop the queue is flushed; after a SIGKILL at most the drafts of the last flush interval
 *   (default 100 ms) are missing.
 * - Write-ahead (`ahead`): before an audited call is forwarded, an entry for it is stored (or, the
 *   store down, spooled), awaited. The call's record removes it in the transaction that stores the
 *   record. Entries whose writer is gone (a SIGKILL; a crash) are recovered as records with
 *   outcome `unknown`: by this process at start when one process writes the store, by any live
 *   instance once the writer's heartbeat is stale when several do. So a call that reached the
 *   upstream is recorded even if the edge died before the answer.
 */
import { randomBytes } from "node:crypto";
import diagnostics_channel from "node:diagnostics_channel";
import type { Route } from "../upstream/types.ts";
import {
  type AdminEvent,
  adminChannel,
  type RequestEndEvent,
  type RequestFacts,
  requestEndChannel,
  type SessionEvent,
  sessionChannel,
  type VaultEvent,
  type AsEvent,
  vaultChannel,
  asChannel,
} from "../observability/channels.ts";
import type { Logger } from "../observability/logger.ts";
import { chainRecord, type VerifyReport, verifyChains } from "./chain.ts";
import { GatewayError } from "../errors/errors.ts";
import { type Heads, type OpenCall, openKey } from "../store/types.ts";
import {
  draftFromAdmin,
  draftFromAs,
  draftFromSession,
  draftFromVault,
  draftsFromRequestEnd,
} from "./events.ts";
import {
  type ArgsPolicy,
  type AuditDraft,
  type AuditOutcome,
  type FinalRecord,
  finalizeDraft,
  GENESIS,
} from "./record.ts";
import { requestIdKey, type RpcId } from "../mcp/jsonrpc.ts";
import { type KeyedFinal, Spool, type SpoolEntry } from "./spool.ts";
import { AuditChainConflictError, finalOf } from "../store/audit-rows.ts";
import {
  type AuditFilter,
  type AuditPage,
  type AuditPageRequest,
  type AuditStore,
  type ChainedRecord,
} from "../store/types.ts";

/** Records per store call when the store chains (one transaction each). */
const CHAINED_BATCH = 1000;

/** How long a call waits for its write-ahead entry to be stored before it is spooled instead (ms). */
const AHEAD_WAIT_MS = 500;
/** Several writers: how often an instance renews its heartbeat and looks for orphans (ms). */
const AHEAD_BEAT_MS = 5000;
/** A writer whose heartbeat is older than this is gone: its entries are recovered (ms). */
export const AHEAD_STALE_MS = 3 * AHEAD_BEAT_MS;
/** Entries recovered per look. */
const AHEAD_RECOVER_BATCH = 1000;

/** The record of a call whose instance stopped before it was answered. */
function recoveredRecord(o: OpenCall): FinalRecord {
  const r = JSON.parse(o.record) as FinalRecord;
  return {
    ...r,
    outcome: { kind: "unknown" },
    detail: { reason: "the instance stopped before the call was answered" },
  };
}

type AppendChained = NonNullable<AuditStore["appendChained"]>;

export interface AuditLogOptions {
  store: AuditStore;
  /** The spool file; undefined = no spool (records wait in memory while the store is down). */
  spoolPath?: string;
  spoolMaxBytes?: number;
  /** Time between flushes (ms). Default 100. */
  flushInterval?: number;
  /** Drafts queued before `accepting()` turns false. Default 10 000. */
  queueMax?: number;
  /** Time between attempts to reach a failed store (ms). Default 1000. */
  retryInterval?: number;
  args: ArgsPolicy;
  log: Logger;
}

export interface AuditStats {
  queued: number;
  spooled: number;
  spoolBytes: number;
  written: number;
  dropped: number;
  storeUp: boolean;
}

export class AuditLog {
  readonly #o: AuditLogOptions;
  readonly #store: AuditStore;
  /** Set when the store chains (several writers); undefined: this process chains. */
  readonly #appendChained: AppendChained | undefined;
  /** Write keys: `<random per process>.<counter>` (store-side chaining only). */
  readonly #keyPrefix: string;
  #keyCounter = 0;
  readonly #spool: Spool | undefined;
  readonly #queueMax: number;
  readonly #retryInterval: number;
  /** Heads of every chain, including records spooled but not yet stored. */
  readonly #heads: Heads;
  /** Heads of what this process wrote to the store (verification: a store must reach them). */
  readonly #persisted: Heads = new Map();
  #queue: AuditDraft[] = [];
  /** Chained records neither store nor spool took (disk full): they go first next time. */
  #limbo: ChainedRecord[] = [];
  /** The same when the store chains: finalized records, possibly stored by the failed call. */
  #limboFinal: KeyedFinal[] = [];
  #retryAt = 0;
  #storeUp = true;
  #written = 0;
  #dropped = 0;
  #lastDropLog = 0;
  #tail: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #soon = false;
  #closed = false;
  /** Set for the last flush at stop: the spool takes everything, over its cap if it must. */
  #force = false;
  /** This process as a writer of write-ahead entries (recovery tells writers apart by it). */
  readonly instance = randomBytes(9).toString("base64url");
  /** Write-ahead entries of this event-loop turn, stored together. */
  #opening: OpenCall[] = [];
  #openingDone: Promise<void> | undefined;
  /** Orphaned entries turned into records, chained at the next flush. */
  #recovered: { key: string; final: FinalRecord }[] = [];
  #aheadTimer: NodeJS.Timeout | undefined;
  #recovering = false;
  /** Only requests to these routes are recorded (another gateway in the same process has its own). */
  #routes: { has(route: Route): boolean } | undefined;
  readonly #onEnd = (m: unknown) => this.#enqueueAll(this.#ownRequest(m as RequestEndEvent));
  readonly #onSession = (m: unknown) => this.enqueue(draftFromSession(m as SessionEvent));
  readonly #onAdmin = (m: unknown) => this.enqueue(draftFromAdmin(m as AdminEvent));
  readonly #onVault = (m: unknown) => this.enqueue(draftFromVault(m as VaultEvent));
  readonly #onAs = (m: unknown) => this.enqueue(draftFromAs(m as AsEvent));

  private constructor(o: AuditLogOptions, heads: Heads, spool: Spool | undefined) {
    this.#o = o;
    this.#store = o.store;
    this.#spool = spool;
    this.#heads = heads;
    this.#queueMax = o.queueMax ?? 10_000;
    this.#retryInterval = o.retryInterval ?? 1000;
    this.#appendChained = o.store.appendChained?.bind(o.store);
    this.#keyPrefix = this.#appendChained ? randomBytes(12).toString("base64url") : "";
  }

  /**
   * Loads the chain heads (store, then anything still spooled after them), replays the spool when
   * the store takes it, and starts the flush timer. Call `subscribe()` to start recording.
   */
  static async open(o: AuditLogOptions): Promise<AuditLog> {
    const heads = await o.store.heads();
    let spool: Spool | undefined;
    if (o.spoolPath) {
      spool = new Spool(o.spoolPath, o.spoolMaxBytes ?? 64 * 1024 * 1024);
      const entries = spool.open();
      // One writer: chained records in the spool are the newest links of their chains. Unchained
      // ones (left by a run whose store chained, before a switch to this store) are chained now,
      // in spool order, and the spool rewritten chained, so that new records follow them.
      if (!o.store.appendChained) {
        let unchained = false;
        const converted = entries.map((e): SpoolEntry => {
          if (e.kind === "open") return e;
          if (e.kind === "final") {
            unchained = true;
            return { kind: "chained", chained: chainRecord(heads, e.final) };
          }
          const c = e.chained;
          const h = heads.get(c.record.chain);
          if (!h || c.record.seq > h.seq)
            heads.set(c.record.chain, { seq: c.record.seq, hash: c.record.hash });
          return e;
        });
        if (unchained) spool.rewrite(converted);
      }
    }
    const audit = new AuditLog(o, heads, spool);
    for (const [chain, h] of await o.store.heads()) audit.#persisted.set(chain, h);
    if (spool && spool.size > 0) {
      o.log.warn({ spooled: spool.size }, "audit: replaying spooled records");
      await audit.flush();
    }
    audit.#timer = setInterval(() => void audit.flush(), o.flushInterval ?? 100);
    audit.#timer.unref();
    await audit.#beat();
    await audit.#recover();
    // Several writers: stay visible as alive, and recover what instances that died left open.
    if (audit.#appendChained) {
      audit.#aheadTimer = setInterval(() => {
        void audit.#beat().then(() => audit.#recover());
      }, AHEAD_BEAT_MS);
      audit.#aheadTimer.unref();
    }
    return audit;
  }

  async #beat(): Promise<void> {
    await this.#store.seen(this.instance).catch(() => undefined);
  }

  /** Records, with outcome `unknown`, the write-ahead entries of writers that are gone. */
  async #recover(): Promise<void> {
    if (this.#recovering || this.#closed) return;
    this.#recovering = true;
    try {
      const orphans = await this.#store.orphanCalls(this.instance, AHEAD_STALE_MS, AHEAD_RECOVER_BATCH);
      if (orphans.length === 0) return;
      // The key makes two instances recovering the same entry store one record.
      for (const o of orphans) this.#recovered.push({ key: `ahead:${o.key}`, final: recoveredRecord(o) });
      this.#o.log.warn(
        { calls: orphans.length },
        "audit: calls in flight when an instance stopped are recorded with outcome unknown",
      );
      await this.flush();
    } catch (err) {
      this.#o.log.debug({ err }, "audit: write-ahead entries could not be read");
    } finally {
      this.#recovering = false;
    }
  }

  /**
   * A stream taken over from an instance that died (distributed mode): the write-ahead entries of
   * its POST become this instance's (no longer orphans to recover as `unknown`), and `complete`
   * records them with the outcomes this instance relayed.
   */
  async adopt(requestId: string): Promise<OpenCall[]> {
    try {
      return await this.#store.adoptCalls(requestId, this.instance);
    } catch (err) {
      this.#o.log.warn({ err }, "audit: write-ahead entries of a taken-over call could not be adopted");
      return [];
    }
  }

  /**
   * Records adopted calls with their outcomes (keyed by requestIdKey of their JSON-RPC ids); a call
   * without one is `unknown`. The write key is the one a recovery would use: one record per call.
   */
  complete(entries: readonly OpenCall[], outcomes: ReadonlyMap<string, AuditOutcome> | undefined): void {
    const now = new Date().toISOString();
    for (const o of entries) {
      const r = JSON.parse(o.record) as FinalRecord;
      let outcome: AuditOutcome | undefined;
      try {
        outcome = r.rpcId !== null ? outcomes?.get(requestIdKey(JSON.parse(r.rpcId) as RpcId)) : undefined;
      } catch {
        outcome = undefined;
      }
      this.#recovered.push({
        key: `ahead:${o.key}`,
        final: {
          ...r,
          time: now,
          outcome: outcome ?? { kind: "unknown" },
          detail: { reason: "the instance relaying the call stopped; another took its stream over" },
        },
      });
    }
  }

  /**
   * Write-ahead: stores an entry for each audited call of the request, before it is forwarded;
   * resolves once it is stored, or spooled when the store does not take it within AHEAD_WAIT_MS.
   * Rejects with EDGE_AUDIT_UNAVAILABLE when neither did (the call is refused rather than run
   * without a trace). Undefined when the request holds no audited call.
   */
  ahead(facts: RequestFacts): Promise<void> | undefined {
    if (this.#closed || (this.#routes && !this.#routes.has(facts.route))) return undefined;
    const drafts = draftsFromRequestEnd({ request: facts, status: 0, error: undefined, durationMs: 0 });
    let added = false;
    const at = Date.now();
    for (const d of drafts) {
      if (d.type !== "call") continue;
      d.outcome = { kind: "unknown" };
      d.decision = "allowed";
      d.status = null;
      d.code = null;
      d.latencyMs = null;
      d.upstreamMs = null;
      const final = this.#finalize(d);
      const key = openKey(final);
      if (key === undefined) continue;
      this.#opening.push({ key, instance: this.instance, at, record: JSON.stringify(final) });
      added = true;
    }
    if (!added) return undefined;
    this.#openingDone ??= new Promise<void>((r) => setImmediate(r)).then(() => this.#writeAhead());
    return this.#openingDone;
  }

  async #writeAhead(): Promise<void> {
    const batch = this.#opening;
    this.#opening = [];
    this.#openingDone = undefined;
    // Known down (or a spool still waiting for it): straight to the spool.
    if (this.#storeUp || Date.now() >= this.#retryAt) {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          this.#store.openCalls(batch),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error("write-ahead entry not stored in time")),
              AHEAD_WAIT_MS,
            );
          }),
        ]);
        return;
      } catch (err) {
        this.#down(err);
      } finally {
        clearTimeout(timer);
      }
    }
    try {
      if (!this.#spool) throw new Error("no spool");
      this.#spool.appendOpen(batch);
    } catch (err) {
      this.#o.log.error({ err }, "audit: a write-ahead entry could not be kept; the call is refused");
      throw new GatewayError("EDGE_AUDIT_UNAVAILABLE");
    }
  }

  /** Records requests to these routes only. */
  restrict(routes: { has(route: Route): boolean }): void {
    this.#routes = routes;
  }

  subscribe(): void {
    diagnostics_channel.subscribe(requestEndChannel.name, this.#onEnd);
    diagnostics_channel.subscribe(sessionChannel.name, this.#onSession);
    diagnostics_channel.subscribe(adminChannel.name, this.#onAdmin);
    diagnostics_channel.subscribe(vaultChannel.name, this.#onVault);
    diagnostics_channel.subscribe(asChannel.name, this.#onAs);
  }

  unsubscribe(): void {
    diagnostics_channel.unsubscribe(requestEndChannel.name, this.#onEnd);
    diagnostics_channel.unsubscribe(sessionChannel.name, this.#onSession);
    diagnostics_channel.unsubscribe(adminChannel.name, this.#onAdmin);
    diagnostics_channel.unsubscribe(vaultChannel.name, this.#onVault);
    diagnostics_channel.unsubscribe(asChannel.name, this.#onAs);
  }

  /**
   * False when a new record might not be kept: the spool is at its cap, chained records are waiting
   * for a place, or the queue is full. The pipeline refuses `tools/call` then (503).
   */
  accepting(): boolean {
    return (
      this.#limbo.length === 0 &&
      this.#limboFinal.length === 0 &&
      this.#queue.length < this.#queueMax &&
      !(this.#spool?.full ?? false)
    );
  }

  /** Queues one draft (request path: O(1), no I/O). */
  enqueue(d: AuditDraft): void {
    if (this.#closed) return;
    // Hard bound: twice the soft one. Only refusals, sessions and admin actions can get here once
    // `accepting()` is false, and memory must stay bounded while the store and the spool are both out.
    if (this.#queue.length >= this.#queueMax * 2) {
      this.#dropped++;
      const now = Date.now();
      if (now - this.#lastDropLog > 5000) {
        this.#lastDropLog = now;
        this.#o.log.error({ dropped: this.#dropped }, "audit: queue full, record dropped");
      }
      return;
    }
    this.#queue.push(d);
    // A burst larger than a batch is flushed at once rather than waiting for the timer.
    if (this.#queue.length >= 2000 && !this.#soon) {
      this.#soon = true;
      setImmediate(() => {
        this.#soon = false;
        void this.flush();
      });
    }
  }

  #ownRequest(ev: RequestEndEvent): AuditDraft[] {
    if (this.#routes && !this.#routes.has(ev.request.route)) return [];
    return draftsFromRequestEnd(ev);
  }

  #enqueueAll(drafts: AuditDraft[]): void {
    for (const d of drafts) this.enqueue(d);
  }

  /** Writes everything queued (serialized: one flush at a time, in order). */
  flush(): Promise<void> {
    this.#tail = this.#tail.then(
      () => this.#flushOnce(),
      () => this.#flushOnce(),
    );
    return this.#tail.catch((err: unknown) => {
      this.#o.log.error({ err }, "audit: flush failed");
    });
  }

  #finalize(d: AuditDraft): FinalRecord {
    try {
      return finalizeDraft(d, this.#o.args);
    } catch {
      // Never lose a record to a formatting bug: keep the draft's fields, drop the arguments.
      return finalizeDraft({ ...d, rawArgs: "[arguments could not be recorded]" }, this.#o.args);
    }
  }

  async #flushOnce(): Promise<void> {
    if (this.#appendChained) return this.#flushStoreChained(this.#appendChained);
    const spool = this.#spool;
    if (spool && spool.size > 0 && Date.now() >= this.#retryAt) await this.#replay(spool);
    if (this.#queue.length === 0 && this.#limbo.length === 0 && this.#recovered.length === 0) return;
    const spooling = (spool?.size ?? 0) > 0 || (!spool && !this.#storeUp && Date.now() < this.#retryAt);
    // Spool full and the store still out: drafts stay queued, unchained, until there is room.
    if (spooling && spool?.full && !this.#force) return;
    const drafts = this.#queue;
    this.#queue = [];
    const batch = this.#limbo;
    this.#limbo = [];
    for (const r of this.#recovered.splice(0)) batch.push(chainRecord(this.#heads, r.final));
    for (const d of drafts) batch.push(chainRecord(this.#heads, this.#finalize(d)));
    if (!spooling) {
      try {
        await this.#store.append(batch);
        this.#stored(batch);
        return;
      } catch (err) {
        this.#down(err);
      }
    }
    if (!spool) {
      this.#limbo = batch;
      return;
    }
    try {
      spool.append(batch);
    } catch (err) {
      this.#o.log.error({ err, records: batch.length }, "audit: spool write failed; records kept in memory");
      this.#limbo = batch;
    }
  }

  async #replay(spool: Spool): Promise<void> {
    // One writer: the spool holds chained records (open() chained any others) and write-ahead
    // entries, replayed in order (a call's entry, then its record, which removes it).
    const entries = spool.readAll();
    const records: ChainedRecord[] = [];
    try {
      for (const run of runsOf(entries)) {
        if (run[0]?.kind === "open") {
          await this.#store.openCalls(run.map((e) => (e as SpoolEntry & { kind: "open" }).open));
          continue;
        }
        const chained = run.flatMap((e) => (e.kind === "chained" ? [e.chained] : []));
        await this.#store.append(chained);
        records.push(...chained);
      }
    } catch (err) {
      this.#down(err);
      return;
    }
    spool.clear();
    this.#stored(records);
    this.#o.log.warn({ replayed: records.length }, "audit: store reachable again, spool replayed");
  }

  /**
   * The flush when the store chains: finalized records get a write key and go to `appendChained`
   * (one transaction per CHAINED_BATCH records); when the store fails, what it did not take goes
   * to the spool unchained. Records that a failed call may have stored are retried with
   * `retry`, so that their keys keep them from being stored twice.
   */
  async #flushStoreChained(append: AppendChained): Promise<void> {
    const spool = this.#spool;
    if (spool && spool.size > 0 && Date.now() >= this.#retryAt) await this.#replayStoreChained(spool, append);
    if (this.#queue.length === 0 && this.#limboFinal.length === 0 && this.#recovered.length === 0) return;
    const spooling = (spool?.size ?? 0) > 0 || (!spool && !this.#storeUp && Date.now() < this.#retryAt);
    if (spooling && spool?.full && !this.#force) return;
    const drafts = this.#queue;
    this.#queue = [];
    let batch = this.#limboFinal;
    this.#limboFinal = [];
    // Recovered records go as retries: another instance may have stored the same one (same key).
    batch.push(...this.#recovered.splice(0));
    const retried = batch.length;
    for (const d of drafts)
      batch.push({
        key: `${this.#keyPrefix}.${(this.#keyCounter++).toString(36)}`,
        final: this.#finalize(d),
      });
    if (!spooling) {
      let done = 0;
      try {
        for (; done < batch.length; done += CHAINED_BATCH) {
          const chunk = batch.slice(done, done + CHAINED_BATCH);
          const stored = await append(
            chunk.map((k) => k.final),
            { keys: chunk.map((k) => k.key), retry: done < retried },
          );
          this.#stored(stored);
        }
        return;
      } catch (err) {
        this.#down(err);
      }
      batch = batch.slice(done);
    }
    if (!spool) {
      this.#limboFinal = batch;
      return;
    }
    try {
      spool.appendFinal(batch);
    } catch (err) {
      this.#o.log.error({ err, records: batch.length }, "audit: spool write failed; records kept in memory");
      this.#limboFinal = batch;
    }
  }

  /**
   * Replays the spool, in order, into a store that chains: unchained records through
   * `appendChained` (with their keys, as a retry), chained ones (a spool of an older version or of
   * a one-writer store) through `append`, which skips what is stored already. A chained record
   * that no longer follows the stored head (another instance appended to its chain since) is
   * chained again after it rather than lost. The spool is emptied once all of it is stored; a
   * replay cut short is resumed from the start next time (the keys and `append` skip what is in).
   */
  async #replayStoreChained(spool: Spool, append: AppendChained): Promise<void> {
    const entries = spool.readAll();
    let i = 0;
    try {
      while (i < entries.length) {
        const kind = (entries[i] as SpoolEntry).kind;
        let j = i;
        while (j < entries.length && j - i < CHAINED_BATCH && (entries[j] as SpoolEntry).kind === kind) j++;
        const run = entries.slice(i, j);
        if (kind === "open") {
          await this.#store.openCalls(run.map((e) => (e as SpoolEntry & { kind: "open" }).open));
        } else if (kind === "final") {
          const finals = run as (SpoolEntry & { kind: "final" })[];
          this.#stored(
            await append(
              finals.map((e) => e.final),
              { keys: finals.map((e) => e.key), retry: true },
            ),
          );
        } else {
          await this.#replayChained(
            (run as (SpoolEntry & { kind: "chained" })[]).map((e) => e.chained),
            append,
          );
        }
        i = j;
      }
    } catch (err) {
      this.#down(err);
      return;
    }
    spool.clear();
    this.#o.log.warn({ replayed: entries.length }, "audit: store reachable again, spool replayed");
  }

  async #replayChained(records: ChainedRecord[], append: AppendChained): Promise<void> {
    try {
      await this.#store.append(records);
      this.#stored(records);
      return;
    } catch (err) {
      if (!(err instanceof AuditChainConflictError)) throw err;
    }
    for (const c of records) {
      try {
        await this.#store.append([c]);
        this.#stored([c]);
      } catch (err) {
        if (!(err instanceof AuditChainConflictError)) throw err;
        // The key names the original link, so a replay cut short and resumed stores it once.
        const key = `rechained.${c.record.chain}.${c.record.seq}.${c.record.hash}`;
        this.#stored(await append([finalOf(c.record)], { keys: [key], retry: true }));
        this.#o.log.warn(
          { chain: c.record.chain, seq: c.record.seq },
          "audit: a spooled record no longer followed its stored chain; chained again after the stored head",
        );
      }
    }
  }

  #stored(batch: readonly ChainedRecord[]): void {
    for (const { record: r } of batch) {
      const h = this.#persisted.get(r.chain);
      if (!h || r.seq > h.seq) this.#persisted.set(r.chain, { seq: r.seq, hash: r.hash });
    }
    this.#written += batch.length;
    if (!this.#storeUp) this.#o.log.warn("audit: store reachable again");
    this.#storeUp = true;
  }

  #down(err: unknown): void {
    this.#retryAt = Date.now() + this.#retryInterval;
    if (this.#storeUp) {
      this.#o.log.error(
        { err, spool: this.#spool?.path },
        "audit: store unavailable; records go to the spool until it is back",
      );
    }
    this.#storeUp = false;
  }

  stats(): AuditStats {
    return {
      queued: this.#queue.length + this.#limbo.length + this.#limboFinal.length,
      spooled: this.#spool?.size ?? 0,
      spoolBytes: this.#spool?.bytes ?? 0,
      written: this.#written,
      dropped: this.#dropped,
      storeUp: this.#storeUp,
    };
  }

  /** Records in the store (after a flush, so that what happened just now is there). */
  async query(filter: AuditFilter, page: AuditPageRequest): Promise<AuditPage> {
    await this.flush();
    return this.#store.query(filter, page);
  }

  /** Verifies the stored chains against themselves and against what this process wrote. */
  async verify(tenant?: string | null): Promise<VerifyReport & { pending: number }> {
    await this.flush();
    // A copy: a flush (the timer) may store more while the chains are read, and a head learnt
    // after a chain was read would look like records missing from it.
    const report = await verifyChains(this.#store, {
      ...(tenant !== undefined ? { tenant } : {}),
      known: new Map(this.#persisted),
    });
    return { ...report, pending: this.stats().queued + this.stats().spooled };
  }

  /**
   * The hash a new record of this chain would follow (tests). When the store chains: the last
   * record this process stored (another instance may have appended since).
   */
  head(chain: string): string {
    return (this.#appendChained ? this.#persisted : this.#heads).get(chain)?.hash ?? GENESIS;
  }

  /** Stops recording, flushes what is queued (SIGTERM), closes the spool and the store. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.unsubscribe();
    if (this.#timer) clearInterval(this.#timer);
    this.#force = true;
    await this.flush();
    this.#closed = true;
    if (this.#aheadTimer) clearInterval(this.#aheadTimer);
    await this.#store.gone(this.instance).catch(() => undefined);
    const left = this.stats();
    if (left.queued > 0 || left.spooled > 0) {
      this.#o.log.warn(left, "audit: records left in the spool (replayed at the next start)");
    }
    this.#spool?.close();
    await this.#store.close();
  }
}

/** Consecutive entries of one kind, at most CHAINED_BATCH each (a spool is replayed in order). */
function runsOf(entries: readonly SpoolEntry[]): SpoolEntry[][] {
  const runs: SpoolEntry[][] = [];
  let run: SpoolEntry[] = [];
  for (const e of entries) {
    if (run.length > 0 && (run[0]?.kind !== e.kind || run.length >= CHAINED_BATCH)) {
      runs.push(run);
      run = [];
    }
    run.push(e);
  }
  if (run.length > 0) runs.push(run);
  return runs;
}
