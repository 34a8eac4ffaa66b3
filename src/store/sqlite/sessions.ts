import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { SessionRecord, SessionStore, UpstreamBinding } from "../types.ts";
import { openDatabase, TouchBatch } from "./db.ts";

interface SessionRow {
  id: string;
  server: string;
  principal: string;
  tenant: string | null;
  transport: string;
  protocol_version: string;
  init_params: string;
  upstream_instance: string;
  upstream_session: string | null;
  created_at: number;
  last_seen_at: number;
}

function toRecord(row: SessionRow): SessionRecord {
  return {
    id: row.id,
    server: row.server,
    principal: row.principal,
    tenant: row.tenant,
    transport: row.transport === "legacy-sse" ? "legacy-sse" : "streamable",
    protocolVersion: row.protocol_version,
    initParams: JSON.parse(row.init_params) as Record<string, unknown>,
    upstream: { instance: row.upstream_instance, sessionId: row.upstream_session },
    createdAt: row.created_at,
    lastSeenAt: row.last_seen_at,
  };
}

/**
 * Session records in SQLite (node:sqlite, no native build). Statements are prepared once.
 * `touch` is batched: last-seen times are written at most every `touchFlushMs`, so a request never
 * waits for a write it does not need.
 */
export class SqliteSessionStore implements SessionStore {
  readonly #db: DatabaseSync;
  readonly #ownsDb: boolean;
  readonly #touches: TouchBatch;
  readonly #stmt: {
    get: StatementSync;
    put: StatementSync;
    rebind: StatementSync;
    touch: StatementSync;
    del: StatementSync;
    idle: StatementSync;
    count: StatementSync;
    list: StatementSync;
  };

  constructor(db: DatabaseSync | string, options: { touchFlushMs?: number } = {}) {
    this.#ownsDb = typeof db === "string";
    this.#db = typeof db === "string" ? openDatabase(db) : db;
    this.#stmt = {
      get: this.#db.prepare("SELECT * FROM sessions WHERE id = ?"),
      put: this.#db.prepare(
        `INSERT OR REPLACE INTO sessions (id, server, principal, tenant, transport, protocol_version, init_params,
           upstream_instance, upstream_session, created_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      rebind: this.#db.prepare(
        "UPDATE sessions SET upstream_instance = ?, upstream_session = ?, protocol_version = ? WHERE id = ?",
      ),
      touch: this.#db.prepare("UPDATE sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?"),
      del: this.#db.prepare("DELETE FROM sessions WHERE id = ?"),
      idle: this.#db.prepare("SELECT * FROM sessions WHERE server = ? AND last_seen_at < ? LIMIT ?"),
      list: this.#db.prepare(
        "SELECT * FROM sessions WHERE (?1 IS NULL OR server = ?1) AND (?2 IS NULL OR tenant = ?2) ORDER BY created_at DESC LIMIT ?3",
      ),
      count: this.#db.prepare(
        "SELECT upstream_instance AS instance, COUNT(*) AS n FROM sessions WHERE server = ? GROUP BY upstream_instance",
      ),
    };
    this.#touches = new TouchBatch(this.#db, this.#stmt.touch, options.touchFlushMs ?? 2000);
  }

  async get(id: string): Promise<SessionRecord | undefined> {
    const row = this.#stmt.get.get(id) as SessionRow | undefined;
    if (!row) return undefined;
    const rec = toRecord(row);
    const pending = this.#touches.pending(id);
    if (pending !== undefined && pending > rec.lastSeenAt) rec.lastSeenAt = pending;
    return rec;
  }

  async put(r: SessionRecord): Promise<void> {
    this.#stmt.put.run(
      r.id,
      r.server,
      r.principal,
      r.tenant,
      r.transport,
      r.protocolVersion,
      JSON.stringify(r.initParams),
      r.upstream.instance,
      r.upstream.sessionId,
      r.createdAt,
      r.lastSeenAt,
    );
  }

  async rebind(id: string, upstream: UpstreamBinding, protocolVersion: string): Promise<void> {
    this.#stmt.rebind.run(upstream.instance, upstream.sessionId, protocolVersion, id);
  }

  touch(id: string, at: number): void {
    this.#touches.touch(id, at);
  }

  async delete(id: string): Promise<boolean> {
    this.#touches.forget(id);
    return this.#stmt.del.run(id).changes > 0;
  }

  async listIdle(server: string, cutoff: number, limit: number): Promise<SessionRecord[]> {
    this.#touches.flush();
    return (this.#stmt.idle.all(server, cutoff, limit) as unknown as SessionRow[]).map(toRecord);
  }

  async list(filter: { server?: string; tenant?: string }, limit: number): Promise<SessionRecord[]> {
    this.#touches.flush();
    const rows = this.#stmt.list.all(
      filter.server ?? null,
      filter.tenant ?? null,
      limit,
    ) as unknown as SessionRow[];
    return rows.map(toRecord);
  }

  async countByInstance(server: string): Promise<Map<string, number>> {
    const rows = this.#stmt.count.all(server) as unknown as { instance: string; n: number }[];
    return new Map(rows.map((r) => [r.instance, r.n]));
  }

  async flush(): Promise<void> {
    this.#touches.flush();
  }

  async close(): Promise<void> {
    this.#touches.stop();
    if (this.#ownsDb) this.#db.close();
  }
}
