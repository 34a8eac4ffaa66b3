/** IssuerTenants (src/auth/oauth.ts): which tenants each issuer may assert. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { IssuerTenants } from "../../src/auth/oauth.ts";

describe("IssuerTenants", () => {
  const A = "https://a.example";
  const B = "https://b.example";
  const C = "https://c.example";
  const t = new IssuerTenants([
    { issuer: A, tenants: ["acme", "acme-labs"] },
    { issuer: B, tenants: ["globex"] },
    { issuer: C },
  ]);
  const cases: [string, string | null, boolean][] = [
    [A, "acme", true],
    [A, "acme-labs", true],
    [A, "globex", false],
    [A, "initech", false],
    [A, null, false],
    [A, "Acme", false],
    [B, "globex", true],
    [B, "acme", false],
    [C, "acme", false],
    [C, "globex", false],
    [C, "initech", true],
    [C, null, true],
    ["https://unknown.example", "acme", false],
  ];
  for (const [issuer, tenant, allowed] of cases) {
    test(`${issuer} asserting ${String(tenant)} → ${allowed ? "allowed" : "refused"}`, () => {
      assert.equal(t.allows(issuer, tenant), allowed);
    });
  }

  test("a single issuer without a list may assert any tenant (no binding configured)", () => {
    const one = new IssuerTenants([{ issuer: A }]);
    assert.equal(one.allows(A, "anything"), true);
    assert.equal(one.allows(A, null), true);
  });
});
