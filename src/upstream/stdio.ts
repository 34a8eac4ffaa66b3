import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import type { StdioConfig, UpstreamConfig } from "../config/schema.ts";
import type { EgressProxy, EgressSink, ProxyCredential, ServerEgress } from "../egress/proxy.ts";
import { GatewayError } from "../errors/errors.ts";
import { parseMessage, type RpcMessage, type RpcRequest } from "../mcp/jsonrpc.ts";
import type { Logger } from "../observability/logger.ts";
import type { UpstreamBinding } from "../store/types.ts";
import { ChannelSession, type MessageChannel, type Oversized, oversized } from "./channel.ts";
import { frameMessage } from "./framing.ts";
import { DEFAULT_MAX_RESULT_BYTES } from "./reply.ts";
import { SharedChannel } from "./shared.ts";
import {
  type ForwardContext,
  type InitializeOutcome,
  type InstanceHealth,
  type Upstream,
  type UpstreamReply,
  type UpstreamSession,
  UpstreamSessionLost,
} from "./types.ts";

/**
 * The child's environment: the allow-listed variables of the edge's own, plus the configured ones,
 * plus the egress proxy's variables (last: a configured or inherited HTTP_PROXY cannot route the
 * child around the edge's proxy).
 */
export function childEnv(
  cfg: StdioConfig,
  parent: NodeJS.ProcessEnv,
  proxy: Readonly<Record<string, string>> = {},
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of cfg.inheritEnv) {
    const v = parent[name];
    if (v !== undefined) env[name] = v;
  }
  return { ...env, ...cfg.env, ...proxy };
}

/**
 * Splits a byte stream into lines at LF (a CR before it is dropped), decoding each line as UTF-8:
 * the framing of MCP stdio, where a message must not contain an embedded newline. A line longer
 * than `max` bytes is dropped whole, never buffered without bound; at its end `onTooLong` gets its
 * first and last OVERSIZE_EDGE bytes (where a JSON-RPC envelope keeps its `id`).
 */
export class LfLines {
  readonly #max: number;
  readonly #onTooLong: (head: string, tail: string) => void;
  #parts: Buffer[] = [];
  #size = 0;
  #skipping = false;
  #head = "";
  #tail: Buffer = Buffer.alloc(0);
  #onLine: (line: string) => void = () => {};

  constructor(max: number, onTooLong: (head: string, tail: string) => void) {
    this.#max = max;
    this.#onTooLong = onTooLong;
  }

  on(_event: "line", cb: (line: string) => void): void {
    this.#onLine = cb;
  }

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const lf = chunk.indexOf(0x0a, start);
      const end = lf < 0 ? chunk.length : lf;
      if (!this.#skipping) {
        this.#size += end - start;
        if (end > start) this.#parts.push(chunk.subarray(start, end));
        if (this.#size > this.#max) {
          const all = Buffer.concat(this.#parts);
          this.#head = all.subarray(0, OVERSIZE_EDGE).toString("utf8");
          this.#tail = Buffer.from(all.subarray(-OVERSIZE_EDGE));
          this.#parts = [];
          this.#skipping = true;
        }
      } else if (end > start) {
        const piece = chunk.subarray(Math.max(start, end - OVERSIZE_EDGE), end);
        const kept = this.#tail.subarray(Math.max(0, this.#tail.length + piece.length - OVERSIZE_EDGE));
        this.#tail = Buffer.concat([kept, piece]);
      }
      if (lf < 0) return;
      if (this.#skipping) {
        const tail = this.#tail.toString("utf8");
        this.#tail = Buffer.alloc(0);
        this.#onTooLong(this.#head, tail.endsWith("\r") ? tail.slice(0, -1) : tail);
      } else {
        let line = Buffer.concat(this.#parts).toString("utf8");
        if (line.endsWith("\r")) line = line.slice(0, -1);
        this.#onLine(line);
      }
      this.#parts = [];
      this.#size = 0;
      this.#skipping = false;
      start = lf + 1;
    }
  }
}

/** Bytes kept from each end of a line over the maximum. */
const OVERSIZE_EDGE = 4096;

/** What a stdio upstream needs to give its processes the egress proxy (src/egress/proxy.ts). */
export interface StdioEgress {
  proxy: EgressProxy;
  server: string;
  rules: ServerEgress;
}

/** A spawned MCP server speaking newline-delimited JSON-RPC on stdin/stdout. */
export class StdioChannel implements MessageChannel {
  readonly #child: ChildProcessWithoutNullStreams;
  #onMessage: (msg: RpcMessage, text: string) => void = () => {};
  #onOversized: (dropped: Oversized) => void = () => {};
  readonly #onClose: ((reason: string) => void)[] = [];
  #closed = false;

  constructor(
    cfg: StdioConfig,
    log: Logger,
    credential?: ProxyCredential,
    maxResultBytes = DEFAULT_MAX_RESULT_BYTES,
  ) {
    this.#child = spawn(cfg.command, cfg.args, {
      cwd: cfg.cwd,
      env: childEnv(cfg, process.env, credential?.env),
      stdio: ["pipe", "pipe", "pipe"],
    });
    const pid = this.#child.pid;
    // Lines end at LF only (MCP stdio: newline-delimited), never at U+2028/U+2029 as readline's
    // do: a server may write those raw inside a JSON string (JSON.stringify does).
    const stdout = new LfLines(maxResultBytes, (head, tail) => {
      log.warn(
        { pid, limit: maxResultBytes },
        "stdio upstream wrote a line over limits.maxResultBytes; dropped (its call gets EDGE_RESULT_TOO_LARGE)",
      );
      this.#onOversized(oversized(head, tail, maxResultBytes));
    });
    this.#child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    stdout.on("line", (line) => {
      if (line.trim() === "") return;
      let msg: RpcMessage;
      try {
        msg = parseMessage(line);
      } catch {
        log.warn({ pid, line: line.slice(0, 200) }, "stdio upstream wrote a line that is not JSON-RPC");
        return;
      }
      this.#onMessage(msg, line);
    });
    // The server's stderr is its log: one edge log line per line, never on the MCP channel.
    createInterface({ input: this.#child.stderr }).on("line", (line) => {
      log.info({ pid, stderr: line.slice(0, 2000) }, "stdio upstream stderr");
    });
    this.#child.stdin.on("error", () => {}); // EPIPE after the child exits: reported by 'exit'
    this.#child.on("error", (err) => this.#finish(`spawn failed: ${err.message}`));
    this.#child.on("exit", (code, signal) => this.#finish(`exited (${signal ?? code})`));
    // The process's egress credential dies with it.
    if (credential) this.onClose(() => credential.revoke());
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #finish(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const cb of this.#onClose) cb(reason);
  }

  /** One line per message, whatever whitespace the client used (framing.ts). */
  send(msg: RpcMessage): void {
    if (this.#closed) throw new GatewayError("EDGE_UPSTREAM_ERROR", "The upstream process has exited.");
    this.#child.stdin.write(`${frameMessage(msg)}\n`);
  }

  onMessage(cb: (msg: RpcMessage, text: string) => void): void {
    this.#onMessage = cb;
  }

  onClose(cb: (reason: string) => void): void {
    this.#onClose.push(cb);
  }

  onOversized(cb: (dropped: Oversized) => void): void {
    this.#onOversized = cb;
  }

  /** Closes stdin (the MCP stdio shutdown), then SIGTERM, then SIGKILL (MCP lifecycle, stdio). */
  async close(): Promise<void> {
    if (this.#closed) return;
    const exited = new Promise<void>((resolve) => this.onClose(() => resolve()));
    this.#child.stdin.end();
    const term = setTimeout(() => this.#child.kill("SIGTERM"), 2000);
    const kill = setTimeout(() => this.#child.kill("SIGKILL"), 4000);
    await exited;
    clearTimeout(term);
    clearTimeout(kill);
  }
}

/**
 * stdio upstream. `session` mode spawns one process per MCP session (full isolation; the process
 * ends with the session); `shared` mode multiplexes every session over one process (see shared.ts).
 * A process that dies takes its sessions' state with it: the route's onBackendLoss policy then
 * re-initializes on a new process or expires them.
 */
/**
 * The edge-wide cap on live `mode: session` processes (`limits.maxStdioProcesses`), over every
 * stdio server: each server's own cap bounds it, this bounds them together.
 */
export class ProcessBudget {
  readonly max: number;
  readonly #members = new Set<{ liveProcesses(): number }>();

  constructor(max: number) {
    this.max = max;
  }

  join(m: { liveProcesses(): number }): void {
    this.#members.add(m);
  }

  leave(m: { liveProcesses(): number }): void {
    this.#members.delete(m);
  }

  live(): number {
    let n = 0;
    for (const m of this.#members) n += m.liveProcesses();
    return n;
  }
}

export class StdioUpstream implements Upstream {
  readonly kind = "stdio" as const;
  readonly #cfg: StdioConfig;
  readonly #log: Logger;
  readonly #sessions = new Map<string, ChannelSession>();
  readonly #shared: SharedChannel | undefined;
  readonly #egress: StdioEgress | undefined;
  readonly #maxResult: number;
  /** `mode: session`: each process's principal and last use (the caps and the idle reaper). */
  readonly #owners = new Map<string, { principal: string; usedAt: number }>();
  readonly #budget: ProcessBudget | undefined;
  #reaper: NodeJS.Timeout | undefined;

  constructor(
    cfg: UpstreamConfig,
    log: Logger,
    egress?: StdioEgress,
    maxResultBytes = DEFAULT_MAX_RESULT_BYTES,
    budget?: ProcessBudget,
  ) {
    this.#cfg = cfg.stdio as StdioConfig;
    this.#budget = budget;
    this.#log = log;
    this.#egress = egress;
    this.#maxResult = maxResultBytes;
    if (this.#cfg.mode === "shared") {
      // Egress proxy: one credential per shared process, so its outbound requests are attributed to
      // the route only (many sessions and tenants share it; nothing says which caused a request).
      const spawnShared = () => {
        const credential = egress?.proxy.mint(
          { server: egress.server, tenant: null, session: null },
          egress.rules,
          () => [],
        );
        return new StdioChannel(this.#cfg, log, credential, maxResultBytes);
      };
      this.#shared = new SharedChannel(spawnShared, this.#cfg.restartBackoff, log);
    }
  }

  async start(): Promise<void> {
    this.#shared?.start();
    if (this.#shared) return;
    this.#budget?.join(this);
    const idle = this.#cfg.idleTimeout;
    this.#reaper = setInterval(() => this.#reap(Date.now()), Math.max(1000, Math.min(30_000, idle / 4)));
    this.#reaper.unref();
  }

  /**
   * Stops processes with no call for `idleTimeout`. Their sessions stay: the next call finds the
   * process gone and `sessions.onBackendLoss` re-initializes on a new one (or expires the session).
   */
  #reap(now: number): void {
    for (const [instance, owner] of this.#owners) {
      const s = this.#sessions.get(instance);
      if (!s || s.busy || now - owner.usedAt < this.#cfg.idleTimeout) continue;
      this.#log.info({ instance, idleMs: now - owner.usedAt }, "stdio process idle: stopped");
      void s.terminate();
    }
  }

  /** Live `mode: session` processes of this server. */
  liveProcesses(): number {
    return this.#sessions.size;
  }

  /** 503 EDGE_PROCESS_LIMIT when a new process would pass the edge's, the server's or the principal's cap. */
  #checkCaps(principal: string): void {
    if (this.#budget && this.#budget.live() >= this.#budget.max)
      throw new GatewayError(
        "EDGE_PROCESS_LIMIT",
        `This gateway runs ${this.#budget.max} stdio processes at most over all its servers (limits.maxStdioProcesses); retry later.`,
      );
    const max = this.#cfg.maxProcesses;
    if (this.#sessions.size >= max)
      throw new GatewayError(
        "EDGE_PROCESS_LIMIT",
        `This server runs its ${max} processes at most (upstream.stdio.maxProcesses); retry later.`,
      );
    const per = this.#cfg.maxProcessesPerPrincipal;
    let mine = 0;
    for (const o of this.#owners.values()) if (o.principal === principal) mine++;
    if (mine >= per)
      throw new GatewayError(
        "EDGE_PROCESS_LIMIT",
        `You hold ${per} processes of this server at most (upstream.stdio.maxProcessesPerPrincipal): end a session or retry later.`,
      );
  }

  async stop(): Promise<void> {
    this.#budget?.leave(this);
    if (this.#reaper) clearInterval(this.#reaper);
    await Promise.allSettled([...this.#sessions.values()].map((s) => s.terminate()));
    this.#sessions.clear();
    await this.#shared?.stop();
  }

  health(): InstanceHealth[] {
    if (this.#shared)
      return [{ id: "stdio:shared", healthy: this.#shared.up, sessions: this.#shared.sessions, inflight: 0 }];
    return [{ id: "stdio", healthy: true, sessions: this.#sessions.size, inflight: 0 }];
  }

  ready(): boolean {
    return this.#shared ? this.#shared.up : true;
  }

  async initialize(request: RpcRequest, body: string, ctx: ForwardContext): Promise<InitializeOutcome> {
    if (this.#shared) return this.#shared.initialize(request, ctx);
    const principal = ctx.principal ?? "";
    this.#checkCaps(principal);
    const instance = `stdio:${randomBytes(9).toString("base64url")}`;
    // Egress proxy: a credential for this process, naming its server, tenant and session; its
    // requests are attributed to the calls in flight on the session at the time.
    // (The callback runs on a later proxy request, after `session` below is assigned.)
    const e = this.#egress;
    const credential = e?.proxy.mint(
      { server: e.server, tenant: ctx.tenant ?? null, session: instance },
      e.rules,
      (): EgressSink[] => session.egressSinks(),
    );
    const channel = new StdioChannel(this.#cfg, this.#log, credential, this.#maxResult);
    const session = new ChannelSession({ instance, sessionId: null }, channel, () => {
      this.#sessions.delete(instance);
      this.#owners.delete(instance);
    });
    this.#sessions.set(instance, session);
    this.#owners.set(instance, { principal, usedAt: Date.now() });
    const reply = await session.post(body, [request], ctx);
    return { session, reply };
  }

  attach(binding: UpstreamBinding): UpstreamSession {
    if (this.#shared) return this.#shared.attach(binding);
    const s = this.#sessions.get(binding.instance);
    if (!s || s.lost) throw new UpstreamSessionLost("the session's process is gone");
    const owner = this.#owners.get(binding.instance);
    if (owner) owner.usedAt = Date.now();
    return s;
  }

  async stateless(_body: string, _messages: RpcMessage[], _ctx: ForwardContext): Promise<UpstreamReply> {
    // A stdio server speaks whatever its SDK speaks; the edge does not translate 2026-07-28
    // requests into a session. Answer as a session-era server would (see docs/lifecycle.md).
    throw new GatewayError(
      "EDGE_SESSION_REQUIRED",
      "This server speaks the session era: send initialize first.",
    );
  }
}
