/**
 * The egress proxy: the way out for the MCP servers mcp-edge spawns.
 *
 * An HTTP forward proxy on loopback. Spawned stdio servers get `HTTP_PROXY` / `HTTPS_PROXY`
 * pointing at it (src/upstream/stdio.ts), with credentials minted for that one process, so every
 * outbound request is attributed to the server, tenant and session that caused it and, while a
 * tool call is in flight on that session, lands in the call's audit record (`egress`).
 *
 * - Absolute-URI requests (`GET http://host/path`, RFC 9112 §3.2.2) are forwarded: the host is
 *   resolved once, the addresses are checked (policy.ts plus the server's `egress` block), and
 *   the connection goes to the checked address (pinned: a second DNS answer is never used).
 *   Redirects are not followed: the client sees the 3xx and its next request is checked again.
 * - `CONNECT host:port` (RFC 9110 §9.3.6) is resolved and checked the same way, then tunnelled to
 *   the checked address; TLS stays end to end (the proxy never sees inside).
 * - A denied request gets 403 with a short text naming the rule. The target is never contacted,
 *   so no byte of an internal answer can reach the child.
 * - `Proxy-Authorization: Basic` (RFC 9110 §11.7.1) with the process's credentials is required;
 *   anything else is 407.
 *
 * Limit (docs/egress.md): the proxy sees what the child sends it. A child that ignores the proxy
 * variables and opens sockets itself is not stopped here; confine such servers at the OS level
 * (network namespace, firewall) so the proxy is their only route out.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { lookup } from "node:dns/promises";
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from "node:http";
import { type AddressInfo, connect, isIP, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "../observability/logger.ts";
import { checkPort, checkTarget, type EgressRules, isExcepted, validateRules } from "./policy.ts";

/** One outbound request of a spawned server and what the proxy decided (an audit record's `egress`). */
export interface EgressDecision {
  /** When the decision was made (ISO 8601, ms). */
  time: string;
  /** The HTTP method, or `CONNECT` for a tunnel. */
  method: string;
  host: string;
  port: number;
  /** The address checked (and connected to, when allowed); null when the name did not resolve. */
  resolvedAddress: string | null;
  allowed: boolean;
  /** The rule that denied it (`range:loopback`, `name:localhost`, `egress.allow`, ...); null when allowed. */
  rule: string | null;
}

/** Where decisions go for one call in flight (RequestContext.egress). */
export type EgressSink = (decision: EgressDecision) => void;

/** Decisions kept per call; later ones are only logged (a chatty server cannot grow a record). */
export const MAX_EGRESS_PER_CALL = 100;

/** The recorder of one call: decisions go to `target.egress`, at most MAX_EGRESS_PER_CALL of them. */
export function callRecorder(target: { egress?: EgressDecision[] }): EgressSink {
  return (d) => {
    const list = (target.egress ??= []);
    if (list.length < MAX_EGRESS_PER_CALL) list.push(d);
  };
}

/** A server's `egress` block, as validated by the config schema. */
export interface ServerEgress {
  /** `host:port` targets this server may reach; when non-empty, the only ones. */
  allow: readonly string[];
  /** Named opt-in: private, loopback and link-local addresses are allowed too. */
  allowPrivate: boolean;
}

/** Who a credential belongs to. */
export interface EgressIdentity {
  server: string;
  /** The tenant of the session that spawned the process; null for a shared process. */
  tenant: string | null;
  /** The process's upstream instance (`stdio:<id>`, one per MCP session); null for a shared one. */
  session: string | null;
}

/** A credential minted for one spawned process. */
export interface ProxyCredential {
  /** The child's proxy variables (credentials in the userinfo, nothing exempted). */
  readonly env: Readonly<Record<string, string>>;
  /** The credential stops working (the process is gone). */
  revoke(): void;
}

interface Grant {
  identity: EgressIdentity;
  rules: EgressRules;
  /** The server has an allow-list: targets not on it are denied. */
  listOnly: boolean;
  secret: Buffer;
  /** The calls in flight for this process right now (empty for a shared process: route only). */
  calls: () => Iterable<EgressSink>;
}

export type Resolver = (host: string) => Promise<string[]>;

/** The system resolver (getaddrinfo, as every client on this machine would see the name). */
export const systemResolver: Resolver = async (host) =>
  (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

export interface EgressProxyOptions {
  log: Logger;
  resolve?: Resolver;
  /** Milliseconds to open a connection to an allowed target. Default 10 000. */
  connectTimeout?: number;
  /** Milliseconds a tunnel or forwarded exchange may sit idle. Default 300 000. */
  idleTimeout?: number;
}

/** Hop-by-hop fields (RFC 9110 §7.6.1): never forwarded, in either direction. */
const HOP_BY_HOP = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

const CHALLENGE = 'Basic realm="mcp-edge egress"';
const AUTHORITY = /^(?:\[[0-9a-fA-F:.]+\]|[^\s/?#@[\]:]+):(\d{1,5})$/;

function sha256(b: Buffer | string): Buffer {
  return createHash("sha256").update(b).digest();
}

function bareHost(hostname: string): string {
  return hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
}

/**
 * The 403 text: what was refused and the rule's name, never anything the target said (it was
 * not contacted). E.g. "mcp-edge egress denied: loopback (127.0.0.1) is not allowed for server
 * demo (rule range:loopback)".
 */
export function denialText(server: string, rule: string, address: string | null, host: string): string {
  let what: string;
  if (rule === NOT_LISTED) what = `${host} is not in the egress allow-list`;
  else if (rule === "unresolved") what = `${host} does not resolve, and`;
  else if (rule.startsWith("range:")) what = `${rule.slice(6)} (${address ?? host})`;
  else if (rule.startsWith("name:")) what = `the name ${host}`;
  else if (rule.startsWith("port:")) what = `port ${rule.slice(5)} of ${host}`;
  else what = `${host}`;
  if (rule === NOT_LISTED) return `mcp-edge egress denied: ${what} of server ${server} (rule ${rule})`;
  if (rule === "unresolved") return `mcp-edge egress denied: ${host} does not resolve (rule ${rule})`;
  return `mcp-edge egress denied: ${what} is not allowed for server ${server} (rule ${rule})`;
}

/** The rule of a target missing from a non-empty `servers.<name>.egress.allow`. */
export const NOT_LISTED = "egress.allow";

/** Headers to send on, without hop-by-hop fields and those the Connection field names. */
function endToEnd(headers: IncomingMessage["headers"]): Record<string, string | string[]> {
  const named = new Set(
    String(headers.connection ?? "")
      .split(",")
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || named.has(k)) continue;
    out[k] = v;
  }
  return out;
}

/**
 * The proxy. `start` binds 127.0.0.1 on a free port; `mint` gives a spawned process its
 * credential; `stop` closes the listener and every open tunnel.
 */
export class EgressProxy {
  readonly #log: Logger;
  readonly #resolve: Resolver;
  readonly #connectTimeout: number;
  readonly #idleTimeout: number;
  readonly #grants = new Map<string, Grant>();
  readonly #rules = new WeakMap<ServerEgress, EgressRules>();
  readonly #sockets = new Set<Duplex>();
  #server: Server | undefined;

  constructor(options: EgressProxyOptions) {
    this.#log = options.log.child({ component: "egress-proxy" });
    this.#resolve = options.resolve ?? systemResolver;
    this.#connectTimeout = options.connectTimeout ?? 10_000;
    this.#idleTimeout = options.idleTimeout ?? 300_000;
  }

  async start(host = "127.0.0.1"): Promise<void> {
    const server = createServer({ requestTimeout: 60_000 }, (req, res) => void this.#onRequest(req, res));
    server.on("connect", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      void this.#onConnect(req, socket, head);
    });
    server.on("connection", (s: Socket) => {
      this.#sockets.add(s);
      s.on("close", () => this.#sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.#server = server;
  }

  /** `http://127.0.0.1:<port>` (without credentials). */
  get url(): string {
    const a = this.#server?.address() as AddressInfo | null | undefined;
    if (!a) throw new Error("the egress proxy is not started");
    return `http://${a.family === "IPv6" ? `[${a.address}]` : a.address}:${a.port}`;
  }

  /** Open credentials (one per live process). */
  get grants(): number {
    return this.#grants.size;
  }

  /**
   * A credential for one process: random user and password, mapped to who it acts for.
   * `calls` names the tool calls in flight for it at the moment of a request (attribution).
   */
  mint(identity: EgressIdentity, rules: ServerEgress, calls: () => Iterable<EgressSink>): ProxyCredential {
    const user = randomBytes(12).toString("base64url");
    const pass = randomBytes(24).toString("base64url");
    this.#grants.set(user, { identity, ...this.#compile(rules), secret: sha256(pass), calls });
    const proxy = new URL(this.url);
    proxy.username = user;
    proxy.password = pass;
    const href = proxy.href.replace(/\/$/, "");
    return {
      // Both spellings: clients disagree on which one they read. NO_PROXY empty: nothing is
      // exempt (a default of "localhost" would let loopback traffic bypass the check).
      // NODE_USE_ENV_PROXY: Node ≥ 24.5 routes fetch and http(s).request through these (off by
      // default); other runtimes read the variables themselves.
      env: {
        HTTP_PROXY: href,
        HTTPS_PROXY: href,
        http_proxy: href,
        https_proxy: href,
        NO_PROXY: "",
        no_proxy: "",
        NODE_USE_ENV_PROXY: "1",
      },
      revoke: () => {
        this.#grants.delete(user);
      },
    };
  }

  /** The policy rules of a server's egress block, built once per block (policy.ts caches by object). */
  #compile(egress: ServerEgress): { rules: EgressRules; listOnly: boolean } {
    let rules = this.#rules.get(egress);
    if (!rules) {
      rules = { allowPrivate: egress.allowPrivate, allowHosts: egress.allow };
      validateRules(rules);
      this.#rules.set(egress, rules);
    }
    return { rules, listOnly: egress.allow.length > 0 };
  }

  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    this.#grants.clear();
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    await closed;
  }

  // ---- authentication ---------------------------------------------------------------------------

  #authenticate(req: IncomingMessage): Grant | undefined {
    const h = req.headers["proxy-authorization"];
    if (typeof h !== "string") return undefined;
    const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(h);
    if (!m) return undefined;
    const decoded = Buffer.from(m[1] as string, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) return undefined;
    const grant = this.#grants.get(decoded.slice(0, colon));
    if (!grant) return undefined;
    // Hashes of equal length: the comparison time does not depend on the password's content.
    return timingSafeEqual(sha256(decoded.slice(colon + 1)), grant.secret) ? grant : undefined;
  }

  // ---- the decision -----------------------------------------------------------------------------

  /** Resolves, checks (policy + the server's allow-list), records. Never throws. */
  async #decide(grant: Grant, method: string, url: URL, port: number): Promise<EgressDecision> {
    // Taken now: the calls in flight when the request arrived caused it, even if one ends while
    // the name resolves.
    const calls = [...grant.calls()];
    const host = bareHost(url.hostname);
    let addresses: string[];
    try {
      // Resolved once: the address checked is the address connected to.
      addresses = isIP(host) ? [host] : await this.#resolve(host);
    } catch {
      addresses = []; // "unresolved" (policy.ts): denied
    }
    // The address policy first (so a loopback target is refused as loopback), with the server's
    // allow-list entries as exact host:port exceptions: an entry is the named opt-in for that one
    // target. Then the allow-list itself: when a server has one, nothing else is reachable.
    const verdict = checkTarget(url, addresses, grant.rules);
    let rule: string | null = null;
    let address = addresses[0] ?? null;
    // Ports: 80 and 443, or a host:port the server's allow-list names; allowPrivate opens
    // addresses, never ports (policy.ts checkPort).
    const portVerdict = checkPort(url, grant.rules);
    if (!verdict.allowed) {
      rule = verdict.rule;
      address = verdict.address ?? address;
    } else if (grant.listOnly && !isExcepted(url, grant.rules)) rule = NOT_LISTED;
    else if (!portVerdict.allowed) rule = portVerdict.rule;
    else if (address === null) rule = "unresolved";
    const decision: EgressDecision = {
      time: new Date().toISOString(),
      method,
      host,
      port,
      resolvedAddress: address,
      allowed: rule === null,
      rule,
    };
    for (const sink of calls) sink(decision);
    const { server, tenant, session } = grant.identity;
    const line = { server, tenant, instance: session, calls: calls.length, ...decision };
    if (decision.allowed) this.#log.info(line, "egress allowed");
    else this.#log.warn(line, "egress denied");
    return decision;
  }

  // ---- absolute-URI requests (plain HTTP) -------------------------------------------------------

  async #onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const grant = this.#authenticate(req);
    if (!grant) {
      req.resume();
      return text(res, 407, "mcp-edge egress: proxy credentials required", {
        "proxy-authenticate": CHALLENGE,
      });
    }
    let url: URL;
    try {
      url = new URL(req.url ?? "");
    } catch {
      req.resume();
      return text(res, 400, "mcp-edge egress: absolute http:// URL required (use CONNECT for https)");
    }
    if (url.protocol !== "http:") {
      req.resume();
      return text(res, 400, "mcp-edge egress: only http:// is forwarded; use CONNECT for https");
    }
    const port = url.port ? Number(url.port) : 80;
    const d = await this.#decide(grant, req.method ?? "GET", url, port);
    if (!d.allowed || !d.resolvedAddress) {
      req.resume();
      return text(res, 403, denialText(grant.identity.server, d.rule ?? "denied", d.resolvedAddress, d.host));
    }
    const headers = endToEnd(req.headers);
    headers.host = url.host;
    // Connect to the checked address only (pinned); the Host header keeps the name.
    const out = request({
      host: d.resolvedAddress,
      port,
      method: req.method,
      path: `${url.pathname}${url.search}`,
      headers,
      setHost: false,
      agent: false,
      timeout: this.#connectTimeout,
    });
    out.on("timeout", () => out.destroy(new Error("timeout")));
    out.on("response", (up) => {
      out.setTimeout(this.#idleTimeout);
      // Redirects are passed on, never followed (the next hop is a new, checked request).
      res.writeHead(up.statusCode ?? 502, endToEnd(up.headers));
      up.pipe(res);
      up.on("error", () => res.destroy());
    });
    out.on("error", (err) => {
      if (res.headersSent) return res.destroy();
      this.#log.debug({ err, host: d.host, port }, "egress target unreachable");
      text(res, 502, `mcp-edge egress: could not reach ${d.host}:${port}`);
    });
    res.on("close", () => {
      if (!res.writableFinished) out.destroy();
    });
    req.pipe(out);
  }

  // ---- CONNECT tunnels --------------------------------------------------------------------------

  async #onConnect(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on("error", () => socket.destroy());
    const grant = this.#authenticate(req);
    if (!grant) return rawText(socket, 407, "mcp-edge egress: proxy credentials required", CHALLENGE);
    const authority = req.url ?? "";
    const m = AUTHORITY.exec(authority);
    const port = m ? Number(m[1]) : 0;
    let url: URL | undefined;
    try {
      // The WHATWG host parser normalizes IPv4 spellings (127.1, 0x7f.1, 2130706433) exactly as
      // clients do, so the check sees the address a client would reach.
      url = m && port > 0 && port < 65536 ? new URL(`https://${authority}/`) : undefined;
    } catch {
      url = undefined;
    }
    if (!url) return rawText(socket, 400, "mcp-edge egress: CONNECT needs host:port");
    const d = await this.#decide(grant, "CONNECT", url, port);
    if (!d.allowed || !d.resolvedAddress) {
      return rawText(
        socket,
        403,
        denialText(grant.identity.server, d.rule ?? "denied", d.resolvedAddress, d.host),
      );
    }
    const upstream = connect({ host: d.resolvedAddress, port });
    this.#sockets.add(upstream);
    upstream.on("close", () => this.#sockets.delete(upstream));
    let connected = false;
    const timer = setTimeout(() => upstream.destroy(new Error("connect timeout")), this.#connectTimeout);
    upstream.once("connect", () => {
      connected = true;
      clearTimeout(timer);
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length > 0) upstream.write(head);
      upstream.setTimeout(this.#idleTimeout, () => upstream.destroy());
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on("error", () => {
      clearTimeout(timer);
      if (!connected) rawText(socket, 502, `mcp-edge egress: could not reach ${d.host}:${port}`);
      else socket.destroy();
    });
    socket.on("close", () => upstream.destroy());
  }
}

function text(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(body),
    connection: "close",
    ...headers,
  });
  res.end(body);
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  407: "Proxy Authentication Required",
  502: "Bad Gateway",
};

/** An answer to CONNECT, written on the raw socket, then the socket is closed. */
function rawText(socket: Duplex, status: number, body: string, challenge?: string): void {
  if (socket.destroyed) return;
  socket.end(
    `HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}\r\n` +
      (challenge ? `Proxy-Authenticate: ${challenge}\r\n` : "") +
      `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
