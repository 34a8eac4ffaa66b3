/**
 * The upstream transport contract (src/upstream/types.ts `Upstream`): Streamable HTTP, legacy
 * HTTP+SSE, and stdio (one process per session, or one shared process) all give the edge the same
 * request/stream shape, whatever the wire underneath (MCP transports: "Streamable HTTP", the
 * 2024-11-05 "HTTP with SSE", "stdio"). Against a real server each: open a session with
 * `initialize`, send a notification, list tools, call a tool, get a streamed answer with progress
 * notifications before the result, get an upstream error as a JSON-RPC error, close the session,
 * and stop without leaving a process behind.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import type { RpcMessage, RpcRequest } from "../../src/mcp/jsonrpc.ts";
import {
  type ForwardContext,
  type Upstream,
  type UpstreamReply,
  type UpstreamSession,
  UpstreamSessionLost,
} from "../../src/upstream/types.ts";

export interface TransportUnderTest {
  upstream: Upstream;
  /** A tool call and a text its result holds; a tool that reports progress when asked. */
  tool: { name: string; arguments: Record<string, unknown>; text: string };
  progressTool: { name: string; arguments: Record<string, unknown> };
  /** A substring of the command lines of the processes this upstream spawns (none: undefined). */
  spawns?: string;
  /** Stops what the transport talks to (servers started for the test). */
  close(): Promise<void>;
}

export const PROTOCOL_VERSION = "2025-06-18";

let seq = 0;
export function ctx(): ForwardContext {
  return {
    requestId: `req-${++seq}`,
    protocolVersion: PROTOCOL_VERSION,
    headers: {},
    signal: AbortSignal.timeout(15_000),
  };
}

/** Every JSON-RPC message of a reply, in order (a stream read to its end). */
export async function messagesOf(reply: UpstreamReply): Promise<RpcMessage[]> {
  switch (reply.kind) {
    case "accepted":
      return [];
    case "json":
      return [reply.message];
    case "passthrough":
      assert.fail(`upstream answered ${reply.status}: ${reply.body.toString("utf8")}`);
      break;
    case "stream": {
      const out: RpcMessage[] = [];
      for await (const ev of reply.events) {
        if (ev.message) out.push(ev.message);
        // A request's stream ends with its response; the GET stream is not read here.
        if (ev.message && "id" in ev.message && ("result" in ev.message || "error" in ev.message)) break;
      }
      reply.close();
      return out;
    }
  }
  return [];
}

function responseTo(messages: RpcMessage[], id: number): Record<string, unknown> {
  const r = messages.find((m) => "id" in m && m.id === id && ("result" in m || "error" in m));
  assert.ok(r, `a response to ${id} in ${JSON.stringify(messages)}`);
  return r as unknown as Record<string, unknown>;
}

async function call(
  session: UpstreamSession,
  id: number,
  method: string,
  params?: Record<string, unknown>,
): Promise<RpcMessage[]> {
  const msg = { jsonrpc: "2.0", id, method, ...(params ? { params } : {}) } as RpcRequest;
  return messagesOf(await session.post(JSON.stringify(msg), [msg], ctx()));
}

/** Pids of this process's live children whose command line contains `needle`. */
export function childrenMatching(needle: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) !== process.pid || fields[0] === "Z") continue;
      const cmd = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\u0000", " ");
      if (cmd.includes(needle)) out.push(Number(entry));
    } catch {
      // The process ended while being read.
    }
  }
  return out;
}

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function upstreamTransportContract(name: string, open: () => Promise<TransportUnderTest>): void {
  describe(`Upstream transport contract: ${name}`, () => {
    let t: TransportUnderTest;
    let session: UpstreamSession;
    before(async () => {
      t = await open();
      await t.upstream.start();
    });
    after(async () => {
      await t.upstream.stop().catch(() => undefined);
      await t.close();
    });

    test("initialize opens a session and answers with the server's result", async () => {
      assert.ok(t.upstream.ready());
      const init = {
        jsonrpc: "2.0",
        id: 0,
        method: "initialize",
        params: {
          protocolVersion: PROTOCOL_VERSION,
          capabilities: {},
          clientInfo: { name: "transport-contract", version: "1.0.0" },
        },
      } as RpcRequest;
      const outcome = await t.upstream.initialize(init, JSON.stringify(init), ctx());
      assert.ok(outcome.session, "a session");
      session = outcome.session;
      const result = responseTo(await messagesOf(outcome.reply), 0).result as Record<string, unknown>;
      assert.equal(typeof (result.serverInfo as { name?: unknown }).name, "string");
      assert.ok(result.capabilities && typeof result.capabilities === "object");
      assert.equal(typeof result.protocolVersion, "string");
      // The binding names where the session lives, so a stored record finds it again.
      assert.equal(typeof session.binding.instance, "string");
      const again = t.upstream.attach(session.binding, "key");
      assert.deepEqual(again.binding, session.binding);
    });

    test("a notification is accepted without an answer", async () => {
      const note = { jsonrpc: "2.0", method: "notifications/initialized" } as RpcMessage;
      const reply = await session.post(JSON.stringify(note), [note], ctx());
      assert.equal(reply.kind, "accepted");
    });

    test("tools/list lists the server's tools", async () => {
      const r = responseTo(await call(session, 1, "tools/list"), 1);
      const names = ((r.result as { tools: { name: string }[] }).tools ?? []).map((x) => x.name);
      assert.ok(names.includes(t.tool.name), `${t.tool.name} in ${names.join(", ")}`);
      assert.ok(names.includes(t.progressTool.name));
    });

    test("tools/call answers with the tool's result", async () => {
      const r = responseTo(
        await call(session, 2, "tools/call", { name: t.tool.name, arguments: t.tool.arguments }),
        2,
      );
      const content = (r.result as { content: { type: string; text?: string }[] }).content;
      assert.ok(
        content.some((c) => c.type === "text" && c.text?.includes(t.tool.text)),
        JSON.stringify(content),
      );
    });

    test("a streamed answer: progress notifications first, then the result", async () => {
      const messages = await call(session, 3, "tools/call", {
        name: t.progressTool.name,
        arguments: t.progressTool.arguments,
        _meta: { progressToken: "tok-3" },
      });
      const progress = messages.filter((m) => "method" in m && m.method === "notifications/progress");
      assert.ok(progress.length >= 2, `progress notifications: ${JSON.stringify(messages)}`);
      for (const p of progress)
        assert.equal((p as unknown as { params: { progressToken: unknown } }).params.progressToken, "tok-3");
      const last = messages.at(-1) as unknown as Record<string, unknown>;
      assert.equal(last.id, 3, "the result comes last");
      assert.ok("result" in last);
    });

    test("an upstream error is a JSON-RPC error answer", async () => {
      const r = responseTo(await call(session, 4, "no/such/method"), 4);
      const error = r.error as { code: number; message: string };
      assert.equal(error.code, -32601, JSON.stringify(error));
      assert.equal(typeof error.message, "string");
    });

    test("terminate closes the session: it is gone for the upstream", async () => {
      await session.terminate();
      let gone = false;
      try {
        const s = t.upstream.attach(session.binding, "key");
        const msg = { jsonrpc: "2.0", id: 5, method: "tools/list" } as RpcRequest;
        const reply = await s.post(JSON.stringify(msg), [msg], ctx());
        // Streamable HTTP: the server no longer knows the session id (404, MCP transports
        // "Session Management"); a message transport answers nothing any more.
        if (reply.kind === "passthrough") gone = reply.status === 404 || reply.status === 400;
      } catch (err) {
        gone = err instanceof UpstreamSessionLost || (err as { code?: string }).code !== undefined;
      }
      assert.ok(gone, "the terminated session cannot be used");
    });

    test("stop leaves no process behind", async () => {
      // A second session, open while stopping.
      const init = {
        jsonrpc: "2.0",
        id: 10,
        method: "initialize",
        params: {
          protocolVersion: PROTOCOL_VERSION,
          capabilities: {},
          clientInfo: { name: "c", version: "1" },
        },
      } as RpcRequest;
      const outcome = await t.upstream.initialize(init, JSON.stringify(init), ctx());
      assert.ok(outcome.session);
      await messagesOf(outcome.reply);
      if (t.spawns) assert.ok(childrenMatching(t.spawns).length >= 1, "a process runs before stop");
      await t.upstream.stop();
      if (t.spawns) {
        const needle = t.spawns;
        await until(() => childrenMatching(needle).length === 0, "every spawned process to exit");
      }
    });
  });
}
