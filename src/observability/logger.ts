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
      // A copy: pino merges each line's fields into what the mixin returns.
      mixin: () => ({ ...logScope.getStore() }),
    },
    options.destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
