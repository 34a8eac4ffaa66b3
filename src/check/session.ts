import {
  type CheckContext,
  initializeRequest,
  post,
  randomToken,
  record,
  rpcId,
  SESSION_VERSION,
  statusText,
} from "./context.ts";
import { eventIds, responseFor } from "./findings.ts";
import type { Exchange, ProbeAnswer } from "./http.ts";

/**
 * Session-era probes (Streamable HTTP 2025-03-26 .. 2025-11-25): initialize, then the transport
 * rules around the session the server minted. Every probe is a read-only request (ping,
 * tools/list) or the DELETE that ends the probe's own session, last.
 */

export interface Initialized {
  answer: ProbeAnswer;
  exchange: Exchange;
  /** The InitializeResult, when the answer carried one. */
  result?: Record<string, unknown>;
  sessionId?: string;
  version: string;
}

/** Sends initialize with the operator's credentials. */
export async function initialize(
  ctx: CheckContext,
  extra: Record<string, string> = {},
): Promise<Initialized> {
  const init = initializeRequest();
  const { answer, exchange } = await post(ctx, init.body, extra, { enoughId: init.id });
  const rpc = responseFor(answer, init.id);
  const out: Initialized = { answer, exchange, version: SESSION_VERSION };
  if (answer.status === 200 && rpc?.result) {
    out.result = rpc.result;
    const v = rpc.result.protocolVersion;
    if (typeof v === "string") out.version = v;
  }
  const sid = answer.headers["mcp-session-id"];
  if (sid !== undefined) out.sessionId = sid;
  return out;
}

/** Ends a session the check opened (politeness; not judged). */
export async function endSession(
  ctx: CheckContext,
  sessionId: string | undefined,
  version: string,
): Promise<void> {
  if (sessionId === undefined) return;
  await ctx.prober
    .send({
      method: "DELETE",
      url: ctx.url.href,
      headers: { ...ctx.headers, "mcp-session-id": sessionId, "mcp-protocol-version": version },
    })
    .catch(() => undefined);
}

function ping(): { id: number; body: Record<string, unknown> } {
  const id = rpcId();
  return { id, body: { jsonrpc: "2.0", id, method: "ping" } };
}

export async function probeSession(ctx: CheckContext, init: Initialized): Promise<{ tools: string[] }> {
  const tools: string[] = [];
  const { result, sessionId: sid, version } = init;
  const resultOk =
    result !== undefined &&
    typeof result.protocolVersion === "string" &&
    typeof result.serverInfo === "object" &&
    typeof result.capabilities === "object";
  record(
    ctx,
    "session.initialize",
    resultOk ? "pass" : "fail",
    resultOk
      ? `negotiated ${version}${sid ? ", session minted" : ", no session (stateless server)"}`
      : `initialize answered ${statusText(init.answer)} without a complete InitializeResult (protocolVersion, capabilities, serverInfo)`,
    [init.exchange],
  );
  if (!result) return { tools };

  const base: Record<string, string> = { "mcp-protocol-version": version };
  if (sid !== undefined) base["mcp-session-id"] = sid;

  if (sid !== undefined) {
    const ok = /^[\x21-\x7e]+$/.test(sid);
    record(
      ctx,
      "session.id-charset",
      ok ? "pass" : "fail",
      ok
        ? "session id is visible ASCII"
        : `session id ${JSON.stringify(sid)} has characters outside 0x21-0x7E`,
      [init.exchange],
    );
  } else {
    record(ctx, "session.id-charset", "skip", "the server mints no session id");
  }

  // notifications/initialized completes the handshake (and is the notification the rule needs).
  const note = await post(ctx, { jsonrpc: "2.0", method: "notifications/initialized" }, base);
  const n202 = note.answer.status === 202 && note.answer.body.trim() === "";
  record(
    ctx,
    "session.notification-202",
    n202 ? "pass" : "fail",
    n202
      ? "202 with no body"
      : `notification answered ${statusText(note.answer)}${note.answer.body ? " with a body" : ""}`,
    [note.exchange],
  );

  const list = rpcId();
  const tl = await post(ctx, { jsonrpc: "2.0", id: list, method: "tools/list" }, base, { enoughId: list });
  const tlRpc = responseFor(tl.answer, list);
  const type = tl.answer.headers["content-type"] ?? "";
  const shaped =
    tl.answer.status === 200 &&
    tlRpc !== undefined &&
    (type.includes("application/json") || type.includes("text/event-stream"));
  record(
    ctx,
    "session.request-response",
    shaped ? "pass" : "fail",
    shaped
      ? `tools/list answered as ${type.split(";")[0]} with the response of the same id`
      : `tools/list answered ${statusText(tl.answer)} (${type || "no content-type"}) without a response of id ${list}`,
    [tl.exchange],
  );
  const listed = tlRpc?.result?.tools;
  if (Array.isArray(listed))
    for (const t of listed)
      if (typeof (t as { name?: unknown }).name === "string") tools.push((t as { name: string }).name);

  if (sid !== undefined) {
    const p = ping();
    const missing = await post(ctx, p.body, { "mcp-protocol-version": version });
    const ok = missing.answer.status === 400;
    record(
      ctx,
      "session.missing-400",
      ok ? "pass" : "fail",
      ok
        ? "400 without the session header"
        : `a request without Mcp-Session-Id was answered ${statusText(missing.answer)}`,
      [missing.exchange],
    );
  } else {
    record(ctx, "session.missing-400", "skip", "the server mints no session id");
  }

  const unknownEvidence: Exchange[] = [];
  let unknownOk = true;
  let unknownDetail = "";
  if (sid !== undefined) {
    const p = ping();
    const unknown = await post(ctx, p.body, { ...base, "mcp-session-id": `mcp-edge-check-${randomToken()}` });
    unknownEvidence.push(unknown.exchange);
    if (unknown.answer.status !== 404) {
      unknownOk = false;
      unknownDetail = `a session id never issued was answered ${statusText(unknown.answer)}`;
    }
  }

  const p = ping();
  const badVersion = await post(ctx, p.body, { ...base, "mcp-protocol-version": "1999-01-01" });
  const bv = badVersion.answer.status === 400;
  record(
    ctx,
    "session.protocol-version-400",
    bv ? "pass" : "fail",
    bv
      ? "400 for MCP-Protocol-Version: 1999-01-01"
      : `MCP-Protocol-Version: 1999-01-01 was answered ${statusText(badVersion.answer)}`,
    [badVersion.exchange],
  );

  // GET stream: 200 text/event-stream or 405. Read briefly, then close.
  const get = await ctx.prober.send({
    method: "GET",
    url: ctx.url.href,
    headers: { ...ctx.headers, ...base, accept: "text/event-stream" },
    streamWaitMs: 300,
  });
  const getType = get.answer.headers["content-type"] ?? "";
  const getOk =
    (get.answer.status === 200 && getType.includes("text/event-stream")) || get.answer.status === 405;
  record(
    ctx,
    "session.get-stream",
    getOk ? "pass" : "fail",
    getOk
      ? get.answer.status === 405
        ? "405: the server offers no standalone stream"
        : "SSE stream opened"
      : `GET answered ${statusText(get.answer)} (${getType || "no content-type"})`,
    [get.exchange],
  );

  // Resumption needs an event id the server issued on this session.
  const ids = [...eventIds(init.answer), ...eventIds(tl.answer), ...eventIds(get.answer)];
  const last = ids.at(-1);
  if (sid === undefined) {
    record(ctx, "session.resume", "skip", "no session: nothing to resume");
  } else if (last === undefined) {
    record(ctx, "session.resume", "skip", "the server issued no SSE event ids (resumability is optional)");
  } else if (get.answer.status === 405) {
    record(ctx, "session.resume", "skip", "GET is not offered (405), so there is no resumption by GET");
  } else {
    const resume = await ctx.prober.send({
      method: "GET",
      url: ctx.url.href,
      headers: { ...ctx.headers, ...base, accept: "text/event-stream", "last-event-id": last },
      streamWaitMs: 300,
    });
    const rType = resume.answer.headers["content-type"] ?? "";
    const ok = resume.answer.status === 200 && rType.includes("text/event-stream");
    record(
      ctx,
      "session.resume",
      ok ? "pass" : "fail",
      ok
        ? `resumed after event id ${last}`
        : `GET with Last-Event-ID ${last} answered ${statusText(resume.answer)}`,
      [resume.exchange],
    );
  }

  if (sid === undefined) {
    record(ctx, "session.delete", "skip", "no session to end");
    record(ctx, "session.unknown-404", "skip", "the server mints no session id");
    return { tools };
  }

  const del = await ctx.prober.send({
    method: "DELETE",
    url: ctx.url.href,
    headers: { ...ctx.headers, ...base },
  });
  if (del.answer.status === 405) {
    record(ctx, "session.delete", "pass", "405: the server does not let clients end sessions", [
      del.exchange,
    ]);
  } else if (del.answer.status >= 200 && del.answer.status < 300) {
    const q = ping();
    const after = await post(ctx, q.body, base);
    unknownEvidence.push(after.exchange);
    const ended = after.answer.status >= 400 && after.answer.status < 500;
    record(
      ctx,
      "session.delete",
      ended ? "pass" : "fail",
      ended
        ? `DELETE ${del.answer.status}, then the session is refused`
        : `DELETE ${del.answer.status}, but the session still answers ${statusText(after.answer)}`,
      [del.exchange, after.exchange],
    );
    if (ended && after.answer.status !== 404 && unknownOk) {
      unknownOk = false;
      unknownDetail = `a terminated session was answered ${after.answer.status}`;
    }
  } else {
    record(ctx, "session.delete", "fail", `DELETE answered ${statusText(del.answer)} (expected 2xx or 405)`, [
      del.exchange,
    ]);
  }
  record(
    ctx,
    "session.unknown-404",
    unknownOk ? "pass" : "fail",
    unknownOk
      ? "404 for a session id the server does not hold"
      : `${unknownDetail} (clients re-initialize only on 404)`,
    unknownEvidence,
  );
  return { tools };
}
