/**
 * A trivial stdio MCP server for the stdio benchmark: the official SDK v1 (`@modelcontextprotocol/sdk`
 * McpServer + StdioServerTransport) with one tool, `echo { text }`. mcp-edge (stdio upstream, shared
 * and per-session modes), mcp-proxy and supergateway all spawn this same program.
 *
 *   node bench/stdio-server.ts
 */
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";

const server = new McpServer({ name: "bench-stdio", version: "1.0.0" });
server.registerTool(
  "echo",
  { description: "Returns the given text unchanged.", inputSchema: { text: z.string() } },
  async ({ text }) => ({ content: [{ type: "text", text }] }),
);
await server.connect(new StdioServerTransport());
// The parent closing stdin ends the process (the transport does not exit on its own).
process.stdin.once("end", () => process.exit(0));
