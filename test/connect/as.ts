/**
 * A real OAuth 2.1 authorization server for the bridge's login tests: oidc-provider 9 on
 * 127.0.0.1:0 with the authorization code grant (PKCE S256 required), refresh tokens that rotate,
 * dynamic client registration (RFC 7591), resource indicators (RFC 8707: JWT access tokens whose
 * `aud` is the MCP resource) and a short access-token lifetime. The only stand-in is the user: an
 * interaction endpoint that signs "alice" in and grants the requested scopes at once, so a plain
 * HTTP client following redirects plays the browser (`followLogin`).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair } from "jose";

interface ProviderInstance {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  on(event: string, listener: (...args: unknown[]) => void): void;
  interactionFinished(
    req: IncomingMessage,
    res: ServerResponse,
    result: unknown,
    opts?: unknown,
  ): Promise<void>;
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<InteractionDetails>;
  Grant: (new (init: { clientId: string; accountId: string }) => GrantInstance) & {
    find(id: string): Promise<GrantInstance | undefined>;
  };
}
interface InteractionDetails {
  grantId?: string;
  params: Record<string, unknown>;
  session: { accountId: string };
  prompt: {
    name: string;
    details: { missingOIDCScope?: string[]; missingResourceScopes?: Record<string, string[]> };
  };
}
interface GrantInstance {
  addOIDCScope(scope: string): void;
  addResourceScope(resource: string, scope: string): void;
  save(): Promise<string>;
}
type ProviderClass = new (issuer: string, configuration: Record<string, unknown>) => ProviderInstance;

const OIDC_PROVIDER = "oidc-provider";

export interface TestAsOptions {
  /** The MCP resource (RFC 8707) tokens are issued for; it becomes `aud`. */
  resource: string;
  /** Access token lifetime, seconds. Default 4. */
  ttlSeconds?: number;
  scope?: string;
  /** A pre-registered public client (for --client-id). */
  preRegistered?: { clientId: string; redirectUri: string };
}

export interface TestAs {
  issuer: string;
  jwksUri: string;
  /** Successful grants by grant type. */
  grants: { authorization_code: number; refresh_token: number; failedRefresh: number };
  /** Clients registered dynamically. */
  registrations(): number;
  stop(): Promise<void>;
}

class Store {
  readonly #all = new Map<string, Record<string, unknown>>();
  adapter(): new (model: string) => unknown {
    const all = this.#all;
    return class Adapter {
      readonly #model: string;
      constructor(model: string) {
        this.#model = model;
      }
      async upsert(id: string, payload: Record<string, unknown>): Promise<void> {
        all.set(`${this.#model}:${id}`, payload);
      }
      async find(id: string): Promise<Record<string, unknown> | undefined> {
        return all.get(`${this.#model}:${id}`);
      }
      async findByUid(uid: string): Promise<Record<string, unknown> | undefined> {
        for (const [k, v] of all) if (k.startsWith(`${this.#model}:`) && v.uid === uid) return v;
        return undefined;
      }
      async findByUserCode(): Promise<undefined> {
        return undefined;
      }
      async consume(id: string): Promise<void> {
        const v = all.get(`${this.#model}:${id}`);
        if (v) v.consumed = Math.floor(Date.now() / 1000);
      }
      async destroy(id: string): Promise<void> {
        all.delete(`${this.#model}:${id}`);
      }
      async revokeByGrantId(grantId: string): Promise<void> {
        for (const [k, v] of all) if (v.grantId === grantId) all.delete(k);
      }
    };
  }
}

export async function startTestAs(options: TestAsOptions): Promise<TestAs> {
  const { default: Provider } = (await import(OIDC_PROVIDER)) as { default: ProviderClass };
  const scope = options.scope ?? "mcp:tools";
  const ttl = options.ttlSeconds ?? 4;
  const grants = { authorization_code: 0, refresh_token: 0, failedRefresh: 0 };
  let registrations = 0;
  const { privateKey } = await generateKeyPair("RS256", { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: "RS256", use: "sig" };

  // Filled once the provider exists (it needs the issuer, which needs the listening port).
  const ref: { provider?: ProviderInstance; handler?: (req: IncomingMessage, res: ServerResponse) => void } =
    {};
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const m = /^\/interaction\/([^/]+)$/.exec(path);
    if (m && ref.provider) {
      // The user: signs in as alice, then approves what the client asked for.
      const p = ref.provider;
      (async () => {
        const details = await p.interactionDetails(req, res);
        if (details.prompt.name === "login") {
          await p.interactionFinished(
            req,
            res,
            { login: { accountId: "alice" } },
            { mergeWithLastSubmission: false },
          );
          return;
        }
        const grant = details.grantId
          ? ((await p.Grant.find(details.grantId)) as GrantInstance)
          : new p.Grant({
              clientId: details.params.client_id as string,
              accountId: details.session.accountId,
            });
        const d = details.prompt.details;
        if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(" "));
        for (const [resource, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
          grant.addResourceScope(resource, scopes.join(" "));
        }
        const grantId = await grant.save();
        await p.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      })().catch((err: unknown) => {
        res.statusCode = 500;
        res.end(String(err));
      });
      return;
    }
    ref.handler?.(req, res);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const store = new Store();

  const provider = new Provider(issuer, {
    adapter: store.adapter(),
    clients: options.preRegistered
      ? [
          {
            client_id: options.preRegistered.clientId,
            redirect_uris: [options.preRegistered.redirectUri],
            grant_types: ["authorization_code", "refresh_token"],
            response_types: ["code"],
            token_endpoint_auth_method: "none",
            application_type: "native",
          },
        ]
      : [],
    scopes: ["openid", "offline_access", ...scope.split(" ")],
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(32).toString("base64url")] },
    findAccount: async (_ctx: unknown, id: string) => ({ accountId: id, claims: async () => ({ sub: id }) }),
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    issueRefreshToken: async (_ctx: unknown, client: { grantTypeAllowed(t: string): boolean }) =>
      client.grantTypeAllowed("refresh_token"),
    rotateRefreshToken: () => true,
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => options.resource,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope,
          audience: options.resource,
          accessTokenTTL: ttl,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: "RS256" } },
        }),
      },
    },
    ttl: {
      AccessToken: ttl,
      RefreshToken: 3600,
      Grant: 3600,
      Session: 3600,
      Interaction: 600,
      AuthorizationCode: 60,
    },
  });
  provider.on("grant.success", (ctx: unknown) => {
    const type = (ctx as { oidc?: { params?: { grant_type?: string } } }).oidc?.params?.grant_type;
    if (type === "authorization_code") grants.authorization_code++;
    if (type === "refresh_token") grants.refresh_token++;
  });
  provider.on("grant.error", (ctx: unknown) => {
    const type = (ctx as { oidc?: { params?: { grant_type?: string } } }).oidc?.params?.grant_type;
    if (type === "refresh_token") grants.failedRefresh++;
  });
  provider.on("registration_create.success", () => {
    registrations++;
  });
  ref.provider = provider;
  ref.handler = provider.callback();
  return {
    issuer,
    jwksUri: `${issuer}/jwks`,
    grants,
    registrations: () => registrations,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * Plays the browser: GETs the authorization URL and follows every redirect (keeping cookies, as a
 * browser does) until the loopback callback answers. Returns the callback's status.
 */
export async function followLogin(url: string, maxHops = 20): Promise<number> {
  const jar = new Map<string, string>();
  let at = url;
  for (let hop = 0; hop < maxHops; hop++) {
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
    const res = await fetch(at, { redirect: "manual", headers: cookie ? { cookie } : {} });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const eq = pair!.indexOf("=");
      jar.set(pair!.slice(0, eq).trim(), pair!.slice(eq + 1).trim());
    }
    const location = res.headers.get("location");
    await res.arrayBuffer();
    if (res.status >= 300 && res.status < 400 && location) {
      at = new URL(location, at).href;
      continue;
    }
    return res.status;
  }
  throw new Error("too many redirects while logging in");
}
