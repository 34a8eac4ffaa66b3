/**
 * The connect pages a person sees: plain HTML, no script, no external resources; every value
 * escaped. Served with a strict Content-Security-Policy, `frame-ancestors 'none'` (a connect page
 * is never framed: clickjacking), no caching, and no referrer toward other sites (the links carry
 * a ticket). `same-origin`, not `no-referrer`: under `no-referrer` a browser sends `Origin: null`
 * with the page's form posts (Fetch, "serializing a request origin"), and the edge's own-origin
 * check on those posts would refuse every real browser. No `form-action`: browsers apply it to
 * the redirects that follow a form post too, and the pages' posts are answered with redirects to
 * another origin (the provider, the client's redirect URI); every value on the pages is escaped,
 * so there is no injected form for it to stop.
 */
import type { ServerResponse } from "node:http";

export const escapeHtml = (s: string): string =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] as string,
  );

export const PAGE_HEADERS = {
  "content-type": "text/html; charset=utf-8",
  "cache-control": "no-store",
  "referrer-policy": "same-origin",
  "x-frame-options": "DENY",
  "x-content-type-options": "nosniff",
  "content-security-policy":
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
} as const;

const STYLE = `body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1b1f24}
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.4rem;border-bottom:1px solid #ddd}
button{font:inherit;padding:.35rem .9rem;cursor:pointer}.muted{color:#57606a}.warn{color:#9a6700}.err{color:#cf222e}`;

/** Writes a page. `body` is HTML already escaped by the caller. */
export function sendPage(
  res: ServerResponse,
  status: number,
  title: string,
  body: string,
  headers: Record<string, string | string[]> = {},
): void {
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>${escapeHtml(title)}</title><style>${STYLE}</style></head><body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
  res.writeHead(status, { ...PAGE_HEADERS, ...headers, "content-length": Buffer.byteLength(html) });
  res.end(html);
}

export interface ConnectionRow {
  name: string;
  displayName: string;
  connected: boolean;
  since?: number;
  scope?: string | null;
}

/** The self-service page: the user's connections, with connect and disconnect. */
export function listPage(who: string, ticket: string, rows: readonly ConnectionRow[]): string {
  const t = escapeHtml(ticket);
  const lines = rows
    .map((r) => {
      const name = escapeHtml(r.displayName);
      const action = r.connected
        ? `<form method="post" action="/connect/${escapeHtml(r.name)}/disconnect"><input type="hidden" name="ticket" value="${t}"><button type="submit">Disconnect</button></form>`
        : `<a href="/connect/${escapeHtml(r.name)}?ticket=${encodeURIComponent(ticket)}">Connect</a>`;
      const state = r.connected
        ? `connected${r.since ? ` since ${escapeHtml(new Date(r.since).toISOString().slice(0, 16).replace("T", " "))} UTC` : ""}${r.scope ? ` <span class="muted">(${escapeHtml(r.scope)})</span>` : ""}`
        : `<span class="muted">not connected</span>`;
      return `<tr><td>${name}</td><td>${state}</td><td>${action}</td></tr>`;
    })
    .join("");
  return `<p>Accounts the MCP servers behind this gateway use on your behalf, for <b>${escapeHtml(who)}</b>.</p><table><tr><th>Service</th><th>Status</th><th></th></tr>${lines}</table>`;
}

/** The confirmation before leaving for the provider (a link alone never connects anything). */
export function confirmPage(
  connection: string,
  displayName: string,
  who: string,
  ticket: string,
  host: string,
): string {
  return `<p>Connect your <b>${escapeHtml(displayName)}</b> account for <b>${escapeHtml(who)}</b>. The MCP servers behind this gateway will then act on ${escapeHtml(displayName)} as you.</p>
<p class="warn">Continue only if you started this from your own MCP client just now.</p>
<form method="post" action="/connect/${escapeHtml(connection)}/start"><input type="hidden" name="ticket" value="${escapeHtml(ticket)}"><button type="submit">Continue to ${escapeHtml(host)}</button></form>`;
}
