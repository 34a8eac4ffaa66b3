import { isIP } from "node:net";
import { Agent, buildConnector, request } from "undici";

/**
 * The outbound side of `mcp-edge check`: one bounded request at a time to the endpoint the operator
 * named, recorded as evidence with credentials redacted.
 *
 * Why undici here and not src/egress: a conformance probe must send what a client or an attacker
 * would (a forged `Host`, a foreign `Origin`, an oversized body) to the exact URL typed on the command
 * line, must never follow a redirect (it reports it), and must see the answer as it came. The egress
 * guard exists to keep the gateway from being steered at private addresses by run-time URLs; here
 * the operator chose the target. URLs the target *discloses* (authorization servers, metadata) are
 * fetched through src/egress instead (discovered.ts).
 */

export interface ProbeRequest {
  method: "GET" | "POST" | "DELETE";
  url: string;
  headers: Record<string, string>;
  body?: string | Buffer;
  /** Stop reading the body once this returns true (the answer we wanted has arrived). */
  enough?: (text: string) => boolean;
  /** For long-lived streams: after the headers, read at most this long, then close. */
  streamWaitMs?: number;
}

export interface ProbeAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Set when no HTTP answer came (refused, reset, timeout). */
  error?: string;
  ms: number;
}

/** One request and its answer, as a finding shows it (credentials redacted, bodies cut). */
export interface Exchange {
  request: { method: string; url: string; headers: Record<string, string>; body?: string };
  answer: { status: number; headers: Record<string, string>; body: string; error?: string; ms: number };
}

export interface ProberOptions {
  /** Milliseconds for one request (connect, headers and body). Default 10 000. */
  timeoutMs: number;
  /** Requests this run may send in all (the probes are bounded). */
  maxRequests: number;
  /** Header names whose values are secrets (lower case); their values never appear in output. */
  secretHeaders: Set<string>;
  /** Secret strings (tokens) scrubbed from URLs and bodies in the evidence. */
  secretValues: string[];
  /** Accept a certificate that does not verify (reported, never silently). Default false. */
  insecureTls?: boolean;
  /** The host the probes go to: TLS verifies the certificate against it, whatever Host is sent. */
  host: string;
}

const MAX_BODY = 256 * 1024;
const EVIDENCE_BODY = 600;
const ALWAYS_SECRET = ["authorization", "cookie", "proxy-authorization", "x-api-key", "set-cookie"];

export class BudgetExceeded extends Error {
  constructor(limit: number) {
    super(`probe budget of ${limit} requests exhausted`);
    this.name = "BudgetExceeded";
  }
}

export class Prober {
  readonly #agent: Agent;
  readonly #opts: ProberOptions;
  #sent = 0;

  constructor(opts: ProberOptions) {
    this.#opts = opts;
    // undici would take the TLS server name from a forged Host header; the certificate must be
    // checked against the host the operator named (RFC 6066 §3: SNI carries a DNS name, never an IP).
    const base = buildConnector({ timeout: opts.timeoutMs, rejectUnauthorized: !opts.insecureTls });
    const host = opts.host.replace(/^\[|\]$/g, "");
    const servername = isIP(host) ? undefined : host;
    this.#agent = new Agent({
      connect: (o, cb) => base({ ...o, servername: servername ?? null } as Parameters<typeof base>[0], cb),
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
      // One connection per request: a probe that leaves a connection in a strange state (a refused
      // oversized body) must not poison the next one.
      pipelining: 0,
    });
  }

  get sent(): number {
    return this.#sent;
  }

  /** Counts one request against the budget (throws BudgetExceeded when it is spent). */
  charge(): void {
    if (this.#sent >= this.#opts.maxRequests) throw new BudgetExceeded(this.#opts.maxRequests);
    this.#sent++;
  }

  async send(req: ProbeRequest): Promise<{ answer: ProbeAnswer; exchange: Exchange }> {
    this.charge();
    const started = performance.now();
    const ac = new AbortController();
    const deadline = setTimeout(() => ac.abort(new Error("timeout")), this.#opts.timeoutMs);
    let answer: ProbeAnswer;
    try {
      const res = await request(req.url, {
        method: req.method,
        headers: { connection: "close", ...req.headers },
        body: req.body ?? null,
        dispatcher: this.#agent,
        signal: ac.signal,
      });
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers)) {
        if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : v;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      let text = "";
      let streamTimer: NodeJS.Timeout | undefined;
      const streamDone = new Promise<void>((resolve) => {
        if (req.streamWaitMs !== undefined) streamTimer = setTimeout(resolve, req.streamWaitMs);
      });
      const reading = (async () => {
        try {
          for await (const chunk of res.body) {
            const b = chunk as Buffer;
            chunks.push(b);
            size += b.length;
            text = Buffer.concat(chunks).toString("utf8");
            if (size >= MAX_BODY || req.enough?.(text)) break;
          }
        } catch {
          // Aborted or reset mid-body: what arrived is the answer.
        }
      })();
      await Promise.race([reading, streamDone]);
      if (streamTimer) clearTimeout(streamTimer);
      res.body.destroy();
      answer = { status: res.statusCode, headers, body: text, ms: Math.round(performance.now() - started) };
    } catch (err) {
      const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
      const code = e.cause?.code ?? e.code;
      const message = ac.signal.aborted
        ? `no answer within ${this.#opts.timeoutMs} ms`
        : (e.cause?.message ?? e.message);
      answer = {
        status: 0,
        headers: {},
        body: "",
        error: code ? `${code}: ${message ?? ""}` : (message ?? String(err)),
        ms: Math.round(performance.now() - started),
      };
    } finally {
      clearTimeout(deadline);
    }
    return { answer, exchange: this.evidence(req, answer) };
  }

  redact(text: string): string {
    let out = text;
    for (const s of this.#opts.secretValues) if (s.length >= 4) out = out.split(s).join("[redacted]");
    return out.replace(/([?&](?:access_token|token|api_key|key)=)[^&\s"]+/gi, "$1[redacted]");
  }

  #headers(h: Record<string, string>): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(h)) {
      const name = k.toLowerCase();
      const secret = this.#opts.secretHeaders.has(name) || ALWAYS_SECRET.includes(name);
      out[name] = secret ? redactValue(v) : this.redact(v);
    }
    return out;
  }

  /** The request and answer as a finding shows them: secrets redacted, bodies cut. */
  evidence(req: ProbeRequest, answer: ProbeAnswer): Exchange {
    const body =
      req.body === undefined
        ? undefined
        : cut(this.redact(req.body.toString()), EVIDENCE_BODY, req.body.length);
    return {
      request: {
        method: req.method,
        url: this.redact(req.url),
        headers: this.#headers(req.headers),
        ...(body === undefined ? {} : { body }),
      },
      answer: {
        status: answer.status,
        headers: this.#headers(answer.headers),
        body: cut(this.redact(answer.body), EVIDENCE_BODY, answer.body.length),
        ...(answer.error ? { error: answer.error } : {}),
        ms: answer.ms,
      },
    };
  }

  async close(): Promise<void> {
    await this.#agent.destroy().catch(() => undefined);
  }
}

/** Keeps the scheme word of an Authorization value ("Bearer [redacted]") so the evidence stays readable. */
function redactValue(v: string): string {
  const m = /^(Bearer|Basic|DPoP|Token)\s+/i.exec(v);
  return m ? `${m[1]} [redacted]` : "[redacted]";
}

function cut(text: string, max: number, total: number): string {
  if (total > 64 * 1024 && text.length > max) return `${text.slice(0, 80)}… (${total} bytes)`;
  return text.length > max ? `${text.slice(0, max)}… (${text.length} chars)` : text;
}
