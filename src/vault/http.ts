/**
 * The connect endpoints on the public listener (the user's browser, never the MCP client):
 *
 *   GET  /connect?ticket=T                 the user's connections: connect / disconnect
 *   GET  /connect/{name}?ticket=T          confirmation page (a link alone never connects anything)
 *   POST /connect/{name}/start             → 303 to the provider (PKCE S256, sealed `state`, browser-bound cookie)
 *   GET  /connect/{name}/callback          the provider's redirect: code exchanged, tokens sealed and stored
 *   POST /connect/{name}/disconnect        the record deleted, its tokens revoked at the provider (RFC 7009)
 *
 * Chained at OAuth login (`chain`), the authorization server sends a browser that just consented
 * straight to the provider, and the callback sends it back to the authorization server.
 *
 * The ticket (signed, short-lived, from the URL elicitation of a call) names the user. The OAuth
 * `state` is sealed (it carries the PKCE verifier) and bound to this browser by a cookie, so a
 * callback from another browser — a login CSRF that would plant someone else's account in the
 * user's vault — is refused (RFC 6749 §10.12, RFC 9700 §4.7). POSTs must come from the edge's own
 * origin (Origin header) and carry the ticket.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { ERROR_CODES } from "../errors/codes.ts";
import type { Principal } from "../auth/types.ts";
import type { Logger } from "../observability/logger.ts";
import { confirmPage, escapeHtml, listPage, sendPage } from "./pages.ts";
import { isProviderError, pkcePair } from "./provider.ts";
import type { Ticket, Vault } from "./vault.ts";

/** How long a started connect may take at the provider. */
const FLOW_TTL_MS = 10 * 60_000;
const MAX_FORM_BYTES = 8192;

interface FlowState {
  /** the ticket payload */
  k: Ticket;
  /** connection */
  c: string;
  /** PKCE verifier */
  v: string;
  /** browser binding nonce (also in the cookie) */
  n: string;
  /** expiry */
  e: number;
  /** chained at OAuth login: the edge path the browser goes back to once connected (or not) */
  r?: string;
}

export class ConnectPages {
  readonly #vault: Vault;
  readonly #origin: string;
  readonly #secure: boolean;
  readonly #log: Logger;

  constructor(vault: Vault, publicUrl: string, log: Logger) {
    this.#vault = vault;
    const u = new URL(publicUrl);
    this.#origin = u.origin;
    this.#secure = u.protocol === "https:";
    this.#log = log;
  }

  /** Answers a `/connect` path; false when the path is not one of these. */
  handle(req: IncomingMessage, res: ServerResponse, path: string, query: URLSearchParams): boolean {
    if (path !== "/connect" && !path.startsWith("/connect/")) return false;
    void this.#serve(req, res, path, query).catch((err: unknown) => {
      this.#log.error({ err }, "connect page failed");
      if (!res.headersSent) this.#fail(res, 500, "Something went wrong", "Try again from your MCP client.");
      else res.destroy();
    });
    return true;
  }

  async #serve(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    query: URLSearchParams,
  ): Promise<void> {
    const parts = path.split("/").slice(2); // ["", "connect", ...]
    const method = req.method ?? "GET";
    if (parts.length === 0)
      return this.#only(req, res, method, "GET", () => this.#list(res, query.get("ticket")));
    const name = decodeURIComponent(parts[0] as string);
    const provider = this.#vault.provider(name);
    if (!provider || parts.length > 2) {
      req.resume();
      return this.#fail(res, 404, "Unknown connection", "This gateway has no connection of that name.");
    }
    const action = parts[1];
    if (action === undefined)
      return this.#only(req, res, method, "GET", () => {
        const ticket = this.#vault.readTicket(query.get("ticket"));
        if (!ticket) return this.#badLink(res);
        const host = new URL(
          provider.connection.authorizationUrl ?? provider.connection.issuer ?? "https://provider",
        ).host;
        sendPage(
          res,
          200,
          `Connect ${provider.connection.displayName}`,
          confirmPage(
            name,
            provider.connection.displayName,
            who(ticket),
            query.get("ticket") as string,
            host,
          ),
        );
      });
    if (action === "callback")
      return this.#only(req, res, method, "GET", () => this.#callback(req, res, name, query));
    if (action === "start" || action === "disconnect") {
      if (method !== "POST") {
        req.resume();
        return this.#fail(res, 405, "Method not allowed", "", { allow: "POST" });
      }
      if (req.headers.origin !== this.#origin) {
        req.resume();
        return this.#fail(res, 403, "Refused", "This form must be sent from this gateway's own page.");
      }
      const form = await readForm(req);
      const ticket = this.#vault.readTicket(form?.get("ticket"));
      if (!ticket) return this.#badLink(res);
      return action === "start"
        ? this.#start(res, name, ticket)
        : this.#disconnect(res, name, ticket, form?.get("ticket") as string);
    }
    req.resume();
    return this.#fail(res, 404, "Not found", "");
  }

  async #only(
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    allowed: "GET",
    then: () => unknown,
  ): Promise<void> {
    req.resume();
    if (method !== allowed && method !== "HEAD")
      return this.#fail(res, 405, "Method not allowed", "", { allow: "GET" });
    await then();
  }

  async #list(res: ServerResponse, ticketText: string | null): Promise<void> {
    const ticket = this.#vault.readTicket(ticketText);
    if (!ticket) return this.#badLink(res);
    const records = await this.#vault.list(ticket.t, ticket.s);
    const rows = [...this.#vault.connections.values()].map((p) => {
      const rec = records.find((r) => r.connection === p.connection.name);
      return {
        name: p.connection.name,
        displayName: p.connection.displayName,
        connected: rec !== undefined,
        ...(rec ? { since: rec.createdAt, scope: rec.scope } : {}),
      };
    });
    sendPage(res, 200, "Your connected accounts", listPage(who(ticket), ticketText as string, rows));
  }

  /**
   * Chained at OAuth login: sends the browser (which just consented on the edge's own page, so no
   * confirmation page) straight to the provider for `principal`'s `connection`; once the provider
   * answers, success or not, the browser goes back to `returnTo`, a path of the edge's
   * authorization server (`/as/…`: never anywhere else).
   */
  async chain(
    res: ServerResponse,
    principal: Principal,
    connection: string,
    returnTo: string,
  ): Promise<void> {
    if (!returnTo.startsWith("/as/"))
      throw new Error("a chained connect returns to the authorization server");
    const ticket = this.#vault.readTicket(
      new URL(this.#vault.connectUrl(principal, connection)).searchParams.get("ticket"),
    ) as Ticket;
    return this.#start(res, connection, ticket, returnTo);
  }

  async #start(res: ServerResponse, name: string, ticket: Ticket, returnTo?: string): Promise<void> {
    const provider = this.#vault.provider(name);
    if (!provider) return this.#fail(res, 404, "Unknown connection", "");
    const { verifier, challenge } = pkcePair();
    const nonce = randomBytes(16).toString("base64url");
    const state = this.#vault.sealState({
      k: ticket,
      c: name,
      v: verifier,
      n: nonce,
      e: Date.now() + FLOW_TTL_MS,
      ...(returnTo === undefined ? {} : { r: returnTo }),
    } satisfies FlowState);
    let location: string;
    try {
      location = await provider.authorizationUrl(state, challenge, this.#vault.callbackUrl(name));
    } catch (err) {
      this.#log.warn(
        { connection: name, err: (err as Error).message },
        "connect: the provider's metadata could not be read",
      );
      return this.#fail(
        res,
        502,
        "The provider cannot be reached",
        "Try again in a moment.",
        {},
        "EDGE_CONNECT_DENIED",
      );
    }
    res.writeHead(303, {
      location,
      "cache-control": "no-store",
      "referrer-policy": "no-referrer",
      "set-cookie": this.#cookie(name, nonce, FLOW_TTL_MS / 1000),
    });
    res.end();
  }

  async #callback(
    req: IncomingMessage,
    res: ServerResponse,
    name: string,
    query: URLSearchParams,
  ): Promise<void> {
    const state = this.#vault.openState(query.get("state") ?? "") as FlowState | undefined;
    const cookie = readCookie(req, this.#cookieName(name));
    const bound =
      state !== undefined &&
      state.c === name &&
      typeof state.n === "string" &&
      cookie !== undefined &&
      cookie.length === state.n.length &&
      timingSafeEqual(Buffer.from(cookie), Buffer.from(state.n));
    if (!bound || typeof state.e !== "number" || state.e < Date.now()) return this.#badLink(res);
    const clear = { "set-cookie": this.#cookie(name, "", 0) };
    const back = typeof state.r === "string" && state.r.startsWith("/as/") ? state.r : undefined;
    const provider = this.#vault.provider(name);
    if (!provider) return this.#fail(res, 404, "Unknown connection", "", clear);
    const error = query.get("error");
    const code = query.get("code");
    if (error !== null || !code) {
      const why =
        error === "access_denied"
          ? "You declined at the provider."
          : `The provider answered: ${error ?? "no code"}.`;
      this.#vault.failed(state.k, name, error ?? "no code");
      if (back) return this.#back(res, back, clear);
      return this.#fail(
        res,
        400,
        `${provider.connection.displayName} was not connected`,
        `${why} Nothing was stored.`,
        clear,
        "EDGE_CONNECT_DENIED",
      );
    }
    let tokens;
    try {
      tokens = await provider.exchange(code, state.v, this.#vault.callbackUrl(name));
    } catch (err) {
      const why = isProviderError(err) ? err.message : "the provider did not answer";
      this.#log.warn({ connection: name, reason: why }, "connect: the code exchange failed");
      this.#vault.failed(state.k, name, why);
      if (back) return this.#back(res, back, clear);
      return this.#fail(
        res,
        502,
        `${provider.connection.displayName} was not connected`,
        "The provider refused the exchange. Nothing was stored; try again from your MCP client.",
        clear,
        "EDGE_CONNECT_DENIED",
      );
    }
    await this.#vault.save(state.k, name, tokens);
    if (back) return this.#back(res, back, clear);
    sendPage(
      res,
      200,
      `${provider.connection.displayName} connected`,
      `<p>Your ${escapeHtml(provider.connection.displayName)} account is connected for <b>${escapeHtml(who(state.k))}</b>. Return to your MCP client and try again.</p>`,
      clear,
    );
  }

  async #disconnect(res: ServerResponse, name: string, ticket: Ticket, ticketText: string): Promise<void> {
    const rec = (await this.#vault.list(ticket.t, ticket.s)).find((r) => r.connection === name);
    if (rec) await this.#vault.disconnect(rec, ticket.p);
    res.writeHead(303, {
      location: `/connect?ticket=${encodeURIComponent(ticketText)}`,
      "cache-control": "no-store",
    });
    res.end();
  }

  #back(res: ServerResponse, path: string, headers: Record<string, string>): void {
    res.writeHead(303, { ...headers, location: `${this.#origin}${path}`, "cache-control": "no-store" });
    res.end();
  }

  #badLink(res: ServerResponse): void {
    this.#fail(
      res,
      400,
      "This link is invalid or has expired",
      "Connect links work for a short time and only in the browser that opened them. Ask your MCP client for a new one by trying the call again.",
      {},
      "EDGE_CONNECT_LINK_INVALID",
    );
  }

  #fail(
    res: ServerResponse,
    status: number,
    title: string,
    text: string,
    headers: Record<string, string | string[]> = {},
    code?: "EDGE_CONNECT_LINK_INVALID" | "EDGE_CONNECT_DENIED",
  ): void {
    const coded = code
      ? `<p class="muted">${code}: ${escapeHtml(ERROR_CODES[code].summary.split(":")[0] as string)}</p>`
      : "";
    sendPage(res, status, title, `<p class="err">${escapeHtml(text)}</p>${coded}`, {
      ...headers,
      ...(code ? { "x-mcp-edge-error": code } : {}),
    });
  }

  #cookieName(connection: string): string {
    return `${this.#secure ? "__Host-" : ""}mcp-edge-connect-${connection}`;
  }

  #cookie(connection: string, value: string, maxAge: number): string {
    return `${this.#cookieName(connection)}=${value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${maxAge}${this.#secure ? "; Secure" : ""}`;
  }
}

function who(t: Ticket): string {
  const name = t.s.slice(t.s.lastIndexOf("|") + 1);
  return t.t ? `${name} (tenant ${t.t})` : name;
}

function readCookie(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams | undefined> {
  const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_FORM_BYTES) return undefined;
    chunks.push(c);
  }
  if (type !== "application/x-www-form-urlencoded") return undefined;
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}
