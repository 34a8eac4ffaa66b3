import { readFileSync } from "node:fs";
import { runAudit } from "./cli/audit.ts";
import { runCheckCommand } from "./cli/check.ts";
import { runDoctor } from "./cli/doctor.ts";
import { runConnect } from "./cli/connect.ts";
import { runInit } from "./cli/init.ts";
import { runKeys } from "./cli/keys.ts";
import { runReload } from "./cli/reload.ts";
import { runServe } from "./cli/serve.ts";
import { runValidate } from "./cli/validate.ts";

const USAGE = `mcp-edge — the production edge for remote MCP servers

Usage: mcp-edge <command> [options]

Commands:
  serve [-c FILE]      run the gateway (no config: quickstart with the bundled demo server)
  init [-o FILE]       write a commented mcp-edge.yaml
  validate [-c FILE]   check a configuration and print its unsafe opt-ins
  keys <create|list|rotate|revoke>   manage API keys through the admin API
  reload [--url URL]                 reload a running edge's configuration file (as SIGHUP does)
  audit <query|tail|verify|export>   read, follow, verify and export audit records
  check URL [-H 'Name: value']       probe any MCP endpoint: conformance and production hygiene
  doctor [-c FILE] [--url URL]       the production checklist against the config and live probes
  connect URL                        stdio bridge for desktop MCP clients to a remote server (in place of mcp-remote)

Run 'mcp-edge <command> --help' for a command's options; 'mcp-edge --version' prints the version.`;

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  serve: runServe,
  init: runInit,
  validate: runValidate,
  keys: runKeys,
  reload: runReload,
  audit: runAudit,
  check: runCheckCommand,
  doctor: runDoctor,
  connect: runConnect,
};

/** The version in package.json, for `--version`. */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

/**
 * Started by bin/mcp-edge.js on an older Node, this process holds an IPC channel to that wrapper.
 * The channel closes when the wrapper is gone, SIGKILL included (which it cannot forward): stop as
 * on SIGTERM, so this process never outlives it. The channel does not keep the process alive.
 */
function watchWrapper(): void {
  if (process.env.MCP_EDGE_WRAPPED !== "1" || !process.channel) return;
  delete process.env.MCP_EDGE_WRAPPED;
  process.channel.unref();
  process.once("disconnect", () => process.kill(process.pid, "SIGTERM"));
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === "--version" || command === "-v" || command === "version") {
    process.stdout.write(`mcp-edge ${version()} (Node ${process.versions.node})\n`);
    return 0;
  }
  if (command === undefined || command === "-h" || command === "--help" || command === "help") {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined ? 2 : 0;
  }
  const run = COMMANDS[command];
  if (!run) {
    process.stderr.write(`unknown command: ${command}\n\n${USAGE}\n`);
    return 2;
  }
  return run(rest);
}

watchWrapper();
process.exitCode = await main(process.argv.slice(2));
