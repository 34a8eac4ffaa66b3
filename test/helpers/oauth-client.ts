/**
 * The OAuth side of an MCP client as a desktop client runs it: the official SDK v1
 * `OAuthClientProvider`, with a loopback redirect listener on 127.0.0.1:0 (RFC 8252 §7.3) that
 * catches the authorization response. `open` is the person's browser: the authorization URL is
 * handed to it (Chromium, or test/helpers/browser.ts) and the code comes back on the listener.
 *
 *   const oc = await startOAuthClient({ open: (url) => drive(url) });
 *   assert.equal(await auth(oc, { serverUrl }), "REDIRECT");
 *   assert.equal(await auth(oc, { serverUrl, authorizationCode: await oc.code() }), "AUTHORIZED");
 *   new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: oc })
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { OAuthClientProvider } from "@modelcontextprotocol/sdk/client/auth.js";
import type {
  OAuthClientInformationMixed,
  OAuthClientMetadata,
  OAuthTokens,
} from "@modelcontextprotocol/sdk/shared/auth.js";

export interface OAuthClient extends OAuthClientProvider {
  tokens(): OAuthTokens | undefined;
  clientInformation(): OAuthClientInformationMixed | undefined;
  /** The code of the next authorization response (rejects on an error response). */
  code(): Promise<string>;
  /** Every authorization response received, as its query. */
  responses(): URLSearchParams[];
  stop(): Promise<void>;
}

export async function startOAuthClient(options: {
  open: (url: URL) => void | Promise<void>;
  clientName?: string;
}): Promise<OAuthClient> {
  const waiting: { resolve: (code: string) => void; reject: (err: Error) => void }[] = [];
  const early: (string | Error)[] = [];
  const seen: URLSearchParams[] = [];
  const server: Server = createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://127.0.0.1");
    if (u.pathname !== "/callback") return void res.writeHead(404).end(); // a browser's /favicon.ico
    const q = u.searchParams;
    seen.push(q);
    const code = q.get("code");
    const outcome =
      code ?? new Error(`authorization error: ${q.get("error")} ${q.get("error_description") ?? ""}`);
    res.writeHead(200, { "content-type": "text/html" }).end("<p>You can close this window.</p>");
    const w = waiting.shift();
    if (!w) early.push(outcome);
    else if (typeof outcome === "string") w.resolve(outcome);
    else w.reject(outcome);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const redirectUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/callback`;
  let info: OAuthClientInformationMixed | undefined;
  let tokens: OAuthTokens | undefined;
  let verifier = "";
  return {
    get redirectUrl() {
      return redirectUrl;
    },
    get clientMetadata(): OAuthClientMetadata {
      return {
        client_name: options.clientName ?? "SDK test client",
        redirect_uris: [redirectUrl],
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: "none",
      };
    },
    clientInformation: () => info,
    saveClientInformation: (i) => {
      info = i;
    },
    tokens: () => tokens,
    saveTokens: (t) => {
      tokens = t;
    },
    redirectToAuthorization: (url) => options.open(url),
    saveCodeVerifier: (v) => {
      verifier = v;
    },
    codeVerifier: () => verifier,
    invalidateCredentials: (scope) => {
      if (scope === "all" || scope === "tokens") tokens = undefined;
      if (scope === "all" || scope === "client") info = undefined;
    },
    code: () => {
      const first = early.shift();
      if (first !== undefined)
        return typeof first === "string" ? Promise.resolve(first) : Promise.reject(first);
      return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
    },
    responses: () => seen.slice(),
    stop: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
