#!/usr/bin/env node
// The `mcp-edge` command. mcp-edge is TypeScript run by Node's type stripping (Node >= 22.18). On
// an older Node this re-runs the command with the Node 24 that `npm ci` installs as a pinned
// devDependency (node_modules/node), so the command works wherever the install ran.
//
// That child never outlives this process: it runs in its own process group (so a terminal's Ctrl-C
// reaches it once, forwarded from here, not twice), signals are forwarded, and it holds an IPC
// channel to this process whose closing (this process gone, SIGKILL included) stops it as a
// SIGTERM would. Its exit status is this process's (128 + the signal number if a signal ended it).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { constants } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const FLOOR = "22.18.0";
const root = dirname(dirname(fileURLToPath(import.meta.url)));
const main = join(root, "src", "main.ts");

if (process.features?.typescript) {
  await import(main);
} else {
  const pinned = join(root, "node_modules", "node", "bin", "node");
  if (!existsSync(pinned)) {
    process.stderr.write(
      `mcp-edge needs Node.js >= ${FLOOR} (this is ${process.version}); run 'npm ci' in ${root} to install the pinned Node 24.\n`,
    );
    process.exit(1);
  }
  const child = spawn(pinned, [main, ...process.argv.slice(2)], {
    stdio: ["inherit", "inherit", "inherit", "ipc"],
    detached: true,
    env: { ...process.env, MCP_EDGE_WRAPPED: "1" },
  });
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) {
    process.on(sig, () => {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    });
  }
  child.on("error", (err) => {
    process.stderr.write(`mcp-edge: cannot start ${pinned}: ${err.message}\n`);
    process.exit(1);
  });
  child.on("exit", (code, signal) => {
    process.exit(code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : 1));
  });
}
