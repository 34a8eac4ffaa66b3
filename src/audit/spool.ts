/**
 * The audit spool: an append-only JSON-lines file where records wait while the store is
 * unavailable. One line per record, of two kinds:
 *
 * - a record chained in memory (embedded mode, one writer): `{"hash": "...", "text": "<the hashed
 *   canonical JSON>"}`, so a replay stores byte for byte what was hashed;
 * - a finalized record not chained yet (a store that chains on its side, several writers):
 *   `{"key": "<write key>", "final": {...}}`. It is chained when the store takes it, after whatever
 *   the other writers stored meanwhile; the write key makes that replay store it once.
 *
 * - a write-ahead entry (a call about to be forwarded while the store is down): `{"open": {...}}`.
 *   A replay stores it as the store would have; the record of the call, later in the spool, then
 *   removes it.
 *
 * Spools written before the second kind existed hold only the first and are replayed as they were.
 *
 * Durability (docs/audit.md): every append is one write followed by fdatasync, so a spooled batch
 * survives a process crash and a power loss. A line torn by a crash mid-write is the only thing that
 * can be incomplete; it is dropped (and truncated away) when the spool is opened.
 */
import {
  closeSync,
  fdatasyncSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import type { AuditRecord, FinalRecord } from "./record.ts";
import type { ChainedRecord, OpenCall } from "../store/types.ts";

/** A finalized record and its write key (unique across writers), waiting to be chained by the store. */
export interface KeyedFinal {
  key: string;
  final: FinalRecord;
}

/** One spooled record: chained in memory, or finalized and waiting for the store to chain it. */
export type SpoolEntry =
  | { kind: "chained"; chained: ChainedRecord }
  | ({ kind: "final" } & KeyedFinal)
  | { kind: "open"; open: OpenCall };

function lineOf(e: SpoolEntry): string {
  if (e.kind === "open") return `${JSON.stringify({ open: e.open })}\n`;
  return e.kind === "chained"
    ? `${JSON.stringify({ hash: e.chained.record.hash, text: e.chained.text })}\n`
    : `${JSON.stringify({ key: e.key, final: e.final })}\n`;
}

export class Spool {
  readonly path: string;
  readonly maxBytes: number;
  #fd: number | undefined;
  #bytes = 0;
  #count = 0;

  constructor(path: string, maxBytes: number) {
    this.path = path;
    this.maxBytes = maxBytes;
  }

  /** Opens (creating) the file and returns the records already in it, in order. */
  open(): SpoolEntry[] {
    mkdirSync(dirname(this.path), { recursive: true });
    this.#fd = openSync(this.path, "a+", 0o600);
    const records = this.#read();
    this.#count = records.length;
    return records;
  }

  /** Records waiting in the spool. */
  get size(): number {
    return this.#count;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** At or over its cap: `tools/call` is refused until it drains (the audit sink fault policy). */
  get full(): boolean {
    return this.#bytes >= this.maxBytes;
  }

  /** Appends and syncs. Throws when the file cannot be written (the caller keeps the records). */
  append(records: readonly ChainedRecord[]): void {
    if (records.length === 0) return;
    const text = records.map((c) => `${JSON.stringify({ hash: c.record.hash, text: c.text })}\n`).join("");
    this.#write(text, records.length);
  }

  /** Appends finalized records not chained yet, and syncs. Throws as `append` does. */
  appendFinal(records: readonly KeyedFinal[]): void {
    if (records.length === 0) return;
    this.#write(records.map((r) => lineOf({ kind: "final", ...r })).join(""), records.length);
  }

  /** Appends write-ahead entries, and syncs (before their calls are forwarded). Throws as `append` does. */
  appendOpen(entries: readonly OpenCall[]): void {
    if (entries.length === 0) return;
    this.#write(entries.map((open) => lineOf({ kind: "open", open })).join(""), entries.length);
  }

  #write(text: string, count: number): void {
    const fd = this.#fd ?? this.#reopen();
    const buf = Buffer.from(text);
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off);
    fdatasyncSync(fd);
    this.#bytes += buf.length;
    this.#count += count;
  }

  /** Everything spooled, in order (replay). */
  readAll(): SpoolEntry[] {
    return this.#read();
  }

  /**
   * Replaces the whole content (written beside, synced, renamed over the file, so a crash leaves
   * the old content or the new one). Only for converting a spool of another mode at start.
   */
  rewrite(entries: readonly SpoolEntry[]): void {
    const tmp = `${this.path}.tmp`;
    const buf = Buffer.from(entries.map(lineOf).join(""));
    const fd = openSync(tmp, "w", 0o600);
    try {
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off);
      fdatasyncSync(fd);
    } finally {
      closeSync(fd);
    }
    this.close();
    renameSync(tmp, this.path);
    try {
      const dir = openSync(dirname(this.path), "r");
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    } catch {
      // Directory fsync is not available everywhere; the rename itself is atomic.
    }
    this.#reopen();
    this.#bytes = buf.length;
    this.#count = entries.length;
  }

  /** Empties the spool once its records are stored. */
  clear(): void {
    const fd = this.#fd ?? this.#reopen();
    ftruncateSync(fd, 0);
    fdatasyncSync(fd);
    this.#bytes = 0;
    this.#count = 0;
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  #reopen(): number {
    this.#fd = openSync(this.path, "a+", 0o600);
    return this.#fd;
  }

  #read(): SpoolEntry[] {
    let data: Buffer;
    try {
      data = readFileSync(this.path);
    } catch {
      this.#bytes = 0;
      return [];
    }
    const out: SpoolEntry[] = [];
    let good = 0;
    let start = 0;
    for (let nl = data.indexOf(10, start); nl !== -1; nl = data.indexOf(10, start)) {
      const line = data.subarray(start, nl).toString("utf8");
      start = nl + 1;
      try {
        const entry = JSON.parse(line) as {
          hash?: unknown;
          text?: unknown;
          key?: unknown;
          final?: unknown;
          open?: unknown;
        };
        if (entry.open !== null && typeof entry.open === "object") {
          out.push({ kind: "open", open: entry.open as OpenCall });
        } else if (typeof entry.key === "string" && entry.final !== null && typeof entry.final === "object") {
          out.push({ kind: "final", key: entry.key, final: entry.final as FinalRecord });
        } else if (typeof entry.hash === "string" && typeof entry.text === "string") {
          const record = { ...(JSON.parse(entry.text) as Omit<AuditRecord, "hash">), hash: entry.hash };
          out.push({ kind: "chained", chained: { record, text: entry.text } });
        } else {
          break;
        }
        good = start;
      } catch {
        break;
      }
    }
    if (good < data.length && this.#fd !== undefined) {
      // A torn tail (crash mid-append): keep what parsed, drop the rest.
      ftruncateSync(this.#fd, good);
    }
    this.#bytes = good;
    return out;
  }
}

export function spoolSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}
