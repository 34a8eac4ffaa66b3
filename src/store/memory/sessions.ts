import type {
  ApiKeyFilter,
  ApiKeyRecord,
  ApiKeyStore,
  SessionRecord,
  SessionStore,
  UpstreamBinding,
} from "../types.ts";

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

/** API keys in a Map (tests). */
export class MemoryApiKeyStore implements ApiKeyStore {
  readonly #keys = new Map<string, ApiKeyRecord>();
  #seq = 0;
  readonly #order = new Map<string, number>();

  async insert(record: ApiKeyRecord): Promise<void> {
    if (this.#keys.has(record.id)) throw new Error(`duplicate key id ${record.id}`);
    this.#keys.set(record.id, structuredClone(record));
    this.#order.set(record.id, this.#seq++);
  }

  async get(id: string): Promise<ApiKeyRecord | undefined> {
    const r = this.#keys.get(id);
    return r ? structuredClone(r) : undefined;
  }

  #sorted(filter: (r: ApiKeyRecord) => boolean): ApiKeyRecord[] {
    return [...this.#keys.values()]
      .filter(filter)
      .sort(
        (a, b) => b.createdAt - a.createdAt || (this.#order.get(b.id) ?? 0) - (this.#order.get(a.id) ?? 0),
      )
      .map((r) => structuredClone(r));
  }

  async byName(server: string, tenant: string, name: string): Promise<ApiKeyRecord[]> {
    return this.#sorted((r) => r.server === server && r.tenant === tenant && r.name === name);
  }

  async list(filter: ApiKeyFilter): Promise<ApiKeyRecord[]> {
    return this.#sorted(
      (r) => (!filter.server || r.server === filter.server) && (!filter.tenant || r.tenant === filter.tenant),
    );
  }

  async update(
    id: string,
    patch: Partial<Pick<ApiKeyRecord, "expiresAt" | "revokedAt" | "rotatedTo">>,
  ): Promise<void> {
    const r = this.#keys.get(id);
    if (r) Object.assign(r, patch);
  }

  touch(id: string, at: number): void {
    const r = this.#keys.get(id);
    if (r && (r.lastUsedAt === null || at > r.lastUsedAt)) r.lastUsedAt = at;
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {}
}
