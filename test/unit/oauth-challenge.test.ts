/**
 * src/auth/challenge.ts, table-driven: the WWW-Authenticate challenge (RFC 6750 §3, MCP
 * authorization), Protected Resource Metadata (RFC 9728) and bearer extraction (RFC 6750 §2). Duplicate Authorization headers are also sent through a real node:http server,
 * since Node drops the second one from `req.headers`.
 */
import assert from "node:assert/strict";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, test } from "node:test";
import {
  type BearerChallengeOptions,
  bearerChallenge,
  extractBearer,
  type HeadersLike,
  protectedResourceMetadata,
  resourceMetadataUrl,
  resourceUrl,
} from "../../src/auth/challenge.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import { sendRawRequest } from "../helpers/raw-http.ts";

const PRM = "https://mcp.example.com/.well-known/oauth-protected-resource/github/mcp";

describe("bearerChallenge", () => {
  const table: Array<[string, BearerChallengeOptions, string]> = [
    ["no credentials: no error code", { resourceMetadata: PRM }, `Bearer resource_metadata="${PRM}"`],
    [
      "no credentials, with scopes",
      { resourceMetadata: PRM, scope: ["mcp:tools", "repo:read"] },
      `Bearer scope="mcp:tools repo:read", resource_metadata="${PRM}"`,
    ],
    [
      "invalid token",
      { resourceMetadata: PRM, error: "invalid_token", scope: ["mcp:tools"] },
      `Bearer error="invalid_token", scope="mcp:tools", resource_metadata="${PRM}"`,
    ],
    [
      "insufficient scope with description",
      {
        resourceMetadata: PRM,
        error: "insufficient_scope",
        scope: ["repo:admin"],
        description: "delete_repo needs repo:admin",
      },
      `Bearer error="insufficient_scope", error_description="delete_repo needs repo:admin", scope="repo:admin", resource_metadata="${PRM}"`,
    ],
    [
      "invalid request",
      { resourceMetadata: PRM, error: "invalid_request" },
      `Bearer error="invalid_request", resource_metadata="${PRM}"`,
    ],
    [
      "quotes and backslashes escaped",
      { resourceMetadata: PRM, error: "invalid_token", description: 'say "hi" \\o/' },
      `Bearer error="invalid_token", error_description="say \\"hi\\" \\\\o/", resource_metadata="${PRM}"`,
    ],
    [
      "CR/LF cannot split the header",
      { resourceMetadata: `${PRM}\r\nSet-Cookie: a=b`, description: "x\ny" },
      `Bearer error_description="x?y", resource_metadata="${PRM}??Set-Cookie: a=b"`,
    ],
    [
      "non-ASCII replaced",
      { resourceMetadata: PRM, description: "café" },
      `Bearer error_description="caf?", resource_metadata="${PRM}"`,
    ],
    [
      "offline_access never asked for, duplicates and empties dropped",
      { resourceMetadata: PRM, scope: ["a", "offline_access", "a", "", "b"] },
      `Bearer scope="a b", resource_metadata="${PRM}"`,
    ],
    [
      "empty scope list: no scope attribute",
      { resourceMetadata: PRM, scope: [] },
      `Bearer resource_metadata="${PRM}"`,
    ],
  ];
  for (const [name, options, expected] of table) {
    test(name, () => assert.equal(bearerChallenge(options), expected));
  }
});

describe("protectedResourceMetadata (RFC 9728 §2)", () => {
  test("document", () => {
    assert.deepEqual(
      protectedResourceMetadata({
        resource: "https://mcp.example.com/github/mcp",
        authorizationServers: ["https://idp.example.com", "https://idp.example.com"],
        scopesSupported: ["mcp:tools", "offline_access", "repo:admin"],
      }),
      {
        resource: "https://mcp.example.com/github/mcp",
        authorization_servers: ["https://idp.example.com"],
        scopes_supported: ["mcp:tools", "repo:admin"],
        bearer_methods_supported: ["header"],
      },
    );
  });
  test("no scopes: no scopes_supported", () => {
    const doc = protectedResourceMetadata({
      resource: "https://a/mcp",
      authorizationServers: ["https://as"],
    });
    assert.ok(!("scopes_supported" in doc));
  });
  test("no authorization server is a config bug", () => {
    assert.throws(
      () => protectedResourceMetadata({ resource: "https://a/mcp", authorizationServers: [] }),
      TypeError,
    );
  });
});

describe("resourceUrl / resourceMetadataUrl (RFC 9728 §3.1)", () => {
  const table: Array<[string, string, string, string]> = [
    [
      "https://mcp.example.com",
      "/github/mcp",
      "https://mcp.example.com/github/mcp",
      "https://mcp.example.com/.well-known/oauth-protected-resource/github/mcp",
    ],
    [
      "https://mcp.example.com/",
      "/mcp",
      "https://mcp.example.com/mcp",
      "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
    ],
    [
      "https://MCP.Example.com:443/",
      "/mcp",
      "https://mcp.example.com/mcp",
      "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
    ],
    [
      "http://127.0.0.1:8787",
      "/demo/mcp",
      "http://127.0.0.1:8787/demo/mcp",
      "http://127.0.0.1:8787/.well-known/oauth-protected-resource/demo/mcp",
    ],
    [
      "https://example.com/edge/",
      "/github/mcp",
      "https://example.com/edge/github/mcp",
      "https://example.com/.well-known/oauth-protected-resource/edge/github/mcp",
    ],
  ];
  for (const [publicUrl, route, resource, metadata] of table) {
    test(`${publicUrl} + ${route}`, () => {
      assert.equal(resourceUrl(publicUrl, route), resource);
      assert.equal(resourceMetadataUrl(publicUrl, route), metadata);
    });
  }
});

describe("extractBearer (RFC 6750 §2.1)", () => {
  const table: Array<[string, HeadersLike, string | undefined | "400"]> = [
    ["no header", {}, undefined],
    ["Bearer", { authorization: "Bearer abc.def-ghi_jkl~mno+p/q==" }, "abc.def-ghi_jkl~mno+p/q=="],
    ["lower-case bearer", { authorization: "bearer abc" }, "abc"],
    ["upper-case BEARER", { authorization: "BEARER abc" }, "abc"],
    ["several spaces", { authorization: "Bearer   abc" }, "abc"],
    ["array of one (headersDistinct)", { authorization: ["Bearer abc"] }, "abc"],
    ["empty array", { authorization: [] }, undefined],
    ["another scheme (Basic) is not ours", { authorization: "Basic dXNlcjpwYXNz" }, undefined],
    ["DPoP scheme is not ours", { authorization: "DPoP abc" }, undefined],
    ["two Authorization headers", { authorization: ["Bearer a", "Bearer b"] }, "400"],
    ["Bearer without token", { authorization: "Bearer" }, "400"],
    ["Bearer with blank token", { authorization: "Bearer " }, "400"],
    ["token with a space", { authorization: "Bearer abc def" }, "400"],
    ["token with a comma (two tokens folded)", { authorization: "Bearer a, Bearer b" }, "400"],
    ["token with a quote", { authorization: 'Bearer "abc"' }, "400"],
    ["= inside the token", { authorization: "Bearer ab=c" }, "400"],
    ["tab separator", { authorization: "Bearer\tabc" }, "400"],
    ["empty header", { authorization: "" }, "400"],
    ["the query string is never read", { host: "x", ":path": "/mcp?access_token=abc" }, undefined],
  ];
  for (const [name, headers, expected] of table) {
    test(name, () => {
      if (expected === "400") {
        assert.throws(
          () => extractBearer(headers),
          (err: GatewayError) => {
            assert.ok(err instanceof GatewayError);
            assert.equal(err.code, "EDGE_AUTH_INVALID_REQUEST");
            assert.equal(err.status, 400);
            return true;
          },
        );
      } else {
        assert.equal(extractBearer(headers), expected);
      }
    });
  }

  test("through node:http: two Authorization headers are seen in headersDistinct (req.headers hides one)", async () => {
    const seen: Array<{ headers: string | undefined; result: string }> = [];
    const server = createServer((req: IncomingMessage, res) => {
      let result: string;
      try {
        result = String(extractBearer(req.headersDistinct));
      } catch (err) {
        result = (err as GatewayError).code;
      }
      seen.push({ headers: req.headers.authorization, result });
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as AddressInfo;
    const raw = (head: string) => sendRawRequest(port, head, "/mcp?access_token=q");
    try {
      await raw("Authorization: Bearer first\r\nAuthorization: Bearer second\r\n");
      await raw("authorization: bearer only\r\n");
      await raw("");
    } finally {
      server.close();
    }
    assert.deepEqual(seen, [
      { headers: "Bearer first", result: "EDGE_AUTH_INVALID_REQUEST" },
      { headers: "bearer only", result: "only" },
      { headers: undefined, result: "undefined" },
    ]);
  });
});
