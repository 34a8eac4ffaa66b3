import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { loadConfigFile, parseConfig } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { isGatewayError } from "../errors/errors.ts";
import { Gateway } from "../gateway.ts";
import { type CommandIo, parseCommandArgs, processIo } from "./args.ts";
import { DEMO_SERVER_FILE } from "./init.ts";
import { QUICKSTART_ADMIN_TOKEN_FILE, QUICKSTART_ADMIN_URL_FILE } from "./keys.ts";

export const SERVE_USAGE = `Usage: mcp-edge serve [-c FILE]

Run the gateway. With -c, or with ./mcp-edge.yaml present, that configuration; otherwise the
quickstart: the bundled demo MCP server over stdio behind http://127.0.0.1:8787/mcp.

SIGTERM or SIGINT drain and stop. SIGHUP reloads the configuration file (as \`mcp-edge reload\`
does): servers, routes, limits, auth and upstreams change live, without dropping sessions or
streams; a file that does not validate is refused and the running configuration stays.

Options:
  -c, --config FILE  configuration file (YAML)
  -h, --help         show this help`;

/**
 * The quickstart's admin token: generated at first start into ./.mcp-edge/admin-token (mode 0600),
 * where `mcp-edge keys` finds it, unless MCP_EDGE_ADMIN_TOKEN is set.
 */
function quickstartAdminToken(env: NodeJS.ProcessEnv): string {
  if (env.MCP_EDGE_ADMIN_TOKEN) return env.MCP_EDGE_ADMIN_TOKEN;
  if (existsSync(QUICKSTART_ADMIN_TOKEN_FILE))
    return readFileSync(QUICKSTART_ADMIN_TOKEN_FILE, "utf8").trim();
  mkdirSync(dirname(QUICKSTART_ADMIN_TOKEN_FILE), { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString("base64url");
  writeFileSync(QUICKSTART_ADMIN_TOKEN_FILE, `${token}\n`, { mode: 0o600 });
  return token;
}

/** The quickstart: the bundled demo server over stdio on loopback, API-key auth, state under ./.mcp-edge/. */
export function quickstartConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const port = Number(env.MCP_EDGE_PORT ?? 8787);
  // The authorization server needs its issuer URL before the listener opens: a fixed port.
  const oauth = port > 0;
  return parseConfig(
    {
      listen: { host: "127.0.0.1", port },
      ...(oauth
        ? {
            publicUrl: `http://127.0.0.1:${port}`,
            // OAuth-only clients log in at the edge by pasting the dev key on its sign-in page.
            auth: { authorizationServer: { enabled: true } },
          }
        : {}),
      admin: {
        listen: { host: "127.0.0.1", port: Number(env.MCP_EDGE_ADMIN_PORT ?? 8788) },
        token: quickstartAdminToken(env),
      },
      store: { sqlite: "./.mcp-edge/mcp-edge.db" },
      servers: {
        demo: {
          route: "/mcp",
          // The Node running the edge (24, with type stripping) runs the demo server too.
          upstream: { stdio: { command: process.execPath, args: [DEMO_SERVER_FILE] } },
          auth: oauth ? ["apiKey", "oauth"] : ["apiKey"],
        },
      },
    },
    env,
  );
}

/** On the quickstart's first start, a dev key for the demo server; shown once, stored hashed. */
async function quickstartKey(gw: Gateway): Promise<string | undefined> {
  const existing = await gw.keys.store.list({ server: "demo" });
  if (existing.length > 0) return undefined;
  const { key } = await gw.keys.create({ name: "dev" });
  return key;
}

function banner(gw: Gateway, configFile: string | undefined, devKey: string | undefined): string {
  const quickstart = configFile === undefined;
  // Which configuration this is, always: a mcp-edge.yaml appearing in the folder (`init`) changes
  // what `npm start` serves, and that must never be silent.
  const lines = [
    "",
    quickstart ? "  Config:   none (no -c, no ./mcp-edge.yaml): the quickstart" : `  Config:   ${configFile}`,
  ];
  for (const route of gw.routes.values())
    lines.push(`  MCP endpoint (${route.name}):  ${gw.url(route.name)}`);
  lines.push(`  Health:   ${gw.adminUrl}/healthz   ${gw.adminUrl}/readyz`);
  if (gw.config.admin.token) {
    lines.push(
      `  Dashboard: ${gw.adminUrl}/dashboard   (sign in with the admin token${quickstart ? `, in ./${QUICKSTART_ADMIN_TOKEN_FILE}` : ""})`,
    );
  }
  if (quickstart) {
    const authorization = `Bearer ${devKey ?? "<your key>"}`;
    lines.push(
      "",
      "  Quickstart: the bundled demo server (tools: echo, add, slow, large, fetch_url) over stdio, API-key auth.",
      ...(gw.config.auth.authorizationServer.enabled
        ? [
            `  OAuth clients (claude.ai, ChatGPT, mcp-remote) log in at ${gw.config.publicUrl}/authorize: paste the dev key on the sign-in page.`,
          ]
        : []),
      devKey
        ? "  Your dev key (shown once, stored hashed; `npx mcp-edge keys create --name NAME` makes more):"
        : "  The dev key was shown at first start. New one: npx mcp-edge keys create --name NAME",
      ...(devKey ? [`    ${devKey}`] : []),
      "",
      "  Client config (.mcp.json for Claude Code; Cursor and most MCP clients take the same shape):",
      JSON.stringify(
        {
          mcpServers: {
            demo: { type: "http", url: gw.url("demo"), headers: { Authorization: authorization } },
          },
        },
        null,
        2,
      )
        .split("\n")
        .map((l) => `    ${l}`)
        .join("\n"),
      "",
      "  Write a config to front your own servers:  npx mcp-edge init",
      "  (It writes ./mcp-edge.yaml, which `npm start` then serves instead of this quickstart.)",
    );
  }
  return `${lines.join("\n")}\n\n`;
}

export async function runServe(argv: string[], io: CommandIo = processIo): Promise<number> {
  const parsed = parseCommandArgs(argv, { config: { type: "string", short: "c" } }, SERVE_USAGE, io);
  if (typeof parsed === "number") return parsed;
  let config: Config;
  let configFile: string | undefined;
  let source: (() => Config) | undefined;
  try {
    const file = parsed.values.config ?? (existsSync("mcp-edge.yaml") ? "mcp-edge.yaml" : undefined);
    if (file) {
      const path = resolve(file);
      configFile = path;
      // A reload reads the same file again, with the environment of the start.
      source = () => loadConfigFile(path, io.env);
      config = source();
    } else config = quickstartConfig(io.env);
  } catch (err) {
    io.stderr.write(
      `${configFile ? `${configFile}: ` : ""}${isGatewayError(err) ? `${err.code}: ` : ""}${(err as Error).message}\n`,
    );
    return 1;
  }
  let gw: Gateway;
  try {
    gw = await Gateway.start(config, source ? { source } : {});
  } catch (err) {
    io.stderr.write(`${isGatewayError(err) ? `${err.code}: ` : ""}${(err as Error).message}\n`);
    return 1;
  }
  const devKey = configFile === undefined ? await quickstartKey(gw) : undefined;
  // The quickstart's admin URL, where `mcp-edge keys` and `audit` in this folder find it.
  if (configFile === undefined) writeFileSync(QUICKSTART_ADMIN_URL_FILE, `${gw.adminUrl}\n`, { mode: 0o600 });
  io.stderr.write(banner(gw, configFile, devKey));
  await new Promise<void>((resolveStop) => {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals) => {
      // A second signal stops at once: the operator means it.
      if (++signals > 1) process.exit(130);
      gw.log.info({ signal: sig }, "shutting down");
      void gw.stop().then(resolveStop);
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    // SIGHUP: reload the config file. The outcome, or the refusal and its code, goes to the log;
    // a refused file leaves the running configuration as it was.
    process.on("SIGHUP", () => {
      gw.log.info({ signal: "SIGHUP" }, "reloading the configuration");
      gw.reload().catch(() => undefined); // logged by reload()
    });
  });
  return 0;
}
