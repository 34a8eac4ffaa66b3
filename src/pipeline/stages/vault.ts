import type { Parsed } from "../../context.ts";
import { GatewayError } from "../../errors/errors.ts";
import { isRequest } from "../../mcp/jsonrpc.ts";
import type { Vault } from "../../vault/vault.ts";
import type { Stage } from "../compose.ts";

const FILE = "src/pipeline/stages/vault.ts";

/** Methods that act on the third-party account: without the user's token they cannot run. */
const NEEDS_ACCOUNT = new Set(["tools/call", "resources/read", "prompts/get"]);

/**
 * The user's own upstream token (servers with `credentials.connection`): read from the vault,
 * refreshed when due, and handed to the forward stage, which sends it instead of any configured
 * credential. A call that acts on the account (`tools/call`, `resources/read`, `prompts/get`) before
 * the user connected is answered with the URL elicitation error (-32042) carrying the connect link;
 * other requests go up with the token when there is one and without it otherwise (initialize and
 * lists work before connecting). After every check that does not need the upstream: a refused or
 * limited call never makes the vault refresh.
 */
export function connection(vault: Vault | undefined): Stage<Parsed> {
  return {
    name: "connection",
    does: "On a server with `credentials.connection`: the user's own token from the vault (refreshed when due) goes upstream; a call that needs the account before the user connected gets the connect URL (-32042).",
    codes: ["EDGE_CONNECTION_REQUIRED", "EDGE_CONNECTION_UNAVAILABLE"],
    file: FILE,
    run: vault
      ? async (ctx) => {
          const name = ctx.route.config.credentials?.connection;
          if (name === undefined || ctx.req.method !== "POST") return;
          const requests = ctx.messages.filter(isRequest);
          if (requests.length === 0) return;
          const needed = requests.some((m) => NEEDS_ACCOUNT.has(m.method));
          try {
            ctx.credentials = await vault.forCall(ctx.principal, name, ctx.route.name, ctx.requestId, needed);
          } catch (err) {
            if (needed) throw err;
            // Not connected yet, or the provider is down: this request does not need the account.
            if (!(err instanceof GatewayError)) throw err;
          }
        }
      : undefined,
  };
}
