import { adminBase, adminCall } from "./admin-client.ts";
import { type CommandIo, parseCommandArgs, processIo } from "./args.ts";
import { adminToken } from "./keys.ts";

export const RELOAD_USAGE = `Usage: mcp-edge reload [--url URL] [--json]

Ask a running edge to reload its configuration file (POST /api/reload; SIGHUP to the process does
the same). The file is validated first: when it is invalid or cannot run, the edge keeps its running
configuration and this command prints the coded error and exits 1.

Live: servers (routes, upstreams, auth, scopes, limits, sessions, cache, credentials), rateLimits,
security.allowedOrigins, limits.maxBodyBytes, log.level, unsafe. Sessions and streams of servers that
stay are not dropped. Everything else (listeners, stores, publicUrl, auth issuers, ...) keeps its
running value until a restart; the answer names what differs.

Options:
  --url URL     admin API (default: $MCP_EDGE_ADMIN_URL or http://127.0.0.1:8788)
  --json        print the answer as JSON
  -h, --help    show this help

The admin token comes from $MCP_EDGE_ADMIN_TOKEN, else ./.mcp-edge/admin-token (the quickstart's).`;

interface ReloadAnswer {
  servers: { added: string[]; removed: string[]; changed: string[]; upstreamReplaced: string[] };
  changed: string[];
  restartRequired: string[];
}

export async function runReload(argv: string[], io: CommandIo = processIo): Promise<number> {
  const parsed = parseCommandArgs(
    argv,
    { url: { type: "string" }, json: { type: "boolean" } },
    RELOAD_USAGE,
    io,
  );
  if (typeof parsed === "number") return parsed;
  if (parsed.positionals.length > 0) {
    io.stderr.write(`unexpected argument: ${parsed.positionals[0]}\n\n${RELOAD_USAGE}\n`);
    return 2;
  }
  const token = adminToken(io.env);
  if (!token) {
    io.stderr.write("no admin token: set MCP_EDGE_ADMIN_TOKEN\n");
    return 1;
  }
  const answer = await adminCall(io, adminBase(parsed.values.url, io.env), token, "POST", "/api/reload");
  if (typeof answer === "number") return answer;
  if (parsed.values.json) {
    io.stdout.write(`${JSON.stringify(answer.json, null, 2)}\n`);
    return 0;
  }
  const a = answer.json as ReloadAnswer;
  const list = (xs: string[]) => (xs.length > 0 ? xs.join(", ") : "-");
  io.stdout.write(
    [
      "configuration reloaded",
      `  servers added:     ${list(a.servers.added)}`,
      `  servers removed:   ${list(a.servers.removed)}`,
      `  servers changed:   ${list(a.servers.changed)} (upstream rebuilt: ${list(a.servers.upstreamReplaced)})`,
      `  other live:        ${list(a.changed)}`,
      `  restart required:  ${list(a.restartRequired)}`,
      "",
    ].join("\n"),
  );
  return 0;
}
