/**
 * The one way a JSON-RPC message becomes text on an upstream channel (a stdio line, a legacy SSE
 * POST body) or in an SSE `data` field: the edge's own compact serialization of the message it
 * judged, never the client's or the upstream's bytes.
 *
 * Why: stdio framing is "one message per line" (MCP 2025-11-25 basic/transports, stdio: messages
 * are delimited by newlines and MUST NOT contain embedded newlines), but readers disagree on what a
 * line break is. Python's universal-newline text readers split on CR and CRLF as well as LF, and
 * `str.splitlines()` also on VT, FF, FS/GS/RS, NEL (U+0085), LINE SEPARATOR (U+2028) and PARAGRAPH
 * SEPARATOR (U+2029); JavaScript treats U+2028/U+2029 as line terminators (ECMA-262 §12.3). JSON
 * allows CR/LF as whitespace between tokens (RFC 8259 §2) and U+0085/U+2028/U+2029 raw inside
 * strings (§7), so forwarding a client's bytes could let one judged message become two for the
 * upstream. `JSON.stringify` emits no whitespace and escapes every control character below U+0020
 * (CR, LF, VT, FF, FS, GS, RS included); the three characters above it that some reader breaks
 * lines on are escaped here. They can occur in the output only inside strings, where `\uXXXX` is
 * the same character (RFC 8259 §7), so the message means exactly what it meant before.
 */

/** Line-breaking characters that `JSON.stringify` leaves raw inside strings. */
const RAW_LINE_BREAKS = /[\u0085\u2028\u2029]/g;

/** Every character some line reader splits on: none may remain in a framed message. */
export const LINE_BREAKS = /[\n\r\v\f\u001c-\u001e\u0085\u2028\u2029]/;

function escape(c: string): string {
  return `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
}

/** One message as one line of text, without the line terminator; see above. */
export function frameMessage(msg: unknown): string {
  const text = JSON.stringify(msg);
  if (typeof text !== "string") throw new TypeError("a JSON-RPC message must serialize to JSON text");
  return text.replace(RAW_LINE_BREAKS, escape);
}
