import { randomUUID } from "node:crypto";
import type { DatabaseSync, StatementSync } from "node:sqlite";
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import type { Principal } from "./types.ts";

/** The header the upstream reads: who is calling, signed by the edge (SPEC §6). */
export const IDENTITY_HEADER = "x-mcp-edge-identity";

export interface IdentityOptions {
  /** `iss` of identity tokens: the edge's public URL. */
  issuer: string;
  /** Lifetime of one identity token (ms). */
  ttl: number;
  /** A new signing key this often (ms); the previous one stays published as long again. */
  rotateEvery: number;
}

interface KeyRow {
  kid: string;
  private_jwk: string;
  public_jwk: string;
  created_at: number;
}

interface SigningKey {
  kid: string;
  key: CryptoKey;
  publicJwk: JWK;
  createdAt: number;
}

/**
 * Signs `X-MCP-Edge-Identity`: a short-lived ES256 JWT naming tenant, subject, client, key id,
 * scopes and session, with `aud` = the server's name, so the upstream can enforce tenancy at its
 * query layer without ever seeing the client's credential. Keys live in the embedded store (they
 * survive restarts, so tokens stay verifiable), rotate on a schedule, and are published at
 * `/.well-known/mcp-edge/jwks.json`. Tokens are reused for half their lifetime per
 * (principal, session, server), so signing stays off the per-request path.
 */
export class IdentitySigner {
  readonly #o: IdentityOptions;
  readonly #db: DatabaseSync;
  readonly #stmt: { all: StatementSync; insert: StatementSync };
  #keys: SigningKey[] = [];
  readonly #cache = new Map<string, { token: string; refreshAt: number }>();
  #rotating: Promise<void> | undefined;

  private constructor(db: DatabaseSync, options: IdentityOptions) {
    this.#db = db;
    this.#o = options;
    this.#db.exec(`CREATE TABLE IF NOT EXISTS identity_keys (
      kid TEXT PRIMARY KEY, private_jwk TEXT NOT NULL, public_jwk TEXT NOT NULL, created_at INTEGER NOT NULL) STRICT`);
    this.#stmt = {
      all: this.#db.prepare("SELECT * FROM identity_keys ORDER BY created_at DESC"),
      insert: this.#db.prepare(
        "INSERT INTO identity_keys (kid, private_jwk, public_jwk, created_at) VALUES (?, ?, ?, ?)",
      ),
    };
  }

  static async open(db: DatabaseSync, options: IdentityOptions): Promise<IdentitySigner> {
    const signer = new IdentitySigner(db, options);
    await signer.#load();
    await signer.#rotateIfDue(Date.now());
    return signer;
  }

  async #load(): Promise<void> {
    const rows = this.#stmt.all.all() as unknown as KeyRow[];
    this.#keys = await Promise.all(
      rows.map(async (r) => ({
        kid: r.kid,
        key: (await importJWK(JSON.parse(r.private_jwk) as JWK, "ES256")) as CryptoKey,
        publicJwk: JSON.parse(r.public_jwk) as JWK,
        createdAt: r.created_at,
      })),
    );
  }

  async #rotateIfDue(now: number): Promise<void> {
    const newest = this.#keys[0];
    if (newest && now - newest.createdAt < this.#o.rotateEvery) return;
    this.#rotating ??= (async () => {
      const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
      const kid = randomUUID();
      const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
      const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: "ES256" };
      this.#stmt.insert.run(kid, JSON.stringify(privateJwk), JSON.stringify(publicJwk), now);
      await this.#load();
      this.#cache.clear();
    })().finally(() => {
      this.#rotating = undefined;
    });
    await this.#rotating;
  }

  /** Public keys to verify identity tokens: the current one and those still within their overlap. */
  jwks(now = Date.now()): { keys: JWK[] } {
    const keep = this.#keys.filter((k, i) => i === 0 || now - k.createdAt < this.#o.rotateEvery * 2);
    return { keys: keep.map((k) => k.publicJwk) };
  }

  /** The identity token for a call; reused for half its lifetime. */
  async token(
    principal: Principal,
    server: string,
    sessionTag: string | undefined,
    now = Date.now(),
  ): Promise<string> {
    const cacheKey = `${principal.id}\u0000${principal.keyId ?? ""}\u0000${server}\u0000${sessionTag ?? ""}`;
    const hit = this.#cache.get(cacheKey);
    if (hit && hit.refreshAt > now) return hit.token;
    await this.#rotateIfDue(now);
    const signing = this.#keys[0] as SigningKey;
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
    this.#cache.set(cacheKey, { token, refreshAt: now + this.#o.ttl / 2 });
    return token;
  }
}
