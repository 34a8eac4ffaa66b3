/**
 * Outbound HTTP of `mcp-edge connect`, the one file of the bridge that may import undici.
 *
 * Why not src/egress: the egress guard protects a *server* from being steered into its own private
 * network (SSRF) by URLs a remote party supplies. The bridge runs on the user's own machine, as the
 * user, toward the server the user typed; reaching `localhost` or an intranet host is its normal
 * job, and the user's proxy settings must apply. So the bridge uses undici's EnvHttpProxyAgent
 * (HTTP_PROXY / HTTPS_PROXY / NO_PROXY from the environment) and keeps the client-side rules of
 * the MCP Security Best Practices ("SSRF" in OAuth discovery) where URLs come from the server:
 * discovered metadata and endpoint URLs must be https:, loopback http:, or on the origin the user
 * typed (`checkDiscoveredUrl`), and redirects are followed by hand, each hop checked the same way.
 */
import type { Readable } from "node:stream";
import { EnvHttpProxyAgent, request } from "undici";

export interface HttpRequest {
  method: "GET" | "POST" | "DELETE";
  headers: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  /** Milliseconds to wait for the response headers. Default 60 s. */
  headersTimeout?: number;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable & AsyncIterable<Buffer>;
}

let agent: EnvHttpProxyAgent | undefined;

/** The process-wide dispatcher: the environment's proxy settings, keep-alive connections. */
function dispatcher(): EnvHttpProxyAgent {
  agent ??= new EnvHttpProxyAgent({ connect: { timeout: 10_000 }, keepAliveTimeout: 10_000 });
  return agent;
}

/** One request, no redirects followed (a 3xx is returned as is). Throws on network errors. */
export async function send(url: string, req: HttpRequest): Promise<HttpResponse> {
  const res = await request(url, {
    method: req.method,
    headers: req.headers,
    ...(req.body !== undefined ? { body: req.body } : {}),
    ...(req.signal ? { signal: req.signal } : {}),
    dispatcher: dispatcher(),
    headersTimeout: req.headersTimeout ?? 60_000,
    // SSE streams may idle between events for as long as the server likes; the caller's signal
    // (and the server's keep-alives) bound them.
    bodyTimeout: 0,
  });
  return { status: res.statusCode, headers: res.headers, body: res.body as HttpResponse["body"] };
}

/** Closes idle keep-alive connections so the process can exit once stdin closes. */
export async function closeHttp(): Promise<void> {
  const a = agent;
  agent = undefined;
  if (a) await a.destroy().catch(() => undefined);
}

/** The first value of a response header (lower-case name). */
export function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Reads a whole body as text, at most `max` bytes (more is an error: metadata is small). */
export async function readText(res: HttpResponse, max = 1024 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body) {
    n += c.length;
    if (n > max) {
      res.body.destroy();
      throw new Error(`response body over ${max} bytes`);
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Drains and discards a body (keeps the connection reusable). */
export async function discard(res: HttpResponse): Promise<void> {
  try {
    for await (const _ of res.body) {
      // discard
    }
  } catch {
    // the body's error is not this caller's concern
  }
}

const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

/** A loopback host name or literal (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(hostname: string): boolean {
  if (LOOPBACK_HOSTS.has(hostname)) return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/**
 * A URL the server (or its authorization server) handed us — `resource_metadata`,
 * `authorization_servers`, AS endpoints, a redirect hop — may be used when it is https:, or http:
 * on loopback, or on the very origin the user typed (a plain-http server on an intranet name the
 * user chose). Anything else (file:, javascript:, plain http to some other host) is refused:
 * MCP Security Best Practices, "Server-Side Request Forgery" (HTTPS for discovery URLs).
 */
export function checkDiscoveredUrl(raw: string, serverUrl: URL): URL {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new Error(`not a URL: ${JSON.stringify(raw.slice(0, 200))}`);
  }
  if (u.username || u.password) throw new Error(`URL with credentials refused: ${u.origin}`);
  if (u.protocol === "https:") return u;
  if (u.protocol === "http:" && (isLoopbackHost(u.hostname) || u.origin === serverUrl.origin)) return u;
  throw new Error(`refused ${u.protocol} URL ${JSON.stringify(u.href.slice(0, 200))}: https required`);
}

export interface JsonGet {
  status: number;
  json: unknown;
  headers: HttpResponse["headers"];
}

/**
 * GET a JSON document, following at most 5 redirects by hand, each hop checked with
 * `checkDiscoveredUrl`. A non-JSON body gives `json: undefined`.
 */
export async function getJson(
  url: URL,
  serverUrl: URL,
  headers: Record<string, string> = {},
  signal?: AbortSignal,
): Promise<JsonGet> {
  let at = url;
  for (let hop = 0; hop <= 5; hop++) {
    const res = await send(at.href, {
      method: "GET",
      headers: { accept: "application/json", ...headers },
      ...(signal ? { signal } : {}),
      headersTimeout: 30_000,
    });
    const location = header(res, "location");
    if (res.status >= 300 && res.status < 400 && location) {
      await discard(res);
      at = checkDiscoveredUrl(new URL(location, at).href, serverUrl);
      continue;
    }
    const text = await readText(res);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, headers: res.headers };
  }
  throw new Error(`too many redirects from ${url.origin}`);
}

/** POST a form (OAuth token endpoint) or JSON (RFC 7591 registration), no redirects. */
export async function postForJson(
  url: URL,
  body: { form: URLSearchParams } | { json: unknown },
  headers: Record<string, string> = {},
): Promise<JsonGet> {
  const isForm = "form" in body;
  const res = await send(url.href, {
    method: "POST",
    headers: {
      accept: "application/json",
      "content-type": isForm ? "application/x-www-form-urlencoded" : "application/json",
      ...headers,
    },
    body: isForm ? body.form.toString() : JSON.stringify(body.json),
    headersTimeout: 30_000,
  });
  const text = await readText(res);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, headers: res.headers };
}
