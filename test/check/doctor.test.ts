/**
 * `mcp-edge doctor` as a real process against real parts: the quickstart (no config file, then
 * with the quickstart edge running and --url), and a distributed config with a private
 * redis-server, PostgreSQL and a real SDK v2 upstream. Each red item comes with a fix; the tests
 * follow the fix and see the item turn green:
 * - a schema never migrated → "start mcp-edge serve once" → migrations applied;
 * - Redis stopped → "start Redis at …" → reachable again;
 * - the upstream down → "start the server at …" → reachable, with its era and check grade;
 * - a secret written inline, an admin listener on every interface without a token.
 * The machine's shared Redis on 6379 is never touched: the stopped Redis is this test's own.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { freePort, spawnEdge, tempDir, type SpawnedEdge } from "../helpers/edge.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { type PrivateRedis, startRedisServer } from "../helpers/redis.ts";
import { NODE_BIN, REPO_ROOT, type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";

const ADMIN_TOKEN = "doctor-admin-token-0123456789abcdef-0123456789";
process.env.MCP_EDGE_ADMIN_TOKEN = ADMIN_TOKEN;

interface DoctorRun {
  code: number | null;
  report: {
    ok: boolean;
    items: { id: string; title: string; status: string; reason: string; fix?: string }[];
  };
  stdout: string;
}

function doctor(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<DoctorRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE_BIN, [path.join(REPO_ROOT, "src/main.ts"), "doctor", "--json", ...args], {
      cwd,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      try {
        resolve({ code, report: JSON.parse(stdout), stdout });
      } catch {
        reject(new Error(`doctor printed no JSON (exit ${code}):\n${stdout}\n${stderr}`));
      }
    });
  });
}

function status(run: DoctorRun, id: string): string | undefined {
  const found = run.report.items.filter((i) => i.id === id);
  if (found.some((i) => i.status === "fail")) return "fail";
  if (found.some((i) => i.status === "warn")) return "warn";
  return found[0]?.status;
}

function failing(run: DoctorRun): string[] {
  return run.report.items.filter((i) => i.status === "fail").map((i) => i.id);
}

describe("doctor: the quickstart", { timeout: 120_000 }, () => {
  const cwd = tempDir("mcp-edge-doctor-qs-");
  let edge: ReturnType<typeof spawn> | undefined;
  after(() => {
    edge?.kill("SIGTERM");
  });

  test("no config file: the quickstart passes, with a rate-limit warning and its fix", async () => {
    const run = await doctor([], cwd);
    assert.equal(run.code, 0, run.stdout);
    assert.deepEqual(failing(run), []);
    const warn = run.report.items.filter((i) => i.status === "warn");
    assert.deepEqual(
      warn.map((i) => i.id),
      ["checklist.rate-limiting"],
    );
    assert.match(warn[0]!.fix!, /limits/);
    assert.equal(status(run, "store.sqlite"), "pass");
    assert.equal(status(run, "upstream.demo"), "pass");
  });

  test("with the quickstart running: --url probes it (ready, check grade); a stopped edge turns edge.ready red", async () => {
    const port = await freePort();
    const adminPort = await freePort();
    const env = { MCP_EDGE_PORT: String(port), MCP_EDGE_ADMIN_PORT: String(adminPort) };
    // Stopped first: the items that need the running edge fail, and say how to start it.
    const down = await doctor(["--url", `http://127.0.0.1:${port}/mcp`], cwd, env);
    assert.equal(down.code, 1);
    assert.deepEqual(failing(down).sort(), ["edge.check", "edge.ready"]);
    assert.match(down.report.items.find((i) => i.id === "edge.ready")!.fix!, /mcp-edge serve/);

    // Follow the fix: start it.
    edge = spawn(NODE_BIN, [path.join(REPO_ROOT, "src/main.ts"), "serve"], {
      cwd,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let banner = "";
    const key = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`quickstart did not start:\n${banner}`)), 20_000);
      edge!.stderr!.on("data", (d: Buffer) => {
        banner += d.toString();
        const m = /(mcpe_[A-Za-z0-9_-]+)/.exec(banner);
        if (m && banner.includes("Client config")) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
    });
    const up = await doctor(
      ["--url", `http://127.0.0.1:${port}/mcp`, "-H", `Authorization: Bearer ${key}`],
      cwd,
      env,
    );
    assert.equal(up.code, 0, up.stdout);
    assert.equal(status(up, "edge.ready"), "pass");
    const check = up.report.items.find((i) => i.id === "edge.check")!;
    assert.equal(check.status, "pass", check.reason);
    assert.match(check.reason, /eras 2025-11-25/);
    assert.ok(!up.stdout.includes(key), "the key is never printed");
  });
});

describe("doctor: clock skew against the OAuth issuers", { timeout: 60_000 }, () => {
  const dir = tempDir("mcp-edge-doctor-clock-");
  const servers: Server[] = [];
  after(async () => {
    for (const s of servers) await new Promise<void>((r) => s.close(() => r()));
  });

  /** An issuer whose HTTP Date header runs `skewMs` off this machine's clock (its own clock). */
  async function issuer(skewMs: number): Promise<string> {
    const srv = createServer((_req, res) => {
      res.sendDate = false;
      res.writeHead(200, {
        "content-type": "application/json",
        date: new Date(Date.now() + skewMs).toUTCString(),
      });
      res.end(JSON.stringify({ keys: [] }));
    });
    servers.push(srv);
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
    return `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  }

  async function run(skewMs: number): Promise<DoctorRun> {
    const iss = await issuer(skewMs);
    const file = path.join(dir, `clock-${skewMs}.yaml`);
    writeFileSync(
      file,
      JSON.stringify({
        listen: { host: "127.0.0.1", port: 0 },
        admin: { listen: { host: "127.0.0.1", port: 0 }, token: "${MCP_EDGE_ADMIN_TOKEN}" },
        publicUrl: "http://127.0.0.1:8787",
        store: { sqlite: path.join(dir, "edge.db") },
        auth: { oauth: [{ issuer: iss, jwksUri: `${iss}/jwks` }], leeway: "30s" },
        tenancy: { required: true },
        servers: {
          demo: {
            route: "/mcp",
            upstream: { stdio: { command: NODE_BIN, args: [path.join(REPO_ROOT, "src/demo/server.ts")] } },
            auth: ["oauth"],
            limits: { session: "120/min" },
          },
        },
      }),
    );
    return doctor(["-c", file], dir);
  }

  test("an issuer on time passes; 2 minutes off fails with the NTP fix; 10 s off warns", async () => {
    const ok = await run(0);
    assert.equal(status(ok, "clock"), "pass", ok.stdout);
    assert.equal(ok.code, 0, ok.stdout);
    const off = await run(-120_000);
    assert.equal(off.code, 1);
    assert.deepEqual(failing(off), ["clock"]);
    const item = off.report.items.find((i) => i.id === "clock")!;
    assert.match(item.reason, /12\d s ahead of the issuer/);
    assert.match(item.fix!, /NTP/);
    const warn = await run(10_000);
    assert.equal(status(warn, "clock"), "warn", warn.stdout);
  });
});

const pgSkip = await postgresSkipReason();
describe(
  "doctor: distributed (private Redis, PostgreSQL, SDK v2 upstream)",
  { skip: pgSkip, timeout: 240_000 },
  () => {
    const pgf = postgresFixture();
    const dir = tempDir("mcp-edge-doctor-dist-");
    let redis: PrivateRedis;
    let upstream: SpawnedFixture | undefined;
    let upstreamPort: number;
    let edge: SpawnedEdge | undefined;
    let file: string;
    let doc: Record<string, unknown> & { servers: Record<string, unknown> };

    before(async () => {
      redis = await startRedisServer();
      upstreamPort = await freePort();
      upstream = await spawnFixture("test/fixtures/v2-server.ts", ["--port", String(upstreamPort)]);
      doc = {
        listen: { host: "127.0.0.1", port: 0 },
        admin: { listen: { host: "127.0.0.1", port: 0 }, token: "${MCP_EDGE_ADMIN_TOKEN}" },
        store: {
          sqlite: path.join(dir, "edge.db"),
          redis: { url: redis.url },
          postgres: { url: POSTGRES_URL, schema: pgf.schema() },
        },
        servers: {
          up: {
            route: "/mcp",
            upstream: { urls: [upstream.url] },
            auth: ["apiKey"],
            limits: { key: "600/min" },
          },
        },
      };
      file = path.join(dir, "mcp-edge.yaml");
      writeFileSync(file, JSON.stringify(doc));
    });
    after(async () => {
      await edge?.stop();
      await upstream?.stop();
      await redis?.stop();
    });

    test("a schema never migrated is red; following the fix (start the edge once) turns it green", async () => {
      const before = await doctor(["-c", file], dir);
      assert.equal(before.code, 1, before.stdout);
      assert.deepEqual(failing(before), ["store.migrations"]);
      const item = before.report.items.find((i) => i.id === "store.migrations")!;
      assert.match(item.fix!, /start mcp-edge serve once/);
      // Everything else is green: Redis and PostgreSQL answer, the upstream is judged.
      assert.equal(status(before, "store.redis"), "pass");
      assert.equal(status(before, "store.postgres"), "pass");
      const up = before.report.items.find((i) => i.id === "upstream.up")!;
      assert.equal(up.status, "pass", up.reason);
      assert.match(up.reason, /eras 2026-07-28, 2025-11-25; its own check: grade A/);

      edge = await spawnEdge(doc, dir);
      await edge.stop();
      edge = undefined;
      const afterFix = await doctor(["-c", file], dir);
      assert.equal(afterFix.code, 0, afterFix.stdout);
      assert.equal(status(afterFix, "store.migrations"), "pass");
    });

    test("Redis stopped: store.redis turns red with its fix; restarting Redis (the fix) turns it green", async () => {
      await redis.kill();
      const down = await doctor(["-c", file], dir);
      assert.equal(down.code, 1);
      // Redis is what fails; the guarantees that ride on it say what they lose meanwhile.
      assert.deepEqual(failing(down).sort(), ["checklist.session-persistence", "store.redis"]);
      assert.equal(status(down, "checklist.rate-limiting"), "warn");
      assert.equal(status(down, "checklist.key-rotation"), "warn");
      const item = down.report.items.find((i) => i.id === "store.redis")!;
      assert.match(item.reason, /ECONNREFUSED|refused|closed/i);
      assert.ok(item.fix!.includes(redis.url), item.fix);
      await redis.restart();
      const up = await doctor(["-c", file], dir);
      assert.equal(up.code, 0, up.stdout);
      assert.equal(status(up, "store.redis"), "pass");
    });

    test("the upstream down: red with its fix; starting it again turns it green", async () => {
      await upstream!.stop();
      const down = await doctor(["-c", file], dir);
      assert.equal(down.code, 1);
      assert.deepEqual(failing(down), ["upstream.up"]);
      assert.match(down.report.items.find((i) => i.id === "upstream.up")!.fix!, /start the server/);
      upstream = await spawnFixture("test/fixtures/v2-server.ts", ["--port", String(upstreamPort)]);
      const up = await doctor(["-c", file], dir);
      assert.equal(up.code, 0, up.stdout);
    });

    test("a secret written inline and a public admin listener without a token are red", async () => {
      const inline = path.join(dir, "inline.yaml");
      writeFileSync(
        inline,
        JSON.stringify({ ...doc, admin: { listen: { host: "127.0.0.1", port: 0 }, token: ADMIN_TOKEN } }),
      );
      const s = await doctor(["-c", inline], dir);
      assert.equal(s.code, 1);
      assert.deepEqual(failing(s), ["secrets"]);
      const secret = s.report.items.find((i) => i.id === "secrets")!;
      assert.match(secret.reason, /admin\.token/);
      assert.match(secret.fix!, /\$\{NAME\}/);
      assert.ok(!s.stdout.includes(ADMIN_TOKEN), "the secret itself is not printed");

      const open = path.join(dir, "open-admin.yaml");
      writeFileSync(open, JSON.stringify({ ...doc, admin: { listen: { host: "0.0.0.0", port: 0 } } }));
      const a = await doctor(["-c", open], dir);
      assert.equal(a.code, 1);
      assert.ok(failing(a).includes("admin.exposure"), a.stdout);
      assert.ok(failing(a).includes("checklist.key-rotation"), "API-key routes without an admin token");
    });
  },
);
