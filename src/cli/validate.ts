import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseDocument } from "yaml";
import { interpolateEnv } from "../config/load.ts";
import { type Config, configSchema } from "../config/schema.ts";
import { assessConfig, type ConfigWarning } from "../config/warnings.ts";
import type { ErrorCode } from "../errors/codes.ts";
import { type CommandIo, parseCommandArgs, processIo } from "./args.ts";

/**
 * `mcp-edge validate`: the same checks as boot (YAML, `${ENV}`, schema, unsafe opt-ins), with
 * every problem reported at once and each warning printed with its code. Exit 0 when the edge would
 * start (warnings included), 1 when it would not.
 */

export const VALIDATE_USAGE = `Usage: mcp-edge validate [-c FILE] [--json]

Check a configuration file: schema, environment references and unsafe choices.
Exits 0 when valid (warnings included), 1 when invalid.

Options:
  -c, --config FILE  the file to check (default: ./mcp-edge.yaml)
      --json         print one JSON object on stdout instead of text
  -h, --help         show this help`;

export interface ValidationProblem {
  /** Dotted path in the document (`servers.github.route`); "" for the whole file. */
  path: string;
  message: string;
  code: ErrorCode;
}

export interface ServerSummary {
  name: string;
  route: string;
  upstream: "http" | "sse" | "stdio";
  /** Instances for http, 1 otherwise. */
  instances: number;
  auth: string[];
}

export interface ValidationReport {
  ok: boolean;
  file: string;
  errors: ValidationProblem[];
  warnings: ConfigWarning[];
  summary?: {
    listen: string;
    admin: string;
    /** `embedded (SQLite FILE)` or `distributed (Redis HOST, PostgreSQL HOST/DB schema S)`. */
    store: string;
    servers: ServerSummary[];
    upstreams: Record<"http" | "sse" | "stdio", number>;
  };
}

/** Replaces `${ENV}` leaf by leaf so that every missing variable is reported, each with its path. */
function interpolateAll(doc: unknown, env: NodeJS.ProcessEnv, errors: ValidationProblem[]): unknown {
  const walk = (value: unknown, path: string[]): unknown => {
    if (typeof value === "string") {
      try {
        return interpolateEnv(value, env, path);
      } catch (err) {
        const at = path.join(".");
        const message = (err as Error).message;
        errors.push({
          path: at,
          message: message.startsWith(`${at}: `) ? message.slice(at.length + 2) : message,
          code: "EDGE_CONFIG_ENV_MISSING",
        });
        return value;
      }
    }
    if (Array.isArray(value)) return value.map((v, i) => walk(v, [...path, String(i)]));
    if (value !== null && typeof value === "object") {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v, [...path, k])]));
    }
    return value;
  };
  return walk(doc, []);
}

/** Where state is kept, with no credential from the URLs. */
function storeSummary(store: Config["store"]): string {
  if (!store.redis || !store.postgres) return `embedded (SQLite ${store.sqlite})`;
  const where = (url: string) => {
    try {
      const u = new URL(url);
      return `${u.host}${u.pathname === "/" ? "" : u.pathname}`;
    } catch {
      return "(unparsable URL)";
    }
  };
  return `distributed (Redis ${where(store.redis.url)}, PostgreSQL ${where(store.postgres.url)} schema ${store.postgres.schema})`;
}

function summarize(config: Config): NonNullable<ValidationReport["summary"]> {
  const servers: ServerSummary[] = Object.entries(config.servers).map(([name, s]) => {
    const u = s.upstream;
    const upstream = u.urls ? "http" : u.sse ? "sse" : "stdio";
    return { name, route: s.route, upstream, instances: u.urls?.length ?? 1, auth: [...s.auth] };
  });
  const upstreams = { http: 0, sse: 0, stdio: 0 };
  for (const s of servers) upstreams[s.upstream]++;
  return {
    listen: `${config.listen.host}:${config.listen.port}`,
    admin: `${config.admin.listen.host}:${config.admin.listen.port}`,
    store: storeSummary(config.store),
    servers,
    upstreams,
  };
}

/** Every check boot makes, without throwing: read, YAML, `${ENV}`, schema, unsafe opt-ins. */
export function validateConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): ValidationReport {
  const report: ValidationReport = { ok: false, file, errors: [], warnings: [] };
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    report.errors.push({
      path: "",
      message: `cannot read ${file}: ${(err as Error).message}`,
      code: "EDGE_CONFIG_INVALID",
    });
    return report;
  }
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    for (const e of doc.errors)
      report.errors.push({ path: "", message: e.message, code: "EDGE_CONFIG_INVALID" });
    return report;
  }
  const interpolated = interpolateAll(doc.toJS() ?? {}, env, report.errors);
  // Schema problems are reported too, except at a value whose variable is missing (still `${X}`).
  const unset = new Set(report.errors.map((e) => e.path));

  const result = configSchema.safeParse(interpolated);
  if (!result.success || unset.size > 0) {
    for (const issue of result.success ? [] : result.error.issues) {
      if (unset.has(issue.path.map(String).join("."))) continue;
      report.errors.push({
        path: issue.path.map(String).join("."),
        message: issue.message,
        code: "EDGE_CONFIG_INVALID",
      });
    }
    return report;
  }
  const assessment = assessConfig(result.data);
  report.warnings = assessment.warnings;
  for (const message of assessment.errors) {
    // assessConfig prefixes each error with its path ("servers.demo.auth: ...").
    const at = message.indexOf(": ");
    const path = at > 0 && !message.slice(0, at).includes(" ") ? message.slice(0, at) : "";
    report.errors.push({ path, message: path ? message.slice(at + 2) : message, code: "EDGE_CONFIG_UNSAFE" });
  }
  report.summary = summarize(result.data);
  report.ok = report.errors.length === 0;
  return report;
}

function table(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows.map((r) =>
    r
      .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd(),
  );
}

function renderText(report: ValidationReport): { out: string; err: string } {
  const err: string[] = [];
  for (const w of report.warnings) err.push(`warning ${w.code}: ${w.message}`);
  if (!report.ok) {
    err.push(`invalid: ${report.file}`);
    for (const e of report.errors)
      err.push(
        `  ${e.path || "(file)"}: ${e.message}${e.code === "EDGE_CONFIG_UNSAFE" ? ` [${e.code}]` : ""}`,
      );
    return { out: "", err: `${err.join("\n")}\n` };
  }
  const s = report.summary!;
  const kinds = (["http", "sse", "stdio"] as const)
    .filter((k) => s.upstreams[k] > 0)
    .map((k) => `${s.upstreams[k]} ${k}`)
    .join(", ");
  const n = s.servers.length;
  const out = [
    `ok: ${report.file}`,
    `  listen ${s.listen}, admin ${s.admin}`,
    `  store: ${s.store}`,
    `  ${n} server${n === 1 ? "" : "s"} (upstreams: ${kinds})`,
    ...table(
      s.servers.map((v) => [
        v.name,
        v.route,
        v.upstream === "http" ? `http x${v.instances}` : v.upstream,
        `auth: ${v.auth.join(", ")}`,
      ]),
    ).map((line) => `    ${line}`),
  ];
  if (report.warnings.length > 0) out.push(`  ${report.warnings.length} warning(s)`);
  return { out: `${out.join("\n")}\n`, err: err.length ? `${err.join("\n")}\n` : "" };
}

export async function runValidate(argv: string[], io: CommandIo = processIo): Promise<number> {
  const parsed = parseCommandArgs(
    argv,
    { config: { type: "string", short: "c" }, json: { type: "boolean" } },
    VALIDATE_USAGE,
    io,
  );
  if (typeof parsed === "number") return parsed;
  if (parsed.positionals.length > 0) {
    io.stderr.write(`unexpected argument: ${parsed.positionals[0]}\n\n${VALIDATE_USAGE}\n`);
    return 2;
  }
  const report = validateConfigFile(resolve(parsed.values.config ?? "mcp-edge.yaml"), io.env);
  if (parsed.values.json) {
    io.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    const { out, err } = renderText(report);
    if (out) io.stdout.write(out);
    if (err) io.stderr.write(err);
  }
  return report.ok ? 0 : 1;
}
