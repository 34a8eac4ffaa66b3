/**
 * Client ID Metadata Documents with the official SDK v1 client: the client's `client_id` is the
 * HTTPS URL of its document, served on loopback (TLS with a test certificate the edge process
 * trusts through NODE_EXTRA_CA_CERTS), fetched by the edge through its guarded egress with the
 * documented opt-in `registration.cimd.allowPrivateNetworks`. The document lists a port-less
 * loopback redirect (as Claude Code's does) and the SDK authorizes on an ephemeral port. Without
 * the opt-in, the same document on a private address is refused, nothing issued.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, test } from "node:test";
import { auth } from "@modelcontextprotocol/sdk/client/auth.js";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Browser } from "../helpers/browser.ts";
import { type EdgeConfigDoc, freePort, type SpawnedEdge, spawnEdge, tempDir } from "../helpers/edge.ts";
import { NODE_BIN } from "../helpers/spawn.ts";
import { ADMIN_TOKEN, type AsTarget, DEMO, signInAndAllow, TestOAuthProvider } from "./helpers.ts";

const dir = tempDir("mcp-edge-cimd-");
let docServer: Server;
let docUrl: string;
let fetches = 0;
const edges: SpawnedEdge[] = [];

async function edgeWith(allowPrivate: boolean, timeout = "5s"): Promise<AsTarget> {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const d = tempDir("mcp-edge-cimd-edge-");
  const doc: EdgeConfigDoc = {
    listen: { host: "127.0.0.1", port },
    publicUrl: base,
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    store: { sqlite: path.join(d, "edge.db") },
    drain: { timeout: "5s", delay: "0s" },
    log: { level: "warn" },
    auth: {
      authorizationServer: {
        enabled: true,
        registration: { cimd: { allowPrivateNetworks: allowPrivate, timeout } },
      },
    },
    servers: {
      demo: {
        route: "/mcp",
        upstream: { stdio: { command: NODE_BIN, args: [DEMO], mode: "shared" } },
        auth: ["apiKey", "oauth"],
        scopes: { default: ["mcp:tools"] },
      },
    },
  };
  const prev = process.env.NODE_EXTRA_CA_CERTS;
  process.env.NODE_EXTRA_CA_CERTS = path.join(dir, "cert.pem");
  try {
    edges.push(await spawnEdge(doc, d, 60_000));
  } finally {
    if (prev === undefined) delete process.env.NODE_EXTRA_CA_CERTS;
    else process.env.NODE_EXTRA_CA_CERTS = prev;
  }
  const e = edges.at(-1)!;
  const res = await fetch(`${e.adminUrl}/api/keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "dev", server: "demo", tenant: "acme" }),
  });
  assert.equal(res.status, 201);
  const key = ((await res.json()) as { key: string }).key;
  return { base: e.baseUrl, mcpUrl: `${e.baseUrl}/mcp`, key };
}

before(async () => {
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      path.join(dir, "key.pem"),
      "-out",
      path.join(dir, "cert.pem"),
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ],
    { stdio: "ignore" },
  );
  docServer = createServer(
    { key: readFileSync(path.join(dir, "key.pem")), cert: readFileSync(path.join(dir, "cert.pem")) },
    (req, res) => {
      fetches++;
      const id = `https://localhost:${(docServer.address() as AddressInfo).port}${req.url}`;
      if (req.url === "/slow.json") {
        setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end("{}"), 3000).unref();
        return;
      }
      const body = JSON.stringify({
        client_id: req.url === "/oauth/client.json" ? docUrl : id,
        ...(req.url === "/big.json" ? { padding: "x".repeat(10_000) } : {}),
        client_name: "Claude Code (test)",
        redirect_uris: ["http://127.0.0.1/callback", "http://localhost/callback"],
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: "none",
      });
      res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=600" }).end(body);
    },
  );
  await new Promise<void>((r) => docServer.listen(0, "127.0.0.1", () => r()));
  docUrl = `https://localhost:${(docServer.address() as AddressInfo).port}/oauth/client.json`;
});
after(async () => {
  await Promise.allSettled(edges.map((e) => e.stop()));
  docServer?.closeAllConnections();
  await new Promise<void>((r) => docServer?.close(() => r()));
});

test("SDK with CIMD: port-less loopback redirect in the document, an ephemeral port at authorize", async () => {
  const a = await edgeWith(true);
  const ephemeral = await freePort();
  const provider = new TestOAuthProvider({
    redirectUrl: `http://127.0.0.1:${ephemeral}/callback`,
    clientMetadataUrl: docUrl,
    metadata: { redirect_uris: ["http://127.0.0.1/callback"] },
  });
  assert.equal(await auth(provider, { serverUrl: a.mcpUrl }), "REDIRECT");
  assert.equal(
    provider.lastAuthorizationUrl?.searchParams.get("client_id"),
    docUrl,
    "the document URL is the client_id",
  );
  const { redirect, pages } = await signInAndAllow(
    new Browser(),
    provider.lastAuthorizationUrl!.toString(),
    a.key,
    provider.redirectUrl,
  );
  const consent = pages.find((p) => p.text.includes("Allow access?"));
  assert.ok(consent);
  assert.match(consent.text, /Claude Code \(test\)/);
  assert.match(consent.text, /verified/);
  assert.match(consent.text, /runs on your computer/);
  assert.equal(redirect.searchParams.get("iss"), a.base);
  const code = redirect.searchParams.get("code")!;
  assert.equal(await auth(provider, { serverUrl: a.mcpUrl, authorizationCode: code }), "AUTHORIZED");
  const c = new Client({ name: "cimd", version: "1.0.0" });
  await c.connect(new StreamableHTTPClientTransport(new URL(a.mcpUrl), { authProvider: provider }));
  const r = (await c.callTool({ name: "echo", arguments: { text: "cimd" } })) as any;
  assert.equal(r.content[0].text, "cimd");
  await c.close();
  assert.equal(await auth(provider, { serverUrl: a.mcpUrl }), "AUTHORIZED", "refresh");
  assert.ok(fetches >= 1);
});

test("without the opt-in, a document on a private address is refused: the error on the edge's page", async () => {
  const a = await edgeWith(false);
  const q = new URLSearchParams({
    response_type: "code",
    client_id: docUrl,
    redirect_uri: "http://127.0.0.1:40123/callback",
    code_challenge: "x".repeat(43),
    code_challenge_method: "S256",
    scope: "mcp:tools",
    resource: a.mcpUrl,
  });
  const before = fetches;
  const page = await new Browser().get(`${a.base}/authorize?${q}`, "http://127.0.0.1:40123/callback");
  assert.equal(page.status, 400, page.text.slice(0, 300));
  assert.match(page.text, /invalid_client/);
  assert.equal(fetches, before, "the private address was never contacted");
});

test("a document too large or too slow is refused: nothing issued, the fetch audited", async () => {
  const a = await edgeWith(true, "1s");
  const port = (docServer.address() as AddressInfo).port;
  for (const doc of ["big", "slow"]) {
    const clientId = `https://localhost:${port}/${doc}.json`;
    const q = new URLSearchParams({
      response_type: "code",
      client_id: clientId,
      redirect_uri: "http://127.0.0.1:40124/callback",
      code_challenge: "x".repeat(43),
      code_challenge_method: "S256",
      scope: "mcp:tools",
      resource: a.mcpUrl,
    });
    const page = await new Browser().get(`${a.base}/authorize?${q}`, "http://127.0.0.1:40124/callback");
    assert.equal(page.status, 400, `${doc}: ${page.text.slice(0, 300)}`);
    assert.match(page.text, /invalid_client/);
  }
  const audit = await fetch(`${edges.at(-1)!.adminUrl}/api/audit?limit=200`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  const records = ((await audit.json()) as { records: any[] }).records;
  const fetchesAudited = records.filter((r) => r.method === "oauth.cimd_fetch" && r.decision === "refused");
  assert.ok(fetchesAudited.length >= 2, JSON.stringify(records.map((r) => [r.method, r.decision, r.detail])));
  // big.json is sent chunked (no Content-Length): the egress cap itself stops it, with its code.
  assert.ok(
    fetchesAudited.some(
      (r) => r.target?.endsWith("/big.json") && r.detail?.reason === "EDGE_EGRESS_RESPONSE_TOO_LARGE",
    ),
    JSON.stringify(fetchesAudited.map((r) => [r.target, r.detail])),
  );
});
