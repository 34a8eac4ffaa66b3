import { probeAuth } from "./auth.ts";
import { type CheckContext, MODERN_VERSION, modernRequest, post, record, statusText } from "./context.ts";
import { DiscoveredFetcher } from "./discovered.ts";
import { type Finding, parseChallenges, responseFor } from "./findings.ts";
import { BudgetExceeded, Prober } from "./http.ts";
import { probeHygiene } from "./hygiene.ts";
import { discover, probeModern } from "./modern.ts";
import { endSession, initialize, probeSession } from "./session.ts";

/**
 * `mcp-edge check`: detect the era(s) the endpoint speaks (2026-07-28 `server/discover`, then
 * `initialize`, then legacy HTTP+SSE), then run the transport, auth and hygiene probes and grade
 * the findings. Bounded: one request at a time, at most `maxRequests`, each within `timeoutMs`.
 */

export type EraChoice = "auto" | "2025" | "2026";

export interface CheckOptions {
  url: string;
  /** Headers to send on authenticated requests (`-H 'Name: value'`): credentials. */
  headers: Record<string, string>;
  era: EraChoice;
  /** Tools to call (with `{}` arguments): the only probe that may have side effects. */
  callTools: string[];
  probeLimits: boolean;
  /** Per request, milliseconds. Default 10 000. */
  timeoutMs: number;
  /** Requests in all. Default 120. */
  maxRequests: number;
  insecureTls?: boolean;
}

export type Grade = "A" | "B" | "C" | "D" | "F";

export interface CheckReport {
  target: string;
  /** The eras judged: "2026-07-28", "2025-11-25" (or what initialize negotiated), "2024-11-05". */
  eras: string[];
  startedAt: string;
  durationMs: number;
  requests: number;
  grade: Grade;
  counts: { pass: number; fail: number; failRequired: number; failRecommended: number; skip: number };
  findings: Finding[];
  notes: string[];
}

/** The run could not start or the target is not an MCP endpoint: exit 2. */
export class CheckCannotRun extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CheckCannotRun";
  }
}

/**
 * A: nothing failed. B: only recommended rules failed, at most two. C: only recommended rules
 * failed, more than two. D: one required rule failed. F: more than one required rule failed.
 */
export function gradeOf(findings: Finding[]): Grade {
  const req = findings.filter((f) => f.status === "fail" && f.severity === "required").length;
  const rec = findings.filter((f) => f.status === "fail" && f.severity === "recommended").length;
  if (req > 1) return "F";
  if (req === 1) return "D";
  if (rec > 2) return "C";
  if (rec > 0) return "B";
  return "A";
}

export function parseHeaderArg(h: string): [string, string] {
  const at = h.indexOf(":");
  if (at <= 0) throw new CheckCannotRun(`-H ${JSON.stringify(h)}: expected 'Name: value'`);
  const name = h.slice(0, at).trim().toLowerCase();
  if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name))
    throw new CheckCannotRun(`-H ${JSON.stringify(h)}: bad header name`);
  return [name, h.slice(at + 1).trim()];
}

async function legacySse(ctx: CheckContext): Promise<{ ok: boolean; detail: string }> {
  const r = await ctx.prober.send({
    method: "GET",
    url: ctx.url.href,
    headers: { ...ctx.headers, accept: "text/event-stream" },
    enough: (t) => /event:\s*endpoint[\s\S]*?\r?\n\r?\n/.test(t),
    streamWaitMs: 2000,
  });
  const ok = r.answer.status === 200 && /event:\s*endpoint/.test(r.answer.body);
  return { ok, detail: ok ? "legacy HTTP+SSE endpoint event" : `GET answered ${statusText(r.answer)}` };
}

async function callTools(ctx: CheckContext, names: string[], modern: boolean): Promise<void> {
  if (modern) {
    for (const name of names) {
      const r = modernRequest("tools/call", { name, arguments: {} });
      const res = await post(ctx, r.body, r.headers, { enoughId: r.id });
      judgeToolCall(ctx, name, res.answer, responseFor(res.answer, r.id), res.exchange);
    }
    return;
  }
  const init = await initialize(ctx);
  if (!init.result) {
    for (const name of names)
      record(ctx, "tools.call", "skip", `${name}: initialize failed (${statusText(init.answer)})`);
    return;
  }
  const base: Record<string, string> = { "mcp-protocol-version": init.version };
  if (init.sessionId) base["mcp-session-id"] = init.sessionId;
  await post(ctx, { jsonrpc: "2.0", method: "notifications/initialized" }, base);
  for (const name of names) {
    const id = Math.floor(Math.random() * 1e9);
    const res = await post(
      ctx,
      { jsonrpc: "2.0", id, method: "tools/call", params: { name, arguments: {} } },
      base,
      { enoughId: id },
    );
    judgeToolCall(ctx, name, res.answer, responseFor(res.answer, id), res.exchange);
  }
  await endSession(ctx, init.sessionId, init.version);
}

function judgeToolCall(
  ctx: CheckContext,
  name: string,
  answer: { status: number; headers: Record<string, string> },
  rpc: ReturnType<typeof responseFor>,
  exchange: Finding["evidence"][number],
): void {
  if (answer.status === 403) {
    // A scope challenge (step-up): judged as such, not as a broken tool.
    const value = answer.headers["www-authenticate"];
    const parsed = value === undefined ? undefined : parseChallenges(value);
    const bearer = Array.isArray(parsed)
      ? parsed.find((c) => c.scheme.toLowerCase() === "bearer")
      : undefined;
    const problems: string[] = [];
    if (!bearer)
      problems.push(value ? `no Bearer challenge in ${JSON.stringify(value)}` : "no WWW-Authenticate");
    else {
      if (bearer.params.error !== "insufficient_scope")
        problems.push(`error=${JSON.stringify(bearer.params.error ?? "")}`);
      if (!bearer.params.scope) problems.push("no scope named");
    }
    record(
      ctx,
      "auth.scope-challenge",
      problems.length === 0 ? "pass" : "fail",
      problems.length === 0
        ? `${name}: 403 insufficient_scope, scope="${bearer?.params.scope}"`
        : `${name}: 403 with ${problems.join(", ")}`,
      [exchange],
    );
    record(ctx, "tools.call", "skip", `${name}: refused for scope (403)`);
    return;
  }
  const content = rpc?.result?.content;
  const ok =
    answer.status === 200 && rpc !== undefined && (Array.isArray(content) || rpc.error !== undefined);
  record(
    ctx,
    "tools.call",
    ok ? "pass" : "fail",
    ok
      ? `${name}: ${rpc?.error ? `JSON-RPC error ${rpc.error.code}` : rpc?.result?.isError ? "isError result" : "result"}`
      : `${name}: answered ${answer.status} without a CallToolResult`,
    [exchange],
  );
}

export async function runCheck(opts: CheckOptions): Promise<CheckReport> {
  let url: URL;
  try {
    url = new URL(opts.url);
  } catch {
    throw new CheckCannotRun(`not a URL: ${opts.url}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new CheckCannotRun(`not an http(s) URL: ${opts.url}`);
  const started = Date.now();
  const secretValues = Object.values(opts.headers).flatMap((v) => [v, ...v.split(/\s+/).slice(1)]);
  const prober = new Prober({
    timeoutMs: opts.timeoutMs,
    maxRequests: opts.maxRequests,
    secretHeaders: new Set(Object.keys(opts.headers)),
    secretValues,
    host: url.hostname,
    ...(opts.insecureTls ? { insecureTls: true } : {}),
  });
  const bearer = /^Bearer\s+(\S+)$/i.exec(opts.headers.authorization ?? "")?.[1];
  const ctx: CheckContext = {
    url,
    headers: opts.headers,
    credentials: Object.keys(opts.headers).length > 0,
    prober,
    findings: [],
    notes: [],
    ...(bearer ? { bearer } : {}),
  };
  const fetcher = new DiscoveredFetcher(url, prober, opts.timeoutMs);
  const eras: string[] = [];
  try {
    let modernOk = false;
    let sessionOk = false;
    let authWall = false;
    const firstAnswers: string[] = [];
    const d = opts.era === "2025" ? undefined : await discover(ctx);
    if (d) {
      // A JSON-RPC result to server/discover makes it a 2026 server; modern.discover judges the result.
      modernOk = d.answer.status === 200 && responseFor(d.answer, d.id)?.result !== undefined;
      if (d.answer.status === 401) authWall = true;
      if (d.answer.status === 0) throw new CheckCannotRun(`${url.href}: ${d.answer.error ?? "no answer"}`);
      firstAnswers.push(`server/discover: ${statusText(d.answer)}`);
    }
    const init = opts.era === "2026" ? undefined : await initialize(ctx);
    if (init) {
      sessionOk = init.result !== undefined;
      if (init.answer.status === 401) authWall = true;
      if (init.answer.status === 0)
        throw new CheckCannotRun(`${url.href}: ${init.answer.error ?? "no answer"}`);
      firstAnswers.push(`initialize: ${statusText(init.answer)}`);
    }
    let legacy = false;
    if (!modernOk && !sessionOk && !authWall && opts.era === "auto") {
      const l = await legacySse(ctx);
      legacy = l.ok;
      firstAnswers.push(l.detail);
    }
    if (opts.era === "2026" && d && !modernOk && !authWall && d.answer.status !== 0) {
      // Asked to judge the 2026 era: a server that does not answer server/discover fails it
      // (servers MUST implement it), rather than "not an MCP endpoint".
      record(
        ctx,
        "modern.discover",
        "fail",
        `server/discover answered ${statusText(d.answer)} without a result`,
        [d.exchange],
      );
      ctx.notes.push("the endpoint does not speak 2026-07-28: other 2026 rules not judged");
      return finish(ctx, prober, fetcher, url, started, eras);
    }
    if (!modernOk && !sessionOk && !authWall && !legacy) {
      if (init?.sessionId) await endSession(ctx, init.sessionId, init.version);
      throw new CheckCannotRun(`${url.href} does not answer as an MCP endpoint (${firstAnswers.join("; ")})`);
    }
    if (modernOk) eras.push(d?.versions.find((v) => v === MODERN_VERSION) ?? MODERN_VERSION);
    if (sessionOk && init) eras.push(init.version);
    if (legacy) {
      eras.push("2024-11-05");
      ctx.notes.push(
        "legacy HTTP+SSE (2024-11-05, deprecated): transport rules of the Streamable HTTP eras not judged",
      );
    }
    if (authWall && !modernOk && !sessionOk) {
      ctx.notes.push(
        ctx.credentials
          ? "the credentials given were refused (401): transport rules not judged"
          : "the endpoint wants credentials: transport rules not judged (pass them with -H 'Authorization: Bearer …')",
      );
    }

    const auth = await probeAuth(ctx, fetcher, modernOk || (!sessionOk && opts.era === "2026"));
    if (sessionOk && init) await probeSession(ctx, init);
    else if (init?.sessionId) await endSession(ctx, init.sessionId, init.version);
    if (modernOk && d)
      await probeModern(ctx, d, opts.era === "auto" ? (sessionOk ? "yes" : "no") : "unknown");
    await probeHygiene(ctx, {
      modern: modernOk,
      blockedByAuth: authWall && !modernOk && !sessionOk,
      probeLimits: opts.probeLimits,
      htmlCandidates: auth.htmlCandidates,
      fetcher,
    });
    if (opts.callTools.length > 0) {
      if (modernOk || sessionOk) await callTools(ctx, opts.callTools, modernOk && !sessionOk);
      else for (const n of opts.callTools) record(ctx, "tools.call", "skip", `${n}: no era to call it in`);
    }
    if (!ctx.findings.some((f) => f.id === "auth.scope-challenge"))
      record(
        ctx,
        "auth.scope-challenge",
        "skip",
        "no 403 seen: name a tool the credentials lack the scope for in --call-tools to judge the step-up challenge",
      );
  } catch (err) {
    if (err instanceof BudgetExceeded) ctx.notes.push(`${err.message}: later probes not sent`);
    else {
      await fetcher.close();
      await prober.close();
      throw err;
    }
  }
  return finish(ctx, prober, fetcher, url, started, eras);
}

async function finish(
  ctx: CheckContext,
  prober: Prober,
  fetcher: DiscoveredFetcher,
  url: URL,
  started: number,
  eras: string[],
): Promise<CheckReport> {
  await fetcher.close();
  await prober.close();
  const f = ctx.findings;
  const failRequired = f.filter((x) => x.status === "fail" && x.severity === "required").length;
  const failRecommended = f.filter((x) => x.status === "fail" && x.severity === "recommended").length;
  return {
    target: prober.redact(url.href),
    eras,
    startedAt: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    requests: prober.sent,
    grade: gradeOf(f),
    counts: {
      pass: f.filter((x) => x.status === "pass").length,
      fail: failRequired + failRecommended,
      failRequired,
      failRecommended,
      skip: f.filter((x) => x.status === "skip").length,
    },
    findings: f,
    notes: ctx.notes,
  };
}
