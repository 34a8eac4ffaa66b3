import { fileURLToPath } from "node:url";
import {
  beginMarker,
  checkGeneratedDoc,
  endMarker,
  type GeneratedDoc,
  generatedDocMain,
  replaceGenerated,
} from "../lib/generated-doc.ts";
import { buildJsonSchema, DURATION_PATTERN, SIZE_PATTERN } from "./json-schema.ts";

/**
 * Generates the key reference of `docs/config.md` from the published JSON Schema (itself generated
 * from the zod schema), so the reference cannot drift from what the loader accepts.
 *
 *   node src/config/docs.ts --write   regenerate the reference section
 *   node src/config/docs.ts --check   exit 1 when docs/config.md is out of date
 *
 * Only the part between the GENERATED markers is machine-written; the introduction and examples
 * around it are hand-written in docs/config.md and preserved. `CONFIG_DOC_TEMPLATE` seeds the file
 * when it does not exist.
 */

export const CONFIG_DOC_FILE = fileURLToPath(new URL("../../docs/config.md", import.meta.url));

// ---------------------------------------------------------------------------------------------
// Rendering the reference from JSON Schema

type Node = Record<string, unknown>;

const asNode = (v: unknown): Node | undefined =>
  v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Node) : undefined;

/** Markdown table cells: pipes escaped, newlines flattened. */
const cell = (s: string): string => s.replaceAll("|", "\\|").replaceAll("\n", " ");

const code = (s: string): string => `\`${s}\``;

/** `anyOf: [string, object]`: a short form (the string) of an object with keys. */
function shortForm(node: Node): { short: Node; long: Node } | undefined {
  const anyOf = node.anyOf as Node[] | undefined;
  const short = anyOf?.find((n) => n.type === "string");
  const long = anyOf?.find((n) => n.type === "object" && asNode(n.properties));
  return anyOf?.length === 2 && short && long ? { short, long } : undefined;
}

function typeOf(node: Node): string {
  if (shortForm(node)) return "string or object";
  const anyOf = node.anyOf as Node[] | undefined;
  if (anyOf?.some((n) => n.pattern === DURATION_PATTERN)) return "duration";
  if (anyOf?.some((n) => n.pattern === SIZE_PATTERN)) return "size";
  if (anyOf?.some((n) => n.format === "uri")) return "URL";
  if (Array.isArray(node.enum)) return node.enum.map((v) => code(String(v))).join(" | ");
  const type = node.type;
  if (type === "string") {
    if (node.format === "uri") return "URL";
    return "string";
  }
  if (type === "integer" || type === "number") {
    const min = node.minimum as number | undefined;
    const max = node.maximum as number | undefined;
    const word = type === "integer" ? "integer" : "number";
    if (min !== undefined && max !== undefined && max < Number.MAX_SAFE_INTEGER)
      return `${word} ${min}–${max}`;
    if (min !== undefined) return `${word} ≥ ${min}`;
    return word;
  }
  if (type === "boolean") return "boolean";
  if (type === "array") {
    const items = asNode(node.items);
    const min = node.minItems as number | undefined;
    return `list of ${items ? typeOf(items) : "any"}${min ? ` (at least ${min})` : ""}`;
  }
  if (type === "object") {
    const values = asNode(node.additionalProperties);
    if (values && !node.properties) return `map of string to ${typeOf(values)}`;
    return "object";
  }
  return "any";
}

function defaultOf(node: Node, required: boolean): string {
  if ("default" in node) {
    const d = node.default;
    if (typeof d === "string") return code(d);
    if (Array.isArray(d)) return code(d.length === 0 ? "[]" : `[${d.join(", ")}]`);
    if (asNode(d)) return Object.keys(d as Node).length === 0 ? code("{}") : "see below";
    return code(String(d));
  }
  return required ? "**required**" : "—";
}

interface Row {
  key: string;
  type: string;
  default: string;
  description: string;
}

function rows(node: Node, path: string, required: boolean, out: Row[]): void {
  const both = shortForm(node);
  const description = typeof node.description === "string" ? node.description : "";
  out.push({
    key: path,
    type: typeOf(node),
    default: defaultOf(node, required),
    description: both ? `${description} A string is short for \`{ url: <that string> }\`.` : description,
  });
  const props = asNode((both?.long ?? node).properties);
  if (both) node = both.long;
  if (props) {
    const req = new Set((node.required as string[] | undefined) ?? []);
    for (const [key, child] of Object.entries(props))
      rows(child as Node, `${path}.${key}`, req.has(key), out);
    return;
  }
  // A map whose values are objects (servers): document the value's keys under `<name>`.
  const values = asNode(node.additionalProperties);
  if (values && asNode(values.properties)) {
    const req = new Set((values.required as string[] | undefined) ?? []);
    for (const [key, child] of Object.entries(asNode(values.properties)!)) {
      rows(child as Node, `${path}.<name>.${key}`, req.has(key), out);
    }
  }
}

/** The generated reference: one table per top-level section. */
export function renderConfigReference(schema: Node = buildJsonSchema()): string {
  const props = asNode(schema.properties) ?? {};
  const required = new Set((schema.required as string[] | undefined) ?? []);
  const parts: string[] = [];
  for (const [key, child] of Object.entries(props)) {
    const node = child as Node;
    const all: Row[] = [];
    rows(node, key, required.has(key), all);
    const [head, ...rest] = all;
    parts.push(`### \`${key}\``);
    const extra: string[] = [];
    if (head?.description) extra.push(head.description);
    if (rest.length === 0) {
      const d = head?.default ?? "—";
      extra.push(
        `Type: ${head?.type}. ${d === "—" ? "Optional." : d === "**required**" ? "Required." : `Default: ${d}.`}`,
      );
      parts.push(extra.join(" "));
      continue;
    }
    if (head?.default === "**required**") extra.push("Required.");
    if (extra.length) parts.push(extra.join(" "));
    parts.push(
      [
        "| key | type | default | meaning |",
        "|---|---|---|---|",
        ...rest.map(
          (r) => `| ${code(r.key)} | ${cell(r.type)} | ${cell(r.default)} | ${cell(r.description)} |`,
        ),
      ].join("\n"),
    );
  }
  return parts.join("\n\n");
}

const CONFIG_SECTION = "config-reference";
const CONFIG_COMMAND = "node src/config/docs.ts --write";

/** Seeds docs/config.md when it does not exist; afterwards the prose lives in the file. */
export const CONFIG_DOC_TEMPLATE = `# Configuration reference

mcp-edge reads one YAML file (\`mcp-edge.yaml\`, or \`-c FILE\`).

${beginMarker(CONFIG_SECTION, CONFIG_COMMAND)}
${endMarker(CONFIG_SECTION)}
`;

export const configDoc: GeneratedDoc = {
  file: CONFIG_DOC_FILE,
  command: CONFIG_COMMAND,
  render: (current) =>
    replaceGenerated(current ?? CONFIG_DOC_TEMPLATE, CONFIG_SECTION, CONFIG_COMMAND, renderConfigReference()),
};

/** Null when docs/config.md is up to date, else what to run. */
export function checkConfigDocs(): string | null {
  return checkGeneratedDoc(configDoc);
}

if (import.meta.main) process.exit(generatedDocMain(configDoc));
