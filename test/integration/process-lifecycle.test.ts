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

/**
 * The `mcp-edge` command as on a Node without type stripping: Node 24 with stripping turned off
 * runs bin/mcp-edge.js, which then starts the edge as its child on the pinned Node.
 */
const WRAPPED = ["--no-experimental-strip-types", path.join(REPO_ROOT, "bin/mcp-edge.js")];

/** The demo server as one shared stdio process whose argv carries `marker`. */
function demoWith(marker: string): EdgeConfigDoc["servers"] {
  return {
    demo: {
      route: "/mcp",
      upstream: { stdio: { command: NODE_BIN, args: [DEMO, marker], mode: "shared" } },
      auth: ["none"],
    },
  };
}

function serve(
  doc: EdgeConfigDoc,
  dir: string,
  via: "main" | "wrapper" = "main",
): { child: ChildProcess; output: () => string } {
  const file = path.join(dir, "edge.yaml");
  writeFileSync(file, JSON.stringify(withTestDefaults(doc, dir)));
  const entry = via === "main" ? [path.join(REPO_ROOT, "src/main.ts")] : WRAPPED;
  const child = spawn(NODE_BIN, [...entry, "serve", "-c", file], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
    // The wrapper in a process group of its own, as a shell runs a command: a terminal's Ctrl-C
    // is a SIGINT to that whole group.
    detached: via === "wrapper",
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
      servers: demoWith(marker),
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

/** The edge under bin/mcp-edge.js's wrapper, with a stdio server; pids of the edge and its server. */
async function wrapped(): Promise<{
  wrapper: ChildProcess;
  output: () => string;
  edgePid: number;
  marker: string;
  admin: string;
}> {
  const dir = tempDir();
  const marker = `--marker=${path.basename(dir)}`;
  const { child, output } = serve(
    {
      log: { level: "info" },
      servers: demoWith(marker),
    },
    dir,
    "wrapper",
  );
  await waitFor(() => /mcp-edge listening/.test(output()), { what: "the edge to listen", timeout: 30_000 });
  const admin = /"admin":"(http:[^"]+)"/.exec(output())?.[1] as string;
  // The edge is the process running src/main.ts with this config; the wrapper runs bin/mcp-edge.js.
  const edge = processesWith(path.join(dir, "edge.yaml")).filter(
    (pid) => pid !== child.pid && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("src/main.ts"),
  );
  assert.equal(edge.length, 1, `one edge process under the wrapper: ${edge.join(",")}`);
  await waitFor(() => processesWith(marker).length > 0, { what: "the stdio server to run", timeout: 10_000 });
  return { wrapper: child, output, edgePid: edge[0] as number, marker, admin };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test("bin wrapper: SIGKILL of the wrapper stops the edge it started, and the edge's spawned server", async () => {
  const { wrapper, edgePid, marker, output } = await wrapped();
  wrapper.kill("SIGKILL");
  await onceWithin(wrapper, "exit", { what: "the wrapper to die" });
  await waitFor(() => !alive(edgePid), { what: "the edge to stop after its wrapper died", timeout: 15_000 });
  await waitFor(() => processesWith(marker).length === 0, {
    what: "the edge's stdio server to be gone",
    timeout: 5000,
  });
  assert.match(output(), /shutting down/, "the edge stopped as on SIGTERM (drained), not killed");
});

test("bin wrapper: a terminal's SIGINT to the process group reaches the edge once: it drains and exits 0", async () => {
  const { wrapper, edgePid, admin, output } = await wrapped();
  assert.equal((await fetch(`${admin}/healthz`)).status, 200);
  // SIGHUP is forwarded: the edge reloads its (unchanged) file, and both keep running.
  wrapper.kill("SIGHUP");
  await waitFor(() => /reloading the configuration/.test(output()), { what: "the edge's SIGHUP log line" });
  assert.equal((await fetch(`${admin}/healthz`)).status, 200, "still serving after SIGHUP");
  process.kill(-(wrapper.pid as number), "SIGINT");
  const [code] = (await onceWithin(wrapper, "exit", { what: "the wrapper to exit", timeout: 20_000 })) as [
    number | null,
  ];
  // A second signal would make the edge exit 130 at once; one forwarded signal is a clean stop.
  assert.equal(code, 0);
  assert.equal(alive(edgePid), false);
});

test("bin wrapper: the edge killed by a signal → the wrapper exits 128 + its number", async () => {
  const { wrapper, edgePid } = await wrapped();
  process.kill(edgePid, "SIGKILL");
  const [code] = (await onceWithin(wrapper, "exit", { what: "the wrapper to exit", timeout: 10_000 })) as [
    number | null,
  ];
  assert.equal(code, 137);
});

test("bin wrapper: --version through the wrapper and directly agree with package.json", async () => {
  const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as { version: string };
  for (const args of [WRAPPED, [path.join(REPO_ROOT, "bin/mcp-edge.js")]]) {
    const child = spawn(NODE_BIN, [...args, "--version"], { stdio: ["ignore", "pipe", "pipe"] });
    started.push(child);
    let out = "";
    child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
    const [code] = (await onceWithin(child, "exit", { what: "--version to answer" })) as [number | null];
    assert.equal(code, 0);
    assert.match(out, new RegExp(`^mcp-edge ${pkg.version.replace(/\./g, "\\.")} `));
  }
});
