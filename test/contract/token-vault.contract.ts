/**
 * The TokenVault contract (src/store/types.ts): what the instances of a fleet share about one
 * upstream client-credentials token (RFC 6749 §4.4). A token one instance stores, the others read
 * back as stored until it expires; the refresh lock is held by one instance at a time and only its
 * holder releases it. The factory gives two vaults for the same credential (two instances).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { TokenVault, VaultToken } from "../../src/store/types.ts";

export interface TokenVaults {
  a: TokenVault;
  b: TokenVault;
  close(): Promise<void>;
}

function token(value: string, ttlMs: number | undefined): VaultToken {
  const now = Date.now();
  return { value, obtainedAt: now, expiresAt: ttlMs === undefined ? undefined : now + ttlMs };
}

export function tokenVaultContract(name: string, open: () => Promise<TokenVaults>): void {
  describe(`TokenVault contract: ${name}`, () => {
    test("empty at first; a token one instance puts, the other gets as stored", async () => {
      const v = await open();
      try {
        assert.equal(await v.a.get(), undefined);
        assert.equal(await v.b.get(), undefined);
        const t = token("Bearer abc", 60_000);
        await v.a.put(t);
        assert.deepEqual(await v.b.get(), t);
        assert.deepEqual(await v.a.get(), t);
        // A newer token replaces it for everyone.
        const t2 = token("Bearer def", 120_000);
        await v.b.put(t2);
        assert.deepEqual(await v.a.get(), t2);
      } finally {
        await v.close();
      }
    });

    test("a token without an expiry is shared too", async () => {
      const v = await open();
      try {
        const t = token("Bearer forever", undefined);
        await v.a.put(t);
        const got = await v.b.get();
        assert.equal(got?.value, "Bearer forever");
        assert.equal(got?.expiresAt, undefined);
      } finally {
        await v.close();
      }
    });

    test("a token about to expire (under a second left) is not shared", async () => {
      const v = await open();
      try {
        await v.a.put(token("Bearer dying", 500));
        assert.equal(await v.b.get(), undefined);
      } finally {
        await v.close();
      }
    });

    test("the refresh lock: one holder at a time; only the holder releases it", async () => {
      const v = await open();
      try {
        assert.equal(await v.a.lock(), true);
        assert.equal(await v.b.lock(), false, "taken by a");
        await v.b.unlock(); // not b's: no effect
        assert.equal(await v.b.lock(), false, "still a's");
        await v.a.unlock();
        assert.equal(await v.b.lock(), true, "released by its holder");
        assert.equal(await v.a.lock(), false);
        await v.b.unlock();
      } finally {
        await v.close();
      }
    });

    test("of two instances that try the lock at once, exactly one gets it", async () => {
      const v = await open();
      try {
        const got = await Promise.all([v.a.lock(), v.b.lock()]);
        assert.equal(got.filter(Boolean).length, 1, JSON.stringify(got));
        await v.a.unlock();
        await v.b.unlock();
      } finally {
        await v.close();
      }
    });
  });
}
