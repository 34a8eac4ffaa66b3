import { AsyncLocalStorage } from "node:async_hooks";
import pino, { type DestinationStream, type Logger } from "pino";

export type { Logger };

/** What every log line written while serving a request carries. */
export interface LogScope {
  reqId: string;
  server: string;
  /** Set once authentication has decided it (every log line names its tenant). */
  tenant?: string | null;
}

/**
 * The request a piece of code runs for. Every log line written inside `logScope.run(...)` carries
 * its request id, wherever it is written from (pipeline, session manager, upstream transports),
 * without passing a child logger around.
 */
export const logScope = new AsyncLocalStorage<LogScope>();

/**
 * Paths pino blanks before a line is written: credentials and session ids never reach a log. Session ids are logged as their short hash (`sessionHash`) instead.
 */
export const REDACT_PATHS = [
  "req.headers.authorization",
  "req.headers.cookie",
  "req.headers['x-api-key']",
  "req.headers['mcp-session-id']",
  "req.headers['proxy-authorization']",
  "headers.authorization",
  "headers.cookie",
  "headers['x-api-key']",
  "headers['mcp-session-id']",
  "authorization",
  "token",
  "apiKey",
  "sessionId",
  "upstreamSessionId",
  "*.authorization",
  "*.token",
  "*.apiKey",
  "*.sessionId",
  "*.upstreamSessionId",
];

export interface LoggerOptions {
  level: string;
  destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { svc: "mcp-edge" },
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // A copy: pino merges each line's fields into what the mixin returns (so a field given to
      // the call wins over the scope's, once). A child logger's bindings are written apart from
      // that merge: scope fields it already binds are left out, or the line would carry them twice.
      mixin: (_obj: object, _level: number, logger: Logger) => scopeFields(logger),
    },
    options.destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

/** Keys each child logger binds (`log.child({...})`), read once per logger. */
const boundKeys = new WeakMap<Logger, ReadonlySet<string>>();

/** The request scope's fields, minus those the logger's own bindings already write. */
function scopeFields(logger: Logger): Record<string, unknown> {
  const scope = logScope.getStore();
  if (!scope) return {};
  let bound = boundKeys.get(logger);
  if (!bound) {
    bound = new Set(Object.keys(logger.bindings()));
    boundKeys.set(logger, bound);
  }
  if (bound.size === 0) return { ...scope };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(scope)) if (!bound.has(k)) out[k] = v;
  return out;
}
