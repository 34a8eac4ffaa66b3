import type { Vault } from "../vault/vault.ts";
import type { AuthorizationServer } from "../as/server.ts";
import type { ConnectionRecord } from "../store/types.ts";
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { z } from "zod";
import { auditRoute } from "../audit/api.ts";
import type { AuditLog } from "../audit/log.ts";
import { ApiKeyChecker, KEY_PREFIX } from "../auth/apikey.ts";
import type { Route } from "../upstream/types.ts";
import { ERROR_CODES, type ErrorSpec } from "../errors/codes.ts";
import { GatewayError } from "../errors/errors.ts";
import { toGatewayError } from "../errors/wire.ts";
import { readBody } from "../mcp/hygiene.ts";
import { type AdminEvent, adminChannel } from "../observability/channels.ts";
import type { Logger } from "../observability/logger.ts";
import type { SessionManager } from "../session/manager.ts";
import { sessionHash } from "../session/manager.ts";
import type { SessionRecord } from "../store/types.ts";
import { createKeyBody, type KeyService, keyView, rotateBody } from "./keys.ts";
import { stats, statsRequest } from "./stats.ts";
import type { AuthRefusals } from "../audit/auth-refusals.ts";

/** The scope that makes an API key a tenant admin credential. */
export const ADMIN_SCOPE = "mcp-edge:admin";

/** The caller of the admin API: root (`tenant` undefined) or a tenant admin. */
interface AdminCaller {
  tenant: string | undefined;
}

export interface AdminApiOptions {
  /** Refused authentications by route, reason and address (root admins' `/api/stats`). */
  authRefusals?: AuthRefusals;
  /** The root admin token; without it the API answers 404 EDGE_ADMIN_DISABLED. */
  token: string | undefined;
  keys: KeyService;
  sessions: SessionManager;
  routes: Map<string, Route>;
  log: Logger;
  /** Audit records for `GET /api/audit` and `/api/audit/verify`; absent = those answer 404. */
  audit?: AuditLog;
  /** The token vault, for `GET/DELETE /api/connections`; absent = those answer 404. */
  vault?: Vault | undefined;
  /** The edge's authorization server, for `/api/oauth/clients` and `/api/oauth/grants`. */
  as?: AuthorizationServer | undefined;
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
    ...headers,
  });
  res.end(text);
}

/** Admin errors are plain JSON (`{"error":{"code","message"}}`): the admin API is not MCP. */
function sendAdminError(res: ServerResponse, err: GatewayError): void {
  const spec: ErrorSpec = ERROR_CODES[err.code];
  const headers: Record<string, string> = { ...err.headers };
  if (spec.retryAfter !== undefined) headers["retry-after"] = String(spec.retryAfter);
  if (err.code === "EDGE_ADMIN_UNAUTHORIZED") headers["www-authenticate"] = 'Bearer realm="mcp-edge-admin"';
  sendJson(res, err.status, { error: { code: err.code, message: err.message } }, headers);
}

function parse<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join(".") || "(body)"}: ${i.message}`).join("; ");
    throw new GatewayError("EDGE_ADMIN_BAD_REQUEST", issues);
  }
  return r.data;
}

async function jsonBody(req: IncomingMessage): Promise<unknown> {
  const buf = await readBody(req, 64 * 1024);
  if (buf.length === 0) return {};
  try {
    return JSON.parse(buf.toString("utf8"));
  } catch {
    throw new GatewayError("EDGE_ADMIN_BAD_REQUEST", "the body is not valid JSON");
  }
}

function sessionView(rec: SessionRecord): Record<string, unknown> {
  return {
    id: rec.id,
    server: rec.server,
    tenant: rec.tenant,
    principal: rec.principal,
    transport: rec.transport,
    protocol_version: rec.protocolVersion,
    upstream: rec.upstream.instance,
    created: new Date(rec.createdAt).toISOString(),
    last_seen: new Date(rec.lastSeenAt).toISOString(),
  };
}

/**
 * The admin API (keys, sessions, audit, stats), on the admin listener, behind the root admin
 * token. Shaped so that the familiar key-rotation recipe works as written:
 * `POST /api/keys {"name":"production-v2","expires_in":"30d"}`, then `DELETE /api/keys/production-v1`.
 */
export class AdminApi {
  readonly #o: AdminApiOptions;
  readonly #tokenHash: Buffer | undefined;
  readonly #keyCheck = new ApiKeyChecker();
  #reload: (() => Promise<unknown>) | undefined;

  constructor(options: AdminApiOptions) {
    this.#o = options;
    this.#tokenHash = options.token ? createHash("sha256").update(options.token).digest() : undefined;
  }

  /** What `POST /api/reload` runs (the gateway's reload; set once the gateway runs). */
  setReload(reload: () => Promise<unknown>): void {
    this.#reload = reload;
  }

  /** Handles `/api/*`; false for other paths. */
  async handle(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    query: URLSearchParams,
  ): Promise<boolean> {
    if (path !== "/api" && !path.startsWith("/api/")) return false;
    let caller: AdminCaller | undefined;
    try {
      caller = await this.#authorize(req);
      await this.#route(req, res, path, query, caller);
    } catch (err) {
      const ge = toGatewayError(err);
      if (ge.status >= 500) this.#o.log.error({ err: ge.cause ?? ge, path }, "admin API error");
      // A refused change is an admin action too (audit); reads are not recorded.
      if (req.method !== "GET" && req.method !== "HEAD" && adminChannel.hasSubscribers) {
        const event: AdminEvent = {
          action: `${req.method} ${path}`.slice(0, 200),
          actor: caller ? (caller.tenant ?? "root") : "unauthenticated",
          tenant: caller?.tenant ?? null,
          target: ge.code,
          outcome: "refused",
        };
        adminChannel.publish(event);
      }
      req.resume();
      if (!res.headersSent) sendAdminError(res, ge);
      else res.end();
    }
    return true;
  }

  /** Every admin action is published for the audit trail. */
  #audit(caller: AdminCaller, action: string, target: string, tenant: string | null): void {
    if (!adminChannel.hasSubscribers) return;
    const event: AdminEvent = { action, actor: caller.tenant ?? "root", tenant, target, outcome: "ok" };
    adminChannel.publish(event);
  }

  /**
   * Who is administering: the root admin token (every tenant), or an API key carrying the scope
   * `mcp-edge:admin`, which administers its own tenant only.
   */
  async #authorize(req: IncomingMessage): Promise<AdminCaller> {
    if (!this.#tokenHash) throw new GatewayError("EDGE_ADMIN_DISABLED");
    const header = req.headers.authorization ?? "";
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    const presented = m?.[1] ?? "";
    // Hash-then-compare: constant time whatever the presented length.
    if (timingSafeEqual(createHash("sha256").update(presented).digest(), this.#tokenHash))
      return { tenant: undefined };
    if (presented.startsWith(KEY_PREFIX)) {
      try {
        const principal = await this.#keyCheck.check(this.#o.keys.store, presented, undefined);
        if (principal.scopes.includes(ADMIN_SCOPE) && principal.tenant) return { tenant: principal.tenant };
      } catch {
        // An invalid key is just an unauthorized caller.
      }
    }
    throw new GatewayError("EDGE_ADMIN_UNAUTHORIZED");
  }

  async #route(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    query: URLSearchParams,
    caller: AdminCaller,
  ): Promise<void> {
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent); // ["api", "keys", ...]
    const method = req.method ?? "GET";
    const keys = this.#o.keys;
    const askedTenant = query.get("tenant") ?? undefined;
    // A tenant admin sees its own tenant only; naming another is answered like an unknown object.
    if (caller.tenant !== undefined && askedTenant !== undefined && askedTenant !== caller.tenant) {
      throw new GatewayError("EDGE_ADMIN_NOT_FOUND", "no such tenant");
    }
    const tenant = caller.tenant ?? askedTenant;
    const scope = {
      ...(query.get("server") ? { server: query.get("server") as string } : {}),
      ...(tenant !== undefined ? { tenant } : {}),
    };

    // Configuration reload: the whole edge's, so the root admin's only (a tenant admin sees 404).
    if (parts[1] === "reload" && parts.length === 2 && method === "POST" && caller.tenant === undefined) {
      req.resume();
      if (!this.#reload) throw new GatewayError("EDGE_RELOAD_UNAVAILABLE");
      const outcome = await this.#reload();
      this.#audit(caller, "config.reload", "config", null);
      return sendJson(res, 200, { reloaded: true, ...(outcome as object) });
    }

    if (parts[1] === "keys") {
      if (parts.length === 2 && method === "POST") {
        const body = parse(createKeyBody, await jsonBody(req));
        if (caller.tenant !== undefined && body.tenant !== undefined && body.tenant !== caller.tenant) {
          throw new GatewayError("EDGE_ADMIN_NOT_FOUND", "no such tenant");
        }
        const { key, record } = await keys.create({
          ...body,
          ...(caller.tenant !== undefined ? { tenant: caller.tenant } : {}),
        });
        this.#o.log.info(
          { keyId: record.id, name: record.name, server: record.server, tenant: record.tenant },
          "key created",
        );
        this.#audit(caller, "key.create", record.id, record.tenant);
        return sendJson(res, 201, { ...keyView(record), key });
      }
      if (parts.length === 2 && method === "GET") {
        const list = await keys.store.list(scope);
        return sendJson(res, 200, { keys: list.map((k) => keyView(k)) });
      }
      const ref = parts[2];
      if (ref !== undefined && parts.length === 3 && method === "GET") {
        return sendJson(res, 200, keyView(await keys.find(ref, scope)));
      }
      if (ref !== undefined && parts.length === 4 && parts[3] === "rotate" && method === "POST") {
        const body = parse(rotateBody, await jsonBody(req));
        const old = await keys.find(ref, scope);
        const { key, record } = await keys.rotate(old, body.grace);
        this.#o.log.info({ keyId: record.id, previous: old.id, name: record.name }, "key rotated");
        this.#audit(caller, "key.rotate", old.id, old.tenant);
        return sendJson(res, 201, {
          ...keyView(record),
          key,
          previous: keyView((await keys.store.get(old.id)) ?? old),
        });
      }
      if (ref !== undefined && parts.length === 3 && method === "DELETE") {
        const grace = query.get("grace") ?? undefined;
        if (grace !== undefined) parse(rotateBody, { grace });
        const { resolved, revoked } = await keys.revokeRef(ref, scope, grace);
        for (const rec of revoked) {
          this.#o.log.info({ keyId: rec.id, name: rec.name, at: rec.revokedAt }, "key revoked");
          this.#audit(caller, "key.revoke", rec.id, rec.tenant);
        }
        // The resolved key's view (as before), and every key this revoked: a name revokes them all.
        return sendJson(res, 200, {
          ...keyView(resolved),
          revoked_count: revoked.length,
          revoked_keys: revoked.map((k) => keyView(k)),
        });
      }
    }

    // Audit (src/audit/api.ts): read-only, scoped like keys: a tenant admin reads its own tenant.
    if (parts[1] === "audit" && method === "GET" && this.#o.audit) {
      const answer = await auditRoute(this.#o.audit, parts.slice(2), query, tenant);
      if (answer !== undefined) return sendJson(res, 200, answer);
    }

    // Stats for the dashboard (src/admin/stats.ts): read-only, from audit records, scoped like audit.
    if (parts[1] === "stats" && parts.length === 2 && method === "GET" && this.#o.audit) {
      const answer = await stats(this.#o.audit, statsRequest(query, tenant));
      // Refused authentications belong to no tenant (no credential was accepted): root admin only.
      const authRefused = tenant === undefined ? (this.#o.authRefusals?.figures() ?? null) : null;
      return sendJson(res, 200, { ...answer, auth_refused: authRefused });
    }

    if (parts[1] === "sessions") {
      const sessions = this.#o.sessions;
      if (parts.length === 2 && method === "GET") {
        const limit = Math.min(Number(query.get("limit") ?? 500) || 500, 5000);
        const list = await sessions.store.list(scope, limit);
        return sendJson(res, 200, { sessions: list.map(sessionView) });
      }
      const id = parts[2];
      if (id !== undefined && parts.length === 3 && (method === "GET" || method === "DELETE")) {
        const rec = await sessions.store.get(id);
        const route = rec ? this.#o.routes.get(rec.server) : undefined;
        if (!rec || !route || (scope.tenant !== undefined && rec.tenant !== scope.tenant)) {
          throw new GatewayError("EDGE_ADMIN_NOT_FOUND", "no such session");
        }
        if (method === "GET") return sendJson(res, 200, sessionView(rec));
        await sessions.end(route, rec, "deleted by admin");
        this.#o.log.info({ session: sessionHash(rec.id) }, "session deleted by admin");
        this.#audit(caller, "session.delete", sessionHash(rec.id), rec.tenant);
        return sendJson(res, 200, { deleted: true });
      }
    }
    // Users' connections (the token vault): metadata only, never a token.
    if (parts[1] === "connections" && this.#o.vault) {
      const vault = this.#o.vault;
      if (parts.length === 2 && method === "GET") {
        const filter = {
          ...(tenant !== undefined ? { tenant } : {}),
          ...(query.get("subject") ? { subject: query.get("subject") as string } : {}),
          ...(query.get("connection") ? { connection: query.get("connection") as string } : {}),
        };
        return sendJson(res, 200, { connections: (await vault.store.list(filter)).map(connectionView) });
      }
      const id = parts[2];
      if (id !== undefined && parts.length === 3 && (method === "GET" || method === "DELETE")) {
        const rec = await vault.store.getById(id);
        if (!rec || (tenant !== undefined && rec.tenant !== tenant))
          throw new GatewayError("EDGE_ADMIN_NOT_FOUND", "no such connection");
        if (method === "GET") return sendJson(res, 200, connectionView(rec));
        await vault.disconnect(rec, caller.tenant === undefined ? "admin:root" : `admin:${caller.tenant}`);
        this.#o.log.info({ connection: rec.connection, record: rec.id }, "connection revoked by admin");
        this.#audit(caller, "connection.revoke", rec.id, rec.tenant === "" ? null : rec.tenant);
        return sendJson(res, 200, { deleted: true });
      }
    }
    // The edge's authorization server: clients (root only: they are not per tenant) and grants.
    if (parts[1] === "oauth" && this.#o.as) {
      const as = this.#o.as;
      const id = parts[3];
      if (parts[2] === "clients" && caller.tenant === undefined) {
        if (parts.length === 3 && method === "GET")
          return sendJson(res, 200, { clients: await as.listClients() });
        if (id !== undefined && parts.length === 4 && method === "DELETE") {
          if (!(await as.deleteClient(id))) throw new GatewayError("EDGE_ADMIN_NOT_FOUND", "no such client");
          this.#audit(caller, "oauth.client.delete", id, null);
          return sendJson(res, 200, { deleted: true });
        }
      }
      if (parts[2] === "grants") {
        if (parts.length === 3 && method === "GET") {
          const filter = {
            ...(tenant !== undefined ? { tenant } : {}),
            ...(query.get("subject") ? { subject: query.get("subject") as string } : {}),
          };
          return sendJson(res, 200, { grants: await as.listGrants(filter) });
        }
        if (id !== undefined && parts.length === 4 && method === "DELETE") {
          const g = await as.grant(id);
          if (!g || (tenant !== undefined && g.tenant !== tenant))
            throw new GatewayError("EDGE_ADMIN_NOT_FOUND", "no such grant");
          await as.revokeGrant(id);
          this.#audit(caller, "oauth.grant.revoke", id, g.tenant);
          return sendJson(res, 200, { deleted: true });
        }
      }
    }
    throw new GatewayError("EDGE_ADMIN_NOT_FOUND", `no admin endpoint ${method} ${path}`);
  }
}

/** A vault record as the admin API shows it: who, which connection, when; never the sealed tokens. */
function connectionView(r: ConnectionRecord) {
  return {
    id: r.id,
    tenant: r.tenant === "" ? null : r.tenant,
    subject: r.subject,
    connection: r.connection,
    scope: r.scope,
    created: new Date(r.createdAt).toISOString(),
    updated: new Date(r.updatedAt).toISOString(),
    expires: r.expiresAt === null ? null : new Date(r.expiresAt).toISOString(),
  };
}
