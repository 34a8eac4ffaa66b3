import type { SessionRecord, SessionStore, UpstreamBinding } from "../types.ts";

/** Sessions in a Map: tests, and the hot cache in front of durable stores. */
export class MemorySessionStore implements SessionStore {
  readonly #sessions = new Map<string, SessionRecord>();

  async get(id: string): Promise<SessionRecord | undefined> {
    const r = this.#sessions.get(id);
    return r ? structuredClone(r) : undefined;
  }

  async put(record: SessionRecord): Promise<void> {
    this.#sessions.set(record.id, structuredClone(record));
  }

  async rebind(id: string, upstream: UpstreamBinding, protocolVersion: string): Promise<void> {
    const r = this.#sessions.get(id);
    if (r) {
      r.upstream = { ...upstream };
      r.protocolVersion = protocolVersion;
    }
  }

  touch(id: string, at: number): void {
    const r = this.#sessions.get(id);
    if (r && at > r.lastSeenAt) r.lastSeenAt = at;
  }

  async delete(id: string): Promise<boolean> {
    return this.#sessions.delete(id);
  }

  async listIdle(server: string, cutoff: number, limit: number): Promise<SessionRecord[]> {
    const out: SessionRecord[] = [];
    for (const r of this.#sessions.values()) {
      if (r.server === server && r.lastSeenAt < cutoff) out.push(structuredClone(r));
      if (out.length >= limit) break;
    }
    return out;
  }

  async list(filter: { server?: string; tenant?: string }, limit: number): Promise<SessionRecord[]> {
    return [...this.#sessions.values()]
      .filter(
        (r) =>
          (!filter.server || r.server === filter.server) && (!filter.tenant || r.tenant === filter.tenant),
      )
      .sort((a, b) => b.createdAt - a.createdAt)
      .slice(0, limit)
      .map((r) => structuredClone(r));
  }

  async countByInstance(server: string): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (const r of this.#sessions.values()) {
      if (r.server === server) counts.set(r.upstream.instance, (counts.get(r.upstream.instance) ?? 0) + 1);
    }
    return counts;
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {}
}
