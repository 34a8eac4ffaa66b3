/**
 * The part of oidc-provider (v9, which ships no type declarations) the edge's authorization
 * server uses. Loose on purpose: the configuration object is oidc-provider's, documented there.
 */
declare module "oidc-provider" {
  import type { IncomingMessage, ServerResponse } from "node:http";

  export interface OidcClient {
    clientId: string;
    clientName?: string;
    redirectUris: string[];
    applicationType?: string;
    clientIdMetadataDocument?: boolean;
    metadata(): Record<string, unknown>;
    redirectUriAllowed(value: string): boolean;
  }

  export interface OidcInteraction {
    uid: string;
    jti: string;
    exp: number;
    returnTo: string;
    params: Record<string, unknown>;
    prompt: { name: string; reasons: string[]; details: Record<string, unknown> };
    session?: { accountId?: string };
    grantId?: string;
    result?: Record<string, unknown>;
    lastSubmission?: Record<string, unknown>;
    save(ttl: number): Promise<string>;
    destroy(): Promise<void>;
  }

  export interface OidcGrant {
    jti: string;
    accountId: string;
    clientId: string;
    addOIDCScope(scope: string): void;
    addResourceScope(resource: string, scope: string): void;
    getOIDCScope(): string;
    getResourceScopeEncountered(resource: string): string;
    save(): Promise<string>;
    destroy(): Promise<void>;
  }

  export default class Provider {
    constructor(issuer: string, configuration: Record<string, unknown>);
    proxy: boolean;
    issuer: string;
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    on(event: string, listener: (...args: never[]) => void): this;
    Client: { find(id: string): Promise<OidcClient | undefined>; prototype: OidcClient };
    Interaction: { find(id: string): Promise<OidcInteraction | undefined> };
    Grant: {
      new (init: { accountId: string; clientId: string }): OidcGrant;
      find(id: string): Promise<OidcGrant | undefined>;
    };
    RefreshToken: {
      find(
        id: string,
      ): Promise<
        (Record<string, unknown> & { grantId: string; accountId: string; clientId: string }) | undefined
      >;
    };
    interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<OidcInteraction>;
  }

  export const interactionPolicy: {
    base(): { get(name: string): { checks: { add(check: unknown): void } } };
    Check: new (reason: string, description: string, check: (ctx: unknown) => boolean) => unknown;
  };

  export const errors: Record<
    string,
    new (
      description?: string,
      detail?: string,
    ) => Error & { error: string; status: number; error_description?: string }
  >;
}
