/**
 * Rate specs as written in config: `N/unit`, optionally followed by `burst B`.
 *
 *   "600/min"             600 calls per fixed 60 s window; all 600 may come at once
 *   "600/min burst 100"   the same average rate, at most 100 calls in any 10 s window
 *   "5/s"  "100/h"  "1000/d"  "50/10s"  "300/5m"
 *
 * Units: `s`/`sec`/`second`, `m`/`min`/`minute`, `h`/`hr`/`hour`, `d`/`day` (plural forms too), or a
 * duration with a count (`10s`, `5m`). Windows are whole seconds: the RateLimit header fields carry
 * whole seconds (draft-ietf-httpapi-ratelimit-headers-11 §3.1.3), and so does a Redis TTL.
 *
 * Why `burst` narrows the window rather than adding a second limiter: rate-limiter-flexible counts
 * in fixed windows, so `N/unit` alone lets all N calls through at the start of a window, and up to
 * 2N across a window boundary. `burst B` keeps the average rate and caps how many
 * calls come together: the window shrinks to the time the rate takes to earn B calls
 * (unit × B / N, at least one second, rounded up to a whole second, so the average may come out
 * a little lower) and holds B calls. Worst case across a boundary: 2B
 * in a short span, N + B over any span of one `unit`. Pure; throws a plain Error with a message the
 * schema layer turns into a path-qualified config error.
 */
import { parseDuration } from "./units.ts";

export interface RateSpec {
  /** The text as configured, for messages and docs. */
  readonly text: string;
  /** Calls admitted per window (the `q` of RateLimit-Policy). */
  readonly quota: number;
  /** Window length in whole seconds (the `w` of RateLimit-Policy). */
  readonly windowSec: number;
}

const UNIT_SECONDS: Record<string, number> = {
  s: 1,
  sec: 1,
  secs: 1,
  second: 1,
  seconds: 1,
  m: 60,
  min: 60,
  mins: 60,
  minute: 60,
  minutes: 60,
  h: 3600,
  hr: 3600,
  hrs: 3600,
  hour: 3600,
  hours: 3600,
  d: 86_400,
  day: 86_400,
  days: 86_400,
};

const RATE = /^(\d+)\s*\/\s*([0-9.]*[a-z]+)(?:\s+burst\s+(\d+))?$/i;
const MAX_QUOTA = 1_000_000_000;
const EXAMPLES = 'examples: "600/min", "600/min burst 100", "5/s", "50/10s"';

function windowSeconds(unit: string): number {
  const named = UNIT_SECONDS[unit.toLowerCase()];
  if (named !== undefined) return named;
  let ms: number;
  try {
    ms = parseDuration(unit);
  } catch {
    throw new Error(`"${unit}" is not a time unit (s, min, h, d, or a duration such as 10s)`);
  }
  if (ms < 1000 || ms % 1000 !== 0) throw new Error(`the window "${unit}" must be a whole number of seconds`);
  return ms / 1000;
}

/** Parses `N/unit [burst B]`. */
export function parseRate(text: string): RateSpec {
  const m = RATE.exec(text.trim());
  if (!m) throw new Error(`"${text}" is not a rate (${EXAMPLES})`);
  const n = Number(m[1]);
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_QUOTA)
    throw new Error(`"${text}": the count must be between 1 and ${MAX_QUOTA}`);
  const unitSec = windowSeconds(m[2] as string);
  if (m[3] === undefined) return { text: text.trim(), quota: n, windowSec: unitSec };
  const burst = Number(m[3]);
  if (!Number.isSafeInteger(burst) || burst < 1 || burst > n)
    throw new Error(`"${text}": burst must be between 1 and the count (${n})`);
  const window = (unitSec * burst) / n;
  if (window < 1)
    throw new Error(
      `"${text}": the rate earns ${burst} calls in under a second; windows are whole seconds, so use a burst of at least ${Math.ceil(n / unitSec)}`,
    );
  return { text: text.trim(), quota: burst, windowSec: Math.ceil(window) };
}

/**
 * Tool names as MCP defines them (2025-11-25 server/tools "Tool Names": 1-128 characters of
 * A-Z a-z 0-9 _ - .). A `tools/call` naming anything else counts against the default `tool` limit
 * in one shared bucket per principal, so odd names can neither mint counters without bound nor
 * slip past a per-tool override.
 */
export const TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/;
