/**
 * One raw MCP POST, as the integration tests make them when they need to see the wire (status,
 * headers, the exact error body) rather than what an SDK client makes of it.
 */
export interface McpPostOptions {
  /** Sent as `Authorization: Bearer <credential>`. */
  credential?: string;
  /** Sent as `Mcp-Session-Id`, with `MCP-Protocol-Version: 2025-11-25`. */
  sessionId?: string;
  headers?: Record<string, string>;
}

export interface McpAnswer {
  status: number;
  headers: Headers;
  /** The JSON body, or the last `data:` of an SSE answer, parsed; undefined when there is none. */
  body: any;
  requestId: string;
  sessionId: string | null;
}

/** The message a JSON or SSE answer ends with. */
export function lastMessage(text: string): any {
  const data = text.startsWith("{")
    ? text
    : (text
        .split("\n")
        .filter((l) => l.startsWith("data: "))
        .at(-1)
        ?.slice(6) ?? "");
  return data ? JSON.parse(data) : undefined;
}

export async function mcpPost(url: string, body: object, options: McpPostOptions = {}): Promise<McpAnswer> {
  const res = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...(options.credential ? { authorization: `Bearer ${options.credential}` } : {}),
      ...(options.sessionId
        ? { "mcp-session-id": options.sessionId, "mcp-protocol-version": "2025-11-25" }
        : {}),
      ...options.headers,
    },
    body: JSON.stringify(body),
  });
  return {
    status: res.status,
    headers: res.headers,
    body: lastMessage(await res.text()),
    requestId: res.headers.get("x-mcp-edge-request-id") ?? "",
    sessionId: res.headers.get("mcp-session-id"),
  };
}

/** A session-era `initialize` request (2025-11-25), id 1. */
export const INITIALIZE = {
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "1" } },
} as const;

/** A `tools/call` request of `name` with `args`. */
export function toolCall(id: number, name: string, args: Record<string, unknown> = {}): object {
  return { jsonrpc: "2.0", id, method: "tools/call", params: { name, arguments: args } };
}

/** `op`'s value and how long it took (ms). */
export async function timed<T>(op: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const at = performance.now();
  const value = await op();
  return { value, ms: performance.now() - at };
}
