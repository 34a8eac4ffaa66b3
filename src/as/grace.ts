/**
 * Refresh-token rotation with a single-successor grace window, around oidc-provider's refresh
 * grant (which rotates, and revokes the grant on any reuse of a rotated token).
 *
 * A refresh token presented for the first time is rotated once, whoever else presents it at the
 * same moment: the first request claims the rotation in the store (`add`, one winner across
 * instances) and runs the real refresh; every concurrent request with the same token — in this
 * process, or on another instance — waits for that answer and gets the same new pair. Presented
 * again within the grace (a client that lost the answer, two tabs racing), it gets the same pair
 * again. Presented after the grace, it is a replay (RFC 9700 §4.14): the grant is revoked with
 * every token of it.
 *
 * The stored answer is sealed with a key derived from the old refresh token itself (HKDF, AES-256-
 * GCM): only a holder of that token can read the new pair, and the store never holds a usable
 * token (the record is keyed by a hash of the old one).
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from "node:crypto";
import type { AsStore } from "../store/types.ts";

export interface TokenAnswer {
  status: number;
  body: string;
}

interface Rotation {
  state: "pending" | "done";
  at: number;
  sealed?: string;
  grantId?: string;
}

const KIND = "Rotation";
/** How long a claimed rotation may stay pending before another request may claim it. */
const PENDING_MS = 15_000;
const POLL_MS = 25;

const keyOf = (token: string): Buffer =>
  Buffer.from(hkdfSync("sha256", token, "mcp-edge", "refresh grace answer", 32));

function seal(token: string, id: string, text: string): string {
  const iv = randomBytes(12);
  const c = createCipheriv("aes-256-gcm", keyOf(token), iv);
  c.setAAD(Buffer.from(id));
  const body = Buffer.concat([c.update(text, "utf8"), c.final()]);
  return [iv, c.getAuthTag(), body].map((b) => b.toString("base64url")).join(".");
}

function unseal(token: string, id: string, sealed: string): string {
  const [iv = "", tag = "", body = ""] = sealed.split(".");
  const d = createDecipheriv("aes-256-gcm", keyOf(token), Buffer.from(iv, "base64url"));
  d.setAAD(Buffer.from(id));
  d.setAuthTag(Buffer.from(tag, "base64url"));
  return Buffer.concat([d.update(Buffer.from(body, "base64url")), d.final()]).toString("utf8");
}

export const invalidGrant = (description: string): TokenAnswer => ({
  status: 400,
  body: JSON.stringify({ error: "invalid_grant", error_description: description }),
});

export interface GraceOptions {
  store: AsStore;
  /** The grace window (ms). */
  graceMs: number;
  /** How long a rotation is remembered (ms): as long as the old token could have been valid. */
  keepMs: number;
  /** The grant of a successful answer (read from its access token). */
  grantOf(body: string): string | undefined;
  /** A rotated token was replayed after the grace: revoke its grant. */
  reused(grantId: string | undefined): Promise<void>;
}

export class RefreshGrace {
  readonly #o: GraceOptions;
  /** Refreshes in flight in this process, by rotation id: concurrent ones share the answer. */
  readonly #inflight = new Map<string, Promise<TokenAnswer>>();

  constructor(o: GraceOptions) {
    this.#o = o;
  }

  /** Runs `exchange` (the real refresh) at most once per refresh token; see the file comment. */
  refresh(token: string, exchange: () => Promise<TokenAnswer>): Promise<TokenAnswer> {
    const id = createHash("sha256").update(`refresh:${token}`).digest("base64url");
    let p = this.#inflight.get(id);
    if (!p) {
      p = this.#run(token, id, exchange).finally(() => this.#inflight.delete(id));
      this.#inflight.set(id, p);
    }
    return p;
  }

  async #run(token: string, id: string, exchange: () => Promise<TokenAnswer>): Promise<TokenAnswer> {
    const { store } = this.#o;
    const deadline = Date.now() + PENDING_MS + 5000;
    for (;;) {
      const now = Date.now();
      const claim: Rotation = { state: "pending", at: now };
      const won = await store.add({
        kind: KIND,
        id,
        payload: JSON.stringify(claim),
        grantId: null,
        uid: null,
        tenant: null,
        subject: null,
        clientId: null,
        expiresAt: now + PENDING_MS,
        consumedAt: null,
      });
      if (won) return this.#rotate(token, id, exchange);
      const rec = await store.get(KIND, id);
      if (rec) {
        const r = JSON.parse(rec.payload) as Rotation;
        if (r.state === "done") {
          if (Date.now() - r.at <= this.#o.graceMs && r.sealed)
            return { status: 200, body: unseal(token, id, r.sealed) };
          await this.#o.reused(r.grantId);
          return invalidGrant("refresh token already used");
        }
      }
      if (Date.now() > deadline)
        return { status: 503, body: JSON.stringify({ error: "temporarily_unavailable" }) };
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  async #rotate(token: string, id: string, exchange: () => Promise<TokenAnswer>): Promise<TokenAnswer> {
    let answer: TokenAnswer;
    try {
      answer = await exchange();
    } catch (err) {
      await this.#o.store.delete(KIND, id).catch(() => undefined);
      throw err;
    }
    if (answer.status !== 200) {
      // Nothing was rotated: the next presentation goes to the real refresh again (and gets the
      // same refusal, or revokes the grant if the token had been rotated before this record).
      await this.#o.store.delete(KIND, id);
      return answer;
    }
    const now = Date.now();
    const grantId = this.#o.grantOf(answer.body);
    const done: Rotation = {
      state: "done",
      at: now,
      sealed: seal(token, id, answer.body),
      ...(grantId ? { grantId } : {}),
    };
    await this.#o.store.put({
      kind: KIND,
      id,
      payload: JSON.stringify(done),
      grantId: grantId ?? null,
      uid: null,
      tenant: null,
      subject: null,
      clientId: null,
      expiresAt: now + this.#o.keepMs,
      consumedAt: null,
    });
    return answer;
  }
}
