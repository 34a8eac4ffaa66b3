import { lookup } from "node:dns/promises";
import { Egress } from "../egress/index.ts";
import { classifyAddress } from "../egress/policy.ts";
import { isLoopbackHost } from "./context.ts";
import type { Exchange, ProbeAnswer, Prober } from "./http.ts";

/**
 * Fetches URLs the target disclosed about itself (a `resource_metadata` URL, authorization
 * servers, their endpoints). Those are chosen by the server under test, not by the operator, so a
 * URL on another origin goes through the product's guarded egress as a run-time URL (every hop
 * checked, the resolved address pinned: MCP 2025-11-25 Security Best Practices §SSRF). Private and
 * loopback addresses are allowed only when the target itself is on one — a local server's local
 * authorization server is normal; a public server pointing the checker at 10.0.0.1 is not.
 * Same-origin URLs go through the probe client like every other request to the target.
 */
export class DiscoveredFetcher {
  readonly #target: URL;
  readonly #prober: Prober;
  readonly #timeoutMs: number;
  #egress: Egress | undefined;
  /** The target is on a private or loopback network: what it discloses about itself may be too. */
  #privateTarget = false;

  constructor(target: URL, prober: Prober, timeoutMs: number) {
    this.#target = target;
    this.#prober = prober;
    this.#timeoutMs = timeoutMs;
  }

  async #guard(): Promise<Egress> {
    if (this.#egress) return this.#egress;
    let privateTarget = isLoopbackHost(this.#target.hostname);
    if (!privateTarget) {
      const addrs = await lookup(this.#target.hostname.replace(/^\[|\]$/g, ""), { all: true }).catch(
        () => [],
      );
      privateTarget = addrs.some((a) => classifyAddress(a.address).range !== "unicast");
    }
    this.#privateTarget = privateTarget;
    this.#egress = new Egress({
      connectTimeout: this.#timeoutMs,
      rules: { allowPrivate: privateTarget },
      maxRedirects: 3,
    });
    return this.#egress;
  }

  async get(url: string, accept = "application/json"): Promise<{ answer: ProbeAnswer; exchange: Exchange }> {
    const u = new URL(url);
    if (u.origin === this.#target.origin) {
      return this.#prober.send({ method: "GET", url, headers: { accept } });
    }
    this.#prober.charge();
    const started = performance.now();
    let answer: ProbeAnswer;
    try {
      if (u.protocol !== "https:" && u.protocol !== "http:") throw new Error(`scheme ${u.protocol} refused`);
      const egress = await this.#guard();
      const res = await egress.request(url, {
        method: "GET",
        headers: { accept },
        trust: "runtime",
        // A private target (the operator's own deployment) names its own issuers and their ports;
        // a public one reaches only 80 and 443, as every run-time URL of the edge does.
        ...(this.#privateTarget ? { namedBy: url } : {}),
        headersTimeout: this.#timeoutMs,
        maxResponseBytes: 256 * 1024,
      });
      const chunks: Buffer[] = [];
      for await (const c of res.body) chunks.push(c);
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers))
        if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : v;
      answer = {
        status: res.status,
        headers,
        body: Buffer.concat(chunks).toString("utf8"),
        ms: Math.round(performance.now() - started),
      };
    } catch (err) {
      const e = err as { code?: string; message?: string };
      answer = {
        status: 0,
        headers: {},
        body: "",
        error: `${e.code ?? "error"}: ${e.message ?? String(err)}`,
        ms: Math.round(performance.now() - started),
      };
    }
    return { answer, exchange: this.#prober.evidence({ method: "GET", url, headers: { accept } }, answer) };
  }

  async close(): Promise<void> {
    await this.#egress?.destroy();
  }
}
