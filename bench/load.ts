/**
 * Load generator for the end-to-end benchmark: a separate process so that its CPU is not charged to
 * the paths under test. N virtual clients share an undici Pool of N keep-alive connections; each
 * client holds its own MCP session (session era: initialize + notifications/initialized once) and
 * sends `tools/call echo` POSTs back to back: N calls in flight, one per connection.
 *
 *   node bench/load.ts --url http://127.0.0.1:4000/mcp --scenario session|stateless \
 *     --connections 16 --duration 3000 --warmup 1000 --trials 5 [--header "x-api-key: mcpe_..."]
 *
 * Protocol with the orchestrator (bench/e2e.ts), one line each way:
 *   stdout `READY`                  sessions are open and the warm-up is done
 *   stdin  `go`                     run one trial now (the orchestrator reads CPU counters first)
 *   stdout `RESULT {json}`          the trial's figures (see TrialResult)
 * After the last trial (or when stdin closes) the sessions are ended with DELETE and the process exits. Every answer is checked: HTTP 200, a JSON body or an SSE
 * stream carrying a JSON-RPC response with the request's id and a `result`; anything else counts
 * as an error and its latency is not recorded.
 */
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { Pool } from "undici";
import { Samples } from "./lib/stats.ts";

export interface TrialResult {
  requests: number;
  errors: number;
  /** First error message seen in the trial, for the report. */
  firstError?: string;
  elapsedMs: number;
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  meanMs: number;
  /** CPU of the load generator itself during the trial, µs per request (is it the bottleneck?). */
  loadgenCpuUsPerReq: number;
}

const SESSION_VERSION = "2025-11-25";
const STATELESS_VERSION = "2026-07-28";
const ACCEPT = "application/json, text/event-stream";

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    scenario: { type: "string", default: "session" },
    connections: { type: "string", default: "1" },
    duration: { type: "string", default: "3000" },
    warmup: { type: "string", default: "1000" },
    trials: { type: "string", default: "1" },
    text: { type: "string", default: "hello from the benchmark" },
    /** `name: value`, repeatable: sent with every request (e.g. `x-api-key: mcpe_...`). */
    header: { type: "string", multiple: true, default: [] },
  },
});
if (!values.url) throw new Error("--url is required");
const url = new URL(values.url);
const scenario = values.scenario as "session" | "stateless";
const connections = Number(values.connections);
const durationMs = Number(values.duration);
const warmupMs = Number(values.warmup);
const trials = Number(values.trials);

const extraHeaders: Record<string, string> = {};
for (const h of values.header) {
  const colon = h.indexOf(":");
  if (colon <= 0) throw new Error(`--header ${h}: expected "name: value"`);
  extraHeaders[h.slice(0, colon).trim().toLowerCase()] = h.slice(colon + 1).trim();
}

const pool = new Pool(url.origin, { connections, pipelining: 1, keepAliveTimeout: 120_000 });

/** The JSON-RPC message with id `id` in a JSON body or an SSE stream, or undefined. */
function findAnswer(contentType: string, text: string, id: number): Record<string, unknown> | undefined {
  if (contentType.startsWith("application/json")) {
    const m = JSON.parse(text) as Record<string, unknown>;
    return m.id === id ? m : undefined;
  }
  if (!contentType.startsWith("text/event-stream")) return undefined;
  // SSE (WHATWG HTML §9.2): events end at a blank line; `data:` lines of one event join with \n.
  for (const block of text.split(/\r?\n\r?\n/)) {
    let data = "";
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith("data:")) data += (data ? "\n" : "") + line.slice(line[5] === " " ? 6 : 5);
    }
    if (!data) continue;
    const m = JSON.parse(data) as Record<string, unknown>;
    if (m.id === id) return m;
  }
  return undefined;
}

class Client {
  #nextId = 1;
  #headers: Record<string, string> = { ...extraHeaders, "content-type": "application/json", accept: ACCEPT };
  readonly #callBody: (id: number) => string;
  readonly index: number;

  constructor(index: number) {
    this.index = index;
    const args = { text: values.text };
    if (scenario === "stateless") {
      const meta = {
        "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
      };
      this.#headers["mcp-protocol-version"] = STATELESS_VERSION;
      this.#headers["mcp-method"] = "tools/call";
      this.#headers["mcp-name"] = "echo";
      this.#callBody = (id) =>
        JSON.stringify({
          jsonrpc: "2.0",
          id,
          method: "tools/call",
          params: { name: "echo", arguments: args, _meta: meta },
        });
    } else {
      this.#callBody = (id) =>
        JSON.stringify({
          jsonrpc: "2.0",
          id,
          method: "tools/call",
          params: { name: "echo", arguments: args },
        });
    }
  }

  async #post(body: string, headers = this.#headers) {
    const res = await pool.request({ path: url.pathname, method: "POST", headers, body });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, text };
  }

  /** Session era: initialize, remember the session id and version, send notifications/initialized. */
  async open(): Promise<void> {
    if (scenario === "stateless") return;
    const id = 0;
    const body = JSON.stringify({
      jsonrpc: "2.0",
      id,
      method: "initialize",
      params: {
        protocolVersion: SESSION_VERSION,
        capabilities: {},
        clientInfo: { name: "mcp-edge-bench", version: "1.0.0" },
      },
    });
    let init = await this.#post(body);
    // A 503 (a store timing out) or a 408 (the edge too busy to read the request in time, e.g.
    // spawning a process per session) while every session opens at once is retried as a client
    // would, after a pause; the retries are reported on stderr.
    for (let attempt = 1; (init.status === 503 || init.status === 408) && attempt <= 5; attempt++) {
      initRetries++;
      await new Promise((r) => setTimeout(r, 100 * attempt));
      init = await this.#post(body);
    }
    const ct = String(init.headers["content-type"] ?? "");
    const answer = init.status === 200 ? findAnswer(ct, init.text, id) : undefined;
    const sid = init.headers["mcp-session-id"];
    const result = answer?.result as { protocolVersion?: string } | undefined;
    if (!result || typeof sid !== "string") {
      throw new Error(`client ${this.index}: initialize failed: ${init.status} ${init.text.slice(0, 300)}`);
    }
    this.#headers["mcp-session-id"] = sid;
    this.#headers["mcp-protocol-version"] = result.protocolVersion ?? SESSION_VERSION;
    const ack = await this.#post(JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }));
    if (ack.status !== 202) throw new Error(`client ${this.index}: initialized got ${ack.status}`);
  }

  /** Session era: ends the session (DELETE), as a well-behaved client does when it is done. */
  async close(): Promise<void> {
    if (scenario === "stateless") return;
    try {
      const res = await pool.request({ path: url.pathname, method: "DELETE", headers: this.#headers });
      await res.body.dump();
    } catch {
      // Best effort: the run is over.
    }
  }

  /** One tools/call; resolves to an error message, or undefined when the answer is right. */
  async call(): Promise<string | undefined> {
    const id = this.#nextId++;
    try {
      const r = await this.#post(this.#callBody(id));
      if (r.status !== 200) return `HTTP ${r.status}: ${r.text.slice(0, 200)}`;
      const answer = findAnswer(String(r.headers["content-type"] ?? ""), r.text, id);
      if (!answer) return `no answer with id ${id}: ${r.text.slice(0, 200)}`;
      if (!answer.result) return `error answer: ${JSON.stringify(answer.error).slice(0, 200)}`;
      return undefined;
    } catch (err) {
      return `${(err as Error).name}: ${(err as Error).message}`;
    }
  }
}

const samples = new Samples();
/** initialize calls answered 503 or 408 and retried while the sessions opened. */
let initRetries = 0;
const OPEN_AT_ONCE = 16;

/** Every client calls back to back until the deadline. */
async function run(clients: Client[], ms: number, record: boolean) {
  let errors = 0;
  let firstError: string | undefined;
  const deadline = performance.now() + ms;
  await Promise.all(
    clients.map(async (c) => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        const err = await c.call();
        const dt = performance.now() - t0;
        if (err === undefined) {
          if (record) samples.push(dt);
        } else {
          errors++;
          firstError ??= err;
        }
      }
    }),
  );
  return { errors, firstError };
}

async function main(): Promise<void> {
  const clients = Array.from({ length: connections }, (_, i) => new Client(i));
  // Sessions open at most OPEN_AT_ONCE at a time (a burst of 64 at once is a test of its own).
  let nextToOpen = 0;
  await Promise.all(
    Array.from({ length: Math.min(OPEN_AT_ONCE, clients.length) }, async () => {
      while (nextToOpen < clients.length) await (clients[nextToOpen++] as Client).open();
    }),
  );
  if (initRetries > 0)
    process.stderr.write(`load: ${initRetries} initialize calls got 503/408 and were retried\n`);
  await run(clients, warmupMs, false);
  process.stdout.write("READY\n");
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  for (let t = 0; t < trials; t++) {
    const next = await lines.next();
    if (next.done) break;
    samples.reset();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const { errors, firstError } = await run(clients, durationMs, true);
    const elapsedMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const [p50, p90, p99] = samples.percentiles([50, 90, 99]);
    const requests = samples.count;
    const result: TrialResult = {
      requests,
      errors,
      ...(firstError ? { firstError } : {}),
      elapsedMs,
      rps: (requests / elapsedMs) * 1000,
      p50Ms: p50 as number,
      p90Ms: p90 as number,
      p99Ms: p99 as number,
      meanMs: samples.mean(),
      loadgenCpuUsPerReq: requests ? (cpu.user + cpu.system) / requests : Number.NaN,
    };
    process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  }
  await Promise.all(clients.map((c) => c.close()));
  await pool.close();
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`load: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
