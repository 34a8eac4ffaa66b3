import { hash, randomBytes, timingSafeEqual } from "node:crypto";
import { GatewayError } from "../errors/errors.ts";
import { KEY_CACHE_TTL_MS } from "../store/key-cache.ts";
import { type ApiKeyRecord, type ApiKeyStore, keyServes } from "../store/types.ts";
import type { Principal } from "./types.ts";

/**
 * API keys: `mcpe_<id>_<secret>`. The prefix makes a leaked key recognizable (secret scanners,
 * logs); the id finds the record without a scan; the secret is 256 random bits. Only the SHA-256
 * of the whole key is stored: with 256-bit secrets a slow KDF buys nothing (no dictionary to try).
 */
export const KEY_PREFIX = "mcpe_";
const KEY_FORMAT = /^mcpe_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";

export function newKeyId(): string {
  const bytes = randomBytes(12);
  let id = "";
  for (const b of bytes) id += ID_ALPHABET[b % ID_ALPHABET.length];
  return id;
}

export function hashKey(key: string): string {
  return hash("sha256", key); // one-shot: half the cost of createHash().update().digest()
}

/** A new key: the string shown once, its id, and the hash that is stored. */
export function mintApiKey(): { id: string; key: string; hash: string } {
  const id = newKeyId();
  const key = `${KEY_PREFIX}${id}_${randomBytes(32).toString("base64url")}`;
  return { id, key, hash: hashKey(key) };
}

/** The key id of a well-formed key string, else undefined. */
export function keyIdOf(key: string): string | undefined {
  return KEY_FORMAT.exec(key)?.[1];
}

export type KeyStatus = "active" | "rotating" | "expired" | "revoked" | "revoking";

/** A key's status at `now`: `rotating`/`revoking` are still valid, ending at a set time. */
export function keyStatus(rec: ApiKeyRecord, now: number): KeyStatus {
  if (rec.revokedAt !== null && rec.revokedAt <= now) return "revoked";
  if (rec.expiresAt !== null && rec.expiresAt <= now) return "expired";
  if (rec.revokedAt !== null) return "revoking";
  if (rec.rotatedTo !== null) return "rotating";
  return "active";
}

export function isUsable(rec: ApiKeyRecord, now: number): boolean {
  const s = keyStatus(rec, now);
  return s === "active" || s === "rotating" || s === "revoking";
}

/** Sessions and limits belong to the consumer, so a rotated key continues the same sessions. */
export function keyPrincipalId(rec: Pick<ApiKeyRecord, "server" | "tenant" | "consumer">): string {
  return `key:${rec.server}:${rec.tenant}:${rec.consumer}`;
}

/**
 * The least time a refused check takes, from its start (µs). The check's own work is the same on
 * every path, but the store's is not quite: the first read of an id that exists materializes a row
 * (about 10 µs more than a miss in SQLite). A refusal that finished sooner waits out the rest, so
 * the answer leaves at the same time whichever way the lookup went. Only refusals wait; an
 * accepted key never does. (A busy wait: a timer's granularity is 1 ms, and its jitter is not
 * independent of the path.)
 */
export const REFUSAL_FLOOR_US = 100;

function waitOutFloor(startedAt: number): void {
  const until = startedAt + REFUSAL_FLOOR_US / 1000;
  while (performance.now() < until) {
    // spin: see REFUSAL_FLOOR_US
  }
}

/** What a digest is compared with when no record exists: the same 32-byte compare as a real one. */
const NO_RECORD_HASH = Buffer.alloc(32);
const VERIFIED_KEYS_MAX = 10_000;
const UNKNOWN_IDS_MAX = 10_000;

/**
 * The API-key check of one edge (its own memory: two edges in one process share nothing).
 *
 * It remembers keys that matched their record, with their id and SHA-256: a client sends the same
 * key on every call, and hashing it each time (with two hex decodings) was most of the key check's
 * cost. Only keys that matched are kept, so random keys cannot push the real ones out; a hit still
 * reads the record and checks its hash, server, expiry and revocation, as every call does. Bounded;
 * the oldest entry goes first. The raw keys live in process memory as they do in each request's
 * headers (docs/auth.md, API keys).
 *
 * It also remembers ids looked up and not found, with when (performance.now()): for as long as the
 * key stores reuse a record they read (KEY_CACHE_TTL_MS), an id found missing is answered from
 * memory too. Without it a real id (its record cached by the store) was answered faster than an
 * unknown one (a query every time): a timing oracle for which key ids exist. Bounded; cleared whole
 * when full.
 */
export class ApiKeyChecker {
  /**
   * The work of key checks, counted: store lookups, SHA-256 computations and constant-time hash
   * comparisons. A refusal must cost the same whichever check failed (tests compare these).
   */
  readonly work = { lookups: 0, hashes: 0, compares: 0 };
  readonly #verified = new Map<string, { id: string; hash: string }>();
  readonly #unknown = new Map<string, number>();

  #remember(key: string, id: string, hash: string): void {
    if (this.#verified.size >= VERIFIED_KEYS_MAX) {
      const oldest = this.#verified.keys().next();
      if (!oldest.done) this.#verified.delete(oldest.value);
    }
    this.#verified.set(key, { id, hash });
  }

  async #lookup(store: ApiKeyStore, id: string): Promise<ApiKeyRecord | undefined> {
    this.work.lookups++;
    const at = performance.now();
    const missedAt = this.#unknown.get(id);
    if (missedAt !== undefined && at - missedAt < KEY_CACHE_TTL_MS) return undefined;
    const rec = await store.get(id);
    if (rec) {
      if (missedAt !== undefined) this.#unknown.delete(id);
    } else {
      if (this.#unknown.size >= UNKNOWN_IDS_MAX) this.#unknown.clear();
      this.#unknown.set(id, at);
    }
    return rec;
  }

  /** Constant-time comparison of a digest with the record's hash (or a dummy of the same size). */
  #compare(digest: string, rec: ApiKeyRecord | undefined): boolean {
    this.work.compares++;
    const given = Buffer.from(digest, "hex");
    const stored = rec ? Buffer.from(rec.hash, "hex") : NO_RECORD_HASH;
    return stored.length === given.length && timingSafeEqual(given, stored);
  }

  #digest(key: string): string {
    this.work.hashes++;
    return hashKey(key);
  }

  /**
   * Checks an API key for a route. Unknown, malformed, wrong-server, expired and revoked keys all
   * fail the same way, with the same work: one lookup of the id, one SHA-256 of the key and one
   * constant-time comparison of 32 bytes (against a dummy when no record exists), so neither the
   * answer nor its time says which key ids exist.
   */
  async check(
    store: ApiKeyStore,
    key: string,
    /** The route's server; undefined accepts a key of any server (admin credentials). */
    server: string | undefined,
    now = Date.now(),
  ): Promise<Principal> {
    const startedAt = performance.now();
    const known = this.#verified.get(key);
    const id = known?.id ?? keyIdOf(key);
    const rec = id ? await this.#lookup(store, id) : undefined;
    let matches: boolean;
    let hashed = false;
    if (known !== undefined && rec !== undefined && known.hash === rec.hash) {
      // This exact key string was hashed and matched this record's hash before: same answer.
      matches = true;
    } else {
      matches = this.#compare(this.#digest(key), rec) && rec !== undefined;
      hashed = true;
      if (matches && id && rec) this.#remember(key, id, rec.hash);
    }
    if (!rec || !matches || (server !== undefined && !keyServes(rec.server, server)) || !isUsable(rec, now)) {
      // A refusal costs the same whether the key was remembered or not: hash and compare.
      if (!hashed) this.#compare(this.#digest(key), rec);
      waitOutFloor(startedAt);
      throw new GatewayError("EDGE_AUTH_INVALID_TOKEN", "The API key is not valid for this server.");
    }
    store.touch(rec.id, now);
    const ends =
      rec.expiresAt === null
        ? rec.revokedAt
        : rec.revokedAt === null
          ? rec.expiresAt
          : Math.min(rec.expiresAt, rec.revokedAt);
    return {
      id: keyPrincipalId(rec),
      method: "apiKey",
      tenant: rec.tenant,
      subject: rec.consumer,
      keyId: rec.id,
      scopes: rec.scopes,
      ...(rec.tools ? { tools: rec.tools } : {}),
      ...(ends !== null ? { expiresAt: ends } : {}),
    };
  }
}
