/**
 * Tenant isolation: the tenant comes from the credential at the first
 * step and keys sessions, identity, logs and admin views. Two tenants whose users share subject
 * names never cross.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { decodeJwt } from "jose";
import { tenantOf } from "../../src/auth/authenticate.ts";
import { freePort, type InProcessEdge, startEdge } from "../helpers/edge.ts";
import { TestIdp } from "../helpers/idp.ts";
import { type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";

const ADMIN_TOKEN = "tenancy-admin-token-0123456789abcdef0123456789";
let idp: TestIdp;
let upstream: SpawnedFixture;
let edge: InProcessEdge;
let resource: string;

before(async () => {
  idp = await TestIdp.start();
  upstream = await spawnFixture("test/fixtures/conformance-server.ts");
  const port = await freePort();
  const publicUrl = `http://127.0.0.1:${port}`;
  resource = `${publicUrl}/mcp`;
  edge = await startEdge({
    listen: { host: "127.0.0.1", port },
    publicUrl,
    log: { level: "info" },
    admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
    tenancy: { claim: "https://example.com/org", required: true },
    auth: { oauth: [{ issuer: idp.issuer, jwksUri: idp.jwksUri }] },
    servers: { s: { route: "/mcp", upstream: { urls: [upstream.url] }, auth: ["oauth", "apiKey"] } },
  });
});

after(async () => {
  await edge?.stop();
  await upstream?.stop();
  await idp?.stop();
});

const HEADERS = { "content-type": "application/json", accept: "application/json, text/event-stream" };

async function tokenFor(org: string | undefined, sub = "alice"): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return idp.mint({ sub, aud: resource, exp: now + 300, "https://example.com/org": org });
}

async function connect(credential: string, extraHeaders: Record<string, string> = {}) {
  const client = new Client({ name: "tenant-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(resource), {
    requestInit: { headers: { authorization: `Bearer ${credential}`, ...extraHeaders } },
  });
  await client.connect(transport);
  return { client, transport };
}

function text(r: unknown): string {
  return ((r as { content: { text: string }[] }).content[0]?.text ?? "") as string;
}

describe("the tenant comes from the credential", () => {
  test("a token without the tenant claim is refused with 403, never given a default tenant", async () => {
    const res = await fetch(resource, {
      method: "POST",
      headers: { ...HEADERS, authorization: `Bearer ${await tokenFor(undefined)}` },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: {} }),
    });
    assert.equal(res.status, 403);
    assert.equal(
      ((await res.json()) as { error: { data: { code: string } } }).error.data.code,
      "EDGE_TENANT_REQUIRED",
    );
  });

  test("same subject in two tenants: distinct sessions; one tenant's session id is 404 for the other", async () => {
    const a = await connect(await tokenFor("acme"));
    const b = await connect(await tokenFor("globex"));
    try {
      const res = await fetch(resource, {
        method: "POST",
        headers: {
          ...HEADERS,
          authorization: `Bearer ${await tokenFor("globex")}`,
          "mcp-session-id": a.transport.sessionId as string,
          "mcp-protocol-version": "2025-11-25",
        },
        body: JSON.stringify({ jsonrpc: "2.0", id: 5, method: "tools/list" }),
      });
      assert.equal(res.status, 404, "globex/alice cannot use acme/alice's session");
      assert.ok((await a.client.listTools()).tools.length > 0, "acme/alice's session is unaffected");
      assert.notEqual(a.transport.sessionId, b.transport.sessionId);
    } finally {
      await a.client.close();
      await b.client.close();
    }
  });

  test("the upstream identity names the credential's tenant; a client's tenant header is ignored and stripped", async () => {
    const a = await connect(await tokenFor("acme"), {
      "x-tenant-id": "globex",
      "x-mcp-edge-tenant": "globex",
    });
    try {
      const seen = JSON.parse(text(await a.client.callTool({ name: "echo_headers", arguments: {} })));
      assert.equal(seen["x-tenant-id"], undefined);
      assert.equal(seen["x-mcp-edge-tenant"], undefined);
      const identity = decodeJwt(seen["x-mcp-edge-identity"]);
      assert.equal(identity.tenant, "acme");
      assert.equal(identity.sub, "alice");
    } finally {
      await a.client.close();
    }
  });

  test("every log line of a request names its tenant", async () => {
    const a = await connect(await tokenFor("acme", "log-user"));
    await a.client.listTools();
    await a.client.close();
    const lines = edge
      .logs()
      .map((l) => JSON.parse(l) as { tenant?: string; reqId?: string; msg: string })
      .filter((l) => l.reqId && l.msg === "session started");
    assert.ok(lines.length > 0);
    assert.ok(lines.some((l) => l.tenant === "acme"));
    assert.ok(
      lines.every((l) => l.tenant === "acme" || l.tenant === "globex"),
      "no request line without tenant",
    );
  });
});

describe("tenant-scoped administration", () => {
  async function api(token: string, method: string, path: string, body?: unknown) {
    const res = await fetch(`${edge.gw.adminUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, json: (await res.json()) as any };
  }

  test("a tenant admin credential sees and changes only its own tenant; the other tenant's objects are 404", async () => {
    const acmeAdmin = (
      await api(ADMIN_TOKEN, "POST", "/api/keys", {
        name: "acme-admin",
        tenant: "acme",
        scopes: ["mcp-edge:admin"],
      })
    ).json.key;
    const globexKey = (await api(ADMIN_TOKEN, "POST", "/api/keys", { name: "ci", tenant: "globex" })).json;
    const acmeKey = (await api(acmeAdmin, "POST", "/api/keys", { name: "ci" })).json;
    assert.equal(acmeKey.tenant, "acme", "created in the admin's own tenant");

    const listed = (await api(acmeAdmin, "GET", "/api/keys")).json.keys as { tenant: string }[];
    assert.ok(listed.length >= 2);
    assert.ok(listed.every((k) => k.tenant === "acme"));
    assert.equal((await api(acmeAdmin, "GET", "/api/keys?tenant=globex")).status, 404);
    assert.equal((await api(acmeAdmin, "GET", `/api/keys/${globexKey.id}`)).status, 404);
    assert.equal((await api(acmeAdmin, "DELETE", `/api/keys/${globexKey.id}`)).status, 404);
    assert.equal((await api(acmeAdmin, "POST", "/api/keys", { name: "x", tenant: "globex" })).status, 404);
    assert.equal(
      (await api(ADMIN_TOKEN, "GET", `/api/keys/${globexKey.id}`)).json.status,
      "active",
      "untouched",
    );

    // Sessions: globex's session is invisible to acme's admin.
    const g = await connect(globexKey.key);
    const sessions = (await api(acmeAdmin, "GET", "/api/sessions")).json.sessions as { tenant: string }[];
    assert.ok(sessions.every((s) => s.tenant === "acme"));
    assert.equal((await api(acmeAdmin, "DELETE", `/api/sessions/${g.transport.sessionId}`)).status, 404);
    assert.ok((await g.client.listTools()).tools.length > 0, "globex's session still works");
    await g.client.close();

    // A key without the admin scope is no admin credential.
    assert.equal((await api(acmeKey.key, "GET", "/api/keys")).status, 401);
  });
});

describe("tenantOf", () => {
  const cases: [Record<string, unknown>, string, string | null][] = [
    [{ org_id: "acme" }, "org_id", "acme"],
    [{ "https://example.com/org": "acme" }, "https://example.com/org", "acme"],
    [{ org: { id: "acme" } }, "org.id", "acme"],
    [{ tid: 42 }, "tid", "42"],
    [{ org_id: "" }, "org_id", null],
    [{ org_id: ["acme"] }, "org_id", null],
    [{ org_id: { x: 1 } }, "org_id", null],
    [{}, "org_id", null],
    [{ org: { id: "acme" } }, "org.name", null],
    [{}, "constructor.name", null], // own properties only: nothing from the prototype chain
    [{}, "toString", null],
  ];
  for (const [claims, claim, expected] of cases) {
    test(`${JSON.stringify(claims)} / ${claim} → ${expected}`, () => {
      assert.equal(tenantOf(claims, claim), expected);
    });
  }
});
