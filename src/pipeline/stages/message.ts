import type { Authenticated, EraKnown, Parsed } from "../../context.ts";
import { GatewayError } from "../../errors/errors.ts";
import { detectEra, isKnownVersion, metaProtocolVersion, validateStatelessHeaders } from "../../mcp/era.ts";
import { checkPostHeaders, readBody, single } from "../../mcp/hygiene.ts";
import { decodeBody, isRequest, parseBody, type RpcMessage } from "../../mcp/jsonrpc.ts";
import type { JsonLimits } from "../../mcp/strict-json.ts";
import type { Stage } from "../compose.ts";

const FILE = "src/pipeline/stages/message.ts";

/**
 * Body: capped (413), JSON only (415), a valid JSON-RPC message (400 -32700 / -32600), read by the
 * strict reader (src/mcp/strict-json.ts) so that it has one reading: no repeated member names, no
 * `__proto__`, no lone surrogates, within `limits.json`. Decoded once: the text parsed is the text
 * forwarded, on every transport. GET and DELETE carry none (no messages).
 */
export function body(
  maxBodyBytes: number,
  jsonLimits: JsonLimits,
): Stage<Authenticated, { body: string; messages: RpcMessage[]; batch: boolean }> {
  return {
    name: "body",
    does: "POST: checks Content-Type and Accept, reads the body up to `limits.maxBodyBytes`, parses one JSON-RPC message or a batch with the strict reader (one reading only: no repeated member names, no `__proto__`, no lone surrogates; within `limits.json`). GET/DELETE: no body.",
    codes: [
      "EDGE_UNSUPPORTED_MEDIA_TYPE",
      "EDGE_NOT_ACCEPTABLE",
      "EDGE_BODY_TOO_LARGE",
      "EDGE_INVALID_UNICODE",
      "EDGE_PARSE_ERROR",
      "EDGE_JSON_DUPLICATE_MEMBER",
      "EDGE_JSON_FORBIDDEN_MEMBER",
      "EDGE_JSON_LIMIT",
      "EDGE_INVALID_REQUEST",
    ],
    file: FILE,
    run: (ctx) => {
      if (ctx.req.method !== "POST") {
        ctx.body = "";
        ctx.messages = [];
        ctx.batch = false;
        return;
      }
      checkPostHeaders(ctx.req, ctx.endpoint === "mcp");
      return readBody(ctx.req, maxBodyBytes).then((buf) => {
        const text = decodeBody(buf);
        const parsed = parseBody(text, { allowBatch: true, limits: jsonLimits });
        ctx.body = text;
        ctx.messages = parsed.messages;
        ctx.batch = parsed.batch;
        // From here on an error answer carries the request's id (JSON-RPC 2.0 §5).
        const first = parsed.messages[0];
        ctx.rpcId = first && isRequest(first) && !parsed.batch ? first.id : null;
      });
    },
  };
}

/**
 * Era, per request (a dual-era endpoint picks per request: 2026-07-28 transports). Header claims
 * are checked against the body before anything relies on them (routing, limits).
 */
export function era(): Stage<Parsed, { era: "session" | "stateless" }> {
  return {
    name: "era",
    does: "Picks the protocol era of the request from MCP-Protocol-Version, `_meta` and Mcp-Session-Id; refuses a version the edge does not know on a session.",
    codes: ["EDGE_PROTOCOL_VERSION_UNSUPPORTED", "EDGE_BAD_HEADER"],
    file: FILE,
    run: (ctx) => {
      const req = ctx.req;
      const version = single(req, "mcp-protocol-version");
      const sessionHeader = single(req, "mcp-session-id");
      const first = ctx.messages[0];
      const rpcMethod = first && "method" in first ? first.method : undefined;
      const metaVersion = first && !ctx.batch ? metaProtocolVersion(first) : undefined;
      const unknownVersion =
        (version !== undefined && !isKnownVersion(version)) ||
        (metaVersion !== undefined && !isKnownVersion(metaVersion));
      // A session negotiated a version the edge knows: anything else on it is refused here. Without
      // a session, only the upstream knows which versions it supports, so a request in a version
      // unknown to the edge goes there statelessly and the upstream's own -32022 (listing them)
      // answers it.
      if (unknownVersion && (sessionHeader !== undefined || rpcMethod === undefined)) {
        throw new GatewayError(
          "EDGE_PROTOCOL_VERSION_UNSUPPORTED",
          `Unsupported MCP-Protocol-Version: ${(version ?? metaVersion ?? "").slice(0, 40)}`,
        );
      }
      ctx.era =
        unknownVersion && rpcMethod !== "initialize"
          ? "stateless"
          : detectEra({
              method: rpcMethod,
              headerVersion: version,
              metaVersion,
              hasSessionHeader: sessionHeader !== undefined,
            });
    },
  };
}

/** 2026-07-28 is POST only (GET/DELETE → 405), has no batches, and its headers must match the body. */
export function statelessRules(): Stage<EraKnown> {
  return {
    name: "stateless-rules",
    does: "2026-07-28: POST only, no batches, `Mcp-Method` / `Mcp-Name` / `Mcp-Param-*` headers equal to the body's.",
    codes: [
      "EDGE_METHOD_NOT_ALLOWED",
      "EDGE_BATCH_REJECTED",
      "EDGE_HEADER_MISMATCH",
      "EDGE_PROTOCOL_VERSION_UNSUPPORTED",
      "EDGE_INVALID_REQUEST",
    ],
    file: FILE,
    run: (ctx) => {
      if (ctx.req.method !== "POST") {
        throw new GatewayError("EDGE_METHOD_NOT_ALLOWED", undefined, { headers: { allow: "POST" } });
      }
      if (ctx.batch) throw new GatewayError("EDGE_BATCH_REJECTED");
      const first = ctx.messages[0];
      if (first) validateStatelessHeaders({ get: (n) => single(ctx.req, n) }, first);
    },
  };
}

/**
 * Session era, before anything is spent on the request: `initialize` is never part of a batch
 * (MCP lifecycle), and batches exist only in 2025-03-26 (removed by 2025-06-18). The version here
 * is the one the client declares in MCP-Protocol-Version; a batch sent without the header is
 * judged by the session's negotiated version in the `session` stage.
 */
export function batchRules(): Stage<EraKnown> {
  return {
    name: "batch-rules",
    does: "Session era: `initialize` must be sent alone; a batch is refused when MCP-Protocol-Version is 2025-06-18 or later.",
    codes: ["EDGE_INVALID_REQUEST", "EDGE_BATCH_REJECTED"],
    file: FILE,
    run: (ctx) => {
      const messages = ctx.messages;
      if (messages.length <= 1) return;
      if (messages.some((m) => isRequest(m) && m.method === "initialize"))
        throw new GatewayError("EDGE_INVALID_REQUEST", "initialize must be sent alone.");
      const declared = single(ctx.req, "mcp-protocol-version");
      if (ctx.batch && declared !== undefined && declared >= "2025-06-18")
        throw new GatewayError("EDGE_BATCH_REJECTED");
    },
  };
}

/** The legacy transport (2024-11-05 `/messages`) takes one message per POST. */
export function legacyRules(): Stage<Parsed> {
  return {
    name: "legacy-rules",
    does: "Legacy `/messages`: one message per POST (no batches).",
    codes: ["EDGE_BATCH_REJECTED"],
    file: FILE,
    run: (ctx) => {
      if (ctx.batch) throw new GatewayError("EDGE_BATCH_REJECTED");
    },
  };
}

/** A GET opens a server-to-client stream: the client must accept one (MCP transports, "Listening"). */
export function acceptStream(): Stage<Parsed> {
  return {
    name: "accept",
    does: "GET: `Accept` must list `text/event-stream`.",
    codes: ["EDGE_NOT_ACCEPTABLE"],
    file: FILE,
    run: (ctx) => {
      if (ctx.req.method !== "GET") return;
      const accept = (ctx.req.headers.accept ?? "").toLowerCase();
      if (!accept.includes("text/event-stream") && !accept.includes("*/*")) {
        throw new GatewayError("EDGE_NOT_ACCEPTABLE", "GET needs Accept: text/event-stream.");
      }
    },
  };
}
