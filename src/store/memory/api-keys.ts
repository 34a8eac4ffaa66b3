/** API keys in memory (the ApiKeyStore interface is in src/store/types.ts). */
import { type ApiKeyFilter, type ApiKeyRecord, type ApiKeyStore, keyServes } from "../types.ts";

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
      (r) =>
        (!filter.server || keyServes(r.server, filter.server)) &&
        (!filter.tenant || r.tenant === filter.tenant),
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
