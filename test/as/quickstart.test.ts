/**
 * `npm start` (the quickstart, no config) serves the authorization server with API-key sign-in:
 * an OAuth-only client — the official SDK's own flow — logs in by having the person paste the
 * printed dev key on the edge's sign-in page, then calls tools.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { after, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { freePort, tempDir } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT, waitForExit } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";
import { sdkLogin, TestOAuthProvider } from "./helpers.ts";

const children: ChildProcess[] = [];
after(async () => {
  for (const c of children)
    if (c.exitCode === null) {
      c.kill("SIGTERM");
      await waitForExit(c, 10_000).catch(() => c.kill("SIGKILL"));
    }
});

test("quickstart serves the AS: the SDK client logs in with the dev key and calls a tool", async () => {
  const port = await freePort();
  const child = spawn(NODE_BIN, [path.join(REPO_ROOT, "src/main.ts"), "serve"], {
    cwd: tempDir("mcp-edge-as-quickstart-"),
    env: { ...process.env, MCP_EDGE_PORT: String(port), MCP_EDGE_ADMIN_PORT: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let banner = "";
  child.stderr?.on("data", (d: Buffer) => {
    banner += d.toString();
  });
  child.stdout?.resume();
  await waitFor(() => /mcpe_[a-z0-9]{12}_\S+/.test(banner) && banner.includes("OAuth clients"), {
    what: "the banner",
    timeout: 20_000,
    interval: 50,
  });
  const key = /(mcpe_[a-z0-9]{12}_\S+)/.exec(banner)![1]!;
  const base = `http://127.0.0.1:${port}`;
  const target = { base, mcpUrl: `${base}/mcp`, key };
  const md = (await (await fetch(`${base}/.well-known/oauth-authorization-server`)).json()) as any;
  assert.equal(md.issuer, base);
  const provider = new TestOAuthProvider({ redirectUrl: "http://127.0.0.1:53125/callback" });
  await sdkLogin(target, provider);
  const c = new Client({ name: "qs", version: "1.0.0" });
  await c.connect(new StreamableHTTPClientTransport(new URL(target.mcpUrl), { authProvider: provider }));
  const r = (await c.callTool({ name: "add", arguments: { a: 2, b: 3 } })) as any;
  assert.match(r.content[0].text, /5/);
  await c.close();
});
