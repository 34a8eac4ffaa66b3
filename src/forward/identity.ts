import { IDENTITY_HEADER, type IdentitySigner } from "../auth/identity.ts";
import type { RequestContext } from "../context.ts";
import { forwardableHeaders } from "../mcp/hygiene.ts";
import { sessionHash } from "../session/manager.ts";

/**
 * The headers a request carries upstream: the client's allow-listed ones plus the edge's signed
 * identity. Never the client's credential (forwardableHeaders is an allow-list).
 */
export function upstreamHeaders(
  ctx: RequestContext,
  identity: IdentitySigner | undefined,
): Record<string, string> | Promise<Record<string, string>> {
  const headers = forwardableHeaders(ctx.req);
  if (!identity || !ctx.principal) return headers;
  const sid = ctx.session ? sessionHash(ctx.session.id) : undefined;
  // A token to reuse is set at once; only a new one (or a due key rotation) is waited for.
  const reused = identity.cached(ctx.principal, ctx.route.name, sid);
  if (reused !== undefined) {
    headers[IDENTITY_HEADER] = reused;
    return headers;
  }
  return identity.token(ctx.principal, ctx.route.name, sid).then((token) => {
    headers[IDENTITY_HEADER] = token;
    return headers;
  });
}
