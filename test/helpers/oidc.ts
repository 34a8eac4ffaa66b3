/**
 * A real OAuth authorization server and a real protected MCP upstream for the upstream-credentials
 * tests (real parts, port 0, no mocks).
 *
 *   const idp = await startOidc({ ttlSeconds: 3, resource: "https://upstream.test/mcp" });
 *   const up = await startProtectedUpstream({ oidc: idp, audience: "https://upstream.test/mcp" });
 *
 * `startOidc` runs oidc-provider 9.x on 127.0.0.1:0 with one confidential client allowed the
 * client_credentials grant (client_secret_basic), resource indicators on (RFC 8707: the resource
 * becomes the JWT access token's `aud`), a short token lifetime, and hooks to count token requests,
 * take the token endpoint down and rotate the signing key.
 *
 * `startProtectedUpstream` is an SDK v1 McpServer over StreamableHTTPServerTransport (stateful,
 * as test/fixtures/conformance-server.ts serves it) that demands `Authorization: Bearer` verified
 * with jose against the provider's JWKS, can revoke a still-valid token early (its next use gets
 * 401), and records every Authorization header it saw.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { SSEServerTransport } from "@modelcontextprotocol/sdk/server/sse.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { createRemoteJWKSet, exportJWK, generateKeyPair, type JWTPayload, jwtVerify } from "jose";
import { z } from "zod";

/** The slice of oidc-provider's API these helpers use (the package ships no type declarations). */
interface ProviderInstance {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  on(event: string, listener: (...args: unknown[]) => void): void;
}
type ProviderClass = new (issuer: string, configuration: Record<string, unknown>) => ProviderInstance;
interface ProviderModule {
  default: ProviderClass;
  errors: { InvalidTarget: new (description?: string) => Error };
}

/**
 * Storage for the provider's stateful artifacts, kept in this process (the same as oidc-provider's
 * development adapter, without its boot warning on every test).
 */
class MemoryAdapter {
  static readonly #all = new Map<string, Record<string, unknown>>();
  readonly #model: string;
  constructor(model: string) {
    this.#model = model;
  }
  #key(id: string): string {
    return `${this.#model}:${id}`;
  }
  async upsert(id: string, payload: Record<string, unknown>): Promise<void> {
    MemoryAdapter.#all.set(this.#key(id), payload);
  }
  async find(id: string): Promise<Record<string, unknown> | undefined> {
    return MemoryAdapter.#all.get(this.#key(id));
  }
  async findByUid(uid: string): Promise<Record<string, unknown> | undefined> {
    for (const [k, v] of MemoryAdapter.#all) if (k.startsWith(`${this.#model}:`) && v.uid === uid) return v;
    return undefined;
  }
  async findByUserCode(userCode: string): Promise<Record<string, unknown> | undefined> {
    for (const [k, v] of MemoryAdapter.#all)
      if (k.startsWith(`${this.#model}:`) && v.userCode === userCode) return v;
    return undefined;
  }
  async consume(id: string): Promise<void> {
    const v = MemoryAdapter.#all.get(this.#key(id));
    if (v) v.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id: string): Promise<void> {
    MemoryAdapter.#all.delete(this.#key(id));
  }
  async revokeByGrantId(grantId: string): Promise<void> {
    for (const [k, v] of MemoryAdapter.#all) if (v.grantId === grantId) MemoryAdapter.#all.delete(k);
  }
}

// A variable specifier: the import stays untyped instead of failing on the missing declarations.
const OIDC_PROVIDER = "oidc-provider";

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return (server.address() as AddressInfo).port;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

export interface OidcOptions {
  /** Access token lifetime in seconds. Default 3. */
  ttlSeconds?: number;
  /** The one resource (RFC 8707) the client may ask for; it becomes the token's `aud`. */
  resource: string;
  clientId?: string;
  /** Default: random. */
  clientSecret?: string;
  /** Scope the client may ask for. Default "mcp:tools". */
  scope?: string;
}

export interface OidcServer {
  issuer: string;
  tokenUrl: string;
  jwksUri: string;
  clientId: string;
  clientSecret: string;
  resource: string;
  /** POSTs to the token endpoint so far (including refused and failed ones). */
  tokenRequests(): number;
  /** Access tokens issued so far, in order. */
  issued(): string[];
  /** Token lifetime for tokens issued from now on. */
  setTtl(seconds: number): void;
  /**
   * "up": normal; "error": the token endpoint answers 503 (HTML); "reset": it drops the
   * connection. The rest of the provider (JWKS) stays up.
   */
  setTokenEndpoint(mode: "up" | "error" | "reset"): void;
  /** A new signing key; the JWKS publishes only it, so every token issued before fails to verify. */
  rotateKeys(): Promise<void>;
  stop(): Promise<void>;
}

export async function startOidc(options: OidcOptions): Promise<OidcServer> {
  const mod = (await import(OIDC_PROVIDER)) as ProviderModule;
  const clientId = options.clientId ?? "mcp-edge";
  const clientSecret = options.clientSecret ?? randomBytes(24).toString("base64url");
  const scope = options.scope ?? "mcp:tools";
  let ttl = options.ttlSeconds ?? 3;
  let mode: "up" | "error" | "reset" = "up";
  let tokenRequests = 0;
  const issued: string[] = [];
  const cookieKey = randomBytes(32).toString("base64url");

  const build = async (issuer: string): Promise<ProviderInstance> => {
    const { privateKey } = await generateKeyPair("RS256", { extractable: true });
    const jwk = { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: "RS256", use: "sig" };
    const provider = new mod.default(issuer, {
      adapter: MemoryAdapter,
      clients: [
        {
          client_id: clientId,
          client_secret: clientSecret,
          grant_types: ["client_credentials"],
          response_types: [],
          redirect_uris: [],
          token_endpoint_auth_method: "client_secret_basic",
          scope,
        },
      ],
      scopes: scope.split(" "),
      jwks: { keys: [jwk] },
      cookies: { keys: [cookieKey] },
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => options.resource,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx: unknown, resourceIndicator: string) => {
            if (resourceIndicator !== options.resource) throw new mod.errors.InvalidTarget();
            return {
              scope,
              audience: options.resource,
              accessTokenTTL: ttl,
              accessTokenFormat: "jwt",
              jwt: { sign: { alg: "RS256" } },
            };
          },
        },
      },
      ttl: { ClientCredentials: () => ttl },
    });
    provider.on("grant.success", (ctx: unknown) => {
      const body = (ctx as { body?: { access_token?: unknown } }).body;
      if (typeof body?.access_token === "string") issued.push(body.access_token);
    });
    return provider;
  };

  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    if (req.method === "POST" && path === "/token") {
      tokenRequests++;
      if (mode === "reset") {
        req.socket.destroy();
        return;
      }
      if (mode === "error") {
        res.writeHead(503, { "content-type": "text/html" }).end("<h1>Service Unavailable</h1>");
        return;
      }
    }
    handler?.(req, res);
  });
  const port = await listen(server);
  const issuer = `http://127.0.0.1:${port}`;
  handler = (await build(issuer)).callback();

  return {
    issuer,
    tokenUrl: `${issuer}/token`,
    jwksUri: `${issuer}/jwks`,
    clientId,
    clientSecret,
    resource: options.resource,
    tokenRequests: () => tokenRequests,
    issued: () => [...issued],
    setTtl(seconds) {
      ttl = seconds;
    },
    setTokenEndpoint(m) {
      mode = m;
    },
    async rotateKeys() {
      handler = (await build(issuer)).callback();
    },
    stop: () => close(server),
  };
}

// ---- the protected upstream --------------------------------------------------------------------

export interface ProtectedUpstreamOptions {
  /** Verify `Authorization: Bearer` JWTs from this provider, with `aud` = `audience`. */
  oidc?: OidcServer;
  audience?: string;
  /** Headers every request must carry with these exact values (static credentials). */
  requiredHeaders?: Record<string, string>;
  /** Speak legacy HTTP+SSE (2024-11-05: GET /sse, POST /messages) instead of Streamable HTTP. */
  legacySse?: boolean;
}

export interface SeenRequest {
  method: string;
  authorization: string | undefined;
  /** The answer's status as far as authentication goes: 401 or "ok". */
  outcome: 401 | "ok";
  headers: Record<string, string | string[] | undefined>;
}

export interface ProtectedUpstream {
  url: string;
  /** Every request, in arrival order. */
  seen(): SeenRequest[];
  /** Every Authorization header value seen (undefined when absent). */
  authorizations(): (string | undefined)[];
  /** Requests answered 401. */
  rejections(): number;
  /** From now on, this token (raw, or "Bearer ..." form) is refused with 401 although still valid. */
  revoke(token: string): void;
  /** The bearer token of the most recent authenticated request. */
  lastToken(): string | undefined;
  /** Drops the cached JWKS, as a resource server does when its cache expires after a key rotation. */
  reloadKeys(): void;
  stop(): Promise<void>;
}

/** An MCP server (SDK v1, stateful Streamable HTTP) that refuses requests without valid credentials. */
export async function startProtectedUpstream(options: ProtectedUpstreamOptions): Promise<ProtectedUpstream> {
  const keySet = () =>
    options.oidc
      ? createRemoteJWKSet(new URL(options.oidc.jwksUri), { cooldownDuration: 0, cacheMaxAge: 60_000 })
      : undefined;
  let jwks = keySet();
  const revoked = new Set<string>();
  const seen: SeenRequest[] = [];
  const sessions = new Map<string, StreamableHTTPServerTransport>();
  const sseSessions = new Map<string, SSEServerTransport>();
  let lastToken: string | undefined;

  const authenticate = async (req: IncomingMessage): Promise<JWTPayload | true | null> => {
    for (const [name, value] of Object.entries(options.requiredHeaders ?? {})) {
      if (req.headers[name.toLowerCase()] !== value) return null;
    }
    if (!jwks || !options.oidc) return true;
    const m = /^Bearer ([^\s]+)$/.exec(req.headers.authorization ?? "");
    if (!m?.[1] || revoked.has(m[1])) return null;
    try {
      const { payload } = await jwtVerify(m[1], jwks, {
        issuer: options.oidc.issuer,
        audience: options.audience ?? options.oidc.resource,
      });
      lastToken = m[1];
      return payload;
    } catch {
      return null;
    }
  };

  const newServer = (): McpServer => {
    const server = new McpServer(
      { name: "protected-upstream", version: "1.0.0" },
      { capabilities: { tools: {} } },
    );
    server.registerTool(
      "add",
      { description: "Adds two numbers", inputSchema: { a: z.number(), b: z.number() } },
      async ({ a, b }) => ({ content: [{ type: "text", text: String(a + b) }] }),
    );
    server.registerTool(
      "echo_headers",
      { description: "The request headers this server received for the call" },
      async (extra) => ({
        content: [{ type: "text", text: JSON.stringify(extra.requestInfo?.headers ?? {}) }],
      }),
    );
    return server;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.method === "OPTIONS") {
      // The edge's health probe: alive, no MCP state, no credentials needed (not recorded).
      res.writeHead(405, { allow: "GET, POST, DELETE" }).end();
      return;
    }
    const authorization = req.headers.authorization;
    const ok = await authenticate(req);
    seen.push({
      method: req.method ?? "",
      authorization,
      outcome: ok ? "ok" : 401,
      headers: { ...req.headers },
    });
    if (!ok) {
      req.resume();
      res
        .writeHead(401, {
          "content-type": "application/json",
          "www-authenticate": 'Bearer error="invalid_token"',
        })
        .end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32001, message: "Unauthorized" } }));
      return;
    }
    let body: unknown;
    if (req.method === "POST") {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    }
    if (options.legacySse) {
      const url = new URL(req.url ?? "/", "http://127.0.0.1");
      if (req.method === "GET" && url.pathname === "/sse") {
        const transport = new SSEServerTransport("/messages", res);
        sseSessions.set(transport.sessionId, transport);
        transport.onclose = () => sseSessions.delete(transport.sessionId);
        await newServer().connect(transport);
        return;
      }
      const transport = sseSessions.get(url.searchParams.get("sessionId") ?? "");
      if (req.method === "POST" && url.pathname === "/messages" && transport) {
        await transport.handlePostMessage(req, res, body);
        return;
      }
      res.writeHead(404).end("Not Found");
      return;
    }
    const sessionId = req.headers["mcp-session-id"];
    if (typeof sessionId === "string") {
      const transport = sessions.get(sessionId);
      if (!transport) {
        res.writeHead(404, { "content-type": "application/json" }).end(
          JSON.stringify({
            jsonrpc: "2.0",
            id: null,
            error: { code: -32001, message: "Session not found" },
          }),
        );
        return;
      }
      await transport.handleRequest(req, res, body);
      return;
    }
    if (req.method === "POST" && isInitializeRequest(body)) {
      const transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => {
          sessions.set(id, transport);
        },
      });
      transport.onclose = () => {
        if (transport.sessionId) sessions.delete(transport.sessionId);
      };
      await newServer().connect(transport);
      await transport.handleRequest(req, res, body);
      return;
    }
    res
      .writeHead(400, { "content-type": "application/json" })
      .end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32000, message: "No session" } }));
  };

  const http = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  const port = await listen(http);
  return {
    url: `http://127.0.0.1:${port}${options.legacySse ? "/sse" : "/mcp"}`,
    seen: () => [...seen],
    authorizations: () => seen.map((s) => s.authorization),
    rejections: () => seen.filter((s) => s.outcome === 401).length,
    revoke(token) {
      revoked.add(token.replace(/^Bearer /, ""));
    },
    lastToken: () => lastToken,
    reloadKeys() {
      jwks = keySet();
    },
    async stop() {
      await Promise.allSettled([...sessions.values(), ...sseSessions.values()].map((t) => t.close()));
      await close(http);
    },
  };
}
