/**
 * One copy of the values many sessions have in common — protocol version, principal, tenant,
 * server, instance, initialize params — for the records the hot cache holds: a created record
 * carries its request's copies and a record read from a store freshly parsed ones, one set per
 * session otherwise (the params alone are a few hundred bytes). Bounded: cleared when full (a value
 * seen again after that is shared from then on).
 */
const commonStrings = new Map<string, string>();
const commonParams = new Map<string, Record<string, unknown>>();
const COMMON_MAX = 1024;

export function common(s: string): string {
  const known = commonStrings.get(s);
  if (known !== undefined) return known;
  if (commonStrings.size >= COMMON_MAX) commonStrings.clear();
  commonStrings.set(s, s);
  return s;
}

/**
 * The shared copy of initialize params: parsed from their JSON text (never the caller's object,
 * which the request still holds) and frozen, so that no session can change another's.
 */
export function commonParamsOf(params: Record<string, unknown>): Record<string, unknown> {
  const text = JSON.stringify(params);
  let known = commonParams.get(text);
  if (known === undefined) {
    known = deepFreeze(JSON.parse(text) as Record<string, unknown>);
    if (commonParams.size >= COMMON_MAX) commonParams.clear();
    commonParams.set(text, known);
  }
  return known;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object") {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
