/**
 * src/egress/policy.ts: the address policy, table-driven over every literal spelling and range of
 * SSRF threats and the npm SSRF-filter bypasses seen in the field ("Real failures": `127.1`,
 * `0x7f.1`, `017700000001`, `::fFFf:127.0.0.1`, WHATWG's hextet rewrite, 6to4, IPv6). Each
 * literal is checked both as written and as WHATWG URL normalizes it.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Egress } from "../../src/egress/index.ts";
import {
  checkAddress,
  checkPort,
  checkTarget,
  checkUrl,
  classifyAddress,
  deniedName,
  namedTarget,
  type EgressRules,
  parseAllowCidr,
  parseAllowHost,
  parseHostLiteral,
} from "../../src/egress/policy.ts";

const STRICT: EgressRules = { allowPrivate: false };
const PRIVATE_OK: EgressRules = { allowPrivate: true };

/** [host as written in a URL, range expected]. */
const LITERALS: Array<[string, string]> = [
  // G57: loopback in every spelling
  ["127.0.0.1", "loopback"],
  ["127.1", "loopback"],
  ["127.0.1", "loopback"],
  ["0177.0.0.1", "loopback"],
  ["0x7f.1", "loopback"],
  ["0x7f.0.0.1", "loopback"],
  ["0x7f000001", "loopback"],
  ["2130706433", "loopback"],
  ["017700000001", "loopback"],
  ["127.255.255.254", "loopback"],
  ["0.0.0.0", "unspecified"],
  ["0", "unspecified"],
  ["0.1.2.3", "unspecified"],
  ["[::]", "unspecified"],
  ["[::1]", "loopback"],
  ["[0:0:0:0:0:0:0:1]", "loopback"],
  ["[::ffff:127.0.0.1]", "ipv4Mapped→loopback"],
  ["[::fFFf:127.0.0.1]", "ipv4Mapped→loopback"],
  ["[::ffff:7f00:1]", "ipv4Mapped→loopback"],
  ["[0:0:0:0:0:ffff:7f00:0001]", "ipv4Mapped→loopback"],
  ["[::ffff:10.0.0.1]", "ipv4Mapped→private"],
  ["[::ffff:169.254.169.254]", "ipv4Mapped→metadata"],
  ["[::7f00:1]", "ipv4Compatible→loopback"],
  ["[::ffff:0:7f00:1]", "ipv4Translated→loopback"],
  // G59: metadata, link-local, private and friends
  ["169.254.169.254", "metadata"],
  ["0xa9.0xfe.0xa9.0xfe", "metadata"],
  ["2852039166", "metadata"],
  ["169.254.170.2", "metadata"],
  ["100.100.100.200", "metadata"],
  ["[fd00:ec2::254]", "metadata"],
  ["169.254.1.1", "linkLocal"],
  ["10.0.0.1", "private"],
  ["012.0.0.1", "private"],
  ["172.16.0.1", "private"],
  ["172.31.255.255", "private"],
  ["192.168.1.1", "private"],
  ["100.64.0.1", "carrierGradeNat"],
  ["100.127.255.255", "carrierGradeNat"],
  ["198.18.0.1", "benchmarking"],
  ["198.19.255.255", "benchmarking"],
  ["192.0.2.1", "documentation"],
  ["203.0.113.9", "documentation"],
  ["192.0.0.8", "reserved"],
  ["224.0.0.1", "multicast"],
  ["239.255.255.250", "multicast"],
  ["240.0.0.1", "reserved"],
  ["255.255.255.255", "broadcast"],
  ["[fc00::1]", "uniqueLocal"],
  ["[fd12:3456::1]", "uniqueLocal"],
  ["[fe80::1]", "linkLocal"],
  ["[febf::1]", "linkLocal"],
  ["[fec0::1]", "siteLocal"],
  ["[ff02::1]", "multicast"],
  ["[2001:db8::1]", "documentation"],
  ["[2001:2::1]", "benchmarking"],
  ["[100::1]", "discard"],
  ["[4000::1]", "reserved"],
  // IPv4 embedded in IPv6
  ["[2002:7f00:1::]", "6to4→loopback"],
  ["[2002:a00:1::1]", "6to4→private"],
  ["[2002:a9fe:a9fe::]", "6to4→metadata"],
  ["[2001::1]", "teredo"],
  ["[2001:0:4136:e378:8000:63bf:3fff:fdd2]", "teredo"],
  ["[64:ff9b::7f00:1]", "nat64→loopback"],
  ["[64:ff9b::127.0.0.1]", "nat64→loopback"],
  ["[64:ff9b::a9fe:a9fe]", "nat64→metadata"],
  ["[64:ff9b:1::1]", "nat64Local"],
];

const PUBLIC: Array<[string, string]> = [
  ["8.8.8.8", "unicast"],
  ["1.1", "unicast"], // 1.0.0.1
  ["134744072", "unicast"], // 8.8.8.8
  ["172.32.0.1", "unicast"],
  ["100.128.0.1", "unicast"],
  ["[2606:4700:4700::1111]", "unicast"],
  ["[::ffff:8.8.8.8]", "ipv4Mapped→unicast"],
  ["[64:ff9b::808:808]", "nat64→unicast"],
  ["[2002:808:808::1]", "6to4→unicast"],
];

describe("classifyAddress", () => {
  for (const [host, range] of LITERALS) {
    test(`${host} → ${range}, denied (raw and URL-normalized)`, () => {
      const raw = classifyAddress(host);
      assert.deepEqual(raw, { range, denied: true });
      const normalized = new URL(`http://${host}/`).hostname;
      assert.deepEqual(classifyAddress(normalized), raw, `URL form ${normalized}`);
    });
  }
  for (const [host, range] of PUBLIC) {
    test(`${host} → ${range}, allowed`, () => {
      assert.deepEqual(classifyAddress(host), { range, denied: false });
      assert.deepEqual(classifyAddress(new URL(`http://${host}/`).hostname), { range, denied: false });
    });
  }
  test("zone ids: fe80::1%eth0 and the URL spelling %25 are link-local", () => {
    assert.deepEqual(classifyAddress("fe80::1%eth0"), { range: "linkLocal", denied: true });
    assert.deepEqual(classifyAddress("[fe80::1%25eth0]"), { range: "linkLocal", denied: true });
    assert.deepEqual(classifyAddress("fe80::1%1"), { range: "linkLocal", denied: true });
  });
  test("anything that is not an IP address is invalid and denied (fail closed)", () => {
    for (const s of [
      "",
      "example.com",
      "1.2.3.4.5",
      "08.1.1.1",
      "256.1.1.1",
      "4294967296",
      "::g",
      "[::1",
      "0x",
    ]) {
      assert.deepEqual(classifyAddress(s), { range: "invalid", denied: true }, s);
    }
  });
});

describe("parseHostLiteral", () => {
  const cases: Array<[string, ReturnType<typeof parseHostLiteral>]> = [
    ["127.1", { family: 4, address: "127.0.0.1" }],
    ["0x7f.1", { family: 4, address: "127.0.0.1" }],
    ["0177.0.0.1", { family: 4, address: "127.0.0.1" }],
    ["2130706433", { family: 4, address: "127.0.0.1" }],
    ["017700000001", { family: 4, address: "127.0.0.1" }],
    ["127.0.0.1.", { family: 4, address: "127.0.0.1" }],
    ["[::1]", { family: 6, address: "::1" }],
    ["::1", { family: 6, address: "::1" }],
    ["[::fFFf:127.0.0.1]", { family: 6, address: "::ffff:7f00:1" }],
    ["[::ffff:7f00:1]", { family: 6, address: "::ffff:7f00:1" }],
    ["fe80::1%eth0", { family: 6, address: "fe80::1%eth0", zoneId: "eth0" }],
    ["[fe80::1%25eth0]", { family: 6, address: "fe80::1%eth0", zoneId: "eth0" }],
    ["[2001:DB8:0:0:0:0:0:1]", { family: 6, address: "2001:db8::1" }],
    ["example.com", undefined],
    ["localhost", undefined],
    ["1.2.3.4.5", undefined],
    ["08.1.1.1", undefined],
  ];
  for (const [host, expected] of cases) {
    test(`${host}`, () => assert.deepEqual(parseHostLiteral(host), expected));
  }
  test("WHATWG URL rejects a zone id in a URL; the raw form still parses", () => {
    assert.throws(() => new URL("http://[fe80::1%25eth0]/"));
    assert.equal(parseHostLiteral("fe80::1%eth0")?.zoneId, "eth0");
  });
});

describe("deniedName", () => {
  const cases: Array<[string, string | undefined]> = [
    ["localhost", "name:localhost"],
    ["LOCALHOST", "name:localhost"],
    ["localhost.", "name:localhost"],
    ["api.localhost", "name:localhost"],
    ["a.b.localhost.", "name:localhost"],
    ["metadata", "name:metadata"],
    ["metadata.google.internal", "name:metadata"],
    ["metadata.google.internal.", "name:metadata"],
    ["instance-data.ec2.internal", "name:metadata"],
    ["", "name:empty"],
    ["example.com", undefined],
    ["notlocalhost", undefined],
    ["localhost.example.com", undefined],
  ];
  for (const [name, rule] of cases)
    test(`${JSON.stringify(name)} → ${rule}`, () => assert.equal(deniedName(name), rule));
});

describe("checkTarget", () => {
  const u = (s: string) => new URL(s);
  test("every literal of the table is denied by its range, before resolution", () => {
    for (const [host, range] of LITERALS) {
      const url = u(`http://${host}:8080/x`);
      const d = checkUrl(url, STRICT);
      assert.equal(d.allowed, false, host);
      assert.equal(!d.allowed && d.rule, `range:${range}`, host);
      assert.deepEqual(checkTarget(url, [], STRICT), d);
    }
  });
  test("scheme: only http and https", () => {
    for (const s of [
      "file:///etc/passwd",
      "gopher://example.com/",
      "ftp://example.com/",
      "ws://example.com/",
      "data:,x",
    ]) {
      assert.deepEqual(checkTarget(u(s), ["8.8.8.8"], STRICT), { allowed: false, rule: "scheme" }, s);
    }
  });
  test("names denied before resolution, whatever they resolve to", () => {
    assert.deepEqual(checkTarget(u("http://localhost:3000/"), ["8.8.8.8"], STRICT), {
      allowed: false,
      rule: "name:localhost",
    });
    assert.deepEqual(
      checkTarget(u("http://metadata.google.internal/computeMetadata/v1/"), ["8.8.8.8"], STRICT),
      {
        allowed: false,
        rule: "name:metadata",
      },
    );
  });
  test("a public name is allowed when every address is public", () => {
    assert.deepEqual(checkTarget(u("https://api.example.com/"), ["8.8.8.8", "2606:4700::1"], STRICT), {
      allowed: true,
    });
  });
  test("one private address among public ones denies the whole name", () => {
    assert.deepEqual(checkTarget(u("https://api.example.com/"), ["8.8.8.8", "10.1.2.3"], STRICT), {
      allowed: false,
      rule: "range:private",
      address: "10.1.2.3",
    });
    assert.deepEqual(checkTarget(u("https://api.example.com/"), ["2606:4700::1", "::ffff:7f00:1"], STRICT), {
      allowed: false,
      rule: "range:ipv4Mapped→loopback",
      address: "::ffff:7f00:1",
    });
  });
  test("a name that resolves to nothing is denied (fail closed)", () => {
    assert.deepEqual(checkTarget(u("https://api.example.com/"), [], STRICT), {
      allowed: false,
      rule: "unresolved",
    });
    assert.deepEqual(checkTarget(u("https://api.example.com/"), ["not-an-ip"], STRICT), {
      allowed: false,
      rule: "range:invalid",
      address: "not-an-ip",
    });
  });
  test("allowPrivate opens private ranges (any spelling), never metadata or reserved", () => {
    for (const ip of [
      "10.0.0.1",
      "127.0.0.1",
      "::1",
      "fd00::1",
      "100.64.1.1",
      "::ffff:192.168.0.1",
      "fe80::1",
      "2002:a00:1::",
    ]) {
      assert.deepEqual(checkAddress(ip, PRIVATE_OK), { allowed: true }, ip);
      assert.equal(checkAddress(ip, STRICT).allowed, false, ip);
    }
    for (const ip of [
      "169.254.169.254",
      "fd00:ec2::254",
      "100.100.100.200",
      "0.0.0.0",
      "::",
      "224.0.0.1",
      "240.0.0.1",
      "2001::1",
      "::7f00:1",
      "::ffff:169.254.169.254",
    ]) {
      assert.equal(checkAddress(ip, PRIVATE_OK).allowed, false, ip);
    }
  });
  test("allowCidrs opens exactly the listed ranges (IPv4-mapped spellings too)", () => {
    const rules: EgressRules = {
      allowPrivate: false,
      allowCidrs: ["10.20.0.0/16", "127.0.0.2", "fd00:1::/48"],
    };
    assert.deepEqual(checkAddress("10.20.3.4", rules), { allowed: true });
    assert.deepEqual(checkAddress("::ffff:10.20.3.4", rules), { allowed: true });
    assert.deepEqual(checkAddress("127.0.0.2", rules), { allowed: true });
    assert.deepEqual(checkAddress("fd00:1::5", rules), { allowed: true });
    assert.equal(checkAddress("10.21.0.1", rules).allowed, false);
    assert.equal(checkAddress("127.0.0.1", rules).allowed, false);
  });
  test("allowHosts: an exact host:port exception skips name and address checks, nothing else", () => {
    const rules: EgressRules = {
      allowPrivate: false,
      allowHosts: ["idp.internal:8443", "127.0.0.1:9000", "[::1]:443"],
    };
    assert.deepEqual(checkTarget(u("https://idp.internal:8443/jwks"), ["10.0.0.7"], rules), {
      allowed: true,
    });
    assert.deepEqual(checkTarget(u("http://127.1:9000/"), [], rules), { allowed: true });
    assert.deepEqual(checkTarget(u("https://[0::1]/"), [], rules), { allowed: true });
    assert.equal(checkTarget(u("https://idp.internal:8444/"), ["10.0.0.7"], rules).allowed, false);
    assert.equal(checkTarget(u("http://127.0.0.1:9001/"), [], rules).allowed, false);
    assert.deepEqual(checkTarget(u("ftp://127.0.0.1:9000/"), [], rules), { allowed: false, rule: "scheme" });
  });
});

describe("rule parsing", () => {
  test("parseAllowHost canonicalizes and is idempotent", () => {
    const cases: Array<[string, string]> = [
      ["API.Example.com:443", "api.example.com:443"],
      ["127.1:80", "127.0.0.1:80"],
      ["[0:0::1]:8443", "[::1]:8443"],
      ["host.:9", "host:9"],
    ];
    for (const [input, key] of cases) {
      assert.equal(parseAllowHost(input), key);
      assert.equal(parseAllowHost(key), key);
    }
    for (const bad of ["host", "host:", "host:x", "http://host:1", "host:1/path", "user@host:1", ":80"]) {
      assert.throws(() => parseAllowHost(bad), Error, bad);
    }
  });
  test("parseAllowCidr takes CIDRs and single addresses, nothing else", () => {
    assert.equal(parseAllowCidr("10.0.0.0/8")[1], 8);
    assert.equal(parseAllowCidr("127.0.0.2")[1], 32);
    assert.equal(parseAllowCidr("fd00::/8")[1], 8);
    assert.equal(parseAllowCidr("::1")[1], 128);
    for (const bad of ["10.0.0.0/33", "example.com", "10.0.0.0/", ""])
      assert.throws(() => parseAllowCidr(bad), Error, bad);
  });
});

describe("Egress.request", () => {
  test("a URL that does not parse rejects the returned promise (never a synchronous throw)", async () => {
    const egress = new Egress({ connectTimeout: 1000 });
    try {
      let p: Promise<unknown> | undefined;
      assert.doesNotThrow(() => {
        p = egress.request("not a url", { method: "GET", headers: {} });
      });
      await assert.rejects(p as Promise<unknown>, TypeError);
    } finally {
      await egress.close();
    }
  });
});

describe("checkPort", () => {
  const open = { allowPrivate: true, allowCidrs: ["10.0.0.0/8"] };
  const cases: [string, Parameters<typeof checkPort>[1], readonly string[], string | null][] = [
    ["http://10.0.0.5/", open, [], null],
    ["https://10.0.0.5/", open, [], null],
    ["https://10.0.0.5:80/", open, [], null],
    ["http://10.0.0.5:6379/", open, [], "port:6379"],
    ["http://10.0.0.5:25/", open, [], "port:25"],
    ["http://10.0.0.5:11211/", open, [], "port:11211"],
    ["https://api.example:8443/", { allowPrivate: false }, [], "port:8443"],
    ["https://api.example:8443/", { allowPrivate: false, allowPorts: [8443] }, [], null],
    ["https://API.example.:8443/", { allowPrivate: false, allowHosts: ["api.example:8443"] }, [], null],
    ["https://api.example:8444/", { allowPrivate: false, allowHosts: ["api.example:8443"] }, [], "port:8444"],
    [
      "https://other.example:8443/",
      { allowPrivate: false, allowHosts: ["api.example:8443"] },
      [],
      "port:8443",
    ],
    ["http://127.0.0.1:4000/jwks", { allowPrivate: false }, ["127.0.0.1:4000"], null],
    ["http://127.0.0.1:4001/jwks", { allowPrivate: false }, ["127.0.0.1:4000"], "port:4001"],
    ["http://[::1]:4000/", { allowPrivate: false }, ["[::1]:4000"], null],
  ];
  for (const [url, rules, named, rule] of cases) {
    test(`${url} ${JSON.stringify(rules)} named ${JSON.stringify(named)} → ${rule ?? "allowed"}`, () => {
      const d = checkPort(new URL(url), rules, named);
      assert.deepEqual(d, rule === null ? { allowed: true } : { allowed: false, rule });
    });
  }
  test("namedTarget spells a URL's host:port as allowHosts entries are", () => {
    assert.equal(namedTarget(new URL("https://IdP.Example./realms/a")), "idp.example:443");
    assert.equal(namedTarget(new URL("http://[0:0::1]:8080/")), "[::1]:8080");
  });
});
