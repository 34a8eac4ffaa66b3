import type { Authenticator } from "../../auth/authenticate.ts";
import type { Principal, RequestContext } from "../../context.ts";
import { GatewayError } from "../../errors/errors.ts";
import { logScope } from "../../observability/logger.ts";
import type { AuthFailureLimiter } from "../../ratelimit/auth-failures.ts";
import type { Stage } from "../compose.ts";

const FILE = "src/pipeline/stages/identity.ts";

/**
 * Failed authentications per client address (`rateLimits.authFailures`): an address over its
 * budget is refused (429) before its credential is checked. The failures themselves are counted
 * by `authenticate`, where a presented credential is refused (no second promise per request).
 */
export function authFailureLimit(limiter: AuthFailureLimiter): Stage<RequestContext> {
  return {
    name: "auth-failure-limit",
    does: "Refuses an address over its budget of failed authentications before its credential is read (`authenticate` counts each refused credential).",
    codes: ["EDGE_RATE_LIMITED"],
    file: FILE,
    run: limiter.enabled
      ? (ctx) => {
          const refused = limiter.check(ctx);
          if (refused) throw refused;
        }
      : undefined,
  };
}

/**
 * Authenticate before reading the body: credentials are in the headers, and a client that cannot
 * authenticate must not make the edge buffer a body. Every request authenticates; a session id
 * never stands in for a credential (MCP authorization: tokens on every request). A presented
 * credential refused with 401 counts against the client's address (`auth-failure-limit`).
 */
export function authenticate(
  authenticator: Authenticator,
  failures: AuthFailureLimiter,
): Stage<RequestContext, { principal: Principal }> {
  const counted = failures.enabled;
  return {
    name: "authenticate",
    does: "Verifies the API key or OAuth token of the route's `auth` methods and resolves the principal and its tenant; a refused credential counts against the address.",
    codes: [
      "EDGE_AUTH_REQUIRED",
      "EDGE_AUTH_INVALID_TOKEN",
      "EDGE_AUTH_INVALID_REQUEST",
      "EDGE_TENANT_REQUIRED",
      "EDGE_AUTH_UNAVAILABLE",
      "EDGE_STORE_UNAVAILABLE",
    ],
    file: FILE,
    run: (ctx) =>
      authenticator.authenticate(ctx.req, ctx.route).then(
        (principal) => {
          ctx.principal = principal;
          const scope = logScope.getStore();
          if (scope) scope.tenant = principal.tenant;
        },
        (err: unknown) => {
          if (counted && err instanceof GatewayError && err.code === "EDGE_AUTH_INVALID_TOKEN")
            failures.failed(ctx.req);
          throw err;
        },
      ),
  };
}
