import { resolveConnection } from "../config/connections.ts";
import type { Config } from "../config/schema.ts";
import type { Egress } from "../egress/index.ts";
import type { Logger } from "../observability/logger.ts";
import type { Distributed } from "../store/distributed.ts";
import { RedisLock } from "../store/redis/lock.ts";
import type { ConnectionStore } from "../store/types.ts";
import { ConnectPages } from "../vault/http.ts";
import { ProviderClient } from "../vault/provider.ts";
import { KeyRing } from "../vault/seal.ts";
import { Vault } from "../vault/vault.ts";

/**
 * The token vault and its connect pages, when the config names connections (the schema requires
 * `vault.key` and `publicUrl` then). Distributed mode: refreshes serialized across instances by
 * a Redis lock; the records are in PostgreSQL either way shared by every instance.
 */
export function createVault(
  config: Config,
  deps: { store: ConnectionStore; egress: Egress; shared: Distributed | undefined; log: Logger },
): { vault: Vault; pages: ConnectPages } | undefined {
  const names = Object.keys(config.connections);
  if (names.length === 0 || !config.vault || !config.publicUrl) return undefined;
  const publicUrl = config.publicUrl.replace(/\/$/, "");
  const log = deps.log.child({ component: "vault" });
  const vault = new Vault({
    store: deps.store,
    ring: new KeyRing(config.vault.key, config.vault.previousKeys),
    providers: new Map(
      Object.entries(config.connections).map(([n, c]) => [
        n,
        new ProviderClient(resolveConnection(n, c), deps.egress),
      ]),
    ),
    publicUrl,
    ticketTtlMs: config.vault.connectTicketTtl,
    lock: deps.shared ? new RedisLock(deps.shared.redis, deps.shared.prefix) : undefined,
    log,
  });
  return { vault, pages: new ConnectPages(vault, publicUrl, log) };
}
