import { createHash } from "node:crypto";

/** Tags computed recently (the identity token, the audit record and the span each ask once per call). */
const tags = new Map<string, string>();
const TAGS_MAX = 10_000;

/**
 * A short, stable, non-reversible tag of a session id (12 characters of its SHA-256): what logs,
 * audit records and spans (`mcp.session.id`) carry instead of the id, which is a bearer secret.
 */
export function sessionHash(id: string): string {
  let tag = tags.get(id);
  if (tag === undefined) {
    tag = createHash("sha256").update(id).digest("base64url").slice(0, 12);
    // Bounded: cleared when full (the ids of live sessions come back at their next call).
    if (tags.size >= TAGS_MAX) tags.clear();
    tags.set(id, tag);
  }
  return tag;
}
