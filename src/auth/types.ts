/**
 * Who is calling. Sessions, limits and audit key on the principal, never on the token or key that
 * proved it: a refreshed token or a rotated key of the same principal continues the
 * same session.
 */
export interface Principal {
  /**
   * Stable identity key: `anonymous`, `key:<server>:<tenant>:<consumer>` (API keys: the consumer
   * survives rotation), `oauth:<issuer>:<tenant>:<subject>`.
   */
  readonly id: string;
  readonly method: "none" | "apiKey" | "oauth";
  readonly tenant: string | null;
  /** The API key's consumer or the token's `sub`. */
  readonly subject: string;
  /** OAuth `client_id` / `azp` when present. */
  readonly clientId?: string;
  /** The API key's id (never its secret). */
  readonly keyId?: string;
  readonly issuer?: string;
  readonly scopes: readonly string[];
  /** Tools this credential may call; undefined = no restriction of its own. */
  readonly tools?: readonly string[];
  /** When the credential stops being valid (ms since epoch), if known. */
  readonly expiresAt?: number;
}

export const ANONYMOUS: Principal = {
  id: "anonymous",
  method: "none",
  tenant: null,
  subject: "anonymous",
  scopes: [],
};
