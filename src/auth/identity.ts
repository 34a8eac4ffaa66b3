import { randomUUID } from "node:crypto";
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import type { Principal } from "./types.ts";
import type { IdentityKeyStore } from "../store/types.ts";

/** The header the upstream reads: who is calling, signed by the edge. */
export const IDENTITY_HEADER = "x-mcp-edge-identity";

export interface IdentityOptions {
  /** `iss` of identity tokens: the edge's public URL. */
  issuer: string;
  /** Lifetime of one identity token (ms). */
  ttl: number;
  /** A new signing key this often (ms); the previous one stays published as long again. */
  rotateEvery: number;
  /** Shared store: how often the key list is read again (ms). Default 60 000. */
  reloadEvery?: number;
  /**
   * How long a new key is published before it signs (ms), so that every instance serves it in its
   * JWKS by the time an upstream sees a token signed with it. Default: with a shared store, twice
   * `reloadEvery` (at most half of `rotateEvery`); with a store of one instance, 0.
   */
  publishAhead?: number;
  /** A background reload or a rotation failed (the keys in hand stay in use). */
  onError?: (err: unknown) => void;
}

interface SigningKey {
  kid: string;
  key: CryptoKey;
  publicJwk: JWK;
  createdAt: number;
}

/** After a failed rotation, the next attempt waits this long (ms): the keys in hand still sign. */
const ROTATE_RETRY_MS = 5000;

/**
 * Signs `X-MCP-Edge-Identity`: a short-lived ES256 JWT naming tenant, subject, client, key id,
 * scopes and session, with `aud` = the server's name, so the upstream can enforce tenancy at its
 * query layer without ever seeing the client's credential. Keys live in an IdentityKeyStore (they
 * survive restarts, so tokens stay verifiable), rotate on a schedule, and are published at
 * `/.well-known/mcp-edge/jwks.json`. Tokens are reused for half their lifetime per
 * (principal, session, server), so signing stays off the per-request path.
 *
 * With a shared store (several instances):
 * - rotation is serialized by the store (`insertIfDue`): instances that find it due at once
 *   create one key; one that lost the race reads the winner's;
 * - every instance reads the key list again every `reloadEvery` (and after losing a rotation), so
 *   all of them publish the same JWKS;
 * - a new key is published `publishAhead` before it signs: each instance signs with the newest
 *   key at least that old, so an upstream that fetched the JWKS from any instance already has the
 *   key of any token it gets. All instances pick the same key from the same list.
 */
export class IdentitySigner {
  readonly #o: IdentityOptions;
  readonly #store: IdentityKeyStore;
  readonly #ahead: number;
  /** Newest first. */
  #keys: SigningKey[] = [];
  readonly #imported = new Map<string, SigningKey>();
  readonly #cache = new Map<string, { token: string; refreshAt: number; kid: string }>();
  #rotating: Promise<void> | undefined;
  #rotateRetryAt = 0;
  #timer: NodeJS.Timeout | undefined;

  private constructor(store: IdentityKeyStore, options: IdentityOptions) {
    this.#store = store;
    this.#o = options;
    const reloadEvery = options.reloadEvery ?? 60_000;
    this.#ahead = Math.min(
      options.publishAhead ?? (store.shared ? 2 * reloadEvery : 0),
      options.rotateEvery / 2,
    );
  }

  /** Loads the keys, creates the first (or a due) one, and with a shared store starts reloading. */
  static async open(store: IdentityKeyStore, options: IdentityOptions): Promise<IdentitySigner> {
    const signer = new IdentitySigner(store, options);
    await signer.#load();
    await signer.#rotate(Date.now());
    if (store.shared) {
      signer.#timer = setInterval(() => {
        signer.reload().catch((err: unknown) => options.onError?.(err));
      }, options.reloadEvery ?? 60_000);
      signer.#timer.unref();
    }
    return signer;
  }

  /** Stops the periodic reload. */
  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Reads the key list again (the periodic reload; tests). */
  reload(): Promise<void> {
    return this.#load();
  }

  async #load(): Promise<void> {
    const rows = await this.#store.list();
    const keys: SigningKey[] = [];
    for (const r of rows) {
      let k = this.#imported.get(r.kid);
      if (!k) {
        k = {
          kid: r.kid,
          key: (await importJWK(JSON.parse(r.privateJwk) as JWK, "ES256")) as CryptoKey,
          publicJwk: JSON.parse(r.publicJwk) as JWK,
          createdAt: r.createdAt,
        };
        this.#imported.set(r.kid, k);
      }
      keys.push(k);
    }
    keys.sort((a, b) => b.createdAt - a.createdAt || (a.kid < b.kid ? -1 : 1));
    this.#keys = keys;
    for (const kid of this.#imported.keys()) if (!keys.some((k) => k.kid === kid)) this.#imported.delete(kid);
  }

  /** The key that signs at `now`: the newest one published for `publishAhead` (else the oldest). */
  #signing(now: number): SigningKey | undefined {
    return this.#keys.find((k) => now - k.createdAt >= this.#ahead) ?? this.#keys.at(-1);
  }

  #due(now: number): boolean {
    const newest = this.#keys[0];
    return !newest || now - newest.createdAt >= this.#o.rotateEvery - this.#ahead;
  }

  /** Creates a key when one is due (single flight); another instance's key is read instead when it won. */
  async #rotate(now: number): Promise<void> {
    if (!this.#due(now)) return;
    this.#rotating ??= (async () => {
      const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
      const kid = randomUUID();
      const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
      const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: "ES256" };
      await this.#store.insertIfDue(
        { kid, privateJwk: JSON.stringify(privateJwk), publicJwk: JSON.stringify(publicJwk), createdAt: now },
        now - (this.#o.rotateEvery - this.#ahead),
      );
      await this.#load();
    })().finally(() => {
      this.#rotating = undefined;
    });
    await this.#rotating;
  }

  /** Rotation on the request path: a store that fails leaves the keys in hand signing (retried later). */
  async #rotateIfDue(now: number): Promise<void> {
    if (!this.#due(now) || (this.#keys.length > 0 && now < this.#rotateRetryAt)) return;
    try {
      await this.#rotate(now);
    } catch (err) {
      if (this.#keys.length === 0) throw err;
      this.#rotateRetryAt = now + ROTATE_RETRY_MS;
      this.#o.onError?.(err);
    }
  }

  /** Public keys to verify identity tokens: the current one, newer ones, and those still within their overlap. */
  jwks(now = Date.now()): { keys: JWK[] } {
    const signing = this.#signing(now);
    const keep = this.#keys.filter(
      (k, i) =>
        i === 0 ||
        k === signing ||
        (signing !== undefined && k.createdAt > signing.createdAt) ||
        now - k.createdAt < this.#o.rotateEvery * 2,
    );
    return { keys: keep.map((k) => k.publicJwk) };
  }

  /**
   * The cached identity token for a call, without waiting: undefined when there is none to reuse
   * or a key rotation is due (then `token` makes one). Most calls end here, without the two
   * promises `token` costs.
   */
  cached(
    principal: Principal,
    server: string,
    sessionTag: string | undefined,
    now = Date.now(),
  ): string | undefined {
    if (this.#due(now)) return undefined;
    const signing = this.#signing(now);
    const hit = this.#cache.get(cacheKeyOf(principal, server, sessionTag));
    return hit && signing && hit.refreshAt > now && hit.kid === signing.kid ? hit.token : undefined;
  }

  /** The identity token for a call; reused for half its lifetime. */
  async token(
    principal: Principal,
    server: string,
    sessionTag: string | undefined,
    now = Date.now(),
  ): Promise<string> {
    const cacheKey = cacheKeyOf(principal, server, sessionTag);
    await this.#rotateIfDue(now);
    const signing = this.#signing(now) as SigningKey;
    // Cached per signing key: every instance switches to a new key at the same moment.
    const hit = this.#cache.get(cacheKey);
    if (hit && hit.refreshAt > now && hit.kid === signing.kid) return hit.token;
    const iat = Math.floor(now / 1000);
    const token = await new SignJWT({
      tenant: principal.tenant,
      ...(principal.clientId ? { client_id: principal.clientId } : {}),
      ...(principal.keyId ? { key_id: principal.keyId } : {}),
      ...(principal.issuer ? { idp: principal.issuer } : {}),
      auth: principal.method,
      scope: principal.scopes.join(" "),
      ...(sessionTag ? { sid: sessionTag } : {}),
    })
      .setProtectedHeader({ alg: "ES256", kid: signing.kid, typ: "mcp-edge-identity+jwt" })
      .setIssuer(this.#o.issuer)
      .setAudience(server)
      .setSubject(principal.subject)
      .setIssuedAt(iat)
      .setExpirationTime(iat + Math.ceil(this.#o.ttl / 1000))
      .setJti(randomUUID())
      .sign(signing.key);
    if (this.#cache.size > 10_000) this.#cache.clear();
    this.#cache.set(cacheKey, { token, refreshAt: now + this.#o.ttl / 2, kid: signing.kid });
    return token;
  }
}

/** The identity-token cache key of a call: who, through which key, to which server, in which session. */
function cacheKeyOf(principal: Principal, server: string, sessionTag: string | undefined): string {
  return `${principal.id}\u0000${principal.keyId ?? ""}\u0000${server}\u0000${sessionTag ?? ""}`;
}
