import pino, { type DestinationStream, type Logger } from "pino";

export type { Logger };

/**
 * Paths pino blanks before a line is written: credentials and session ids never reach a log
 * (DESIGN.md convention 7). Session ids are logged as their short hash (`sessionHash`) instead.
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
    },
    options.destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
