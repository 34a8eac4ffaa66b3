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
      instructions: "Demo server bundled with mcp-edge. Try the echo, add, slow and large tools.",
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
