/**
 * Connections chained at OAuth login: when the edge's authorization server issues a grant for a
 * route whose server acts on a third-party account (`servers.<name>.credentials.connection`), the
 * person is sent through each connection they have not made yet right after consent, and then
 * back to finish the authorization — so the first tool call already works, instead of answering
 * with a connect URL (-32042) the person must open later.
 *
 *   consent ─▶ next(): a missing connection? ─▶ the provider (no confirmation page: the person
 *   just consented on the edge's own page) ─▶ /connect/{name}/callback ─▶ back to `returnTo`
 *   (success or not) ─▶ next() again, skipping what was tried ─▶ … ─▶ none left: finish
 *
 * A connection the person declines or that fails is skipped, not retried: the authorization
 * still completes, and the call that needs it asks again lazily.
 */
import type { ServerResponse } from "node:http";
import { resourceUrl } from "../auth/challenge.ts";
import type { Principal } from "../auth/types.ts";
import type { Config } from "../config/schema.ts";
import type { ConnectPages } from "../vault/http.ts";
import { type Vault, vaultSubject } from "../vault/vault.ts";

export class ConnectChain {
  readonly #byResource = new Map<string, string>();
  readonly #vault: Vault;
  readonly #pages: ConnectPages;

  constructor(config: Config, vault: Vault, pages: ConnectPages) {
    const publicUrl = (config.publicUrl ?? "").replace(/\/$/, "");
    for (const server of Object.values(config.servers)) {
      const connection = server.credentials?.connection;
      if (connection !== undefined) this.#byResource.set(resourceUrl(publicUrl, server.route), connection);
    }
    this.#vault = vault;
    this.#pages = pages;
  }

  /** The connections a grant for `resource` (RFC 8707) needs that `principal` has not made, minus `skip`. */
  async missing(
    resource: string | undefined,
    principal: Principal,
    skip: readonly string[] = [],
  ): Promise<string[]> {
    const needed = resource === undefined ? undefined : this.#byResource.get(resource);
    if (needed === undefined || skip.includes(needed)) return [];
    const have = await this.#vault.list(principal.tenant ?? "", vaultSubject(principal));
    return have.some((r) => r.connection === needed) ? [] : [needed];
  }

  /**
   * Sends the browser to the first missing connection, to come back to `returnTo(tried)` (an
   * `/as/…` path) with `tried` = `skip` plus that connection. False when none is missing: the
   * caller finishes the authorization.
   */
  async next(
    res: ServerResponse,
    resource: string | undefined,
    principal: Principal,
    skip: readonly string[],
    returnTo: (tried: readonly string[]) => string,
  ): Promise<boolean> {
    const [first] = await this.missing(resource, principal, skip);
    if (first === undefined) return false;
    await this.#pages.chain(res, principal, first, returnTo([...skip, first]));
    return true;
  }
}
