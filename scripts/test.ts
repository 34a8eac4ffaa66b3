/**
 * Runs every test file (or the files/folders given as arguments) with Node's test runner, two
 * files at a time: integration tests start real processes, and these machines have two cores.
 *
 * No `--test-force-exit`: with a process per file it ends the run before every file has reported,
 * and tests go uncounted and unrun. A test that opens a handle closes it in an `after` hook, also
 * when it fails.
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
const child = spawn(process.execPath, ["--test", "--test-reporter=spec", ...runner, ...files], {
  stdio: "inherit",
});
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
