/**
 * The authenticator contract (src/auth/authenticate.ts with each credential method): a valid
 * credential gives a principal with its tenant and scopes; an expired one, one for another server
 * (audience), an unknown one and a malformed one are each refused with 401 EDGE_AUTH_INVALID_TOKEN
 * and a challenge saying `invalid_token` (RFC 6750 §3.1), never which check failed; no credential
 * is 401 EDGE_AUTH_REQUIRED with a challenge carrying no error code (RFC 6750 §3); two credentials
 * in one request are 400 EDGE_AUTH_INVALID_REQUEST (RFC 6750 §2: one method per request).
 *
 * Requests are real HTTP requests to a loopback server whose handler runs the authenticator, so
 * the headers it reads are the ones Node parsed off the wire.
 */
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import type { Authenticator } from "../../src/auth/authenticate.ts";
import type { Principal } from "../../src/auth/types.ts";
import type { Route } from "../../src/context.ts";
import { GatewayError } from "../../src/errors/errors.ts";

/** How a credential is sent: `Authorization: Bearer <credential>` or `X-API-Key: <credential>`. */
export type CredentialHeader = "authorization" | "x-api-key";

export interface AuthenticatorUnderTest {
  authenticator: Authenticator;
  route: Route;
  header: CredentialHeader;
  /** A valid credential, and the tenant and scopes its principal must carry. */
  valid(): Promise<{ credential: string; tenant: string; scopes: string[]; subject: string }>;
  expired(): Promise<string>;
  /** Valid, but for another server (API key of another route; token of another audience). */
  otherAudience(): Promise<string>;
  /** Well formed, never issued. */
  unknown(): Promise<string>;
  /** Not a credential of this method's syntax at all. */
  malformed(): Promise<string>;
  close(): Promise<void>;
}

type Outcome = { principal: Principal } | { error: GatewayError };

export function authenticatorContract(name: string, open: () => Promise<AuthenticatorUnderTest>): void {
  describe(`Authenticator contract: ${name}`, () => {
    let t: AuthenticatorUnderTest;
    let server: Server;
    let port = 0;
    const outcomes = new Map<string, Outcome>();

    before(async () => {
      t = await open();
      // Room for an over-long token: the authenticator, not Node's header limit, must refuse it.
      server = createServer({ maxHeaderSize: 64 * 1024 }, (req: IncomingMessage, res) => {
        const id = String(req.headers["x-test-id"]);
        t.authenticator
          .authenticate(req, t.route)
          .then(
            (principal) => outcomes.set(id, { principal }),
            (error: unknown) => {
              assert.ok(error instanceof GatewayError, `a GatewayError, not ${String(error)}`);
              outcomes.set(id, { error });
            },
          )
          .finally(() => res.writeHead(204).end());
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      port = (server.address() as AddressInfo).port;
    });
    after(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await t.close();
    });

    let n = 0;
    async function send(headers: [string, string][]): Promise<Outcome> {
      const id = String(++n);
      await new Promise<void>((resolve, reject) => {
        const req = request({
          host: "127.0.0.1",
          port,
          method: "POST",
          path: t.route.config.route,
          maxHeaderSize: 64 * 1024,
        });
        req.setHeader("x-test-id", id);
        for (const [k, v] of headers) req.appendHeader(k, v);
        req.on("response", (res) => {
          res.resume();
          res.on("end", resolve);
        });
        req.on("error", reject);
        req.end();
      });
      const o = outcomes.get(id);
      assert.ok(o, "the authenticator answered");
      return o;
    }

    function credential(value: string): [string, string][] {
      return [[t.header, t.header === "authorization" ? `Bearer ${value}` : value]];
    }

    function refused(o: Outcome, code: string, challengeError: string | undefined): GatewayError {
      assert.ok("error" in o, `refused, not ${JSON.stringify("principal" in o ? o.principal : o)}`);
      assert.equal(o.error.code, code, o.error.message);
      const challenge = o.error.headers?.["www-authenticate"] ?? "";
      assert.match(challenge, /^Bearer /, "a Bearer challenge (RFC 6750 §3)");
      if (challengeError) assert.match(challenge, new RegExp(`error="${challengeError}"`));
      else assert.doesNotMatch(challenge, /error=/, "no error code without a credential");
      return o.error;
    }

    test("a valid credential: a principal with its tenant, subject and scopes", async () => {
      const v = await t.valid();
      const o = await send(credential(v.credential));
      assert.ok("principal" in o, `accepted: ${"error" in o ? o.error.code : ""}`);
      assert.equal(o.principal.tenant, v.tenant);
      assert.equal(o.principal.subject, v.subject);
      assert.deepEqual([...o.principal.scopes].sort(), [...v.scopes].sort());
      assert.notEqual(o.principal.method, "none");
      assert.ok(o.principal.id.includes(v.tenant), "the identity key names the tenant");
    });

    test("the same valid credential twice: the same principal (stable identity)", async () => {
      const v = await t.valid();
      const a = await send(credential(v.credential));
      const b = await send(credential(v.credential));
      assert.ok("principal" in a && "principal" in b);
      assert.equal(a.principal.id, b.principal.id);
    });

    const invalid: [string, (t: AuthenticatorUnderTest) => Promise<string>][] = [
      ["expired", (x) => x.expired()],
      ["for another server (audience)", (x) => x.otherAudience()],
      ["unknown", (x) => x.unknown()],
      ["malformed", (x) => x.malformed()],
    ];
    const messages = new Set<string>();
    for (const [what, make] of invalid) {
      test(`a credential ${what}: 401 EDGE_AUTH_INVALID_TOKEN, challenge invalid_token`, async () => {
        const err = refused(
          await send(credential(await make(t))),
          "EDGE_AUTH_INVALID_TOKEN",
          "invalid_token",
        );
        assert.equal(err.status, 401);
        messages.add(err.message);
      });
    }

    test("every invalid credential gets the same message (nothing says which check failed)", () => {
      assert.equal(messages.size, 1, [...messages].join(" | "));
    });

    test("no credential: 401 EDGE_AUTH_REQUIRED with a challenge and no error code", async () => {
      const err = refused(await send([]), "EDGE_AUTH_REQUIRED", undefined);
      assert.equal(err.status, 401);
    });

    test("two credentials in one request: 400 EDGE_AUTH_INVALID_REQUEST, challenge invalid_request", async () => {
      const v = await t.valid();
      const both: [string, string][] = [
        ["authorization", `Bearer ${v.credential}`],
        ["x-api-key", v.credential],
      ];
      const err = refused(await send(both), "EDGE_AUTH_INVALID_REQUEST", "invalid_request");
      assert.equal(err.status, 400);
    });
  });
}
