import { writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { SCHEMA_FILE } from "../config/json-schema.ts";
import { type CommandIo, parseCommandArgs, processIo } from "./args.ts";

/**
 * `mcp-edge init`: writes a commented `mcp-edge.yaml` that works as is (the bundled demo server over
 * stdio on a loopback listener) and shows, commented out, how to front real servers.
 */

export const INIT_USAGE = `Usage: mcp-edge init [-o FILE] [--force]

Write a commented configuration file that runs the bundled demo MCP server.

Options:
  -o, --output FILE  where to write (default: ./mcp-edge.yaml)
      --force        overwrite FILE if it exists
  -h, --help         show this help`;

/** The bundled demo server, spawned over stdio by the default config. */
export const DEMO_SERVER_FILE = fileURLToPath(new URL("../demo/server.ts", import.meta.url));

/**
 * Commented-out server examples, by title. Each is a `servers:` entry, indented as it appears under
 * `servers:`; the init test uncomments each one and checks it validates.
 */
export const EXAMPLE_SERVERS: Readonly<Record<string, string>> = {
  "A Streamable HTTP server with two instances. Sessions stick to the instance that created them; when\n# it is lost, the session is re-initialized on the other one (or ends with 404: `onBackendLoss: expire`).": `github:
  route: /github/mcp
  upstream:
    urls:
      - http://10.0.0.5:3000/mcp
      - http://10.0.0.6:3000/mcp
    health: { interval: 10s, timeout: 2s, unhealthyAfter: 2 }
    timeout: 5m
    connectTimeout: 5s
    headers:
      Authorization: Bearer \${GITHUB_MCP_TOKEN}   # from the environment; clients never see it
  auth: [none]
  sessions:
    idleTtl: 24h
    onBackendLoss: reinitialize`,
  "A legacy HTTP+SSE server (protocol 2024-11-05): give the URL of its GET /sse endpoint. Clients still\n# reach it with Streamable HTTP at the route.": `legacy:
  route: /legacy/mcp
  upstream:
    sse: http://127.0.0.1:4000/sse
  auth: [none]`,
  "A stdio server (one that only ever ran inside a desktop client), deployed remotely as is. `session`\n# spawns one process per MCP session; `shared` one process for all of them. The child gets only the\n# variables in `env` plus those named in `inheritEnv`.": `files:
  route: /files/mcp
  upstream:
    stdio:
      command: npx
      args: [-y, "@modelcontextprotocol/server-filesystem", /srv/data]
      cwd: /srv
      mode: shared
      restartBackoff: 1s
      env:
        LOG_LEVEL: info
      inheritEnv: [PATH, HOME, LANG, TZ, NODE_OPTIONS]
  auth: [none]`,
};

function indent(text: string, prefix: string): string {
  return text
    .split("\n")
    .map((line) => (line === "" ? line : `${prefix}${line}`))
    .join("\n");
}

/** YAML scalar for a path: JSON strings are valid double-quoted YAML scalars. */
const quote = (s: string): string => JSON.stringify(s);

/** The text `init` writes. `nodePath` and `demoServer` are absolute paths on this machine. */
export function renderInitConfig(
  nodePath: string = process.execPath,
  demoServer: string = DEMO_SERVER_FILE,
): string {
  const examples = Object.entries(EXAMPLE_SERVERS)
    .map(([title, body]) => `  # ${title.replaceAll("\n#", "\n  #")}\n${indent(body, "  # ")}`)
    .join("\n\n");
  return `# yaml-language-server: $schema=${pathToFileURL(SCHEMA_FILE).href}
#
# mcp-edge configuration, written by \`mcp-edge init\`. Check it with \`mcp-edge validate\`;
# every key is described in docs/config.md. The values below are the defaults unless noted.
#
# Durations: 250ms, 30s, 5m, 24h, 7d (or a number of milliseconds).
# Sizes: 512B, 64KiB, 1MiB, 1GiB (or a number of bytes).
# Any string value may use \${NAME} or \${NAME:-default}: it is replaced by the environment
# variable NAME when the file is loaded (a missing NAME without a default is an error).

# The public listener: MCP clients connect here. 127.0.0.1 keeps it on this machine. On 0.0.0.0
# (behind a load balancer), set publicUrl and an authentication method: \`auth: [none]\` is refused
# on a non-loopback listener unless you opt in with unsafe.allowUnauthenticatedPublic.
listen:
  host: 127.0.0.1
  port: 8787

# The URL clients use to reach mcp-edge, when TLS or a proxy sits in front. Also the Host header
# the edge accepts (DNS-rebinding protection).
# publicUrl: https://mcp.example.com

# The embedded store: one SQLite file for keys, audit records and session records.
store:
  sqlite: ./.mcp-edge/mcp-edge.db

# Admin API, dashboard, /metrics, /healthz and /readyz. Keep it on loopback or a private network.
admin:
  listen:
    host: 127.0.0.1
    port: 8788
  # The root admin token (at least 32 characters), from the environment: the admin API, the
  # dashboard and \`mcp-edge keys\` need it. Set it before \`mcp-edge serve\`, e.g.
  #   export MCP_EDGE_ADMIN_TOKEN="$(openssl rand -hex 32)"
  # or keep the quickstart's:  export MCP_EDGE_ADMIN_TOKEN="$(cat .mcp-edge/admin-token)"
  # Without the variable the file does not load (the edge says so). Delete this line to run with
  # the admin API off.
  token: "\${MCP_EDGE_ADMIN_TOKEN}"

log:
  level: info                 # fatal | error | warn | info | debug | trace | silent

# Limits on every request to the public listener.
limits:
  maxBodyBytes: 4MiB          # a larger body is refused with 413
  maxHeaderBytes: 16KiB
  headersTimeout: 10s         # slower headers get 408
  requestTimeout: 30s         # the whole body must arrive within this
  keepAliveTimeout: 65s       # keep it above your load balancer's idle timeout

# SSE streams: mcp-edge buffers events so a client that reconnects with Last-Event-ID gets what it
# missed, even when the upstream cannot replay.
streams:
  bufferEvents: 1000          # events kept per stream
  bufferBytes: 4MiB           # bytes kept per stream
  ttl: 10m                    # how long a finished or abandoned stream stays replayable
  keepAlive: 15s              # comment line sent on idle streams
  retry: 1s                   # \`retry:\` hint sent when the edge closes a stream

# On SIGTERM: stop taking new sessions, give in-flight calls this long to finish.
drain:
  timeout: 30s

security:
  allowedOrigins: []          # browser origins allowed to call MCP routes, e.g. https://app.example.com
  allowedHosts: []            # Host values served; default: publicUrl's host (+ localhost on loopback)
  trustForwardedHeaders: false  # unsafe: only behind a proxy that overwrites X-Forwarded-*

# Named opt-ins for unsafe choices. Each one logs a coded warning at boot.
unsafe:
  allowUnauthenticatedPublic: false

# The MCP servers behind the edge, by name. Each is served at its route with
# POST/GET/DELETE {route}, plus legacy GET {route}/sse and POST {route}/messages.
servers:
  # The bundled demo server (tools: echo, add, slow, large, fetch_url), spawned over stdio by the Node.js that
  # ran \`mcp-edge init\`. Try it: http://127.0.0.1:8787/demo/mcp
  demo:
    route: /demo/mcp
    upstream:
      stdio:
        command: ${quote(nodePath)}
        args: [${quote(demoServer)}]
        mode: session         # one demo process per MCP session
    auth: [none]              # no credentials: fine on a loopback listener, refused elsewhere
    sessions:
      idleTtl: 24h            # a session unused this long ends
      onBackendLoss: reinitialize

${examples}
`;
}

export async function runInit(
  argv: string[],
  io: Pick<CommandIo, "stdout" | "stderr"> = processIo,
): Promise<number> {
  const parsed = parseCommandArgs(
    argv,
    { output: { type: "string", short: "o" }, force: { type: "boolean" } },
    INIT_USAGE,
    io,
  );
  if (typeof parsed === "number") return parsed;
  if (parsed.positionals.length > 0) {
    io.stderr.write(`unexpected argument: ${parsed.positionals[0]}\n\n${INIT_USAGE}\n`);
    return 2;
  }
  const file = resolve(parsed.values.output ?? "mcp-edge.yaml");
  try {
    // "wx" fails if the file exists, without a check-then-write race.
    writeFileSync(file, renderInitConfig(), { flag: parsed.values.force ? "w" : "wx" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") {
      io.stderr.write(`${file} already exists; use --force to overwrite it\n`);
    } else {
      io.stderr.write(`cannot write ${file}: ${(err as Error).message}\n`);
    }
    return 1;
  }
  const here = file === resolve("mcp-edge.yaml");
  io.stdout.write(
    `wrote ${file}\n` +
      (here
        ? "`npm start` and `npx mcp-edge serve` in this folder now serve this file, not the quickstart.\n"
        : "") +
      'It reads the admin token from MCP_EDGE_ADMIN_TOKEN: export MCP_EDGE_ADMIN_TOKEN="$(openssl rand -hex 32)"\n' +
      `next: npx mcp-edge validate -c ${quote(file)}  then  npx mcp-edge serve -c ${quote(file)}\n`,
  );
  return 0;
}
