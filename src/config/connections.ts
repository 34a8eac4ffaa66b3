import type { ConnectionConfig } from "./schema.ts";

/**
 * Provider templates for `connections.*.template`: the endpoints and authorization parameters each
 * provider documents, and how its token answers differ from RFC 6749 §5.1. A key written in the
 * connection overrides the template's; `params` are merged (the connection's win).
 */
export interface ConnectionTemplate {
  readonly authorizationUrl?: string;
  readonly tokenUrl?: string;
  readonly revocationUrl?: string;
  readonly params: Readonly<Record<string, string>>;
  /** The authorization parameter that carries the scopes (Slack asks user scopes as `user_scope`). */
  readonly scopeParam: string;
  /** Separator between scopes in that parameter (RFC 6749 §3.3: a space; Slack: a comma). */
  readonly scopeSeparator: string;
  /** Where the user's token sits in a token answer: at the top (RFC 6749 §5.1), or in `authed_user` (Slack). */
  readonly tokenAt: "top" | "authed_user";
  /** Whether the token endpoint takes PKCE (RFC 7636); every listed provider does but Slack. */
  readonly pkce: boolean;
}

const STANDARD = {
  params: {},
  scopeParam: "scope",
  scopeSeparator: " ",
  tokenAt: "top",
  pkce: true,
} as const;

export const CONNECTION_TEMPLATES: Readonly<Record<ConnectionConfig["template"], ConnectionTemplate>> = {
  generic: STANDARD,
  // GitHub App user-to-server tokens: 8 h access tokens and single-use refresh tokens (6 months).
  // OAuth Apps issue non-expiring tokens without refresh; both use these endpoints.
  github: {
    ...STANDARD,
    authorizationUrl: "https://github.com/login/oauth/authorize",
    tokenUrl: "https://github.com/login/oauth/access_token",
  },
  // A refresh token only with access_type=offline, and again on a later consent only with prompt=consent.
  google: {
    ...STANDARD,
    authorizationUrl: "https://accounts.google.com/o/oauth2/v2/auth",
    tokenUrl: "https://oauth2.googleapis.com/token",
    revocationUrl: "https://oauth2.googleapis.com/revoke",
    params: { access_type: "offline", prompt: "consent" },
  },
  // User tokens (xoxp-) come in `authed_user` of oauth.v2.access, asked for with `user_scope`;
  // with token rotation on, they expire in 12 h and carry a refresh token.
  slack: {
    authorizationUrl: "https://slack.com/oauth/v2/authorize",
    tokenUrl: "https://slack.com/api/oauth.v2.access",
    params: {},
    scopeParam: "user_scope",
    scopeSeparator: ",",
    tokenAt: "authed_user",
    pkce: false,
  },
  // Atlassian 3LO: `audience` and `prompt=consent` are required; refresh tokens rotate and need
  // the `offline_access` scope.
  atlassian: {
    ...STANDARD,
    authorizationUrl: "https://auth.atlassian.com/authorize",
    tokenUrl: "https://auth.atlassian.com/oauth/token",
    params: { audience: "api.atlassian.com", prompt: "consent" },
  },
  // Microsoft identity platform v2 (Graph): multi-tenant `common` endpoints; a single-tenant app
  // overrides both URLs with its directory id. Refresh tokens need the `offline_access` scope.
  microsoft: {
    ...STANDARD,
    authorizationUrl: "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
    tokenUrl: "https://login.microsoftonline.com/common/oauth2/v2.0/token",
  },
};

/** A connection with its template applied: what the vault's OAuth client works from. */
export interface ResolvedConnection {
  readonly name: string;
  readonly displayName: string;
  readonly issuer: string | undefined;
  readonly authorizationUrl: string | undefined;
  readonly tokenUrl: string | undefined;
  readonly revocationUrl: string | undefined;
  readonly clientId: string;
  readonly clientSecret: string | undefined;
  readonly scopes: readonly string[];
  readonly params: Readonly<Record<string, string>>;
  readonly scopeParam: string;
  readonly scopeSeparator: string;
  readonly tokenAt: ConnectionTemplate["tokenAt"];
  readonly pkce: boolean;
  readonly refreshBeforeMs: number;
}

export function resolveConnection(name: string, c: ConnectionConfig): ResolvedConnection {
  const t = CONNECTION_TEMPLATES[c.template];
  return {
    name,
    displayName: c.displayName ?? name,
    issuer: c.issuer,
    authorizationUrl: c.authorizationUrl ?? t.authorizationUrl,
    tokenUrl: c.tokenUrl ?? t.tokenUrl,
    revocationUrl: c.revocationUrl ?? t.revocationUrl,
    clientId: c.clientId,
    clientSecret: c.clientSecret,
    scopes: c.scopes,
    params: { ...t.params, ...c.params },
    scopeParam: t.scopeParam,
    scopeSeparator: t.scopeSeparator,
    tokenAt: t.tokenAt,
    pkce: t.pkce,
    refreshBeforeMs: c.refreshBefore,
  };
}
