import { type CheckContext, modernRequest, MODERN_VERSION, post, record, statusText } from "./context.ts";
import { errorOf, responseFor } from "./findings.ts";
import type { Exchange, ProbeAnswer } from "./http.ts";

/**
 * Stateless-era probes (2026-07-28): server/discover, then the header/body agreement rules. The
 * one tools/call sent names a tool that does not exist, so a server that fails to validate the
 * headers answers "unknown tool" instead of running anything.
 */

export interface Discovered {
  id: number;
  answer: ProbeAnswer;
  exchange: Exchange;
  versions: string[];
}

export async function discover(ctx: CheckContext): Promise<Discovered> {
  const r = modernRequest("server/discover");
  const { answer, exchange } = await post(ctx, r.body, r.headers, { enoughId: r.id });
  const rpc = responseFor(answer, r.id);
  const v = rpc?.result?.supportedVersions;
  const versions =
    answer.status === 200 && Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
  return { id: r.id, answer, exchange, versions };
}

const NO_SUCH_TOOL = "mcp-edge-check-no-such-tool";

/** 400, and when a JSON-RPC error body came, the expected code (intermediaries may send none). */
function judge400(answer: ProbeAnswer, code: number): { ok: boolean; why: string } {
  if (answer.status !== 400) return { ok: false, why: `answered ${statusText(answer)}` };
  const err = errorOf(answer);
  if (err && err.code !== code)
    return { ok: false, why: `400 but JSON-RPC code ${err.code} (expected ${code})` };
  return {
    ok: true,
    why: err ? `400 with ${err.code}` : "400 (no JSON-RPC body, as an intermediary may answer)",
  };
}

/** `sessionEra`: whether the endpoint also speaks the session era ("unknown" when --era skipped it). */
export async function probeModern(
  ctx: CheckContext,
  d: Discovered,
  sessionEra: "yes" | "no" | "unknown",
): Promise<void> {
  const ok = d.versions.includes(MODERN_VERSION);
  record(
    ctx,
    "modern.discover",
    ok ? "pass" : "fail",
    ok
      ? `supportedVersions: ${d.versions.join(", ")}`
      : `server/discover answered ${statusText(d.answer)} without ${MODERN_VERSION} in supportedVersions`,
    [d.exchange],
  );
  const sessionIds: Exchange[] = d.answer.headers["mcp-session-id"] ? [d.exchange] : [];

  const mm = modernRequest("server/discover");
  const a = await post(ctx, mm.body, { ...mm.headers, "mcp-method": "tools/list" });
  const j1 = judge400(a.answer, -32020);
  record(
    ctx,
    "modern.method-mismatch",
    j1.ok ? "pass" : "fail",
    `Mcp-Method tools/list on a server/discover body: ${j1.why}`,
    [a.exchange],
  );
  if (a.answer.headers["mcp-session-id"]) sessionIds.push(a.exchange);

  const miss = modernRequest("server/discover");
  const missHeaders = { ...miss.headers };
  delete missHeaders["mcp-method"];
  const b = await post(ctx, miss.body, missHeaders);
  const j2 = judge400(b.answer, -32020);
  record(ctx, "modern.method-missing", j2.ok ? "pass" : "fail", `no Mcp-Method: ${j2.why}`, [b.exchange]);

  const nm = modernRequest("tools/call", { name: NO_SUCH_TOOL, arguments: {} });
  const c = await post(ctx, nm.body, { ...nm.headers, "mcp-name": `${NO_SUCH_TOOL}-other` });
  const j3 = judge400(c.answer, -32020);
  record(
    ctx,
    "modern.name-mismatch",
    j3.ok ? "pass" : "fail",
    `Mcp-Name differing from params.name: ${j3.why}`,
    [c.exchange],
  );

  const uv = modernRequest("server/discover", {}, "1999-01-01");
  const e = await post(ctx, uv.body, uv.headers);
  const j4 = judge400(e.answer, -32022);
  const data = errorOf(e.answer)?.data as { supported?: unknown } | undefined;
  const hasSupported = errorOf(e.answer) === undefined || Array.isArray(data?.supported);
  record(
    ctx,
    "modern.version-unsupported",
    j4.ok && hasSupported ? "pass" : "fail",
    j4.ok && !hasSupported
      ? "400 -32022 but no data.supported list"
      : `protocol version 1999-01-01: ${j4.why}`,
    [e.exchange],
  );

  const batch = modernRequest("server/discover");
  const f = await ctx.prober.send({
    method: "POST",
    url: ctx.url.href,
    headers: {
      ...ctx.headers,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...batch.headers,
    },
    body: JSON.stringify([batch.body]),
  });
  const batchOk = f.answer.status === 400;
  record(
    ctx,
    "modern.batch-rejected",
    batchOk ? "pass" : "fail",
    batchOk ? "a batch is refused with 400" : `a batch was answered ${statusText(f.answer)}`,
    [f.exchange],
  );

  record(
    ctx,
    "modern.no-session-id",
    sessionIds.length === 0 ? "pass" : "fail",
    sessionIds.length === 0
      ? "no Mcp-Session-Id on 2026-07-28 answers"
      : "a 2026-07-28 answer carried Mcp-Session-Id",
    sessionIds,
  );

  // A GET carries no session in this era: a 2026-only server answers 405; a dual-era one refuses
  // the session-less GET of its session era (400). Neither may open a stream.
  const g = await ctx.prober.send({
    method: "GET",
    url: ctx.url.href,
    headers: { ...ctx.headers, accept: "text/event-stream", "mcp-protocol-version": MODERN_VERSION },
    streamWaitMs: 300,
  });
  const st = g.answer.status;
  const noStream = sessionEra === "no" ? st === 405 : st === 405 || (st >= 400 && st < 500);
  record(
    ctx,
    "modern.get-405",
    noStream ? "pass" : "fail",
    noStream
      ? `GET answered ${st}`
      : `GET answered ${statusText(g.answer)}${sessionEra === "no" ? " (a 2026-only server should answer 405)" : ""}`,
    [g.exchange],
  );
}
