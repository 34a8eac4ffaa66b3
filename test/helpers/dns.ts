/**
 * A real DNS server for tests: UDP on 127.0.0.1, port 0, answering A and AAAA queries from a
 * table (RFC 1035 §4 message format, written by hand with node:dgram). An entry may list several
 * answers in turn: the n-th query for a name and type gets the n-th answer (the last one repeats),
 * so a test can stage DNS rebinding (first a public address, then 127.0.0.1) with TTL 0.
 *
 * `resolverFor(server)` is the guard's injectable resolver asking this server through
 * `dns.promises.Resolver` (c-ares): the system resolver (getaddrinfo) cannot be pointed at a port.
 */
import { createSocket, type Socket } from "node:dgram";
import { Resolver } from "node:dns/promises";
import ipaddr from "ipaddr.js";

export type RecordType = "A" | "AAAA";

/** Answers for one name: each list is one response; consecutive queries walk through them. */
export interface DnsEntry {
  A?: string[][];
  AAAA?: string[][];
}

export interface DnsQuery {
  name: string;
  type: RecordType | number;
}

const TYPE_CODES: Record<RecordType, number> = { A: 1, AAAA: 28 };

export class TestDns {
  readonly #socket: Socket;
  readonly #table = new Map<string, DnsEntry>();
  readonly #served = new Map<string, number>();
  /** Every query received, in order. */
  readonly queries: DnsQuery[] = [];

  private constructor(socket: Socket) {
    this.#socket = socket;
  }

  static async start(table: Record<string, DnsEntry> = {}): Promise<TestDns> {
    const socket = createSocket("udp4");
    const dns = new TestDns(socket);
    for (const [name, entry] of Object.entries(table)) dns.set(name, entry);
    socket.on("message", (msg, rinfo) => {
      const answer = dns.#answer(msg);
      if (answer) socket.send(answer, rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    return dns;
  }

  get port(): number {
    return this.#socket.address().port;
  }

  /** Replaces the answers for a name (and restarts its sequence). */
  set(name: string, entry: DnsEntry): void {
    const key = name.toLowerCase();
    this.#table.set(key, entry);
    for (const t of ["A", "AAAA"]) this.#served.delete(`${key}/${t}`);
  }

  /** Queries received for a name (optionally one type). */
  count(name: string, type?: RecordType): number {
    const key = name.toLowerCase();
    return this.queries.filter((q) => q.name === key && (type === undefined || q.type === type)).length;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.#socket.close(() => resolve()));
  }

  #answer(msg: Buffer): Buffer | undefined {
    if (msg.length < 12) return undefined;
    const qdcount = msg.readUInt16BE(4);
    if (qdcount !== 1) return undefined;
    // QNAME: length-prefixed labels up to a zero byte (queries never use compression).
    const labels: string[] = [];
    let off = 12;
    while (off < msg.length) {
      const len = msg[off] ?? 0;
      off += 1;
      if (len === 0) break;
      labels.push(msg.subarray(off, off + len).toString("latin1"));
      off += len;
    }
    if (off + 4 > msg.length) return undefined;
    const qtype = msg.readUInt16BE(off);
    const questionEnd = off + 4;
    const name = labels.join(".").toLowerCase();
    const typeName = (Object.keys(TYPE_CODES) as RecordType[]).find((t) => TYPE_CODES[t] === qtype);
    this.queries.push({ name, type: typeName ?? qtype });

    const entry = this.#table.get(name);
    let addresses: string[] = [];
    if (entry && typeName) {
      const turns = entry[typeName] ?? [];
      const key = `${name}/${typeName}`;
      const n = this.#served.get(key) ?? 0;
      this.#served.set(key, n + 1);
      addresses = turns[Math.min(n, turns.length - 1)] ?? [];
    }
    const header = Buffer.alloc(12);
    msg.copy(header, 0, 0, 2); // ID
    const rd = (msg.readUInt16BE(2) & 0x0100) !== 0;
    // QR=1, AA=1, RD copied; RCODE 3 (NXDOMAIN) for unknown names, 0 otherwise.
    header.writeUInt16BE(0x8400 | (rd ? 0x0100 : 0) | (entry ? 0 : 3), 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(addresses.length, 6);
    const records = addresses.map((a) => {
      const bytes = Buffer.from(ipaddr.parse(a).toByteArray());
      const rr = Buffer.alloc(12);
      rr.writeUInt16BE(0xc00c, 0); // pointer to the question's name
      rr.writeUInt16BE(qtype, 2);
      rr.writeUInt16BE(1, 4); // IN
      rr.writeUInt32BE(0, 6); // TTL 0: every lookup asks again
      rr.writeUInt16BE(bytes.length, 10);
      return Buffer.concat([rr, bytes]);
    });
    return Buffer.concat([header, msg.subarray(12, questionEnd), ...records]);
  }
}

/** A resolver for the guard that asks `dns` for A and AAAA records (no cache, no search list). */
export function resolverFor(dns: TestDns): (host: string) => Promise<string[]> {
  const r = new Resolver({ timeout: 1000, tries: 1 });
  r.setServers([`127.0.0.1:${dns.port}`]);
  const ask = async (fn: () => Promise<string[]>): Promise<string[]> => {
    try {
      return await fn();
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === "ENODATA" || code === "ENOTFOUND") return [];
      throw err;
    }
  };
  return async (host) => {
    const [v4, v6] = await Promise.all([ask(() => r.resolve4(host)), ask(() => r.resolve6(host))]);
    const all = [...v4, ...v6];
    if (all.length === 0) throw Object.assign(new Error(`${host} not found`), { code: "ENOTFOUND" });
    return all;
  };
}
