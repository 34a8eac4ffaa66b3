/**
 * Runs every test file (or the files/folders given as arguments) with Node's test runner, two
 * files at a time: integration tests start real processes, and these machines have two cores.
 */
import { spawn } from "node:child_process";
import { globSync, statSync } from "node:fs";

const args = process.argv.slice(2);
const roots = args.length > 0 ? args : ["test"];
const files = roots
  .flatMap((r) => (statSync(r).isDirectory() ? globSync(`${r.replace(/\/$/, "")}/**/*.test.ts`) : [r]))
  .sort();
if (files.length === 0) {
  process.stderr.write(`no test files under ${roots.join(", ")}\n`);
  process.exit(1);
}
const child = spawn(
  process.execPath,
  ["--test", "--test-reporter=spec", `--test-concurrency=${process.env.TEST_CONCURRENCY ?? 2}`, ...files],
  { stdio: "inherit" },
);
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
