import type { ServerConfig } from "./schema.ts";

/**
 * The scope the edge's authorization server issues for a route that defines none: a token is
 * issued for a resource only with a scope of it, and the edge does not check this one.
 */
export const IMPLICIT_ROUTE_SCOPE = "mcp:tools";

/**
 * Every scope of a route: its default and per-tool scopes; with the edge's authorization server
 * on, a route that defines none has the implicit one.
 */
export function routeScopes(server: ServerConfig, edgeAs: boolean): string[] {
  const scopes = [...new Set([...server.scopes.default, ...Object.values(server.scopes.tools).flat()])];
  if (scopes.length === 0 && edgeAs) scopes.push(IMPLICIT_ROUTE_SCOPE);
  return scopes;
}

/**
 * What a client is asked for when it names none of a route's scopes (the 401 challenge, an
 * authorization request without `scope`): the route's default scopes; with the edge's
 * authorization server on, else the route's first scope (RFC 6749 §3.3: the AS may apply a
 * default).
 */
export function defaultScopes(server: ServerConfig, edgeAs: boolean): string[] {
  if (server.scopes.default.length > 0) return [...server.scopes.default];
  return edgeAs ? routeScopes(server, true).slice(0, 1) : [];
}
