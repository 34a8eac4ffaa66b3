import { z } from "zod";
import type { Exchange, ProbeAnswer } from "./http.ts";
import { type Category, ruleById, type Severity } from "./rules.ts";

/**
 * What a check run produces: one finding per rule judged (pass / fail) or not judged (skip, with
 * the reason), and the pure helpers that read MCP answers (JSON or SSE) out of probe answers.
 */

export type Status = "pass" | "fail" | "skip";

export interface Finding {
  id: string;
  category: Category;
  severity: Severity;
  title: string;
  cite: string;
  url: string;
  status: Status;
  /** Why it passed, failed or was skipped, in one sentence. */
  detail: string;
  evidence: Exchange[];
}

export function finding(id: string, status: Status, detail: string, evidence: Exchange[] = []): Finding {
  const r = ruleById(id);
  return { ...r, status, detail, evidence };
}

const rpcResponse = z
  .object({
    jsonrpc: z.literal("2.0"),
    id: z.union([z.string(), z.number(), z.null()]),
    result: z.record(z.string(), z.unknown()).optional(),
    error: z.object({ code: z.number(), message: z.string(), data: z.unknown().optional() }).optional(),
  })
  .refine((m) => (m.result === undefined) !== (m.error === undefined), "exactly one of result and error");
export type RpcAnswer = z.infer<typeof rpcResponse>;

/** Every JSON value in the answer: the body as JSON, or each SSE `data` payload. */
export function messagesOf(answer: ProbeAnswer): unknown[] {
  const type = answer.headers["content-type"] ?? "";
  if (type.includes("text/event-stream")) {
    const out: unknown[] = [];
    for (const block of answer.body.split(/\r?\n\r?\n/)) {
      const data = block
        .split(/\r?\n/)
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      try {
        out.push(JSON.parse(data));
      } catch {
        // not JSON: not a JSON-RPC message
      }
    }
    return out;
  }
  try {
    return [JSON.parse(answer.body)];
  } catch {
    return [];
  }
}

/** The JSON-RPC response with this id in the answer (JSON body or SSE stream), if any. */
export function responseFor(answer: ProbeAnswer, id: number | string | null): RpcAnswer | undefined {
  for (const m of messagesOf(answer)) {
    const parsed = rpcResponse.safeParse(m);
    if (parsed.success && parsed.data.id === id) return parsed.data;
  }
  return undefined;
}

/** Any JSON-RPC error response in the answer (id-less ones included). */
export function errorOf(answer: ProbeAnswer): RpcAnswer["error"] | undefined {
  for (const m of messagesOf(answer)) {
    const parsed = rpcResponse.safeParse(m);
    if (parsed.success && parsed.data.error) return parsed.data.error;
  }
  return undefined;
}

/** Event ids the SSE answer carried (priming events included). */
export function eventIds(answer: ProbeAnswer): string[] {
  if (!(answer.headers["content-type"] ?? "").includes("text/event-stream")) return [];
  const ids: string[] = [];
  for (const line of answer.body.split(/\r?\n/)) {
    if (line.startsWith("id:")) {
      const id = line.slice(3).replace(/^ /, "");
      if (id) ids.push(id);
    }
  }
  return ids;
}

/** A stop condition for `Prober.send`: the response with this id has fully arrived. */
export function hasResponse(id: number | string): (text: string) => boolean {
  const needle = typeof id === "number" ? `"id":${id}` : `"id":${JSON.stringify(id)}`;
  return (text) => {
    const at = text.replace(/\s/g, "").indexOf(needle);
    if (at < 0) return false;
    // SSE: the event ends with a blank line; JSON: the body is parseable.
    return /\n\n|\r\n\r\n/.test(text.slice(text.indexOf('"id"'))) || isJson(text);
  };
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** One `WWW-Authenticate` challenge: scheme and auth-params (RFC 9110 §11.6.1). */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` value into its challenges, or returns the reason it is malformed.
 * Grammar (RFC 9110 §11.6.1): challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ],
 * auth-param = token BWS "=" BWS ( token / quoted-string ).
 */
export function parseChallenges(value: string): Challenge[] | string {
  const tchar = /[!#$%&'*+.^_`|~0-9A-Za-z-]/;
  const out: Challenge[] = [];
  let i = 0;
  const s = value;
  const ws = () => {
    while (i < s.length && (s[i] === " " || s[i] === "\t")) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < s.length && tchar.test(s[i] ?? "")) i++;
    return s.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < s.length) {
    ws();
    if (s[i] === ",") {
      i++;
      continue;
    }
    const start = i;
    const name = token();
    if (!name) return `unexpected character ${JSON.stringify(s[i])} at ${i}`;
    ws();
    if (s[i] === "=") {
      i++;
      ws();
      let v: string;
      if (s[i] === '"') {
        i++;
        v = "";
        while (i < s.length && s[i] !== '"') {
          if (s[i] === "\\") i++;
          v += s[i] ?? "";
          i++;
        }
        if (s[i] !== '"') return `unterminated quoted-string for ${name}`;
        i++;
      } else {
        v = token();
        if (!v) return `empty value for ${name}`;
      }
      if (!current) return `auth-param ${name} before any scheme`;
      current.params[name.toLowerCase()] = v;
    } else {
      // A new challenge (the scheme) — a token not followed by "=".
      i = start;
      const scheme = token();
      current = { scheme, params: {} };
      out.push(current);
    }
  }
  if (out.length === 0) return "no challenge";
  return out;
}

/** RFC 6750 §3.1 error codes a Bearer challenge may carry. */
export const BEARER_ERRORS = new Set(["invalid_request", "invalid_token", "insufficient_scope"]);

export function bearerOf(value: string | undefined): Challenge | undefined {
  if (!value) return undefined;
  const parsed = parseChallenges(value);
  if (typeof parsed === "string") return undefined;
  return parsed.find((c) => c.scheme.toLowerCase() === "bearer");
}
