/**
 * Is there a key-existence oracle by timing? A real key id with a wrong secret and an unknown key
 * id must cost the edge the same work and time (both are 401 EDGE_AUTH_INVALID_TOKEN).
 *
 *   node bench/key-oracle.ts [--tries 2000] [--micro 20000]
 *
 * 1. Through a real edge (a child process, `mcp-edge serve`, SQLite store, failed-auth limiter
 *    off so that every try is checked): `--tries` POSTs of each kind, interleaved in random order
 *    on one keep-alive connection after a warm-up, timed at the client (request written → answer
 *    read). Kinds: the real id with one wrong secret repeated, the real id with a fresh wrong secret
 *    each try, one unknown id repeated, a fresh unknown id each try.
 * 2. In process: `ApiKeyChecker.check` against the SQLite key store, `--micro` calls of each kind,
 *    interleaved, timed one by one (the same kinds).
 *
 * Prints, per kind, the median and interquartile range in µs, and the largest difference between
 * medians (a timing oracle would show as a stable gap between the "real id" and "unknown id" rows).
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { Agent, request } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { ApiKeyChecker, mintApiKey, newKeyId } from "../src/auth/apikey.ts";
import { SqliteApiKeyStore } from "../src/store/sqlite/api-keys.ts";
import { spawnEdge } from "../test/helpers/edge.ts";
import { NODE_BIN, REPO_ROOT } from "../test/helpers/spawn.ts";
import { ADMIN_TOKEN } from "./lib/edge.ts";

const { values } = parseArgs({
  options: { tries: { type: "string", default: "2000" }, micro: { type: "string", default: "20000" } },
});
const TRIES = Number(values.tries);
const MICRO = Number(values.micro);

const secret = () => randomBytes(32).toString("base64url");
type Kind =
  | "real id, same wrong secret"
  | "real id, fresh wrong secret"
  | "unknown id, same"
  | "real id, first try of it"
  | "unknown id, first try of it";
const KINDS: Kind[] = [
  "real id, same wrong secret",
  "real id, fresh wrong secret",
  "unknown id, same",
  "real id, first try of it",
  "unknown id, first try of it",
];

/**
 * The key to try next of each kind. `realIds[0]` is tried again and again; the others once each,
 * against as many unknown ids tried once each (the first lookup of an id reaches the database
 * whether it exists or not; later ones within the store's cache TTL are answered from memory).
 */
function keysFor(realIds: string[]): (kind: Kind) => string {
  const [repeated] = realIds as [string];
  const sameWrong = `mcpe_${repeated}_${secret()}`;
  const sameUnknown = `mcpe_${newKeyId()}_${secret()}`;
  let nextReal = 1;
  return (kind) => {
    switch (kind) {
      case "real id, same wrong secret":
        return sameWrong;
      case "real id, fresh wrong secret":
        return `mcpe_${repeated}_${secret()}`;
      case "unknown id, same":
        return sameUnknown;
      case "real id, first try of it": {
        const id = realIds[nextReal++];
        if (id === undefined) throw new Error("not enough keys");
        return `mcpe_${id}_${secret()}`;
      }
      case "unknown id, first try of it":
        return `mcpe_${newKeyId()}_${secret()}`;
    }
  };
}

function shuffled<T>(items: T[]): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = randomBytes(4).readUInt32LE() % (i + 1);
    [a[i], a[j]] = [a[j] as T, a[i] as T];
  }
  return a;
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

function report(title: string, samples: Record<Kind, number[]>): void {
  console.log(`\n${title}`);
  const medians: number[] = [];
  for (const kind of KINDS) {
    const s = [...samples[kind]].sort((a, b) => a - b);
    const med = quantile(s, 0.5);
    medians.push(med);
    console.log(
      `  ${kind.padEnd(28)} n=${s.length}  median ${med.toFixed(2)} µs  IQR ${quantile(s, 0.25).toFixed(2)}–${quantile(s, 0.75).toFixed(2)} µs`,
    );
  }
  const [sameReal, , sameUnknown, firstReal, firstUnknown] = medians as [
    number,
    number,
    number,
    number,
    number,
  ];
  // The oracle question: does a real id answer differently from an unknown one, tried the same way?
  console.log(`  real − unknown, id tried repeatedly: ${(sameReal - sameUnknown).toFixed(2)} µs`);
  console.log(`  real − unknown, first try of an id:  ${(firstReal - firstUnknown).toFixed(2)} µs`);
}

const BODY = JSON.stringify({
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "oracle", version: "1" } },
});

async function throughEdge(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), "mcp-edge-oracle-"));
  const edge = await spawnEdge(
    {
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      rateLimits: { authFailures: "off" },
      servers: {
        demo: {
          route: "/mcp",
          upstream: { stdio: { command: NODE_BIN, args: [path.join(REPO_ROOT, "src/demo/server.ts")] } },
        },
      },
    },
    dir,
  );
  try {
    // One key tried repeatedly, and one per "first try" (as an operator creates them).
    const ids: string[] = [];
    for (let i = 0; i < TRIES + 201; i++) {
      const res = await fetch(`${edge.adminUrl}/api/keys`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ name: `oracle-${i}`, server: "demo" }),
      });
      const created = (await res.json()) as { id: string };
      if (res.status !== 201) throw new Error(`creating a key: ${res.status}`);
      ids.push(created.id);
    }
    // Past the store's record cache (1 s) for the keys just created.
    await new Promise((r) => setTimeout(r, 1100));
    const next = keysFor(ids);
    const url = new URL(`${edge.baseUrl}/mcp`);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const once = (key: string) =>
      new Promise<number>((resolve, reject) => {
        const started = process.hrtime.bigint();
        const req = request(
          {
            host: url.hostname,
            port: url.port,
            path: url.pathname,
            method: "POST",
            agent,
            headers: {
              "content-type": "application/json",
              accept: "application/json, text/event-stream",
              authorization: `Bearer ${key}`,
              "content-length": Buffer.byteLength(BODY),
            },
          },
          (r) => {
            let text = "";
            r.setEncoding("utf8");
            r.on("data", (c: string) => (text += c));
            r.on("end", () => {
              if (r.statusCode !== 401) reject(new Error(`expected 401, got ${r.statusCode}: ${text}`));
              else resolve(Number(process.hrtime.bigint() - started) / 1000);
            });
          },
        );
        req.on("error", reject);
        req.end(BODY);
      });
    const samples = Object.fromEntries(KINDS.map((k) => [k, [] as number[]])) as Record<Kind, number[]>;
    const plan = shuffled(KINDS.flatMap((k) => Array.from({ length: TRIES + 200 }, () => k)));
    const seen = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>;
    for (const kind of plan) {
      const us = await once(next(kind));
      // The first 200 of each kind warm the JIT, the connection and the caches: not counted.
      if (seen[kind]++ >= 200) samples[kind].push(us);
    }
    agent.destroy();
    report(
      `Through a real edge (client-side time per 401, one keep-alive connection, ${TRIES} tries each):`,
      samples,
    );
  } finally {
    await edge.stop();
  }
}

async function inProcess(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), "mcp-edge-oracle-"));
  const store = new SqliteApiKeyStore(path.join(dir, "keys.db"));
  const ids: string[] = [];
  const now = Date.now();
  for (let i = 0; i < MICRO + 1001; i++) {
    const minted = mintApiKey();
    ids.push(minted.id);
    await store.insert({
      id: minted.id,
      name: `oracle-${i}`,
      server: "demo",
      tenant: "default",
      consumer: "oracle",
      hash: minted.hash,
      scopes: [],
      tools: null,
      createdAt: now,
      expiresAt: null,
      revokedAt: null,
      lastUsedAt: null,
      rotatedTo: null,
    });
  }
  const next = keysFor(ids);
  const checker = new ApiKeyChecker();
  const samples = Object.fromEntries(KINDS.map((k) => [k, [] as number[]])) as Record<Kind, number[]>;
  const plan = shuffled(KINDS.flatMap((k) => Array.from({ length: MICRO + 1000 }, () => k)));
  const seen = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>;
  for (const kind of plan) {
    const key = next(kind);
    const started = process.hrtime.bigint();
    try {
      await checker.check(store, key, "demo");
      throw new Error("a wrong key was accepted");
    } catch (err) {
      if ((err as { code?: string }).code !== "EDGE_AUTH_INVALID_TOKEN") throw err;
    }
    const us = Number(process.hrtime.bigint() - started) / 1000;
    if (seen[kind]++ >= 1000) samples[kind].push(us);
  }
  await store.close();
  report(`In process (ApiKeyChecker + SQLite key store, ${MICRO} calls each):`, samples);
}

await throughEdge();
await inProcess();
