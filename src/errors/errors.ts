import { ERROR_CODES, type ErrorCode } from "./codes.ts";

/** JSON-RPC request id as the wire carries it (JSON-RPC 2.0 §4: string or number). */
export type RpcId = string | number;

export interface GatewayErrorOptions {
  cause?: unknown;
  /** The JSON-RPC id of the request, when it was readable: echoed in the error body. */
  rpcId?: RpcId | null;
  /** Extra fields for the JSON-RPC `data` member. Never put credentials or internals here. */
  data?: Record<string, unknown>;
  /** Extra response headers (`Allow`, `Retry-After`, `WWW-Authenticate`). */
  headers?: Record<string, string>;
}

/**
 * The one error class of the edge. Stages throw it with a stable code; `wire.ts` turns it into an
 * HTTP answer from the table in `codes.ts`. The message is safe to show a client.
 */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly rpcId: RpcId | null;
  readonly data: Record<string, unknown> | undefined;
  readonly headers: Record<string, string> | undefined;

  constructor(code: ErrorCode, message?: string, options: GatewayErrorOptions = {}) {
    super(
      message ?? ERROR_CODES[code].summary,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "GatewayError";
    this.code = code;
    this.rpcId = options.rpcId ?? null;
    this.data = options.data;
    this.headers = options.headers;
  }

  get status(): number {
    return ERROR_CODES[this.code].http ?? 500;
  }

  /** A copy that echoes the given JSON-RPC id (set once the body was read). */
  withRpcId(id: RpcId | null): GatewayError {
    if (id === null || this.rpcId !== null) return this;
    const copy = new GatewayError(this.code, this.message, {
      cause: this.cause,
      rpcId: id,
      ...(this.data ? { data: this.data } : {}),
      ...(this.headers ? { headers: this.headers } : {}),
    });
    return copy;
  }
}

export function isGatewayError(err: unknown): err is GatewayError {
  return err instanceof GatewayError;
}
