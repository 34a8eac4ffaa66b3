/**
 * The loopback redirect target of the login (RFC 8252 §7.3, OAuth 2.1 for native apps): a node:http
 * listener on 127.0.0.1 (the IP literal, not `localhost`, RFC 8252 §8.3) on the requested port or
 * an ephemeral one. It accepts exactly one authorization response whose `state` matches, answers
 * the browser with a short page and closes.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface AuthorizationResponse {
  code: string;
  /** RFC 9207 `iss`, when the AS sent one. */
  iss?: string;
}

export interface Callback {
  redirectUri: string;
  port: number;
  /** Resolves with the code; rejects on an error response or when closed. */
  result: Promise<AuthorizationResponse>;
  close(): Promise<void>;
}

const PAGE = (title: string, text: string) =>
  `<!doctype html><meta charset="utf-8"><title>${title}</title><body style="font-family:sans-serif"><h1>${title}</h1><p>${text}</p></body>`;

export async function startCallback(state: string, port = 0): Promise<Callback> {
  let settle!: { resolve: (r: AuthorizationResponse) => void; reject: (e: Error) => void };
  const result = new Promise<AuthorizationResponse>((resolve, reject) => {
    settle = { resolve, reject };
  });
  result.catch(() => undefined);
  let done = false;
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const headers = {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      "x-frame-options": "DENY",
      "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
    };
    if (req.method !== "GET" || url.pathname !== "/callback" || done) {
      res.writeHead(404, headers).end(PAGE("Not found", ""));
      return;
    }
    const q = url.searchParams;
    if (q.get("state") !== state) {
      // Not our login (or a forged redirect): ignore it and keep waiting (RFC 6749 §10.12).
      res.writeHead(400, headers).end(PAGE("Login failed", "The login response did not match this login."));
      return;
    }
    done = true;
    const error = q.get("error");
    const code = q.get("code");
    if (error !== null || code === null) {
      res.writeHead(400, headers).end(PAGE("Login failed", "You can close this window."));
      const desc = q.get("error_description");
      settle.reject(
        new Error(
          `the authorization server refused the login: ${error ?? "no code"}${desc ? ` (${desc})` : ""}`,
        ),
      );
      return;
    }
    res
      .writeHead(200, headers)
      .end(PAGE("Logged in", "mcp-edge connect has its token. You can close this window."));
    const iss = q.get("iss");
    settle.resolve({ code, ...(iss !== null ? { iss } : {}) });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  const actual = (server.address() as AddressInfo).port;
  return {
    redirectUri: `http://127.0.0.1:${actual}/callback`,
    port: actual,
    result,
    async close() {
      if (!done) settle.reject(new Error("the login was abandoned"));
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
