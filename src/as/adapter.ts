/**
 * oidc-provider's storage adapter over the AsStore (src/store/types.ts). Values that are bearer
 * secrets — codes, refresh tokens, session and interaction ids, registration access tokens — are
 * stored under their SHA-256 with the value removed from the payload, so the store never holds a
 * usable one. Grants and clients keep their ids (they are not secrets; grants are listed and
 * revoked by id).
 */
import { createHash } from "node:crypto";
import type { AsRecord, AsStore } from "../store/types.ts";

/** Models stored under their id as is; every other model under the id's hash. */
const PLAIN = new Set(["Grant", "Client", "ReplayDetection"]);

export const sha256 = (s: string): string => createHash("sha256").update(s).digest("base64url");

/** Who a grant belongs to, read from its account id (see `accountId`). */
export interface AccountRef {
  tenant: string | null;
  subject: string;
}

/**
 * The account id the AS gives oidc-provider: it names the tenant and the subject (both bounded,
 * neither secret), so records can be listed per tenant and subject without a lookup.
 */
export function accountId(method: string, tenant: string | null, subject: string): string {
  return `${encodeURIComponent(method)}|${tenant === null ? "" : encodeURIComponent(tenant)}|${encodeURIComponent(subject)}`;
}

export function parseAccountId(id: string): AccountRef & { method: string } {
  const [method = "", tenant = "", subject = ""] = id.split("|");
  return {
    method: decodeURIComponent(method),
    tenant: tenant === "" ? null : decodeURIComponent(tenant),
    subject: decodeURIComponent(subject),
  };
}

type Payload = Record<string, unknown> & {
  grantId?: string;
  uid?: string;
  accountId?: string;
  clientId?: string;
  client_id?: string;
  consumed?: number;
  jti?: string;
};

export interface AdapterHooks {
  /** A grant is being revoked (code replay, refresh reuse, revocation): every path goes here. */
  revokeGrant(grantId: string): Promise<void>;
}

/** Builds the adapter class oidc-provider instantiates once per model name. */
export function adapterFor(store: AsStore, hooks: AdapterHooks) {
  return class AsAdapter {
    readonly #kind: string;
    readonly #plain: boolean;

    constructor(name: string) {
      this.#kind = name;
      this.#plain = PLAIN.has(name);
    }

    #key(id: string): string {
      return this.#plain ? id : sha256(id);
    }

    async upsert(id: string, payload: Payload, expiresIn: number | undefined): Promise<void> {
      const stored: Payload = { ...payload };
      if (!this.#plain) delete stored.jti;
      const account = typeof payload.accountId === "string" ? parseAccountId(payload.accountId) : undefined;
      const rec: AsRecord = {
        kind: this.#kind,
        id: this.#key(id),
        payload: JSON.stringify(stored),
        grantId: typeof payload.grantId === "string" ? payload.grantId : null,
        uid: typeof payload.uid === "string" ? payload.uid : null,
        tenant: account?.tenant ?? null,
        subject: account?.subject ?? null,
        clientId:
          typeof payload.clientId === "string"
            ? payload.clientId
            : typeof payload.client_id === "string"
              ? payload.client_id
              : null,
        expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : null,
        consumedAt: null,
      };
      await store.put(rec);
    }

    #restore(rec: AsRecord | undefined, id: string | undefined): Payload | undefined {
      if (!rec) return undefined;
      const p = JSON.parse(rec.payload) as Payload;
      if (!this.#plain && id !== undefined) p.jti = id;
      if (rec.consumedAt !== null) p.consumed = Math.floor(rec.consumedAt / 1000);
      return p;
    }

    async find(id: string): Promise<Payload | undefined> {
      return this.#restore(await store.get(this.#kind, this.#key(id)), id);
    }

    async findByUid(uid: string): Promise<Payload | undefined> {
      const rec = await store.getByUid(this.#kind, uid);
      // Found by uid (oidc-provider does so for logout flows only): its id is not recoverable
      // from the hash, and none is returned.
      return this.#restore(rec, undefined);
    }

    async findByUserCode(): Promise<undefined> {
      return undefined; // no device flow
    }

    async consume(id: string): Promise<void> {
      await store.consume(this.#kind, this.#key(id), Date.now());
    }

    async destroy(id: string): Promise<void> {
      await store.delete(this.#kind, this.#key(id));
    }

    async revokeByGrantId(grantId: string): Promise<void> {
      await hooks.revokeGrant(grantId);
    }
  };
}
