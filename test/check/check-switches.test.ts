/**
 * Every rule `mcp-edge check` judges can fail, and fails alone: the breakable fixture
 * (test/fixtures/check-server.ts, a real child process) passes every rule with no switch on, and
 * each switch — one broken behaviour — makes exactly the rule it targets fail and nothing else.
 * The CLI is run as a real process for the exit codes (0 / 1 / 2), `--fail-on`, JSON, SARIF, the
 * redaction of credentials, and TLS (a certificate made with openssl for the run).
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { type CheckOptions, runCheck } from "../../src/check/run.ts";
import { RULES } from "../../src/check/rules.ts";
import { SWITCHES } from "../fixtures/check-server.ts";
import { tempDir } from "../helpers/edge.ts";
import { NODE_BIN, REPO_ROOT, type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";

const TOKEN = "good-token";

function options(url: string, extra: Partial<CheckOptions> = {}): CheckOptions {
  return {
    url,
    headers: { authorization: `Bearer ${TOKEN}` },
    era: "auto",
    callTools: [],
    probeLimits: false,
    timeoutMs: 5000,
    maxRequests: 150,
    ...extra,
  };
}

export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE_BIN, [path.join(REPO_ROOT, "src/main.ts"), ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe("check: every rule can fail, alone", { timeout: 300_000 }, () => {
  let fx: SpawnedFixture;
  const setBreaks = async (b: string[]) => {
    const res = await fetch(new URL("/__control", fx.url), {
      method: "POST",
      body: JSON.stringify({ break: b }),
    });
    assert.equal(res.status, 200);
  };
  before(async () => {
    fx = await spawnFixture("test/fixtures/check-server.ts");
  });
  after(async () => {
    await fx?.stop();
  });

  test("the fixture with no switch passes every rule (TLS aside: it is http)", async () => {
    await setBreaks([]);
    const report = await runCheck(options(fx.url, { probeLimits: true, callTools: ["echo", "admin-tool"] }));
    const failed = report.findings.filter((f) => f.status === "fail").map((f) => `${f.id}: ${f.detail}`);
    assert.deepEqual(failed, []);
    const skipped = report.findings.filter((f) => f.status === "skip").map((f) => `${f.id}: ${f.detail}`);
    // admin-tool is refused for scope: judged by auth.scope-challenge, not as a tool result.
    assert.deepEqual(skipped.sort(), [
      "hygiene.tls-expiry: not https",
      "hygiene.tls: not https",
      "tools.call: admin-tool: refused for scope (403)",
    ]);
    assert.equal(report.grade, "A");
    assert.deepEqual(report.eras, ["2026-07-28", "2025-11-25"]);
    // Every rule but the https ones was judged, and passed.
    const judged = new Set(report.findings.filter((f) => f.status === "pass").map((f) => f.id));
    for (const r of RULES) if (!r.id.startsWith("hygiene.tls")) assert.ok(judged.has(r.id), `${r.id} judged`);
  });

  for (const [name, rule] of Object.entries(SWITCHES)) {
    test(`switch ${name} fails ${rule} and nothing else`, async () => {
      await setBreaks([name]);
      const report = await runCheck(
        options(fx.url, {
          probeLimits: rule === "hygiene.rate-limit",
          callTools: rule === "tools.call" ? ["echo"] : rule === "auth.scope-challenge" ? ["admin-tool"] : [],
        }),
      );
      const failed = report.findings.filter((f) => f.status === "fail");
      assert.deepEqual(
        failed.map((f) => f.id),
        [rule],
        failed.map((f) => `${f.id}: ${f.detail}`).join("\n"),
      );
      // The finding carries its citation and the exchange that shows it (none for pure URL rules).
      const f = failed[0]!;
      assert.ok(f.cite.length > 0 && f.url.startsWith("https://"));
      if (rule !== "hygiene.rate-limit" || name !== "no-rate-limit")
        assert.ok(f.evidence.length > 0, "evidence");
    });
  }

  test("CLI: exit 1 on a required failure, 0 with only a recommended one, 1 for it with --fail-on warn", async () => {
    await setBreaks(["no-origin-check"]);
    const required = await runCli(["check", fx.url, "-H", `Authorization: Bearer ${TOKEN}`]);
    assert.equal(required.code, 1, required.stdout + required.stderr);
    assert.match(required.stdout, /FAIL\s+hygiene\.origin/);
    assert.match(required.stdout, /grade D/);

    await setBreaks(["no-body-limit"]);
    const rec = await runCli(["check", fx.url, "-H", `Authorization: Bearer ${TOKEN}`]);
    assert.equal(rec.code, 0, rec.stdout);
    assert.match(rec.stdout, /WARN\s+hygiene\.body-limit/);
    const warn = await runCli(["check", fx.url, "-H", `Authorization: Bearer ${TOKEN}`, "--fail-on", "warn"]);
    assert.equal(warn.code, 1);
  });

  test("CLI: --json and --sarif are parseable, cite the spec and never show the credential", async () => {
    await setBreaks(["query-token", "no-pkce"]);
    const secret = "good-token";
    const json = await runCli(["check", fx.url, "-H", `Authorization: Bearer ${secret}`, "--json"]);
    assert.equal(json.code, 1);
    const report = JSON.parse(json.stdout);
    const ids = report.findings.filter((f: any) => f.status === "fail").map((f: any) => f.id);
    assert.deepEqual(ids.sort(), ["auth.pkce-s256", "auth.query-token-refused"]);
    assert.ok(!json.stdout.includes(secret), "the token appears nowhere in the JSON");
    const q = report.findings.find((f: any) => f.id === "auth.query-token-refused");
    assert.match(q.evidence[0].request.url, /access_token=\[redacted\]/);

    const sarif = await runCli(["check", fx.url, "-H", `Authorization: Bearer ${secret}`, "--sarif"]);
    assert.equal(sarif.code, 1);
    const doc = JSON.parse(sarif.stdout);
    assert.equal(doc.version, "2.1.0");
    const run = doc.runs[0];
    assert.equal(run.tool.driver.name, "mcp-edge check");
    const results = run.results.map((r: any) => [r.ruleId, r.level]);
    assert.deepEqual(results.sort(), [
      ["auth.pkce-s256", "error"],
      ["auth.query-token-refused", "error"],
    ]);
    for (const r of run.results) assert.equal(run.tool.driver.rules[r.ruleIndex].id, r.ruleId);
    assert.ok(!sarif.stdout.includes(secret));
  });

  test("CLI: exit 2 when it cannot run (nothing listening, not MCP, bad usage)", async () => {
    const closed = await runCli(["check", "http://127.0.0.1:1/mcp"]);
    assert.equal(closed.code, 2);
    assert.match(closed.stderr, /could not run/);
    const notMcp = await runCli(["check", new URL("/nothing", fx.url).href]);
    assert.equal(notMcp.code, 2);
    assert.match(notMcp.stderr, /does not answer as an MCP endpoint/);
    const usage = await runCli(["check", fx.url, "--era", "1999"]);
    assert.equal(usage.code, 2);
  });

  test("without credentials: auth posture judged, transport not (and said so)", async () => {
    await setBreaks([]);
    const report = await runCheck(options(fx.url, { headers: {} }));
    assert.equal(report.findings.filter((f) => f.status === "fail").length, 0);
    assert.ok(report.findings.some((f) => f.id === "auth.prm" && f.status === "pass"));
    assert.ok(report.findings.every((f) => !f.id.startsWith("session.")));
    assert.ok(report.notes.some((n) => n.includes("wants credentials")));
  });

  test("--era 2025 and --era 2026 judge one era each", async () => {
    await setBreaks([]);
    const s = await runCheck(options(fx.url, { era: "2025" }));
    assert.deepEqual(s.eras, ["2025-11-25"]);
    assert.ok(s.findings.every((f) => !f.id.startsWith("modern.")));
    const m = await runCheck(options(fx.url, { era: "2026" }));
    assert.deepEqual(m.eras, ["2026-07-28"]);
    assert.ok(m.findings.every((f) => !f.id.startsWith("session.")));
    assert.equal(m.counts.fail, 0, JSON.stringify(m.findings.filter((f) => f.status === "fail")));
  });
});

describe("check over TLS", { timeout: 120_000 }, () => {
  const dir = tempDir("mcp-edge-check-tls-");
  const cert = (days: number) => {
    const key = path.join(dir, `key-${days}.pem`);
    const crt = path.join(dir, `cert-${days}.pem`);
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        crt,
        "-days",
        String(days),
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
      ],
      { stdio: "ignore" },
    );
    return { key, crt };
  };
  const running: SpawnedFixture[] = [];
  after(async () => {
    for (const r of running) await r.stop();
  });

  test("a trusted certificate passes; an untrusted one fails hygiene.tls; one expiring in 5 days fails hygiene.tls-expiry", async () => {
    const long = cert(90);
    const fx = await spawnFixture("test/fixtures/check-server.ts", [
      "--tls-cert",
      long.crt,
      "--tls-key",
      long.key,
    ]);
    running.push(fx);
    const trusted = await runCli(["check", fx.url, "-H", `Authorization: Bearer ${TOKEN}`, "--json"], {
      NODE_EXTRA_CA_CERTS: long.crt,
    });
    const r1 = JSON.parse(trusted.stdout);
    const st = (r: any, id: string) => r.findings.find((f: any) => f.id === id)?.status;
    assert.equal(st(r1, "hygiene.tls"), "pass", trusted.stdout);
    assert.equal(st(r1, "hygiene.tls-expiry"), "pass");
    assert.equal(st(r1, "hygiene.html-headers"), "pass"); // HSTS on the https page
    assert.equal(r1.counts.fail, 0, JSON.stringify(r1.findings.filter((f: any) => f.status === "fail")));
    assert.equal(trusted.code, 0);

    const untrusted = await runCli([
      "check",
      fx.url,
      "-H",
      `Authorization: Bearer ${TOKEN}`,
      "--json",
      "--insecure",
    ]);
    const r2 = JSON.parse(untrusted.stdout);
    assert.deepEqual(
      r2.findings.filter((f: any) => f.status === "fail").map((f: any) => f.id),
      ["hygiene.tls"],
    );
    assert.equal(untrusted.code, 1);

    const short = cert(5);
    const fx2 = await spawnFixture("test/fixtures/check-server.ts", [
      "--tls-cert",
      short.crt,
      "--tls-key",
      short.key,
    ]);
    running.push(fx2);
    const soon = await runCli(["check", fx2.url, "-H", `Authorization: Bearer ${TOKEN}`, "--json"], {
      NODE_EXTRA_CA_CERTS: short.crt,
    });
    const r3 = JSON.parse(soon.stdout);
    assert.deepEqual(
      r3.findings.filter((f: any) => f.status === "fail").map((f: any) => f.id),
      ["hygiene.tls-expiry"],
    );
    writeFileSync(path.join(dir, "done"), "");
  });
});
