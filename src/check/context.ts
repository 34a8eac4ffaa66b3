import { randomBytes } from "node:crypto";
import { type Finding, finding, hasResponse, type Status } from "./findings.ts";
import type { Exchange, ProbeAnswer, ProbeRequest, Prober } from "./http.ts";

/** What every probe module works with: the target, the credentials, the client and the findings. */
export interface CheckContext {
  url: URL;
  /** The operator's headers (credentials), sent on every request that should be authenticated. */
  headers: Record<string, string>;
  /** True when the operator gave any header (credentials). */
  credentials: boolean;
  /** The bearer token from `-H 'Authorization: Bearer …'`, when one was given. */
  bearer?: string;
  prober: Prober;
  findings: Finding[];
  /** Probes not sent (budget, options), as notes for the report. */
  notes: string[];
}

export const CLIENT_INFO = { name: "mcp-edge-check", version: "1" } as const;
export const SESSION_VERSION = "2025-11-25";
export const MODERN_VERSION = "2026-07-28";
/** A host no resolver answers (RFC 6761 §6.4), for forged Host and Origin headers. */
export const FOREIGN_HOST = "mcp-edge-check.invalid";

export function record(
  ctx: CheckContext,
  id: string,
  status: Status,
  detail: string,
  evidence: Exchange[] = [],
): void {
  ctx.findings.push(finding(id, status, detail, evidence));
}

let nextId = 1;
export function rpcId(): number {
  return nextId++;
}

export function randomToken(bytes = 16): string {
  return randomBytes(bytes).toString("hex");
}

export const ACCEPT_BOTH = "application/json, text/event-stream";

/** POST one JSON-RPC message; `auth` false leaves the operator's credentials off. */
export async function post(
  ctx: CheckContext,
  message: unknown,
  extra: Record<string, string> = {},
  options: { auth?: boolean; url?: string; enoughId?: number | string } = {},
): Promise<{ answer: ProbeAnswer; exchange: Exchange }> {
  const req: ProbeRequest = {
    method: "POST",
    url: options.url ?? ctx.url.href,
    headers: {
      ...(options.auth === false ? {} : ctx.headers),
      "content-type": "application/json",
      accept: ACCEPT_BOTH,
      ...extra,
    },
    body: JSON.stringify(message),
  };
  if (options.enoughId !== undefined) req.enough = hasResponse(options.enoughId);
  return ctx.prober.send(req);
}

/** `_meta` every 2026-07-28 request carries. */
export function modernMeta(version: string = MODERN_VERSION): Record<string, unknown> {
  return {
    "io.modelcontextprotocol/protocolVersion": version,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
  };
}

/** A 2026-07-28 request with the headers mirrored correctly (override any with `headers`). */
export function modernRequest(
  method: string,
  params: Record<string, unknown> = {},
  version: string = MODERN_VERSION,
): { id: number; body: Record<string, unknown>; headers: Record<string, string> } {
  const id = rpcId();
  const headers: Record<string, string> = { "mcp-protocol-version": version, "mcp-method": method };
  const name = params.name ?? params.uri;
  if (typeof name === "string") headers["mcp-name"] = name;
  return {
    id,
    body: { jsonrpc: "2.0", id, method, params: { ...params, _meta: modernMeta(version) } },
    headers,
  };
}

export function initializeRequest(version: string = SESSION_VERSION): {
  id: number;
  body: Record<string, unknown>;
} {
  const id = rpcId();
  return {
    id,
    body: {
      jsonrpc: "2.0",
      id,
      method: "initialize",
      params: { protocolVersion: version, capabilities: {}, clientInfo: CLIENT_INFO },
    },
  };
}

export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h.endsWith(".localhost") || h === "::1" || /^127\./.test(h);
}

export function statusText(a: ProbeAnswer): string {
  return a.status === 0 ? `no answer (${a.error ?? "error"})` : `${a.status}`;
}
