import { readFileSync } from "node:fs";
import { exitCodeOf, type FailOn, renderJson, renderSarif, renderTable } from "../check/report.ts";
import { CheckCannotRun, type EraChoice, parseHeaderArg, runCheck } from "../check/run.ts";
import { type CommandIo, EXIT_USAGE, parseCommandArgs, processIo } from "./args.ts";

export const CHECK_USAGE = `Usage: mcp-edge check URL [options]

Probe any MCP endpoint for spec conformance and production hygiene: transport rules of the era it
speaks (2026-07-28 and/or the 2025 session era, detected), auth posture (401 challenge, RFC 9728
and RFC 8414 metadata, PKCE, registration), Origin / DNS-rebinding, body limit, TLS. Every finding
cites the spec section; probes are bounded and read-only (no tool is called unless named).

Options:
  -H, --header 'Name: value'   send this header on authenticated probes (repeatable; values redacted)
      --era auto|2025|2026     which era to probe (default auto: every era the endpoint answers)
      --json                   print the report as JSON
      --sarif                  print the report as SARIF 2.1.0
      --fail-on fail|warn      exit 1 on a failed required rule (fail, default) or on any failed rule (warn)
      --call-tools A,B         also call these tools with {} arguments (may have side effects)
      --probe-limits           send up to 40 requests to look for a 429 with Retry-After
      --timeout MS             per request (default 10000)
      --max-requests N         requests in all (default 120)
      --insecure               accept a TLS certificate that does not verify (still reported)
  -v, --verbose                print every exchange of a failed finding
  -h, --help                   show this help

Exit: 0 nothing at or over --fail-on, 1 findings at or over it, 2 could not run.`;

function toolVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version?: string;
    };
    return pkg.version ?? "0";
  } catch {
    return "0";
  }
}

export async function runCheckCommand(argv: string[], io: CommandIo = processIo): Promise<number> {
  const parsed = parseCommandArgs(
    argv,
    {
      header: { type: "string", short: "H", multiple: true },
      era: { type: "string" },
      json: { type: "boolean" },
      sarif: { type: "boolean" },
      "fail-on": { type: "string" },
      "call-tools": { type: "string" },
      "probe-limits": { type: "boolean" },
      timeout: { type: "string" },
      "max-requests": { type: "string" },
      insecure: { type: "boolean" },
      verbose: { type: "boolean", short: "v" },
    },
    CHECK_USAGE,
    io,
  );
  if (typeof parsed === "number") return parsed;
  const v = parsed.values;
  const usage = (msg: string) => {
    io.stderr.write(`${msg}\n\n${CHECK_USAGE}\n`);
    return EXIT_USAGE;
  };
  const [url, ...extra] = parsed.positionals;
  if (!url || extra.length > 0) return usage("check needs exactly one URL");
  const era = (v.era ?? "auto") as EraChoice;
  if (!["auto", "2025", "2026"].includes(era)) return usage(`--era ${v.era}: expected auto, 2025 or 2026`);
  const failOn = (v["fail-on"] ?? "fail") as FailOn;
  if (failOn !== "fail" && failOn !== "warn")
    return usage(`--fail-on ${v["fail-on"]}: expected fail or warn`);
  if (v.json && v.sarif) return usage("--json and --sarif exclude each other");
  const timeoutMs = Number(v.timeout ?? 10_000);
  const maxRequests = Number(v["max-requests"] ?? 120);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 100) return usage("--timeout: milliseconds, at least 100");
  if (!Number.isInteger(maxRequests) || maxRequests < 5) return usage("--max-requests: at least 5");
  const headers: Record<string, string> = {};
  try {
    for (const h of v.header ?? []) {
      const [name, value] = parseHeaderArg(h);
      headers[name] = value;
    }
    const report = await runCheck({
      url,
      headers,
      era,
      callTools: (v["call-tools"] ?? "")
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean),
      probeLimits: v["probe-limits"] === true,
      timeoutMs,
      maxRequests,
      ...(v.insecure ? { insecureTls: true } : {}),
    });
    if (v.json) io.stdout.write(`${renderJson(report)}\n`);
    else if (v.sarif) io.stdout.write(`${renderSarif(report, toolVersion())}\n`);
    else io.stdout.write(`${renderTable(report, v.verbose === true)}\n`);
    return exitCodeOf(report, failOn);
  } catch (err) {
    if (err instanceof CheckCannotRun) {
      io.stderr.write(`check: could not run: ${err.message}\n`);
      return 2;
    }
    io.stderr.write(`check: could not run: ${(err as Error).stack ?? String(err)}\n`);
    return 2;
  }
}
