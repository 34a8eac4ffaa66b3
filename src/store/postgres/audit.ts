/**
 * Audit records in PostgreSQL (distributed mode). Tables: src/store/postgres/db.ts migrations.
 *
 * Several edge instances append to the same chains. Two rules keep every chain whole:
 *
 * - Appends are serialized: each runs in a transaction that first takes one advisory lock
 *   (`pg_advisory_xact_lock`, released at commit). Inside it the committed head of every chain is
 *   read from `audit_heads`, the records are chained after it, and the heads move on. A lock per
 *   tenant would let tenants append in parallel, but then the paging id (a sequence) would no longer
 *   follow commit order and `audit tail` could step over a record committed late with a lower id;
 *   one lock keeps "id order = commit order" and costs one short transaction per flush per instance.
 * - `appendChained` chains on the store side (the way for several writers): it takes finalized
 *   records and returns them chained after what is committed. `append` (records an AuditLog chained
 *   in memory) checks that they extend the committed head and throws otherwise, so a second writer
 *   with a stale head fails loudly (its records stay in its spool) instead of forking the chain or
 *   having its records skipped as "already stored".
 * - A record given to `appendChained` with a write key keeps it (`write_key`, unique). An AuditLog
 *   retries a batch whose outcome it does not know (the connection was lost at COMMIT; a spool
 *   replay) with `retry`: records whose key is stored are returned as stored, not chained again.
 */
import type { Pool, PoolClient } from "pg";
import { LOCK_NAMESPACE, type PostgresDb, storeError } from "./db.ts";
import { chainRecord } from "../../audit/chain.ts";
import { type AuditRecord, type FinalRecord, GENESIS } from "../../audit/record.ts";
import { AuditChainConflictError, recordOf } from "../audit-rows.ts";
import {
  type AppendChainedOptions,
  type AuditFilter,
  type AuditPage,
  type AuditPageRequest,
  type AuditRow as Row,
  type AuditStore,
  type ChainedRecord,
  type Heads,
  type OpenCall,
  openKey,
  type StoredRow,
} from "../types.ts";

const FILTER = `($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR subject = $2)
  AND ($3::text IS NULL OR target = $3) AND ($4::text IS NULL OR type = $4)
  AND ($5::bigint IS NULL OR ts >= $5) AND ($6::bigint IS NULL OR ts < $6)`;

export class PostgresAuditStore implements AuditStore {
  readonly #db: PostgresDb;
  readonly #audit: string;
  readonly #heads: string;
  readonly #open: string;
  readonly #writers: string;
  readonly #lockKey: string;

  /** The pool belongs to the caller: `close` does not end it. */
  constructor(db: PostgresDb) {
    this.#db = db;
    this.#audit = `${db.schema}.audit`;
    this.#heads = `${db.schema}.audit_heads`;
    this.#open = `${db.schema}.audit_open`;
    this.#writers = `${db.schema}.audit_writers`;
    this.#lockKey = `audit-append:${db.schema}`;
  }

  /** Runs `fn` in a transaction holding the append lock. */
  #locked<T>(what: string, fn: (c: PoolClient) => Promise<T>): Promise<T> {
    // No deadline over the whole transaction: each statement has its own (the pool's timeouts).
    return this.#db.run(what, (pool) => this.#transaction(pool, what, fn), null);
  }

  async #transaction<T>(pool: Pool, what: string, fn: (c: PoolClient) => Promise<T>): Promise<T> {
    let client: PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      throw storeError(err, what);
    }
    let broken: unknown;
    // A checked-out pg client emits 'error' when its
    // connection drops, besides failing the query; with no listener that crashed the process.
    const onError = (err: unknown) => {
      broken ??= err;
    };
    client.on("error", onError);
    try {
      await client.query("BEGIN");
      await client.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCK_NAMESPACE, this.#lockKey]);
      const out = await fn(client);
      await client.query("COMMIT");
      return out;
    } catch (err) {
      await client.query("ROLLBACK").catch((e: unknown) => {
        broken = e;
      });
      throw storeError(err, what);
    } finally {
      // A connection that could not even roll back is discarded rather than reused.
      client.off("error", onError);
      client.release(broken instanceof Error ? broken : undefined);
    }
  }

  async #committedHeads(c: PoolClient, chains: Iterable<string>): Promise<Heads> {
    const { rows } = await c.query<{ chain: string; seq: number; hash: string }>(
      `SELECT chain, seq, hash FROM ${this.#heads} WHERE chain = ANY($1::text[])`,
      [[...new Set(chains)]],
    );
    return new Map(rows.map((r) => [r.chain, { seq: r.seq, hash: r.hash }]));
  }

  /** Inserts chained records (with their write keys, when given) and moves the heads on. */
  async #insert(
    c: PoolClient,
    records: readonly ChainedRecord[],
    keys?: readonly (string | null)[],
  ): Promise<void> {
    if (records.length === 0) return;
    const col = <T>(f: (r: AuditRecord, text: string) => T): T[] => records.map((x) => f(x.record, x.text));
    await c.query(
      `INSERT INTO ${this.#audit} (chain, seq, ts, type, tenant, subject, target, record, hash, write_key)
       SELECT chain, seq, ts, type, tenant, subject, target, record, hash, write_key
       FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
                   $8::text[], $9::text[], $10::text[]) WITH ORDINALITY
            AS u(chain, seq, ts, type, tenant, subject, target, record, hash, write_key, ord)
       ORDER BY ord`,
      [
        col((r) => r.chain),
        col((r) => r.seq),
        col((r) => Date.parse(r.time)),
        col((r) => r.type),
        col((r) => r.tenant),
        col((r) => r.subject),
        col((r) => r.target),
        col((_, text) => text),
        col((r) => r.hash),
        keys ?? records.map(() => null),
      ],
    );
    // A call's record replaces its write-ahead entry, in the same transaction.
    const closed: string[] = [];
    for (const { record: r } of records) {
      const key = r.type === "call" ? openKey(r) : undefined;
      if (key !== undefined) closed.push(key);
    }
    if (closed.length > 0) await c.query(`DELETE FROM ${this.#open} WHERE key = ANY($1::text[])`, [closed]);
    const last = new Map<string, { seq: number; hash: string }>();
    for (const { record: r } of records) last.set(r.chain, { seq: r.seq, hash: r.hash });
    await c.query(
      `INSERT INTO ${this.#heads} (chain, seq, hash)
       SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])
       ON CONFLICT (chain) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash`,
      [[...last.keys()], [...last.values()].map((h) => h.seq), [...last.values()].map((h) => h.hash)],
    );
  }

  /**
   * Stores records chained in memory. Records already stored with the same hash are skipped (spool
   * replay); a record that is neither that nor the next link of the committed chain throws
   * AuditChainConflictError and nothing of the batch is stored.
   */
  async append(records: readonly ChainedRecord[]): Promise<void> {
    if (records.length === 0) return;
    await this.#locked("audit append", async (c) => {
      const committed = await this.#committedHeads(
        c,
        records.map((x) => x.record.chain),
      );
      const replayed = records.filter((x) => x.record.seq <= (committed.get(x.record.chain)?.seq ?? 0));
      const stored = new Map<string, string>();
      if (replayed.length > 0) {
        const { rows } = await c.query<{ chain: string; seq: number; hash: string }>(
          `SELECT a.chain, a.seq, a.hash FROM ${this.#audit} a
           JOIN unnest($1::text[], $2::bigint[]) AS u(chain, seq) ON a.chain = u.chain AND a.seq = u.seq`,
          [replayed.map((x) => x.record.chain), replayed.map((x) => x.record.seq)],
        );
        for (const r of rows) stored.set(`${r.chain}\u0000${r.seq}`, r.hash);
      }
      const heads: Heads = new Map(committed);
      const fresh: ChainedRecord[] = [];
      for (const x of records) {
        const r = x.record;
        const head = heads.get(r.chain) ?? { seq: 0, hash: GENESIS };
        if (r.seq <= (committed.get(r.chain)?.seq ?? 0)) {
          if (stored.get(`${r.chain}\u0000${r.seq}`) === r.hash) continue;
          throw new AuditChainConflictError(
            `audit record ${r.seq} of chain "${r.chain}" differs from the stored one: another writer appended to this chain`,
          );
        }
        if (r.seq !== head.seq + 1 || r.prev !== head.hash) {
          throw new AuditChainConflictError(
            `audit record ${r.seq} of chain "${r.chain}" does not follow the stored head (record ${head.seq})`,
          );
        }
        heads.set(r.chain, { seq: r.seq, hash: r.hash });
        fresh.push(x);
      }
      await this.#insert(c, fresh);
    });
  }

  /**
   * Chains finalized records after the committed head of their tenant's chain and stores them, all
   * or none, in the given order; returns them as stored. Safe with any number of writers: the
   * chain is computed inside the locked transaction, from what is committed. With `keys` each
   * record keeps its write key; with `retry` too, a record whose key is stored already is returned
   * as stored instead of being chained again (see AppendChainedOptions).
   */
  async appendChained(
    records: readonly FinalRecord[],
    options: AppendChainedOptions = {},
  ): Promise<ChainedRecord[]> {
    if (records.length === 0) return [];
    const keys = options.keys;
    if (keys !== undefined && keys.length !== records.length) {
      throw new RangeError("appendChained: one write key per record");
    }
    return this.#locked("audit append", async (c) => {
      const stored = new Map<string, ChainedRecord>();
      if (keys && options.retry) {
        const { rows } = await c.query<{ write_key: string; record: string; hash: string }>(
          `SELECT write_key, record, hash FROM ${this.#audit} WHERE write_key = ANY($1::text[])`,
          [keys],
        );
        for (const r of rows) {
          stored.set(r.write_key, { record: recordOf({ text: r.record, hash: r.hash }), text: r.record });
        }
      }
      const fresh = stored.size === 0 ? records : records.filter((_, i) => !stored.has(keys?.[i] ?? ""));
      const heads = await this.#committedHeads(
        c,
        fresh.map((r) => r.tenant ?? ""),
      );
      const chained = fresh.map((r) => chainRecord(heads, r));
      const freshKeys = keys && (stored.size === 0 ? keys : keys.filter((k) => !stored.has(k)));
      await this.#insert(c, chained, freshKeys);
      if (stored.size === 0) return chained;
      let next = 0;
      return records.map((_, i) => stored.get(keys?.[i] ?? "") ?? (chained[next++] as ChainedRecord));
    });
  }

  async openCalls(entries: readonly OpenCall[]): Promise<void> {
    if (entries.length === 0) return;
    await this.#query(
      "audit open",
      `INSERT INTO ${this.#open} (key, instance, at, record)
       SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) ON CONFLICT (key) DO NOTHING`,
      [
        entries.map((e) => e.key),
        entries.map((e) => e.instance),
        entries.map((e) => e.at),
        entries.map((e) => e.record),
      ],
    );
  }

  /** Entries of instances whose heartbeat (database clock) is older than `staleMs`, or absent. */
  async orphanCalls(instance: string, staleMs: number, limit: number): Promise<OpenCall[]> {
    return this.#query<OpenCall>(
      "audit orphans",
      `SELECT o.key, o.instance, o.at, o.record FROM ${this.#open} o
       LEFT JOIN ${this.#writers} w ON w.instance = o.instance
       WHERE o.instance <> $1
         AND (w.seen_at IS NULL OR w.seen_at < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $2)
       ORDER BY o.at LIMIT $3`,
      [instance, staleMs, limit],
    );
  }

  async adoptCalls(requestId: string, instance: string): Promise<OpenCall[]> {
    return this.#query<OpenCall>(
      "audit adopt",
      `UPDATE ${this.#open} SET instance = $2 WHERE left(key, length($1) + 1) = $1 || ' '
       RETURNING key, instance, at, record`,
      [requestId, instance],
    );
  }

  async seen(instance: string): Promise<void> {
    await this.#query(
      "audit heartbeat",
      `INSERT INTO ${this.#writers} (instance, seen_at)
       VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
       ON CONFLICT (instance) DO UPDATE SET seen_at = EXCLUDED.seen_at`,
      [instance],
    );
  }

  async gone(instance: string): Promise<void> {
    await this.#query("audit heartbeat", `DELETE FROM ${this.#writers} WHERE instance = $1`, [instance]);
  }

  async #query<R extends object>(what: string, sql: string, params: unknown[]): Promise<R[]> {
    return (await this.#db.run(what, (pool) => pool.query<R>(sql, params))).rows;
  }

  async heads(): Promise<Map<string, { seq: number; hash: string }>> {
    const rows = await this.#query<{ chain: string; seq: number; hash: string }>(
      "audit heads",
      `SELECT chain, seq, hash FROM ${this.#heads}`,
      [],
    );
    return new Map(rows.map((r) => [r.chain, { seq: r.seq, hash: r.hash }]));
  }

  async query(filter: AuditFilter, page: AuditPageRequest): Promise<AuditPage> {
    const desc = page.order === "desc";
    const parsed = page.cursor !== undefined ? Number(page.cursor) : desc ? Number.MAX_SAFE_INTEGER : 0;
    const cursor = Number.isFinite(parsed) ? parsed : 0;
    // One statement, one snapshot: the page and the newest id are read together, so an ascending
    // follower resumes exactly after what it could see.
    const rows = await this.#query<Row & { max_id: number }>(
      "audit query",
      `WITH page AS (
         SELECT id, chain, seq, ts, type, tenant, subject, target, record, hash FROM ${this.#audit}
         WHERE ${FILTER} AND id ${desc ? "<" : ">"} $7 ORDER BY id ${desc ? "DESC" : ""} LIMIT $8
       )
       SELECT page.*, m.max_id FROM (SELECT COALESCE(MAX(id), 0) AS max_id FROM ${this.#audit}) m
       LEFT JOIN page ON true ORDER BY page.id ${desc ? "DESC" : ""}`,
      [
        filter.tenant ?? null,
        filter.subject ?? null,
        filter.tool ?? null,
        filter.type ?? null,
        filter.since ?? null,
        filter.until ?? null,
        cursor,
        page.limit + 1,
      ],
    );
    const maxId = rows[0]?.max_id ?? 0;
    const found = rows.filter((r) => r.id !== null);
    const more = found.length > page.limit;
    const kept = found.slice(0, page.limit);
    const records: AuditRecord[] = kept.map((r) => recordOf({ text: r.record, hash: r.hash }));
    const last = kept.at(-1);
    if (desc) return { records, next: more && last ? String(last.id) : null, more };
    // Ascending: a page that reached the end resumes after the newest row that exists now.
    const next = more && last ? last.id : maxId;
    return { records, next: String(Math.max(next, cursor)), more };
  }

  async chains(): Promise<string[]> {
    const rows = await this.#query<{ chain: string }>(
      "audit chains",
      `SELECT chain FROM ${this.#heads} ORDER BY chain COLLATE "C"`,
      [],
    );
    return rows.map((r) => r.chain);
  }

  async scan(chain: string, afterSeq: number, limit: number): Promise<StoredRow[]> {
    const rows = await this.#query<Row>(
      "audit scan",
      `SELECT id, chain, seq, ts, type, tenant, subject, target, record, hash FROM ${this.#audit}
       WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
      [chain, afterSeq, limit],
    );
    return rows.map((r) => ({
      chain: r.chain,
      seq: r.seq,
      hash: r.hash,
      text: r.record,
      columns: { ts: r.ts, type: r.type, tenant: r.tenant, subject: r.subject, target: r.target },
    }));
  }

  async close(): Promise<void> {}
}
