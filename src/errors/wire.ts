import type { ServerResponse } from "node:http";
import { ERROR_CODES, type ErrorSpec } from "./codes.ts";
import { GatewayError, isGatewayError } from "./errors.ts";

/** The JSON-RPC error body for a coded error: `{jsonrpc, id, error: {code, message, data: {code}}}`. */
export function errorBody(err: GatewayError): string {
  const spec = ERROR_CODES[err.code];
  return JSON.stringify({
    jsonrpc: "2.0",
    // JSON-RPC 2.0 §5: id is null when the request id could not be read.
    id: err.rpcId,
    error: {
      code: spec.rpc ?? -32000,
      message: err.message,
      data: { code: err.code, ...err.data },
    },
  });
}

/** Any thrown value as a GatewayError; unknown errors become EDGE_INTERNAL (details stay in the log). */
export function toGatewayError(err: unknown): GatewayError {
  if (isGatewayError(err)) return err;
  return new GatewayError("EDGE_INTERNAL", undefined, { cause: err });
}

/**
 * Writes a coded error as an HTTP answer, when nothing was sent yet. Returns false when the headers
 * were already out (the caller then ends the stream).
 */
export function sendError(
  res: ServerResponse,
  err: GatewayError,
  extraHeaders?: Record<string, string>,
): boolean {
  if (res.headersSent || res.writableEnded || res.destroyed) return false;
  const spec: ErrorSpec = ERROR_CODES[err.code];
  const body = errorBody(err);
  const headers: Record<string, string | number> = {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    ...extraHeaders,
    ...err.headers,
  };
  if (spec.retryAfter !== undefined && headers["retry-after"] === undefined) {
    headers["retry-after"] = String(spec.retryAfter);
  }
  res.writeHead(err.status, headers);
  res.end(body);
  return true;
}
