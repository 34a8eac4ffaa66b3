import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import { isIP } from "node:net";
import type { Readable } from "node:stream";
import { isLoopbackHost } from "../lib/hosts.ts";
import { GatewayError } from "../errors/errors.ts";

/**
 * The Host header values a listener serves (DNS-rebinding protection, MCP transports "Security
 * Warning"). `undefined` means any (a public listener with neither publicUrl nor allowedHosts,
 * which boot reports as EDGE_WARN_ANY_HOST).
 */
export function allowedHostSet(opts: {
  configured: string[];
  publicUrl: string | undefined;
  listenHost: string;
  port: number;
}): Set<string> | undefined {
  const set = new Set<string>(opts.configured.map((h) => h.toLowerCase()));
  if (opts.publicUrl) set.add(new URL(opts.publicUrl).host.toLowerCase());
  if (isLoopbackHost(opts.listenHost)) {
    for (const name of ["localhost", "127.0.0.1", "[::1]"]) set.add(`${name}:${opts.port}`);
    if (isIP(opts.listenHost) === 4) set.add(`${opts.listenHost}:${opts.port}`);
  }
  return set.size > 0 ? set : undefined;
}

/**
 * Host must be sent once: a server MUST answer 400 to a request with more than one Host field
 * (RFC 9112 §3.2). Node keeps only the first one in `req.headers`, while a proxy or upstream may
 * read the last, so the raw header list is counted (field names are case-insensitive).
 */
export function checkSingleHost(req: IncomingMessage): void {
  let count = 0;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]?.toLowerCase() === "host") count++;
  if (count > 1) throw new GatewayError("EDGE_BAD_HEADER", "Host must be sent once (RFC 9112 §3.2).");
}

/**
 * Refuses a repeated Host (400), a Host the listener does not serve and a cross-site Origin (403),
 * before anything else.
 */
export function checkHostAndOrigin(
  req: IncomingMessage,
  hosts: Set<string> | undefined,
  origins: ReadonlySet<string>,
): void {
  checkSingleHost(req);
  const host = req.headers.host?.toLowerCase();
  if (hosts && (!host || !hosts.has(host))) throw new GatewayError("EDGE_HOST_FORBIDDEN");
  const origin = req.headers.origin;
  if (origin === undefined) return;
  if (origins.has(origin)) return;
  // Same-origin browser requests: the Origin's host is one this listener serves.
  let originHost: string | undefined;
  try {
    originHost = new URL(origin).host.toLowerCase();
  } catch {
    originHost = undefined;
  }
  if (originHost && (hosts ? hosts.has(originHost) : originHost === host)) return;
  throw new GatewayError("EDGE_ORIGIN_FORBIDDEN");
}

/** A single-valued header; repeated values of headers that must be single are refused. */
export function single(req: { readonly headers: IncomingHttpHeaders }, name: string): string | undefined {
  const v = req.headers[name];
  if (Array.isArray(v)) throw new GatewayError("EDGE_BAD_HEADER", `${name} must not be repeated.`);
  return v;
}

/** POST bodies must be JSON (MCP transports: "Sending Messages to the Server"). */
export function checkPostHeaders(req: IncomingMessage, requireEventStream: boolean): void {
  const type = single(req, "content-type")?.split(";")[0]?.trim().toLowerCase();
  if (type !== "application/json") throw new GatewayError("EDGE_UNSUPPORTED_MEDIA_TYPE");
  const accept = (req.headers.accept ?? "").toLowerCase();
  const json =
    accept.includes("application/json") || accept.includes("*/*") || accept.includes("application/*");
  const sse = accept.includes("text/event-stream") || accept.includes("*/*");
  if (!json || (requireEventStream && !sse)) {
    throw new GatewayError("EDGE_NOT_ACCEPTABLE", "Accept must list application/json and text/event-stream.");
  }
}

/**
 * Reads the request body up to `max` bytes. A declared Content-Length over the cap is refused
 * before reading; a chunked body is counted and refused at the first byte over it. Either way at
 * most `max` bytes are read.
 *
 * listeners, not `for await`: leaving a
 * `for await` loop over the request destroys it, and with it the socket, before the 413 could be
 * written (the client saw ECONNRESET instead of the answer). Here the request is only paused; the
 * gateway closes the connection once the 413 has been sent.
 */
export function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > max) {
    return Promise.reject(new GatewayError("EDGE_BODY_TOO_LARGE", `The body is over ${max} bytes.`));
  }
  // Over the cap the request is only paused (the gateway closes the connection after the 413).
  // An error or a 'close' before 'end': the client went away mid-body, or the listener cut it off
  // at requestTimeout. Not an internal error (it was logged as EDGE_INTERNAL before this fix).
  return collectStream(req, max, {
    tooLarge: () => {
      req.pause();
      return new GatewayError("EDGE_BODY_TOO_LARGE", `The body is over ${max} bytes.`);
    },
    failed: (err) => new GatewayError("EDGE_CLIENT_CLOSED", undefined, err ? { cause: err } : undefined),
  });
}

/**
 * Collects a Node stream into one Buffer of at most `max` bytes, with listeners (no async iterator
 * and no promise per chunk): the one loop behind the client's request body (`readBody` above) and
 * upstream answers (src/upstream/reply.ts). `tooLarge` runs when the cap is passed (and may pause
 * or destroy the stream); `failed` turns an 'error', or a 'close' before 'end' (no error), into
 * the rejection.
 */
export function collectStream(
  stream: Readable,
  max: number,
  on: { tooLarge: () => Error; failed: (err: Error | undefined) => Error },
): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.off("error", onError);
      stream.off("close", onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        done();
        // `tooLarge` may destroy the stream: its error must not go unhandled (it would end the process).
        stream.on("error", ignoreError);
        reject(on.tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
    };
    const onError = (err: Error) => {
      done();
      reject(on.failed(err));
    };
    const onClose = () => {
      done();
      reject(on.failed(undefined));
    };
    stream.on("data", onData);
    stream.on("end", onEnd);
    stream.on("error", onError);
    stream.on("close", onClose);
  });
}

function ignoreError(): void {}

/** Mcp-Session-Id values are visible ASCII (0x21-0x7E), at most 256 characters here. */
export function validSessionId(id: string): boolean {
  return id.length > 0 && id.length <= 256 && /^[\x21-\x7e]+$/.test(id);
}

/** `validSessionId`, or EDGE_SESSION_ID_INVALID. */
export function checkSessionId(id: string): void {
  if (!validSessionId(id)) throw new GatewayError("EDGE_SESSION_ID_INVALID");
}

/**
 * Client headers that reach the upstream. An allow-list, not a deny-list: credentials, cookies,
 * hop-by-hop headers (RFC 9110 §7.6.1, including any named in Connection) and the edge's own
 * asserted headers never pass (RFC 9700 §4.13).
 */
export function forwardableHeaders(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  const headers = req.headers;
  const connection = headers.connection;
  // Hop-by-hop names listed in Connection; most requests name only keep-alive (or nothing).
  const hopByHop =
    connection === undefined
      ? undefined
      : new Set(
          connection
            .split(",")
            .map((s) => s.trim().toLowerCase())
            .filter(Boolean),
        );
  for (const name in headers) {
    const forward =
      name === "mcp-method" ||
      name === "mcp-name" ||
      name.startsWith("mcp-param-") ||
      name === "traceparent" ||
      name === "tracestate" ||
      name === "user-agent" ||
      name === "accept-language";
    if (!forward || hopByHop?.has(name)) continue;
    const value = headers[name];
    if (value === undefined) continue;
    out[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return out;
}
