import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { checkSecretsFromEnv } from "../config/secrets.ts";
import { loadConfigFile } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { type DoctorItem, renderDoctor, runDoctorChecks } from "../doctor/doctor.ts";
import { isGatewayError } from "../errors/errors.ts";
import { parseHeaderArg } from "../check/run.ts";
import { type CommandIo, EXIT_USAGE, parseCommandArgs, processIo } from "./args.ts";
import { QUICKSTART_ADMIN_TOKEN_FILE } from "./keys.ts";
import { quickstartConfig } from "./serve.ts";

export const DOCTOR_USAGE = `Usage: mcp-edge doctor [-c FILE] [--url URL] [--json]

The production checklist, live: the config's unsafe opt-ins, admin exposure and inline secrets;
the stores (reachable, latency, migrations); the upstreams (reachable, era, their own check grade);
clock skew against the OAuth issuers; with --url, the running edge (readiness and mcp-edge check).
Each item is pass / warn / fail with the reason and the fix. Nothing is written anywhere.

Options:
  -c, --config FILE          the config (default ./mcp-edge.yaml, else the quickstart's)
      --url URL              the running edge's MCP URL, probed with mcp-edge check
  -H, --header 'Name: value' credentials for the --url probe (repeatable)
      --timeout MS           per network probe (default 3000)
      --json                 print the report as JSON
  -h, --help                 show this help

Exit: 0 no item failed (warnings allowed), 1 an item failed, 2 usage error.`;

export async function runDoctor(argv: string[], io: CommandIo = processIo): Promise<number> {
  const parsed = parseCommandArgs(
    argv,
    {
      config: { type: "string", short: "c" },
      url: { type: "string" },
      header: { type: "string", short: "H", multiple: true },
      timeout: { type: "string" },
      json: { type: "boolean" },
    },
    DOCTOR_USAGE,
    io,
  );
  if (typeof parsed === "number") return parsed;
  const v = parsed.values;
  if (parsed.positionals.length > 0) {
    io.stderr.write(`doctor takes no positional arguments\n\n${DOCTOR_USAGE}\n`);
    return EXIT_USAGE;
  }
  const timeoutMs = Number(v.timeout ?? 3000);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 100) {
    io.stderr.write(`--timeout: milliseconds, at least 100\n`);
    return EXIT_USAGE;
  }
  const headers: Record<string, string> = {};
  try {
    for (const h of v.header ?? []) {
      const [name, value] = parseHeaderArg(h);
      headers[name] = value;
    }
  } catch (err) {
    io.stderr.write(`${(err as Error).message}\n`);
    return EXIT_USAGE;
  }
  const print = (file: string, items: DoctorItem[], ok: boolean) => {
    const report = { file, items, ok };
    io.stdout.write(v.json ? `${JSON.stringify(report, null, 2)}\n` : `${renderDoctor(report)}\n`);
    return ok ? 0 : 1;
  };

  const file = v.config ?? (existsSync("mcp-edge.yaml") ? "mcp-edge.yaml" : undefined);
  let config: Config;
  let label: string;
  let raw: unknown;
  if (file) {
    label = resolve(file);
    try {
      config = loadConfigFile(label, io.env);
      raw = parseYaml(readFileSync(label, "utf8"));
    } catch (err) {
      const code = isGatewayError(err) ? err.code : undefined;
      if (code === "EDGE_CONFIG_SECRET_INLINE") {
        const where = inlineSecretPaths(label);
        return print(
          label,
          [
            {
              id: "secrets",
              title: "Secrets from the environment",
              status: "fail",
              reason: (err as Error).message.replace(/\s+/g, " "),
              fix: `move each value into an environment variable and write \${NAME} in its place${where ? ` (${where})` : ""}`,
            },
          ],
          false,
        );
      }
      return print(
        label,
        [
          {
            id: "config",
            title: "Configuration valid",
            status: "fail",
            reason: (err as Error).message.replace(/\s+/g, " "),
            fix: `run mcp-edge validate -c ${file} for every problem with its path`,
          },
        ],
        false,
      );
    }
  } else {
    label = "(no config file: the quickstart)";
    // The quickstart makes its admin token at first start; doctor writes nothing, so it evaluates
    // the quickstart with a stand-in token when none exists yet.
    const env = { ...io.env };
    if (!env.MCP_EDGE_ADMIN_TOKEN && !existsSync(QUICKSTART_ADMIN_TOKEN_FILE))
      env.MCP_EDGE_ADMIN_TOKEN = "not-yet-generated-at-first-start-0000000000";
    config = quickstartConfig(env);
  }
  const report = await runDoctorChecks(
    label,
    config,
    {
      ...(v.url ? { url: v.url } : {}),
      headers,
      timeoutMs,
      cwd: process.cwd(),
    },
    raw,
  );
  return print(report.file, report.items, report.ok);
}

/** The dotted paths of inline secrets, for the fix line. */
function inlineSecretPaths(file: string): string | undefined {
  try {
    const found = checkSecretsFromEnv(parseYaml(readFileSync(file, "utf8")));
    return found.length ? found.join("; ") : undefined;
  } catch {
    return undefined;
  }
}
