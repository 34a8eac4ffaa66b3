/**
 * The TokenVault contract over every implementation: RedisTokenVault, two instances (one client
 * each) for one credential. Then what only the Redis vault has: the entry is sealed (AES-256-GCM,
 * key derived from the client secret), so Redis holds nothing usable and another secret reads
 * nothing; the lock expires by itself; a Redis that is down degrades to one instance's behaviour.
 *
 * Embedded mode has no vault: one process holds its own token (ClientCredentialsManager keeps it,
 * with one request in flight at a time), so there is nothing to share or serialize.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, test } from "node:test";
import { Redis } from "ioredis";
import { createRedisClient } from "../../src/store/redis/client.ts";
import { RedisTokenVault } from "../../src/store/redis/token-vault.ts";
import { VAULT_LOCK_MS } from "../../src/store/types.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { tokenVaultContract } from "./token-vault.contract.ts";

test(
  "TokenVault contract: embedded mode",
  {
    skip: "no implementation to run it over: embedded mode holds its token in the credentials manager (one process, nothing to share)",
  },
  () => {},
);

if (await redisReady("TokenVault contract (redis)")) {
  const admin = new Redis(REDIS_URL);
  const prefixes: string[] = [];
  after(async () => {
    for (const p of prefixes) await dropPrefix(admin, p);
    admin.disconnect();
  });

  const identity = "https://idp.example/token\u0000edge-client";
  function vault(redis: Redis, prefix: string, secret = "s3cret") {
    return new RedisTokenVault({ redis, prefix, identity, secret, owner: randomBytes(6).toString("hex") });
  }

  tokenVaultContract("redis (two instances)", async () => {
    const prefix = testPrefix();
    prefixes.push(prefix);
    const ca = createRedisClient({ url: REDIS_URL });
    const cb = createRedisClient({ url: REDIS_URL });
    return {
      a: vault(ca, prefix),
      b: vault(cb, prefix),
      async close() {
        ca.disconnect();
        cb.disconnect();
      },
    };
  });

  describe("RedisTokenVault", () => {
    test("Redis holds the token sealed; a vault with another secret reads nothing", async () => {
      const prefix = testPrefix();
      prefixes.push(prefix);
      const t = { value: "Bearer very-secret-token", obtainedAt: Date.now(), expiresAt: Date.now() + 60_000 };
      await vault(admin, prefix).put(t);
      const keys = await admin.keys(`${prefix.replace(/[{}]/g, "\\$&")}*`);
      assert.equal(keys.length, 1);
      const stored = (await admin.get(keys[0]!)) ?? "";
      assert.ok(stored.length > 0);
      assert.ok(
        !stored.includes("very-secret-token") &&
          !Buffer.from(stored, "base64url").includes("very-secret-token"),
      );
      const ttl = await admin.pttl(keys[0]!);
      assert.ok(ttl > 55_000 && ttl <= 60_000, `expires with the token: ${ttl}`);
      assert.equal(await vault(admin, prefix, "rotated-secret").get(), undefined);
      assert.deepEqual(await vault(admin, prefix).get(), t);
    });

    test("the lock expires by itself (a holder that died never blocks the others for good)", async () => {
      const prefix = testPrefix();
      prefixes.push(prefix);
      assert.equal(await vault(admin, prefix).lock(), true);
      const keys = await admin.keys(`${prefix.replace(/[{}]/g, "\\$&")}*`);
      assert.equal(keys.length, 1);
      const ttl = await admin.pttl(keys[0]!);
      assert.ok(ttl > 0 && ttl <= VAULT_LOCK_MS, String(ttl));
    });

    test("Redis down: nothing shared, the lock is granted (each instance fetches its own)", async () => {
      // A port nothing listens on: every command fails fast.
      const dead = createRedisClient({
        url: "redis://127.0.0.1:1",
        commandTimeoutMs: 100,
        maxReconnectDelayMs: 50,
      });
      dead.on("error", () => undefined);
      try {
        const v = vault(dead, testPrefix());
        assert.equal(await v.get(), undefined);
        await v.put({ value: "Bearer x", obtainedAt: Date.now(), expiresAt: Date.now() + 60_000 });
        assert.equal(await v.lock(), true);
        await v.unlock();
      } finally {
        dead.disconnect();
      }
    });
  });
}
