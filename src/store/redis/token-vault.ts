/**
 * Upstream tokens shared by the instances of a fleet (distributed mode). Without it, N instances each fetch
 * their own client-credentials token and each refreshes it: N× the load on the token endpoint, and
 * N different tokens alive at once. With it:
 *
 *   - a token one instance obtained is stored in Redis, so the others use it instead of fetching;
 *   - a refresh takes a short lock (`<prefix>lock:cred:<id>`); an instance that finds the lock
 *     taken waits (polls) for the token the lock holder stores, and only fetches itself when none
 *     arrives in time (the holder died): serialized, never stuck.
 *
 * The stored value is encrypted (AES-256-GCM) with a key derived (HKDF-SHA256) from the client
 * secret: Redis, its backups and anyone reading its keys learn nothing usable; only holders of the
 * secret — the edge instances — can decrypt. The entry expires with the token.
 *
 * Every Redis failure degrades to the single-instance behaviour (fetch locally); none reaches a
 * request as an error.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { guardOf } from "./client.ts";
import { type TokenVault, VAULT_LOCK_MS, type VaultToken } from "../types.ts";

/** Tokens without `expires_in` are shared this long. */
const NO_EXPIRY_SHARE_MS = 3_600_000;

export interface RedisTokenVaultOptions {
  redis: Redis;
  prefix: string;
  /** Identifies the credential: token URL + client id (+ scope/audience), hashed into the key. */
  identity: string;
  /** The client secret: the encryption key is derived from it. */
  secret: string;
  /** The lock holder's id (for a safe unlock). */
  owner: string;
}

export class RedisTokenVault implements TokenVault {
  readonly #redis: Redis;
  readonly #key: string;
  readonly #lockKey: string;
  readonly #aesKey: Buffer;
  readonly #aad: Buffer;
  readonly #owner: string;

  constructor(o: RedisTokenVaultOptions) {
    const id = createHash("sha256").update(o.identity).digest("base64url").slice(0, 22);
    this.#redis = o.redis;
    this.#key = `${o.prefix}cred:${id}`;
    this.#lockKey = `${o.prefix}lock:cred:${id}`;
    this.#aad = Buffer.from(o.identity);
    this.#aesKey = Buffer.from(hkdfSync("sha256", o.secret, o.identity, "mcp-edge upstream token vault", 32));
    this.#owner = o.owner;
  }

  async get(): Promise<VaultToken | undefined> {
    let stored: string | null;
    try {
      stored = await guardOf(this.#redis).run(() => this.#redis.get(this.#key));
    } catch {
      return undefined;
    }
    if (!stored) return undefined;
    try {
      const raw = Buffer.from(stored, "base64url");
      const iv = raw.subarray(0, 12);
      const tag = raw.subarray(12, 28);
      const decipher = createDecipheriv("aes-256-gcm", this.#aesKey, iv);
      decipher.setAAD(this.#aad);
      decipher.setAuthTag(tag);
      const plain = Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString("utf8");
      const t = JSON.parse(plain) as VaultToken;
      return typeof t.value === "string" && typeof t.obtainedAt === "number" ? t : undefined;
    } catch {
      return undefined; // another secret (rotated), or tampered: ignore, fetch our own
    }
  }

  async put(token: VaultToken): Promise<void> {
    const ttl =
      token.expiresAt === undefined ? NO_EXPIRY_SHARE_MS : Math.max(0, token.expiresAt - Date.now());
    if (ttl < 1000) return;
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.#aesKey, iv);
    cipher.setAAD(this.#aad);
    const body = Buffer.concat([cipher.update(JSON.stringify(token), "utf8"), cipher.final()]);
    const sealed = Buffer.concat([iv, cipher.getAuthTag(), body]).toString("base64url");
    try {
      await guardOf(this.#redis).run(() => this.#redis.set(this.#key, sealed, "PX", ttl));
    } catch {
      // Not shared this time: the others fetch their own.
    }
  }

  async lock(): Promise<boolean> {
    try {
      return (
        (await guardOf(this.#redis).run(() =>
          this.#redis.set(this.#lockKey, this.#owner, "PX", VAULT_LOCK_MS, "NX"),
        )) === "OK"
      );
    } catch {
      return true; // Redis down: behave as a single instance
    }
  }

  async unlock(): Promise<void> {
    try {
      // Only our own lock (it may have expired and been taken by another instance meanwhile).
      await guardOf(this.#redis).run(() =>
        this.#redis.eval(
          "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
          1,
          this.#lockKey,
          this.#owner,
        ),
      );
    } catch {
      // It expires by itself.
    }
  }
}
