import { IDENTITY_HEADER, type IdentitySigner } from "../auth/identity.ts";
import type { RequestContext } from "../context.ts";
import { forwardableHeaders } from "../listen/hygiene.ts";
import { sessionHash } from "../session/manager.ts";

/**
 * The headers a request carries upstream: the client's allow-listed ones plus the edge's signed
 * identity. Never the client's credential (forwardableHeaders is an allow-list).
 */
export async function upstreamHeaders(
  ctx: RequestContext,
  identity: IdentitySigner | undefined,
): Promise<Record<string, string>> {
  const headers = forwardableHeaders(ctx.req);
  if (identity && ctx.principal) {
    const sid = ctx.session ? sessionHash(ctx.session.id) : undefined;
    headers[IDENTITY_HEADER] = await identity.token(ctx.principal, ctx.route.name, sid);
  }
  return headers;
}
