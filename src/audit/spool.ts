/**
 * The audit spool: an append-only JSON-lines file where chained records wait while the store is
 * unavailable. One line per record, `{"hash": "...", "text": "<the hashed canonical JSON>"}`, so a
 * replay stores byte for byte what was hashed.
 *
 * Durability (docs/audit.md): every append is one write followed by fdatasync, so a spooled batch
 * survives a process crash and a power loss. A line torn by a crash mid-write is the only thing that
 * can be incomplete; it is dropped (and truncated away) when the spool is opened.
 */
import {
  closeSync,
  fdatasyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import type { AuditRecord } from "./record.ts";
import type { ChainedRecord } from "./store.ts";

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
  open(): ChainedRecord[] {
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
    const fd = this.#fd ?? this.#reopen();
    const text = records.map((c) => `${JSON.stringify({ hash: c.record.hash, text: c.text })}\n`).join("");
    const buf = Buffer.from(text);
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off);
    fdatasyncSync(fd);
    this.#bytes += buf.length;
    this.#count += records.length;
  }

  /** Everything spooled, in order (replay). */
  readAll(): ChainedRecord[] {
    return this.#read();
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

  #read(): ChainedRecord[] {
    let data: Buffer;
    try {
      data = readFileSync(this.path);
    } catch {
      this.#bytes = 0;
      return [];
    }
    const out: ChainedRecord[] = [];
    let good = 0;
    let start = 0;
    for (let nl = data.indexOf(10, start); nl !== -1; nl = data.indexOf(10, start)) {
      const line = data.subarray(start, nl).toString("utf8");
      start = nl + 1;
      try {
        const { hash, text } = JSON.parse(line) as { hash: string; text: string };
        const record = { ...(JSON.parse(text) as Omit<AuditRecord, "hash">), hash };
        out.push({ record, text });
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
