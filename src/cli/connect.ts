import { Bridge, type EraChoice } from "../connect/bridge.ts";
import { closeHttp } from "../connect/http.ts";
import { createConnectLog } from "../connect/log.ts";
import { OAuthClient } from "../connect/oauth.ts";
import { DEFAULT_RETRY } from "../connect/remote.ts";
import { type CommandIo, EXIT_USAGE, parseCommandArgs, processIo } from "./args.ts";

export const CONNECT_USAGE = `Usage: mcp-edge connect URL [options]

A local stdio bridge for desktop MCP clients (Claude Desktop, Cursor, VS Code) to a remote MCP
server: stdio on one side, Streamable HTTP (2025 sessions or 2026-07-28 stateless, legacy HTTP+SSE
as a fallback) on the other. Logs in with OAuth when the server asks, keeps tokens fresh, and keeps
the session alive across dropped connections, server restarts and token expiries.

Options:
  -H, --header 'Name: value'  a header on every request; \${VAR} in the value is read from the
                              environment (repeatable), e.g. --header 'Authorization: Bearer \${TOKEN}'
  --client-id ID              a client pre-registered at the authorization server
  --client-secret SECRET      its secret, if it has one (\${VAR} allowed)
  --client-metadata-url URL   an https URL of a client metadata document (CIMD), used when the
                              authorization server supports it
  --scope S                   scopes to ask for (space-separated); default: what the server names
  --callback-port N           port of the loopback OAuth callback (default: any free port)
  --no-browser                print the login URL instead of opening a browser
  --era auto|2025|2026        protocol era toward the server (default auto: 2026-07-28 when the
                              server answers server/discover, else the session era)
  --debug                     log every message's method to stderr
  -h, --help                  show this help

Tokens are kept in the OS keychain when one is available (Linux: secret-tool), else in a file only
you can read under $MCP_EDGE_CONFIG_DIR, $XDG_CONFIG_HOME/mcp-edge or ~/.config/mcp-edge.
stdout carries only MCP messages; logs go to stderr. The bridge exits when stdin closes.`;

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** Replaces `${NAME}` with the environment's value; a missing variable is an error (never ""). */
export function interpolate(value: string, env: NodeJS.ProcessEnv): string {
  return value.replace(ENV_REF, (_, name: string) => {
    const v = env[name];
    if (v === undefined) throw new Error(`the environment has no ${name} (referenced as \${${name}})`);
    return v;
  });
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Headers the transport sets itself; a user value would break the protocol. */
const RESERVED = new Set([
  "content-type",
  "accept",
  "content-length",
  "host",
  "mcp-session-id",
  "mcp-protocol-version",
  "mcp-method",
  "mcp-name",
  "last-event-id",
  "connection",
  "transfer-encoding",
]);

/** Parses `Name: value` (RFC 9110 field syntax), interpolating `${ENV}` in the value. */
export function parseHeader(raw: string, env: NodeJS.ProcessEnv): [string, string] {
  const colon = raw.indexOf(":");
  if (colon <= 0) throw new Error(`--header must look like 'Name: value', got ${JSON.stringify(raw)}`);
  const name = raw.slice(0, colon).trim();
  if (!TOKEN.test(name)) throw new Error(`invalid header name ${JSON.stringify(name)}`);
  if (RESERVED.has(name.toLowerCase())) throw new Error(`--header cannot set ${name}: the bridge sets it`);
  const value = interpolate(raw.slice(colon + 1).trim(), env);
  if (/[\r\n\0]/.test(value)) throw new Error(`the value of ${name} contains CR, LF or NUL`);
  return [name.toLowerCase(), value];
}

export async function runConnect(argv: string[], io: CommandIo = processIo): Promise<number> {
  const parsed = parseCommandArgs(
    argv,
    {
      header: { type: "string", short: "H", multiple: true },
      "client-id": { type: "string" },
      "client-secret": { type: "string" },
      "client-metadata-url": { type: "string" },
      scope: { type: "string" },
      "callback-port": { type: "string" },
      "no-browser": { type: "boolean" },
      era: { type: "string" },
      debug: { type: "boolean" },
    },
    CONNECT_USAGE,
    io,
  );
  if (typeof parsed === "number") return parsed;
  const v = parsed.values;
  const usage = (msg: string): number => {
    io.stderr.write(`mcp-edge connect: ${msg}\n\n${CONNECT_USAGE}\n`);
    return EXIT_USAGE;
  };
  if (parsed.positionals.length !== 1) return usage("give exactly one server URL");
  let url: URL;
  try {
    url = new URL(parsed.positionals[0] as string);
  } catch {
    return usage(`not a URL: ${parsed.positionals[0]}`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return usage("the URL must be http: or https:");
  if (url.username || url.password) return usage("put credentials in --header, not in the URL");
  url.hash = "";
  const headers: Record<string, string> = {};
  let clientSecret: string | undefined;
  try {
    for (const h of v.header ?? []) {
      const [name, value] = parseHeader(h, io.env);
      headers[name] = value;
    }
    if (v["client-secret"] !== undefined) clientSecret = interpolate(v["client-secret"], io.env);
  } catch (err) {
    return usage((err as Error).message);
  }
  let callbackPort: number | undefined;
  if (v["callback-port"] !== undefined) {
    callbackPort = Number(v["callback-port"]);
    if (!Number.isInteger(callbackPort) || callbackPort < 1 || callbackPort > 65535)
      return usage("--callback-port must be a port number (1-65535)");
  }
  const era = (v.era ?? "auto") as EraChoice;
  if (!["auto", "2025", "2026"].includes(era)) return usage("--era must be auto, 2025 or 2026");
  let metadataUrl: URL | undefined;
  if (v["client-metadata-url"] !== undefined) {
    try {
      metadataUrl = new URL(v["client-metadata-url"]);
    } catch {
      return usage("--client-metadata-url must be a URL");
    }
    if (metadataUrl.protocol !== "https:" || metadataUrl.pathname === "/")
      return usage("--client-metadata-url must be an https URL with a path (CIMD)");
  }

  const log = createConnectLog(io.stderr, v.debug === true);
  const oauth = new OAuthClient({
    serverUrl: url,
    log,
    env: io.env,
    ...(v["client-id"] !== undefined ? { clientId: v["client-id"] } : {}),
    ...(clientSecret !== undefined ? { clientSecret } : {}),
    ...(metadataUrl ? { clientMetadataUrl: metadataUrl } : {}),
    ...(v.scope !== undefined ? { scope: v.scope } : {}),
    ...(callbackPort !== undefined ? { callbackPort } : {}),
    openBrowser: v["no-browser"] !== true,
    // Without a static Authorization header the server's 401 starts OAuth; with one, the user
    // chose their credential (an API key) and a 401 is the server's answer.
    enabled: !("authorization" in headers),
  });
  const bridge = new Bridge({
    url,
    headers,
    era,
    auth: oauth,
    log,
    retry: DEFAULT_RETRY,
    input: process.stdin,
    output: process.stdout,
  });

  const stop = () => {
    process.stdin.destroy();
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  process.once("SIGHUP", stop);
  // The desktop client went away (its end of our stdout is closed): nothing left to do.
  process.stdout.on("error", stop);
  try {
    await bridge.run();
  } finally {
    await bridge.close();
    await oauth.close();
    await closeHttp();
    // Whatever still holds the event loop (a half-open socket) must not keep a bridge process
    // behind once its client is gone.
    setTimeout(() => process.exit(process.exitCode ?? 0), 1500).unref();
  }
  return 0;
}
