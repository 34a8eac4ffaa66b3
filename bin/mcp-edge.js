#!/usr/bin/env node
// The `mcp-edge` command. mcp-edge is TypeScript run by Node's type stripping (Node >= 22.18, or
// 23.6+). On an older Node this re-runs the command with the Node 24 that `npm ci` installs as a
// pinned devDependency (node_modules/node), so the command works wherever the install ran.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const main = join(root, "src", "main.ts");

if (process.features?.typescript) {
  await import(main);
} else {
  const pinned = join(root, "node_modules", "node", "bin", "node");
  if (!existsSync(pinned)) {
    process.stderr.write(
      `mcp-edge needs Node.js >= 22.18 (this is ${process.version}); run 'npm ci' in ${root} to install the pinned Node 24.\n`,
    );
    process.exit(1);
  }
  const child = spawn(pinned, [main, ...process.argv.slice(2)], { stdio: "inherit" });
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(sig, () => child.kill(sig));
  child.on("exit", (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
}
