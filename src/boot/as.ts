import { ApiKeyLogin } from "../as/apikey.ts";
import { ConnectChain } from "../as/chain.ts";
import { federationFromConfig } from "../as/federation.ts";
import type { LoginMethod } from "../as/login.ts";
import { AuthorizationServer } from "../as/server.ts";
import type { Config } from "../config/schema.ts";
import type { Egress } from "../egress/index.ts";
import type { Logger } from "../observability/logger.ts";
import { PostgresAsStore } from "../store/postgres/as.ts";
import { SqliteAsStore } from "../store/sqlite/as.ts";
import type { ConnectPages } from "../vault/http.ts";
import type { Vault } from "../vault/vault.ts";
import type { Stores } from "./stores.ts";

/**
 * The login methods of the authorization server, in the order its chooser page lists them.
 * API-key sign-in needs nothing but the key store; then the federated IdPs (`login.idp`, `login.idps`).
 */
export function loginMethods(
  config: Config,
  deps: { stores: Stores; egress: Egress; log: Logger },
): LoginMethod[] {
  const as = config.auth.authorizationServer;
  const publicUrl = (config.publicUrl ?? "").replace(/\/$/, "");
  const methods: LoginMethod[] = [];
  if (as.login.apiKey) {
    methods.push(
      new ApiKeyLogin(deps.stores.keys, (server) => {
        const s = config.servers[server];
        return s && s.auth.includes("oauth") ? `${publicUrl}${s.route}` : undefined;
      }),
    );
  }
  methods.push(...(federationFromConfig(config, deps)?.methods() ?? []));
  return methods;
}

/** Registrations per client address in fixed windows (DCR rate limit, `registration.dcr.rate`). */
function registrationLimiter(quota: number, windowSec: number): (address: string) => boolean {
  let windowStart = 0;
  let counts = new Map<string, number>();
  return (address) => {
    const now = Date.now();
    if (now - windowStart >= windowSec * 1000) {
      windowStart = now;
      counts = new Map();
    }
    const n = (counts.get(address) ?? 0) + 1;
    counts.set(address, n);
    return n <= quota;
  };
}

/**
 * The edge's authorization server, when `auth.authorizationServer.enabled`: its records in the
 * instance's SQLite file, or in PostgreSQL shared by every instance (distributed mode), where
 * revocations also go out on the broadcast bus.
 */
export async function createAuthorizationServer(
  config: Config,
  deps: {
    stores: Stores;
    egress: Egress;
    log: Logger;
    /** The token vault: its connections are chained right after consent. */
    vault?: { vault: Vault; pages: ConnectPages } | undefined;
  },
): Promise<AuthorizationServer | undefined> {
  const as = config.auth.authorizationServer;
  if (!as.enabled || !config.publicUrl) return undefined;
  const shared = deps.stores.shared;
  const store = shared ? new PostgresAsStore(shared.pg) : new SqliteAsStore(deps.stores.db);
  const rate = as.registration.dcr.rate;
  const server = await AuthorizationServer.create({
    config,
    store,
    egress: deps.egress,
    log: deps.log.child({ component: "as" }),
    methods: loginMethods(config, deps),
    mayRegister: registrationLimiter(rate.quota, rate.windowSec),
    ...(deps.vault ? { chain: new ConnectChain(config, deps.vault.vault, deps.vault.pages) } : {}),
    ...(shared ? { announce: (id: string) => shared.bus.publish({ k: "revoked", id }) } : {}),
  });
  // Expired records (codes, interactions, unused clients, old rotations) go hourly.
  const sweep = setInterval(() => void store.sweep(Date.now()).catch(() => undefined), 3_600_000);
  sweep.unref();
  const close = server.close.bind(server);
  server.close = () => {
    clearInterval(sweep);
    close();
  };
  return server;
}
