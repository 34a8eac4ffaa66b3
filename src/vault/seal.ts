/**
 * Encryption of what the vault keeps: AES-256-GCM (NIST SP 800-38D) with a random 96-bit IV per
 * write and the record's key — (tenant, subject, connection) — as associated data, so a sealed
 * value copied onto another user's row does not open there. The sealed text names the key it was
 * sealed with (`v1.<kid>.<iv>.<ciphertext+tag>`, base64url): rotation adds a new `vault.key` and
 * keeps the old one in `vault.previousKeys` for reading; every write seals with the current key.
 *
 * The same key ring signs the connect links and the OAuth `state` (HMAC-SHA256 and AES-GCM under
 * keys derived with HKDF-SHA256, one per purpose), so those links need no server-side storage and
 * work on every instance.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  hkdfSync,
  randomBytes,
  timingSafeEqual,
} from "node:crypto";
import { GatewayError } from "../errors/errors.ts";

interface Key {
  kid: string;
  raw: Buffer;
}

/** Parses a 32-byte key written as base64 (standard or url) or hex. */
export function parseVaultKey(text: string, where: string): Buffer {
  const t = text.trim();
  const raw = /^[0-9a-fA-F]{64}$/.test(t)
    ? Buffer.from(t, "hex")
    : /^[A-Za-z0-9+/_-]{43}=?$/.test(t)
      ? Buffer.from(t.replace(/-/g, "+").replace(/_/g, "/"), "base64")
      : undefined;
  if (raw?.length !== 32)
    throw new GatewayError(
      "EDGE_CONFIG_INVALID",
      `${where}: must be 32 random bytes in base64 or hex (e.g. \`openssl rand -base64 32\`)`,
    );
  return raw;
}

const kidOf = (raw: Buffer) =>
  createHash("sha256").update("mcp-edge vault key id").update(raw).digest("hex").slice(0, 8);
const b64 = (b: Buffer) => b.toString("base64url");

export class KeyRing {
  readonly #current: Key;
  readonly #byKid = new Map<string, Key>();
  readonly #mac: Buffer;
  readonly #stateKey: Buffer;

  constructor(current: string, previous: readonly string[] = []) {
    const keys = [current, ...previous].map((t, i) => {
      const raw = parseVaultKey(t, i === 0 ? "vault.key" : `vault.previousKeys.${i - 1}`);
      return { kid: kidOf(raw), raw };
    });
    this.#current = keys[0] as Key;
    for (const k of keys) if (!this.#byKid.has(k.kid)) this.#byKid.set(k.kid, k);
    const derive = (info: string) =>
      Buffer.from(hkdfSync("sha256", this.#current.raw, Buffer.alloc(0), info, 32));
    this.#mac = derive("mcp-edge connect ticket");
    this.#stateKey = derive("mcp-edge connect state");
  }

  /** The id of the key new records are sealed with. */
  get currentKid(): string {
    return this.#current.kid;
  }

  seal(plaintext: string, aad: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv("aes-256-gcm", this.#current.raw, iv);
    c.setAAD(Buffer.from(aad));
    const ct = Buffer.concat([c.update(plaintext, "utf8"), c.final(), c.getAuthTag()]);
    return `v1.${this.#current.kid}.${b64(iv)}.${b64(ct)}`;
  }

  /** The plaintext, or undefined when the text is not sealed by a key of the ring for this `aad`. */
  open(sealed: string, aad: string): string | undefined {
    const [v, kid, iv, ct] = sealed.split(".");
    const key = kid === undefined ? undefined : this.#byKid.get(kid);
    if (v !== "v1" || !key || !iv || !ct) return undefined;
    return gcmOpen(key.raw, Buffer.from(iv, "base64url"), Buffer.from(ct, "base64url"), aad);
  }

  /** True when `sealed` was sealed with an older key (worth re-sealing on the next write). */
  isStale(sealed: string): boolean {
    return sealed.split(".")[1] !== this.#current.kid;
  }

  /** `payload` signed: `<base64url JSON>.<base64url HMAC>`. */
  sign(payload: object): string {
    const body = b64(Buffer.from(JSON.stringify(payload)));
    return `${body}.${b64(createHmac("sha256", this.#mac).update(body).digest())}`;
  }

  /** The payload of a `sign`ed text, or undefined when the signature does not hold. */
  verify(text: string): unknown {
    const dot = text.indexOf(".");
    if (dot <= 0 || text.length > 4096) return undefined;
    const body = text.slice(0, dot);
    const mac = Buffer.from(text.slice(dot + 1), "base64url");
    const want = createHmac("sha256", this.#mac).update(body).digest();
    if (mac.length !== want.length || !timingSafeEqual(mac, want)) return undefined;
    try {
      return JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as unknown;
    } catch {
      return undefined;
    }
  }

  /** `payload` encrypted for the OAuth `state` parameter (it carries the PKCE verifier). */
  sealState(payload: object): string {
    const iv = randomBytes(12);
    const c = createCipheriv("aes-256-gcm", this.#stateKey, iv);
    const ct = Buffer.concat([c.update(JSON.stringify(payload), "utf8"), c.final(), c.getAuthTag()]);
    return `${b64(iv)}.${b64(ct)}`;
  }

  openState(text: string): unknown {
    const [iv, ct] = text.length > 4096 ? [] : text.split(".");
    if (!iv || !ct) return undefined;
    const plain = gcmOpen(this.#stateKey, Buffer.from(iv, "base64url"), Buffer.from(ct, "base64url"), "");
    if (plain === undefined) return undefined;
    try {
      return JSON.parse(plain) as unknown;
    } catch {
      return undefined;
    }
  }
}

function gcmOpen(key: Buffer, iv: Buffer, ct: Buffer, aad: string): string | undefined {
  if (iv.length !== 12 || ct.length < 16) return undefined;
  try {
    const d = createDecipheriv("aes-256-gcm", key, iv);
    d.setAAD(Buffer.from(aad));
    d.setAuthTag(ct.subarray(ct.length - 16));
    return Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]).toString("utf8");
  } catch {
    return undefined;
  }
}
