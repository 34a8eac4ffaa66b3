/**
 * Configuration reload (`POST /api/reload`, SIGHUP, `mcp-edge reload`) under continuous calls.
 *
 * In process: SDK v1 clients call a tool in a loop on two HTTP upstream instances (real child
 * processes whose results name the instance, the upstream session and how many calls that session
 * served), a raw GET stream stays open, and the config file is reloaded four times: a limit changed
 * and a route added (plus a listener change, named as restart-only), a file that does not validate,
 * a file that does not parse, then an upstream list grown by one instance. Counted at the end: no
 * failed call, every client on its one edge session and its one upstream session with the call
 * count equal to its own (no call lost, no re-initialization), no request naming a session an
 * upstream did not hold, the stream open and still receiving keep-alives.
 *
 * As a process: `mcp-edge serve` gets SIGHUP after its file changed (a route appears), then after
 * it broke (refused, logged with its code, the old routes serve), and `mcp-edge reload` (the CLI,
 * a real process) asks through the admin API.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Writable } from "node:stream";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { loadConfigFile } from "../../src/config/load.ts";
import { Gateway } from "../../src/gateway.ts";
import { createLogger } from "../../src/observability/logger.ts";
import {
  connectSdk,
  rawSession,
  sessionHeaders,
  type SdkClient,
  whereOf,
} from "../helpers/cluster/clients.ts";
import { startUpstreams, type Upstream } from "../helpers/cluster/upstream-fleet.ts";
import { type EdgeConfigDoc, spawnEdge, tempDir, withTestDefaults } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";
import { waitFor } from "../helpers/wait.ts";

const ADMIN_TOKEN = "reload-test-admin-token-0123456789abcdef";

/** One SDK client calling `where` in a loop, counting what it got. */
interface Caller {
  sdk: SdkClient;
  sessionId: string;
  ok: number;
  failures: string[];
  upstreamSessions: Set<string>;
  lastN: number;
  loop: Promise<void>;
}

function startCaller(sdk: SdkClient, running: { on: boolean }): Caller {
  const c: Caller = {
    sdk,
    sessionId: sdk.transport.sessionId ?? "",
    ok: 0,
    failures: [],
    upstreamSessions: new Set(),
    lastN: 0,
    loop: Promise.resolve(),
  };
  c.loop = (async () => {
    while (running.on) {
      try {
        const w = whereOf(await sdk.client.callTool({ name: "where", arguments: {} }));
        c.ok++;
        c.upstreamSessions.add(w.session);
        c.lastN = w.n;
      } catch (err) {
        c.failures.push(String(err));
      }
    }
  })();
  return c;
}

/** A raw standalone GET stream of a session: every byte received, and whether it ended. */
function openStream(
  url: string,
  key: string,
  sid: string,
): { text: () => string; ended: () => boolean; close: () => void } {
  let text = "";
  let ended = false;
  const req = httpRequest(
    url,
    { method: "GET", headers: { ...sessionHeaders(key, sid), accept: "text/event-stream" } },
    (res) => {
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        text += d;
      });
      res.on("end", () => {
        ended = true;
      });
      res.on("error", () => {
        ended = true;
      });
    },
  );
  req.on("error", () => {
    ended = true;
  });
  req.end();
  return { text: () => text, ended: () => ended, close: () => req.destroy() };
}

async function adminPost(adminUrl: string, p: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${adminUrl}${p}`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  return { status: res.status, body: await res.json() };
}

describe("config reload", () => {
  let upstreams: Upstream[] = [];
  const cleanups: (() => Promise<unknown>)[] = [];
  before(async () => {
    upstreams = await startUpstreams(["a", "b"]);
  });
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    await Promise.allSettled(upstreams.map((u) => u.stop()));
  });

  test("under continuous calls: a limit changed and a route added lose no call, session or stream; broken files are refused", async (t) => {
    const [a, b] = upstreams as [Upstream, Upstream];
    const dir = tempDir();
    const file = path.join(dir, "mcp-edge.yaml");
    const base = (servers: Record<string, unknown>, extra: Record<string, unknown> = {}): EdgeConfigDoc =>
      withTestDefaults(
        {
          admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
          streams: { keepAlive: "300ms" },
          servers,
          ...extra,
        },
        dir,
      );
    const main = { route: "/mcp", upstream: { urls: [a.url] }, limits: { key: "100000/min" } };
    writeFileSync(file, JSON.stringify(base({ main })));
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(...String(chunk).split("\n").filter(Boolean));
        cb();
      },
    });
    const source = () => loadConfigFile(file, {});
    const config = source();
    const gw = await Gateway.start(config, {
      logger: createLogger({ level: "info", destination: sink }),
      source,
    });
    cleanups.push(() => gw.stop());
    const { key } = await gw.keys.create({ name: "main-key", server: "main" });
    const url = gw.url("main");

    // Continuous load: 4 SDK clients (each with the SDK's own GET stream) and a raw GET stream.
    const running = { on: true };
    const callers: Caller[] = [];
    for (let i = 0; i < 4; i++) {
      const sdk = await connectSdk(url, key, `reload-${i}`);
      cleanups.push(() => sdk.client.close());
      callers.push(startCaller(sdk, running));
    }
    cleanups.push(async () => {
      running.on = false;
      await Promise.allSettled(callers.map((c) => c.loop));
    });
    const streamSid = await rawSession(url, key);
    const stream = openStream(url, key, streamSid);
    cleanups.push(async () => stream.close());
    const progressed = async (what: string, from: number[], more: number) =>
      waitFor(() => callers.every((c, i) => c.ok >= (from[i] ?? 0) + more), { what, timeout: 20_000 });
    const counts = () => callers.map((c) => c.ok);
    await progressed("calls before the reload", [], 5);

    // 1. A limit changed (a per-tool rate on main), a route added, and a listener change.
    writeFileSync(
      file,
      JSON.stringify(
        base(
          {
            main: { ...main, limits: { key: "100000/min", tools: { where_limited: "2/min" } } },
            extra: { route: "/extra/mcp", upstream: { urls: [b.url] } },
          },
          { listen: { host: "127.0.0.1", port: gw.port + 1 } },
        ),
      ),
    );
    const first = await adminPost(gw.adminUrl, "/api/reload");
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.deepEqual(first.body.servers, {
      added: ["extra"],
      removed: [],
      changed: ["main"],
      upstreamReplaced: [],
    });
    assert.deepEqual(first.body.restartRequired, ["listen"], "the listener keeps its port until a restart");
    assert.equal(new URL(gw.url("main")).port, String(gw.port));
    await progressed("calls after the first reload", counts(), 5);

    // The new route serves (a key for its server can be made now), the new limit applies.
    const { key: extraKey } = await gw.keys.create({ name: "extra-key", server: "extra" });
    const onExtra = await connectSdk(gw.url("extra"), extraKey, "extra");
    cleanups.push(() => onExtra.client.close());
    assert.equal(whereOf(await onExtra.client.callTool({ name: "where", arguments: {} })).instance, "b");
    const limited = await connectSdk(url, key, "limited");
    cleanups.push(() => limited.client.close());
    for (let i = 0; i < 2; i++) await limited.client.callTool({ name: "where_limited", arguments: {} });
    await assert.rejects(limited.client.callTool({ name: "where_limited", arguments: {} }), /429|Rate limit/);

    // 2. A file that does not validate, 3. one that does not parse: refused, coded, nothing changes.
    writeFileSync(file, JSON.stringify(base({ main: { ...main, route: "no-slash" } })));
    const invalid = await adminPost(gw.adminUrl, "/api/reload");
    assert.equal(invalid.status, 422);
    assert.equal(invalid.body.error.code, "EDGE_RELOAD_REFUSED");
    assert.match(invalid.body.error.message, /EDGE_CONFIG_INVALID[\s\S]*servers\.main\.route/);
    writeFileSync(file, "servers: {main: [unclosed");
    const unparsable = await adminPost(gw.adminUrl, "/api/reload");
    assert.equal(unparsable.status, 422);
    assert.match(unparsable.body.error.message, /EDGE_CONFIG_INVALID.*not valid YAML/);
    assert.deepEqual([...gw.routes.keys()], ["main", "extra"], "the running routes stay");
    assert.ok(
      lines.some((l) => l.includes('"code":"EDGE_RELOAD_REFUSED"') && l.includes("reload refused")),
      "the refusal is logged with its code",
    );
    assert.equal(whereOf(await onExtra.client.callTool({ name: "where", arguments: {} })).instance, "b");
    await assert.rejects(limited.client.callTool({ name: "where_limited", arguments: {} }), /429|Rate limit/);
    await progressed("calls after the refused reloads", counts(), 5);

    // 4. The upstream list of main grows by one instance: a new upstream object, same sessions.
    writeFileSync(
      file,
      JSON.stringify(
        base({
          main: {
            ...main,
            upstream: { urls: [a.url, b.url] },
            limits: { key: "100000/min", tools: { where_limited: "2/min" } },
          },
          extra: { route: "/extra/mcp", upstream: { urls: [b.url] } },
        }),
      ),
    );
    const grown = await adminPost(gw.adminUrl, "/api/reload");
    assert.equal(grown.status, 200, JSON.stringify(grown.body));
    assert.deepEqual(grown.body.servers.upstreamReplaced, ["main"]);
    assert.deepEqual(grown.body.restartRequired, [], "the listener is back as it runs");
    const beforeStop = counts();
    await progressed("calls after the upstream list changed", beforeStop, 5);
    const streamText = stream.text();

    running.on = false;
    await Promise.all(callers.map((c) => c.loop));
    const total = callers.reduce((n, c) => n + c.ok, 0);
    for (const [i, c] of callers.entries()) {
      assert.deepEqual(c.failures, [], `client ${i}: no call failed`);
      assert.equal(c.sdk.transport.sessionId, c.sessionId, `client ${i}: the same edge session`);
      assert.equal(c.upstreamSessions.size, 1, `client ${i}: the same upstream session throughout`);
      assert.equal(c.lastN, c.ok, `client ${i}: the upstream served every call of the session (${c.ok})`);
      assert.deepEqual(c.sdk.errors, [], `client ${i}: its transport saw no stream error`);
    }
    const stats = await a.stats();
    assert.equal(stats.unknownSession, 0, "no request named a session the upstream did not hold");
    // 4 callers, the stream's session, the rate-limit client: each initialized once, never again.
    assert.equal(stats.initialized, 6, "no session was re-initialized");
    const listed = await fetch(`${gw.adminUrl}/api/sessions?server=main`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    }).then((r) => r.json() as Promise<{ sessions: { id: string }[] }>);
    for (const c of callers)
      assert.ok(
        listed.sessions.some((s) => s.id === c.sessionId),
        "the session is still stored",
      );
    assert.equal(stream.ended(), false, "the open GET stream was not closed");
    const keepAlivesAfter = await waitFor(
      () => {
        const n = (stream.text().slice(streamText.length).match(/^:/gm) ?? []).length;
        return n >= 2 && n;
      },
      { what: "keep-alives on the stream after the reloads", timeout: 5000 },
    );
    assert.ok(keepAlivesAfter >= 2);
    assert.ok(total > 40, `calls made during the reloads: ${total}`);
    t.diagnostic(
      `4 clients, 4 reloads (a limit changed and a route added; two broken files refused; an upstream list grown): ${total} calls, 0 failed, ` +
        `4 edge sessions and 4 upstream sessions unchanged, ${keepAlivesAfter} keep-alives on the open stream after the last reload`,
    );
  });

  test("stdio: an unchanged command keeps its processes, a new stdio route starts the egress proxy; refusals of what needs a restart; admin scope", async () => {
    const [a] = upstreams as [Upstream];
    const dir = tempDir();
    const fixture = path.join(REPO_ROOT, "test/fixtures/conformance-server.ts");
    const stdioServer = {
      route: "/local/mcp",
      upstream: { stdio: { command: NODE_BIN, args: [fixture, "--stdio"] } },
      auth: ["none"],
    };
    const remote = { route: "/mcp", upstream: { urls: [a.url] }, auth: ["none"] };
    const file = path.join(dir, "mcp-edge.yaml");
    const write = (doc: Record<string, unknown> & { servers: Record<string, unknown> }) =>
      writeFileSync(
        file,
        JSON.stringify(
          withTestDefaults(
            {
              admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN },
              log: { level: "silent" }, // live on reload: the file's level becomes the logger's
              ...doc,
            } as EdgeConfigDoc,
            dir,
          ),
        ),
      );
    write({ servers: { remote } });
    const source = () => loadConfigFile(file, {});
    const gw = await Gateway.start(source(), { logger: createLogger({ level: "silent" }), source });
    cleanups.push(() => gw.stop());
    assert.equal(gw.egressProxy, undefined, "no stdio route: no egress proxy");

    // A stdio route added: the egress proxy starts with it.
    write({ servers: { remote, local: stdioServer } });
    const added = await gw.reload();
    assert.deepEqual(added.servers.added, ["local"]);
    assert.ok(gw.egressProxy, "the egress proxy runs now");
    const client = new Client({ name: "stdio", version: "1" });
    await client.connect(new StreamableHTTPClientTransport(new URL(gw.url("local"))));
    cleanups.push(() => client.close());
    const pidOf = async () =>
      (
        JSON.parse(
          ((await client.callTool({ name: "whoami", arguments: {} })).content as { text: string }[])[0]
            ?.text ?? "{}",
        ) as { pid: number }
      ).pid;
    const pid = await pidOf();

    // Its auth and limits change, its command does not: the same process serves the session.
    write({ servers: { remote, local: { ...stdioServer, limits: { key: "1000/min" } } } });
    const changed = await gw.reload();
    assert.deepEqual(changed.servers.changed, ["local"]);
    assert.deepEqual(changed.servers.upstreamReplaced, []);
    assert.equal(await pidOf(), pid, "the same spawned process");

    // A route that needs what only changes at restart (OAuth issuers, publicUrl) is refused whole.
    write({
      publicUrl: "http://127.0.0.1:9",
      auth: { oauth: [{ issuer: "http://127.0.0.1:9/issuer" }] },
      servers: {
        remote,
        local: stdioServer,
        guarded: { route: "/guarded/mcp", upstream: { urls: [a.url] }, auth: ["oauth"] },
      },
    });
    await assert.rejects(gw.reload(), (err: Error & { code?: string }) => {
      assert.equal(err.code, "EDGE_RELOAD_REFUSED");
      assert.match(
        err.message,
        /servers\.guarded\.auth: oauth needs auth\.oauth issuers and publicUrl in the running config/,
      );
      return true;
    });
    assert.deepEqual([...gw.routes.keys()], ["remote", "local"], "nothing of it was applied");
    assert.equal(await pidOf(), pid);

    // The whole edge's configuration: a tenant admin key is not allowed to reload it.
    const { key } = await gw.keys.create({
      name: "tenant-admin",
      server: "remote",
      tenant: "acme",
      scopes: ["mcp-edge:admin"],
    });
    const asTenant = await fetch(`${gw.adminUrl}/api/reload`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}` },
    });
    assert.equal(asTenant.status, 404);
    assert.equal(((await asTenant.json()) as { error: { code: string } }).error.code, "EDGE_ADMIN_NOT_FOUND");

    // An edge started without a file has nothing to reload from.
    const bare = await Gateway.start(loadConfigFile(file, {}), { logger: createLogger({ level: "silent" }) });
    cleanups.push(() => bare.stop());
    const none = await adminPost(bare.adminUrl, "/api/reload");
    assert.equal(none.status, 409);
    assert.equal(none.body.error.code, "EDGE_RELOAD_UNAVAILABLE");
  });

  test("SIGHUP reloads the file of a running process; a broken file is refused and logged; `mcp-edge reload` asks through the admin API", async () => {
    const [a, b] = upstreams as [Upstream, Upstream];
    const dir = tempDir();
    process.env.RELOAD_TEST_ADMIN_TOKEN = ADMIN_TOKEN;
    const servers = { main: { route: "/mcp", upstream: { urls: [a.url] }, auth: ["none"] } };
    const doc = {
      admin: { listen: { host: "127.0.0.1", port: 0 }, token: "${RELOAD_TEST_ADMIN_TOKEN}" },
      servers,
    };
    const edge = await spawnEdge(doc, dir);
    cleanups.push(() => edge.stop());
    const file = path.join(dir, readdirSync(dir).find((f) => f.endsWith(".yaml")) as string);
    const rewrite = (next: Record<string, unknown>) =>
      writeFileSync(
        file,
        JSON.stringify({
          ...withTestDefaults({ ...doc, ...next } as EdgeConfigDoc, dir),
          log: { level: "info" },
        }),
      );

    const client = new Client({ name: "sighup", version: "1" });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${edge.baseUrl}/mcp`)));
    cleanups.push(() => client.close());
    const running = { on: true };
    let ok = 0;
    const failures: string[] = [];
    const loop = (async () => {
      while (running.on) {
        try {
          whereOf(await client.callTool({ name: "where", arguments: {} }));
          ok++;
        } catch (err) {
          failures.push(String(err));
        }
      }
    })();
    cleanups.push(async () => {
      running.on = false;
      await loop;
    });
    await waitFor(() => ok >= 5, { what: "calls before SIGHUP" });

    rewrite({
      servers: { ...servers, extra: { route: "/extra/mcp", upstream: { urls: [b.url] }, auth: ["none"] } },
    });
    edge.child.kill("SIGHUP");
    const extra = new Client({ name: "extra", version: "1" });
    await waitFor(
      async () => {
        const res = await fetch(`${edge.baseUrl}/extra/mcp`, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
          body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
        });
        await res.arrayBuffer();
        return res.status !== 404;
      },
      { what: "the route added by SIGHUP" },
    );
    await extra.connect(new StreamableHTTPClientTransport(new URL(`${edge.baseUrl}/extra/mcp`)));
    cleanups.push(() => extra.close());
    assert.equal(whereOf(await extra.callTool({ name: "where", arguments: {} })).instance, "b");
    assert.match(edge.output(), /"msg":"configuration reloaded"/);

    rewrite({ servers: { main: { route: "/mcp", upstream: { urls: ["not a url"] } } } });
    edge.child.kill("SIGHUP");
    await waitFor(() => /"code":"EDGE_RELOAD_REFUSED".*reload refused/.test(edge.output()), {
      what: "the refusal in the log",
    });
    assert.equal(whereOf(await extra.callTool({ name: "where", arguments: {} })).instance, "b");

    // The CLI, as a real process, through the admin API: the broken file is refused (exit 1,
    // coded); fixed, it reloads (exit 0) and names what changed.
    const cli = (): Promise<{ code: number | null; out: string; err: string }> =>
      new Promise((resolve) => {
        const child = spawn(
          NODE_BIN,
          [path.join(REPO_ROOT, "src/main.ts"), "reload", "--url", edge.adminUrl],
          {
            env: { ...process.env, MCP_EDGE_ADMIN_TOKEN: ADMIN_TOKEN },
            stdio: ["ignore", "pipe", "pipe"],
          },
        );
        let out = "";
        let err = "";
        child.stdout.on("data", (d: Buffer) => (out += d.toString()));
        child.stderr.on("data", (d: Buffer) => (err += d.toString()));
        child.on("exit", (code) => resolve({ code, out, err }));
      });
    const refused = await cli();
    assert.equal(refused.code, 1, refused.out);
    assert.match(refused.err, /^EDGE_RELOAD_REFUSED: EDGE_CONFIG_INVALID/);
    rewrite({ servers });
    const done = await cli();
    assert.equal(done.code, 0, done.err);
    assert.match(done.out, /servers removed: +extra/);
    const gone = await fetch(`${edge.baseUrl}/extra/mcp`, { method: "POST", body: "{}" });
    await gone.arrayBuffer();
    assert.equal(gone.status, 404, "the removed route is gone");

    running.on = false;
    await loop;
    assert.deepEqual(failures, [], "no call on the kept route failed across three reloads");
    assert.ok(ok > 10, `calls made: ${ok}`);
    assert.equal(edge.child.exitCode, null, "the process still runs");
  });
});
