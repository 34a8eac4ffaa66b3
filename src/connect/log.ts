/**
 * The bridge's log: stderr only. stdout carries the MCP protocol and nothing else (MCP stdio
 * transport: "the server MUST NOT write anything to its stdout that is not a valid MCP message"),
 * and desktop clients show a stdio server's stderr in their logs. Credentials are never passed here.
 */
import type { Writer } from "../cli/args.ts";

export interface ConnectLog {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  /** Only with `--debug`. */
  debug(msg: string): void;
  readonly debugEnabled: boolean;
}

export function createConnectLog(stderr: Writer, debug: boolean): ConnectLog {
  const line = (level: string, msg: string) => {
    stderr.write(`[mcp-edge connect] ${level}${msg.replace(/[\r\n]+/g, " ")}\n`);
  };
  return {
    info: (m) => line("", m),
    warn: (m) => line("warning: ", m),
    error: (m) => line("error: ", m),
    debug: (m) => {
      if (debug) line("debug: ", m);
    },
    debugEnabled: debug,
  };
}
