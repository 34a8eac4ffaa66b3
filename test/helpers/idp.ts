/**
 * A real test identity provider on 127.0.0.1:0, for every test that needs tokens: node:http
 * serving RFC 8414 / OIDC metadata, a JWKS of jose-generated keys (ES256 and RS256 at start,
 * rotatable), and an RFC 7662 introspection endpoint (client_secret_basic checked, answers
 * scripted per token). `mint` signs access tokens with jose; every header field can be overridden,
 * including deliberately wrong ones, and `unsigned` builds tokens jose would never produce.
 *
 *   const idp = await TestIdp.start();
 *   const token = await idp.mint({ aud: "https://mcp.example.com/mcp", scope: "mcp:tools" });
 *   idp.jwksMode = "down";          // connections to the JWKS are cut
 *   await idp.rotate("ES256");      // a new key, published; the old one stays unless told
 *   idp.setIntrospection("opaque-1", { active: true, sub: "alice" });
 *   await idp.stop();
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  base64url,
  type CryptoKey,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  SignJWT,
} from "jose";
import type { IssuerConfig } from "../../src/auth/oauth.ts";

/** An `auth.oauth[]` entry as the config schema outputs it (defaults applied, durations in ms). */
export function issuerConfig(issuer: string, overrides: Partial<IssuerConfig> = {}): IssuerConfig {
  return {
    issuer,
    algorithms: ["RS256", "ES256"],
    requireTyp: true,
    scopeClaim: "scope",
    jwksCacheMaxAge: 600_000,
    jwksMaxStale: 86_400_000,
    ...overrides,
  };
}

export type KeyAlg = "ES256" | "RS256" | "PS256" | "ES384" | "EdDSA";

interface SigningKey {
  kid: string;
  alg: KeyAlg;
  privateKey: CryptoKey;
  publicJwk: JWK;
  spki: string;
}

/**
 * How an endpoint behaves: serve; cut the connection; answer 500; answer 200 with HTML; never
 * answer (until stopped); answer 200 with a 1 MiB JSON body.
 */
export type Mode = "up" | "down" | "500" | "garbage" | "hang" | "huge";

export interface TestIdpOptions {
  /** Path of the issuer identifier, e.g. "/t1" (issuer = http://127.0.0.1:port/t1). Default none. */
  path?: string;
  /** Metadata served: RFC 8414 only, OIDC discovery only, or none. Default "oauth". */
  discovery?: "oauth" | "oidc" | "none";
  /** `issuer` written in the metadata, to test the mismatch check. Default: the real issuer. */
  metadataIssuer?: string;
  /** Credentials the introspection endpoint accepts (client_secret_basic). */
  clientId?: string;
  clientSecret?: string;
  /** Clock used for default `iat`/`exp` (ms). Default Date.now. */
  now?: () => number;
}

export interface MintOptions {
  /** Signing algorithm of a published key (default ES256), or HS256 with `secret`. */
  alg?: KeyAlg | "HS256";
  /** `kid` header; default the key's own; null omits it. */
  kid?: string | null;
  /** `typ` header; default "at+jwt"; null omits it. */
  typ?: string | null;
  /** Sign with this published key (by kid) instead of the newest of `alg`. */
  keyId?: string;
  /** Sign with a key that is not published (a forger's key). */
  foreignKey?: CryptoKey;
  /** HS256 secret (key-confusion tests: the public key's PEM). */
  secret?: Uint8Array;
  /** Extra protected header parameters (e.g. `crit`). */
  header?: Record<string, unknown>;
  /** `crit` extensions jose may sign (they are still unknown to the verifier). */
  signCrit?: Record<string, boolean>;
}

export interface ScriptedAnswer {
  status?: number;
  /** A string is sent as is (not JSON-encoded); anything else as JSON. */
  body: unknown;
}

function formDecode(s: string): string {
  return decodeURIComponent(s.replace(/\+/g, " "));
}

async function readAll(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

export class TestIdp {
  readonly #server: Server;
  readonly #options: TestIdpOptions;
  #keys: SigningKey[] = [];
  #kidSeq = 0;
  readonly #answers = new Map<string, ScriptedAnswer>();
  origin = "";
  issuer = "";
  /** What the JWKS endpoint does: serve, cut the connection, 500, or serve non-JSON. */
  jwksMode: Mode = "up";
  /** Same for the metadata endpoints. */
  metadataMode: Mode = "up";
  /** Same for the introspection endpoint. */
  introspectionMode: Mode = "up";
  /** Requests received per endpoint. */
  readonly counts = { metadata: 0, jwks: 0, introspection: 0 };
  /** Every path requested, in order. */
  readonly paths: string[] = [];

  private constructor(options: TestIdpOptions) {
    this.#options = options;
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        res.statusCode = 500;
        res.end(String(err));
      });
    });
  }

  static async start(options: TestIdpOptions = {}): Promise<TestIdp> {
    const idp = new TestIdp(options);
    await idp.addKey("ES256");
    await idp.addKey("RS256");
    await new Promise<void>((resolve) => idp.#server.listen(0, "127.0.0.1", resolve));
    const { port } = idp.#server.address() as AddressInfo;
    idp.origin = `http://127.0.0.1:${port}`;
    idp.issuer = `${idp.origin}${options.path ?? ""}`;
    return idp;
  }

  get jwksUri(): string {
    return `${this.origin}/jwks`;
  }

  get introspectionUrl(): string {
    return `${this.origin}/introspect`;
  }

  get clientId(): string {
    return this.#options.clientId ?? "mcp-edge";
  }

  get clientSecret(): string {
    return this.#options.clientSecret ?? "s3cret:with/odd+chars";
  }

  /** Kids currently published. */
  get kids(): string[] {
    return this.#keys.map((k) => k.kid);
  }

  /** Generates and publishes a new key; returns its kid. */
  async addKey(alg: KeyAlg): Promise<string> {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
    const kid = `${alg.toLowerCase()}-${++this.#kidSeq}`;
    const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
    this.#keys.push({ kid, alg, privateKey, publicJwk, spki: await exportSPKI(publicKey) });
    return kid;
  }

  /** Key rotation: publishes a new key of `alg`; unless `keepOld`, withdraws the others of that alg. */
  async rotate(alg: KeyAlg = "ES256", options: { keepOld?: boolean } = {}): Promise<string> {
    const kid = await this.addKey(alg);
    if (options.keepOld === false) this.#keys = this.#keys.filter((k) => k.alg !== alg || k.kid === kid);
    return kid;
  }

  /** Withdraws a key from the JWKS. */
  removeKey(kid: string): void {
    this.#keys = this.#keys.filter((k) => k.kid !== kid);
  }

  /** The SPKI PEM of a published key (for HS256 key-confusion tokens). */
  publicKeyPem(kid: string): string {
    const k = this.#keys.find((x) => x.kid === kid);
    if (!k) throw new Error(`no key ${kid}`);
    return k.spki;
  }

  /** A foreign key pair (not published), for forged signatures. */
  static async foreignKey(alg: KeyAlg = "ES256"): Promise<CryptoKey> {
    return (await generateKeyPair(alg)).privateKey;
  }

  /**
   * Signs an access token. Default claims: `iss` = this issuer, `sub` "user-1", `iat` now,
   * `exp` now + 5 min; a claim given as `undefined` is left out.
   */
  async mint(claims: Record<string, unknown> = {}, options: MintOptions = {}): Promise<string> {
    const now = Math.floor((this.#options.now ?? Date.now)() / 1000);
    const payload: Record<string, unknown> = { iss: this.issuer, sub: "user-1", iat: now, exp: now + 300 };
    for (const [k, v] of Object.entries(claims)) {
      if (v === undefined) delete payload[k];
      else payload[k] = v;
    }
    const alg = options.alg ?? "ES256";
    let key: CryptoKey | Uint8Array;
    let kid: string | undefined;
    if (alg === "HS256") {
      if (!options.secret) throw new Error("HS256 needs a secret");
      key = options.secret;
    } else if (options.foreignKey) {
      key = options.foreignKey;
      kid = this.#keys.find((k) => k.alg === alg)?.kid;
    } else {
      const signing = options.keyId
        ? this.#keys.find((k) => k.kid === options.keyId)
        : this.#keys.filter((k) => k.alg === alg).at(-1);
      if (!signing) throw new Error(`no published ${alg} key`);
      key = signing.privateKey;
      kid = signing.kid;
    }
    const header: Record<string, unknown> = { alg };
    const headerKid = options.kid === undefined ? kid : options.kid;
    if (headerKid !== null && headerKid !== undefined) header["kid"] = headerKid;
    const typ = options.typ === undefined ? "at+jwt" : options.typ;
    if (typ !== null) header["typ"] = typ;
    Object.assign(header, options.header);
    return new SignJWT(payload as JWTPayload)
      .setProtectedHeader(header as { alg: string })
      .sign(key, options.signCrit ? { crit: options.signCrit } : undefined);
  }

  /** A compact JWS built by hand (for `alg: none` variants and other tokens jose refuses to sign). */
  unsigned(header: Record<string, unknown>, claims: Record<string, unknown> = {}, signature = ""): string {
    const now = Math.floor((this.#options.now ?? Date.now)() / 1000);
    const payload = { iss: this.issuer, sub: "user-1", iat: now, exp: now + 300, ...claims };
    const enc = (o: unknown) => base64url.encode(JSON.stringify(o));
    return `${enc(header)}.${enc(payload)}.${signature}`;
  }

  /** Scripts the introspection answer for `token` (default for unknown tokens: `{active:false}`). */
  setIntrospection(token: string, answer: Record<string, unknown> | ScriptedAnswer): void {
    const scripted =
      "body" in answer && Object.keys(answer).every((k) => k === "body" || k === "status")
        ? (answer as ScriptedAnswer)
        : { body: answer };
    this.#answers.set(token, scripted);
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.origin);
    this.paths.push(url.pathname);
    const path = this.#options.path ?? "";
    const discovery = this.#options.discovery ?? "oauth";
    const oauthPaths = discovery === "oauth" ? [`/.well-known/oauth-authorization-server${path}`] : [];
    const oidcPaths =
      discovery === "oidc"
        ? [`/.well-known/openid-configuration${path}`, `${path}/.well-known/openid-configuration`]
        : [];
    if (req.method === "GET" && (oauthPaths.includes(url.pathname) || oidcPaths.includes(url.pathname))) {
      this.counts.metadata++;
      if (this.#misbehave(this.metadataMode, req, res)) return;
      return json(res, 200, {
        issuer: this.#options.metadataIssuer ?? this.issuer,
        jwks_uri: this.jwksUri,
        introspection_endpoint: this.introspectionUrl,
        token_endpoint: `${this.origin}/token`,
        authorization_endpoint: `${this.origin}/authorize`,
        response_types_supported: ["code"],
        code_challenge_methods_supported: ["S256"],
        introspection_endpoint_auth_methods_supported: ["client_secret_basic"],
      });
    }
    if (req.method === "GET" && url.pathname === "/jwks") {
      this.counts.jwks++;
      if (this.#misbehave(this.jwksMode, req, res)) return;
      res.setHeader("cache-control", "max-age=600");
      return json(res, 200, { keys: this.#keys.map((k) => k.publicJwk) }, "application/jwk-set+json");
    }
    if (req.method === "POST" && url.pathname === "/introspect") {
      this.counts.introspection++;
      const body = await readAll(req);
      if (this.#misbehave(this.introspectionMode, req, res)) return;
      if (!this.#clientOk(req.headers.authorization)) {
        res.setHeader("www-authenticate", 'Basic realm="introspection"');
        return json(res, 401, { error: "invalid_client" });
      }
      if (!/^application\/x-www-form-urlencoded\b/.test(req.headers["content-type"] ?? "")) {
        return json(res, 400, { error: "invalid_request" });
      }
      const token = new URLSearchParams(body).get("token");
      if (token === null) return json(res, 400, { error: "invalid_request" });
      const answer = this.#answers.get(token) ?? { body: { active: false } };
      if (typeof answer.body === "string") {
        res.writeHead(answer.status ?? 200, { "content-type": "application/json" });
        res.end(answer.body);
        return;
      }
      return json(res, answer.status ?? 200, answer.body);
    }
    json(res, 404, { error: "not_found" });
  }

  #clientOk(authorization: string | undefined): boolean {
    const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(authorization ?? "");
    if (!m?.[1]) return false;
    const decoded = Buffer.from(m[1], "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) return false;
    return (
      formDecode(decoded.slice(0, colon)) === this.clientId &&
      formDecode(decoded.slice(colon + 1)) === this.clientSecret
    );
  }

  #misbehave(mode: Mode, req: IncomingMessage, res: ServerResponse): boolean {
    if (mode === "up") return false;
    if (mode === "down") {
      req.socket.destroy();
      return true;
    }
    if (mode === "500") {
      json(res, 500, { error: "server_error" });
      return true;
    }
    if (mode === "hang") return true;
    if (mode === "huge") {
      json(res, 200, { keys: [], active: true, padding: "x".repeat(1024 * 1024) });
      return true;
    }
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<html>maintenance</html>");
    return true;
  }
}

function json(res: ServerResponse, status: number, body: unknown, type = "application/json"): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(text) });
  res.end(text);
}
