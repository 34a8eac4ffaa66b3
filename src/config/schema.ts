import { z } from "zod";
import { parseDuration, parseSize } from "./units.ts";
import { parseAllowCidr, parseAllowHost } from "../egress/policy.ts";
import { parseRate, TOOL_NAME } from "./rate.ts";

/**
 * The configuration schema: the single source of truth for `mcp-edge.yaml` (one file of ~800
 * lines on purpose: every key, default and unit in one place, in the order of docs/config.md). Defaults live here,
 * with their units; `schema/mcp-edge.schema.json` is generated from it (`npm run schema`) and a
 * test fails when the two drift. Every object is strict: an unknown key is a boot error, not a
 * silently ignored typo.
 */

/** A duration: "250ms", "30s", "5m", "24h", "7d" or milliseconds. Parsed to milliseconds. */
const duration = z
  .union([z.string(), z.number()])
  .transform((v, ctx) => {
    try {
      return parseDuration(v);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
      return z.NEVER;
    }
  })
  .meta({ description: 'Duration: "250ms", "30s", "5m", "24h", "7d", or a number of milliseconds.' });

/** A size: "64KiB", "1MiB" or bytes. Parsed to bytes. */
const size = z
  .union([z.string(), z.number()])
  .transform((v, ctx) => {
    try {
      return parseSize(v);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
      return z.NEVER;
    }
  })
  .meta({ description: 'Size: "512B", "64KiB", "1MiB", "1GiB", or a number of bytes.' });

const port = z.number().int().min(0).max(65535);

const listenSchemaWithPort = (defaultPort: number) =>
  z.strictObject({
    host: z.string().min(1).prefault("127.0.0.1").meta({ description: "Address to bind." }),
    port: port.prefault(defaultPort).meta({ description: "TCP port; 0 picks a free one." }),
  });
const listenSchema = listenSchemaWithPort(8787);
const adminListenSchema = listenSchemaWithPort(8788);

const httpUrl = z.url({ protocol: /^https?$/ });

/** Routes are absolute paths without a trailing slash, e.g. /github/mcp. */
const route = z
  .string()
  .regex(/^\/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$/, "must be an absolute URL path")
  .refine((r) => r === "/" || !r.endsWith("/"), "must not end with a slash")
  .refine((r) => !r.includes("/.well-known/"), "must not be under /.well-known/");

const healthSchema = z.strictObject({
  interval: duration.prefault("10s").meta({ description: "Time between active probes of each instance." }),
  timeout: duration.prefault("2s").meta({ description: "A probe slower than this fails." }),
  unhealthyAfter: z
    .number()
    .int()
    .min(1)
    .prefault(2)
    .meta({ description: "Failed probes before an instance is out." }),
});

const stdioSchema = z.strictObject({
  command: z.string().min(1).meta({ description: "Executable to spawn." }),
  args: z.array(z.string()).prefault([]).meta({ description: "Arguments passed to the command." }),
  cwd: z
    .string()
    .optional()
    .meta({ description: "Working directory of the child. Default: the directory mcp-edge runs in." }),
  env: z
    .record(z.string(), z.string())
    .prefault({})
    .meta({ description: "Variables set for the child (values support ${ENV} interpolation)." }),
  inheritEnv: z.array(z.string()).prefault(["PATH", "HOME", "LANG", "TZ", "NODE_OPTIONS"]).meta({
    description: "Names of the edge's own environment variables passed to the child; nothing else is.",
  }),
  mode: z.enum(["session", "shared"]).prefault("session").meta({
    description: "`session`: one process per MCP session. `shared`: one process for every session.",
  }),
  restartBackoff: duration
    .prefault("1s")
    .meta({ description: "Wait before respawning a crashed shared process." }),
  maxProcesses: z.number().int().min(1).prefault(32).meta({
    description:
      "`mode: session`: live processes of this server at most; a new session past it is 503 EDGE_PROCESS_LIMIT with Retry-After.",
  }),
  maxProcessesPerPrincipal: z.number().int().min(1).prefault(8).meta({
    description:
      "`mode: session`: live processes of this server one principal may hold at most (503 EDGE_PROCESS_LIMIT).",
  }),
  idleTimeout: duration.prefault("10m").meta({
    description:
      "`mode: session`: a process with no call for this long is stopped (its session stays; the next call starts a new process per `sessions.onBackendLoss`). Keep it below `sessions.idleTtl`.",
  }),
});

const upstreamSchema = z
  .strictObject({
    urls: z
      .array(httpUrl)
      .min(1)
      .optional()
      .meta({ description: "Streamable HTTP instances of the server." }),
    sse: httpUrl
      .optional()
      .meta({ description: "A legacy HTTP+SSE (2024-11-05) endpoint, the GET /sse URL." }),
    stdio: stdioSchema
      .optional()
      .meta({ description: "A local command mcp-edge spawns and speaks MCP to over stdin/stdout." }),
    health: healthSchema
      .prefault({ interval: "10s", timeout: "2s", unhealthyAfter: 2 })
      .meta({ description: "Active health checks of each instance (HTTP and SSE upstreams)." }),
    timeout: duration
      .prefault("5m")
      .meta({ description: "Deadline for one upstream request (including a streamed answer)." }),
    connectTimeout: duration
      .prefault("5s")
      .meta({ description: "Deadline for opening a connection to an instance or spawning a process." }),
    headers: z
      .record(z.string(), z.string())
      .prefault({})
      .meta({ description: "Static headers added to every upstream request (values support ${ENV})." }),
  })
  .refine((u) => [u.urls, u.sse, u.stdio].filter((x) => x !== undefined).length === 1, {
    message: "exactly one of urls, sse, stdio is required",
  });

const sessionsSchema = z.strictObject({
  idleTtl: duration.prefault("24h").meta({ description: "A session unused this long ends." }),
  onBackendLoss: z.enum(["reinitialize", "expire"]).prefault("reinitialize").meta({
    description:
      "When the upstream instance holding a session is gone: replay initialize on a healthy one (transparent), or answer 404.",
  }),
});

/**
 * The list-result cache of one server (src/cache). 2026-07-28 results carry their own `ttlMs` and
 * `cacheScope` (server/utilities/caching.mdx); session-era results carry none, so they are cached
 * only when the operator sets `sessionTtl`.
 */
const cacheSchema = z.strictObject({
  enabled: z.boolean().prefault(true).meta({
    description:
      "Cache `tools/list`, `resources/list`, `resources/templates/list` and `prompts/list` results of this server.",
  }),
  maxTtl: duration.prefault("10m").meta({
    description: "2026-07-28: an entry is kept at most this long, whatever `ttlMs` the upstream gave.",
  }),
  sessionTtl: duration.prefault(0).meta({
    description:
      "Session era (no `ttlMs`): how long a list result is reused for the same principal and initialize capabilities. 0 = not cached.",
  }),
  sharePublic: z.boolean().prefault(true).meta({
    description:
      'Share `cacheScope: "public"` entries between the principals of a tenant (never between tenants). false = every entry is private.',
  }),
  maxEntries: z.number().int().min(1).prefault(1000).meta({ description: "Entries kept (LRU)." }),
  maxBytes: size.prefault("16MiB").meta({ description: "Bytes of cached answers kept (LRU)." }),
  maxEntryBytes: size.prefault("1MiB").meta({ description: "A larger answer is not cached." }),
});

const authMethod = z.enum(["apiKey", "oauth", "none"]);

/**
 * The JWS algorithms a resource server may accept: asymmetric only (an HMAC secret would be shared
 * with the IdP). The one list: the schema and OAuthVerifier's boot check both use it.
 */
export const JWS_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
] as const;
const jwsAlgorithm = z.enum(JWS_ALGORITHMS);

const issuerSchema = z.strictObject({
  issuer: httpUrl.meta({ description: "Exact `iss` of accepted tokens (RFC 8414 issuer identifier)." }),
  jwksUri: httpUrl.optional().meta({
    description: "JWKS URL. Default: `jwks_uri` from the issuer's metadata (RFC 8414, then OIDC discovery).",
  }),
  algorithms: z
    .array(jwsAlgorithm)
    .min(1)
    .prefault(["RS256", "ES256"])
    .meta({ description: "Accepted signature algorithms; the token header never chooses (RFC 8725 §3.1)." }),
  audience: z.string().optional().meta({
    description: "Required `aud`. Default: the route's resource URL, publicUrl + route (RFC 8707).",
  }),
  requireTyp: z
    .boolean()
    .prefault(true)
    .meta({ description: "Require `typ: at+jwt` (RFC 9068). Relax only for an IdP that cannot set it." }),
  scopeClaim: z
    .string()
    .prefault("scope")
    .meta({ description: "Claim holding granted scopes (space-separated or array)." }),
  introspection: z
    .strictObject({
      url: httpUrl.meta({ description: "RFC 7662 introspection endpoint, for opaque tokens." }),
      clientId: z.string().min(1),
      clientSecret: z.string().min(1).meta({ description: "From the environment: ${NAME}." }),
      cacheMaxAge: duration
        .prefault("60s")
        .meta({ description: "Longest an introspection answer is reused (never past `exp`)." }),
    })
    .optional(),
  tenants: z.array(z.string().min(1).max(256)).min(1).optional().meta({
    description:
      "Tenants this issuer may assert (the `tenancy.claim` of its tokens). A token naming another tenant, or none, is refused with 403 EDGE_TENANT_NOT_ALLOWED. An issuer without this list may assert any tenant that no other issuer lists. Set it on every issuer when several are configured.",
  }),
  jwksCacheMaxAge: duration.prefault("10m").meta({ description: "Refetch the JWKS this often." }),
  jwksMaxStale: duration.prefault("24h").meta({
    description: "Keep verifying with the last good JWKS this long while the JWKS endpoint is down.",
  }),
});

// ---- per-user upstream credentials: connections and the vault (src/vault/) --------------------

/** A connection's name: it is a URL path segment (`/connect/{name}`). */
export const CONNECTION_NAME = /^[A-Za-z0-9_-]{1,64}$/;

const connectionSchema = z
  .strictObject({
    template: z
      .enum(["generic", "github", "google", "slack", "atlassian", "microsoft"])
      .prefault("generic")
      .meta({
        description:
          "Provider defaults (endpoints, parameters, quirks); explicit keys below override them. `generic` needs `issuer` or both endpoints.",
      }),
    displayName: z
      .string()
      .min(1)
      .max(100)
      .optional()
      .meta({ description: "Name shown on the connect pages." }),
    issuer: httpUrl.optional().meta({
      description:
        "OAuth/OIDC issuer whose metadata (RFC 8414, then OpenID discovery) names the endpoints not given here.",
    }),
    authorizationUrl: httpUrl.optional().meta({ description: "Authorization endpoint (RFC 6749 §3.1)." }),
    tokenUrl: httpUrl.optional().meta({ description: "Token endpoint (RFC 6749 §3.2)." }),
    revocationUrl: httpUrl
      .optional()
      .meta({ description: "RFC 7009 revocation endpoint: tokens are revoked there on disconnect." }),
    clientId: z.string().min(1),
    clientSecret: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "From the environment: ${NAME}. Absent for a public client (PKCE only)." }),
    scopes: z.array(z.string().min(1)).prefault([]).meta({ description: "Scopes asked for at connect." }),
    params: z
      .record(z.string(), z.string())
      .prefault({})
      .meta({ description: "Extra authorization request parameters (added to the template's)." }),
    refreshBefore: duration
      .prefault("60s")
      .meta({ description: "Refresh a user's token this long before it expires." }),
  })
  .meta({ description: "A third-party OAuth 2.0 / OIDC provider users connect their accounts of." });

const vaultSchema = z
  .strictObject({
    key: z.string().min(1).meta({
      description:
        "Key that encrypts users' stored tokens (AES-256-GCM): 32 random bytes, base64 or hex, from the environment (${NAME}). `openssl rand -base64 32`.",
    }),
    previousKeys: z.array(z.string().min(1)).prefault([]).meta({
      description:
        "Earlier keys, still read (records are re-encrypted with `key` when next written): key rotation without reconnecting users.",
    }),
    connectTicketTtl: duration.prefault("15m").meta({
      description: "Lifetime of the link a call hands out for connecting (`/connect/{name}?ticket=`).",
    }),
  })
  .meta({ description: "The token vault: users' upstream tokens, encrypted at rest." });

// ---- federated login at the edge's authorization server (src/as/federation.ts) -----------------

/** A federated IdP's name: it is a URL path segment (`/oauth/idp/{name}/callback`). */
export const IDP_NAME = /^[A-Za-z0-9_-]{1,64}$/;

const federatedIdpSchema = z
  .strictObject({
    issuer: httpUrl.meta({
      description:
        "The IdP's OpenID Connect issuer: its discovery document names the endpoints and keys; ID tokens must carry exactly this `iss`.",
    }),
    clientId: z.string().min(1).meta({ description: "The edge's client id at the IdP." }),
    clientSecret: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "From the environment: ${NAME}. Absent for a public client (PKCE only)." }),
    displayName: z.string().min(1).max(100).optional().meta({ description: "Name shown on the login page." }),
    scopes: z
      .array(z.string().min(1))
      .prefault(["openid", "email", "profile", "offline_access"])
      .refine((s) => s.includes("openid"), "must include openid")
      .meta({
        description:
          "Scopes asked at the IdP. `offline_access` (or the IdP's equivalent) gets the refresh token the edge re-checks the user with.",
      }),
    authorizationParams: z.record(z.string(), z.string()).prefault({}).meta({
      description:
        "Extra authorization request parameters (Google: `access_type: offline`, `prompt: consent`).",
    }),
    tenantClaim: z.string().min(1).optional().meta({
      description:
        "ID token (or userinfo) claim naming the user's tenant (a top-level name, else a dotted path); a login without it is refused. Default: `tenancy.claim`, required only when `tenancy.required`.",
    }),
    tenant: z.string().min(1).max(256).optional().meta({
      description: "The tenant of every user of this IdP (one IdP per tenant), instead of a claim.",
    }),
    tenants: z.array(z.string().min(1).max(256)).min(1).optional().meta({
      description: "Tenants this IdP may assert through `tenantClaim`; a login naming another is refused.",
    }),
    subjectClaim: z.string().min(1).prefault("sub").meta({
      description: "ID token claim that names the user (the edge's subject is `<idp name>|<value>`).",
    }),
    requireRefreshToken: z.boolean().prefault(true).meta({
      description:
        "Refuse a login for which the IdP issued no refresh token: without one, a user disabled at the IdP would keep refreshing at the edge.",
    }),
  })
  .refine((c) => !(c.tenant && c.tenantClaim), "set tenant or tenantClaim, not both")
  .meta({ description: "An OpenID Connect provider people sign in at (the edge is its relying party)." });

export const federationSchema = z
  .record(z.string().regex(IDP_NAME, "IdP names are 1-64 of A-Z a-z 0-9 _ -"), federatedIdpSchema)
  .refine((r) => Object.keys(r).length > 0, "at least one IdP")
  .meta({
    description:
      "Federated login: the IdPs people sign in at, by name. Their refresh tokens are sealed with `vault.key`.",
  });

export type FederationConfig = z.output<typeof federationSchema>;
export type FederatedIdpConfig = FederationConfig[string];

const credentialsSchema = z
  .strictObject({
    headers: z
      .record(z.string(), z.string())
      .optional()
      .meta({ description: "Secret headers sent to the upstream (values must be ${ENV} references)." }),
    oauth: z
      .strictObject({
        tokenUrl: httpUrl.meta({
          description: "Token endpoint for the client-credentials grant (RFC 6749 §4.4).",
        }),
        clientId: z.string().min(1),
        clientSecret: z.string().min(1).meta({ description: "From the environment: ${NAME}." }),
        scope: z.string().optional(),
        resource: z
          .string()
          .optional()
          .meta({ description: "RFC 8707 resource indicator sent with the grant." }),
        refreshBefore: duration
          .prefault("60s")
          .meta({ description: "Refresh this long before `expires_in` runs out." }),
      })
      .optional(),
  })
  .extend({
    connection: z.string().regex(CONNECTION_NAME).optional().meta({
      description:
        "A connection (top-level `connections`): each user's own token for it, from the vault, is sent as `Authorization: Bearer` on that user's calls. A call that needs it before the user connected answers with the connect URL (URL elicitation, -32042).",
    }),
  })
  .refine((c) => !(c.connection && c.oauth), {
    message: "connection and oauth both set the upstream Authorization: choose one",
  })
  .meta({
    description:
      "Credentials mcp-edge holds for the upstream. The client's own token or key is never forwarded.",
  });

// ---- rate limits (src/ratelimit) --------------------------------------------------------------

/** A rate: `N/unit`, optionally `N/unit burst B` (src/ratelimit/spec.ts). Parsed at boot. */
const rate = z
  .string()
  .transform((v, ctx) => {
    try {
      return parseRate(v);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
      return z.NEVER;
    }
  })
  .meta({
    description:
      'Rate: "N/unit" (unit s, min, h, d, or a duration such as 10s): N calls per fixed window of that length, all of which may come at once. "N/unit burst B" keeps the average rate but admits at most B calls per window of unit×B/N (rounded up to whole seconds): "600/min burst 100" is at most 100 calls in any 10 s window.',
  });

// ---- the edge's OAuth authorization server (src/as/) ------------------------------------------

/** A redirect URI a client may register: https, http on loopback only, or a private-use scheme. */
const redirectUri = z.string().min(1).max(2048);

const preRegisteredClientSchema = z.strictObject({
  clientId: z.string().min(1).max(256).meta({ description: "The client's `client_id`." }),
  clientName: z.string().min(1).max(200).optional().meta({ description: "Shown on the consent page." }),
  clientSecret: z.string().min(32).optional().meta({
    description:
      "A confidential client's secret (${ENV}); without it the client is public (`token_endpoint_auth_method: none`, PKCE only).",
  }),
  redirectUris: z.array(redirectUri).min(1).meta({
    description:
      "Exact redirect URIs; an http loopback URI (127.0.0.1, [::1], localhost) matches on any port (RFC 8252 §7.3).",
  }),
  scopes: z.array(z.string().min(1)).optional().meta({
    description: "Scopes this client may ask for. Default: every scope the edge defines.",
  }),
  skipConsent: z.boolean().prefault(false).meta({
    description: "First-party client: no consent page (the login still happens).",
  }),
});

const authorizationServerSchema = z
  .strictObject({
    enabled: z.boolean().prefault(false).meta({
      description:
        "Serve the OAuth 2.1 authorization server at publicUrl (issuer = publicUrl): discovery, authorize, token, register, revoke, JWKS, login and consent pages. Its tokens are accepted on every route with `oauth`.",
    }),
    login: z
      .strictObject({
        apiKey: z.boolean().prefault(true).meta({
          description:
            "A person signs in by pasting an mcp-edge API key: the grant is that key's consumer's, in its tenant, bounded by its scopes and tool allow-list.",
        }),
        idp: federatedIdpSchema.optional().meta({
          description:
            "Federated sign-in: the edge is an OIDC relying party to this IdP (login method `idp`; redirect URI `<publicUrl>/as/login/idp/callback`).",
        }),
        idps: federationSchema.optional().meta({
          description:
            "Several federated IdPs by name (one per tenant, say): each a button on the login page, redirect URI `<publicUrl>/as/login/<name>/callback`.",
        }),
      })
      .prefault({ apiKey: true })
      .meta({ description: "How a person signs in (one or more)." }),
    registration: z
      .strictObject({
        preRegistered: z
          .array(preRegisteredClientSchema)
          .prefault([])
          .meta({ description: "Clients known in advance (also through the admin API)." }),
        cimd: z
          .strictObject({
            enabled: z.boolean().prefault(true).meta({
              description:
                "Accept Client ID Metadata Documents: an HTTPS `client_id` whose document is fetched.",
            }),
            maxBytes: size.prefault("5KiB").meta({ description: "Largest metadata document." }),
            timeout: duration.prefault("5s").meta({ description: "Longest a document fetch may take." }),
            cacheMin: duration
              .prefault("5m")
              .meta({ description: "A document is cached at least this long." }),
            cacheMax: duration.prefault("24h").meta({
              description: "A document is cached at most this long (Cache-Control max-age within the two).",
            }),
            allowPrivateNetworks: z.boolean().prefault(false).meta({
              description:
                "Unsafe opt-in: fetch documents from loopback and private addresses (a local client's own document in development).",
            }),
          })
          .prefault({})
          .meta({ description: "Client ID Metadata Documents (the MCP authorization spec's first choice)." }),
        dcr: z
          .strictObject({
            enabled: z.boolean().prefault(true).meta({
              description: "Dynamic Client Registration (RFC 7591), for clients without a metadata document.",
            }),
            rate: rate.prefault("20/min").meta({ description: "Registrations per client address." }),
            unusedTtl: duration.prefault("7d").meta({
              description: "A registered client that never completes a login is deleted after this long.",
            }),
          })
          .prefault({})
          .meta({ description: "Dynamic Client Registration (RFC 7591)." }),
      })
      .prefault({})
      .meta({ description: "How clients come to be known, in the MCP spec's order." }),
    tokens: z
      .strictObject({
        accessTtl: duration.prefault("15m").meta({ description: "Lifetime of an access token (a JWT)." }),
        refreshTtl: duration.prefault("30d").meta({
          description: "Lifetime of a grant's refresh tokens, from the login (rotation does not extend it).",
        }),
        refreshGrace: duration
          .prefault("60s")
          .refine((ms) => ms <= 300_000, "at most 5m")
          .meta({
            description:
              "The previous refresh token replayed within this long returns the same new pair; later, the grant is revoked (RFC 9700 §4.14).",
          }),
        codeTtl: duration
          .prefault("60s")
          .refine((ms) => ms <= 600_000, "at most 10m (RFC 6749 §4.1.2)")
          .meta({ description: "Lifetime of an authorization code." }),
        keyRotation: duration.prefault("30d").meta({ description: "A new token-signing key this often." }),
      })
      .prefault({})
      .meta({ description: "Token lifetimes and refresh rotation." }),
    consent: z
      .strictObject({
        remember: duration.prefault("30d").meta({
          description:
            "A consent is remembered this long per (tenant, user, client, scopes); 0 asks every time.",
        }),
      })
      .prefault({})
      .meta({ description: "The consent page." }),
    scopeDescriptions: z.record(z.string().min(1), z.string().min(1).max(200)).prefault({}).meta({
      description: "Plain words for scopes on the consent page (`mcp:tools: Call the tools`).",
    }),
  })
  .prefault({})
  .meta({ description: "The OAuth 2.1 authorization server at the edge (issuer = publicUrl)." });

const callLimitsSchema = z
  .strictObject({
    key: rate.optional().meta({
      description:
        "Calls per principal: an API key's consumer (rotation keeps the count), an OAuth subject, or the anonymous caller.",
    }),
    session: rate.optional().meta({ description: "Calls per MCP session." }),
    tenant: rate.optional().meta({ description: "Calls per tenant, all of its principals together." }),
    initialize: rate.optional().meta({
      description:
        "`initialize` calls per principal (session churn). `initialize` also counts against `key` and `tenant`.",
    }),
    tool: rate.optional().meta({
      description: "Default `tools/call` rate per principal and tool, for tools not listed in `tools`.",
    }),
    tools: z
      .record(z.string().regex(TOOL_NAME, "a tool name: 1-128 of A-Z a-z 0-9 _ - ."), rate)
      .prefault({})
      .meta({ description: "Per-tool rates (per principal), for expensive tools; they replace `tool`." }),
    concurrency: z
      .strictObject({
        session: z
          .number()
          .int()
          .min(1)
          .optional()
          .meta({ description: "Calls in flight at once per MCP session (until the upstream is done)." }),
      })
      .prefault({})
      .meta({ description: "In-flight caps." }),
  })
  .meta({
    description:
      'Rate limits of this server\'s MCP calls (a `tools/call` is one call; notifications, responses and GET/DELETE are not counted). Every counter is per tenant and server. Rates are "N/unit" (unit s, min, h, d, or a duration such as 10s): N calls per fixed window, all of which may come at once; "N/unit burst B" keeps the average and admits at most B calls per window of unit×B/N (whole seconds): "600/min burst 100" is at most 100 calls in any 10 s window. A refused call is 429 EDGE_RATE_LIMITED with Retry-After, RateLimit-Policy and RateLimit, and consumes nothing from the other limits. Each limit is off unless set.',
  });

const rateLimitsSchema = z.strictObject({
  authFailures: z
    .union([z.literal("off"), rate])
    .prefault("60/min")
    .meta({
      description:
        'Failed authentications (401 for a presented credential) per client address (IPv6: per /64). Past it, requests from that address are refused with 429 before their credential is checked, until the window ends. "off" disables it.',
    }),
});

/**
 * Outbound requests of a stdio server, through the egress proxy (src/egress/proxy.ts). The address
 * policy (no loopback, private, link-local or metadata targets) always applies; this block narrows
 * it (`allow`) or opens it (the named opt-ins).
 */
const egressTarget = z.string().transform((v, ctx) => {
  try {
    // The key the address policy compares with (lower-case name, canonical IP, IPv6 bracketed).
    return parseAllowHost(v);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
    return z.NEVER;
  }
});

const egressSchema = z.strictObject({
  allow: z.array(egressTarget).prefault([]).meta({
    description:
      'Targets "host:port" this server may reach through the egress proxy; when set, the only ones. An entry is also the named opt-in for that one target on a private, loopback or link-local address (logged at boot as EDGE_WARN_EGRESS_PRIVATE when its host is such an address).',
  }),
  allowPrivate: z.boolean().prefault(false).meta({
    description:
      "Unsafe opt-in: private, loopback and link-local addresses are allowed for every target (EDGE_WARN_EGRESS_PRIVATE at boot). Opens addresses, not ports: without an `allow` entry naming host:port, only ports 80 and 443 are reachable.",
  }),
});

const serverSchema = z.strictObject({
  route: route.meta({ description: "Public path of the MCP endpoint, e.g. /github/mcp." }),
  upstream: upstreamSchema.meta({
    description: "Where the MCP server runs: exactly one of `urls`, `sse`, `stdio`.",
  }),
  auth: z.array(authMethod).min(1).prefault(["apiKey"]).meta({
    description:
      "Accepted credentials: `apiKey` (keys from the admin API), `oauth` (tokens from `auth.oauth` issuers), `none` (named opt-in: loopback listeners only).",
  }),
  scopes: z
    .strictObject({
      default: z.array(z.string()).prefault([]).meta({ description: "Scopes every call needs." }),
      tools: z
        .record(z.string(), z.array(z.string()))
        .prefault({})
        .meta({ description: "Scopes a `tools/call` of that tool needs (instead of `default`)." }),
    })
    .prefault({ default: [], tools: {} })
    .meta({ description: "OAuth scopes; API keys carry their own scopes and tool allow-lists." }),
  credentials: credentialsSchema.optional(),
  sessions: sessionsSchema
    .prefault({ idleTtl: "24h", onBackendLoss: "reinitialize" })
    .meta({ description: "MCP session lifetime and failover." }),
  cache: cacheSchema
    .prefault({
      enabled: true,
      maxTtl: "10m",
      sessionTtl: 0,
      sharePublic: true,
      maxEntries: 1000,
      maxBytes: "16MiB",
      maxEntryBytes: "1MiB",
    })
    .meta({ description: "Response cache for list results, per tenant and authorization context." }),
  limits: callLimitsSchema.optional(),
  tools: z
    .strictObject({
      enforceList: z.boolean().prefault(true).meta({
        description:
          "Refuse (EDGE_TOOL_UNKNOWN) a `tools/call` of a tool that is not in the server's `tools/list` as the edge last saw it for the call's session (2026-07-28: authorization context); with no view yet the edge fetches the list first. false: any name the other checks allow is forwarded (names are still checked for invisible characters and variants of configured names).",
      }),
      refreshAfter: duration.prefault("5s").meta({
        description:
          "A call naming a tool missing from a complete view refetches the list when the view is older than this (a server that added a tool without a list_changed the edge saw); younger views refuse at once.",
      }),
    })
    .prefault({})
    .meta({ description: "Tool names: the server's list as the edge saw it (docs/lifecycle.md)." }),
  egress: egressSchema.prefault({ allow: [], allowPrivate: false }).meta({
    description:
      "Egress of a stdio server: its outbound HTTP(S) goes through the edge's egress proxy (HTTP_PROXY/HTTPS_PROXY with per-process credentials), checked per request and recorded on the tool call's audit record.",
  }),
});

const streamsSchema = z.strictObject({
  bufferEvents: z
    .number()
    .int()
    .min(1)
    .prefault(1000)
    .meta({ description: "Events kept per stream for replay." }),
  bufferBytes: size.prefault("4MiB").meta({ description: "Bytes kept per stream for replay." }),
  ttl: duration
    .prefault("10m")
    .meta({ description: "How long a finished or abandoned stream stays replayable." }),
  keepAlive: duration.prefault("15s").meta({ description: "SSE comment sent on idle streams." }),
  retry: duration.prefault("1s").meta({ description: "`retry:` hint sent when the edge closes a stream." }),
  bufferBudget: size.prefault("256MiB").meta({
    description:
      "Bytes of buffered stream events this instance keeps in all, every stream together (replay buffers of streams whose client is slow, gone or not reading). Past it, the least recently read streams are dropped first: their response ends with EDGE_STREAM_BUDGET_EXCEEDED. A tenant's share of it must hold one result of `limits.maxResultBytes`. 0 = no budget.",
  }),
  tenantShare: z.number().gt(0).max(1).prefault(0.5).meta({
    description:
      "Fraction of `bufferBudget` one tenant's streams may hold; past it that tenant's least recently read streams go first, whatever other tenants hold.",
  }),
});

const limitsSchema = z.strictObject({
  maxBodyBytes: size.prefault("4MiB").meta({ description: "Largest request body; more is 413." }),
  headersTimeout: duration
    .prefault("10s")
    .meta({ description: "Headers must arrive within this; else 408." }),
  requestTimeout: duration
    .prefault("30s")
    .meta({ description: "The whole request body must arrive within this." }),
  keepAliveTimeout: duration
    .prefault("65s")
    .meta({ description: "Idle keep-alive connections close after this (above the load balancer's)." }),
  maxHeaderBytes: size.prefault("16KiB").meta({ description: "Largest request header block; more is 431." }),
  maxStdioProcesses: z.number().int().min(1).prefault(64).meta({
    description:
      "Live stdio processes of `mode: session` servers at most over every server of this gateway together (each server's `upstream.stdio.maxProcesses` bounds it alone); a new session past it is 503 EDGE_PROCESS_LIMIT with Retry-After.",
  }),
  maxResultBytes: size.prefault("64MiB").meta({
    description:
      "Largest upstream answer the edge relays: one JSON body, SSE event or stdio line (a tool result with its JSON-RPC envelope). Up to it, answers reach the client whole over every transport; past it the call gets EDGE_RESULT_TOO_LARGE and its audit record says so. At least `maxBodyBytes`.",
  }),
  json: z
    .strictObject({
      maxDepth: z.number().int().min(2).max(512).prefault(64).meta({
        description: "Objects and arrays nested in one another (the outermost counts 1); deeper is 400.",
      }),
      maxMembers: z
        .number()
        .int()
        .min(16)
        .prefault(1000)
        .meta({ description: "Members of one object; more is 400." }),
      maxElements: z
        .number()
        .int()
        .min(100)
        .prefault(10_000)
        .meta({ description: "Elements of one array (a batch included); more is 400." }),
      maxStringLength: z.number().int().min(256).prefault(1_048_576).meta({
        description:
          "Characters (UTF-16 code units) of one string or member name, after unescaping; longer is 400.",
      }),
      maxNumberLength: z.number().int().min(24).max(1000).prefault(40).meta({
        description:
          "Characters of one number as written; longer is 400 (readers disagree on long numbers: a double keeps about 17 digits).",
      }),
    })
    .prefault({})
    .meta({
      description:
        "Bounds of a request body's JSON, checked in the single pass that parses it (400 EDGE_JSON_LIMIT, never forwarded).",
    }),
});

const securitySchema = z.strictObject({
  allowedOrigins: z.array(z.string()).prefault([]).meta({
    description:
      "Browser origins allowed to call MCP routes (exact, e.g. https://app.example.com): their CORS preflights are answered and their answers carry the grant. Other origins are refused (403). Requests without Origin are not affected.",
  }),
  allowedHosts: z.array(z.string()).prefault([]).meta({
    description:
      "Host header values served (host or host:port). Default: the publicUrl host, plus localhost names on a loopback listener.",
  }),
  trustForwardedHeaders: z
    .boolean()
    .prefault(false)
    .meta({ description: "Unsafe opt-in: take client address and scheme from X-Forwarded-*." }),
});

// ---- metrics and traces (src/observability/metrics.ts, tracing.ts) ---------------------------

const metricsSchema = z.strictObject({
  enabled: z
    .boolean()
    .prefault(true)
    .meta({ description: "Serve Prometheus metrics at `GET /metrics` on the admin listener." }),
  token: z.string().min(32, "the metrics token must be at least 32 characters").optional().meta({
    description:
      "Bearer token a scraper must send (${MCP_EDGE_METRICS_TOKEN}); without it /metrics is open to whoever reaches the admin listener. Not the admin token: a scraper needs no admin rights.",
  }),
  maxTools: z.number().int().min(0).max(10_000).prefault(100).meta({
    description:
      'Distinct `tool` label values kept per server; later tool names are counted as "other" (a client inventing tool names cannot multiply the series).',
  }),
  maxTenants: z.number().int().min(0).max(100_000).prefault(100).meta({
    description:
      'Distinct `tenant` label values kept; later tenants are counted as "other". 0 drops the label.',
  }),
  process: z
    .boolean()
    .prefault(true)
    .meta({ description: "Also export the process's own metrics (CPU, memory, event-loop delay, GC)." }),
  otel: z.boolean().prefault(false).meta({
    description:
      "Also record `mcp.server.operation.duration` and `mcp.server.session.duration` (OpenTelemetry semantic conventions for MCP) through the global @opentelemetry/api MeterProvider the host registers (e.g. `node --import` of an OpenTelemetry SDK setup with an OTLP metric exporter). The Prometheus page has them either way.",
  }),
});

const tracingSchema = z.strictObject({
  enabled: z.boolean().prefault(false).meta({
    description:
      "Create OpenTelemetry spans per the semantic conventions for MCP (a SERVER span `{mcp.method.name} {target}` per request, a CLIENT span per upstream exchange) and pass W3C trace context upstream (headers and `params._meta`), through the global @opentelemetry/api provider and propagator (registered by the host, e.g. `node --import` of an OpenTelemetry SDK setup). Implied by `otlp`.",
  }),
  serviceName: z
    .string()
    .min(1)
    .prefault("mcp-edge")
    .meta({ description: "`service.name` of exported spans." }),
  sampleRatio: z.number().min(0).max(1).prefault(1).meta({
    description:
      "With `otlp`: share of new traces sampled (a trace the client started keeps the client's decision).",
  }),
  otlp: z
    .strictObject({
      url: httpUrl.meta({ description: "OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces." }),
      headers: z
        .record(z.string(), z.string())
        .prefault({})
        .meta({ description: "Headers sent with each export (e.g. a collector's API key via ${ENV})." }),
    })
    .optional()
    .meta({ description: "Export spans over OTLP/HTTP (JSON) with the edge's own SDK provider." }),
});

// ---- audit (src/audit) ---------------------------------------------------------------------------

/** A regular expression source, compiled at boot (an invalid one is a config error). */
const pattern = z.string().refine(
  (v) => {
    try {
      new RegExp(v, "g");
      return true;
    } catch {
      return false;
    }
  },
  { message: "not a valid regular expression" },
);

const auditSchema = z.strictObject({
  arguments: z.enum(["digest", "redacted", "full"]).prefault("digest").meta({
    description:
      "What a record keeps of a call's arguments: `digest` (SHA-256 of their canonical JSON only), `redacted` (the digest and the arguments with secrets replaced by [REDACTED]: `redact.paths` and `redact.patterns`), or `full` (the digest and the arguments as sent, unredacted). Every mode bounds string lengths and size.",
  }),
  redact: z
    .strictObject({
      paths: z.array(z.string().min(1)).prefault([]).meta({
        description:
          "Argument paths redacted in `redacted` mode, added to the built-in secret key names (password, token, secret, api_key, authorization, ...). A bare name matches that key at any depth (case-insensitive); a dotted path (`db.credentials.*`) matches from the root, `*` standing for any one key.",
      }),
      patterns: z.array(pattern).prefault([]).meta({
        description:
          "Regular expressions whose matches inside string arguments are redacted in `redacted` mode, added to the built-in ones (Bearer tokens, mcp-edge keys, JWTs, AWS/GitHub/OpenAI-style keys, PEM private keys).",
      }),
    })
    .prefault({})
    .meta({ description: "Secrets in arguments." }),
  maxStringLength: z.number().int().min(16).max(1_000_000).prefault(1024).meta({
    description: "Longer string values in recorded arguments are cut (with the length and a hash).",
  }),
  maxArgumentsBytes: size
    .prefault("64KiB")
    .meta({ description: "Recorded arguments larger than this keep only their digest." }),
  flushInterval: duration.prefault("100ms").meta({
    description:
      "Records are written in batches this often. After a SIGKILL at most this much is missing (docs/audit.md).",
  }),
  queue: z
    .number()
    .int()
    .min(100)
    .prefault(10_000)
    .meta({ description: "Records waiting in memory for a flush before tools/call is refused (503)." }),
  sqlite: z.string().optional().meta({
    description:
      "Database file for audit records. Default: `store.sqlite` (the same file, its own connection).",
  }),
  spool: z
    .strictObject({
      path: z.string().optional().meta({
        description:
          "Append-only JSON-lines file where records wait while the audit store is unavailable. Default: `audit-spool.jsonl` beside the store file.",
      }),
      maxBytes: size.prefault("64MiB").meta({
        description:
          "When the spool reaches this size, tools/call is refused with 503 EDGE_AUDIT_UNAVAILABLE until the store is back.",
      }),
    })
    .prefault({})
    .meta({ description: "Where records go while the store is down." }),
});

// ---- egress of the edge itself (src/egress/index.ts, guard.ts, policy.ts) -------------------------

/** An `allowCidrs` entry: a CIDR or one address, parsed by ipaddr.js (policy.ts). */
const egressCidr = z.string().refine(
  (v) => {
    try {
      parseAllowCidr(v);
      return true;
    } catch {
      return false;
    }
  },
  { message: "not a CIDR (10.1.0.0/16, fd00:1::/48) or an IP address" },
);

const edgeEgressSchema = z.strictObject({
  allowPrivateNetworks: z.boolean().prefault(false).meta({
    description:
      "Unsafe opt-in: URLs discovered at run time (JWKS URIs from metadata, client metadata documents) and redirect hops may reach private, loopback, link-local, CGNAT and unique-local addresses. Cloud metadata, multicast, reserved and unspecified addresses stay denied. URLs written in this file (upstreams, issuers, token endpoints) are trusted as written either way.",
  }),
  allowHosts: z.array(egressTarget).prefault([]).meta({
    description:
      'Exceptions "host:port" (e.g. idp.internal:443, [fd00::7]:8443) that run-time URLs and redirects may reach whatever their address; the name is still resolved once and the connection pinned.',
  }),
  allowCidrs: z.array(egressCidr).prefault([]).meta({
    description:
      "Address ranges (10.20.0.0/16, fd00:1::/48, or one address) that run-time URLs and redirects may reach: a narrower opt-in than allowPrivateNetworks. Opens addresses, not ports (see allowPorts).",
  }),
  allowPorts: z.array(z.number().int().min(1).max(65535)).prefault([]).meta({
    description:
      "Ports besides 80 and 443 that run-time URLs and redirects may reach (on addresses otherwise allowed). Any other port is refused unless an allowHosts entry names that host:port, or it is the host:port of a URL written in this file that the request stems from (a configured upstream redirecting to itself, a jwks_uri on its issuer's host and port). allowPrivateNetworks and allowCidrs never open a port.",
  }),
  maxRedirects: z.number().int().min(0).max(20).prefault(5).meta({
    description: "Redirects followed per outbound request, each hop checked; one more is EDGE_EGRESS_DENIED.",
  }),
  maxResponseBytes: size.prefault("64MiB").meta({
    description:
      "Largest body of an outbound answer that is not a long-lived stream; more is EDGE_EGRESS_RESPONSE_TOO_LARGE.",
  }),
  connectTimeout: duration
    .prefault("5s")
    .meta({ description: "Deadline for opening a connection (TCP and TLS) to an outbound target." }),
});

// ---- distributed mode (src/store/redis/, src/store/postgres/) ------------------------------------

const redisUrl = z
  .string()
  .regex(/^rediss?:\/\//, { message: "a redis:// or rediss:// URL" })
  .meta({ description: "`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS." });

/** The circuit breaker of one shared store (src/lib/breaker.ts). */
const breakerSchema = z.strictObject({
  failures: z.number().int().min(1).max(1000).prefault(5).meta({
    description:
      "Consecutive timeouts (or connection failures) that open the breaker: calls then fail at once instead of waiting on the store.",
  }),
  openFor: duration.prefault("1s").meta({
    description:
      "How long the breaker stays open; then one call goes as a probe (half-open): its success closes the breaker, its failure opens it again.",
  }),
});

const redisStoreSchema = z.strictObject({
  url: redisUrl,
  keyPrefix: z.string().min(1).prefault("mcp-edge:").meta({
    description:
      "Prefix of every key. On Redis Cluster use a hash tag (`{mcp-edge}:`) so that every key lives in one slot.",
  }),
  commandTimeout: duration.prefault("250ms").meta({
    description:
      "Longest wait for one Redis operation, counted from the call (queued commands included, behind unanswered ones or while reconnecting). Past it, session requests answer 503 with Retry-After and rate limits use the local fallback.",
  }),
  instances: z.number().int().min(1).prefault(2).meta({
    description:
      "About how many edge instances run: while Redis is unreachable each one allows quota / instances per limit window (the local fallback), so the fleet stays near the configured quota.",
  }),
  breaker: breakerSchema.prefault({}).meta({
    description:
      "Circuit breaker of the Redis connection: while open, session requests answer 503 with Retry-After at once and rate limits use the local fallback.",
  }),
});

const postgresUrl = z
  .string()
  .regex(/^postgres(ql)?:\/\//, { message: "a postgres:// or postgresql:// URL" })
  .meta({ description: "`postgres://user:password@host:port/database`." });

const postgresStoreSchema = z.strictObject({
  url: postgresUrl,
  schema: z
    .string()
    .regex(/^[a-z_][a-z0-9_]{0,62}$/, { message: "a lower-case SQL identifier" })
    .prefault("mcp_edge")
    .meta({ description: "Schema holding mcp-edge's tables (created and migrated at start)." }),
  poolSize: z.number().int().min(1).max(200).prefault(10).meta({ description: "Connections per instance." }),
  queryTimeout: duration.prefault("5s").meta({
    description:
      "Longest any one operation may wait for PostgreSQL (a connection from the pool included); past it the operation fails (503 for key checks that need the store and for key administration).",
  }),
  keyStaleness: duration.prefault("30s").meta({
    description:
      "Longest an API-key record read earlier is used without reading it again first: a record older than 1 s is served while it is re-read in the background, and while PostgreSQL is unreachable. Past this age a request waits for the store (at most queryTimeout) and fails closed (503). Revocations broadcast by another instance apply at once regardless.",
  }),
  breaker: breakerSchema.prefault({}).meta({
    description:
      "Circuit breaker of the PostgreSQL pool: while open, key checks use records within keyStaleness, other key checks and key administration answer 503 at once, and audit records go to the spool.",
  }),
});

const unsafeSchema = z.strictObject({
  allowUnauthenticatedPublic: z
    .boolean()
    .prefault(false)
    .meta({ description: "Let `auth: [none]` routes run on a non-loopback listener." }),
});

export const configSchema = z
  .strictObject({
    listen: listenSchema
      .prefault({ host: "127.0.0.1", port: 8787 })
      .meta({ description: "The public listener: MCP routes and their OAuth metadata." }),
    publicUrl: httpUrl
      .optional()
      .meta({ description: "External base URL (used for Host checks and metadata)." }),
    store: z
      .strictObject({
        sqlite: z.string().prefault("./.mcp-edge/mcp-edge.db").meta({
          description:
            "Embedded store file. In distributed mode nothing shared is kept in it; its directory is where the audit spool goes by default.",
        }),
        redis: z.union([redisUrl, redisStoreSchema]).optional().meta({
          description:
            "Distributed mode: Redis or Valkey for session records and routing, rate-limit counters, SSE event buffers, revocation and session broadcasts and locks. Set together with `postgres`.",
        }),
        postgres: z.union([postgresUrl, postgresStoreSchema]).optional().meta({
          description:
            "Distributed mode: PostgreSQL for API keys, audit records and the identity-signing keys (versioned migrations run at start). Set together with `redis`.",
        }),
      })
      .prefault({ sqlite: "./.mcp-edge/mcp-edge.db" })
      // The short form users write first (`redis: redis://host:6379`) is the long form's `url`.
      .transform((s) => ({
        ...s,
        redis: typeof s.redis === "string" ? redisStoreSchema.parse({ url: s.redis }) : s.redis,
        postgres:
          typeof s.postgres === "string" ? postgresStoreSchema.parse({ url: s.postgres }) : s.postgres,
      }))
      .refine((s) => (s.redis === undefined) === (s.postgres === undefined), {
        message:
          "distributed mode needs both store.redis and store.postgres (sessions and counters in Redis, keys and audit in PostgreSQL)",
      })
      .meta({ description: "Where keys, audit records and session records are kept." }),
    admin: z
      .strictObject({
        listen: adminListenSchema
          .prefault({ host: "127.0.0.1", port: 8788 })
          .meta({ description: "The admin listener. Keep it on loopback or a private network." }),
        token: z.string().min(32, "the admin token must be at least 32 characters").optional().meta({
          description: "Root admin token (${MCP_EDGE_ADMIN_TOKEN}). Without it the admin API is off.",
        }),
      })
      .prefault({ listen: { host: "127.0.0.1", port: 8788 } })
      .meta({ description: "Admin API, dashboard, metrics and health endpoints." }),
    metrics: metricsSchema
      .prefault({})
      .meta({ description: "Prometheus metrics on the admin listener (docs/operations.md)." }),
    tracing: tracingSchema.prefault({}).meta({ description: "OpenTelemetry traces (docs/operations.md)." }),
    log: z
      .strictObject({
        level: z
          .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
          .prefault("info")
          .meta({ description: "Least severe level written to the log (JSON lines on stdout)." }),
      })
      .prefault({ level: "info" })
      .meta({ description: "Logging." }),
    limits: limitsSchema
      .prefault({
        maxBodyBytes: "4MiB",
        headersTimeout: "10s",
        requestTimeout: "30s",
        keepAliveTimeout: "65s",
        maxHeaderBytes: "16KiB",
        maxResultBytes: "64MiB",
      })
      .refine((l) => l.maxResultBytes >= l.maxBodyBytes, {
        message: "maxResultBytes must be at least maxBodyBytes",
        path: ["maxResultBytes"],
      })
      .meta({ description: "Request and answer size limits on the public listener." }),
    streams: streamsSchema
      .prefault({
        bufferEvents: 1000,
        bufferBytes: "4MiB",
        ttl: "10m",
        keepAlive: "15s",
        retry: "1s",
        bufferBudget: "256MiB",
        tenantShare: 0.5,
      })
      .meta({ description: "SSE streams: the replay buffer behind Last-Event-ID resumption; keep-alives." }),
    drain: z
      .strictObject({
        timeout: duration.prefault("30s").meta({
          description:
            "In-flight calls get this long to finish on SIGTERM; one still running then gets the JSON-RPC error EDGE_DRAINED and an audit record aborted by the drain.",
        }),
        delay: duration.optional().meta({
          description:
            "On SIGTERM, /readyz fails at once but the listener keeps serving this long before it closes, so a load balancer stops sending new connections first (a closed listener resets connections still in its accept queue). New sessions are refused (503 EDGE_DRAINING) meanwhile. Default: 5s in distributed mode, 0 otherwise.",
        }),
      })
      .prefault({ timeout: "30s" })
      .meta({ description: "Graceful shutdown." }),
    security: securitySchema
      .prefault({ allowedOrigins: [], allowedHosts: [], trustForwardedHeaders: false })
      .meta({ description: "Origin and Host checks (DNS-rebinding protection) and proxy trust." }),
    rateLimits: rateLimitsSchema
      .prefault({ authFailures: "60/min" })
      .meta({ description: "Limits that are not per server (src/ratelimit)." }),
    audit: auditSchema.prefault({}).meta({
      description:
        "Audit records: one per tool call, resource read, prompt, session start/end and admin action.",
    }),
    egress: edgeEgressSchema.prefault({}).meta({
      description:
        "Outbound requests of the edge itself (upstreams, JWKS, metadata, introspection, token endpoints): the SSRF policy for URLs discovered at run time and for every redirect.",
    }),
    unsafe: unsafeSchema
      .prefault({ allowUnauthenticatedPublic: false })
      .meta({ description: "Named opt-ins for unsafe choices; each one logs a coded warning at boot." }),
    tenancy: z
      .strictObject({
        claim: z.string().min(1).prefault("org_id").meta({
          description:
            "Token claim naming the tenant: a top-level name (also a namespaced URL claim), else a dotted path into nested objects.",
        }),
        required: z
          .boolean()
          .prefault(false)
          .meta({ description: "Refuse (403) credentials that name no tenant. Never a default tenant." }),
      })
      .prefault({ claim: "org_id", required: false })
      .meta({ description: "Where a credential names its tenant. API keys carry theirs." }),
    auth: z
      .strictObject({
        oauth: z
          .array(issuerSchema)
          .prefault([])
          .meta({ description: "Issuers whose access tokens are accepted." }),
        leeway: duration
          .prefault("30s")
          .refine((ms) => ms <= 60_000, "at most 60s (RFC 7519 §4.1.4: small leeway only)")
          .meta({ description: "Clock skew allowed on `exp`, `nbf` and `iat`." }),
        authorizationServer: authorizationServerSchema,
      })
      .prefault({ oauth: [], leeway: "30s" })
      .meta({ description: "Resource-server settings shared by every route that accepts `oauth`." }),
    connections: z
      .record(
        z.string().regex(CONNECTION_NAME, "connection names are 1-64 of A-Z a-z 0-9 _ -"),
        connectionSchema,
      )
      .prefault({})
      .meta({
        description:
          "Third-party OAuth providers whose per-user tokens the edge keeps (the token vault) for `servers.*.credentials.connection`.",
      }),
    vault: vaultSchema.optional(),
    servers: z
      .record(
        z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "server names are 1-64 of A-Z a-z 0-9 _ -"),
        serverSchema,
      )
      .refine((s) => Object.keys(s).length > 0, "at least one server is required")
      .meta({ description: "The MCP servers behind the edge, by name (1-64 of A-Z a-z 0-9 _ -)." }),
  })
  .superRefine((cfg, ctx) => {
    for (const [name, server] of Object.entries(cfg.servers)) {
      if (!server.auth.includes("oauth")) continue;
      if (cfg.auth.oauth.length === 0 && !cfg.auth.authorizationServer.enabled) {
        ctx.addIssue({
          code: "custom",
          path: ["servers", name, "auth"],
          message: "oauth needs an issuer in auth.oauth, or auth.authorizationServer.enabled",
        });
      }
      if (!cfg.publicUrl) {
        ctx.addIssue({
          code: "custom",
          path: ["publicUrl"],
          message: `required when a route accepts oauth (server ${name}): it is the resource URL tokens are issued for`,
        });
      }
    }
    for (const [name, server] of Object.entries(cfg.servers)) {
      const conn = server.credentials?.connection;
      if (conn === undefined) continue;
      if (!cfg.connections[conn])
        ctx.addIssue({
          code: "custom",
          path: ["servers", name, "credentials", "connection"],
          message: `no connection named ${conn} in connections`,
        });
      if (!cfg.publicUrl)
        ctx.addIssue({
          code: "custom",
          path: ["publicUrl"],
          message: `required when a server uses a connection (server ${name}): the connect pages and callbacks live under it`,
        });
    }
    if (Object.keys(cfg.connections).length > 0 && !cfg.vault)
      ctx.addIssue({
        code: "custom",
        path: ["vault"],
        message: "connections need vault.key: users' tokens are stored encrypted",
      });
    for (const [name, c] of Object.entries(cfg.connections)) {
      if (c.template === "generic" && !c.issuer && !(c.authorizationUrl && c.tokenUrl))
        ctx.addIssue({
          code: "custom",
          path: ["connections", name],
          message: "a generic connection needs issuer, or authorizationUrl and tokenUrl",
        });
    }
    const share = cfg.streams.bufferBudget * cfg.streams.tenantShare;
    if (cfg.streams.bufferBudget > 0 && share < cfg.limits.maxResultBytes)
      ctx.addIssue({
        code: "custom",
        path: ["streams", "bufferBudget"],
        message: `a tenant's share of it (bufferBudget × tenantShare = ${Math.floor(share)} bytes) must hold one result of limits.maxResultBytes (${cfg.limits.maxResultBytes}); raise it, or set 0 for no budget`,
      });
    const as = cfg.auth.authorizationServer;
    if (as.enabled) {
      const u = cfg.publicUrl ? new URL(cfg.publicUrl) : undefined;
      if (!u || (u.pathname !== "/" && u.pathname !== "") || u.search !== "")
        ctx.addIssue({
          code: "custom",
          path: ["publicUrl"],
          message: "the authorization server needs publicUrl, an origin without a path: it is the issuer",
        });
      if (!as.login.apiKey && !as.login.idp && !as.login.idps)
        ctx.addIssue({
          code: "custom",
          path: ["auth", "authorizationServer", "login"],
          message: "the authorization server needs a login method: apiKey or idp",
        });
      for (const name of ["apiKey", "idp"])
        if (as.login.idps && Object.hasOwn(as.login.idps, name))
          ctx.addIssue({
            code: "custom",
            path: ["auth", "authorizationServer", "login", "idps", name],
            message: `${name} is the name of another login method`,
          });
      if ((as.login.idp || as.login.idps) && !cfg.vault)
        ctx.addIssue({
          code: "custom",
          path: ["vault"],
          message:
            "federated login needs vault.key: the IdPs' refresh tokens are kept encrypted with each grant",
        });
      if (
        cfg.auth.oauth.some(
          (i) => cfg.publicUrl && i.issuer.replace(/\/$/, "") === cfg.publicUrl.replace(/\/$/, ""),
        )
      )
        ctx.addIssue({
          code: "custom",
          path: ["auth", "oauth"],
          message: "publicUrl is the authorization server's own issuer: do not list it in auth.oauth",
        });
    }
    const seen = new Map<string, string>();
    for (const [name, server] of Object.entries(cfg.servers)) {
      const other = seen.get(server.route);
      if (other) {
        ctx.addIssue({
          code: "custom",
          path: ["servers", name, "route"],
          message: `route also used by ${other}`,
        });
      }
      seen.set(server.route, name);
    }
  });

/** The configuration as written (before defaults and unit parsing). */
export type ConfigInput = z.input<typeof configSchema>;
/** The configuration after validation: defaults applied, durations in ms, sizes in bytes. */
export type Config = z.output<typeof configSchema>;
export type ServerConfig = Config["servers"][string];
export type UpstreamConfig = ServerConfig["upstream"];
export type StdioConfig = NonNullable<UpstreamConfig["stdio"]>;
export type ConnectionConfig = Config["connections"][string];
export type VaultConfig = NonNullable<Config["vault"]>;
export type AuthorizationServerConfig = Config["auth"]["authorizationServer"];
