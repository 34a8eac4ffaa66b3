import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { parse as parseYaml } from "yaml";
import { CONFIG_DOC_FILE, checkConfigDocs } from "../../src/config/docs.ts";
import { buildJsonSchema, checkJsonSchema } from "../../src/config/json-schema.ts";
import { parseConfig } from "../../src/config/load.ts";
import { assessConfig } from "../../src/config/warnings.ts";
import { ERROR_CODES, type ErrorSpec, WARNING_CODES } from "../../src/errors/codes.ts";
import { checkErrorDocs, ERRORS_DOC_FILE } from "../../src/errors/docs.ts";
import { checkLifecycleDocs } from "../../src/pipeline/docs.ts";

// Generated files are committed; these fail when someone changes the source and forgets to
// regenerate (the message says which command to run).

test("schema/mcp-edge.schema.json is up to date", () => {
  assert.equal(checkJsonSchema(), null);
});

test("docs/config.md is up to date", () => {
  assert.equal(checkConfigDocs(), null);
});

test("docs/errors.md is up to date", () => {
  assert.equal(checkErrorDocs(), null);
});

test("docs/lifecycle.md is up to date with the stage lists", () => {
  assert.equal(checkLifecycleDocs(), null);
});

test("the JSON Schema names itself and describes the file as written", () => {
  const schema = buildJsonSchema();
  assert.equal(schema.$schema, "https://json-schema.org/draft/2020-12/schema");
  assert.equal(typeof schema.$id, "string");
  assert.equal(typeof schema.title, "string");
  const props = schema.properties as Record<string, Record<string, unknown>>;
  // io "input": defaults as users write them, with units.
  const limits = props["limits"]!.properties as Record<string, Record<string, unknown>>;
  assert.equal(limits["maxBodyBytes"]!.default, "4MiB");
  assert.equal(props["servers"]!.minProperties, 1);
});

test("every error code appears in docs/errors.md with its HTTP status and JSON-RPC code", () => {
  const doc = readFileSync(ERRORS_DOC_FILE, "utf8");
  const rows = new Map<string, string[]>();
  for (const line of doc.split("\n")) {
    const m = /^\| `(EDGE_[A-Z0-9_]+)` \|(.*)\|$/.exec(line);
    if (m)
      rows.set(
        m[1]!,
        m[2]!.split("|").map((c) => c.trim()),
      );
  }
  for (const [code, spec] of Object.entries(ERROR_CODES) as [string, ErrorSpec][]) {
    const cells = rows.get(code);
    assert.ok(cells, `${code} is missing from docs/errors.md`);
    assert.equal(cells[0], spec.http === null ? "—" : String(spec.http), `${code} HTTP status`);
    assert.equal(cells[1], spec.rpc === null ? "—" : String(spec.rpc), `${code} JSON-RPC code`);
    if (spec.retryAfter !== undefined) assert.equal(cells[2], `${spec.retryAfter}s`, `${code} Retry-After`);
  }
  for (const code of Object.keys(WARNING_CODES))
    assert.ok(rows.has(code), `${code} is missing from docs/errors.md`);
});

test("every 503 invites a retry (Retry-After), as docs/errors.md promises", () => {
  for (const [code, spec] of Object.entries(ERROR_CODES) as [string, ErrorSpec][]) {
    if (spec.http === 503) assert.ok(spec.retryAfter !== undefined, `${code} is a 503 without retryAfter`);
  }
});

test("every YAML example in docs/config.md is a valid configuration", () => {
  const doc = readFileSync(CONFIG_DOC_FILE, "utf8");
  const blocks = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
  assert.ok(blocks.length >= 3, "docs/config.md should keep its examples");
  // Variables the examples reference without a fallback; the others take their fallback.
  const env = { GITHUB_MCP_TOKEN: "token" };
  for (const [i, block] of blocks.entries()) {
    const config = parseConfig(parseYaml(block), env);
    assert.deepEqual(assessConfig(config).errors, [], `example ${i + 1}`);
  }
});
