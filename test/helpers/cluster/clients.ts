/**
 * Clients of the cluster tests: SDK v1 clients with an API key, and raw session-era requests
 * (initialize, a `where` call, an SSE reader) for what the SDK hides; the audit rows of a tool.
 */
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Client as PgClient } from "pg";
import { POSTGRES_URL } from "../postgres.ts";
import type { Where } from "./upstream-fleet.ts";

export interface SdkClient {
  client: Client;
  transport: StreamableHTTPClientTransport;
  /** Errors the transport reported (stream disconnects, failed reconnects...). */
  errors: Error[];
}

/** An SDK v1 client with an API key in the Authorization header; quick stream reconnection. */
export async function connectSdk(url: string, key: string, name = "cluster-test"): Promise<SdkClient> {
  const client = new Client({ name, version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { authorization: `Bearer ${key}` } },
    reconnectionOptions: {
      initialReconnectionDelay: 50,
      maxReconnectionDelay: 500,
      reconnectionDelayGrowFactor: 1.5,
      maxRetries: 10,
    },
  });
  const errors: Error[] = [];
  await client.connect(transport);
  // After connect: the Client installs its own onerror; chain it.
  const prev = transport.onerror;
  transport.onerror = (e) => {
    errors.push(e);
    prev?.(e);
  };
  return { client, transport, errors };
}

/** The `Where` of a tool result. */
export function whereOf(r: unknown): Where {
  const content = (r as { content?: { type: string; text?: string }[] }).content ?? [];
  const text = content[0]?.text;
  assert.ok(text, `a text result, got ${JSON.stringify(r)}`);
  return JSON.parse(text) as Where;
}

export const JSON_SSE = { "content-type": "application/json", accept: "application/json, text/event-stream" };

/** A raw session-era session (initialize + initialized) through `url`; returns its id. */
export async function rawSession(url: string, key: string): Promise<string> {
  const init = await fetch(url, {
    method: "POST",
    headers: { ...JSON_SSE, authorization: `Bearer ${key}` },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "1" } },
    }),
  });
  const text = await init.text();
  assert.equal(init.status, 200, text);
  const sid = init.headers.get("mcp-session-id");
  assert.ok(sid, "initialize answers with Mcp-Session-Id");
  const ack = await fetch(url, {
    method: "POST",
    headers: sessionHeaders(key, sid),
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  });
  await ack.arrayBuffer();
  assert.equal(ack.status, 202);
  return sid;
}

export function sessionHeaders(key: string, sid: string): Record<string, string> {
  return {
    ...JSON_SSE,
    authorization: `Bearer ${key}`,
    "mcp-session-id": sid,
    "mcp-protocol-version": "2025-11-25",
  };
}

/** A raw `tools/call where` POST on a session (no SDK client): the answer as fetch gives it. */
export function postWhere(url: string, key: string, sid: string, id: number): Promise<Response> {
  return postTool(url, key, sid, id, "where");
}

/** A raw `tools/call` of `tool` (no arguments) on a session. */
export function postTool(
  url: string,
  key: string,
  sid: string,
  id: number,
  tool: string,
  signal?: AbortSignal,
): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: sessionHeaders(key, sid),
    body: JSON.stringify({ jsonrpc: "2.0", id, method: "tools/call", params: { name: tool, arguments: {} } }),
    ...(signal ? { signal } : {}),
  });
}

export interface SseEvent {
  id?: string;
  data: string;
  retry?: number;
}

/** Minimal SSE reader over a fetch body: one {id, data, retry} per event. */
export async function* sse(body: AsyncIterable<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of body) {
    buf += decoder.decode(chunk, { stream: true }).replace(/\r\n/g, "\n");
    let idx = buf.indexOf("\n\n");
    while (idx >= 0) {
      const block = buf.slice(0, idx);
      buf = buf.slice(idx + 2);
      let id: string | undefined;
      let retry: number | undefined;
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("id:")) id = line.slice(3).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        else if (line.startsWith("retry:")) retry = Number(line.slice(6).trim());
      }
      if (data.length > 0 || id !== undefined || retry !== undefined)
        yield {
          ...(id !== undefined ? { id } : {}),
          ...(retry !== undefined ? { retry } : {}),
          data: data.join("\n"),
        };
      idx = buf.indexOf("\n\n");
    }
  }
}

/** Rows of the audit table (tools/call records of `tool`), by outcome kind. */
export async function auditCalls(
  schema: string,
  tool: string,
): Promise<{ total: number; results: number; byDecision: Record<string, number> }> {
  const pg = new PgClient({ connectionString: POSTGRES_URL });
  await pg.connect();
  try {
    const { rows } = await pg.query<{ decision: string; kind: string | null; n: string }>(
      `SELECT record::jsonb->>'decision' AS decision, record::jsonb->'outcome'->>'kind' AS kind, count(*) AS n
         FROM "${schema}".audit WHERE type = 'call' AND target = $1 GROUP BY 1, 2`,
      [tool],
    );
    let total = 0;
    let results = 0;
    const byDecision: Record<string, number> = {};
    for (const r of rows) {
      const n = Number(r.n);
      total += n;
      if (r.kind === "result") results += n;
      const k = `${r.decision}/${r.kind}`;
      byDecision[k] = (byDecision[k] ?? 0) + n;
    }
    return { total, results, byDecision };
  } finally {
    await pg.end();
  }
}
