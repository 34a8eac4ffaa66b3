import { hash, randomBytes, timingSafeEqual } from "node:crypto";
import { GatewayError } from "../errors/errors.ts";
import type { ApiKeyRecord, ApiKeyStore } from "../store/types.ts";
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
 * Keys that matched their record, with their id and SHA-256: a client sends the same key on every
 * call, and hashing it each time (with two hex decodings) was most of the key check's cost. Only
 * keys that matched are kept, so random keys cannot push the real ones out; a hit still reads the
 * record and checks its hash, server, expiry and revocation, as every call does. Bounded; the
 * oldest entry goes first. The raw keys live in process memory as they do in each request's
 * headers (docs/auth.md, API keys).
 */
const verifiedKeys = new Map<string, { id: string; hash: string }>();
const VERIFIED_KEYS_MAX = 10_000;

function rememberVerified(key: string, id: string, hash: string): void {
  if (verifiedKeys.size >= VERIFIED_KEYS_MAX) {
    const oldest = verifiedKeys.keys().next();
    if (!oldest.done) verifiedKeys.delete(oldest.value);
  }
  verifiedKeys.set(key, { id, hash });
}

/**
 * Checks an API key for a route. Unknown, malformed, wrong-server, expired and revoked keys all
 * fail the same way, in comparable time (the hash comparison runs whenever a record exists), so the
 * answer says nothing about which keys exist (security.md B).
 */
export async function authenticateApiKey(
  store: ApiKeyStore,
  key: string,
  /** The route's server; undefined accepts a key of any server (admin credentials). */
  server: string | undefined,
  now = Date.now(),
): Promise<Principal> {
  const known = verifiedKeys.get(key);
  const id = known?.id ?? keyIdOf(key);
  const rec = id ? await store.get(id) : undefined;
  let matches: boolean;
  if (known !== undefined && rec !== undefined && known.hash === rec.hash) {
    // This exact key string was hashed and matched this record's hash before: same answer.
    matches = true;
  } else {
    const digest = hashKey(key);
    const stored = Buffer.from(rec?.hash ?? "0".repeat(64), "hex");
    matches = timingSafeEqual(Buffer.from(digest, "hex"), stored) && rec !== undefined;
    if (matches && id) rememberVerified(key, id, digest);
  }
  if (!rec || !matches || (server !== undefined && rec.server !== server) || !isUsable(rec, now)) {
    // A refusal costs the same whether the key was remembered or not (the hash is computed).
    if (known !== undefined) hashKey(key);
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
