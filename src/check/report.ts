import type { Finding } from "./findings.ts";
import { RULES } from "./rules.ts";
import type { CheckReport } from "./run.ts";

/**
 * The three faces of a check report: a table for people, JSON for scripts, and SARIF 2.1.0 for CI
 * code-scanning pages (OASIS SARIF v2.1.0: one `run`, the rules in `tool.driver.rules`, one
 * `result` per failed finding, `level` error for required rules and warning for recommended ones).
 */

export type FailOn = "fail" | "warn";

/** Exit status: 1 when a finding is at or over `failOn` (fail = a required rule, warn = any rule). */
export function exitCodeOf(report: CheckReport, failOn: FailOn): number {
  const n = failOn === "warn" ? report.counts.fail : report.counts.failRequired;
  return n > 0 ? 1 : 0;
}

const MARK: Record<Finding["status"], string> = { pass: "pass", fail: "FAIL", skip: "skip" };

function level(f: Finding): string {
  if (f.status !== "fail") return MARK[f.status];
  return f.severity === "required" ? "FAIL" : "WARN";
}

export function renderTable(report: CheckReport, verbose = false): string {
  const lines: string[] = [];
  lines.push(`mcp-edge check ${report.target}`);
  lines.push(
    `eras: ${report.eras.join(", ") || "none judged"} · ${report.requests} requests in ${report.durationMs} ms`,
  );
  lines.push("");
  const judged = report.findings.filter((f) => f.status !== "skip");
  const rows = judged.map((f) => [level(f), f.id, f.severity, f.detail]);
  const w0 = 4;
  const w1 = Math.max(...rows.map((r) => (r[1] ?? "").length), 4);
  const w2 = "recommended".length;
  for (const r of rows)
    lines.push(
      `${(r[0] ?? "").padEnd(w0)}  ${(r[1] ?? "").padEnd(w1)}  ${(r[2] ?? "").padEnd(w2)}  ${r[3] ?? ""}`,
    );
  // Skipped rules, one line per reason: what was not judged, and why.
  const skipped = new Map<string, string[]>();
  for (const f of report.findings.filter((x) => x.status === "skip")) {
    const ids = skipped.get(f.detail) ?? [];
    ids.push(f.id);
    skipped.set(f.detail, ids);
  }
  if (skipped.size > 0) {
    lines.push("");
    lines.push("Not judged:");
    for (const [why, ids] of skipped) lines.push(`  ${ids.join(", ")}: ${why}`);
  }
  const failed = report.findings.filter((f) => f.status === "fail");
  if (failed.length > 0) {
    lines.push("");
    lines.push("Failed:");
    for (const f of failed) {
      lines.push(`  ${f.id} (${f.severity}) — ${f.title}`);
      lines.push(`    cites: ${f.cite} <${f.url}>`);
      lines.push(`    found: ${f.detail}`);
      for (const ex of f.evidence.slice(0, verbose ? f.evidence.length : 1)) {
        const hdrs = Object.entries(ex.request.headers)
          .filter(([k]) => !["content-type", "accept", "connection"].includes(k))
          .map(([k, v]) => `${k}: ${v}`)
          .join(", ");
        lines.push(`    request: ${ex.request.method} ${ex.request.url}${hdrs ? ` [${hdrs}]` : ""}`);
        if (ex.request.body && verbose) lines.push(`      ${ex.request.body}`);
        const body = ex.answer.body.replace(/\s+/g, " ").slice(0, verbose ? 600 : 160);
        lines.push(
          `    answer:  ${ex.answer.status === 0 ? ex.answer.error : ex.answer.status}${body ? ` ${body}` : ""}`,
        );
      }
    }
  }
  if (report.notes.length > 0) {
    lines.push("");
    for (const n of report.notes) lines.push(`note: ${n}`);
  }
  lines.push("");
  const c = report.counts;
  lines.push(
    `grade ${report.grade}: ${c.pass} passed, ${c.failRequired} required failed, ${c.failRecommended} recommended failed, ${c.skip} skipped`,
  );
  return lines.join("\n");
}

export function renderJson(report: CheckReport): string {
  return JSON.stringify(report, null, 2);
}

export function renderSarif(report: CheckReport, toolVersion: string): string {
  const used = new Set(report.findings.map((f) => f.id));
  const rules = RULES.filter((r) => used.has(r.id));
  const index = new Map(rules.map((r, i) => [r.id, i]));
  const sarif = {
    $schema: "https://json.schemastore.org/sarif-2.1.0.json",
    version: "2.1.0",
    runs: [
      {
        tool: {
          driver: {
            name: "mcp-edge check",
            version: toolVersion,
            informationUri: "https://modelcontextprotocol.io/specification",
            rules: rules.map((r) => ({
              id: r.id,
              name: r.id.replace(/[.-](\w)/g, (_, ch: string) => ch.toUpperCase()),
              shortDescription: { text: r.title },
              fullDescription: { text: `${r.title} (${r.cite})` },
              helpUri: r.url,
              defaultConfiguration: { level: r.severity === "required" ? "error" : "warning" },
              properties: { category: r.category, severity: r.severity, cite: r.cite },
            })),
          },
        },
        invocations: [{ executionSuccessful: true, startTimeUtc: report.startedAt }],
        properties: { target: report.target, eras: report.eras, grade: report.grade },
        results: report.findings
          .filter((f) => f.status === "fail")
          .map((f) => ({
            ruleId: f.id,
            ruleIndex: index.get(f.id),
            level: f.severity === "required" ? "error" : "warning",
            message: { text: `${f.title}: ${f.detail}` },
            locations: [
              {
                physicalLocation: { artifactLocation: { uri: report.target } },
              },
            ],
            properties: { evidence: f.evidence },
          })),
      },
    ],
  };
  return JSON.stringify(sarif, null, 2);
}
