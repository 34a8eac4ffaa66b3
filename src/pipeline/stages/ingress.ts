import type { RequestContext } from "../../context.ts";
import { GatewayError } from "../../errors/errors.ts";
import { checkHostAndOrigin } from "../../mcp/hygiene.ts";
import type { Stage } from "../compose.ts";

const FILE = "src/pipeline/stages/ingress.ts";

/**
 * Host and Origin, first of all: a page that rebinds DNS to the edge, or a foreign site, must learn
 * nothing, not even an auth challenge (MCP transports, "Security Warning"; 403).
 */
export function hostOrigin(deps: {
  /** Host header values served; undefined = any (known once the listener is bound). */
  hosts: () => Set<string> | undefined;
  origins: ReadonlySet<string>;
}): Stage<RequestContext> {
  return {
    name: "host-origin",
    does: "Refuses a Host sent more than once (RFC 9112 §3.2), a Host the listener does not serve and a cross-site Origin (DNS rebinding).",
    codes: ["EDGE_BAD_HEADER", "EDGE_HOST_FORBIDDEN", "EDGE_ORIGIN_FORBIDDEN"],
    file: FILE,
    run: (ctx) => checkHostAndOrigin(ctx.req, deps.hosts(), deps.origins),
  };
}

const ALLOWED: Record<RequestContext["endpoint"], readonly string[]> = {
  mcp: ["GET", "POST", "DELETE"],
  "legacy-sse": ["GET"],
  "legacy-messages": ["POST"],
};
const ALLOW_HEADER: Record<RequestContext["endpoint"], string> = {
  mcp: "GET, POST, DELETE",
  "legacy-sse": "GET",
  "legacy-messages": "POST",
};

/** The transport's HTTP methods per endpoint (405 with `Allow` otherwise). */
export function method(): Stage<RequestContext> {
  return {
    name: "method",
    does: "Allows the transport's methods per endpoint: GET/POST/DELETE on the MCP endpoint, GET on `/sse`, POST on `/messages`.",
    codes: ["EDGE_METHOD_NOT_ALLOWED"],
    file: FILE,
    run: (ctx) => {
      if (!ALLOWED[ctx.endpoint].includes(ctx.req.method ?? "")) {
        throw new GatewayError("EDGE_METHOD_NOT_ALLOWED", undefined, {
          headers: { allow: ALLOW_HEADER[ctx.endpoint] },
        });
      }
    },
  };
}
