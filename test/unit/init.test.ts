// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${ENV} references in config text.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { parse as parseYaml } from "yaml";
import { DEMO_SERVER_FILE, EXAMPLE_SERVERS, runInit } from "../../src/cli/init.ts";
import { runValidate, validateConfigFile } from "../../src/cli/validate.ts";
import { loadConfigFile, parseConfig } from "../../src/config/load.ts";

const dir = mkdtempSync(join(tmpdir(), "mcp-edge-init-"));
/** The written file reads its admin token from the environment, as the file's comment says. */
const ENV = { MCP_EDGE_ADMIN_TOKEN: "init-test-admin-token-0123456789abcdef" };
after(() => rmSync(dir, { recursive: true, force: true }));

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return {
    io: {
      stdout: { write: (s: string) => out.push(s) },
      stderr: { write: (s: string) => err.push(s) },
      env: ENV,
    },
    out: () => out.join(""),
    err: () => err.join(""),
  };
}

test("init writes a file that loads and validates", async () => {
  const file = join(dir, "mcp-edge.yaml");
  const c = capture();
  assert.equal(await runInit(["-o", file], c.io), 0);
  assert.match(c.out(), /wrote .*mcp-edge\.yaml/);
  const config = loadConfigFile(file, ENV);
  assert.equal(config.admin.token, ENV.MCP_EDGE_ADMIN_TOKEN);
  assert.match(readFileSync(file, "utf8"), /^ {2}# .*\n {2}#\s+export MCP_EDGE_ADMIN_TOKEN=/m);
  // Without the variable the file does not load, and the error names it.
  assert.throws(() => loadConfigFile(file, {}), /admin\.token: \$\{MCP_EDGE_ADMIN_TOKEN\} is not set/);
  const demo = config.servers["demo"];
  assert.ok(demo, "the demo server is configured");
  assert.equal(demo.upstream.stdio?.command, process.execPath);
  assert.deepEqual(demo.upstream.stdio?.args, [DEMO_SERVER_FILE]);
  assert.ok(existsSync(DEMO_SERVER_FILE), "the demo server it points at exists");
  assert.equal(config.listen.host, "127.0.0.1");

  const report = validateConfigFile(file, ENV);
  assert.equal(report.ok, true);
  assert.deepEqual(
    report.warnings.map((w) => w.code),
    ["EDGE_WARN_AUTH_NONE"],
  );
  const v = capture();
  assert.equal(await runValidate(["-c", file], v.io), 0);
  assert.match(v.out(), /^ok: /);
  assert.match(v.out(), /store: embedded \(SQLite /);
  assert.match(v.out(), /demo\s+\/demo\/mcp\s+stdio/);
  assert.match(v.err(), /warning EDGE_WARN_AUTH_NONE: .*\/demo\/mcp/);
});

test("the values init writes out are the schema defaults", () => {
  const file = join(dir, "mcp-edge.yaml");
  const written = loadConfigFile(file, ENV);
  const doc = parseYaml(readFileSync(file, "utf8"));
  const defaults = parseConfig({ servers: doc.servers, admin: { token: doc.admin.token } }, ENV);
  assert.deepEqual(written, defaults);
});

test("init refuses to overwrite without --force", async () => {
  const file = join(dir, "existing.yaml");
  writeFileSync(file, "# mine\n");
  const c = capture();
  assert.equal(await runInit(["-o", file], c.io), 1);
  assert.match(c.err(), /already exists; use --force/);
  assert.equal(readFileSync(file, "utf8"), "# mine\n");
  assert.equal(await runInit(["--output", file, "--force"], capture().io), 0);
  assert.doesNotThrow(() => loadConfigFile(file, ENV));
});

test("init rejects unknown flags and stray arguments with exit 2", async () => {
  assert.equal(await runInit(["--bogus"], capture().io), 2);
  assert.equal(await runInit(["-o", join(dir, "x.yaml"), "extra"], capture().io), 2);
  const help = capture();
  assert.equal(await runInit(["--help"], help.io), 0);
  assert.match(help.out(), /Usage: mcp-edge init/);
});

test("each commented example in the init file is a valid server entry", async () => {
  const text = readFileSync(join(dir, "mcp-edge.yaml"), "utf8");
  const indent = (s: string, p: string) =>
    s
      .split("\n")
      .map((l) => `${p}${l}`)
      .join("\n");
  const kinds = new Set<string>();
  for (const body of Object.values(EXAMPLE_SERVERS)) {
    assert.ok(text.includes(indent(body, "  # ")), "the example is in the file, commented out");
    const config = parseConfig(parseYaml(`servers:\n${indent(body, "  ")}\n`), { GITHUB_MCP_TOKEN: "t" });
    for (const server of Object.values(config.servers)) {
      const u = server.upstream;
      kinds.add(u.urls ? `http x${u.urls.length}` : u.sse ? "sse" : "stdio");
    }
  }
  assert.deepEqual([...kinds].sort(), ["http x2", "sse", "stdio"]);
});

test("validate reports every error with its path and exits 1", async () => {
  const file = join(dir, "bad.yaml");
  writeFileSync(
    file,
    [
      "listen: { port: 99999, extra: 1 }",
      "servers:",
      "  a: { route: /a/, upstream: { urls: [http://x/mcp], sse: http://y/sse }, auth: [none] }",
      "  b: { route: /b, upstream: { sse: '${MISSING_URL}' }, auth: [none] }",
      "",
    ].join("\n"),
  );
  const c = capture();
  assert.equal(await runValidate(["-c", file], c.io), 1);
  for (const path of [
    "listen.port",
    "listen",
    "servers.a.route",
    "servers.a.upstream",
    "servers.b.upstream.sse",
  ]) {
    assert.match(c.err(), new RegExp(`^  ${path.replaceAll(".", "\\.")}: `, "m"), path);
  }
  assert.match(c.err(), /MISSING_URL/);

  const j = capture();
  assert.equal(await runValidate(["-c", file, "--json"], j.io), 1);
  const report = JSON.parse(j.out());
  assert.equal(report.ok, false);
  assert.ok(report.errors.some((e: { code: string }) => e.code === "EDGE_CONFIG_ENV_MISSING"));

  const missing = capture();
  assert.equal(await runValidate(["-c", join(dir, "nope.yaml")], missing.io), 1);
  assert.match(missing.err(), /cannot read/);
});

test("validate fails on an unsafe choice without its opt-in", async () => {
  const file = join(dir, "public.yaml");
  writeFileSync(
    file,
    "listen: { host: 0.0.0.0 }\nservers:\n  a: { route: /a, upstream: { urls: [http://x/mcp] }, auth: [none] }\n",
  );
  const c = capture();
  assert.equal(await runValidate(["-c", file, "--json"], c.io), 1);
  const report = JSON.parse(c.out());
  assert.deepEqual(
    report.errors.map((e: { path: string; code: string }) => [e.path, e.code]),
    [["servers.a.auth", "EDGE_CONFIG_UNSAFE"]],
  );
  assert.deepEqual(
    report.warnings.map((w: { code: string }) => w.code),
    ["EDGE_WARN_ANY_HOST"],
  );
});
