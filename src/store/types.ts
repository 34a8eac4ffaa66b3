/**
 * Every store interface of the edge, one family per section: sessions, API keys, rate-limit
 * counters, audit, identity-signing keys, the stream event log, the upstream token vault.
 * Implementations live under src/store/<backend>/ (memory, sqlite, postgres, redis), one file per
 * family; each passes its family's contract suite (test/contract/<family>.contract.ts).
 *
 * This file imports nothing but types of the records the stores hold: the domain folders (session,
 * ratelimit, audit, auth, upstream) depend on it, never the other way round.
 */
import type { AuditRecord, FinalRecord } from "../audit/record.ts";

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
  /**
   * The servers the key is valid for, of its tenant: one server name, several joined by `,`
   * (sorted: `github,jira`), or `*` for every server. Server names hold none of `,` and `*`.
   */
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

/** Whether a key's `server` (one name, `a,b`, or `*`) covers the server `name`. */
export function keyServes(scope: string, name: string): boolean {
  return scope === name || scope === "*" || `,${scope},`.includes(`,${name},`);
}

export interface ApiKeyFilter {
  /** Keys valid for this server (single-server keys of it, lists that name it, and `*` keys). */
  server?: string;
  tenant?: string;
}

export interface ApiKeyStore {
  insert(record: ApiKeyRecord): Promise<void>;
  get(id: string): Promise<ApiKeyRecord | undefined>;
  /** Keys of that name with exactly that `server` value (a name, a list or `*`), newest first. */
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

// ---- rate-limit counters

/** What a counter counts: `quota` points per fixed window, or (windowSec 0) points held until given back. */
export interface CounterSpec {
  readonly quota: number;
  /** Window in whole seconds; 0 = no window: an in-flight count, given back with `give`. */
  readonly windowSec: number;
}

/** A counter made by a store (opaque to callers). */
export interface Counter {
  readonly spec: CounterSpec;
}

/** One part of a decision: `points` from `counter` under `key`. */
export interface Take {
  counter: Counter;
  key: string;
  points: number;
}

/** Why a take was refused: which part, and when that counter has room again. */
export interface Refusal {
  /** Index into the takes. */
  readonly index: number;
  /** Milliseconds until the refusing counter's window ends; -1 when it has no window. */
  readonly msBeforeNext: number;
}

export interface CounterStore {
  /**
   * A counter for a policy. Called at boot, once per policy. `name` (the policy: `key`,
   * `tool.search`...) identifies it in a shared store, the same on every instance.
   */
  counter(spec: CounterSpec, name?: string): Counter;
  /**
   * Takes every part, or none: when one counter has no room, nothing is taken from any (a call
   * refused by one limit consumes nothing from the others). Resolves undefined when admitted.
   */
  take(takes: readonly Take[]): Promise<Refusal | undefined>;
  /** Gives points back to an in-flight counter (windowSec 0). */
  give(counter: Counter, key: string, points: number): void;
  /**
   * `take`, decided at once, for a store that counts in this process: the stage then neither
   * allocates nor awaits a promise for an admitted call. Absent on stores that need I/O.
   */
  takeNow?(takes: readonly Take[]): Refusal | undefined;
}

// ---- audit

/** The head of every chain: its last seq and hash. */
export type Heads = Map<string, { seq: number; hash: string }>;

/** A record ready to store: the record, and the exact text its hash covers. */
export interface ChainedRecord {
  record: AuditRecord;
  text: string;
}

/** A stored row as verification reads it. */
export interface StoredRow {
  chain: string;
  seq: number;
  hash: string;
  text: string;
  /** The indexed copies of record fields (filters use them; verification checks them). */
  columns: { ts: number; type: string; tenant: string | null; subject: string | null; target: string | null };
}

/** An audit row as both SQL stores read it (the record's text plus its indexed columns). */
export interface AuditRow {
  id: number;
  chain: string;
  seq: number;
  ts: number;
  type: string;
  tenant: string | null;
  subject: string | null;
  target: string | null;
  record: string;
  hash: string;
}

export interface AuditFilter {
  tenant?: string;
  subject?: string;
  /** Matches `target`: tool name, resource URI or prompt name. */
  tool?: string;
  type?: string;
  /** Inclusive lower bound, ms since epoch. */
  since?: number;
  /** Exclusive upper bound, ms since epoch. */
  until?: number;
}

export interface AuditPageRequest {
  limit: number;
  /** Opaque, from a previous page's `next`. */
  cursor?: string;
  /** `asc` (oldest first, default) or `desc` (newest first). */
  order?: "asc" | "desc";
}

export interface AuditPage {
  records: AuditRecord[];
  /**
   * Where the next page starts. Ascending, it is always set: a follower (`audit tail`) polls with it
   * and gets the records written since. Descending, null once the oldest record was reached.
   */
  next: string | null;
  /** More matching records exist beyond this page right now. */
  more: boolean;
}

export interface AppendChainedOptions {
  /**
   * One write key per record, unique across writers and stored with it. With `retry`, a record
   * whose key is already stored is not stored again.
   */
  keys?: readonly string[];
  /**
   * The batch may have been stored already: an earlier call failed without saying whether it
   * committed (a connection lost at COMMIT), or it comes from the spool. Records whose key is
   * stored are returned as stored, the others are chained and stored: a retry stores each once.
   */
  retry?: boolean;
}

/**
 * A write-ahead entry (src/audit/log.ts `open`): a call about to be forwarded, stored before it
 * is, so that an instance that dies before the answer still leaves a record of the call.
 */
export interface OpenCall {
  /** `openKey(record)`: the record of the call carries the same fields, and storing it removes this. */
  key: string;
  /** The AuditLog that opened it (its process): entries of writers gone are recovered. */
  instance: string;
  /** Epoch ms. */
  at: number;
  /** The call's record as finalized when it was opened (JSON), outcome not known yet. */
  record: string;
}

/** The key of a call's write-ahead entry: its request id and JSON-RPC id, as its records hold them. */
export function openKey(r: { requestId: string | null; rpcId: string | null }): string | undefined {
  return r.requestId !== null && r.rpcId !== null ? `${r.requestId} ${r.rpcId}` : undefined;
}

export interface AuditStore {
  /**
   * Stores write-ahead entries, durably, before their calls are forwarded (an entry already
   * stored is kept). Storing a `call` record removes the entry of the same `openKey` in the same
   * transaction, so a call has its entry or its record, never both. Throws when unavailable.
   */
  openCalls(entries: readonly OpenCall[]): Promise<void>;
  /**
   * Entries whose writer is gone, for `instance` to recover: of every other writer when only one
   * process writes the store (SQLite: what is left is from before a restart); of writers not seen
   * for `staleMs` (`seen`) when several do (PostgreSQL). At most `limit`.
   */
  orphanCalls(instance: string, staleMs: number, limit: number): Promise<OpenCall[]>;
  /**
   * Moves the entries of one request (`requestId`: every call of its body) to `instance` and
   * returns them: the instance that took its stream over completes them (several writers).
   */
  adoptCalls(requestId: string, instance: string): Promise<OpenCall[]>;
  /** A writer's heartbeat (several writers): it is alive, its entries are not orphans. */
  seen(instance: string): Promise<void>;
  /** The instance stops cleanly: its heartbeat goes (its entries were completed). */
  gone(instance: string): Promise<void>;

  /**
   * Appends records atomically (all or none), in the given order. A record whose (chain, seq) is
   * already stored is skipped (spool replay after a crash is idempotent). Throws when unavailable.
   */
  append(records: readonly ChainedRecord[]): Promise<void>;
  /**
   * Store-side chaining, for stores that several processes write to (PostgreSQL): chains finalized
   * records after the committed head of their tenant's chain and stores them, all or none, in the
   * given order; returns them as stored. When a store has it, AuditLog uses it instead of chaining
   * in memory (whose heads would be wrong as soon as another process appends). Throws when
   * unavailable.
   */
  appendChained?(records: readonly FinalRecord[], options?: AppendChainedOptions): Promise<ChainedRecord[]>;
  /** The last record of every chain. */
  heads(): Promise<Map<string, { seq: number; hash: string }>>;
  query(filter: AuditFilter, page: AuditPageRequest): Promise<AuditPage>;
  chains(): Promise<string[]>;
  /** Rows of one chain with seq > afterSeq, by seq, at most `limit` (verification). */
  scan(chain: string, afterSeq: number, limit: number): Promise<StoredRow[]>;
  close(): Promise<void>;
}

// ---- identity-signing keys

/** One identity-signing key as stored: JWKs as JSON text, creation time in ms. */
export interface IdentityKey {
  kid: string;
  privateJwk: string;
  publicJwk: string;
  createdAt: number;
}

/**
 * Where the identity-signing keys live: the embedded SQLite file (one instance), or PostgreSQL
 * (src/store/postgres/identity-keys.ts), shared by every instance so that all of them sign with the same
 * key and publish the same JWKS, whichever one the upstream fetches it from.
 */
export interface IdentityKeyStore {
  /** Other instances use the same keys: the signer reads them again periodically. */
  readonly shared: boolean;
  /** Every key, newest first. */
  list(): Promise<IdentityKey[]>;
  /**
   * Stores `key` unless a key created after `since` exists (another instance rotated first), and
   * says whether it did. Serialized across instances: two that find rotation due at once store one
   * key between them.
   */
  insertIfDue(key: IdentityKey, since: number): Promise<boolean>;
}

// ---- stream event log

/**
 * The stream event log mirrors this process's resumable SSE streams so that a client can resume,
 * with Last-Event-ID (MCP transports, "Resumability and Redelivery"), on another instance a stream
 * this one holds. Distributed mode has one (Redis, src/store/redis/event-log.ts); embedded mode
 * has none: a stream lives in its process only (session/streams.ts StreamRegistry without a log).
 * The types below are what the log sees of the stream model, so that the model depends on this
 * interface and never on an implementation.
 */

/** What a stream has not handed to its mirror yet (EdgeStream.unmirrored). */
export interface Unmirrored {
  events: { seq: number; frame: string }[];
  /** Highest seq evicted from the local buffer (the mirror trims to the same window). */
  evicted: number;
  /** The stream has finished and the mirror has not been told yet. */
  end: boolean;
  /** The upstream's event id of the newest event given (a new owner resumes the upstream after it). */
  upstreamId: string | undefined;
  /** A request stream's POST as a new owner needs it (`TakeoverState`), JSON; undefined otherwise. */
  resume: string | undefined;
}

/**
 * What a request stream's POST leaves for an instance that takes the stream over when its owner
 * died before the answers: the edge request id (its audit entries), the protocol version and the
 * JSON-RPC ids still unanswered.
 */
export interface TakeoverState {
  requestId: string;
  protocolVersion: string | undefined;
  ids: (string | number)[];
}

/**
 * A request stream whose owner died before every answer was given, now claimed by this instance:
 * it pumps the rest (resuming the upstream after `upstreamId`) or answers each pending request with
 * a coded error.
 */
export interface TakenOverStream {
  readonly takeover: true;
  readonly id: string;
  readonly sessionId: string;
  /** The frames after the client's id, as mirrored. */
  readonly frames: string[];
  /** The highest seq mirrored: the new owner numbers on from it. */
  readonly last: number;
  readonly upstreamId: string | undefined;
  readonly state: TakeoverState;
}

/** A local stream as its mirror reads it (session/streams.ts EdgeStream). */
export interface MirroredStream {
  readonly id: string;
  readonly sessionId: string;
  readonly kind: "request" | "standalone";
  /** Finished, and every event reached a client that got the end: nothing is left to resume. */
  readonly settled: boolean;
  /** Its session ended: the mirror drops its copy. */
  readonly discard: boolean;
  /** Something of it was written to the mirror (so there is something to remove there). */
  mirrored: boolean;
  /** The highest seq given so far. */
  readonly lastSeq: number;
  /** The buffered events not handed over yet, and whether the end is new; marks them handed over. */
  unmirrored(): Unmirrored;
  /** Another instance took the stream over (its owner here was thought dead): stop pumping it. */
  lost(): void;
}

/** A client's SSE response as a stream writes to it (session/streams.ts Sink). */
export interface StreamSink {
  readonly open: boolean;
  readonly lastWriteAt: number;
  /** False when the client is gone or too far behind. */
  write(frame: string): boolean;
  end(frame?: string): void;
}

/** The buffer window and lifetime the log applies (config `streams`). */
export interface EventLogLimits {
  ttl: number;
  keepAlive: number;
}

/**
 * Where a registry mirrors its streams. `mark` is called on every append and on the end; the mirror
 * batches and writes later (never on the client's delivery path, never throwing).
 */
export interface StreamMirror {
  mark(s: MirroredStream): void;
}

/** A stream another instance holds (or held), read back from the log. */
export interface SharedStream {
  readonly id: string;
  readonly sessionId: string;
  readonly kind: "request" | "standalone";
  /** It had ended when it was opened: `attach` replays and ends the response. */
  readonly done: boolean;
  /** The frames read when opening (a finished stream's remainder). */
  framesAfter(): string[];
  /** Writes the frames read when opening; ends the response when done, else follows on. */
  attach(sink: StreamSink): void;
  detach(sink: StreamSink): void;
  end(): void;
}

/** Whether a resumed stream was taken over (claimed by this instance) rather than shared. */
export function isTakenOver(s: SharedStream | TakenOverStream | undefined): s is TakenOverStream {
  return s !== undefined && "takeover" in s;
}

/** The stream as shared: a taken-over one is an error here (tests of streams that have no takeover). */
export function sharedOnly(s: SharedStream | TakenOverStream | undefined): SharedStream | undefined {
  if (isTakenOver(s)) throw new Error(`stream ${s.id} was taken over`);
  return s;
}

/** A StreamMirror that other instances read back from. */
export interface StreamEventLog extends StreamMirror {
  /**
   * A stream of this session as mirrored, with its frames after `afterSeq`. Undefined for an
   * unknown stream and for another session's (no existence oracle). Throws EDGE_STREAM_EXPIRED
   * when later events were trimmed, EDGE_STORE_UNAVAILABLE when the log cannot be read.
   */
  open(sessionId: string, streamId: string, afterSeq: number): Promise<SharedStream | undefined>;
  /**
   * `open`, and a request stream whose owner died before every answer was given is claimed by this
   * instance and returned as a TakenOverStream (once: another instance resuming it then follows
   * the new owner).
   */
  resume(
    sessionId: string,
    streamId: string,
    afterSeq: number,
  ): Promise<SharedStream | TakenOverStream | undefined>;
  /** When a client on another instance last followed the stream (its owner keeps it then). */
  followedAt(streamId: string): Promise<number | undefined>;
  /** Keep-alives and catch-up reads of the streams followed here (the registry's sweep). */
  sweepFollowers(now: number): void;
  /** Drain: every client following here gets a `retry` hint and its response ends. */
  closeFollowers(retryMs: number): void;
  /** Ends the followed streams of one session (DELETE, expiry), or of every session. */
  endFollowers(sessionId?: string): void;
}

// ---- upstream token vault

/** A token as the credentials manager holds it. */
export interface VaultToken {
  value: string;
  obtainedAt: number;
  expiresAt: number | undefined;
}

export interface TokenVault {
  /** The shared token, if one is stored (and decrypts). */
  get(): Promise<VaultToken | undefined>;
  /** Stores a token for the others (until it expires; one hour for a token without expiry). */
  put(token: VaultToken): Promise<void>;
  /** True when this instance may fetch now (it holds the refresh lock). */
  lock(): Promise<boolean>;
  unlock(): Promise<void>;
}

/** How long the refresh lock is held at most (a token request's own deadline is 10 s). */
export const VAULT_LOCK_MS = 12_000;

// ---- users' connections (the token vault, src/vault/)

/**
 * One user's tokens for one connection: keyed by (tenant, subject, connection). `sealed` is the
 * encrypted token set (src/vault/seal.ts), opaque to the store; `version` grows on every write, so
 * a refresh writes only over the record it refreshed (compare-and-swap: a single-use refresh token
 * is never spent twice by two writers).
 */
export interface ConnectionRecord {
  id: string;
  /** "" for principals without a tenant. */
  tenant: string;
  /** The principal, as the vault names it (src/vault/vault.ts `vaultSubject`). */
  subject: string;
  connection: string;
  sealed: string;
  version: number;
  createdAt: number;
  updatedAt: number;
  /** When the access token expires (ms), if the provider said; not secret. */
  expiresAt: number | null;
  /** Scopes the provider granted, as it said (space-separated), if it said. */
  scope: string | null;
}

export interface ConnectionFilter {
  tenant?: string;
  subject?: string;
  connection?: string;
}

/** What a write supplies; the store assigns `version` (and keeps `id` and `createdAt` of a record it replaces). */
export type ConnectionWrite = Omit<ConnectionRecord, "id" | "version" | "createdAt" | "updatedAt"> & {
  at: number;
};

export interface ConnectionStore {
  get(tenant: string, subject: string, connection: string): Promise<ConnectionRecord | undefined>;
  getById(id: string): Promise<ConnectionRecord | undefined>;
  /**
   * Writes the record of (tenant, subject, connection). `expectVersion` undefined: create it or
   * replace whatever is there (a new connect). A number: replace only the record at that version
   * (a refresh); resolves undefined when it is no longer there or at another version.
   */
  put(write: ConnectionWrite, expectVersion?: number): Promise<ConnectionRecord | undefined>;
  /** Deletes a record (only at `expectVersion` when given); true when one was deleted. */
  delete(id: string, expectVersion?: number): Promise<boolean>;
  list(filter: ConnectionFilter): Promise<ConnectionRecord[]>;
  close(): Promise<void>;
}

// ---- the authorization server (src/as/)

/**
 * One record of the edge's authorization server: an oidc-provider model (Session, Interaction,
 * AuthorizationCode, RefreshToken, Grant, Client, ...) or one of the AS's own (Consent, Rotation,
 * Account). Token-like records are stored under the SHA-256 of their value (`id`), with the value
 * removed from `payload`: a copy of the store holds no usable token.
 */
export interface AsRecord {
  kind: string;
  id: string;
  /** JSON text. */
  payload: string;
  grantId: string | null;
  /** oidc-provider's `uid` (sessions and interactions are also found by it). */
  uid: string | null;
  /** Copies for listings (grants by tenant and subject, clients). */
  tenant: string | null;
  subject: string | null;
  clientId: string | null;
  /** ms since epoch; null = never. An expired record is not found. */
  expiresAt: number | null;
  /** Set once by `consume` (codes, refresh tokens). */
  consumedAt: number | null;
}

export interface AsFilter {
  tenant?: string;
  subject?: string;
  clientId?: string;
}

/** A revoked grant or access token (`jti`), remembered while a token of it could still verify. */
export interface AsRevocation {
  id: string;
  at: number;
  until: number;
}

/**
 * The authorization server's records: SQLite embedded, PostgreSQL distributed. Every write is
 * one statement, so two instances racing on one record see one winner:
 * - `add` inserts only when no live record of that (kind, id) exists (the refresh single-flight);
 * - `consume` sets `consumedAt` once and says whether this call did.
 */
export interface AsStore {
  put(record: AsRecord): Promise<void>;
  /** Inserts unless a live (unexpired) record exists; true when this call inserted. */
  add(record: AsRecord): Promise<boolean>;
  get(kind: string, id: string): Promise<AsRecord | undefined>;
  getByUid(kind: string, uid: string): Promise<AsRecord | undefined>;
  /** Marks the record consumed at `at`; true when this call did (false: already consumed or absent). */
  consume(kind: string, id: string, at: number): Promise<boolean>;
  delete(kind: string, id: string): Promise<boolean>;
  /** Deletes every record of a grant and remembers the revocation until `until`. */
  revokeGrant(grantId: string, at: number, until: number): Promise<number>;
  /** Remembers a revoked access token's `jti` until `until` (its expiry). */
  revokeToken(jti: string, at: number, until: number): Promise<void>;
  /** Revocations recorded at or after `since` that are still remembered, oldest first. */
  revocations(since: number): Promise<AsRevocation[]>;
  /** Live records of a kind, newest first. */
  list(kind: string, filter: AsFilter, limit: number): Promise<AsRecord[]>;
  /** Deletes expired records and revocations; returns how many. */
  sweep(now: number): Promise<number>;
  close(): Promise<void>;
}
