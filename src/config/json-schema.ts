import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { configSchema } from "./schema.ts";

/**
 * The published JSON Schema of `mcp-edge.yaml`, generated from the zod schema (the one source of
 * truth) and committed as `schema/mcp-edge.schema.json` for editors (yaml-language-server, VS Code).
 *
 *   node src/config/json-schema.ts --write   regenerate the file
 *   node src/config/json-schema.ts --check   exit 1 when the file is out of date (CI, docs-drift test)
 *
 * It describes the file as users write it (`io: "input"`): durations and sizes as strings with
 * units, defaults as written. A few rules zod keeps in refinements are restated in JSON Schema terms
 * so editors can flag them too (units, exactly one upstream kind, at least one server).
 */

export const SCHEMA_ID = "https://mcp-edge.dev/schema/mcp-edge.schema.json";
export const SCHEMA_FILE = fileURLToPath(new URL("../../schema/mcp-edge.schema.json", import.meta.url));

/** `${NAME}` / `${NAME:-default}` anywhere in a string: interpolated before validation (load.ts). */
const ENV_REF = String.raw`.*\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}.*`;
/** What `parseDuration` accepts as a string (units.ts), or an env reference. */
export const DURATION_PATTERN = String.raw`^(\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*|${ENV_REF})$`;
/** What `parseSize` accepts as a string (units.ts, units case-insensitive), or an env reference. */
export const SIZE_PATTERN = String.raw`^(\s*\d+(\.\d+)?\s*([Bb]|[KkMmGg][Ii]?[Bb])\s*|${ENV_REF})$`;

type JsonObject = Record<string, unknown>;

/** The duration and size schemas are the zod pipes whose own description starts with their kind. */
function unitKind(schema: z.core.$ZodType): "duration" | "size" | undefined {
  if (schema._zod.def.type !== "pipe") return undefined;
  const description = z.globalRegistry.get(schema)?.description ?? "";
  if (description.startsWith("Duration:")) return "duration";
  if (description.startsWith("Size:")) return "size";
  return undefined;
}

function at(root: JsonObject, path: string[]): JsonObject {
  let node: unknown = root;
  for (const key of path) {
    node = (node as JsonObject | undefined)?.[key];
    if (node === null || typeof node !== "object") {
      // The schema changed shape: fail loudly rather than publish a schema without these rules.
      throw new Error(`json-schema: no node at ${path.join(".")}`);
    }
  }
  return node as JsonObject;
}

/** The JSON Schema (draft 2020-12) of the configuration file as users write it. */
export function buildJsonSchema(): JsonObject {
  const found = { duration: 0, size: 0 };
  const generated = z.toJSONSchema(configSchema, {
    io: "input",
    target: "draft-2020-12",
    override: (ctx) => {
      const json = ctx.jsonSchema as JsonObject;
      if (json.type === "string" && json.format === "uri") {
        // A URL may be written as an env reference; strict validators would reject `${X}` as a URI.
        delete json.type;
        delete json.format;
        json.anyOf = [
          { type: "string", format: "uri" },
          { type: "string", pattern: `^${ENV_REF}$` },
        ];
        return;
      }
      const kind = unitKind(ctx.zodSchema);
      if (!kind) return;
      found[kind]++;
      delete ctx.jsonSchema.type;
      ctx.jsonSchema.anyOf =
        kind === "duration"
          ? [
              { type: "string", pattern: DURATION_PATTERN },
              { type: "number", minimum: 0, description: "milliseconds" },
            ]
          : [
              { type: "string", pattern: SIZE_PATTERN },
              { type: "integer", minimum: 0, description: "bytes" },
            ];
    },
  }) as JsonObject;

  if (found.duration === 0 || found.size === 0) {
    // unitKind recognises the unit schemas by their descriptions in schema.ts: keep them in step.
    throw new Error("json-schema: the duration or size schema was not recognised");
  }
  const servers = at(generated, ["properties", "servers"]);
  servers.minProperties = 1;
  const upstream = at(servers, ["additionalProperties", "properties", "upstream"]);
  upstream.oneOf = [{ required: ["urls"] }, { required: ["sse"] }, { required: ["stdio"] }];

  const { $schema, ...rest } = generated;
  return {
    $schema,
    $id: SCHEMA_ID,
    title: "mcp-edge configuration",
    description: "mcp-edge.yaml: the production edge for remote MCP servers. Reference: docs/config.md.",
    ...rest,
  };
}

/** The file's exact expected text (2-space JSON, trailing newline). */
export function renderJsonSchema(): string {
  return `${JSON.stringify(buildJsonSchema(), null, 2)}\n`;
}

/** Null when `file` is up to date, else a message saying what to run. */
export function checkJsonSchema(file: string = SCHEMA_FILE): string | null {
  let current: string;
  try {
    current = readFileSync(file, "utf8");
  } catch {
    return `${file} is missing: run \`node src/config/json-schema.ts --write\` (npm run schema)`;
  }
  if (current === renderJsonSchema()) return null;
  return `${file} is out of date with src/config/schema.ts: run \`node src/config/json-schema.ts --write\` (npm run schema) and commit the result`;
}

if (import.meta.main) {
  const mode = process.argv[2];
  if (mode === "--write") {
    writeFileSync(SCHEMA_FILE, renderJsonSchema());
    process.stdout.write(`wrote ${SCHEMA_FILE}\n`);
  } else if (mode === "--check") {
    const problem = checkJsonSchema();
    if (problem) {
      process.stderr.write(`${problem}\n`);
      process.exit(1);
    }
    process.stdout.write(`${SCHEMA_FILE} is up to date\n`);
  } else {
    process.stderr.write("usage: node src/config/json-schema.ts --write | --check\n");
    process.exit(2);
  }
}
