/**
 * A client that opens a session, asks for a large tool result over SSE and then never reads: a raw
 * TCP socket, paused once the request is written (what a stuck or malicious client does).
 */
import { connect, type Socket } from "node:net";

export interface NonReader {
  socket: Socket;
  /** Resolves when the edge closed (or reset) the connection. */
  closed: Promise<void>;
}

/** Opens a session with plain fetch (read whole), then sends the call on a socket it never reads. */
export async function nonReader(
  url: string,
  kib: number,
  headers: Record<string, string> = {},
): Promise<NonReader> {
  const base = {
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    ...headers,
  };
  const init = await fetch(url, {
    method: "POST",
    headers: base,
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: {
        protocolVersion: "2025-11-25",
        capabilities: {},
        clientInfo: { name: "non-reader", version: "1" },
      },
    }),
  });
  await init.text();
  const sid = init.headers.get("mcp-session-id");
  if (!sid) throw new Error(`initialize answered ${init.status} without a session`);
  const session = { ...base, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" };
  await (
    await fetch(url, {
      method: "POST",
      headers: session,
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    })
  ).text();
  const u = new URL(url);
  const body = JSON.stringify({
    jsonrpc: "2.0",
    id: 2,
    method: "tools/call",
    params: { name: "large_text", arguments: { kib } },
  });
  const socket = connect({ host: u.hostname, port: Number(u.port) });
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  socket.on("error", () => {});
  await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
  const lines = [
    `POST ${u.pathname} HTTP/1.1`,
    `host: ${u.host}`,
    ...Object.entries({ ...session, "mcp-method": "tools/call", "mcp-name": "large_text" }).map(
      ([k, v]) => `${k}: ${v}`,
    ),
    `content-length: ${Buffer.byteLength(body)}`,
    "",
    body,
  ];
  socket.write(lines.join("\r\n"));
  socket.pause();
  return { socket, closed };
}
