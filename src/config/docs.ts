import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
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

/** Opening marker of a generated section; `name` tells sections apart and says how to regenerate. */
export function beginMarker(name: string, command: string): string {
  return `<!-- BEGIN GENERATED ${name}: do not edit by hand; run \`${command}\` -->`;
}
export function endMarker(name: string): string {
  return `<!-- END GENERATED ${name} -->`;
}

/**
 * Replaces the generated section `name` of `document` with `content`. Throws when the markers are
 * missing or out of order: a hand edit removed them and the generator must not guess.
 */
export function replaceGenerated(document: string, name: string, command: string, content: string): string {
  const begin = beginMarker(name, command);
  const end = endMarker(name);
  const i = document.indexOf(begin);
  const j = document.indexOf(end);
  if (i < 0 || j < i)
    throw new Error(`the markers of the generated section "${name}" are missing or out of order`);
  return `${document.slice(0, i + begin.length)}\n\n${content.trim()}\n\n${document.slice(j)}`;
}

export interface GeneratedDoc {
  file: string;
  /** The whole expected document, given the current one (undefined when it does not exist). */
  render(current: string | undefined): string;
  command: string;
}

function readOptional(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** Null when the file is up to date, else a message saying what to run. */
export function checkGeneratedDoc(doc: GeneratedDoc): string | null {
  const current = readOptional(doc.file);
  if (current === undefined) return `${doc.file} is missing: run \`${doc.command}\``;
  let expected: string;
  try {
    expected = doc.render(current);
  } catch (err) {
    return `${doc.file}: ${(err as Error).message}`;
  }
  if (expected === current) return null;
  return `${doc.file} is out of date: run \`${doc.command}\` and commit the result`;
}

/** The `--write | --check` entry point shared by the doc generators. */
export function generatedDocMain(doc: GeneratedDoc, argv: string[] = process.argv.slice(2)): number {
  if (argv[0] === "--write") {
    writeFileSync(doc.file, doc.render(readOptional(doc.file)));
    process.stdout.write(`wrote ${doc.file}\n`);
    return 0;
  }
  if (argv[0] === "--check") {
    const problem = checkGeneratedDoc(doc);
    if (problem) {
      process.stderr.write(`${problem}\n`);
      return 1;
    }
    process.stdout.write(`${doc.file} is up to date\n`);
    return 0;
  }
  process.stderr.write(`usage: ${doc.command.replace(" --write", "")} --write | --check\n`);
  return 2;
}

// ---------------------------------------------------------------------------------------------
// Rendering the reference from JSON Schema

type Node = Record<string, unknown>;

const asNode = (v: unknown): Node | undefined =>
  v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Node) : undefined;

/** Markdown table cells: pipes escaped, newlines flattened. */
const cell = (s: string): string => s.replaceAll("|", "\\|").replaceAll("\n", " ");

const code = (s: string): string => `\`${s}\``;

function typeOf(node: Node): string {
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
  out.push({
    key: path,
    type: typeOf(node),
    default: defaultOf(node, required),
    description: typeof node.description === "string" ? node.description : "",
  });
  const props = asNode(node.properties);
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
