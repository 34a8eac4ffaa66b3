import { existsSync, readFileSync } from "node:fs";
import { adminBase, adminCall } from "./admin-client.ts";

export { QUICKSTART_ADMIN_URL_FILE } from "./admin-client.ts";
import { type CommandIo, parseCommandArgs, processIo } from "./args.ts";

export const KEYS_USAGE = `Usage: mcp-edge keys <create|list|rotate|revoke> [options]

Manage API keys through the admin API.

  keys create --name NAME [--server S | --servers S1,S2 | --servers '*'] [--tenant T]
              [--consumer C] [--expires-in 30d] [--scopes a,b] [--tools x,y]
                                                       create a key (for one server, several, or
                                                       every server of its tenant); shown once
  keys list [--server S] [--tenant T]                  keys with status, expiry and last use
  keys rotate NAME|ID [--grace 24h]                    a new key; the old one works until grace ends
  keys revoke NAME|ID [--grace 1h]                     revoke now (or when grace ends); a NAME
                                                       revokes every key of that name, the one a
                                                       rotation replaced (in its grace) included

Options:
  --url URL     admin API (default: $MCP_EDGE_ADMIN_URL, else the quickstart's of this folder
                (./.mcp-edge/admin-url), else http://127.0.0.1:8788)
  --json        print JSON instead of a table
  -h, --help    show this help

The admin token comes from $MCP_EDGE_ADMIN_TOKEN, else ./.mcp-edge/admin-token (the quickstart's).`;

/** The file where the quickstart keeps its generated admin token. */
export const QUICKSTART_ADMIN_TOKEN_FILE = ".mcp-edge/admin-token";

export function adminToken(env: NodeJS.ProcessEnv): string | undefined {
  if (env.MCP_EDGE_ADMIN_TOKEN) return env.MCP_EDGE_ADMIN_TOKEN;
  if (existsSync(QUICKSTART_ADMIN_TOKEN_FILE))
    return readFileSync(QUICKSTART_ADMIN_TOKEN_FILE, "utf8").trim();
  return undefined;
}

interface KeyView {
  id: string;
  name: string;
  prefix: string;
  server: string;
  tenant: string;
  consumer: string;
  status: string;
  created: string;
  expires: string | null;
  last_used: string | null;
  key?: string;
}

/** A plain-text table: columns as wide as their widest cell. */
export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

function short(iso: string | null): string {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "-";
}

export async function runKeys(argv: string[], io: CommandIo = processIo): Promise<number> {
  const parsed = parseCommandArgs(
    argv,
    {
      url: { type: "string" },
      json: { type: "boolean" },
      name: { type: "string" },
      server: { type: "string" },
      servers: { type: "string" },
      tenant: { type: "string" },
      consumer: { type: "string" },
      "expires-in": { type: "string" },
      scopes: { type: "string" },
      tools: { type: "string" },
      grace: { type: "string" },
    },
    KEYS_USAGE,
    io,
  );
  if (typeof parsed === "number") return parsed;
  const [action, ref] = parsed.positionals;
  const v = parsed.values;
  const base = adminBase(v.url, io.env);
  const token = adminToken(io.env);
  if (!token) {
    io.stderr.write("no admin token: set MCP_EDGE_ADMIN_TOKEN\n");
    return 1;
  }
  const list = (s: string | undefined) =>
    s
      ?.split(",")
      .map((x) => x.trim())
      .filter(Boolean);
  const scope = new URLSearchParams();
  if (v.server) scope.set("server", v.server);
  if (v.tenant) scope.set("tenant", v.tenant);
  const q = scope.size ? `?${scope}` : "";

  let method: "GET" | "POST" | "DELETE";
  let path: string;
  let body: unknown;
  switch (action) {
    case "create":
      if (!v.name) {
        io.stderr.write(`keys create needs --name\n\n${KEYS_USAGE}\n`);
        return 2;
      }
      method = "POST";
      path = "/api/keys";
      body = {
        name: v.name,
        ...(v.server ? { server: v.server } : {}),
        ...(v.servers ? { servers: v.servers.trim() === "*" ? "*" : list(v.servers) } : {}),
        ...(v.tenant ? { tenant: v.tenant } : {}),
        ...(v.consumer ? { consumer: v.consumer } : {}),
        ...(v["expires-in"] ? { expires_in: v["expires-in"] } : {}),
        ...(v.scopes ? { scopes: list(v.scopes) } : {}),
        ...(v.tools ? { tools: list(v.tools) } : {}),
      };
      break;
    case "list":
      method = "GET";
      path = `/api/keys${q}`;
      break;
    case "rotate":
    case "revoke":
      if (!ref) {
        io.stderr.write(`keys ${action} needs a key name or id\n\n${KEYS_USAGE}\n`);
        return 2;
      }
      method = action === "rotate" ? "POST" : "DELETE";
      path =
        action === "rotate"
          ? `/api/keys/${encodeURIComponent(ref)}/rotate${q}`
          : `/api/keys/${encodeURIComponent(ref)}${q}${v.grace ? `${q ? "&" : "?"}grace=${encodeURIComponent(v.grace)}` : ""}`;
      if (action === "rotate") body = v.grace ? { grace: v.grace } : {};
      break;
    default:
      io.stderr.write(`${action ? `unknown keys command: ${action}\n\n` : ""}${KEYS_USAGE}\n`);
      return 2;
  }

  const answer = await adminCall(io, base, token, method, path, body);
  if (typeof answer === "number") return answer;
  const json = answer.json;
  if (v.json) {
    io.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
    return 0;
  }
  if (action === "list") {
    const keys = (json as { keys: KeyView[] }).keys;
    const rows = [["NAME", "ID", "SERVER", "TENANT", "STATUS", "CREATED", "EXPIRES", "LAST USED"]];
    for (const k of keys) {
      rows.push([
        k.name,
        k.id,
        k.server,
        k.tenant,
        k.status,
        short(k.created),
        short(k.expires),
        short(k.last_used),
      ]);
    }
    io.stdout.write(`${table(rows)}\n`);
    return 0;
  }
  const k = json as KeyView & { previous?: KeyView };
  if (k.key) {
    io.stdout.write(
      `${action === "rotate" ? "rotated" : "created"} ${k.name} (${k.id}) for ${k.server}/${k.tenant}\n`,
    );
    io.stdout.write(`key (shown once, store it now): ${k.key}\n`);
    if (k.previous)
      io.stdout.write(`previous key ${k.previous.id} works until ${short(k.previous.expires)}\n`);
  } else {
    const r = json as { revoked_count: number; revoked_keys: (KeyView & { revoked: string })[] };
    if (r.revoked_count === 0) {
      io.stdout.write(`nothing to revoke: every key named ${k.name} is already revoked or expired\n`);
    } else {
      io.stdout.write(
        `revoked ${r.revoked_count} key${r.revoked_count === 1 ? "" : "s"} named ${k.name} (${k.server}/${k.tenant}):\n`,
      );
      for (const x of r.revoked_keys)
        io.stdout.write(`  ${x.id}  ${x.status === "revoked" ? "now" : `at ${short(x.revoked)}`}\n`);
    }
  }
  return 0;
}
