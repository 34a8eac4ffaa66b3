/**
 * The token vault: each user's own tokens for third-party providers (connections), kept
 * encrypted, refreshed, and handed to the upstream of a server that names the connection — never
 * the client's own token.
 *
 * Records are keyed by (tenant, subject, connection) in the ConnectionStore (SQLite embedded,
 * PostgreSQL distributed). A refresh is single-flight per record: one promise per record in this
 * process, and in distributed mode a Redis lock across instances; the write is a compare-and-swap
 * on the record's version, so a single-use refresh token is spent once even when two writers race
 * (the loser reads what the winner stored). Failures are classified: the provider refusing the
 * grant (`invalid_grant`) deletes the record and the call asks the user to connect again; a
 * provider that does not answer keeps the record and the call gets 503 with Retry-After.
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Principal } from "../auth/types.ts";
import { GatewayError } from "../errors/errors.ts";
import type { Logger } from "../observability/logger.ts";
import { type VaultEvent, vaultChannel } from "../observability/channels.ts";
import type { ConnectionRecord, ConnectionStore } from "../store/types.ts";
import { isProviderError, type ProviderClient, type TokenSet } from "./provider.ts";
import type { KeyRing } from "./seal.ts";

/** A lock across instances (Redis in distributed mode). */
export interface VaultLock {
  /** True when this caller now holds `key` (for at most `ttlMs`). */
  acquire(key: string, ttlMs: number): Promise<boolean>;
  release(key: string): Promise<void>;
}

/** How long one refresh may hold its record's lock (a provider request's own deadline is 10 s). */
const REFRESH_LOCK_MS = 15_000;
/** How often an instance that found the lock taken looks for the holder's result. */
const LOCK_POLL_MS = 50;
/** Refreshes forced by upstream 401s are at most this frequent per record. */
const REJECTION_REFRESH_INTERVAL_MS = 1000;
/** A token is not sent in its last second: it could expire on the way. */
const EXPIRY_SKEW_MS = 1000;
/** Retry-After for a provider that did not answer. */
const RETRY_AFTER_S = 5;

/** The stable name of a principal in the vault: a user keeps their connections across keys and tokens. */
export function vaultSubject(p: Principal): string {
  if (p.method === "oauth") return `oauth|${p.issuer ?? ""}|${p.subject}`;
  if (p.method === "apiKey") return `key|${p.subject}`;
  return `none|${p.subject}`;
}

/** A connect link's payload: who connects what, until when. */
export interface Ticket {
  /** tenant ("" for none) */
  t: string;
  /** vault subject */
  s: string;
  /** the principal id, for audit */
  p: string;
  /** expiry, ms */
  e: number;
}

export interface VaultOptions {
  store: ConnectionStore;
  ring: KeyRing;
  providers: ReadonlyMap<string, ProviderClient>;
  /** The edge's public base URL (no trailing slash): connect links and callbacks live under it. */
  publicUrl: string;
  ticketTtlMs: number;
  lock?: VaultLock | undefined;
  log: Logger;
  now?: () => number;
}

/** The token set as sealed in a record. */
interface Sealed {
  a: string;
  r?: string;
  x?: number;
  s?: string;
}

/** What the vault hands the upstream transport for one call (the UpstreamCredentials shape). */
export interface UserCredentials {
  headers(signal?: AbortSignal): Promise<Record<string, string>>;
  now(): Record<string, string> | undefined;
  refreshAfterRejection(rejected: Record<string, string>): Promise<boolean>;
  stop(): void;
}

export class Vault {
  readonly #o: VaultOptions;
  readonly #now: () => number;
  readonly #inflight = new Map<string, Promise<ConnectionRecord | undefined>>();
  readonly #lastForced = new Map<string, number>();

  constructor(options: VaultOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** The records (admin listing). */
  get store(): ConnectionStore {
    return this.#o.store;
  }

  get connections(): ReadonlyMap<string, ProviderClient> {
    return this.#o.providers;
  }

  provider(name: string): ProviderClient | undefined {
    return this.#o.providers.get(name);
  }

  // ---- connect links

  /** A link the user opens to connect `connection` (or, without it, to see all their connections). */
  connectUrl(principal: Principal, connection?: string): string {
    const ticket = this.#o.ring.sign({
      t: principal.tenant ?? "",
      s: vaultSubject(principal),
      p: principal.id,
      e: this.#now() + this.#o.ticketTtlMs,
    } satisfies Ticket);
    const path = connection === undefined ? "/connect" : `/connect/${encodeURIComponent(connection)}`;
    return `${this.#o.publicUrl}${path}?ticket=${encodeURIComponent(ticket)}`;
  }

  /** The payload of a valid, unexpired ticket. */
  readTicket(text: string | null | undefined): Ticket | undefined {
    if (!text) return undefined;
    const v = this.#o.ring.verify(text) as Partial<Ticket> | undefined;
    if (!v || typeof v.t !== "string" || typeof v.s !== "string" || typeof v.p !== "string") return undefined;
    if (typeof v.e !== "number" || v.e < this.#now()) return undefined;
    return v as Ticket;
  }

  /** The OAuth `state` of a connect: sealed, so it can carry the PKCE verifier through the browser. */
  sealState(payload: object): string {
    return this.#o.ring.sealState(payload);
  }

  openState(text: string): unknown {
    return this.#o.ring.openState(text);
  }

  /** Audits a connect that did not complete (declined, or the exchange failed). */
  failed(ticket: Ticket, connection: string, reason: string): void {
    this.#event({
      action: "connect",
      tenant: ticket.t,
      principal: ticket.p,
      connection,
      outcome: "failed",
      reason,
    });
  }

  callbackUrl(connection: string): string {
    return `${this.#o.publicUrl}/connect/${encodeURIComponent(connection)}/callback`;
  }

  // ---- records

  /** Stores the tokens of a completed connect (replacing an earlier connect of the same user). */
  async save(ticket: Ticket, connection: string, tokens: TokenSet): Promise<ConnectionRecord> {
    const rec = await this.#o.store.put({
      tenant: ticket.t,
      subject: ticket.s,
      connection,
      sealed: this.#seal(ticket.t, ticket.s, connection, tokens),
      expiresAt: tokens.expiresAt ?? null,
      scope: tokens.scope ?? null,
      at: this.#now(),
    });
    if (!rec) throw new Error("the connection store did not keep the record");
    this.#event({ action: "connect", tenant: ticket.t, principal: ticket.p, connection, outcome: "ok" });
    return rec;
  }

  list(tenant: string, subject: string): Promise<ConnectionRecord[]> {
    return this.#o.store.list({ tenant, subject });
  }

  /**
   * Deletes a record and revokes its tokens at the provider where it has an RFC 7009 endpoint.
   * `actor` names who asked (the user, or an admin) for the audit record.
   */
  async disconnect(rec: ConnectionRecord, actor: string): Promise<boolean> {
    const deleted = await this.#o.store.delete(rec.id);
    if (!deleted) return false;
    const tokens = this.#open(rec);
    const provider = this.#o.providers.get(rec.connection);
    let revoked = false;
    if (tokens && provider) {
      revoked = tokens.r
        ? await provider.revoke(tokens.r, "refresh_token")
        : await provider.revoke(tokens.a, "access_token");
    }
    this.#event({
      action: "disconnect",
      tenant: rec.tenant,
      principal: actor,
      connection: rec.connection,
      outcome: "ok",
      reason: revoked ? "revoked at the provider" : "deleted",
    });
    return true;
  }

  // ---- calls

  /**
   * The credentials one call of `principal` sends to an upstream that uses `connection`. Throws the
   * URL elicitation error (-32042) when the user has not connected (or must connect again), and
   * 503 EDGE_CONNECTION_UNAVAILABLE when the provider cannot refresh an expired token now.
   */
  async forCall(
    principal: Principal,
    connection: string,
    server: string,
    requestId: string,
    /** The call acts on the account (audited as a use). */
    use = true,
  ): Promise<UserCredentials> {
    const tenant = principal.tenant ?? "";
    const subject = vaultSubject(principal);
    let current = await this.#usable(principal, tenant, subject, connection);
    if (use)
      this.#event({
        action: "use",
        tenant,
        principal: principal.id,
        connection,
        outcome: "ok",
        server,
        requestId,
      });
    const headerOf = (rec: ConnectionRecord) => ({
      authorization: `Bearer ${(this.#open(rec) as Sealed).a}`,
    });
    let held = headerOf(current);
    return {
      headers: () => Promise.resolve(held),
      now: () => held,
      refreshAfterRejection: async (rejected) => {
        try {
          const fresh = await this.#afterRejection(current, rejected.authorization);
          if (!fresh) return false;
          current = fresh;
          held = headerOf(fresh);
          return held.authorization !== rejected.authorization;
        } catch (err) {
          // The provider refused the grant: the call asks the user to connect again, instead of
          // relaying the upstream's 401 (which would send an MCP client to its own OAuth flow).
          if (err instanceof GatewayError && err.code === "EDGE_CONNECTION_REQUIRED")
            throw this.#needsConnect(principal, connection, "the provider refused the refresh");
          return false;
        }
      },
      stop: () => {},
    };
  }

  /** A record whose access token may be sent now: refreshed first when due. */
  async #usable(
    principal: Principal,
    tenant: string,
    subject: string,
    connection: string,
  ): Promise<ConnectionRecord> {
    const rec = await this.#o.store.get(tenant, subject, connection);
    const tokens = rec && this.#open(rec);
    if (!rec || !tokens) {
      if (rec)
        this.#o.log.error(
          { connection, record: rec.id },
          "vault: a record does not open with the configured keys",
        );
      throw this.#needsConnect(principal, connection, "not connected");
    }
    const provider = this.#o.providers.get(connection) as ProviderClient;
    const now = this.#now();
    const expired = tokens.x !== undefined && now >= tokens.x - EXPIRY_SKEW_MS;
    const due = tokens.x !== undefined && now >= tokens.x - provider.connection.refreshBeforeMs;
    if (!due) return rec;
    if (!tokens.r) {
      if (!expired) return rec;
      throw this.#needsConnect(
        principal,
        connection,
        "the token expired and the provider gave no refresh token",
      );
    }
    let fresh: ConnectionRecord | undefined;
    try {
      fresh = await this.#refresh(rec);
    } catch (err) {
      if (err instanceof GatewayError && err.code === "EDGE_CONNECTION_REQUIRED")
        throw this.#needsConnect(principal, connection, "the provider refused the refresh");
      // Refreshing early failed while the token still works: use it; the next call tries again.
      if (!expired) return rec;
      throw err;
    }
    if (fresh) return fresh;
    throw this.#needsConnect(principal, connection, "the connection was removed");
  }

  async #afterRejection(
    rec: ConnectionRecord,
    rejected: string | undefined,
  ): Promise<ConnectionRecord | undefined> {
    // Someone refreshed since this call read the record: retry with that token.
    const latest = await this.#o.store.get(rec.tenant, rec.subject, rec.connection);
    if (!latest) return undefined;
    const open = this.#open(latest);
    if (open && `Bearer ${open.a}` !== rejected) return latest;
    if (!open?.r) return undefined;
    const last = this.#lastForced.get(latest.id) ?? 0;
    if (this.#now() - last < REJECTION_REFRESH_INTERVAL_MS) return undefined;
    this.#lastForced.set(latest.id, this.#now());
    return this.#refresh(latest, true);
  }

  /**
   * Refreshes `rec`, once per record across this process and (with a lock) the fleet. Resolves
   * the record as stored after the refresh — by this caller or another — or undefined when the
   * record is gone (disconnected meanwhile).
   */
  #refresh(rec: ConnectionRecord, force = false): Promise<ConnectionRecord | undefined> {
    const running = this.#inflight.get(rec.id);
    if (running) return running;
    const p = this.#refreshLocked(rec, force).finally(() => this.#inflight.delete(rec.id));
    this.#inflight.set(rec.id, p);
    return p;
  }

  async #refreshLocked(rec: ConnectionRecord, force: boolean): Promise<ConnectionRecord | undefined> {
    const lock = this.#o.lock;
    const lockKey = `vault:${rec.id}`;
    if (lock && !(await lock.acquire(lockKey, REFRESH_LOCK_MS).catch(() => true))) {
      // Another instance refreshes: wait for the record it stores.
      const deadline = this.#now() + REFRESH_LOCK_MS;
      while (this.#now() < deadline) {
        await sleep(LOCK_POLL_MS);
        const now = await this.#o.store.get(rec.tenant, rec.subject, rec.connection);
        if (!now || now.id !== rec.id) return now;
        if (now.version !== rec.version) return now;
      }
      throw this.#unavailable(rec, "another instance's refresh did not finish");
    }
    try {
      // Re-read under the lock: the record may have been refreshed just before it was taken.
      const latest = await this.#o.store.get(rec.tenant, rec.subject, rec.connection);
      if (!latest || latest.id !== rec.id) return latest;
      if (latest.version !== rec.version && !force) return latest;
      return await this.#refreshNow(latest);
    } finally {
      if (lock) await lock.release(lockKey).catch(() => {});
    }
  }

  async #refreshNow(rec: ConnectionRecord): Promise<ConnectionRecord | undefined> {
    const tokens = this.#open(rec);
    const provider = this.#o.providers.get(rec.connection);
    if (!tokens?.r || !provider) return rec;
    let granted: TokenSet;
    try {
      granted = await provider.refresh(tokens.r);
    } catch (err) {
      if (isProviderError(err) && err.kind === "grant") {
        await this.#o.store.delete(rec.id, rec.version);
        this.#event({
          action: "refresh",
          tenant: rec.tenant,
          principal: rec.subject,
          connection: rec.connection,
          outcome: "failed",
          reason: `refused by the provider (${err.oauthError ?? "invalid_grant"}): the record was deleted`,
        });
        throw new GatewayError("EDGE_CONNECTION_REQUIRED");
      }
      const reason = isProviderError(err) ? err.message : "the refresh failed";
      this.#event({
        action: "refresh",
        tenant: rec.tenant,
        principal: rec.subject,
        connection: rec.connection,
        outcome: "failed",
        reason,
      });
      throw this.#unavailable(rec, reason);
    }
    // A provider that does not rotate refresh tokens keeps the one it gave (RFC 6749 §6).
    if (!granted.refreshToken) granted.refreshToken = tokens.r;
    const stored = await this.#o.store.put(
      {
        tenant: rec.tenant,
        subject: rec.subject,
        connection: rec.connection,
        sealed: this.#seal(rec.tenant, rec.subject, rec.connection, granted),
        expiresAt: granted.expiresAt ?? null,
        scope: granted.scope ?? rec.scope,
        at: this.#now(),
      },
      rec.version,
    );
    this.#event({
      action: "refresh",
      tenant: rec.tenant,
      principal: rec.subject,
      connection: rec.connection,
      outcome: "ok",
      ...(stored ? {} : { reason: "a reconnect or disconnect came first; its record stands" }),
    });
    return stored ?? (await this.#o.store.get(rec.tenant, rec.subject, rec.connection));
  }

  #needsConnect(principal: Principal, connection: string, why: string): GatewayError {
    const provider = this.#o.providers.get(connection);
    const name = provider?.connection.displayName ?? connection;
    const url = this.connectUrl(principal, connection);
    const message = `Connect your ${name} account to continue: open ${url} and then try again.`;
    return new GatewayError("EDGE_CONNECTION_REQUIRED", message, {
      data: {
        // MCP 2025-11-25 URL elicitation (client/elicitation, URLElicitationRequiredError).
        elicitations: [{ mode: "url", elicitationId: randomUUID(), url, message }],
        connection,
        url,
        reason: why,
      },
    });
  }

  #unavailable(rec: ConnectionRecord, reason: string): GatewayError {
    this.#o.log.warn({ connection: rec.connection, reason }, "vault: token refresh failed");
    return new GatewayError("EDGE_CONNECTION_UNAVAILABLE", undefined, {
      headers: { "retry-after": String(RETRY_AFTER_S) },
    });
  }

  #aad(tenant: string, subject: string, connection: string): string {
    return `mcp-edge vault\0${tenant}\0${subject}\0${connection}`;
  }

  #seal(tenant: string, subject: string, connection: string, t: TokenSet): string {
    const s: Sealed = { a: t.accessToken };
    if (t.refreshToken) s.r = t.refreshToken;
    if (t.expiresAt !== undefined) s.x = t.expiresAt;
    if (t.scope !== undefined) s.s = t.scope;
    return this.#o.ring.seal(JSON.stringify(s), this.#aad(tenant, subject, connection));
  }

  #open(rec: ConnectionRecord): Sealed | undefined {
    const text = this.#o.ring.open(rec.sealed, this.#aad(rec.tenant, rec.subject, rec.connection));
    if (text === undefined) return undefined;
    try {
      const v = JSON.parse(text) as Sealed;
      return typeof v.a === "string" ? v : undefined;
    } catch {
      return undefined;
    }
  }

  #event(e: VaultEvent): void {
    if (vaultChannel.hasSubscribers) vaultChannel.publish(e);
  }
}
