import { existsSync, readFileSync } from "node:fs";
import { Egress } from "../egress/index.ts";
import { readBody } from "../upstream/reply.ts";
import type { CommandIo } from "./args.ts";

/** Where the quickstart notes its admin API's URL (its port may be moved by MCP_EDGE_ADMIN_PORT). */
export const QUICKSTART_ADMIN_URL_FILE = ".mcp-edge/admin-url";

/**
 * The admin API base URL of a CLI command: `--url`, else $MCP_EDGE_ADMIN_URL, else the quickstart's
 * (in this folder), else the default listener.
 */
export function adminBase(url: string | undefined, env: NodeJS.ProcessEnv): string {
  const quickstart = existsSync(QUICKSTART_ADMIN_URL_FILE)
    ? readFileSync(QUICKSTART_ADMIN_URL_FILE, "utf8").trim()
    : undefined;
  return (url ?? env.MCP_EDGE_ADMIN_URL ?? (quickstart || "http://127.0.0.1:8788")).replace(/\/+$/, "");
}

/**
 * One admin API request with the admin token. Resolves with the parsed JSON answer, or with the
 * exit status after writing the failure (unreachable API, or the coded error it answered) to stderr.
 */
export async function adminCall(
  io: Pick<CommandIo, "stderr">,
  base: string,
  token: string,
  method: "GET" | "POST" | "DELETE",
  path: string,
  body?: unknown,
): Promise<{ json: unknown } | number> {
  const egress = new Egress({ connectTimeout: 5000 });
  let status: number;
  let json: unknown;
  try {
    const res = await egress.request(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(15_000),
    });
    status = res.status;
    const text = (await readBody(res.body, 4 * 1024 * 1024)).toString("utf8");
    json = text ? JSON.parse(text) : {};
  } catch (err) {
    io.stderr.write(`cannot reach the admin API at ${base}: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await egress.close();
  }
  if (status >= 400) {
    const e = (json as { error?: { code?: string; message?: string } }).error;
    io.stderr.write(`${e?.code ?? status}: ${e?.message ?? "request failed"}\n`);
    return 1;
  }
  return { json };
}
