/**
 * The per-tenant hash chain (tamper evidence). Each record holds `prev`, the hash of the record
 * before it in its chain, and `hash` = SHA-256 of its own canonical JSON (every field but `hash`).
 * Editing a record breaks its hash; deleting one leaves a gap in `seq` and a `prev` that names a
 * record that is not there. See docs/audit.md for what the chain does not prove.
 */
import {
  type AuditRecord,
  canonicalAt,
  canonicalJson,
  type FinalRecord,
  GENESIS,
  jsonString,
  sha256Hex,
} from "./record.ts";
import type { AuditStore, ChainedRecord, Heads, StoredRow } from "../store/types.ts";

/** Every member a hashed record may have (the compiler checks the list against AuditRecord). */
const RECORD_MEMBERS: Record<keyof Omit<AuditRecord, "hash">, true> = {
  v: true,
  chain: true,
  seq: true,
  time: true,
  type: true,
  tenant: true,
  subject: true,
  principal: true,
  auth: true,
  clientId: true,
  keyId: true,
  session: true,
  server: true,
  instance: true,
  method: true,
  target: true,
  rpcId: true,
  args: true,
  decision: true,
  code: true,
  status: true,
  outcome: true,
  latencyMs: true,
  upstreamMs: true,
  requestId: true,
  traceId: true,
  detail: true,
  egress: true,
  prev: true,
};
/** Those members in canonical order, each with its `"name":` already written. */
const RECORD_KEYS = Object.keys(RECORD_MEMBERS).sort();
const RECORD_PREFIXES = RECORD_KEYS.map((k) => `${jsonString(k)}:`);

/**
 * canonicalJson of a record without its `hash` member (the text the hash covers), with the key
 * order computed once instead of sorting ~28 keys per record. The same text by construction
 * (sorted keys, undefined members dropped, members written by canonicalJson); a record with any
 * member not in RECORD_MEMBERS takes the general path. The record is built by chainRecord from a
 * literal and a spread, so its own properties are all enumerable.
 */
function recordText(record: AuditRecord): string {
  const o = record as unknown as Record<string, unknown>;
  let present = 1; // the hash
  let out = "{";
  for (let i = 0; i < RECORD_KEYS.length; i++) {
    const k = RECORD_KEYS[i] as string;
    if (!Object.hasOwn(o, k)) continue;
    present++;
    const member = o[k];
    if (member === undefined) continue;
    if (out.length > 1) out += ",";
    out += RECORD_PREFIXES[i] as string;
    out += canonicalAt(member, 1);
  }
  if (present !== Object.keys(o).length) {
    const { hash: _hash, ...body } = record;
    return canonicalJson(body);
  }
  return `${out}}`;
}

/** Chains a finalized record after the head of its tenant's chain; advances the head. */
export function chainRecord(heads: Heads, r: FinalRecord): ChainedRecord {
  const chain = r.tenant ?? "";
  const head = heads.get(chain) ?? { seq: 0, hash: GENESIS };
  // One object: the hash member is there from the start (one shape), written once the text it
  // covers (every member but the hash) is made.
  const record: AuditRecord = { v: 1, chain, seq: head.seq + 1, prev: head.hash, ...r, hash: "" };
  const text = recordText(record);
  record.hash = sha256Hex(text);
  heads.set(chain, { seq: record.seq, hash: record.hash });
  return { record, text };
}

export interface ChainBreak {
  /** The first record (by seq) where the chain does not hold. */
  seq: number;
  reason: string;
}

export interface ChainReport {
  tenant: string | null;
  chain: string;
  records: number;
  /** Hash of the last record checked. */
  head: string | null;
  ok: boolean;
  break?: ChainBreak;
}

export interface VerifyReport {
  ok: boolean;
  chains: ChainReport[];
}

function checkRow(row: StoredRow, expectedSeq: number, prevHash: string): string | undefined {
  if (row.seq !== expectedSeq) {
    return row.seq > expectedSeq
      ? `record ${expectedSeq}${row.seq - 1 > expectedSeq ? `..${row.seq - 1}` : ""} missing (deleted?)`
      : `record ${row.seq} out of order`;
  }
  if (sha256Hex(row.text) !== row.hash)
    return `record ${row.seq} was altered: its hash does not match its content`;
  let rec: Omit<AuditRecord, "hash">;
  try {
    rec = JSON.parse(row.text) as Omit<AuditRecord, "hash">;
  } catch {
    return `record ${row.seq} does not parse`;
  }
  if (rec.prev !== prevHash)
    return `record ${row.seq} does not follow record ${row.seq - 1}: prev hash differs`;
  if (rec.seq !== row.seq || rec.chain !== row.chain)
    return `record ${row.seq} was moved (seq or chain differs)`;
  const c = row.columns;
  if (
    c.type !== rec.type ||
    c.tenant !== rec.tenant ||
    c.subject !== rec.subject ||
    c.target !== rec.target ||
    c.ts !== Date.parse(rec.time)
  ) {
    return `record ${row.seq}: indexed columns differ from the hashed record`;
  }
  return undefined;
}

/**
 * Verifies every chain (or one tenant's) by reading the store in seq order. `known` are the heads
 * the running edge wrote itself: a store whose chain ends before them lost its newest records.
 */
export async function verifyChains(
  store: AuditStore,
  options: { tenant?: string | null; known?: Heads; pageSize?: number } = {},
): Promise<VerifyReport> {
  const all = await store.chains();
  const wanted = options.tenant === undefined ? all : all.filter((c) => c === (options.tenant ?? ""));
  const pageSize = options.pageSize ?? 1000;
  const chains: ChainReport[] = [];
  for (const chain of wanted) {
    let seq = 0;
    let prev = GENESIS;
    let records = 0;
    let broken: ChainBreak | undefined;
    let tenant: string | null = chain === "" ? null : chain;
    for (;;) {
      const rows = await store.scan(chain, seq, pageSize);
      for (const row of rows) {
        const reason = checkRow(row, seq + 1, prev);
        if (reason) {
          broken = { seq: Math.min(row.seq, seq + 1), reason };
          break;
        }
        if (records === 0) tenant = row.columns.tenant;
        records++;
        seq = row.seq;
        prev = row.hash;
      }
      if (broken || rows.length < pageSize) break;
    }
    const known = options.known?.get(chain);
    if (!broken && known && known.seq > seq) {
      broken = { seq: seq + 1, reason: `records ${seq + 1}..${known.seq} missing: the edge wrote them` };
    }
    chains.push({
      tenant,
      chain,
      records,
      head: records > 0 ? prev : null,
      ok: !broken,
      ...(broken ? { break: broken } : {}),
    });
  }
  return { ok: chains.every((c) => c.ok), chains };
}
