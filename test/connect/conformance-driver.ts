/**
 * The "client under test" for the conformance suite's client mode, for a stdio bridge. The suite
 * runs `--command "<this script> <bridge>"` with the scenario's server URL appended; a bridge does
 * nothing on its own, so this script plays the desktop side: the official SDK v1 Client over
 * StdioClientTransport spawns the bridge (`edge` = `mcp-edge connect`, `mcp-remote` = mcp-remote's
 * proxy from $MCP_REMOTE_BIN), initializes, lists the tools and calls them (arguments made from
 * their input schemas), accepting elicitations with empty content (the SDK applies defaults) and
 * answering sampling. When the bridge prints an authorization URL, this script plays the browser
 * (an HTTP client following redirects to the bridge's loopback callback). The same driver runs both
 * bridges, so their results compare.
 *
 *   node test/connect/conformance-driver.ts edge|mcp-remote <url>
 */
import { mkdtempSync, writeFileSync, chmodSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Readable } from "node:stream";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { CreateMessageRequestSchema, ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { REPO_ROOT } from "../helpers/spawn.ts";
import { followLogin } from "./as.ts";

/** The CIMD URL the suite's auth scenarios expect a client to use (its everything-client's). */
const CIMD_URL = "https://conformance-test.local/client-metadata.json";

const [which, url] = process.argv.slice(2);
if ((which !== "edge" && which !== "mcp-remote") || !url) {
  process.stderr.write("usage: conformance-driver.ts edge|mcp-remote <url>\n");
  process.exit(2);
}
const scenario = process.env.MCP_CONFORMANCE_SCENARIO ?? "";
const context = JSON.parse(process.env.MCP_CONFORMANCE_CONTEXT ?? "{}") as {
  client_id?: string;
  client_secret?: string;
};

const scratch = mkdtempSync(path.join(tmpdir(), "conformance-bridge-"));
// No real browser may start: an `xdg-open` that does nothing is first on PATH (this script plays
// the browser from the URL the bridge prints).
writeFileSync(path.join(scratch, "xdg-open"), "#!/bin/sh\nexit 0\n");
chmodSync(path.join(scratch, "xdg-open"), 0o755);

const args: string[] = [];
if (which === "edge") {
  args.push(path.join(REPO_ROOT, "src/main.ts"), "connect", url, "--no-browser");
  if (context.client_id) args.push("--client-id", context.client_id);
  if (context.client_secret) args.push("--client-secret", context.client_secret);
  if (scenario.includes("cimd")) args.push("--client-metadata-url", CIMD_URL);
} else {
  const bin = process.env.MCP_REMOTE_BIN ?? "/tmp/mcp-remote/node_modules/mcp-remote/dist/proxy.js";
  args.push(bin, url);
  if (context.client_id) {
    args.push(
      "--static-oauth-client-info",
      JSON.stringify({
        client_id: context.client_id,
        ...(context.client_secret ? { client_secret: context.client_secret } : {}),
      }),
    );
  }
  if (scenario.includes("cimd")) args.push("--client-metadata-url", CIMD_URL);
}

const transport = new StdioClientTransport({
  command: process.execPath,
  args,
  env: {
    ...(process.env as Record<string, string>),
    PATH: `${scratch}:${process.env.PATH ?? ""}`,
    MCP_EDGE_CONFIG_DIR: path.join(scratch, "edge"),
    MCP_EDGE_TOKEN_STORE: "file",
    MCP_REMOTE_CONFIG_DIR: path.join(scratch, "mcp-remote"),
  },
  stderr: "pipe",
});

const visited = new Set<string>();
let stderr = "";
(transport.stderr as Readable | null)?.setEncoding("utf8");
(transport.stderr as Readable | null)?.on("data", (chunk: string) => {
  process.stderr.write(chunk);
  stderr += chunk;
  for (const m of stderr.matchAll(/(https?:\/\/[^\s'"<>]*[?&]response_type=code[^\s'"<>]*)/g)) {
    const u = m[1] as string;
    if (visited.has(u)) continue;
    visited.add(u);
    // A person clicks the link some time after it is printed; the bridge may open its callback
    // listener only after printing. Follow once the redirect_uri's port accepts connections.
    whenListening(new URL(u).searchParams.get("redirect_uri"))
      .then(() => followLogin(u))
      .then(
        (status) => process.stderr.write(`[driver] followed the login URL: callback answered ${status}\n`),
        (err: Error) => process.stderr.write(`[driver] login URL failed: ${err.message}\n`),
      );
  }
});

/** Resolves once `redirectUri`'s host:port accepts a TCP connection (at most 30 s). */
async function whenListening(redirectUri: string | null): Promise<void> {
  if (!redirectUri) return;
  const target = new URL(redirectUri);
  const port = Number(target.port || 80);
  const host = target.hostname.replace(/^\[|\]$/g, "");
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ port, host }, () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const client = new Client(
  { name: "conformance-desktop", version: "1.0.0" },
  { capabilities: { sampling: {}, elicitation: { form: { applyDefaults: true } } } },
);
client.setRequestHandler(ElicitRequestSchema, async () => ({ action: "accept" as const, content: {} }));
client.setRequestHandler(CreateMessageRequestSchema, async () => ({
  model: "conformance",
  role: "assistant" as const,
  content: { type: "text" as const, text: "sampled" },
}));

/** Arguments for a tool from its JSON Schema: required properties with a plausible value each. */
function argumentsFor(schema: { properties?: Record<string, { type?: string }>; required?: string[] }) {
  const out: Record<string, unknown> = {};
  for (const name of schema.required ?? []) {
    const type = schema.properties?.[name]?.type;
    out[name] =
      type === "number" || type === "integer" ? 1 : type === "boolean" ? true : type === "object" ? {} : "x";
  }
  return out;
}

let code = 0;
try {
  await client.connect(transport, { timeout: 30_000 });
  const { tools } = await client.listTools();
  for (const tool of tools.slice(0, 5)) {
    // A generic client shows what it received: an echo tool taking a `schema` object gets the
    // input schema of the other tool, as the desktop client parsed it.
    const schemaArg =
      tool.name.includes("echo") && (tool.inputSchema.required ?? []).includes("schema")
        ? { schema: tools.find((t) => t.name !== tool.name)?.inputSchema ?? {} }
        : undefined;
    try {
      await client.callTool(
        { name: tool.name, arguments: schemaArg ?? argumentsFor(tool.inputSchema) },
        undefined,
        {
          timeout: 30_000,
        },
      );
    } catch (err) {
      process.stderr.write(`[driver] ${tool.name}: ${(err as Error).message}\n`);
    }
  }
} catch (err) {
  process.stderr.write(`[driver] ${(err as Error).message}\n`);
  code = 1;
} finally {
  await client.close().catch(() => undefined);
  await transport.close().catch(() => undefined);
}
process.stderr.write(`[driver] scenario ${scenario} done (scenario=${scenario})\n`);
process.exit(code);
