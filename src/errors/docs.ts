import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import {
  beginMarker,
  checkGeneratedDoc,
  endMarker,
  type GeneratedDoc,
  generatedDocMain,
  replaceGenerated,
} from "../lib/generated-doc.ts";
import { ERROR_CODES, type ErrorSpec, WARNING_CODES } from "./codes.ts";

/**
 * Generates the tables of `docs/errors.md` from `codes.ts`, the one table of error codes. The prose around the GENERATED markers is hand-written and preserved.
 *
 *   node src/errors/docs.ts --write   regenerate the tables
 *   node src/errors/docs.ts --check   exit 1 when docs/errors.md is out of date
 */

export const ERRORS_DOC_FILE = fileURLToPath(new URL("../../docs/errors.md", import.meta.url));
const CODES_SOURCE = fileURLToPath(new URL("./codes.ts", import.meta.url));

const SECTION = "error-codes";
const COMMAND = "node src/errors/docs.ts --write";

const cell = (s: string): string => s.replaceAll("|", "\\|").replaceAll("\n", " ");

/**
 * The group headings of ERROR_CODES are its `// Heading` comments, which exist only in the source:
 * read them from there so that the docs follow the table's own grouping.
 */
function groupsFromSource(): Map<string, string> {
  const groups = new Map<string, string>();
  let source: string;
  try {
    source = readFileSync(CODES_SOURCE, "utf8");
  } catch {
    return groups;
  }
  const start = source.indexOf("export const ERROR_CODES");
  const end = source.indexOf("} as const", start);
  let current = "";
  for (const line of source.slice(start, end).split("\n")) {
    const comment = /^ {2}\/\/\s*(.+)$/.exec(line);
    if (comment) {
      current = comment[1]!.trim();
      continue;
    }
    const key = /^ {2}(EDGE_[A-Z0-9_]+):/.exec(line);
    if (key) groups.set(key[1]!, current);
  }
  return groups;
}

function errorRow(name: string, spec: ErrorSpec): string {
  const http = spec.http === null ? "—" : String(spec.http);
  const rpc = spec.rpc === null ? "—" : String(spec.rpc);
  const retry = spec.retryAfter === undefined ? "—" : `${spec.retryAfter}s`;
  return `| \`${name}\` | ${http} | ${rpc} | ${retry} | ${cell(spec.summary)} |`;
}

/** The generated part: the error codes by group, then the warning codes. */
export function renderErrorTables(): string {
  const groups = groupsFromSource();
  const byGroup = new Map<string, string[]>();
  for (const [name, spec] of Object.entries(ERROR_CODES) as [string, ErrorSpec][]) {
    const group = groups.get(name) || "Other";
    const rows = byGroup.get(group) ?? [];
    rows.push(errorRow(name, spec));
    byGroup.set(group, rows);
  }
  const parts: string[] = ["## Error codes"];
  for (const [group, rows] of byGroup) {
    parts.push(
      `### ${group}`,
      ["| code | HTTP | JSON-RPC | Retry-After | meaning |", "|---|---|---|---|---|", ...rows].join("\n"),
    );
  }
  parts.push(
    "## Warnings",
    "Printed at boot and by `mcp-edge validate` for each risky choice a configuration makes; they do not stop " +
      "the edge. (`auth: [none]` on a non-loopback listener without `unsafe.allowUnauthenticatedPublic` is not " +
      "a warning but an `EDGE_CONFIG_UNSAFE` error.)",
    [
      "| code | meaning |",
      "|---|---|",
      ...Object.entries(WARNING_CODES).map(([name, text]) => `| \`${name}\` | ${cell(text)} |`),
    ].join("\n"),
  );
  return parts.join("\n\n");
}

export const ERRORS_DOC_TEMPLATE = `# Errors

${beginMarker(SECTION, COMMAND)}
${endMarker(SECTION)}
`;

export const errorsDoc: GeneratedDoc = {
  file: ERRORS_DOC_FILE,
  command: COMMAND,
  render: (current) =>
    replaceGenerated(current ?? ERRORS_DOC_TEMPLATE, SECTION, COMMAND, renderErrorTables()),
};

/** Null when docs/errors.md is up to date, else what to run. */
export function checkErrorDocs(): string | null {
  return checkGeneratedDoc(errorsDoc);
}

if (import.meta.main) process.exit(generatedDocMain(errorsDoc));
