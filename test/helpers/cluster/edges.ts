/**
 * Distributed mode under test: N real edge processes sharing Redis and PostgreSQL, behind a
 * round-robin balancer with no affinity (./balancer.ts), in front of instances of a real MCP
 * server (./upstream-fleet.ts).
 *
 *   const up = await startUpstreams(["a", "b"]);
 *   const cluster = await startCluster({ edges: 3, redisUrl, keyPrefix, pgSchema, upstreams: up });
 *   const { key } = await cluster.createKey("ci");
 *   ... SDK clients (./clients.ts) on cluster.mcpUrl (the balancer) with `Authorization: Bearer <key>` ...
 *   await cluster.stop(); await Promise.all(up.map((u) => u.stop()));
 */
import assert from "node:assert/strict";
import path from "node:path";
import { type EdgeConfigDoc, type SpawnedEdge, spawnEdge, tempDir } from "../edge.ts";
import { POSTGRES_URL } from "../postgres.ts";
import { Balancer } from "./balancer.ts";
import type { Upstream } from "./upstream-fleet.ts";

export const ADMIN_TOKEN = "cluster-admin-token-0123456789abcdef-0123456789";
export const ROUTE = "/mcp";
export const SERVER = "conf";
export const TENANT = "acme";

export interface ClusterOptions {
  edges?: number;
  redisUrl: string;
  keyPrefix: string;
  /** PostgreSQL schema shared by every edge (created and migrated by the edges). */
  pgSchema: string;
  upstreams: Upstream[];
  /** Merged into the server's config (e.g. `limits`). */
  server?: Record<string, unknown>;
  /** Merged into `store.redis`. */
  redis?: Record<string, unknown>;
  /** The PostgreSQL URL the edges use (default: the test database), e.g. through a TcpProxy. */
  postgresUrl?: string;
  /** Merged into the top level of the config (e.g. `streams`, `drain`). */
  extra?: Record<string, unknown>;
}

export interface Cluster {
  edges: SpawnedEdge[];
  lb: Balancer;
  /** The MCP URL through the balancer. */
  mcpUrl: string;
  /** The MCP URL of one edge, bypassing the balancer. */
  edgeUrl(i: number): string;
  admin(i: number, method: string, p: string, body?: unknown): Promise<{ status: number; json: any }>;
  createKey(name: string, extra?: Record<string, unknown>): Promise<{ key: string; id: string }>;
  /** SIGTERM every edge still running (SIGKILL after `graceMs`), close the balancer. */
  stop(graceMs?: number): Promise<void>;
}

export function edgeConfig(o: ClusterOptions, dir: string, publicUrl: string): EdgeConfigDoc {
  return {
    listen: { host: "127.0.0.1", port: 0 },
    // The balancer's address is the one clients use: Host checks and metadata follow it.
    publicUrl,
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    store: {
      sqlite: path.join(dir, "edge.db"),
      redis: { url: o.redisUrl, keyPrefix: o.keyPrefix, instances: o.edges ?? 3, ...o.redis },
      postgres: { url: o.postgresUrl ?? POSTGRES_URL, schema: o.pgSchema, poolSize: 4 },
    },
    // No readiness grace unless a test asks for it (the rolling-restart test keeps the product's
    // default): it would add 5 s to every teardown.
    drain: { timeout: "5s", delay: "0s" },
    ...o.extra,
    servers: {
      [SERVER]: {
        route: ROUTE,
        upstream: { urls: o.upstreams.map((u) => u.url) },
        auth: ["apiKey"],
        ...o.server,
      },
    },
  };
}

async function stopEdge(e: SpawnedEdge, graceMs: number): Promise<void> {
  const c = e.child;
  if (c.exitCode !== null || c.signalCode !== null) return;
  c.kill("SIGTERM");
  const timer = setTimeout(() => c.kill("SIGKILL"), graceMs);
  await e.exited;
  clearTimeout(timer);
}

/** Starts the balancer, then the edges (in parallel), and puts the edges behind the balancer. */
export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  const lb = await Balancer.start();
  const n = o.edges ?? 3;
  const settled = await Promise.allSettled(
    Array.from({ length: n }, () => {
      const dir = tempDir("mcp-edge-cluster-");
      // A longer wait than spawnEdge's default: three edges compile their TypeScript at once.
      return spawnEdge(edgeConfig(o, dir, lb.url), dir, 60_000);
    }),
  );
  const edges = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) {
    await Promise.allSettled(edges.map((e) => e.kill()));
    await lb.close();
    throw (failed as PromiseRejectedResult).reason;
  }
  for (const e of edges) lb.add(e.baseUrl, e.adminUrl);

  const admin = async (i: number, method: string, p: string, body?: unknown) => {
    const res = await fetch(`${(edges[i] as SpawnedEdge).adminUrl}${p}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, json: json as any };
  };
  return {
    edges,
    lb,
    mcpUrl: `${lb.url}${ROUTE}`,
    edgeUrl: (i) => `${(edges[i] as SpawnedEdge).baseUrl}${ROUTE}`,
    admin,
    async createKey(name, extra = {}) {
      const r = await admin(0, "POST", "/api/keys", { name, server: SERVER, tenant: TENANT, ...extra });
      assert.equal(r.status, 201, `POST /api/keys: ${JSON.stringify(r.json)}`);
      return { key: r.json.key as string, id: r.json.id as string };
    },
    async stop(graceMs = 8000) {
      await Promise.allSettled(edges.map((e) => stopEdge(e, graceMs)));
      await lb.close();
    },
  };
}
