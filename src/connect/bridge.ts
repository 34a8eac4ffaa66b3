/**
 * The stdio side of `mcp-edge connect`: newline-delimited JSON-RPC on stdin/stdout (MCP
 * basic/transports "stdio": messages are delimited by newlines and contain none), forwarded to the
 * remote server through the transport that fits the era it speaks.
 *
 * The bridge owns what the desktop client sees: every request gets exactly one answer (a response
 * that arrives twice, after a resumed stream, is dropped), a request whose answer was lost is
 * re-sent only when it is safe to repeat and otherwise answered with a JSON-RPC error that says so,
 * and nothing about the network (a dropped connection, a lost session, an expired token) makes the
 * bridge exit: it exits when stdin closes.
 */
import type { Readable } from "node:stream";
import {
  parseMessage,
  type RpcMessage,
  type RpcNotification,
  type RpcRequest,
  type RpcResponse,
} from "../mcp/jsonrpc.ts";
import type { Writer } from "../cli/args.ts";
import { LegacySseTransport } from "./legacy.ts";
import type { ConnectLog } from "./log.ts";
import {
  AnswerError,
  type AuthHook,
  bridgeError,
  type Exchange,
  isSafeToRepeat,
  LostError,
  type RetryPolicy,
} from "./remote.ts";
import { SessionEraTransport } from "./session-era.ts";
import { StatelessEraTransport } from "./stateless-era.ts";

export type EraChoice = "auto" | "2025" | "2026";

export interface BridgeOptions {
  url: URL;
  headers: Record<string, string>;
  era: EraChoice;
  auth: AuthHook;
  log: ConnectLog;
  retry: RetryPolicy;
  input: Readable;
  output: Writer;
}

interface Transport {
  request(ex: Exchange): Promise<void>;
  notify(msg: RpcNotification | RpcResponse): Promise<void>;
  close(): Promise<void>;
}

/** Times a request whose answer was lost is re-sent (only requests safe to repeat). */
const MAX_RESENDS = 3;

export class Bridge {
  readonly #o: BridgeOptions;
  #transport: Transport | undefined;
  #stateless: StatelessEraTransport | undefined;
  #ready: Promise<void> | undefined;
  readonly #pending = new Map<string, Exchange & { resolve: () => void }>();
  readonly #asks = new Map<string, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #askSeq = 0;
  #closing = false;
  readonly #work = new Set<Promise<unknown>>();

  constructor(options: BridgeOptions) {
    this.#o = options;
  }

  /** Runs until stdin ends; then closes the remote side. */
  async run(): Promise<void> {
    let buffered = "";
    try {
      for await (const chunk of this.#o.input) {
        buffered += typeof chunk === "string" ? chunk : (chunk as Buffer).toString("utf8");
        let nl: number;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, nl).replace(/\r$/, "");
          buffered = buffered.slice(nl + 1);
          if (line.trim() !== "") this.#onLine(line);
        }
      }
    } catch (err) {
      // stdin destroyed on a signal, or the client's end vanished: the same as an orderly close.
      this.#o.log.debug(`stdin ended: ${(err as Error).message}`);
    }
    await this.close();
  }

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    for (const a of this.#asks.values()) a.reject(new Error("the bridge is closing"));
    await this.#transport?.close();
  }

  #write(msg: RpcMessage): void {
    if (this.#closing) return;
    this.#o.output.write(`${JSON.stringify(msg)}\n`);
  }

  #track(p: Promise<unknown>): void {
    const q = p.catch((err: unknown) =>
      this.#o.log.error(`unexpected: ${(err as Error).stack ?? String(err)}`),
    );
    this.#work.add(q);
    void q.finally(() => this.#work.delete(q));
  }

  #onLine(line: string): void {
    let msg: RpcMessage;
    try {
      msg = parseMessage(line);
    } catch (err) {
      this.#o.log.warn(`ignored a malformed message from the client: ${(err as Error).message}`);
      this.#write({
        jsonrpc: "2.0",
        id: null,
        error: { code: -32700, message: "Parse error", data: { code: "EDGE_PARSE_ERROR" } },
      });
      return;
    }
    this.#o.log.debug(`client → ${"method" in msg ? msg.method : "response"}`);
    if ("method" in msg && "id" in msg) {
      if (msg.method === "initialize") this.#track(this.#initialize(msg));
      else this.#track(this.#request(msg));
    } else if ("method" in msg) {
      this.#track(this.#notify(msg));
    } else {
      const ask = msg.id !== undefined && msg.id !== null ? this.#asks.get(String(msg.id)) : undefined;
      if (ask) {
        this.#asks.delete(String(msg.id));
        if ("error" in msg) ask.reject(Object.assign(new Error(msg.error.message), { rpc: msg.error }));
        else ask.resolve(msg.result);
        return;
      }
      this.#track(this.#notify(msg));
    }
  }

  /** Picks the transport for the server's era, then answers the client's initialize. */
  async #initialize(msg: RpcRequest): Promise<void> {
    const ready = this.#connect(msg);
    this.#ready = ready.then(
      () => undefined,
      () => undefined,
    );
    try {
      const answer = await ready;
      this.#write(answer);
    } catch (err) {
      this.#answerError(msg, err);
    }
  }

  async #connect(msg: RpcRequest): Promise<RpcResponse> {
    await this.#transport?.close();
    this.#transport = undefined;
    this.#stateless = undefined;
    const { url, headers, auth, retry, log } = this.#o;
    const hooks = { deliver: (m: RpcMessage) => this.#fromServer(m), log };
    const params = (msg.params ?? {}) as Record<string, unknown>;
    if (this.#o.era !== "2025") {
      const stateless = new StatelessEraTransport({
        url,
        headers,
        auth,
        retry,
        hooks: { ...hooks, askClient: (m, p) => this.#askClient(m, p) },
      });
      const discovered = await stateless.discover(params["clientInfo"], params["capabilities"]);
      if (discovered || this.#o.era === "2026") {
        if (!discovered)
          throw bridgeError(
            "EDGE_CONNECT_NOT_INITIALIZED",
            "The server does not answer server/discover (2026-07-28).",
          );
        log.info(`connected to ${url.href} (protocol 2026-07-28, stateless)`);
        this.#transport = stateless;
        this.#stateless = stateless;
        return { jsonrpc: "2.0", id: msg.id, result: stateless.initializeResult(msg) };
      }
    }
    const session = new SessionEraTransport({ url, headers, auth, retry, hooks });
    try {
      const answer = await session.initialize(msg);
      this.#transport = session;
      log.info(`connected to ${url.href} (Streamable HTTP${session.sessionId ? ", session" : ""})`);
      return answer;
    } catch (err) {
      const fallback =
        err instanceof AnswerError && (err.rpc.data as { fallback?: boolean } | undefined)?.fallback;
      if (!fallback) throw err;
      log.info("the server refused the Streamable HTTP initialize: trying legacy HTTP+SSE");
      const legacy = new LegacySseTransport({ url, headers, auth, retry, hooks });
      try {
        const answer = await legacy.initialize(msg);
        this.#transport = legacy;
        log.info(`connected to ${url.href} (legacy HTTP+SSE)`);
        return answer;
      } catch (legacyErr) {
        await legacy.close();
        log.debug(`legacy HTTP+SSE failed too: ${(legacyErr as Error).message}`);
        throw err;
      }
    }
  }

  async #transportReady(): Promise<Transport | undefined> {
    if (this.#ready) await this.#ready;
    return this.#transport;
  }

  async #request(msg: RpcRequest): Promise<void> {
    const key = JSON.stringify(msg.id);
    let resolve!: () => void;
    const done = new Promise<void>((r) => {
      resolve = r;
    });
    const ex = { msg, key, answered: false, done, resolve };
    this.#pending.set(key, ex);
    try {
      const transport = await this.#transportReady();
      if (!transport) {
        throw bridgeError(
          "EDGE_CONNECT_NOT_INITIALIZED",
          "Not connected: the client must send initialize first.",
        );
      }
      if (this.#stateless) {
        // Session-era methods with no 2026-07-28 counterpart are answered here.
        if (msg.method === "ping") return this.#answer(ex, {});
        if (msg.method === "logging/setLevel") {
          const level = (msg.params as { level?: unknown } | undefined)?.level;
          if (typeof level === "string") this.#stateless.setLogLevel(level);
          return this.#answer(ex, {});
        }
      }
      for (let attempt = 0; ; attempt++) {
        try {
          await transport.request(ex);
          return;
        } catch (err) {
          if (ex.answered) return;
          if (!(err instanceof LostError)) throw err;
          if (isSafeToRepeat(msg.method) && attempt < MAX_RESENDS) {
            this.#o.log.info(`the answer to ${msg.method} was lost (${err.message}); re-sending it`);
            continue;
          }
          this.#o.log.warn(`the answer to ${msg.method} was lost (${err.message}); not re-sent`);
          throw bridgeError(
            "EDGE_CONNECT_LOST_IN_FLIGHT",
            `The connection to the server was lost while ${msg.method} was running (${err.message}). It was not re-sent: it may or may not have taken effect.`,
            { method: msg.method },
          );
        }
      }
    } catch (err) {
      if (!ex.answered) this.#answerError(msg, err);
    } finally {
      this.#pending.delete(key);
    }
  }

  #answer(ex: Exchange & { resolve: () => void }, result: unknown): void {
    ex.answered = true;
    this.#write({ jsonrpc: "2.0", id: ex.msg.id, result });
    ex.resolve();
  }

  #answerError(msg: RpcRequest, err: unknown): void {
    const ex = this.#pending.get(JSON.stringify(msg.id));
    if (ex) {
      ex.answered = true;
      ex.resolve();
    }
    const rpc =
      err instanceof AnswerError
        ? err.rpc
        : {
            code: -32603,
            message: `mcp-edge connect: ${(err as Error).message ?? String(err)}`,
            data: { code: "EDGE_INTERNAL" },
          };
    if (!(err instanceof AnswerError)) this.#o.log.error((err as Error).stack ?? String(err));
    // The fallback marker is internal.
    const data = rpc.data as Record<string, unknown> | undefined;
    if (data && "fallback" in data) {
      const { fallback: _f, ...rest } = data;
      this.#write({ jsonrpc: "2.0", id: msg.id, error: { ...rpc, data: rest } });
      return;
    }
    this.#write({ jsonrpc: "2.0", id: msg.id, error: rpc });
  }

  async #notify(msg: RpcNotification | RpcResponse): Promise<void> {
    const transport = await this.#transportReady();
    if (!transport) return;
    await transport.notify(msg);
  }

  /** Routes a server message: answers to their request (once), everything else to the client. */
  #fromServer(msg: RpcMessage): void {
    if (!("method" in msg)) {
      const id = (msg as RpcResponse).id;
      const ex = id === undefined || id === null ? undefined : this.#pending.get(JSON.stringify(id));
      if (!ex || ex.answered) {
        this.#o.log.debug(`dropped an answer for no waiting request (${JSON.stringify(id)})`);
        return;
      }
      ex.answered = true;
      this.#write(msg);
      ex.resolve();
      return;
    }
    this.#o.log.debug(`server → ${msg.method}`);
    this.#write(msg);
  }

  /** A request from the bridge to the desktop client (2026-07-28 input requests). */
  #askClient(method: string, params: unknown): Promise<unknown> {
    const id = `mcp-edge-connect:ask:${++this.#askSeq}`;
    return new Promise((resolve, reject) => {
      this.#asks.set(id, { resolve, reject });
      this.#write({ jsonrpc: "2.0", id, method, params: params as Record<string, unknown> });
    });
  }
}
