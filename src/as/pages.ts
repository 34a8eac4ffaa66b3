/**
 * The authorization server's pages: consent and errors. Plain HTML, no script, every value
 * escaped; sent with the connect pages' headers (strict CSP, `frame-ancestors 'none'`, no store).
 */
import { escapeHtml } from "../vault/pages.ts";

const BUILT_IN: Record<string, string> = {
  "mcp:tools": "Use the tools of the MCP servers behind this gateway",
  "mcp:resources": "Read resources of the MCP servers behind this gateway",
  "mcp:prompts": "Use prompts of the MCP servers behind this gateway",
  openid: "Know who you are",
  offline_access: "Stay connected when you are away",
};

/** A scope in plain words: the configured description, a built-in one, or the scope itself. */
export function describeScope(scope: string, configured: Readonly<Record<string, string>>): string {
  return configured[scope] ?? BUILT_IN[scope] ?? `Access "${scope}"`;
}

export interface ConsentView {
  uid: string;
  csrf: string;
  clientName: string;
  /** CIMD: the host of the client_id URL (the document came from there). Undefined: unverified. */
  verifiedDomain: string | undefined;
  redirectHost: string;
  /** Every redirect URI is on loopback: the app runs on the person's computer. */
  loopbackOnly: boolean;
  who: string;
  /** Scopes asked for now (step-up: only those not granted before). */
  scopes: { name: string; text: string }[];
  /** What this app already has. */
  already: string[];
}

export function consentPage(v: ConsentView): string {
  const verified = v.verifiedDomain
    ? `<p>Published by <b>${escapeHtml(v.verifiedDomain)}</b> (verified: its details come from that domain).</p>`
    : `<p class="warn">This app registered itself: its name is <b>unverified</b>.</p>`;
  const loopback = v.loopbackOnly
    ? `<p class="warn">This app runs on your computer (it returns to ${escapeHtml(v.redirectHost)}). Allow it only if you started it yourself just now.</p>`
    : `<p>After you decide, you go back to <b>${escapeHtml(v.redirectHost)}</b>.</p>`;
  const scopes = v.scopes
    .map((s) => `<li>${escapeHtml(s.text)} <span class="muted">(${escapeHtml(s.name)})</span></li>`)
    .join("");
  const already = v.already.length
    ? `<p class="muted">Already allowed: ${v.already.map(escapeHtml).join("; ")}.</p>`
    : "";
  return `<p><b>${escapeHtml(v.clientName)}</b> wants to act as <b>${escapeHtml(v.who)}</b>.</p>
${verified}${loopback}
<p>It asks to:</p><ul>${scopes}</ul>${already}
<form method="post" action="/as/interaction/${escapeHtml(v.uid)}/decide"><input type="hidden" name="csrf" value="${escapeHtml(v.csrf)}">
<button type="submit" name="decision" value="allow">Allow</button> <button type="submit" name="decision" value="deny">Deny</button></form>
<p class="muted">You can see and revoke the apps you allowed on <a href="/as/grants">your grants page</a>.</p>`;
}

/** An error the AS cannot send back to the client (no valid redirect URI yet): shown here. */
export function errorPage(error: string, description: string | undefined): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign-in error</title></head><body><h1>Sign-in error</h1><p><b>${escapeHtml(error)}</b></p>${description ? `<p>${escapeHtml(description)}</p>` : ""}<p>Go back to your app and try again.</p></body></html>`;
}

export interface GrantRow {
  id: string;
  clientName: string;
  /** CIMD: the host the client's document came from; "operator" for a pre-registered client. */
  verifiedDomain: string | undefined;
  preRegistered: boolean;
  scopes: string[];
  created: number | null;
  lastUsed: number | null;
}

const when = (ms: number | null): string => (ms === null ? "never" : new Date(ms).toISOString());

/** The self-service grants page: the signed-in person's grants, one revoke form each. */
export function grantsPage(who: string, csrf: string, rows: readonly GrantRow[]): string {
  const list = rows
    .map((g) => {
      const origin = g.verifiedDomain
        ? `verified: <b>${escapeHtml(g.verifiedDomain)}</b>`
        : g.preRegistered
          ? "registered by this gateway's operator"
          : `<span class="warn">unverified</span>`;
      const scopes = g.scopes.map((s) => `<li>${escapeHtml(s)}</li>`).join("");
      return `<li class="grant"><p><b>${escapeHtml(g.clientName)}</b> (${origin})</p><ul>${scopes}</ul>
<p class="muted">Allowed ${escapeHtml(when(g.created))}; last token issued ${escapeHtml(when(g.lastUsed))}.</p>
<form method="post" action="/as/grants/revoke"><input type="hidden" name="csrf" value="${escapeHtml(csrf)}"><input type="hidden" name="grant" value="${escapeHtml(g.id)}"><button type="submit">Revoke</button></form></li>`;
    })
    .join("");
  return `<p>Apps you allowed to act as <b>${escapeHtml(who)}</b>. Revoking one signs it out at once: its tokens stop working.</p>
${rows.length ? `<ul>${list}</ul>` : "<p>No app holds access for you.</p>"}`;
}
