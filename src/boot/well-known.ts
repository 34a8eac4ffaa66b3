import type { IdentitySigner } from "../auth/identity.ts";
import { protectedResourceMetadata, resourceMetadataUrl, resourceUrl } from "../auth/challenge.ts";
import type { Config } from "../config/schema.ts";
import { routeScopes } from "../config/scopes.ts";
import type { Route } from "../upstream/types.ts";

/**
 * Public metadata documents by path: the edge's identity-signing keys (JWKS), and RFC 9728
 * protected-resource metadata for every route that accepts OAuth (when `publicUrl` is set).
 */
export function wellKnownDocuments(
  config: Config,
  routes: Iterable<Route>,
  identity: IdentitySigner,
): Map<string, () => unknown> {
  const docs = new Map<string, () => unknown>();
  docs.set("/.well-known/mcp-edge/jwks.json", () => identity.jwks());
  const publicUrl = config.publicUrl;
  if (!publicUrl) return docs;
  for (const route of routes) {
    if (!route.config.auth.includes("oauth")) continue;
    const doc = protectedResourceMetadata({
      resource: resourceUrl(publicUrl, route.config.route),
      authorizationServers: [
        ...(config.auth.authorizationServer.enabled ? [publicUrl.replace(/\/$/, "")] : []),
        ...config.auth.oauth.map((i) => i.issuer),
      ],
      scopesSupported: routeScopes(route.config, config.auth.authorizationServer.enabled),
    });
    docs.set(new URL(resourceMetadataUrl(publicUrl, route.config.route)).pathname, () => doc);
  }
  return docs;
}
