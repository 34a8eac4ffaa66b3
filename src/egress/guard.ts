import diagnostics_channel from "node:diagnostics_channel";
import { lookup } from "node:dns/promises";
import type { Readable } from "node:stream";
import { Agent, buildConnector, type Dispatcher, request } from "undici";
import { GatewayError } from "../errors/errors.ts";
import {
  checkPort,
  checkTarget,
  checkUrl,
  type EgressRules,
  isExcepted,
  namedTarget,
  parseHostLiteral,
  validateRules,
} from "./policy.ts";

/**
 * The guarded way out. Two pieces:
 *
 * (One file of ~570 lines on purpose: the connector, the redirect walk and the response cap share
 * one policy check per hop, and the SSRF guarantee is easier to audit when it reads top to bottom.)
 *
 * - `createGuardedAgent`: an undici Agent whose `connect` resolves the host once, checks every
 *   address with the policy, and opens the socket to the checked address itself (the IP literal
 *   goes to `net.connect`/`tls.connect`, so nothing resolves the name a second time: no DNS
 *   rebinding between check and use, TOCTOU). IP-literal hosts are checked in the same place: a
 *   `lookup` hook alone would be skipped for them (wso2/api-platform#2904). TLS still verifies
 *   the certificate against the name (`servername`).
 * - `guardedRequest`: one request with redirects followed by hand, each hop checked (scheme, host,
 *   port, address), credentials dropped across origins, https→http refused, a hop limit, a size
 *   cap and a deadline. undici's `request` never follows redirects on its own.
 *
 * Every decision is published on the `mcp-edge:egress` diagnostics channel (convention 7), so the
 * audit trail of the originating call can record it.
 */

/** Resolves a host name to every address it has (the order is kept; all are checked). */
export type Resolver = (host: string) => Promise<string[]>;

/** dns.lookup (getaddrinfo: /etc/hosts, then DNS), all addresses, in the resolver's order. */
export const systemResolver: Resolver = async (host) =>
  (await lookup(host, { all: true, order: "verbatim" })).map((a) => a.address);

export type Trust = "config" | "runtime";

/** What the `mcp-edge:egress` channel carries. */
export interface EgressDecisionEvent {
  host: string;
  port: string;
  protocol: string;
  allowed: boolean;
  /** The rule that denied, or "config" / "exception" / "policy" for an allowed connection. */
  rule: string;
  /** The address connected to, or the one that was denied. */
  address?: string;
}

export const egressChannel = diagnostics_channel.channel("mcp-edge:egress");

function publish(e: EgressDecisionEvent): void {
  if (egressChannel.hasSubscribers) egressChannel.publish(e);
}

/**
 * EDGE_EGRESS_DENIED. The message names the host and the rule; the resolved address is added only
 * when the URL itself was an IP literal (it tells the client nothing new). The full detail,
 * address included, is in `cause` for the log. Never carries the body of a denied response.
 */
export function egressDenied(url: URL, rule: string, address?: string): GatewayError {
  const literal = parseHostLiteral(url.hostname) !== undefined;
  const where = `${url.protocol}//${url.host}`;
  const detail = `egress to ${where} denied by rule ${rule}${address ? ` (address ${address})` : ""}`;
  return new GatewayError(
    "EDGE_EGRESS_DENIED",
    `Outbound request to ${where} refused by the egress policy (${rule}).`,
    {
      cause: new Error(detail),
      data: { rule, host: url.host, ...(address && literal ? { address } : {}) },
    },
  );
}

export interface GuardedAgentOptions {
  rules: EgressRules;
  /**
   * true (default): every connection is checked against `rules`. false: the connection is only
   * pinned (resolved once, connected to that address) — for origins the operator wrote in the
   * config, which are trusted as written (a private upstream is normal).
   */
  check?: boolean;
  /** Default: `systemResolver`. Tests inject a resolver that asks their own DNS server. */
  resolver?: Resolver;
  /** Milliseconds to establish a TCP (and TLS) connection. Default 10 s. */
  connectTimeout?: number;
  /** Connections per origin. Default 256. */
  connections?: number;
  /** Idle keep-alive sockets close after this many ms. Default 30 s. */
  keepAliveTimeout?: number;
  /** CA certificates (PEM) trusted instead of Node's bundle: a private PKI, or tests. */
  ca?: string | Buffer;
}

type ConnectOptions = buildConnector.Options;

/** Connect errors after which the next checked address of the same name is tried. */
const UNREACHABLE = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "ETIMEDOUT",
  "UND_ERR_CONNECT_TIMEOUT",
]);
type ConnectCallback = buildConnector.Callback;

/**
 * An undici Agent that only ever connects to an address it checked (or, with `check: false`, that
 * it resolved once). A connection refused by the policy fails the request with
 * EDGE_EGRESS_DENIED before any socket is opened.
 */
export function createGuardedAgent(options: GuardedAgentOptions): Agent {
  validateRules(options.rules);
  const rules = options.rules;
  const check = options.check ?? true;
  const resolver = options.resolver ?? systemResolver;
  const base = buildConnector({
    timeout: options.connectTimeout ?? 10_000,
    ...(options.ca !== undefined ? { ca: options.ca } : {}),
  });

  const connect = (opts: ConnectOptions, callback: ConnectCallback): void => {
    pin(opts).then(
      ({ addresses, servername }) => {
        // Try the checked addresses in order, the next one only when this one cannot be reached
        // (e.g. `localhost`-style names answering ::1 first to a server on 127.0.0.1): what
        // net.connect's happy eyeballs did for a name, restricted to addresses that passed.
        const attempt = (i: number): void => {
          const address = addresses[i] as string;
          base({ ...opts, hostname: address, ...(servername ? { servername } : {}) }, (err, socket) => {
            if (err && i + 1 < addresses.length && UNREACHABLE.has((err as { code?: string }).code ?? "")) {
              attempt(i + 1);
            } else if (err) {
              callback(err, null);
            } else {
              callback(null, socket as NonNullable<typeof socket>);
            }
          });
        };
        attempt(0);
      },
      (err: Error) => callback(err, null),
    );
  };

  const pin = async (opts: ConnectOptions): Promise<{ addresses: string[]; servername?: string }> => {
    const protocol = opts.protocol;
    // opts.host is URL.host (brackets and port included); rebuild the URL the policy reads.
    const url = new URL(`${protocol}//${opts.host ?? opts.hostname}`);
    const port = opts.port || (protocol === "https:" ? "443" : "80");
    const event = { host: url.hostname, port, protocol };
    if (check) {
      const pre = checkUrl(url, rules);
      if (!pre.allowed) {
        publish({
          ...event,
          allowed: false,
          rule: pre.rule,
          ...(pre.address ? { address: pre.address } : {}),
        });
        throw egressDenied(url, pre.rule, pre.address);
      }
    }
    const literal = parseHostLiteral(opts.hostname);
    let addresses: string[];
    if (literal) {
      addresses = [literal.address];
    } else {
      // One resolution per connection; the socket goes to an address from this answer only.
      addresses = await resolver(opts.hostname);
      if (addresses.length === 0) {
        throw Object.assign(new Error(`${opts.hostname} has no address`), { code: "ENOTFOUND" });
      }
    }
    let rule = "config";
    if (check) {
      const d = checkTarget(url, addresses, rules);
      if (!d.allowed) {
        publish({ ...event, allowed: false, rule: d.rule, ...(d.address ? { address: d.address } : {}) });
        throw egressDenied(url, d.rule, d.address);
      }
      rule = isExcepted(url, rules) ? "exception" : "policy";
    }
    // Every address passed. The canonical form of what was checked is what net.connect gets (never
    // the name, never another spelling), in the resolver's order.
    const pinned = addresses.map((a) => parseHostLiteral(a)?.address ?? a);
    publish({ ...event, allowed: true, rule, address: pinned[0] as string });
    // TLS: verify the certificate for the name, not the address (SNI and checkServerIdentity).
    return literal
      ? { addresses: pinned }
      : { addresses: pinned, servername: opts.servername || opts.hostname };
  };

  return new Agent({
    connect,
    connections: options.connections ?? 256,
    pipelining: 1,
    keepAliveTimeout: options.keepAliveTimeout ?? 30_000,
  });
}

// ---- guardedRequest ----------------------------------------------------------------------------

export type HttpMethod = "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS";

export interface GuardedRequestOptions {
  method: HttpMethod;
  headers?: Record<string, string>;
  body?: string | Buffer;
  signal?: AbortSignal;
  /** Milliseconds to wait for each hop's response headers. Default 30 s. */
  headersTimeout?: number;
  /** Milliseconds a body may idle between chunks; 0 disables (long-lived streams). Default 30 s. */
  bodyTimeout?: number;
  /**
   * Milliseconds for the whole exchange, every hop included: past it before the final headers the
   * call throws EDGE_UPSTREAM_TIMEOUT; past it while the body is read, the body fails with the
   * abort reason (a TimeoutError).
   */
  timeout?: number;
  /** Redirects followed; one more is EDGE_EGRESS_DENIED (rule `maxRedirects`). Default 5. */
  maxRedirects?: number;
  /** "manual": return a 3xx as it is (nothing followed). Default "follow". */
  redirect?: "follow" | "manual";
  /** Largest response body in bytes; more fails the body with EDGE_EGRESS_RESPONSE_TOO_LARGE. */
  maxResponseBytes?: number;
}

export interface GuardContext {
  /**
   * "config": the URL was written by the operator; its origin is trusted as written (no address
   * check), every redirect that leaves that origin is checked. "runtime": the URL was discovered
   * or supplied at run time (metadata documents, JWKS URIs, client metadata): every hop checked.
   */
  trust: Trust;
  rules: EgressRules;
  /**
   * `host:port` targets (policy.ts `namedTarget`) a URL of the config names for this request: a
   * checked hop to one of them passes the port rule (`checkPort`). Under `trust: "config"` the
   * first URL's own `host:port` is always one.
   */
  named?: readonly string[];
  /** Agent for the configured origin under `trust: "config"` (pinned, unchecked). */
  trusted?: Dispatcher;
  /** Agent that checks every connection (`createGuardedAgent` with the same rules). */
  checked?: Dispatcher;
  /** For agents this call creates (when `trusted`/`checked` are absent). */
  resolver?: Resolver;
  connectTimeout?: number;
  ca?: string | Buffer;
}

export interface GuardedResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable & AsyncIterable<Buffer>;
  /** The URL of the final hop. */
  url: string;
  /** Redirects followed. */
  redirects: number;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * Headers carried to another origin (scheme, host or port differ). Everything else is dropped:
 * Authorization, Cookie, Proxy-Authorization, and the credential headers an operator configures
 * (X-Api-Key and the like), which a redirect must never hand to a third party (fetch standard
 * §4.4 step 13 drops Authorization; a gateway holds more kinds of credential than a browser).
 */
const CROSS_ORIGIN_SAFE = new Set([
  "accept",
  "accept-language",
  "content-language",
  "content-type",
  "user-agent",
  "mcp-protocol-version",
  "traceparent",
  "tracestate",
]);

/** Headers that describe a body, removed when a redirect turns the request into a GET. */
const BODY_HEADERS = new Set([
  "content-type",
  "content-length",
  "content-encoding",
  "content-language",
  "transfer-encoding",
]);

function firstHeader(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * One HTTP exchange through the guard, redirects followed by hand and each hop checked before it
 * connects. Denied hops throw EDGE_EGRESS_DENIED (the 3xx body that pointed there is discarded,
 * never returned); a deadline passed before the final headers throws EDGE_UPSTREAM_TIMEOUT, as do
 * undici's header and body timeouts; connection failures keep their own codes (`isConnectError`).
 */
export function guardedRequest(
  url: string | URL,
  opts: GuardedRequestOptions,
  ctx: GuardContext,
): Promise<GuardedResponse> {
  // The Egress passes its long-lived agents: nothing to create or release per request, and no
  // async layer here on the path of every upstream call (a bad URL still rejects, never throws).
  if (ctx.trusted && ctx.checked) {
    try {
      return follow(target(url), opts, ctx, ctx.trusted, ctx.checked);
    } catch (err) {
      return Promise.reject(err);
    }
  }
  return withOwnAgents(url, opts, ctx);
}

/** guardedRequest without the Egress's agents: agents made for this request, closed after it. */
async function withOwnAgents(
  url: string | URL,
  opts: GuardedRequestOptions,
  ctx: GuardContext,
): Promise<GuardedResponse> {
  const owned: Agent[] = [];
  const trusted = ctx.trusted ?? own(owned, { rules: ctx.rules, check: false, ...agentExtras(ctx) });
  const checked = ctx.checked ?? own(owned, { rules: ctx.rules, check: true, ...agentExtras(ctx) });
  const release = () => {
    for (const a of owned) void a.close().catch(() => undefined);
  };
  try {
    const res = await follow(target(url), opts, ctx, trusted, checked);
    if (owned.length > 0) {
      res.body.once("close", release);
      if (res.body.destroyed) release();
    }
    return res;
  } catch (err) {
    release();
    throw err;
  }
}

/** A request target: the parsed URL, its origin, and the path undici sends. */
interface Target {
  url: URL;
  origin: string;
  path: string;
  /** http: or https: (anything else goes through undici's own URL checks). */
  web: boolean;
}

/** Targets by URL text: the configured upstream URLs come back on every call. */
const targets = new Map<string, Target>();
const MAX_TARGETS = 1024;

/** The target of a URL; a URL string is parsed once (a config URL is not parsed per call). */
function target(url: string | URL): Target {
  if (typeof url !== "string") return toTarget(new URL(url));
  let t = targets.get(url);
  if (t === undefined) {
    t = toTarget(new URL(url));
    if (targets.size >= MAX_TARGETS) targets.clear();
    targets.set(url, t);
  }
  return t;
}

function toTarget(url: URL): Target {
  const web = url.protocol === "http:" || url.protocol === "https:";
  return { url, origin: url.origin, path: `${url.pathname}${url.search}`, web };
}

function agentExtras(ctx: GuardContext): Pick<GuardedAgentOptions, "resolver" | "connectTimeout" | "ca"> {
  return {
    ...(ctx.ca !== undefined ? { ca: ctx.ca } : {}),
    ...(ctx.resolver ? { resolver: ctx.resolver } : {}),
    ...(ctx.connectTimeout !== undefined ? { connectTimeout: ctx.connectTimeout } : {}),
  };
}

function own(list: Agent[], options: GuardedAgentOptions): Agent {
  const a = createGuardedAgent({ ...options, connections: 8, keepAliveTimeout: 1_000 });
  list.push(a);
  return a;
}

/** The `host:port` targets named by the config for one request (see GuardContext.named). */
function namedFor(first: Target, ctx: GuardContext): readonly string[] {
  if (ctx.trust !== "config" || !first.web) return ctx.named ?? [];
  return [...(ctx.named ?? []), namedTarget(first.url)];
}

/** No headers: shared, never written to (headers are replaced, not changed, on redirects). */
const NO_HEADERS: Record<string, string> = Object.freeze({}) as Record<string, string>;

async function follow(
  first: Target,
  opts: GuardedRequestOptions,
  ctx: GuardContext,
  trusted: Dispatcher,
  checked: Dispatcher,
): Promise<GuardedResponse> {
  const maxRedirects = opts.maxRedirects ?? 5;
  const deadline = opts.timeout !== undefined ? AbortSignal.timeout(opts.timeout) : undefined;
  const signal =
    deadline && opts.signal ? AbortSignal.any([opts.signal, deadline]) : (deadline ?? opts.signal);
  let hopTarget = first;
  let method = opts.method;
  let body = opts.body;
  // Not copied: neither this code nor undici writes to it; a redirect builds a new object.
  let headers: Record<string, string> = opts.headers ?? NO_HEADERS;
  for (let hop = 0; ; hop++) {
    const current = hopTarget.url;
    // The operator's own origin is trusted only under config trust; any other hop is checked.
    const trustedHop = ctx.trust === "config" && hopTarget.origin === first.origin;
    if (!trustedHop) {
      // Ports before addresses: a port nobody named is refused whatever the address (policy.ts).
      let pre = checkUrl(current, ctx.rules);
      if (pre.allowed) pre = checkPort(current, ctx.rules, namedFor(first, ctx));
      if (!pre.allowed) {
        publish({
          host: current.hostname,
          port: current.port,
          protocol: current.protocol,
          allowed: false,
          rule: pre.rule,
          ...(pre.address ? { address: pre.address } : {}),
        });
        throw egressDenied(current, pre.rule, pre.address);
      }
    }
    const dispatcher = trustedHop ? trusted : checked;
    const headersTimeout = opts.headersTimeout ?? 30_000;
    const bodyTimeout = opts.bodyTimeout ?? 30_000;
    let res: Dispatcher.ResponseData;
    try {
      // http(s): straight to the agent with the target's origin and path (undici's top-level
      // `request` would parse the URL again and copy the options); anything else takes that
      // path, for undici's own scheme errors.
      res = hopTarget.web
        ? await new Promise<Dispatcher.ResponseData>((resolve, reject) => {
            dispatcher.request(
              {
                origin: hopTarget.origin,
                path: hopTarget.path,
                method,
                headers,
                body: body ?? null,
                signal: signal ?? null,
                headersTimeout,
                bodyTimeout,
              },
              (err, data) => {
                if (err) return reject(err);
                // undici calls this inside its header callback, before it pushes the body bytes
                // that came in the same read: the cap must be on the body before then.
                guardBody(data, current, opts.maxResponseBytes);
                resolve(data);
              },
            );
          })
        : await request(current, {
            method,
            headers,
            body: body ?? null,
            signal: signal ?? null,
            dispatcher,
            headersTimeout,
            bodyTimeout,
          });
    } catch (err) {
      throw mapError(err, deadline);
    }
    if (!hopTarget.web) guardBody(res, current, opts.maxResponseBytes);
    const location = firstHeader(res.headers["location"]);
    if (opts.redirect === "manual" || !REDIRECTS.has(res.statusCode) || location === undefined) {
      return finish(res, current, hop, opts.maxResponseBytes);
    }
    // A redirect: its body is never handed to anyone (it may come from a host we then refuse).
    res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
    let next: URL;
    try {
      next = new URL(location, current);
    } catch {
      throw egressDenied(current, "redirect:location");
    }
    if (hop + 1 > maxRedirects) throw egressDenied(next, "maxRedirects");
    if (next.protocol !== "http:" && next.protocol !== "https:") throw egressDenied(next, "redirect:scheme");
    if (current.protocol === "https:" && next.protocol === "http:")
      throw egressDenied(next, "redirect:downgrade");
    // RFC 9110 §15.4: 303 makes anything but HEAD a GET; 301/302 after POST do too (as every
    // client does, fetch standard §4.4 step 12). 307/308 keep the method and body.
    if (
      (res.statusCode === 303 && method !== "HEAD") ||
      ((res.statusCode === 301 || res.statusCode === 302) && method === "POST")
    ) {
      method = "GET";
      body = undefined;
      headers = Object.fromEntries(
        Object.entries(headers).filter(([k]) => !BODY_HEADERS.has(k.toLowerCase())),
      );
    }
    const nextTarget = toTarget(next);
    if (nextTarget.origin !== hopTarget.origin) {
      headers = Object.fromEntries(
        Object.entries(headers).filter(([k]) => CROSS_ORIGIN_SAFE.has(k.toLowerCase())),
      );
    }
    hopTarget = nextTarget;
  }
}

function mapError(err: unknown, deadline: AbortSignal | undefined): unknown {
  if (err instanceof GatewayError) return err;
  if (deadline?.aborted) {
    return new GatewayError(
      "EDGE_UPSTREAM_TIMEOUT",
      "The outbound request did not finish within its deadline.",
      {
        cause: err,
      },
    );
  }
  const code = (err as { code?: string } | null)?.code;
  if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") {
    return new GatewayError("EDGE_UPSTREAM_TIMEOUT", undefined, { cause: err });
  }
  return err;
}

function finish(
  res: Dispatcher.ResponseData,
  url: URL,
  redirects: number,
  maxBytes: number | undefined,
): GuardedResponse {
  const body = res.body as unknown as Readable & AsyncIterable<Buffer>;
  // undici fails a body destroyed before its end with an 'error' event (RequestAbortedError), also
  // when the caller destroys it on purpose without reading it: with no listener, that would be an
  // uncaught exception. A reader (for await, pipeline) still gets every error through its own.
  body.on("error", ignore);
  if (maxBytes !== undefined && Number.isFinite(maxBytes) && declaredLength(res) > maxBytes) {
    body.destroy();
    throw tooLarge(url, maxBytes);
  }
  return { status: res.statusCode, headers: res.headers, body, url: url.href, redirects };
}

function ignore(): void {}

function declaredLength(res: Dispatcher.ResponseData): number {
  return Number(firstHeader(res.headers["content-length"]) ?? Number.NaN);
}

/**
 * Puts the cap on a body of unknown length (chunked, or ended by the connection's close). A
 * declared length bounds the body already: the HTTP parser reads exactly that many bytes (a
 * mismatch fails the body), and one over the cap is refused by `finish`. Must run as soon as the
 * body exists (see the call in `follow`): a byte pushed before the cap is on would go uncounted.
 */
function guardBody(res: Dispatcher.ResponseData, url: URL, maxBytes: number | undefined): void {
  if (maxBytes === undefined || !Number.isFinite(maxBytes)) return;
  if (!(declaredLength(res) >= 0)) cap(res.body as unknown as Readable, url, maxBytes);
}

function tooLarge(url: URL, maxBytes: number): GatewayError {
  return new GatewayError(
    "EDGE_EGRESS_RESPONSE_TOO_LARGE",
    `The answer from ${url.protocol}//${url.host} is over the ${maxBytes}-byte limit.`,
  );
}

/**
 * Fails the body with EDGE_EGRESS_RESPONSE_TOO_LARGE past `maxBytes` (the request is aborted and
 * the socket released). The count is taken where undici hands each chunk to the body (its `push`),
 * on the body itself: a counting Transform piped after it cost a stream, a pipeline and an
 * AbortController (aborted, with a DOMException, when the pipeline ends) per upstream answer,
 * about 8% of the edge's CPU in the benchmark profile. Nothing over the cap is pushed; the body is
 * destroyed on the next tick, outside undici's parser callback.
 */
function cap(body: Readable, url: URL, maxBytes: number): void {
  // Bytes already buffered count too (none when called from undici's header callback).
  let size = body.readableLength;
  let over = size > maxBytes;
  if (over) process.nextTick(() => body.destroy(tooLarge(url, maxBytes)));
  const push = body.push;
  body.push = function (this: Readable, chunk: unknown, encoding?: BufferEncoding): boolean {
    if (over) return false;
    if (chunk !== null && chunk !== undefined) {
      size += (chunk as Buffer).length;
      if (size > maxBytes) {
        over = true;
        process.nextTick(() => this.destroy(tooLarge(url, maxBytes)));
        return false;
      }
    }
    return push.call(this, chunk, encoding);
  };
}
