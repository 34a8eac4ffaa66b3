import { fileURLToPath } from "node:url";
import {
  checkGeneratedDoc,
  type GeneratedDoc,
  generatedDocMain,
  replaceGenerated,
} from "../lib/generated-doc.ts";
import { ERROR_CODES } from "../errors/codes.ts";
import { createLogger } from "../observability/logger.ts";
import { AuthFailureLimiter } from "../ratelimit/auth-failures.ts";
import { CallLimiter } from "../ratelimit/limiter.ts";
import type { Branch, Stage, StageList } from "./compose.ts";
import { type PipelineDeps, stageLists } from "./lists.ts";

/**
 * Generates the stage tables of `docs/lifecycle.md` from the stage lists (lists.ts): each stage in
 * order, what it does, the codes it answers with and the file that implements it. The prose around
 * the GENERATED markers is hand-written and preserved.
 *
 *   node src/pipeline/docs.ts --write   regenerate the tables
 *   node src/pipeline/docs.ts --check   exit 1 when docs/lifecycle.md is out of date
 */

export const LIFECYCLE_DOC_FILE = fileURLToPath(new URL("../../docs/lifecycle.md", import.meta.url));
const SECTION = "stages";
const COMMAND = "node src/pipeline/docs.ts --write";

/** What the router does before the pipeline (src/server/router.ts), in order. */
const BEFORE: readonly { name: string; does: string; codes: readonly (keyof typeof ERROR_CODES)[] }[] = [
  {
    name: "health",
    does: "`/healthz` and `/readyz` are answered at once (no auth, nothing of the request read).",
    codes: [],
  },
  {
    name: "well-known",
    does: "Public metadata documents: the edge's JWKS, RFC 9728 protected-resource metadata per OAuth route.",
    codes: ["EDGE_METHOD_NOT_ALLOWED"],
  },
  {
    name: "route",
    does: "Maps the path to a route and endpoint (`{route}`, `{route}/sse`, `{route}/messages`); anything else is 404, its body never read.",
    codes: ["EDGE_ROUTE_NOT_FOUND"],
  },
];

/**
 * The lists as the docs see them: built, never run, so only their names, codes and files are read.
 * The two limiters are real (their stages read `enabled` / `tracksInflight` when built); the other
 * dependencies are only captured by the factories and are not needed here.
 */
function documentedLists(): StageList<unknown, unknown> {
  const log = createLogger({ level: "silent" });
  const unused = undefined as never;
  const deps: PipelineDeps = {
    hosts: () => undefined,
    origins: new Set(),
    maxBodyBytes: 0,
    jsonLimits: unused,
    authenticator: unused,
    authFailures: new AuthFailureLimiter("off", false, log),
    limiter: new CallLimiter({}, log),
    audit: undefined,
    sessions: unused,
    distributed: false,
    draining: () => false,
    getOrder: unused,
    cache: undefined,
    tools: unused,
    forwarder: unused,
    legacy: unused,
    vault: undefined,
  };
  return stageLists(deps) as StageList<unknown, unknown>;
}

const cell = (s: string): string => s.replaceAll("|", "\\|").replaceAll("\n", " ");

function codes(list: readonly (keyof typeof ERROR_CODES)[]): string {
  if (list.length === 0) return "—";
  return list.map((c) => `${ERROR_CODES[c].http ?? "—"} \`${c}\``).join(", ");
}

interface Section {
  title: string;
  stages: readonly Pick<Stage<never, never>, "name" | "does" | "codes" | "file">[];
  branch: Branch<unknown> | undefined;
}

/** The list tree in reading order: each list, then the lists its branch hands over to. */
function sections(title: string, list: StageList<unknown, unknown>, out: Section[] = []): Section[] {
  out.push({ title, stages: list.stages, branch: list.branch });
  const branch = list.branch;
  if (branch) for (const [key, sub] of Object.entries(branch.lists)) sections(`${title} → ${key}`, sub, out);
  return out;
}

/** The generated part: the router's steps, then every stage list in order. */
export function renderLifecycle(): string {
  const parts: string[] = [
    "### Before the pipeline — `src/server/router.ts`",
    [
      "| # | step | what it does | answers with |",
      "|---|---|---|---|",
      ...BEFORE.map((s, i) => `| ${i + 1} | ${s.name} | ${cell(s.does)} | ${codes(s.codes)} |`),
    ].join("\n"),
  ];
  let n = 0;
  for (const s of sections("every MCP request", documentedLists())) {
    const rows = s.stages.map((st) => {
      n++;
      return `| ${n} | \`${st.name}\` | ${cell(st.does)} | ${codes(st.codes)} | \`${st.file}\` |`;
    });
    parts.push(`### ${s.title}`);
    if (rows.length > 0)
      parts.push(
        ["| # | stage | what it does | answers with | file |", "|---|---|---|---|---|", ...rows].join("\n"),
      );
    if (s.branch)
      parts.push(
        `Then \`${s.branch.name}\` (\`${s.branch.file}\`): ${s.branch.does} ` +
          `Lists: ${Object.keys(s.branch.lists)
            .map((k) => `\`${k}\``)
            .join(", ")}.`,
      );
  }
  return parts.join("\n\n");
}

const TEMPLATE = `# Request lifecycle

<!-- BEGIN GENERATED ${SECTION}: do not edit by hand; run \`${COMMAND}\` -->
<!-- END GENERATED ${SECTION} -->
`;

export const lifecycleDoc: GeneratedDoc = {
  file: LIFECYCLE_DOC_FILE,
  command: COMMAND,
  render: (current) => replaceGenerated(current ?? TEMPLATE, SECTION, COMMAND, renderLifecycle()),
};

/** Null when docs/lifecycle.md is up to date, else what to run. */
export function checkLifecycleDocs(): string | null {
  return checkGeneratedDoc(lifecycleDoc);
}

if (import.meta.main) process.exit(generatedDocMain(lifecycleDoc));
