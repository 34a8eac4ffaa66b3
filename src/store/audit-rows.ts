/**
 * What the audit stores share: the row a chained record becomes, the record a row holds, the
 * filter on indexed columns, and the error of a batch that does not extend the stored chain.
 */
import type { AuditRecord, FinalRecord } from "../audit/record.ts";
import type { AuditFilter, ChainedRecord, StoredRow } from "./types.ts";

/**
 * Records chained in memory that do not continue the stored chain (another writer appended to it
 * since their heads were read): a store with several writers refuses them rather than fork the
 * chain or skip them as "already stored".
 */
export class AuditChainConflictError extends Error {
  override readonly name = "AuditChainConflictError";
}

export function rowOf(c: ChainedRecord): StoredRow {
  const r = c.record;
  return {
    chain: r.chain,
    seq: r.seq,
    hash: r.hash,
    text: c.text,
    columns: { ts: Date.parse(r.time), type: r.type, tenant: r.tenant, subject: r.subject, target: r.target },
  };
}

/** The record a stored row holds (its text, plus the stored hash). */
export function recordOf(row: { text: string; hash: string }): AuditRecord {
  return { ...(JSON.parse(row.text) as Omit<AuditRecord, "hash">), hash: row.hash };
}

export function matches(f: AuditFilter, c: StoredRow["columns"]): boolean {
  return (
    (f.tenant === undefined || c.tenant === f.tenant) &&
    (f.subject === undefined || c.subject === f.subject) &&
    (f.tool === undefined || c.target === f.tool) &&
    (f.type === undefined || c.type === f.type) &&
    (f.since === undefined || c.ts >= f.since) &&
    (f.until === undefined || c.ts < f.until)
  );
}

/** The finalized record a chained one was made from (its chain fields taken off). */
export function finalOf(record: AuditRecord): FinalRecord {
  const { v: _v, chain: _c, seq: _s, prev: _p, hash: _h, ...final } = record;
  return final;
}
