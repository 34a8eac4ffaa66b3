/**
 * Store interfaces. Each has a memory and an SQLite implementation (embedded mode); every
 * implementation passes the same contract suite in test/contract/.
 */

/** Where a session lives upstream. */
export interface UpstreamBinding {
  /** The instance that holds the session's state: an upstream URL, or `stdio` / `sse`. */
  instance: string;
  /** The upstream's own session id (`Mcp-Session-Id` it minted), or null when it has none. */
  sessionId: string | null;
}

export interface SessionRecord {
  /** The edge-minted id the client sends as `Mcp-Session-Id`. */
  id: string;
  /** The configured server (route) the session belongs to. */
  server: string;
  /** Who owns the session: every request must come from this principal (never a token). */
  principal: string;
  tenant: string | null;
  /** `streamable` for Streamable HTTP clients, `legacy-sse` for 2024-11-05 HTTP+SSE clients. */
  transport: "streamable" | "legacy-sse";
  /** Protocol version negotiated at initialize. */
  protocolVersion: string;
  /** The client's initialize params, replayed when the session moves to another upstream instance. */
  initParams: Record<string, unknown>;
  upstream: UpstreamBinding;
  createdAt: number;
  lastSeenAt: number;
}

export interface SessionStore {
  get(id: string): Promise<SessionRecord | undefined>;
  /** Inserts or replaces the whole record. */
  put(record: SessionRecord): Promise<void>;
  /** Replaces the upstream binding (and the negotiated version) after a re-initialize. */
  rebind(id: string, upstream: UpstreamBinding, protocolVersion: string): Promise<void>;
  /** Records activity. Implementations may batch; `flush` persists everything pending. */
  touch(id: string, at: number): void;
  delete(id: string): Promise<boolean>;
  /** Sessions whose lastSeenAt is older than the cutoff (for the idle reaper). */
  listIdle(server: string, cutoff: number, limit: number): Promise<SessionRecord[]>;
  /** Sessions, newest first, optionally of one server or tenant (admin views). */
  list(filter: { server?: string; tenant?: string }, limit: number): Promise<SessionRecord[]>;
  /** Count of sessions per upstream instance, for least-loaded placement. */
  countByInstance(server: string): Promise<Map<string, number>>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** An API key as stored: never the secret, only its SHA-256 (keys are 256-bit random: no KDF needed). */
export interface ApiKeyRecord {
  /** Public key id, also inside the key string (`mcpe_<id>_<secret>`). */
  id: string;
  name: string;
  server: string;
  tenant: string;
  /** The subject that survives rotation: sessions belong to (server, tenant, consumer). */
  consumer: string;
  /** SHA-256 of the whole key string, hex. */
  hash: string;
  scopes: string[];
  /** Tools this key may call; null = every tool. */
  tools: string[] | null;
  createdAt: number;
  expiresAt: number | null;
  /** When the key stops working (revocation now, or scheduled at the end of a grace period). */
  revokedAt: number | null;
  lastUsedAt: number | null;
  /** The key that replaced this one in a rotation. */
  rotatedTo: string | null;
}

export interface ApiKeyFilter {
  server?: string;
  tenant?: string;
}

export interface ApiKeyStore {
  insert(record: ApiKeyRecord): Promise<void>;
  get(id: string): Promise<ApiKeyRecord | undefined>;
  /** Keys of that name, newest first. */
  byName(server: string, tenant: string, name: string): Promise<ApiKeyRecord[]>;
  list(filter: ApiKeyFilter): Promise<ApiKeyRecord[]>;
  /** Sets fields that change after creation. */
  update(
    id: string,
    patch: Partial<Pick<ApiKeyRecord, "expiresAt" | "revokedAt" | "rotatedTo">>,
  ): Promise<void>;
  /** Records a use; batched (no write per request). `flush` persists pending uses. */
  touch(id: string, at: number): void;
  flush(): Promise<void>;
  close(): Promise<void>;
}
