/**
 * How a person signs in at the edge's authorization server. The AS owns the OAuth side (the
 * authorization request, consent, codes and tokens); a login method only answers "who is this
 * person, for which tenant, allowed what". Methods are chosen per interaction: one configured
 * method is used directly; several are offered on a chooser page.
 *
 * Routes the AS gives every method (public listener):
 *
 *   GET       /as/login/{name}/{uid}       start(): show a form, or redirect to an IdP
 *   GET|POST  /as/login/{name}/callback    finish(): the form post or the IdP's redirect
 *
 * `callback` is one fixed URL per method (what an IdP registers as its redirect URI); the method
 * finds the interaction again itself (a hidden form field, or its own sealed `state`).
 *
 * Implementations: `apikey.ts` (a person pastes an mcp-edge API key: the grant is that key's
 * consumer's, in the key's tenant, bounded by its scopes and tool allow-list) and `federation.ts`
 * (the edge is an OIDC relying party to the organisation's IdP).
 */
import type { IncomingMessage, ServerResponse } from "node:http";

/** What a login method may know of the authorization request it signs a person in for. */
export interface InteractionView {
  /** The interaction's id (oidc-provider's `uid`): part of the start URL, echoed back at finish. */
  readonly uid: string;
  readonly clientId: string;
  /** The client's `client_name`, when it has one. */
  readonly clientName: string | undefined;
  /** Scopes the client asked for (already reduced to the scopes the edge defines). */
  readonly scopes: readonly string[];
  /** The RFC 8707 resource (an MCP route's URL), when the client named one. */
  readonly resource: string | undefined;
  /** When the interaction stops being usable (ms since epoch). */
  readonly expiresAt: number;
}

/** Who signed in. The grant the AS then issues belongs to (tenant, subject). */
export interface LoginResult {
  /** The method's `name` (audited, kept with the grant). */
  readonly method: string;
  /** The tenant the grant belongs to; null only where tenancy is not required. */
  readonly tenant: string | null;
  /** The person (or the API key's consumer): `sub` of the tokens the AS issues. */
  readonly subject: string;
  /** API-key sign-in: the key's consumer and id (never its secret). */
  readonly consumer?: string;
  readonly keyId?: string;
  /** Upper bound of the scopes a grant of this login may hold; undefined = no bound of its own. */
  readonly scopes?: readonly string[];
  /** Tools a grant of this login may call; undefined = no restriction of its own. */
  readonly tools?: readonly string[];
  /**
   * RFC 8707 resources (route URLs) a grant of this login may name; undefined = any. An API key
   * is for one server: its grant is for that route only.
   */
  readonly resources?: readonly string[];
  /** Federation: the IdP's refresh token, kept sealed with the grant (see `LoginMethod.recheck`). */
  readonly upstreamRefresh?: string;
  /** A name to show on the consent page ("alice@example.com", "key ci-bot"). */
  readonly display?: string;
}

/** What the AS hands a login method: its pages, its URLs and the interactions. */
export interface LoginEnv {
  /** The edge's public URL (issuer), without a trailing slash. */
  readonly publicUrl: string;
  /** `${publicUrl}/as/login/{name}/callback`. */
  callbackUrl(name: string): string;
  /** The interaction of a uid, or undefined when it is unknown or expired. */
  interaction(uid: string): Promise<InteractionView | undefined>;
  /** Writes one of the edge's pages (no script, strict CSP, not frameable). `body` is escaped HTML. */
  page(res: ServerResponse, status: number, title: string, body: string): void;
  /** A token bound to this browser and interaction, to put in a form (CSRF, RFC 6749 §10.12). */
  csrfToken(req: IncomingMessage, res: ServerResponse, uid: string): string;
  /** True when `token` is the one `csrfToken` gave this browser for `uid`. */
  checkCsrf(req: IncomingMessage, uid: string, token: string | undefined): boolean;
  /** Reads a small urlencoded form body (the AS caps its size). */
  readForm(req: IncomingMessage): Promise<URLSearchParams>;
}

/** The outcome of `finish`: the person signed in, for the interaction `uid`. */
export interface LoginFinish {
  readonly uid: string;
  readonly result: LoginResult;
}

export interface LoginMethod {
  /** URL segment and config name: `apiKey`, `idp`. */
  readonly name: string;
  /** The label of its button on the chooser page ("Sign in with an API key"). */
  readonly label: string;
  /** Starts the sign-in for an interaction: answers `res` (a form, or a redirect to the IdP). */
  start(
    interaction: InteractionView,
    req: IncomingMessage,
    res: ServerResponse,
    env: LoginEnv,
  ): Promise<void>;
  /**
   * Completes it (the form post, or the IdP's redirect). Returns who signed in, or undefined when
   * it answered `res` itself (a wrong key shown again on the form, an IdP error page). Never
   * throws for bad input from the browser: that is an answer on the method's own page.
   */
  finish(
    req: IncomingMessage,
    res: ServerResponse,
    query: URLSearchParams,
    env: LoginEnv,
  ): Promise<LoginFinish | undefined>;
  /**
   * Called on each refresh of a grant this method signed in (optional): federation refreshes at
   * the IdP with `upstreamRefresh`, so a user disabled there stops refreshing here. Returns the
   * refresh token to keep (rotated or the same), or throws `LoginRevoked` to end the grant.
   */
  recheck?(login: LoginResult): Promise<{ upstreamRefresh?: string }>;
}

/** Thrown by `recheck`: the person may no longer use the grant (the AS revokes it). */
export class LoginRevoked extends Error {
  override readonly name = "LoginRevoked";
}
