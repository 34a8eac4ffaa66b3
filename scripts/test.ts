/**
 * Runs every test file (or the files/folders given as arguments) with Node's test runner, two
 * files at a time: integration tests start real processes, and these machines have two cores.
 *
 * `--test-force-exit`: a file whose test failed before closing what it opened (a Redis client, a
 * server) ends once its tests and hooks are done, so the failure is reported instead of the run
 * hanging on the open handle.
 *
 * `--unit` runs the unit ring (test/unit/: pure logic, no process, no service) in one process
 * (`--test-isolation=none`): a loop of seconds, as starting a process per file would cost more
 * than the tests themselves.
 */
import { spawn } from "node:child_process";
import { globSync, statSync } from "node:fs";

const unit = process.argv.includes("--unit");
const args = process.argv.slice(2).filter((a) => a !== "--unit");
const roots = args.length > 0 ? args : [unit ? "test/unit" : "test"];
const files = roots
  .flatMap((r) => (statSync(r).isDirectory() ? globSync(`${r.replace(/\/$/, "")}/**/*.test.ts`) : [r]))
  .sort();
if (files.length === 0) {
  process.stderr.write(`no test files under ${roots.join(", ")}\n`);
  process.exit(1);
}
const runner = unit ? ["--test-isolation=none"] : [`--test-concurrency=${process.env.TEST_CONCURRENCY ?? 2}`];
const child = spawn(
  process.execPath,
  ["--test", "--test-reporter=spec", "--test-force-exit", ...runner, ...files],
  {
    stdio: "inherit",
  },
);
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
