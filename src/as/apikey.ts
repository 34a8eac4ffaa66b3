/**
 * API-key sign-in: on a page of the edge a person pastes an mcp-edge API key. The grant then
 * belongs to that key's consumer, in the key's tenant, bounded by its scopes, its tool allow-list
 * and its server's route — so OAuth-only clients work on an edge that has nothing but API keys.
 * A key revoked or expired later stops the grant at its next refresh (`recheck`).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { ApiKeyChecker, isUsable } from "../auth/apikey.ts";
import { escapeHtml } from "../vault/pages.ts";
import type { ApiKeyStore } from "../store/types.ts";
import {
  type InteractionView,
  type LoginEnv,
  type LoginFinish,
  type LoginMethod,
  type LoginResult,
  LoginRevoked,
} from "./login.ts";

export class ApiKeyLogin implements LoginMethod {
  readonly name = "apiKey";
  readonly label = "Sign in with an API key";
  readonly #keys: ApiKeyStore;
  readonly #checker = new ApiKeyChecker();
  /** The resource URL (publicUrl + route) of a server name. */
  readonly #resourceOf: (server: string) => string | undefined;

  constructor(keys: ApiKeyStore, resourceOf: (server: string) => string | undefined) {
    this.#keys = keys;
    this.#resourceOf = resourceOf;
  }

  #form(i: InteractionView, csrf: string, error?: string): string {
    const who = i.clientName ?? i.clientId;
    return `<p><b>${escapeHtml(who)}</b> asks to use the MCP servers behind this gateway. Sign in with an mcp-edge API key: the app then acts with that key's access, no more.</p>
${error ? `<p class="err">${escapeHtml(error)}</p>` : ""}
<form method="post" action="/as/login/apiKey/callback"><input type="hidden" name="uid" value="${escapeHtml(i.uid)}"><input type="hidden" name="csrf" value="${escapeHtml(csrf)}">
<p><label>API key<br><input type="password" name="key" autocomplete="off" required style="width:100%;font:inherit"></label></p>
<button type="submit">Sign in</button></form>`;
  }

  async start(i: InteractionView, req: IncomingMessage, res: ServerResponse, env: LoginEnv): Promise<void> {
    env.page(res, 200, "Sign in", this.#form(i, env.csrfToken(req, res, i.uid)));
  }

  async finish(
    req: IncomingMessage,
    res: ServerResponse,
    _query: URLSearchParams,
    env: LoginEnv,
  ): Promise<LoginFinish | undefined> {
    if (req.method !== "POST") {
      req.resume();
      env.page(res, 405, "Sign in", "<p>Use the sign-in form.</p>");
      return undefined;
    }
    const form = await env.readForm(req);
    const uid = form.get("uid") ?? "";
    const i = await env.interaction(uid);
    if (!i) {
      env.page(
        res,
        400,
        "Sign-in expired",
        "<p>This sign-in is unknown or has expired. Start again from your app.</p>",
      );
      return undefined;
    }
    if (!env.checkCsrf(req, uid, form.get("csrf") ?? undefined)) {
      env.page(
        res,
        403,
        "Sign-in refused",
        "<p>The form did not come from this page. Start again from your app.</p>",
      );
      return undefined;
    }
    const key = (form.get("key") ?? "").trim();
    let principal;
    try {
      principal = await this.#checker.check(this.#keys, key, undefined);
    } catch {
      env.page(
        res,
        401,
        "Sign in",
        this.#form(i, env.csrfToken(req, res, uid), "That API key is not valid."),
      );
      return undefined;
    }
    const rec = principal.keyId ? await this.#keys.get(principal.keyId) : undefined;
    const resource = rec && this.#resourceOf(rec.server);
    const result: LoginResult = {
      method: this.name,
      tenant: principal.tenant,
      subject: principal.subject,
      consumer: principal.subject,
      ...(principal.keyId ? { keyId: principal.keyId } : {}),
      ...(principal.scopes.length > 0 ? { scopes: principal.scopes } : {}),
      ...(principal.tools ? { tools: principal.tools } : {}),
      resources: resource ? [resource] : [],
      display: `${principal.subject} (API key ${rec?.name ?? principal.keyId ?? ""})`,
    };
    return { uid, result };
  }

  async recheck(login: LoginResult): Promise<{ upstreamRefresh?: string }> {
    const rec = login.keyId ? await this.#keys.get(login.keyId) : undefined;
    if (!rec || !isUsable(rec, Date.now()))
      throw new LoginRevoked("the API key this grant was signed in with is no longer valid");
    return {};
  }
}
