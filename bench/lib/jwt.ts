/**
 * A local OAuth issuer for the JWT benchmarks: an ES256 key pair (jose), its JWKS served by a tiny
 * node:http server on 127.0.0.1 (port 0), and RFC 9068 access tokens (`typ: at+jwt`) minted for an
 * audience. Nothing else of an authorization server is needed: the edge only verifies tokens.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";

export interface LocalIssuer {
  /** The `iss` of every token, also the JWKS server's origin. */
  issuer: string;
  jwksUri: string;
  /** JWKS documents served (the edge fetches once at start, then every jwksCacheMaxAge). */
  fetches(): number;
  /** A token for `audience` (the route's resource URL), valid for `ttlSec`. */
  mint(audience: string, claims?: Record<string, unknown>, ttlSec?: number): Promise<string>;
  close(): Promise<void>;
}

export async function startIssuer(): Promise<LocalIssuer> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const kid = "bench-es256";
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
  const body = JSON.stringify({ keys: [jwk] });
  let fetches = 0;
  const server = createServer((req, res) => {
    if (req.url === "/jwks.json") {
      fetches++;
      res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=600" });
      res.end(body);
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    issuer,
    jwksUri: `${issuer}/jwks.json`,
    fetches: () => fetches,
    mint: (audience, claims = {}, ttlSec = 3600) =>
      new SignJWT({ scope: "mcp:tools", org_id: "bench", client_id: "bench-client", ...claims })
        .setProtectedHeader({ alg: "ES256", kid, typ: "at+jwt" })
        .setIssuer(issuer)
        .setAudience(audience)
        .setSubject("bench-user")
        .setIssuedAt()
        .setJti(crypto.randomUUID())
        .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSec)
        .sign(privateKey),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
