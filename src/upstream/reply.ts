import type { EgressResponse } from "../egress/index.ts";
import { GatewayError } from "../errors/errors.ts";
import { parseMessage } from "../listen/jsonrpc.ts";
import { SseParser } from "../listen/sse.ts";
import type { UpstreamEvent, UpstreamReply } from "./types.ts";

/** Upstream error bodies and JSON answers are read up to this many bytes. */
export const MAX_UPSTREAM_BODY = 16 * 1024 * 1024;

export function header(res: EgressResponse, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Reads a whole body, failing past `max` bytes (an upstream is untrusted: OWASP API10:2023). */
export async function readBody(
  body: AsyncIterable<Buffer> & { destroy(): void },
  max: number,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > max) {
      body.destroy();
      throw new GatewayError("EDGE_UPSTREAM_BAD_RESPONSE", "The upstream answer is over the size limit.");
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Parses one upstream SSE body into events, lazily, as they arrive. */
export async function* sseEvents(body: AsyncIterable<Buffer>): AsyncGenerator<UpstreamEvent> {
  const parser = new SseParser({ maxEventBytes: MAX_UPSTREAM_BODY });
  for await (const chunk of body) {
    for (const ev of parser.push(chunk)) {
      const out = toUpstreamEvent(ev);
      if (out) yield out;
    }
  }
  for (const ev of parser.end()) {
    const out = toUpstreamEvent(ev);
    if (out) yield out;
  }
}

function toUpstreamEvent(ev: {
  id?: string;
  event?: string;
  data: string;
  retry?: number;
  hasData: boolean;
}): UpstreamEvent | null {
  // Only `message` events (the default type) carry JSON-RPC in Streamable HTTP.
  if (ev.event !== undefined && ev.event !== "message") return null;
  let message = null;
  if (ev.hasData && ev.data.length > 0) {
    try {
      message = parseMessage(ev.data);
    } catch {
      message = null;
    }
  }
  return {
    data: ev.hasData ? ev.data : "",
    message,
    ...(ev.retry !== undefined ? { retry: ev.retry } : {}),
    ...(ev.id !== undefined ? { upstreamId: ev.id } : {}),
  };
}

/**
 * Turns an upstream HTTP answer into an UpstreamReply. 202 → accepted; JSON → one parsed message;
 * SSE → lazy events; anything else (errors included) → passthrough, byte for byte.
 */
export async function replyFromResponse(res: EgressResponse): Promise<UpstreamReply> {
  const type = header(res, "content-type")?.split(";")[0]?.trim().toLowerCase();
  if (res.status === 202) {
    res.body.resume();
    return { kind: "accepted" };
  }
  if (res.status === 200 && type === "text/event-stream") {
    const body = res.body;
    return { kind: "stream", events: sseEvents(body), close: () => body.destroy() };
  }
  const buf = await readBody(res.body, MAX_UPSTREAM_BODY);
  if (res.status === 200 && type === "application/json") {
    const data = buf.toString("utf8");
    try {
      return { kind: "json", message: parseMessage(data), data };
    } catch (err) {
      throw new GatewayError("EDGE_UPSTREAM_BAD_RESPONSE", "The upstream answered with invalid JSON-RPC.", {
        cause: err,
      });
    }
  }
  return { kind: "passthrough", status: res.status, contentType: header(res, "content-type"), body: buf };
}
