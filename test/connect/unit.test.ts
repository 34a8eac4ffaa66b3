/**
 * The bridge's pure parts, table-driven: header flags with `${ENV}`, the browser URL check (the
 * CVE-2025-6514 class), the opener's argv, Bearer challenges, AS metadata URLs, resource matching,
 * and the CLI's usage errors.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { describe, test } from "node:test";
import { interpolate, parseHeader, runConnect } from "../../src/cli/connect.ts";
import { checkBrowserUrl, openBrowser, opener } from "../../src/connect/browser.ts";
import { checkDiscoveredUrl, isLoopbackHost } from "../../src/connect/http.ts";
import {
  asMetadataUrls,
  canonicalResource,
  parseChallenge,
  resourceMatches,
} from "../../src/connect/oauth.ts";
import { isSafeToRepeat } from "../../src/connect/remote.ts";
import { configDir, entryKey, openTokenStore, storeFile } from "../../src/connect/tokens.ts";
import { statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

describe("--header", () => {
  test("Name: value, ${ENV} interpolated, names lower-cased", () => {
    assert.deepEqual(parseHeader("X-Api-Key: ${KEY}", { KEY: "k1" }), ["x-api-key", "k1"]);
    assert.deepEqual(parseHeader("Authorization:Bearer ${T}", { T: "t" }), ["authorization", "Bearer t"]);
    assert.deepEqual(parseHeader("X-A: a:b:c", {}), ["x-a", "a:b:c"]);
  });
  test("refused: missing variable, no colon, bad name, reserved header, CR/LF in the value", () => {
    assert.throws(() => parseHeader("X: ${NOPE}", {}), /no NOPE/);
    assert.throws(() => parseHeader("no colon", {}), /Name: value/);
    assert.throws(() => parseHeader("Bad Name: x", {}), /invalid header name/);
    assert.throws(() => parseHeader("Mcp-Session-Id: x", {}), /the bridge sets it/);
    assert.throws(() => parseHeader("X: ${V}", { V: "a\r\nInjected: 1" }), /CR, LF/);
  });
  test("interpolate leaves text without references alone", () => {
    assert.equal(interpolate("plain $HOME {x}", {}), "plain $HOME {x}");
  });
});

describe("the browser URL check", () => {
  const ok = [
    "https://as.example.com/authorize?response_type=code&client_id=abc&state=x%20y",
    "http://127.0.0.1:8080/auth",
    "http://localhost:3000/authorize",
    "https://as.example.com/t1/oauth2/authorize",
  ];
  for (const u of ok) test(`opens ${u}`, () => assert.equal(checkBrowserUrl(u).href, new URL(u).href));
  const bad = [
    "https://evil.example/$(touch /tmp/x)",
    "https://evil.example/`id`",
    "https://evil.example/a;id",
    "https://evil.example/a|id",
    "https://evil.example/a'b",
    'https://evil.example/a"b',
    "https://evil.example/a\\b",
    "https://evil.example/?q=a^b",
    "https://evil.example/{a}",
    "https://evil.example/(a)",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "ms-settings:privacy",
    "data:text/html,<script>",
    "http://evil.example/authorize",
    "https://user:pass@evil.example/",
    "calc.exe",
    "",
  ];
  for (const u of bad) test(`refuses ${JSON.stringify(u)}`, () => assert.throws(() => checkBrowserUrl(u)));

  test("the opener gets the URL as one argv element, without a shell", async () => {
    const calls: Array<{ program: string; args: string[]; options: Record<string, unknown> }> = [];
    const fake = ((program: string, args: string[], options: Record<string, unknown>) => {
      calls.push({ program, args, options });
      const child = Object.assign(new EventEmitter(), { unref() {} });
      setImmediate(() => child.emit("spawn"));
      return child;
    }) as unknown as Parameters<typeof openBrowser>[1];
    const url = "https://as.example.com/authorize?a=1&b=2";
    assert.equal(await openBrowser(url, fake), true);
    const [program, pre] = opener();
    assert.deepEqual(calls, [
      {
        program,
        args: [...pre, url],
        options: { shell: false, stdio: "ignore", detached: true, windowsHide: true },
      },
    ]);
    await assert.rejects(openBrowser("file:///etc/passwd", fake));
    assert.equal(calls.length, 1, "nothing spawned for a refused URL");
  });

  test("openers per platform never involve a shell", () => {
    assert.deepEqual(opener("linux"), ["xdg-open", []]);
    assert.deepEqual(opener("darwin"), ["open", []]);
    assert.deepEqual(opener("win32"), ["rundll32", ["url.dll,FileProtocolHandler"]]);
  });
});

describe("discovery helpers", () => {
  test("Bearer challenges (RFC 6750 §3, RFC 9728 §5.1)", () => {
    assert.deepEqual(
      parseChallenge(
        'Bearer error="invalid_token", scope="a b", resource_metadata="https://x/.well-known/oauth-protected-resource/mcp"',
      ),
      {
        error: "invalid_token",
        scope: "a b",
        resourceMetadata: "https://x/.well-known/oauth-protected-resource/mcp",
      },
    );
    assert.deepEqual(parseChallenge('Basic realm="x", Bearer scope=read'), { scope: "read" });
    assert.deepEqual(parseChallenge(undefined), {});
  });
  test("AS metadata URLs in the MCP order", () => {
    assert.deepEqual(
      asMetadataUrls(new URL("https://as.example/t1")).map((u) => u.href),
      [
        "https://as.example/.well-known/oauth-authorization-server/t1",
        "https://as.example/.well-known/openid-configuration/t1",
        "https://as.example/t1/.well-known/openid-configuration",
      ],
    );
    assert.deepEqual(
      asMetadataUrls(new URL("https://as.example")).map((u) => u.href),
      [
        "https://as.example/.well-known/oauth-authorization-server",
        "https://as.example/.well-known/openid-configuration",
      ],
    );
  });
  test("resource matching and canonical form (RFC 8707, RFC 9728 §3.3)", () => {
    const server = new URL("https://mcp.example/team/mcp");
    assert.ok(resourceMatches("https://mcp.example/team/mcp", server));
    assert.ok(resourceMatches("https://mcp.example/", server));
    assert.ok(!resourceMatches("https://mcp.example/other", server));
    assert.ok(!resourceMatches("https://evil.example/team/mcp", server));
    assert.equal(canonicalResource(new URL("HTTPS://MCP.Example/mcp/#f")), "https://mcp.example/mcp");
    assert.equal(canonicalResource(new URL("https://mcp.example/")), "https://mcp.example");
  });
  test("discovered URLs: https, loopback http, or the typed origin", () => {
    const server = new URL("http://intranet:8080/mcp");
    assert.equal(checkDiscoveredUrl("https://as.example/x", server).host, "as.example");
    assert.equal(checkDiscoveredUrl("http://127.0.0.1:9/x", server).port, "9");
    assert.equal(checkDiscoveredUrl("http://intranet:8080/.well-known/x", server).host, "intranet:8080");
    assert.throws(() => checkDiscoveredUrl("http://other:8080/x", server));
    assert.throws(() => checkDiscoveredUrl("file:///etc/passwd", server));
    assert.ok(isLoopbackHost("127.1.2.3") && isLoopbackHost("[::1]") && !isLoopbackHost("10.0.0.1"));
  });
  test("only requests without side effects are re-sent", () => {
    assert.ok(isSafeToRepeat("tools/list") && isSafeToRepeat("resources/read"));
    assert.ok(!isSafeToRepeat("tools/call") && !isSafeToRepeat("some/unknown"));
  });
});

describe("usage errors", () => {
  const run = async (argv: string[]) => {
    let err = "";
    const code = await runConnect(argv, {
      stdout: { write: () => true },
      stderr: { write: (s: string) => (err += s) },
      env: {},
    });
    return { code, err };
  };
  const cases: Array<[string[], RegExp]> = [
    [[], /exactly one server URL/],
    [["not a url"], /not a URL/],
    [["ftp://x/mcp"], /http: or https:/],
    [["https://u:p@x/mcp"], /credentials/],
    [["https://x/mcp", "--callback-port", "99999"], /--callback-port/],
    [["https://x/mcp", "--era", "2027"], /--era/],
    [["https://x/mcp", "--header", "X: ${MISSING}"], /no MISSING/],
    [["https://x/mcp", "--client-metadata-url", "http://x/cimd.json"], /https URL/],
    [["https://x/mcp", "--bogus"], /Unknown option/],
  ];
  for (const [argv, re] of cases) {
    test(`${JSON.stringify(argv)} → exit 2`, async () => {
      const { code, err } = await run(argv);
      assert.equal(code, 2);
      assert.match(err, re);
    });
  }
});

describe("the token store", () => {
  test("config dir precedence: MCP_EDGE_CONFIG_DIR, then XDG_CONFIG_HOME/mcp-edge, then ~/.config/mcp-edge", () => {
    assert.equal(configDir({ MCP_EDGE_CONFIG_DIR: "/a", XDG_CONFIG_HOME: "/b" }), "/a");
    assert.equal(configDir({ XDG_CONFIG_HOME: "/b" }), path.join("/b", "mcp-edge"));
    assert.match(configDir({}), /\.config[/\\]mcp-edge$/);
  });
  test("keyed by server and client; without a usable keychain, a 0600 file in a 0700 directory", async () => {
    assert.notEqual(entryKey("https://a/mcp", "dcr"), entryKey("https://a/mcp", "my-client"));
    assert.notEqual(entryKey("https://a/mcp", "dcr"), entryKey("https://b/mcp", "dcr"));
    const dir = path.join(tmpdir(), `connect-store-${process.pid}-${Date.now()}`);
    // No D-Bus session here, so secret-tool (if installed) is not usable: the file is chosen.
    const store = openTokenStore({ MCP_EDGE_CONFIG_DIR: dir }, "https://a/mcp", "dcr");
    assert.equal(store.kind, "file");
    await store.save({ server: "https://a/mcp", tokens: { access_token: "t" } });
    const file = storeFile(store) as string;
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(path.dirname(file)).mode & 0o777, 0o700);
    assert.equal((await store.load())?.tokens?.access_token, "t");
    // The lock serializes: the second holder starts after the first released.
    const order: string[] = [];
    await Promise.all([
      store.withLock(async () => {
        order.push("a+");
        await new Promise((r) => setTimeout(r, 30));
        order.push("a-");
      }),
      store.withLock(async () => {
        order.push("b+");
        order.push("b-");
      }),
    ]);
    assert.deepEqual(order, ["a+", "a-", "b+", "b-"]);
    await store.clear();
    assert.equal(await store.load(), undefined);
  });
});
