import type { ServerConfig } from "../config/schema.ts";
import { GatewayError } from "../errors/errors.ts";
import { isRequest, type RpcMessage } from "../mcp/jsonrpc.ts";
import type { Principal } from "./types.ts";

/** The scopes a call needs on a route: a tool's own, else the route default. */
export function requiredScopes(config: ServerConfig, method: string, tool: string | undefined): string[] {
  // Own entries only: a tool named "constructor" or "toString" is not a key of every object.
  if (method === "tools/call" && tool !== undefined && Object.hasOwn(config.scopes.tools, tool))
    return config.scopes.tools[tool] ?? config.scopes.default;
  return config.scopes.default;
}

function missing(required: readonly string[], granted: readonly string[]): string[] {
  return required.filter((s) => !granted.includes(s));
}

/** Whether a principal may call a tool: its allow-list, then the scopes the tool needs. */
export function toolAllowed(config: ServerConfig, principal: Principal, tool: string): boolean {
  if (principal.method === "none") return true;
  if (principal.tools && !principal.tools.includes(tool)) return false;
  return missing(requiredScopes(config, "tools/call", tool), principal.scopes).length === 0;
}

/**
 * The authorize stage: every request in the body is checked before anything reaches the upstream.
 * A tool outside the credential's allow-list is 403 EDGE_TOOL_FORBIDDEN; missing scopes are 403
 * `insufficient_scope` naming every scope the call needs, in one challenge (MCP 2026-07-28:
 * "all scopes needed for the operation"), built by `challenge`.
 */
export function authorize(
  config: ServerConfig,
  principal: Principal,
  messages: readonly RpcMessage[],
  challenge: (scope: string[]) => string,
): void {
  if (principal.method === "none") return;
  for (const msg of messages) {
    if (!isRequest(msg)) continue;
    const params = msg.params as { name?: unknown } | undefined;
    const tool = msg.method === "tools/call" && typeof params?.name === "string" ? params.name : undefined;
    if (tool !== undefined && principal.tools && !principal.tools.includes(tool)) {
      throw new GatewayError(
        "EDGE_TOOL_FORBIDDEN",
        `This credential may not call the tool ${tool.slice(0, 128)}.`,
        {
          rpcId: msg.id,
        },
      );
    }
    const required = requiredScopes(config, msg.method, tool);
    if (missing(required, principal.scopes).length === 0) continue;
    if (principal.method === "oauth") {
      throw new GatewayError("EDGE_AUTH_INSUFFICIENT_SCOPE", "The token lacks the scopes this call needs.", {
        rpcId: msg.id,
        data: { required },
        headers: { "www-authenticate": challenge(required) },
      });
    }
    throw new GatewayError("EDGE_TOOL_FORBIDDEN", "This API key lacks the scopes this call needs.", {
      rpcId: msg.id,
      data: { required },
    });
  }
}

/**
 * `tools/list` shows only the tools the principal may call. Returns the rewritten JSON-RPC message
 * text, or undefined when nothing had to change (the upstream's bytes then pass as they are).
 */
export function filterToolsList(data: string, allowed: (tool: string) => boolean): string | undefined {
  let msg: { result?: { tools?: unknown } };
  try {
    msg = JSON.parse(data) as { result?: { tools?: unknown } };
  } catch {
    return undefined;
  }
  const tools = msg.result?.tools;
  if (!Array.isArray(tools)) return undefined;
  const kept = tools.filter(
    (t) => typeof (t as { name?: unknown })?.name === "string" && allowed((t as { name: string }).name),
  );
  if (kept.length === tools.length) return undefined;
  return JSON.stringify({ ...msg, result: { ...msg.result, tools: kept } });
}
