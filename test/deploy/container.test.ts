/**
 * The container image (Dockerfile at the repository root), built and run with podman: it serves an
 * MCP call through the SDK v1 client with API-key auth, as a non-root user, on a read-only root
 * filesystem with every capability dropped, keeps its state in the /data volume (a second container
 * on the same volume accepts the key the first one issued), answers its HEALTHCHECK, and drains and
 * exits 0 on SIGTERM (node is PID 1 and gets the signal itself).
 *
 * Under CI=true it must run (.ci/run installs podman, runc and debootstrap); elsewhere it is skipped,
 * loudly, when they are missing. The first run builds a local base image (debootstrap, ~2-3 min);
 * later runs reuse it and podman's layer cache.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { until } from "../helpers/wait.ts";
import { freePort } from "../helpers/edge.ts";
import { REPO_ROOT } from "../helpers/spawn.ts";
import {
  buildImage,
  ensureBaseImage,
  podman,
  podmanConfCleanup,
  podmanEnv,
  podmanMissing,
  run,
} from "./podman.ts";

const missing = await podmanMissing();
if (missing !== undefined && process.env.CI === "true") {
  test("container image: podman is available", () => {
    assert.fail(`${missing}. CI=true: .ci/run installs podman, runc and debootstrap; this test must run`);
  });
} else if (missing !== undefined) {
  process.stderr.write(
    `\n${"!".repeat(78)}\n!! SKIPPING the container image test: ${missing}.\n` +
      "!! apt-get install -y podman runc debootstrap   to run it.\n" +
      `${"!".repeat(78)}\n\n`,
  );
} else {
  defineTests();
}

function defineTests(): void {
  const suffix = randomBytes(4).toString("hex");
  // One tag per checkout, so worktrees testing at once do not retag each other's image.
  const image = `localhost/mcp-edge-test:${createHash("sha256").update(REPO_ROOT).digest("hex").slice(0, 12)}`;
  const volume = `mcp-edge-test-data-${suffix}`;
  const containers: string[] = [];
  const adminToken = randomBytes(24).toString("hex");

  after(async () => {
    for (const c of containers) await run("podman", ["rm", "-f", "-t", "0", c], { env: podmanEnv() });
    await run("podman", ["volume", "rm", "-f", volume], { env: podmanEnv() });
    podmanConfCleanup();
  });

  const log = (line: string) => process.stderr.write(`# container: ${line}\n`);

  /** Starts the image with the given published ports; resolves once /readyz answers 200. */
  async function start(name: string, port: number, adminPort: number): Promise<string> {
    containers.push(name);
    await podman([
      "run",
      "--detach",
      "--name",
      name,
      // What the Kubernetes manifests ask for: read-only root (and no tmpfs anywhere), no
      // capabilities, no privilege escalation.
      "--read-only",
      "--read-only-tmpfs=false",
      "--cap-drop=ALL",
      "--security-opt=no-new-privileges",
      "--publish",
      `127.0.0.1:${port}:8787`,
      "--publish",
      `127.0.0.1:${adminPort}:8788`,
      "--volume",
      `${volume}:/data`,
      "--env",
      `MCP_EDGE_ADMIN_TOKEN=${adminToken}`,
      "--env",
      `MCP_EDGE_PUBLIC_URL=http://127.0.0.1:${port}`,
      image,
    ]);
    await until(
      `${name} /readyz`,
      async () => {
        const state = (await podman(["inspect", name, "--format", "{{.State.Status}}"])).trim();
        if (state !== "running") throw new Error(`${name} is ${state}:\n${await podman(["logs", name])}`);
        const r = await fetch(`http://127.0.0.1:${port}/readyz`);
        return r.status === 200 ? true : undefined;
      },
      60_000,
      250,
    ).catch(async (err: Error) => {
      const logs = await run("podman", ["logs", name], { env: podmanEnv() });
      throw new Error(`${err.message}\n--- container log ---\n${logs.stdout}${logs.stderr}`);
    });
    return name;
  }

  async function mcpClient(port: number, key: string): Promise<Client> {
    const client = new Client({ name: "container-test", version: "1.0.0" });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${port}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${key}` } },
      }),
    );
    return client;
  }

  test(
    "the image builds, serves MCP as non-root on a read-only root, and keeps state in /data",
    { timeout: 30 * 60_000 },
    async () => {
      let t = Date.now();
      const base = await ensureBaseImage(log);
      log(`base image ready in ${((Date.now() - t) / 1000).toFixed(1)} s`);
      t = Date.now();
      await buildImage(base, image);
      log(`podman build in ${((Date.now() - t) / 1000).toFixed(1)} s`);
      t = Date.now();

      // The image as built: a numeric non-root user, /data the only volume, a HEALTHCHECK, node itself
      // as the entrypoint (exec form: PID 1 gets the signals).
      const inspected = JSON.parse(await podman(["image", "inspect", image, "--format", "json"])) as {
        Config: { User: string; Volumes?: Record<string, unknown>; Entrypoint: string[] };
        Healthcheck?: { Test: string[] };
      }[];
      const config = inspected[0]?.Config;
      assert.equal(config?.User, "10001:10001");
      assert.deepEqual(Object.keys(config?.Volumes ?? {}), ["/data"]);
      assert.ok(
        inspected[0]?.Healthcheck?.Test.join(" ").includes("MCP_EDGE_HEALTHCHECK_URL"),
        "a HEALTHCHECK",
      );
      assert.deepEqual(config?.Entrypoint, ["node", "/app/bin/mcp-edge.js"]);

      // No dev dependency in the final stage: no package that package-lock.json marks dev-only
      // (`"dev": true`: needed by devDependencies alone) is installed; every dependency is.
      const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as {
        dependencies: Record<string, string>;
      };
      const lock = JSON.parse(readFileSync(path.join(REPO_ROOT, "package-lock.json"), "utf8")) as {
        packages: Record<string, { dev?: boolean }>;
      };
      const devOnly = Object.entries(lock.packages)
        .filter(
          ([p, meta]) =>
            meta.dev === true && p.startsWith("node_modules/") && !p.slice(13).includes("node_modules/"),
        )
        .map(([p]) => p.slice("node_modules/".length));
      for (const tool of ["typescript", "eslint", "node", "prettier"])
        assert.ok(devOnly.includes(tool), tool);
      const installed = await podman([
        "run",
        "--rm",
        "--entrypoint",
        "node",
        image,
        "-e",
        "const fs=require('fs');const d='/app/node_modules';console.log(JSON.stringify(fs.readdirSync(d).flatMap(n=>n.startsWith('@')?fs.readdirSync(d+'/'+n).map(m=>n+'/'+m):[n])))",
      ]);
      const names = new Set(JSON.parse(installed) as string[]);
      for (const dep of Object.keys(pkg.dependencies)) assert.ok(names.has(dep), `${dep} is installed`);
      const leaked = devOnly.filter((d) => names.has(d));
      assert.deepEqual(leaked, [], "dev-only packages in the image");

      // Run it.
      const port = await freePort();
      const adminPort = await freePort();
      const first = await start(`mcp-edge-test-${suffix}-a`, port, adminPort);
      log(`container up in ${((Date.now() - t) / 1000).toFixed(1)} s`);

      const uid = (await podman(["exec", first, "id", "-u"])).trim();
      assert.notEqual(uid, "0", "the edge does not run as root");
      assert.equal(uid, "10001");
      const pid1 = (await podman(["exec", first, "cat", "/proc/1/cmdline"])).split("\0").filter(Boolean);
      assert.deepEqual(pid1.slice(0, 2), ["node", "/app/bin/mcp-edge.js"], "node is PID 1");

      // The HEALTHCHECK command, run by podman inside the container.
      const health = await run("podman", ["healthcheck", "run", first], { env: podmanEnv() });
      assert.equal(health.code, 0, `healthcheck: ${health.stdout}${health.stderr}`);

      // Nothing was written outside the volume (the root is read-only; this also shows nothing needed to).
      const written = await podman(["exec", first, "sh", "-c", "touch /app/probe 2>&1 || echo refused"]);
      assert.match(written, /refused/);
      // (podman itself mounts /etc/hosts, /etc/hostname and /etc/resolv.conf: /etc shows as changed.)
      const runtimeManaged = new Set([
        "/etc",
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
        "/run",
        "/run/.containerenv",
      ]);
      const diff = (await podman(["diff", first]))
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => l !== "" && !runtimeManaged.has(l.slice(2)));
      assert.deepEqual(diff, [], "nothing changed outside /data");

      // A key from the admin API, then an MCP session through the SDK v1 client.
      const created = await fetch(`http://127.0.0.1:${adminPort}/api/keys`, {
        method: "POST",
        headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
        body: JSON.stringify({ name: "container-test", server: "demo" }),
      });
      const createdBody = (await created.json()) as { key?: string };
      assert.equal(created.status, 201, JSON.stringify(createdBody));
      const key = createdBody.key as string;

      const client = await mcpClient(port, key);
      const tools = await client.listTools();
      assert.ok(
        tools.tools.some((x) => x.name === "echo"),
        "the demo server's tools",
      );
      const echoed = await client.callTool({ name: "echo", arguments: { text: "through the container" } });
      assert.deepEqual(echoed.content, [{ type: "text", text: "through the container" }]);
      await client.close();

      // The state is in /data: the SQLite store is there.
      const data = await podman(["exec", first, "ls", "/data"]);
      assert.match(data, /mcp-edge\.db/);

      // SIGTERM reaches node: it drains and exits 0 long before podman's 40 s would end in SIGKILL.
      t = Date.now();
      await podman(["stop", "--time", "40", first], 60_000);
      const stopMs = Date.now() - t;
      const exit = (await podman(["inspect", first, "--format", "{{.State.ExitCode}}"])).trim();
      assert.equal(exit, "0", "a clean exit (137 would be SIGKILL)");
      assert.ok(stopMs < 30_000, `stopped in ${stopMs} ms`);
      const logs = await run("podman", ["logs", first], { env: podmanEnv() });
      assert.match(logs.stdout, /"signal":"SIGTERM"/);
      assert.match(logs.stdout, /"msg":"stopped"/);
      log(`SIGTERM to exit in ${stopMs} ms`);

      // A new container on the same volume: the key issued by the first one still authenticates.
      const second = await start(`mcp-edge-test-${suffix}-b`, port, adminPort);
      const again = await mcpClient(port, key);
      const added = await again.callTool({ name: "add", arguments: { a: 2, b: 3 } });
      assert.deepEqual(added.content, [{ type: "text", text: "5" }]);
      await again.close();
      await podman(["stop", "--time", "40", second], 60_000);
    },
  );
}
