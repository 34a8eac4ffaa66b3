/**
 * Toward a server of the stateless era (MCP 2026-07-28, basic/transports/streamable-http): POST
 * only, no session, no `initialize`. Desktop clients still speak the session era over stdio, so
 * the bridge translates:
 *
 * - the client's `initialize` is answered by the bridge from the server's `server/discover` result
 *   (capabilities, instructions, server info); `notifications/initialized` and `ping` stay local;
 *   `logging/setLevel` is kept and sent as the `_meta` log level of later requests;
 * - every request carries the `_meta` envelope (protocol version, client info, client
 *   capabilities) and the `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers;
 * - an `input_required` result (multi round-trip requests) becomes server→client requests to the
 *   desktop client (sampling, elicitation, roots), whose answers go back as `inputResponses`
 *   with the `requestState`, until the result is complete;
 * - `notifications/cancelled` from the client closes the request's stream (closing the stream is
 *   the cancellation in this era).
 *
 * There is no resumption in this era: a stream that breaks loses the answer. The bridge re-sends
 * a request that is safe to repeat (a new JSON-RPC id, as the spec says) and answers a
 * `tools/call` with an error.
 */
import { encodeHeaderValue, META_PROTOCOL_VERSION } from "../mcp/era.ts";
import { parseMessage, type RpcMessage, type RpcNotification, type RpcRequest } from "../mcp/jsonrpc.ts";
import { discard, header, type HttpResponse, readText, send } from "./http.ts";
import {
  type AuthHook,
  backoff,
  bridgeError,
  delay,
  type Exchange,
  httpError,
  isConnectFailure,
  LostError,
  type RetryPolicy,
  rpcErrorOf,
  sseEvents,
  type TransportHooks,
} from "./remote.ts";
import { retryAfterMs, unreachable } from "./session-era.ts";

export const STATELESS_VERSION = "2026-07-28";
/** An HTTP header-name token (RFC 9110 §5.1), non-empty. */
const HEADER_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo";
const META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities";
const META_LOG_LEVEL = "io.modelcontextprotocol/logLevel";
const META_SERVER_INFO = "io.modelcontextprotocol/serverInfo";

export interface StatelessOptions {
  url: URL;
  headers: Record<string, string>;
  auth: AuthHook;
  hooks: TransportHooks & {
    /** Sends a request to the desktop client and resolves with its result (or rejects with its error). */
    askClient(method: string, params: unknown): Promise<unknown>;
  };
  retry: RetryPolicy;
}

export interface Discovery {
  supportedVersions: string[];
  capabilities: Record<string, unknown>;
  instructions?: string;
  serverInfo?: unknown;
}

/** Requests whose `Mcp-Name` header mirrors a body field (2026-07-28 "Request Metadata"). */
function nameOf(msg: RpcRequest): string | undefined {
  const p = msg.params as Record<string, unknown> | undefined;
  if (!p || Array.isArray(p)) return undefined;
  if (msg.method === "tools/call" || msg.method === "prompts/get")
    return typeof p["name"] === "string" ? p["name"] : undefined;
  if (msg.method === "resources/read") return typeof p["uri"] === "string" ? p["uri"] : undefined;
  return undefined;
}

export class StatelessEraTransport {
  readonly #o: StatelessOptions;
  readonly #closed = new AbortController();
  #clientInfo: unknown = { name: "mcp-edge-connect", version: "0" };
  #clientCapabilities: unknown = {};
  #logLevel: string | undefined;
  #discovery: Discovery | undefined;
  readonly #inflight = new Map<string, AbortController>();
  /** Per tool: `x-mcp-header` name → the input property it mirrors. */
  readonly #toolHeaders = new Map<string, Map<string, string>>();
  #roundSeq = 0;

  constructor(options: StatelessOptions) {
    this.#o = options;
  }

  /**
   * `server/discover` (2026-07-28 "Discovery"). Resolves with the result when the server speaks the
   * stateless era, undefined when it does not (any non-2xx, or a result that is not a discover
   * result: the caller falls back to the session era).
   */
  async discover(clientInfo?: unknown, clientCapabilities?: unknown): Promise<Discovery | undefined> {
    if (clientInfo !== undefined) this.#clientInfo = clientInfo;
    if (clientCapabilities !== undefined) this.#clientCapabilities = clientCapabilities;
    const msg: RpcRequest = {
      jsonrpc: "2.0",
      id: "mcp-edge-connect:discover",
      method: "server/discover",
      params: { _meta: this.#envelope() },
    };
    let res: HttpResponse | undefined;
    // A 2026 server may refuse the first version with UnsupportedProtocolVersion (-32022) and list
    // what it supports (2026-07-28 "Version Negotiation"): asked again once when ours is listed.
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        res = await this.#post(msg);
      } catch (err) {
        if (isConnectFailure(err)) throw unreachable(this.#o.url, err);
        throw err;
      }
      if (res.status === 200) break;
      const text = await readText(res).catch(() => "");
      const rpc = rpcErrorOf(text);
      const supported = (rpc?.data as { supported?: unknown } | undefined)?.supported;
      if (
        rpc?.code === -32022 &&
        Array.isArray(supported) &&
        supported.includes(STATELESS_VERSION) &&
        attempt === 0
      ) {
        this.#o.hooks.log.debug(
          "the server asked for another protocol version; asking again with 2026-07-28",
        );
        continue;
      }
      return undefined;
    }
    if (!res || res.status !== 200) return undefined;
    const answer = await this.#readAnswer(res, msg.id);
    const result = answer && "result" in answer ? (answer.result as Record<string, unknown>) : undefined;
    const versions = result?.["supportedVersions"];
    if (!Array.isArray(versions) || !versions.includes(STATELESS_VERSION)) return undefined;
    const meta = result?.["_meta"] as Record<string, unknown> | undefined;
    this.#discovery = {
      supportedVersions: versions as string[],
      capabilities: (result?.["capabilities"] as Record<string, unknown>) ?? {},
      ...(typeof result?.["instructions"] === "string" ? { instructions: result["instructions"] } : {}),
      ...(result?.["serverInfo"] !== undefined
        ? { serverInfo: result["serverInfo"] }
        : meta?.[META_SERVER_INFO] !== undefined
          ? { serverInfo: meta[META_SERVER_INFO] }
          : {}),
    };
    return this.#discovery;
  }

  /** The bridge's own answer to the client's initialize, from the discover result. */
  initializeResult(msg: RpcRequest): unknown {
    const p = (msg.params ?? {}) as Record<string, unknown>;
    if (p["clientInfo"] !== undefined) this.#clientInfo = p["clientInfo"];
    if (p["capabilities"] !== undefined) this.#clientCapabilities = p["capabilities"];
    const asked = typeof p["protocolVersion"] === "string" ? p["protocolVersion"] : "2025-11-25";
    const d = this.#discovery;
    // The stdio side keeps the session-era version the client asked for: it is what the client speaks.
    const version = /^20(24|25)-\d\d-\d\d$/.test(asked) ? asked : "2025-11-25";
    const capabilities: Record<string, unknown> = { ...(d?.capabilities ?? {}) };
    // Logging is a 2026 `_meta` level; the bridge accepts `logging/setLevel` for it.
    capabilities["logging"] ??= {};
    return {
      protocolVersion: version,
      capabilities,
      serverInfo: d?.serverInfo ?? { name: this.#o.url.host, version: "unknown" },
      ...(d?.instructions !== undefined ? { instructions: d.instructions } : {}),
    };
  }

  setLogLevel(level: string): void {
    this.#logLevel = level;
  }

  #envelope(): Record<string, unknown> {
    return {
      [META_PROTOCOL_VERSION]: STATELESS_VERSION,
      [META_CLIENT_INFO]: this.#clientInfo,
      [META_CLIENT_CAPABILITIES]: this.#clientCapabilities,
      ...(this.#logLevel !== undefined ? { [META_LOG_LEVEL]: this.#logLevel } : {}),
    };
  }

  /** Adds the `_meta` envelope to a client message's params. */
  #withEnvelope<M extends RpcRequest | RpcNotification>(msg: M, extra: Record<string, unknown> = {}): M {
    const params = (msg.params && !Array.isArray(msg.params) ? msg.params : {}) as Record<string, unknown>;
    const meta = (params["_meta"] as Record<string, unknown> | undefined) ?? {};
    return { ...msg, params: { ...params, ...extra, _meta: { ...meta, ...this.#envelope() } } };
  }

  async notify(msg: RpcNotification): Promise<void> {
    if (msg.method === "notifications/cancelled") {
      const p = msg.params as { requestId?: unknown } | undefined;
      const id = p?.requestId;
      if (typeof id === "string" || typeof id === "number") this.#inflight.get(JSON.stringify(id))?.abort();
      return;
    }
    if (msg.method === "notifications/initialized") return;
    try {
      const res = await this.#post(this.#withEnvelope(msg));
      await discard(res);
    } catch (err) {
      this.#o.hooks.log.warn(`could not send ${msg.method}: ${(err as Error).message}`);
    }
  }

  /** One client request, with the multi round-trip loop; delivers the final answer. */
  async request(ex: Exchange): Promise<void> {
    const abort = new AbortController();
    const idKey = JSON.stringify(ex.msg.id);
    this.#inflight.set(idKey, abort);
    try {
      let extra: Record<string, unknown> = {};
      const paramHeaders = this.#paramHeadersFor(ex.msg);
      for (let round = 0; round < 16; round++) {
        // A retry with input responses is a new request: it gets a new JSON-RPC id (2026-07-28
        // "Multi Round-Trip Requests"); the client's id is the one its answer goes out with.
        const id = round === 0 ? ex.msg.id : `mcp-edge-connect:round:${++this.#roundSeq}`;
        const body = this.#withEnvelope({ ...ex.msg, id }, extra);
        let res: HttpResponse;
        try {
          res = await this.#post(body, abort.signal, paramHeaders);
        } catch (err) {
          if (abort.signal.aborted) return; // the client cancelled: no answer is due
          if (isConnectFailure(err)) throw unreachable(this.#o.url, err);
          throw new LostError(`the connection broke after the request was sent (${(err as Error).message})`);
        }
        if (res.status < 200 || res.status > 299) {
          throw httpError(res.status, await readText(res).catch(() => ""));
        }
        const answer = await this.#readAnswer(res, id, abort.signal);
        if (abort.signal.aborted) return;
        if (!answer) throw new LostError("the answer stream ended before the answer");
        if ("error" in answer) {
          this.#o.hooks.deliver({ ...answer, id: ex.msg.id } as RpcMessage);
          return;
        }
        const result = (answer.result ?? {}) as Record<string, unknown>;
        if (result["resultType"] === "input_required") {
          extra = await this.#gatherInput(result);
          continue;
        }
        const { resultType: _drop, ...rest } = result;
        if (ex.msg.method === "tools/list") this.#learnTools(rest);
        this.#o.hooks.deliver({ jsonrpc: "2.0", id: ex.msg.id, result: rest });
        return;
      }
      throw bridgeError("EDGE_UPSTREAM_BAD_RESPONSE", "Too many input rounds for one request.");
    } finally {
      this.#inflight.delete(idKey);
    }
  }

  /**
   * `x-mcp-header` (2026-07-28 "Request Metadata", custom headers): a tool's input property marked
   * with it is mirrored as `Mcp-Param-<name>` on its calls. A declaration that is empty, not a
   * header token, repeated (case-insensitively), or on a property that is not a string, integer or
   * boolean makes the tool invalid: it is left out
   * of the list the desktop client sees (clients MUST exclude such tools). Mutates `result.tools`.
   */
  #learnTools(result: Record<string, unknown>): void {
    const tools = result["tools"];
    if (!Array.isArray(tools)) return;
    const kept: unknown[] = [];
    for (const tool of tools as Array<{ name?: unknown; inputSchema?: { properties?: unknown } }>) {
      const props = tool?.inputSchema?.properties;
      const headers = new Map<string, string>();
      let valid = true;
      if (props && typeof props === "object" && !Array.isArray(props)) {
        for (const [prop, def] of Object.entries(props as Record<string, Record<string, unknown>>)) {
          if (!def || typeof def !== "object" || !Object.hasOwn(def, "x-mcp-header")) continue;
          const name = def["x-mcp-header"];
          const type = def["type"];
          // string, integer or boolean: values with one exact header spelling (no floats).
          const primitive = type === "string" || type === "integer" || type === "boolean";
          const taken =
            typeof name === "string" &&
            [...headers.keys()].some((h) => h.toLowerCase() === name.toLowerCase());
          if (typeof name !== "string" || !HEADER_TOKEN.test(name) || !primitive || taken) {
            valid = false;
            break;
          }
          headers.set(name, prop);
        }
      }
      if (!valid) {
        this.#o.hooks.log.warn(`left out tool ${JSON.stringify(tool?.name)}: its x-mcp-header is invalid`);
        continue;
      }
      if (typeof tool?.name === "string") this.#toolHeaders.set(tool.name, headers);
      kept.push(tool);
    }
    result["tools"] = kept;
  }

  #paramHeadersFor(msg: RpcRequest): Record<string, string> {
    if (msg.method !== "tools/call") return {};
    const p = (msg.params ?? {}) as { name?: unknown; arguments?: unknown };
    const map = typeof p.name === "string" ? this.#toolHeaders.get(p.name) : undefined;
    const args = p.arguments as Record<string, unknown> | undefined;
    const out: Record<string, string> = {};
    if (!map || !args || typeof args !== "object") return out;
    for (const [header, prop] of map) {
      const v = args[prop];
      if (typeof v === "string" || typeof v === "boolean" || (typeof v === "number" && Number.isFinite(v))) {
        out[`mcp-param-${header.toLowerCase()}`] = encodeHeaderValue(String(v));
      }
    }
    return out;
  }

  /** MRTR: ask the desktop client each embedded request; the answers go back keyed as asked. */
  async #gatherInput(result: Record<string, unknown>): Promise<Record<string, unknown>> {
    const requests = (result["inputRequests"] ?? {}) as Record<
      string,
      { method?: unknown; params?: unknown }
    >;
    const responses: Record<string, unknown> = {};
    for (const [key, req] of Object.entries(requests)) {
      if (typeof req?.method !== "string") continue;
      responses[key] = await this.#o.hooks.askClient(req.method, req.params ?? {});
    }
    return {
      inputResponses: responses,
      ...(typeof result["requestState"] === "string" ? { requestState: result["requestState"] } : {}),
    };
  }

  async #readAnswer(
    res: HttpResponse,
    id: string | number,
    signal?: AbortSignal,
  ): Promise<(RpcMessage & { id: string | number; result?: unknown; error?: unknown }) | undefined> {
    const type = header(res, "content-type") ?? "";
    if (!/^text\/event-stream/i.test(type)) {
      const msg = parseMessage(await readText(res, 64 * 1024 * 1024));
      return "method" in msg ? undefined : (msg as RpcMessage & { id: string | number });
    }
    const onAbort = () => res.body.destroy();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const ev of sseEvents(res)) {
        if (!ev.hasData || ev.data === "") continue;
        let msg: RpcMessage;
        try {
          msg = parseMessage(ev.data);
        } catch {
          continue;
        }
        if (!("method" in msg) && "id" in msg && msg.id === id) {
          return msg as RpcMessage & { id: string | number };
        }
        this.#o.hooks.deliver(msg); // progress, logging: related notifications
      }
    } catch {
      // broke: the answer is lost
    } finally {
      signal?.removeEventListener("abort", onAbort);
      res.body.destroy();
    }
    return undefined;
  }

  async #post(
    msg: RpcRequest | RpcNotification,
    signal?: AbortSignal,
    extraHeaders: Record<string, string> = {},
  ): Promise<HttpResponse> {
    const started = Date.now();
    let attempt = 0;
    let authRetries = 0;
    for (;;) {
      const name = "id" in msg ? nameOf(msg) : undefined;
      const headers: Record<string, string> = {
        ...this.#o.headers,
        ...(await this.#o.auth.headers()),
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-protocol-version": STATELESS_VERSION,
        "mcp-method": msg.method,
        ...(name !== undefined ? { "mcp-name": encodeHeaderValue(name) } : {}),
        ...extraHeaders,
      };
      let res: HttpResponse;
      const s = signal ? AbortSignal.any([signal, this.#closed.signal]) : this.#closed.signal;
      try {
        res = await send(this.#o.url.href, { method: "POST", headers, body: JSON.stringify(msg), signal: s });
      } catch (err) {
        if (isConnectFailure(err) && !s.aborted && Date.now() - started < this.#o.retry.giveUpAfter) {
          await delay(backoff(this.#o.retry, attempt++), s);
          continue;
        }
        throw err;
      }
      if (res.status === 401 && authRetries < 3) {
        await discard(res);
        authRetries++;
        if (await this.#o.auth.onUnauthorized(res, headers["authorization"])) continue;
        return res;
      }
      if (res.status === 403 && authRetries < 3 && (await this.#o.auth.onForbidden(res))) {
        await discard(res);
        authRetries++;
        continue;
      }
      if (res.status === 503 && Date.now() - started < this.#o.retry.giveUpAfter) {
        await discard(res);
        await delay(retryAfterMs(res) ?? backoff(this.#o.retry, attempt++), s);
        continue;
      }
      return res;
    }
  }

  async close(): Promise<void> {
    for (const a of this.#inflight.values()) a.abort();
    this.#closed.abort();
  }
}
