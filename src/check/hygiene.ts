import { connect as tlsConnect, type PeerCertificate } from "node:tls";
import {
  type CheckContext,
  FOREIGN_HOST,
  initializeRequest,
  isLoopbackHost,
  modernRequest,
  post,
  record,
  rpcId,
  statusText,
} from "./context.ts";
import { responseFor } from "./findings.ts";
import type { DiscoveredFetcher } from "./discovered.ts";
import type { Exchange, ProbeAnswer } from "./http.ts";
import { endSession } from "./session.ts";

/**
 * Production hygiene: Origin and Host checks (DNS rebinding), the body limit, the rate limit (only
 * with --probe-limits), transport security and the headers of HTML pages. Requests carry the
 * operator's credentials, so that what is judged is the check itself and not the 401 in front of it.
 */

/** 5 MiB: above the 4 MiB the official SDKs and mcp-edge accept by default, small enough to send to anyone. */
export const OVERSIZED_BYTES = 5 * 1024 * 1024;
/** At most this many requests for the rate-limit probe. */
export const RATE_PROBE_MAX = 40;

async function cheap(
  ctx: CheckContext,
  modern: boolean,
  headers: Record<string, string>,
  padding?: string,
): Promise<{ answer: ProbeAnswer; exchange: Exchange }> {
  if (modern) {
    const r = modernRequest("server/discover", padding ? { padding } : {});
    return post(ctx, r.body, { ...r.headers, ...headers }, { enoughId: r.id });
  }
  const init = initializeRequest();
  if (padding) (init.body.params as Record<string, unknown>).padding = padding;
  const res = await post(ctx, init.body, headers, { enoughId: init.id });
  // A server that accepted the request opened a session for it: end it.
  if (res.answer.status === 200) await endSession(ctx, res.answer.headers["mcp-session-id"], "2025-11-25");
  return res;
}

export interface HygieneOptions {
  modern: boolean;
  /** Whether the endpoint wants credentials and none were given (checks behind auth are skipped). */
  blockedByAuth: boolean;
  probeLimits: boolean;
  htmlCandidates: string[];
  fetcher: DiscoveredFetcher;
}

export async function probeHygiene(ctx: CheckContext, o: HygieneOptions): Promise<void> {
  const { modern } = o;
  if (o.blockedByAuth) {
    for (const id of ["hygiene.origin", "hygiene.dns-rebinding", "hygiene.body-limit"])
      record(
        ctx,
        id,
        "skip",
        "the endpoint wants credentials: pass them with -H to judge this behind the 401",
      );
  } else {
    const foreignOrigin = await cheap(ctx, modern, { origin: `https://${FOREIGN_HOST}` });
    const o403 = foreignOrigin.answer.status === 403;
    record(
      ctx,
      "hygiene.origin",
      o403 ? "pass" : "fail",
      o403
        ? "403 for Origin: https://" + FOREIGN_HOST
        : `Origin: https://${FOREIGN_HOST} was answered ${statusText(foreignOrigin.answer)}`,
      [foreignOrigin.exchange],
    );

    const hostPort = `${FOREIGN_HOST}${ctx.url.port ? `:${ctx.url.port}` : ""}`;
    // Host alone: the Origin check is judged above; this judges the Host allow-list by itself.
    const rebinding = await cheap(ctx, modern, { host: hostPort });
    const refused = rebinding.answer.status >= 400 && rebinding.answer.status < 500;
    record(
      ctx,
      "hygiene.dns-rebinding",
      refused ? "pass" : "fail",
      refused
        ? `Host: ${hostPort} refused with ${rebinding.answer.status}`
        : `Host: ${hostPort} (a rebound name) was answered ${statusText(rebinding.answer)}`,
      [rebinding.exchange],
    );

    const big = await cheap(ctx, modern, {}, "x".repeat(OVERSIZED_BYTES));
    const a = big.answer;
    const cut = a.status === 0 && /ECONNRESET|EPIPE|UND_ERR_SOCKET|other side closed/i.test(a.error ?? "");
    const limited = (a.status >= 400 && a.status < 500) || cut;
    record(
      ctx,
      "hygiene.body-limit",
      limited ? "pass" : "fail",
      limited
        ? cut
          ? "the connection was closed on the oversized body"
          : `${a.status} for a ${OVERSIZED_BYTES}-byte body`
        : `a ${OVERSIZED_BYTES}-byte body was answered ${statusText(a)}`,
      [big.exchange],
    );
  }

  if (!o.probeLimits) {
    record(ctx, "hygiene.rate-limit", "skip", "not probed (opt in with --probe-limits)");
  } else if (o.blockedByAuth) {
    record(ctx, "hygiene.rate-limit", "skip", "the endpoint wants credentials: pass them with -H");
  } else {
    const { hit, n } = await burst(ctx, modern);
    if (!hit) record(ctx, "hygiene.rate-limit", "fail", `no 429 within ${RATE_PROBE_MAX} requests`);
    else {
      const ra = hit.answer.headers["retry-after"];
      const ok = ra !== undefined && (/^\d+$/.test(ra.trim()) || !Number.isNaN(Date.parse(ra)));
      record(
        ctx,
        "hygiene.rate-limit",
        ok ? "pass" : "fail",
        ok
          ? `429 after ${n + 1} requests, Retry-After: ${ra}`
          : `429 after ${n + 1} requests without a valid Retry-After`,
        [hit.exchange],
      );
    }
  }

  const loopback = isLoopbackHost(ctx.url.hostname);
  if (ctx.url.protocol === "https:") {
    record(ctx, "hygiene.https", "pass", "https");
    await probeTls(ctx);
  } else {
    record(
      ctx,
      "hygiene.https",
      loopback ? "pass" : "fail",
      loopback
        ? "plain HTTP on a loopback address"
        : `plain HTTP to ${ctx.url.hostname}: tokens and session ids travel in clear`,
    );
    record(ctx, "hygiene.tls", "skip", "not https");
    record(ctx, "hygiene.tls-expiry", "skip", "not https");
  }

  // HTML pages: the origin's root and the authorization endpoint the metadata names.
  const pages: { answer: ProbeAnswer; exchange: Exchange }[] = [];
  for (const u of [`${ctx.url.origin}/`, ...o.htmlCandidates]) {
    const r = await o.fetcher.get(u, "text/html");
    // Only pages a person is meant to see (2xx): an error page has nothing to click on.
    const ok = r.answer.status >= 200 && r.answer.status < 300;
    if (ok && (r.answer.headers["content-type"] ?? "").includes("text/html")) pages.push(r);
  }
  if (pages.length === 0) {
    record(ctx, "hygiene.html-headers", "skip", "no HTML page found (origin root, authorization endpoint)");
  } else {
    const problems: string[] = [];
    for (const p of pages) {
      const h = p.answer.headers;
      const csp = h["content-security-policy"] ?? "";
      const where = p.exchange.request.url;
      if (!/frame-ancestors/i.test(csp) && !/^(deny|sameorigin)$/i.test((h["x-frame-options"] ?? "").trim()))
        problems.push(`${where}: frameable (no X-Frame-Options or CSP frame-ancestors)`);
      if ((h["x-content-type-options"] ?? "").toLowerCase() !== "nosniff")
        problems.push(`${where}: no X-Content-Type-Options: nosniff`);
      if (where.startsWith("https:") && !h["strict-transport-security"])
        problems.push(`${where}: no Strict-Transport-Security`);
    }
    record(
      ctx,
      "hygiene.html-headers",
      problems.length === 0 ? "pass" : "fail",
      problems.length === 0
        ? `${pages.length} HTML page(s) with anti-framing and nosniff`
        : problems.join("; "),
      pages.map((p) => p.exchange),
    );
  }
}

async function probeTls(ctx: CheckContext): Promise<void> {
  const host = ctx.url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(ctx.url.port || 443);
  ctx.prober.charge();
  const info = await new Promise<{
    protocol?: string;
    authorized: boolean;
    error?: string;
    cert?: PeerCertificate;
  }>((resolve) => {
    const socket = tlsConnect(
      {
        host,
        port,
        servername: /^[\d.:]+$/.test(host) ? undefined : host,
        rejectUnauthorized: false,
        timeout: 10_000,
      },
      () => {
        const out = {
          protocol: socket.getProtocol() ?? undefined,
          authorized: socket.authorized,
          cert: socket.getPeerCertificate(),
          ...(socket.authorizationError ? { error: String(socket.authorizationError) } : {}),
        };
        socket.end();
        resolve(out);
      },
    );
    socket.on("timeout", () => {
      socket.destroy();
      resolve({ authorized: false, error: "TLS handshake timed out" });
    });
    socket.on("error", (err) => resolve({ authorized: false, error: err.message }));
  });
  const modernTls = info.protocol === "TLSv1.2" || info.protocol === "TLSv1.3";
  const ok = info.authorized && modernTls;
  const detail = ok
    ? `${info.protocol}, certificate valid for ${host}`
    : [
        info.protocol && !modernTls ? `${info.protocol} negotiated` : "",
        info.error ? `certificate: ${info.error}` : "",
      ]
        .filter(Boolean)
        .join("; ") || "handshake failed";
  record(ctx, "hygiene.tls", ok ? "pass" : "fail", detail);
  const notAfter = info.cert?.valid_to ? Date.parse(info.cert.valid_to) : NaN;
  if (Number.isNaN(notAfter)) record(ctx, "hygiene.tls-expiry", "skip", "no certificate");
  else {
    const days = Math.floor((notAfter - Date.now()) / 86_400_000);
    record(
      ctx,
      "hygiene.tls-expiry",
      days > 14 ? "pass" : "fail",
      `expires ${new Date(notAfter).toISOString()} (${days} days)`,
    );
  }
}

/**
 * The gentle rate-limit probe: sequential requests (never parallel), at most RATE_PROBE_MAX, stopping
 * at the first 429. The session era uses one session and pings, so the burst opens no sessions.
 */
async function burst(
  ctx: CheckContext,
  modern: boolean,
): Promise<{ hit?: { answer: ProbeAnswer; exchange: Exchange }; n: number }> {
  let send: () => Promise<{ answer: ProbeAnswer; exchange: Exchange }>;
  let sid: string | undefined;
  let version = "2025-11-25";
  if (modern) {
    send = () => {
      const r = modernRequest("server/discover");
      return post(ctx, r.body, r.headers, { enoughId: r.id });
    };
  } else {
    const init = initializeRequest();
    const first = await post(ctx, init.body, {}, { enoughId: init.id });
    if (first.answer.status === 429) return { hit: first, n: 0 };
    sid = first.answer.headers["mcp-session-id"];
    version = (responseFor(first.answer, init.id)?.result?.protocolVersion as string | undefined) ?? version;
    const base: Record<string, string> = { "mcp-protocol-version": version };
    if (sid) base["mcp-session-id"] = sid;
    send = () => {
      const id = rpcId();
      return post(ctx, { jsonrpc: "2.0", id, method: "ping" }, base, { enoughId: id });
    };
  }
  try {
    for (let n = 0; n < RATE_PROBE_MAX; n++) {
      const r = await send();
      if (r.answer.status === 429) return { hit: r, n };
    }
    return { n: RATE_PROBE_MAX };
  } finally {
    await endSession(ctx, sid, version);
  }
}
