/**
 * The first five minutes of a new user: `mcp-edge serve` with no config, in an empty folder, prints
 * a URL and a client snippet; an SDK client uses them exactly as printed. And the `mcp-edge` bin
 * works from a checkout even when the Node on PATH is too old to run TypeScript.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { tempDir } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT, waitForExit } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
});

test("quickstart: the printed snippet works with an SDK client as printed", async () => {
  const cwd = tempDir("mcp-edge-quickstart-");
  const child = spawn(NODE_BIN, [path.join(REPO_ROOT, "src/main.ts"), "serve"], {
    cwd,
    // Port 0: the test must not depend on 8787 being free; the banner prints the real port.
    env: { ...process.env, MCP_EDGE_PORT: "0", MCP_EDGE_ADMIN_PORT: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let banner = "";
  child.stderr?.on("data", (d: Buffer) => {
    banner += d.toString();
  });
  child.stdout?.resume();
  await waitFor(() => /"mcpServers"[\s\S]*\n {4}\}\n/.test(banner), {
    what: "the banner's client snippet",
    timeout: 15_000,
    interval: 50,
  }).catch(() => undefined); // the assertions below show the banner
  assert.match(banner, /Your dev key \(shown once/);
  const snippetText = banner.slice(banner.indexOf("{"), banner.lastIndexOf("}") + 1);
  const snippet = JSON.parse(snippetText) as {
    mcpServers: { demo: { type: string; url: string; headers: { Authorization: string } } };
  };
  assert.equal(snippet.mcpServers.demo.type, "http");
  const url = snippet.mcpServers.demo.url;
  const headers = snippet.mcpServers.demo.headers;
  assert.match(headers.Authorization, /^Bearer mcpe_[a-z0-9]{12}_/);

  // Without the key: 401.
  const anonymous = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: {} }),
  });
  assert.equal(anonymous.status, 401);
  assert.match(
    banner,
    new RegExp(`MCP endpoint \\(demo\\):\\s+${url.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`),
  );

  const client = new Client({ name: "new-user", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } }));
  const tools = await client.listTools();
  assert.deepEqual(tools.tools.map((t) => t.name).sort(), ["add", "echo", "fetch_url", "large", "slow"]);
  const r = await client.callTool({ name: "echo", arguments: { text: "first call" } });
  assert.equal((r.content as { text: string }[])[0]?.text, "first call");
  await client.close();

  assert.ok(existsSync(path.join(cwd, ".mcp-edge", "mcp-edge.db")), "state under ./.mcp-edge/");
  // The store and the quickstart's files are the owner's alone: keys' hashes, identity-signing
  // private keys, the audit, the admin token.
  const state = path.join(cwd, ".mcp-edge");
  assert.equal(statSync(state).mode & 0o777, 0o700, "./.mcp-edge/ is 0700");
  for (const f of ["mcp-edge.db", "mcp-edge.db-wal", "mcp-edge.db-shm", "admin-token", "admin-url"]) {
    assert.equal((statSync(path.join(state, f)).mode & 0o777).toString(8), "600", `${f} is 0600`);
  }

  // `mcp-edge keys list` finds the quickstart's admin token and shows the dev key, recently used.
  const adminPort = /Health:\s+http:\/\/127\.0\.0\.1:(\d+)\/healthz/.exec(banner)?.[1];
  const list = execFileSync(
    NODE_BIN,
    [path.join(REPO_ROOT, "src/main.ts"), "keys", "list", "--url", `http://127.0.0.1:${adminPort}`],
    { cwd, encoding: "utf8" },
  );
  assert.match(list, /^NAME\s+ID\s+SERVER/m);
  assert.match(list, /^dev\s+[a-z0-9]{12}\s+demo\s+default\s+active/m);
  child.kill("SIGTERM");
  const code = await waitForExit(child, 10_000);
  assert.equal(code, 0, "a clean exit on SIGTERM");
});

test("the mcp-edge bin runs from a checkout, re-running itself on the pinned Node when needed", () => {
  const bin = path.join(REPO_ROOT, "bin/mcp-edge.js");
  // With the project's Node 24 and with whatever `node` is first on the system PATH (on these
  // machines Node 20, which cannot strip types: the bin then re-runs on node_modules/node).
  for (const node of [NODE_BIN, "node"]) {
    const out = execFileSync(node, [bin, "--help"], {
      encoding: "utf8",
      env: { ...process.env, PATH: node === "node" ? "/usr/local/bin:/usr/bin:/bin" : process.env.PATH },
    });
    assert.match(out, /Usage: mcp-edge <command>/);
  }
  const validate = execFileSync(NODE_BIN, [bin, "validate", "--help"], { encoding: "utf8" });
  assert.match(validate, /Usage: mcp-edge validate/);
});

/** Runs a command line exactly as printed, with `sh`, in `cwd`; never installs from a registry. */
function runAsPrinted(line: string, cwd: string, env: NodeJS.ProcessEnv = {}): string {
  return execFileSync("sh", ["-c", line], {
    cwd,
    encoding: "utf8",
    // npx must run the project's command, never fetch a package of that name.
    env: { ...process.env, ...env, npm_config_yes: "false", npm_config_update_notifier: "false" },
  });
}

test("the banner names its config; every command it prints runs as printed; init then changes what serve says it serves", async () => {
  const cwd = tempDir("mcp-edge-first-hour-");
  // A project that has mcp-edge installed (what `npm install <checkout>` or `npm link mcp-edge`
  // leaves): the `mcp-edge` command in node_modules/.bin, where `npx mcp-edge` finds it.
  mkdirSync(path.join(cwd, "node_modules", ".bin"), { recursive: true });
  symlinkSync(path.join(REPO_ROOT, "bin/mcp-edge.js"), path.join(cwd, "node_modules", ".bin", "mcp-edge"));
  const serve = (env: NodeJS.ProcessEnv) => {
    const child = spawn(NODE_BIN, [path.join(REPO_ROOT, "src/main.ts"), "serve"], {
      cwd,
      env: { ...process.env, MCP_EDGE_PORT: "0", MCP_EDGE_ADMIN_PORT: "0", ...env },
      stdio: ["ignore", "ignore", "pipe"],
    });
    children.push(child);
    let banner = "";
    child.stderr?.on("data", (d: Buffer) => (banner += d.toString()));
    return { child, banner: () => banner };
  };
  const quick = serve({});
  await waitFor(() => /Write a config .*\n.*\n/.test(quick.banner()), { what: "the quickstart banner" });
  assert.match(quick.banner(), /^ {2}Config: {3}none \(no -c, no \.\/mcp-edge\.yaml\): the quickstart$/m);
  const printed = [...quick.banner().matchAll(/npx mcp-edge [^`\n]*[^`\s]/g)].map((m) => m[0]);
  assert.deepEqual(printed, ["npx mcp-edge keys create --name NAME", "npx mcp-edge init"]);
  const created = runAsPrinted(printed[0] as string, cwd);
  assert.match(created, /^created NAME \([a-z0-9]{12}\) for demo\/default\nkey \(shown once/);
  const init = runAsPrinted(printed[1] as string, cwd);
  assert.match(init, /`npm start` and `npx mcp-edge serve` in this folder now serve this file/);
  const file = path.join(cwd, "mcp-edge.yaml");
  // The lines init printed run as printed too (validate needs the admin token it names).
  const token = "first-hour-admin-token-0123456789abcdef";
  const validate = /next: (npx mcp-edge validate -c \S+)/.exec(init)?.[1] as string;
  assert.match(runAsPrinted(validate, cwd, { MCP_EDGE_ADMIN_TOKEN: token }), /^ok: /);
  quick.child.kill("SIGTERM");
  assert.equal(await waitForExit(quick.child, 10_000), 0);

  // The same `serve` now says it serves the file (its ports moved to free ones for the test).
  writeFileSync(
    file,
    readFileSync(file, "utf8").replace("port: 8787", "port: 0").replace("port: 8788", "port: 0"),
  );
  const missing = serve({ MCP_EDGE_ADMIN_TOKEN: undefined });
  assert.equal(await waitForExit(missing.child, 15_000), 1);
  assert.match(
    missing.banner(),
    /mcp-edge\.yaml: EDGE_CONFIG_ENV_MISSING: admin\.token: \$\{MCP_EDGE_ADMIN_TOKEN\} is not set/s,
  );
  const configured = serve({ MCP_EDGE_ADMIN_TOKEN: token });
  await waitFor(() => /MCP endpoint/.test(configured.banner()), { what: "the configured banner" });
  assert.match(
    configured.banner(),
    new RegExp(`^ {2}Config: {3}${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`, "m"),
  );
  configured.child.kill("SIGTERM");
  assert.equal(await waitForExit(configured.child, 10_000), 0);
});
