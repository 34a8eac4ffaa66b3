/**
 * Short named locks in Redis (distributed mode): `SET NX PX` with this instance's token, released
 * only by the holder (a compare-and-delete script), expiring by themselves if the holder dies.
 */
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { guardOf } from "./client.ts";

const RELEASE = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`;

export class RedisLock {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #owner = randomBytes(12).toString("base64url");

  constructor(redis: Redis, prefix: string) {
    this.#redis = redis;
    this.#prefix = `${prefix}lock:`;
  }

  async acquire(key: string, ttlMs: number): Promise<boolean> {
    return (
      (await guardOf(this.#redis).run(() =>
        this.#redis.set(this.#prefix + key, this.#owner, "PX", ttlMs, "NX"),
      )) === "OK"
    );
  }

  async release(key: string): Promise<void> {
    await guardOf(this.#redis).run(() => this.#redis.eval(RELEASE, 1, this.#prefix + key, this.#owner));
  }
}
