/**
 * The token vault's connect pages in a real browser: Chromium (Debian's package, driven by
 * playwright-core) opens the link of a -32042 answer, confirms on the edge's page, signs in at a
 * real third-party provider (oidc-provider, test/helpers/third-party.ts) and lands on the edge's
 * "connected" page; the same call then succeeds. A plain HTTP driver sets what a browser would send
 * itself; Chromium shows what it really sends: `Origin: null` on a form post from a page served with
 * `Referrer-Policy: no-referrer`, and a `form-action` CSP that blocks the post's redirect to the
 * provider — both made every real browser fail to connect.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Browser } from "playwright-core";
import { chromiumMissing, launchChromiumBrowser } from "../helpers/chromium.ts";
import { freePort, type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { type ApiServer, type Provider, startApiServer, startProvider } from "../helpers/third-party.ts";

const missing = chromiumMissing("the connect pages in Chromium");
const ADMIN_TOKEN = "connect-pages-e2e-admin-token-0123456789";
const SECRET_ENV = "MCP_EDGE_TEST_CP_TP_SECRET";
const KEY_ENV = "MCP_EDGE_TEST_CP_VAULT_KEY";

let tp: Provider;
let api: ApiServer;
let edge: InProcessEdge;
let base: string;
let browser: Browser;

before(async () => {
  if (missing) return;
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  tp = await startProvider({ redirectUris: [`${base}/connect/tp/callback`], ttlSeconds: 300 });
  api = await startApiServer(tp.issuer);
  process.env[SECRET_ENV] = tp.clientSecret;
  process.env[KEY_ENV] = Buffer.alloc(32, 5).toString("base64");
  edge = await startEdge(
    {
      listen: { host: "127.0.0.1", port },
      publicUrl: base,
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
      egress: { allowPrivateNetworks: true, allowPorts: [Number(new URL(tp.issuer).port)] },
      connections: {
        tp: {
          displayName: "Example Provider",
          issuer: tp.issuer,
          clientId: tp.clientId,
          clientSecret: `\${${SECRET_ENV}}`,
          scopes: ["openid", "offline_access", "repo"],
        },
      },
      vault: { key: `\${${KEY_ENV}}` },
      servers: {
        api: {
          route: "/mcp",
          upstream: { urls: [api.url] },
          auth: ["apiKey"],
          credentials: { connection: "tp" },
        },
      },
    },
    tempDir("mcp-edge-connect-pages-"),
  );
  browser = await launchChromiumBrowser();
});

after(async () => {
  await browser?.close();
  await edge?.stop();
  await api?.stop();
  await tp?.stop();
  delete process.env[SECRET_ENV];
  delete process.env[KEY_ENV];
});

test(
  "Chromium connects an account from a -32042 link: confirm, provider login, connected; the call then succeeds",
  { skip: missing },
  async () => {
    const created = await fetch(`${edge.gw.adminUrl}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "carol", server: "api", tenant: "acme" }),
    });
    assert.equal(created.status, 201);
    const { key } = (await created.json()) as { key: string };
    const client = new Client({ name: "connect-pages-e2e", version: "1.0.0" });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${base}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${key}` } },
      }),
    );
    try {
      const err = await client.callTool({ name: "whoami", arguments: {} }).then(
        () => assert.fail("the call should need a connection"),
        (e: unknown) => e as { code: number; data: { elicitations: { url: string }[] } },
      );
      assert.equal(err.code, -32042);
      const context = await browser.newContext();
      const page = await context.newPage();
      try {
        await page.goto(err.data.elicitations[0]?.url as string);
        assert.match(await page.content(), /Connect your <b>Example Provider<\/b> account/);
        await Promise.all([
          page.waitForURL((u) => u.origin === tp.issuer, { timeout: 15_000 }),
          page.click("form button"),
        ]);
        await page.fill('input[name="login"]', "carol");
        await Promise.all([
          page.waitForURL((u) => u.origin === base, { timeout: 15_000 }),
          page.click("button"),
        ]);
        assert.match(await page.content(), /account is connected/);
      } finally {
        await context.close();
      }
      const r = await client.callTool({ name: "whoami", arguments: {} });
      const me = JSON.parse((r.content as { text: string }[])[0]?.text ?? "{}") as { login?: string };
      assert.equal(me.login, "carol");
    } finally {
      await client.close();
    }
  },
);
