import { z } from "zod";
import { isUsable, keyStatus, mintApiKey } from "../auth/apikey.ts";
import { parseDuration } from "../config/units.ts";
import { GatewayError } from "../errors/errors.ts";
import { type ApiKeyRecord, type ApiKeyStore, keyServes } from "../store/types.ts";

/** The tenant of keys created without one, until tenancy is configured. */
export const DEFAULT_TENANT = "default";

const durationText = z
  .string()
  .max(32)
  .refine((v) => {
    try {
      parseDuration(v);
      return true;
    } catch {
      return false;
    }
  }, "a duration such as 30d, 24h, 15m");

export const createKeyBody = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, "1-64 of A-Z a-z 0-9 . _ -"),
  server: z.string().min(1).max(64).optional(),
  /** Several servers of the tenant, or `*` for all of them (instead of `server`). */
  servers: z.union([z.literal("*"), z.array(z.string().min(1).max(64)).min(1).max(256)]).optional(),
  tenant: z.string().min(1).max(128).optional(),
  consumer: z.string().min(1).max(128).optional(),
  expires_in: durationText.optional(),
  scopes: z.array(z.string().min(1).max(128)).max(64).optional(),
  tools: z.array(z.string().min(1).max(128)).max(256).optional(),
});

export const rotateBody = z.strictObject({ grace: durationText.optional() });

/** What the admin API shows of a key: never its hash, never its secret. */
export function keyView(rec: ApiKeyRecord, now = Date.now()): Record<string, unknown> {
  return {
    id: rec.id,
    name: rec.name,
    prefix: `mcpe_${rec.id}`,
    server: rec.server,
    servers: rec.server === "*" ? "*" : rec.server.split(","),
    tenant: rec.tenant,
    consumer: rec.consumer,
    status: keyStatus(rec, now),
    scopes: rec.scopes,
    tools: rec.tools,
    created: new Date(rec.createdAt).toISOString(),
    expires: rec.expiresAt === null ? null : new Date(rec.expiresAt).toISOString(),
    revoked: rec.revokedAt === null ? null : new Date(rec.revokedAt).toISOString(),
    last_used: rec.lastUsedAt === null ? null : new Date(rec.lastUsedAt).toISOString(),
    rotated_to: rec.rotatedTo,
  };
}

/**
 * Key administration, shared by the admin API, the CLI (through the API) and the quickstart.
 * `servers` are the configured server names: a key belongs to one of them.
 */
export class KeyService {
  readonly #store: ApiKeyStore;
  #servers: readonly string[];

  constructor(store: ApiKeyStore, servers: readonly string[]) {
    this.#store = store;
    this.#servers = servers;
  }

  /** The configured server names (a config reload adds and removes servers). */
  setServers(servers: readonly string[]): void {
    this.#servers = servers;
  }

  get store(): ApiKeyStore {
    return this.#store;
  }

  /** The server a request names, or the only one configured. */
  serverOf(server: string | undefined): string {
    if (server !== undefined) {
      if (!this.#servers.includes(server))
        throw new GatewayError("EDGE_ADMIN_BAD_REQUEST", `unknown server: ${server}`);
      return server;
    }
    if (this.#servers.length === 1) return this.#servers[0] as string;
    throw new GatewayError(
      "EDGE_ADMIN_BAD_REQUEST",
      `server is required (configured: ${this.#servers.join(", ")})`,
    );
  }

  /** The `server` value of a new key: one name, a sorted list (`a,b`), or `*`. */
  #scopeOf(input: { server?: string | undefined; servers?: "*" | string[] | undefined }): string {
    if (input.servers === undefined) return this.serverOf(input.server);
    if (input.server !== undefined)
      throw new GatewayError("EDGE_ADMIN_BAD_REQUEST", "give server or servers, not both");
    if (input.servers === "*") return "*";
    return [...new Set(input.servers.map((s) => this.serverOf(s)))].sort().join(",");
  }

  async create(
    input: z.infer<typeof createKeyBody>,
    now = Date.now(),
  ): Promise<{ key: string; record: ApiKeyRecord }> {
    const server = this.#scopeOf(input);
    const tenant = input.tenant ?? DEFAULT_TENANT;
    // A name is one key's at a time on every server it covers.
    const existing = (await this.#store.list({ tenant })).filter(
      (k) =>
        k.name === input.name &&
        (server === "*" || k.server === "*" || server.split(",").some((s) => keyServes(k.server, s))),
    );
    if (existing.some((k) => isUsable(k, now) && k.rotatedTo === null)) {
      throw new GatewayError(
        "EDGE_ADMIN_CONFLICT",
        `an active key named ${input.name} exists; rotate or revoke it`,
      );
    }
    const minted = mintApiKey();
    const record: ApiKeyRecord = {
      id: minted.id,
      name: input.name,
      server,
      tenant,
      consumer: input.consumer ?? input.name,
      hash: minted.hash,
      scopes: input.scopes ?? [],
      tools: input.tools ?? null,
      createdAt: now,
      expiresAt: input.expires_in ? now + parseDuration(input.expires_in) : null,
      revokedAt: null,
      lastUsedAt: null,
      rotatedTo: null,
    };
    await this.#store.insert(record);
    return { key: minted.key, record };
  }

  /** A key by id, or the newest usable key of that name (then the newest of any state). */
  async find(
    ref: string,
    scope: { server?: string; tenant?: string },
    now = Date.now(),
  ): Promise<ApiKeyRecord> {
    const byId = await this.#store.get(ref);
    if (
      byId &&
      (!scope.server || keyServes(byId.server, scope.server)) &&
      (!scope.tenant || byId.tenant === scope.tenant)
    ) {
      return byId;
    }
    const server = this.serverOf(scope.server);
    // Keys valid for that server: its own, lists that name it, and `*` keys.
    const named = (await this.#store.list({ server, tenant: scope.tenant ?? DEFAULT_TENANT })).filter(
      (k) => k.name === ref,
    );
    const found = named.find((k) => isUsable(k, now)) ?? named[0];
    if (!found) throw new GatewayError("EDGE_ADMIN_NOT_FOUND", `no key ${ref}`);
    return found;
  }

  /**
   * A new key for the same consumer (sessions continue), same name, scopes and tools; the old key
   * keeps working for `grace` (default 24h), then expires.
   */
  async rotate(
    old: ApiKeyRecord,
    grace: string | undefined,
    now = Date.now(),
  ): Promise<{ key: string; record: ApiKeyRecord }> {
    if (!isUsable(old, now)) throw new GatewayError("EDGE_ADMIN_CONFLICT", "the key is no longer valid");
    const minted = mintApiKey();
    const record: ApiKeyRecord = {
      ...old,
      id: minted.id,
      hash: minted.hash,
      createdAt: now,
      revokedAt: null,
      lastUsedAt: null,
      rotatedTo: null,
    };
    await this.#store.insert(record);
    const end = now + parseDuration(grace ?? "24h");
    await this.#store.update(old.id, {
      rotatedTo: record.id,
      expiresAt: old.expiresAt === null ? end : Math.min(old.expiresAt, end),
    });
    return { key: minted.key, record };
  }

  /**
   * Revokes what `ref` names, now or at the end of `grace`: the key of that id, or every key of
   * that name that still works (the one a rotation replaced, in its grace window, included). Keys
   * already revoked or expired are left as they are. Answers the keys revoked, newest first, and
   * the key the reference resolved to (for a name whose keys all ended already: the newest one).
   */
  async revokeRef(
    ref: string,
    scope: { server?: string; tenant?: string },
    grace: string | undefined,
    now = Date.now(),
  ): Promise<{ resolved: ApiKeyRecord; revoked: ApiKeyRecord[] }> {
    const resolved = await this.find(ref, scope, now);
    const targets =
      resolved.id === ref
        ? [resolved]
        : (await this.#store.byName(resolved.server, resolved.tenant, resolved.name)).filter((k) =>
            isUsable(k, now),
          );
    const revoked: ApiKeyRecord[] = [];
    for (const k of targets) revoked.push(await this.revoke(k, grace, now));
    return { resolved: revoked[0] ?? resolved, revoked };
  }

  /** Revokes now, or at the end of `grace`. */
  async revoke(rec: ApiKeyRecord, grace: string | undefined, now = Date.now()): Promise<ApiKeyRecord> {
    const at = grace ? now + parseDuration(grace) : now;
    const revokedAt = rec.revokedAt === null ? at : Math.min(rec.revokedAt, at);
    await this.#store.update(rec.id, { revokedAt });
    return { ...rec, revokedAt };
  }
}
