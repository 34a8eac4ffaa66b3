/** Helpers shared by the benchmarks that run mcp-edge as a child process. */

/** Admin token of the benchmark's edges (the keys are created with it). */
export const ADMIN_TOKEN = "bench-admin-token-0123456789abcdef0123456789";

/**
 * The full pipeline's limits: per key, session and tool plus an in-flight cap per session, set high
 * enough never to refuse (the cost of counting is what is measured).
 */
export const FULL_LIMITS = {
  key: "100000000/min",
  session: "100000000/min",
  tool: "100000000/min",
  concurrency: { session: 64 },
};

/**
 * Where the edge listens, per route name, and its admin URL (key `admin:`): from the banner on
 * stderr (`MCP endpoint (name):  url`, `Health:   http://.../healthz`).
 */
export function edgeAnnouncement(line: string): Record<string, string> | undefined {
  const banner = /MCP endpoint \(([^)]+)\):\s+(\S+)/.exec(line);
  if (banner?.[1] && banner[2]) return { [banner[1]]: banner[2] };
  const health = /Health:\s+(\S+)\/healthz/.exec(line);
  if (health?.[1]) return { "admin:": health[1] };
  return undefined;
}

/** Creates one API key per server through the admin API, as an operator would. */
export async function createKeys(adminUrl: string, servers: string[]): Promise<Map<string, string>> {
  const keys = new Map<string, string>();
  for (const server of servers) {
    const res = await fetch(`${adminUrl}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "bench", server, tenant: "bench", consumer: "load" }),
    });
    const body = (await res.json()) as { key?: string };
    if (res.status !== 201 || !body.key) throw new Error(`creating a key for ${server}: ${res.status}`);
    keys.set(server, body.key);
  }
  return keys;
}
