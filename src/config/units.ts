/**
 * Units in config: durations ("250ms", "30s", "5m", "24h", "7d", or a number of milliseconds) and
 * sizes ("512B", "64KiB", "1MiB", "1GiB", or a number of bytes). Pure; throws a plain Error with a
 * message the schema layer turns into a path-qualified config error.
 */
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/;
const DURATION_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(value: string | number): number {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) throw new Error(`duration must be a non-negative number of ms`);
    return Math.round(value);
  }
  const m = DURATION.exec(value.trim());
  if (!m) throw new Error(`"${value}" is not a duration (examples: 250ms, 30s, 5m, 24h, 7d)`);
  return Math.round(Number(m[1]) * (DURATION_MS[m[2] as string] as number));
}

const SIZE = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)$/i;
const SIZE_BYTES: Record<string, number> = {
  b: 1,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
};

export function parseSize(value: string | number): number {
  if (typeof value === "number") {
    if (!Number.isInteger(value) || value < 0)
      throw new Error(`size must be a non-negative whole number of bytes`);
    return value;
  }
  const m = SIZE.exec(value.trim());
  if (!m) throw new Error(`"${value}" is not a size (examples: 512B, 64KiB, 1MiB)`);
  return Math.round(Number(m[1]) * (SIZE_BYTES[(m[2] as string).toLowerCase()] as number));
}
