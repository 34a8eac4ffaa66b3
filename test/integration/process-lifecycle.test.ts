/**
 * The edge as a process (`mcp-edge serve`): a listener that cannot bind makes it exit non-zero at
 * once, naming the address, with the processes it had spawned stopped; SIGHUP reloads the
 * configuration (test/integration/reload.test.ts covers what changes), never a silent death.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import path from "node:path";
import { after, test } from "node:test";
import { type EdgeConfigDoc, tempDir, withTestDefaults } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";
import { onceWithin, waitFor } from "../helpers/wait.ts";

const DEMO = path.join(REPO_ROOT, "src/demo/server.ts");
const started: ChildProcess[] = [];
let blocker: Server | undefined;

after(async () => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await new Promise<void>((r) => (blocker ? blocker.close(() => r()) : r()));
});

/** Pids of live processes whose command line names `marker`. */
function processesWith(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (cmd.includes(marker)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

function serve(doc: EdgeConfigDoc, dir: string): { child: ChildProcess; output: () => string } {
  const file = path.join(dir, "edge.yaml");
  writeFileSync(file, JSON.stringify(withTestDefaults(doc, dir)));
  const child = spawn(NODE_BIN, [path.join(REPO_ROOT, "src/main.ts"), "serve", "-c", file], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.push(child);
  let output = "";
  child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
  return { child, output: () => output };
}

test("a taken port: exit 1 at once, naming the address; the spawned stdio server is stopped", async () => {
  blocker = createServer();
  await new Promise<void>((r) => blocker!.listen(0, "127.0.0.1", r));
  const port = (blocker.address() as { port: number }).port;
  const dir = tempDir();
  // A marker in the spawned server's argv finds its process, whoever its parent is.
  const marker = `--marker=${path.basename(dir)}`;
  const { child, output } = serve(
    {
      listen: { host: "127.0.0.1", port },
      servers: {
        demo: {
          route: "/mcp",
          upstream: { stdio: { command: NODE_BIN, args: [DEMO, marker], mode: "shared" } },
          auth: ["none"],
        },
      },
    },
    dir,
  );
  const [code] = (await onceWithin(child, "exit", { what: "the edge to exit", timeout: 20_000 })) as [
    number | null,
  ];
  assert.equal(code, 1, output());
  assert.match(
    output(),
    new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(public listener\\): EADDRINUSE`),
  );
  await waitFor(() => processesWith(marker).length === 0, {
    what: "the spawned server to be gone",
    timeout: 5000,
  });
});

test("SIGHUP reloads (an unchanged file: nothing changes): the edge keeps serving, and SIGTERM still stops it", async () => {
  const dir = tempDir();
  const { child, output } = serve(
    {
      log: { level: "info" },
      servers: {
        demo: { route: "/mcp", upstream: { stdio: { command: NODE_BIN, args: [DEMO] } }, auth: ["none"] },
      },
    },
    dir,
  );
  await waitFor(() => /mcp-edge listening/.test(output()), { what: "the edge to listen", timeout: 30_000 });
  const admin = /"admin":"(http:[^"]+)"/.exec(output())?.[1] as string;
  child.kill("SIGHUP");
  await waitFor(() => /"msg":"configuration reloaded"/.test(output()), {
    what: "the reload's log line",
    timeout: 5000,
  });
  const health = await fetch(`${admin}/healthz`);
  assert.equal(health.status, 200, "still serving after SIGHUP");
  child.kill("SIGTERM");
  const [code] = (await onceWithin(child, "exit", { what: "the edge to stop", timeout: 20_000 })) as [
    number | null,
  ];
  assert.equal(code, 0);
});
