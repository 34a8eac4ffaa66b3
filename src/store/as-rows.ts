/** The authorization server's record as a SQL row, shared by the SQLite and PostgreSQL stores. */
import type { AsRecord } from "./types.ts";

export interface AsRow {
  kind: string;
  id: string;
  payload: string;
  grant_id: string | null;
  uid: string | null;
  tenant: string | null;
  subject: string | null;
  client_id: string | null;
  expires_at: number | bigint | null;
  consumed_at: number | bigint | null;
}

export const asRecordOf = (r: AsRow): AsRecord => ({
  kind: r.kind,
  id: r.id,
  payload: r.payload,
  grantId: r.grant_id,
  uid: r.uid,
  tenant: r.tenant,
  subject: r.subject,
  clientId: r.client_id,
  expiresAt: r.expires_at === null ? null : Number(r.expires_at),
  consumedAt: r.consumed_at === null ? null : Number(r.consumed_at),
});

export const AS_COLUMNS =
  "kind, id, payload, grant_id, uid, tenant, subject, client_id, expires_at, consumed_at";

/** The values of a record in AS_COLUMNS order. */
export const asValues = (r: AsRecord): (string | number | null)[] => [
  r.kind,
  r.id,
  r.payload,
  r.grantId,
  r.uid,
  r.tenant,
  r.subject,
  r.clientId,
  r.expiresAt,
  r.consumedAt,
];
