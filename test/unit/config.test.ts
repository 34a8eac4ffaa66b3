// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${ENV} references are what these tests are about.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DURATION_PATTERN, SIZE_PATTERN } from "../../src/config/json-schema.ts";
import { interpolateEnv, parseConfig } from "../../src/config/load.ts";
import type { ConfigInput } from "../../src/config/schema.ts";
import { parseDuration, parseSize } from "../../src/config/units.ts";
import { assessConfig } from "../../src/config/warnings.ts";
import { isLoopbackHost } from "../../src/lib/hosts.ts";
import type { WarningCode } from "../../src/errors/codes.ts";
import { GatewayError } from "../../src/errors/errors.ts";

/** Runs `fn` and returns the GatewayError it throws (failing when it throws anything else). */
function catchGatewayError(fn: () => unknown): GatewayError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof GatewayError, `expected a GatewayError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected a GatewayError");
}

const minimal = (overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
  servers: { a: { route: "/a/mcp", upstream: { urls: ["http://127.0.0.1:3000/mcp"] }, auth: ["none"] } },
  ...overrides,
});

// ----------------------------------------------------------------------------- units

const durations: [string | number, number][] = [
  ["250ms", 250],
  ["30s", 30_000],
  ["5m", 300_000],
  ["24h", 86_400_000],
  ["7d", 604_800_000],
  ["1.5s", 1500],
  [" 10s ", 10_000],
  ["10 s", 10_000],
  ["0s", 0],
  [0, 0],
  [1500, 1500],
  [1.6, 2],
];
const badDurations: (string | number)[] = [
  "10",
  "10x",
  "-1s",
  "",
  "s",
  "1e3ms",
  "10S",
  "1h30m",
  -1,
  Number.NaN,
  Infinity,
];

test("parseDuration: valid values", () => {
  for (const [input, ms] of durations)
    assert.equal(parseDuration(input), ms, `parseDuration(${JSON.stringify(input)})`);
});

test("parseDuration: bad values throw with a helpful message", () => {
  for (const input of badDurations) {
    assert.throws(() => parseDuration(input), /duration/, `parseDuration(${JSON.stringify(input)})`);
  }
});

const sizes: [string | number, number][] = [
  ["512B", 512],
  ["64KiB", 65_536],
  ["1MiB", 1_048_576],
  ["1GiB", 1_073_741_824],
  ["1kb", 1000],
  ["1MB", 1_000_000],
  ["2 mib", 2_097_152],
  ["1.5KiB", 1536],
  [0, 0],
  [1024, 1024],
];
const badSizes: (string | number)[] = ["1.5", "KiB", "1 TiB", "-1B", "", "1Ki", 1.5, -1, Number.NaN];

test("parseSize: valid values", () => {
  for (const [input, bytes] of sizes)
    assert.equal(parseSize(input), bytes, `parseSize(${JSON.stringify(input)})`);
});

test("parseSize: bad values throw with a helpful message", () => {
  for (const input of badSizes)
    assert.throws(() => parseSize(input), /size/, `parseSize(${JSON.stringify(input)})`);
});

test("the JSON Schema unit patterns accept exactly the strings the parsers accept", () => {
  const duration = new RegExp(DURATION_PATTERN, "u");
  const size = new RegExp(SIZE_PATTERN, "u");
  for (const [input] of durations) if (typeof input === "string") assert.ok(duration.test(input), input);
  for (const input of badDurations) if (typeof input === "string") assert.ok(!duration.test(input), input);
  for (const [input] of sizes) if (typeof input === "string") assert.ok(size.test(input), input);
  for (const input of badSizes) if (typeof input === "string") assert.ok(!size.test(input), input);
  // ${ENV} references are valid as written: they are replaced before validation.
  assert.ok(duration.test("${UPSTREAM_TIMEOUT}"));
  assert.ok(size.test("${MAX_BODY:-1MiB}"));
});

test("durations and sizes in the config are parsed, with path-qualified errors", () => {
  const cfg = parseConfig(minimal({ limits: { maxBodyBytes: "1MiB", requestTimeout: "2m" } }), {});
  assert.equal(cfg.limits.maxBodyBytes, 1_048_576);
  assert.equal(cfg.limits.requestTimeout, 120_000);
  const err = catchGatewayError(() => parseConfig(minimal({ drain: { timeout: "soon" } }), {}));
  assert.equal(err.code, "EDGE_CONFIG_INVALID");
  assert.match(err.message, /drain\.timeout: "soon" is not a duration/);
});

test("result, stream-budget and stdio-process limits: defaults, and the result maximum is at least the body limit", () => {
  const cfg = parseConfig(minimal(), {});
  assert.equal(cfg.limits.maxResultBytes, 64 * 1024 * 1024);
  assert.equal(cfg.streams.bufferBudget, 256 * 1024 * 1024);
  assert.equal(cfg.streams.tenantShare, 0.5);
  const err = catchGatewayError(() =>
    parseConfig(minimal({ limits: { maxBodyBytes: "8MiB", maxResultBytes: "4MiB" } }), {}),
  );
  assert.equal(err.code, "EDGE_CONFIG_INVALID");
  assert.match(err.message, /limits\.maxResultBytes: maxResultBytes must be at least maxBodyBytes/);
  const budget = catchGatewayError(() =>
    parseConfig(minimal({ streams: { bufferBudget: "64MiB", tenantShare: 0.5 } }), {}),
  );
  assert.match(budget.message, /streams\.bufferBudget: a tenant's share of it/);
  assert.equal(
    parseConfig(minimal({ streams: { bufferBudget: 0 }, limits: { maxResultBytes: "1GiB" } }), {}).streams
      .bufferBudget,
    0,
  );
  const stdio = parseConfig(
    minimal({ servers: { s: { route: "/mcp", upstream: { stdio: { command: "node" } }, auth: ["none"] } } }),
    {},
  ).servers.s?.upstream.stdio;
  assert.deepEqual(
    [stdio?.maxProcesses, stdio?.maxProcessesPerPrincipal, stdio?.idleTimeout],
    [32, 8, 600_000],
  );
});

test("defaults are applied with their units", () => {
  const cfg = parseConfig(minimal(), {});
  assert.deepEqual(cfg.listen, { host: "127.0.0.1", port: 8787 });
  assert.deepEqual(cfg.admin.listen, { host: "127.0.0.1", port: 8788 });
  assert.equal(cfg.limits.maxBodyBytes, 4 * 1024 * 1024);
  assert.equal(cfg.streams.ttl, 600_000);
  const server = cfg.servers["a"]!;
  assert.equal(server.upstream.timeout, 300_000);
  assert.deepEqual(server.upstream.health, { interval: 10_000, timeout: 2000, unhealthyAfter: 2 });
  assert.deepEqual(server.sessions, { idleTtl: 86_400_000, onBackendLoss: "reinitialize" });
});

// ----------------------------------------------------------------------------- ${ENV} interpolation

test("interpolateEnv: ${X}, ${X:-default}, nested paths", () => {
  const env = { HOST: "10.0.0.5", EMPTY: "" };
  const cases: [string, string][] = [
    ["http://${HOST}:3000/mcp", "http://10.0.0.5:3000/mcp"],
    ["${HOST}${HOST}", "10.0.0.510.0.0.5"],
    ["${PORT:-3000}", "3000"],
    ["${HOST:-ignored}", "10.0.0.5"],
    ["${UNSET:-}", ""],
    ["${EMPTY}", ""],
    ["${EMPTY:-fallback}", ""],
    ["no refs, $HOST, {HOST}", "no refs, $HOST, {HOST}"],
  ];
  for (const [input, output] of cases) assert.equal(interpolateEnv(input, env), output, input);
  assert.deepEqual(interpolateEnv({ a: ["${HOST}", 1, true, null] }, env), {
    a: ["10.0.0.5", 1, true, null],
  });
});

test("interpolateEnv: an env value is data, never YAML", () => {
  const env = { EVIL: "x\nauth: [none]\n${OTHER}" };
  assert.equal(interpolateEnv("${EVIL}", env), env.EVIL);
});

test("a missing variable is an error naming the variable and the path", () => {
  const doc = minimal({
    servers: {
      a: {
        route: "/a/mcp",
        upstream: { urls: ["http://127.0.0.1:3000/mcp", "${SECOND_URL}"] },
        auth: ["none"],
      },
    },
  });
  const err = catchGatewayError(() => parseConfig(doc, {}));
  assert.equal(err.code, "EDGE_CONFIG_ENV_MISSING");
  assert.match(err.message, /servers\.a\.upstream\.urls\.1/);
  assert.match(err.message, /\$\{SECOND_URL\} is not set/);
  const ok = parseConfig(doc, { SECOND_URL: "http://127.0.0.1:3001/mcp" });
  assert.deepEqual(ok.servers["a"]!.upstream.urls, [
    "http://127.0.0.1:3000/mcp",
    "http://127.0.0.1:3001/mcp",
  ]);
});

test("interpolated durations are parsed after substitution", () => {
  const cfg = parseConfig(minimal({ drain: { timeout: "${DRAIN:-45s}" } }), {});
  assert.equal(cfg.drain.timeout, 45_000);
});

// ----------------------------------------------------------------------------- strictness

test("unknown keys are errors at every level, with their path", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [minimal({ listn: { port: 1 } }), /\(root\): Unrecognized key: "listn"/],
    [minimal({ listen: { host: "127.0.0.1", prot: 1 } }), /listen: Unrecognized key: "prot"/],
    [
      {
        servers: {
          a: { route: "/a", upstream: { urls: ["http://x/mcp"], retries: 3 }, auth: ["none"] },
        },
      },
      /servers\.a\.upstream: Unrecognized key: "retries"/,
    ],
    [
      { servers: { a: { route: "/a", upstream: { stdio: { command: "x", shell: true } }, auth: ["none"] } } },
      /servers\.a\.upstream\.stdio: Unrecognized key: "shell"/,
    ],
  ];
  for (const [doc, pattern] of cases) {
    const err = catchGatewayError(() => parseConfig(doc, {}));
    assert.equal(err.code, "EDGE_CONFIG_INVALID");
    assert.match(err.message, pattern);
  }
});

test("every problem is reported, not only the first", () => {
  const err = catchGatewayError(() =>
    parseConfig({ listen: { port: 70000 }, servers: { a: { route: "a", upstream: {}, auth: [] } } }, {}),
  );
  for (const path of ["listen.port", "servers.a.route", "servers.a.upstream", "servers.a.auth"]) {
    assert.match(err.message, new RegExp(`${path.replaceAll(".", "\\.")}: `), path);
  }
});

test("at least one server is required", () => {
  assert.match(catchGatewayError(() => parseConfig({}, {})).message, /servers/);
  assert.match(catchGatewayError(() => parseConfig({ servers: {} }, {})).message, /at least one server/);
});

test("duplicate routes are an error naming both servers", () => {
  const upstream = { urls: ["http://127.0.0.1:3000/mcp"] };
  const err = catchGatewayError(() =>
    parseConfig(
      {
        servers: {
          a: { route: "/mcp", upstream, auth: ["none"] },
          b: { route: "/mcp", upstream, auth: ["none"] },
        },
      },
      {},
    ),
  );
  assert.match(err.message, /servers\.b\.route: route also used by a/);
});

test("routes must be absolute paths without a trailing slash, outside /.well-known/", () => {
  for (const route of ["mcp", "/mcp/", "/.well-known/x/mcp", "/a b"]) {
    const doc = { servers: { a: { route, upstream: { urls: ["http://x/mcp"] }, auth: ["none"] } } };
    assert.match(catchGatewayError(() => parseConfig(doc, {})).message, /servers\.a\.route: /, route);
  }
});

test("an upstream needs exactly one of urls, sse, stdio", () => {
  const kinds = {
    urls: ["http://127.0.0.1:3000/mcp"],
    sse: "http://127.0.0.1:4000/sse",
    stdio: { command: "node", args: ["server.js"] },
  };
  const doc = (upstream: Record<string, unknown>) => ({
    servers: { a: { route: "/a", upstream, auth: ["none"] } },
  });
  for (const [kind, value] of Object.entries(kinds)) {
    assert.doesNotThrow(() => parseConfig(doc({ [kind]: value }), {}), kind);
  }
  const bad: Record<string, unknown>[] = [
    {},
    { urls: kinds.urls, sse: kinds.sse },
    { ...kinds },
    { urls: [] },
  ];
  for (const upstream of bad) {
    const err = catchGatewayError(() => parseConfig(doc(upstream), {}));
    assert.match(err.message, /servers\.a\.upstream/, JSON.stringify(upstream));
  }
  assert.match(catchGatewayError(() => parseConfig(doc({}), {})).message, /exactly one of urls, sse, stdio/);
  assert.match(
    catchGatewayError(() => parseConfig(doc({ urls: ["ftp://x/mcp"] }), {})).message,
    /servers\.a\.upstream\.urls\.0/,
  );
});

// ----------------------------------------------------------------------------- assessConfig

test("isLoopbackHost", () => {
  const loopback = [
    "127.0.0.1",
    "127.1.2.3",
    "::1",
    "[::1]",
    "0:0:0:0:0:0:0:1",
    "::ffff:127.0.0.1",
    "localhost",
    "LOCALHOST",
  ];
  const other = [
    "0.0.0.0",
    "::",
    "10.0.0.1",
    "192.168.1.1",
    "example.com",
    "127.0.0.1.nip.io",
    "localhost.example.com",
    "",
  ];
  for (const h of loopback) assert.equal(isLoopbackHost(h), true, h);
  for (const h of other) assert.equal(isLoopbackHost(h), false, h);
});

interface AssessCase {
  name: string;
  doc: ConfigInput;
  warnings: WarningCode[];
  errors?: RegExp[];
}

const route = (name: string) => ({
  route: `/${name}/mcp`,
  upstream: { urls: [`http://127.0.0.1:3000/${name}`] },
  auth: ["none" as const],
});

const assessCases: AssessCase[] = [
  { name: "loopback, auth none", doc: { servers: { a: route("a") } }, warnings: ["EDGE_WARN_AUTH_NONE"] },
  {
    name: "one AUTH_NONE warning per route, naming it",
    doc: { listen: { host: "::1" }, servers: { a: route("a"), b: route("b") } },
    warnings: ["EDGE_WARN_AUTH_NONE", "EDGE_WARN_AUTH_NONE"],
  },
  {
    name: "public listener, auth none, no opt-in: error",
    doc: { listen: { host: "0.0.0.0" }, publicUrl: "https://mcp.example.com", servers: { a: route("a") } },
    warnings: [],
    errors: [/servers\.a\.auth: .*\/a\/mcp.*unsafe\.allowUnauthenticatedPublic/],
  },
  {
    name: "public listener, auth none, opted in",
    doc: {
      listen: { host: "0.0.0.0" },
      publicUrl: "https://mcp.example.com",
      unsafe: { allowUnauthenticatedPublic: true },
      servers: { a: route("a") },
    },
    warnings: ["EDGE_WARN_AUTH_NONE_PUBLIC"],
  },
  {
    name: "public listener without publicUrl or allowedHosts",
    doc: {
      listen: { host: "10.0.0.1" },
      unsafe: { allowUnauthenticatedPublic: true },
      servers: { a: route("a") },
    },
    warnings: ["EDGE_WARN_AUTH_NONE_PUBLIC", "EDGE_WARN_ANY_HOST"],
  },
  {
    name: "allowedHosts is enough",
    doc: {
      listen: { host: "10.0.0.1" },
      security: { allowedHosts: ["mcp.internal"] },
      unsafe: { allowUnauthenticatedPublic: true },
      servers: { a: route("a") },
    },
    warnings: ["EDGE_WARN_AUTH_NONE_PUBLIC"],
  },
  {
    name: "trusting forwarded headers",
    doc: { security: { trustForwardedHeaders: true }, servers: { a: route("a") } },
    warnings: ["EDGE_WARN_AUTH_NONE", "EDGE_WARN_TRUST_FORWARDED"],
  },
  {
    name: "admin listener off loopback",
    doc: { admin: { listen: { host: "0.0.0.0", port: 9000 } }, servers: { a: route("a") } },
    warnings: ["EDGE_WARN_AUTH_NONE", "EDGE_WARN_ADMIN_PUBLIC"],
  },
  {
    // Regression: the admin listener once took the public default port when its port was left out.
    name: "admin listener with its port left out defaults to 8788, not the public port",
    doc: { admin: { listen: { host: "127.0.0.1" } }, servers: { a: route("a") } },
    warnings: ["EDGE_WARN_AUTH_NONE"],
  },
  {
    name: "admin listener on the public port collides",
    doc: { admin: { listen: { host: "127.0.0.1", port: 8787 } }, servers: { a: route("a") } },
    warnings: ["EDGE_WARN_AUTH_NONE"],
    errors: [/admin\.listen: .*collides/],
  },
  {
    name: "API-key routes without an admin token: no key could ever be created",
    doc: { servers: { a: { ...route("a"), auth: ["apiKey"] } } },
    warnings: ["EDGE_WARN_NO_ADMIN_TOKEN"],
  },
  {
    name: "API-key routes with an admin token",
    doc: { admin: { token: "x".repeat(40) }, servers: { a: { ...route("a"), auth: ["apiKey"] } } },
    warnings: [],
  },
  {
    name: "distributed mode with a stdio upstream: its sessions are bound to one instance",
    doc: {
      store: {
        redis: { url: "redis://127.0.0.1:6379" },
        postgres: { url: "postgres://postgres@127.0.0.1/test" },
      },
      servers: {
        a: route("a"),
        b: { route: "/b/mcp", auth: ["none"], upstream: { stdio: { command: "node" } } },
      },
    },
    warnings: ["EDGE_WARN_AUTH_NONE", "EDGE_WARN_AUTH_NONE", "EDGE_WARN_INSTANCE_BOUND_UPSTREAM"],
  },
  {
    name: "admin and public on port 0 do not collide",
    doc: { listen: { port: 0 }, admin: { listen: { port: 0 } }, servers: { a: route("a") } },
    warnings: ["EDGE_WARN_AUTH_NONE"],
  },
];

for (const c of assessCases) {
  test(`assessConfig: ${c.name}`, () => {
    const result = assessConfig(parseConfig(c.doc, {}));
    assert.deepEqual(
      result.warnings.map((w) => w.code),
      c.warnings,
    );
    assert.equal(result.errors.length, c.errors?.length ?? 0, result.errors.join("\n"));
    for (const [i, pattern] of (c.errors ?? []).entries()) assert.match(result.errors[i]!, pattern);
  });
}

test("assessConfig: AUTH_NONE names the route and the server", () => {
  const [warning] = assessConfig(parseConfig({ servers: { github: route("github") } }, {})).warnings;
  assert.equal(warning?.code, "EDGE_WARN_AUTH_NONE");
  assert.match(warning.message, /\/github\/mcp/);
  assert.match(warning.message, /github/);
});

test("store: distributed mode needs both Redis and PostgreSQL; URLs are checked", () => {
  const servers = { a: route("a") };
  assert.throws(() => parseConfig({ store: { redis: { url: "redis://h:6379" } }, servers }, {}), /both/);
  assert.throws(() => parseConfig({ store: { postgres: { url: "postgres://h/db" } }, servers }, {}), /both/);
  assert.throws(
    () =>
      parseConfig(
        { store: { redis: { url: "http://h" }, postgres: { url: "postgres://h/db" } }, servers },
        {},
      ),
    /redis:\/\//,
  );
  const c = parseConfig(
    { store: { redis: { url: "rediss://h:6380" }, postgres: { url: "postgresql://h/db" } }, servers },
    {},
  );
  assert.equal(c.store.redis?.keyPrefix, "mcp-edge:");
  assert.equal(c.store.redis?.commandTimeout, 250);
  assert.equal(c.store.postgres?.schema, "mcp_edge");
});

test("store.redis and store.postgres take a plain URL: the long form's url, every default applied", () => {
  const short = parseConfig(
    minimal({ store: { redis: "redis://127.0.0.1:6379/2", postgres: "postgres://u@db.internal/edge" } }),
    {},
  );
  const long = parseConfig(
    minimal({
      store: {
        redis: { url: "redis://127.0.0.1:6379/2" },
        postgres: { url: "postgres://u@db.internal/edge" },
      },
    }),
    {},
  );
  assert.deepEqual(short.store, long.store);
  assert.equal(short.store.redis?.keyPrefix, "mcp-edge:");
  assert.equal(short.store.postgres?.schema, "mcp_edge");
  // ${ENV} works in the short form too, and a wrong scheme is named.
  const env = parseConfig(minimal({ store: { redis: "${REDIS_URL}", postgres: "postgres://u@h/db" } }), {
    REDIS_URL: "rediss://cache:6380",
  });
  assert.equal(env.store.redis?.url, "rediss://cache:6380");
  const bad = catchGatewayError(() =>
    parseConfig(minimal({ store: { redis: "http://cache:6379", postgres: "postgres://u@h/db" } }), {}),
  );
  assert.match(bad.message, /store\.redis: a redis:\/\/ or rediss:\/\/ URL/);
});
