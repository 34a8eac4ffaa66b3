/**
 * mcp-edge demo MCP server.
 *
 * A small, dependency-light MCP server that speaks over stdio, so `mcp-edge serve` can spawn it
 * in the quickstart and you can try the gateway without any remote server:
 *
 *   node src/demo/server.ts
 *
 * Tools
 *   echo   { text }                    returns `text` unchanged
 *   add    { a, b }                    returns a + b
 *   slow   { steps = 5, delayMs = 200 } sleeps `steps` times, reporting progress when the caller
 *                                       passed a progressToken; returns "done after N steps"
 *   large  { kb = 256 } (max 8192)     returns `kb` KiB of deterministic text (for buffering /
 *                                       streaming / size-limit tests)
 *   fetch_url { url, maxBytes = 512 }   GETs a URL through HTTP_PROXY / HTTPS_PROXY when set (the
 *                                       edge's egress proxy) and returns the status and the first
 *                                       bytes; redirects are returned, not followed
 * Resources
 *   demo://readme                       what this server is
 *   demo://numbers/{n}                  a resource template: facts about an integer
 * Prompts
 *   summarize { text }                  asks the model to summarise some text
 */
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { McpServer, ResourceTemplate } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
// The demo server is an upstream behind the edge, not the edge: its outbound requests are what the
// edge's egress proxy checks, so it uses undici directly (the lint rule guards the edge's own code).
// eslint-disable-next-line no-restricted-imports
import { EnvHttpProxyAgent, fetch as undiciFetch } from "undici";
import { z } from "zod";

const VERSION = "0.1.0";
const MAX_KB = 8192;

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });

/**
 * `kb` KiB of printable, deterministic text: numbered 64-byte lines, so a truncated or reordered
 * payload is easy to spot ("line 000042 ...").
 */
export function largeText(kb: number): string {
  const lineCount = kb * 16; // 16 lines x 64 bytes = 1 KiB
  const lines: string[] = new Array(lineCount);
  for (let i = 0; i < lineCount; i++) {
    const head = `line ${i.toString().padStart(6, "0")} `;
    // 63 visible characters + "\n" = 64 bytes per line.
    lines[i] = head + "abcdefghijklmnopqrstuvwxyz0123456789".repeat(2).slice(0, 63 - head.length);
  }
  return `${lines.join("\n")}\n`;
}

export function createDemoServer(): McpServer {
  const server = new McpServer(
    { name: "mcp-edge-demo", version: VERSION },
    {
      capabilities: { tools: {}, resources: {}, prompts: {} },
      instructions: "Demo server bundled with mcp-edge. Try the echo, add, slow, large and fetch_url tools.",
    },
  );

  server.registerTool(
    "echo",
    {
      title: "Echo",
      description: "Returns the given text unchanged.",
      inputSchema: { text: z.string().describe("Text to echo back") },
      annotations: { readOnlyHint: true, idempotentHint: true },
    },
    async ({ text }) => ({ content: [{ type: "text", text }] }),
  );

  server.registerTool(
    "add",
    {
      title: "Add",
      description: "Adds two numbers.",
      inputSchema: { a: z.number().describe("First addend"), b: z.number().describe("Second addend") },
      outputSchema: { sum: z.number() },
      annotations: { readOnlyHint: true, idempotentHint: true },
    },
    async ({ a, b }) => {
      const sum = a + b;
      return { content: [{ type: "text", text: String(sum) }], structuredContent: { sum } };
    },
  );

  server.registerTool(
    "slow",
    {
      title: "Slow",
      description:
        "Waits `steps` x `delayMs` milliseconds, sending a progress notification after each step " +
        "when the request carries a progressToken. Honours cancellation.",
      inputSchema: {
        steps: z.number().int().min(1).max(1000).default(5).describe("Number of steps"),
        delayMs: z.number().int().min(0).max(60_000).default(200).describe("Delay per step (ms)"),
      },
      annotations: { readOnlyHint: true },
    },
    async ({ steps, delayMs }, extra) => {
      const progressToken = extra._meta?.progressToken;
      for (let step = 1; step <= steps; step++) {
        await sleep(delayMs, extra.signal);
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken, progress: step, total: steps, message: `step ${step}/${steps}` },
          });
        }
      }
      return { content: [{ type: "text", text: `done after ${steps} steps` }] };
    },
  );

  server.registerTool(
    "large",
    {
      title: "Large",
      description: `Returns \`kb\` KiB of deterministic text (max ${MAX_KB}).`,
      inputSchema: {
        kb: z.number().int().min(1).max(MAX_KB).default(256).describe("Size of the result in KiB"),
      },
      annotations: { readOnlyHint: true, idempotentHint: true },
    },
    async ({ kb }) => ({ content: [{ type: "text", text: largeText(kb) }] }),
  );

  // Honours HTTP_PROXY / HTTPS_PROXY / NO_PROXY (mcp-edge sets them for the processes it spawns).
  // `proxyTunnel: false`: plain http:// goes to the proxy as an absolute-URI request, so a refusal
  // arrives as a readable 403 naming the rule; https:// is tunnelled with CONNECT (TLS end to end).
  const dispatcher = new EnvHttpProxyAgent({ proxyTunnel: false });
  server.registerTool(
    "fetch_url",
    {
      title: "Fetch URL",
      description:
        "GETs an http(s) URL (through the proxy in HTTP_PROXY / HTTPS_PROXY when set) and returns the status and the first bytes of the body. Redirects are returned, not followed.",
      inputSchema: {
        url: z.url({ protocol: /^https?$/ }).describe("The http:// or https:// URL to fetch"),
        maxBytes: z.number().int().min(0).max(65_536).default(512).describe("Body bytes to return"),
      },
      annotations: { readOnlyHint: true, openWorldHint: true },
    },
    async ({ url, maxBytes }, extra) => {
      try {
        const res = await undiciFetch(url, { dispatcher, redirect: "manual", signal: extra.signal });
        const reader = res.body?.getReader();
        const chunks: Buffer[] = [];
        let size = 0;
        while (reader && size < maxBytes) {
          const { done, value } = await reader.read();
          if (done) break;
          chunks.push(Buffer.from(value));
          size += value.byteLength;
        }
        await reader?.cancel().catch(() => {});
        const body = Buffer.concat(chunks).subarray(0, maxBytes).toString("utf8");
        return {
          content: [{ type: "text", text: `${res.status} ${res.statusText}\n\n${body}` }],
          structuredContent: { status: res.status, body },
          isError: res.status >= 400,
        };
      } catch (error) {
        // A refused CONNECT (https://) ends here: the tunnel's 403 is not a response the client sees.
        const cause = (error as { cause?: { message?: string } }).cause?.message;
        const message = `${(error as Error).message}${cause ? `: ${cause}` : ""}`;
        return { content: [{ type: "text", text: `fetch failed: ${message}` }], isError: true };
      }
    },
  );

  server.registerResource(
    "readme",
    "demo://readme",
    { title: "About this server", description: "What the demo server offers", mimeType: "text/markdown" },
    async (uri) => ({
      contents: [
        {
          uri: uri.href,
          mimeType: "text/markdown",
          text: [
            "# mcp-edge demo server",
            "",
            "Bundled with mcp-edge so the quickstart works without a remote MCP server.",
            "",
            "- `echo {text}` returns its input",
            "- `add {a, b}` adds two numbers",
            "- `slow {steps, delayMs}` streams progress notifications",
            `- \`large {kb}\` returns up to ${MAX_KB} KiB of text`,
            "- `fetch_url {url}` fetches a URL through the edge's egress proxy (status and first bytes)",
            "",
          ].join("\n"),
        },
      ],
    }),
  );

  server.registerResource(
    "number",
    new ResourceTemplate("demo://numbers/{n}", {
      list: undefined,
      complete: { n: (value) => ["1", "2", "3", "7", "42", "100"].filter((n) => n.startsWith(value)) },
    }),
    { title: "Number facts", description: "Simple facts about an integer", mimeType: "application/json" },
    async (uri, { n }) => {
      const value = Number(n);
      if (!Number.isSafeInteger(value)) throw new Error(`not an integer: ${String(n)}`);
      const facts = { n: value, even: value % 2 === 0, square: value * value, binary: value.toString(2) };
      return { contents: [{ uri: uri.href, mimeType: "application/json", text: JSON.stringify(facts) }] };
    },
  );

  server.registerPrompt(
    "summarize",
    {
      title: "Summarize",
      description: "Asks the model to summarise a piece of text.",
      argsSchema: { text: z.string().describe("The text to summarise") },
    },
    async ({ text }) => ({
      messages: [
        { role: "user", content: { type: "text", text: `Summarise the following text:\n\n${text}` } },
      ],
    }),
  );

  return server;
}

async function main(): Promise<void> {
  const server = createDemoServer();
  const shutdown = () => {
    server.close().finally(() => process.exit(0));
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
  await server.connect(new StdioServerTransport());
}

/** True when this file is the process entry point (`node src/demo/server.ts`), not an import. */
function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main().catch((error: unknown) => {
    console.error("mcp-edge demo server failed:", error);
    process.exit(1);
  });
}
