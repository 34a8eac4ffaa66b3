import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { loadConfigFile, parseConfig } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { isGatewayError } from "../errors/errors.ts";
import { Gateway } from "../gateway.ts";
import { type CommandIo, parseCommandArgs, processIo } from "./args.ts";
import { DEMO_SERVER_FILE } from "./init.ts";

export const SERVE_USAGE = `Usage: mcp-edge serve [-c FILE]

Run the gateway. With -c, or with ./mcp-edge.yaml present, that configuration; otherwise the
quickstart: the bundled demo MCP server over stdio behind http://127.0.0.1:8787/mcp.

Options:
  -c, --config FILE  configuration file (YAML)
  -h, --help         show this help`;

/** The quickstart: the bundled demo server over stdio on loopback, state under ./.mcp-edge/. */
export function quickstartConfig(env: NodeJS.ProcessEnv = process.env): Config {
  return parseConfig(
    {
      listen: { host: "127.0.0.1", port: Number(env.MCP_EDGE_PORT ?? 8787) },
      admin: { listen: { host: "127.0.0.1", port: Number(env.MCP_EDGE_ADMIN_PORT ?? 8788) } },
      store: { sqlite: "./.mcp-edge/mcp-edge.db" },
      servers: {
        demo: {
          route: "/mcp",
          // The Node running the edge (24, with type stripping) runs the demo server too.
          upstream: { stdio: { command: process.execPath, args: [DEMO_SERVER_FILE] } },
          auth: ["none"],
        },
      },
    },
    env,
  );
}

function banner(gw: Gateway, quickstart: boolean): string {
  const lines = [""];
  for (const route of gw.routes.values())
    lines.push(`  MCP endpoint (${route.name}):  ${gw.url(route.name)}`);
  lines.push(`  Health:   ${gw.adminUrl}/healthz   ${gw.adminUrl}/readyz`);
  if (quickstart) {
    lines.push(
      "",
      "  Quickstart: the bundled demo server (tools: echo, add, slow, large) over stdio.",
      "  Authentication is OFF (auth: [none]) and the listener is loopback only.",
      "",
      "  Client config (.mcp.json for Claude Code; Cursor and most MCP clients take the same shape):",
      JSON.stringify({ mcpServers: { demo: { type: "http", url: gw.url("demo") } } }, null, 2)
        .split("\n")
        .map((l) => `    ${l}`)
        .join("\n"),
      "",
      "  Write a config to front your own servers:  mcp-edge init",
    );
  }
  return `${lines.join("\n")}\n\n`;
}

export async function runServe(argv: string[], io: CommandIo = processIo): Promise<number> {
  const parsed = parseCommandArgs(argv, { config: { type: "string", short: "c" } }, SERVE_USAGE, io);
  if (typeof parsed === "number") return parsed;
  let config: Config;
  let quickstart = false;
  try {
    const file = parsed.values.config ?? (existsSync("mcp-edge.yaml") ? "mcp-edge.yaml" : undefined);
    if (file) config = loadConfigFile(resolve(file), io.env);
    else {
      config = quickstartConfig(io.env);
      quickstart = true;
    }
  } catch (err) {
    io.stderr.write(`${isGatewayError(err) ? `${err.code}: ` : ""}${(err as Error).message}\n`);
    return 1;
  }
  let gw: Gateway;
  try {
    gw = await Gateway.start(config);
  } catch (err) {
    io.stderr.write(`${isGatewayError(err) ? `${err.code}: ` : ""}${(err as Error).message}\n`);
    return 1;
  }
  io.stderr.write(banner(gw, quickstart));
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
  });
  return 0;
}
