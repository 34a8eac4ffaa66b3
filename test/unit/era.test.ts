import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ErrorCode } from "../../src/errors/codes.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import {
  ALL_VERSIONS,
  decodeHeaderValue,
  detectEra,
  type EraInput,
  encodeHeaderValue,
  isKnownVersion,
  isStatelessVersion,
  META_PROTOCOL_VERSION,
  metaProtocolVersion,
  SESSION_ERA_VERSIONS,
  STATELESS_VERSIONS,
  type StatelessHeaderOptions,
  validateStatelessHeaders,
} from "../../src/mcp/era.ts";
import { parseMessage, type RpcMessage } from "../../src/mcp/jsonrpc.ts";

const V = "2026-07-28";

function headersOf(h: Record<string, string>): { get(name: string): string | undefined } {
  const m = new Map(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));
  return { get: (name) => m.get(name) };
}

function msg(
  method: string,
  params: Record<string, unknown> = {},
  opts: { id?: number | null; meta?: string | null } = {},
) {
  const meta = opts.meta === undefined ? V : opts.meta;
  const p: Record<string, unknown> = { ...params };
  if (meta !== null)
    p["_meta"] = { [META_PROTOCOL_VERSION]: meta, "io.modelcontextprotocol/clientCapabilities": {} };
  const body: Record<string, unknown> = { jsonrpc: "2.0", method, params: p };
  if (opts.id !== null) body["id"] = opts.id ?? 1;
  return parseMessage(JSON.stringify(body));
}

const b64 = (s: string) => `=?base64?${Buffer.from(s, "utf8").toString("base64")}?=`;

describe("versions", () => {
  it("constants", () => {
    assert.deepEqual([...SESSION_ERA_VERSIONS], ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]);
    assert.deepEqual([...STATELESS_VERSIONS], ["2026-07-28"]);
    assert.deepEqual([...ALL_VERSIONS], [...SESSION_ERA_VERSIONS, ...STATELESS_VERSIONS]);
  });
  const known: [string, boolean][] = [
    ["2024-11-05", true],
    ["2025-03-26", true],
    ["2025-06-18", true],
    ["2025-11-25", true],
    ["2026-07-28", true],
    ["2024-10-07", false],
    ["2026-07-29", false],
    ["", false],
    ["2025-06-18 ", false],
  ];
  for (const [v, expected] of known)
    it(`isKnownVersion(${JSON.stringify(v)}) = ${expected}`, () => assert.equal(isKnownVersion(v), expected));

  const stateless: [string | undefined, boolean][] = [
    ["2026-07-28", true],
    ["2027-01-01", true],
    ["2025-11-25", false],
    ["2026-07-27", false],
    [undefined, false],
    ["9", false],
    ["latest", false],
    ["2026-07-28x", false],
    ["2026-7-28", false],
  ];
  for (const [v, expected] of stateless) {
    it(`isStatelessVersion(${JSON.stringify(v)}) = ${expected}`, () =>
      assert.equal(isStatelessVersion(v), expected));
  }
});

describe("metaProtocolVersion", () => {
  const table: [string, RpcMessage, string | undefined][] = [
    ["request with _meta", msg("tools/list"), V],
    ["notification with _meta", msg("notifications/x", {}, { id: null }), V],
    ["no _meta", msg("tools/list", {}, { meta: null }), undefined],
    ["no params", parseMessage('{"jsonrpc":"2.0","id":1,"method":"m"}'), undefined],
    [
      "array params",
      parseMessage('{"jsonrpc":"2.0","id":1,"method":"m","params":[{"_meta":{}}]}'),
      undefined,
    ],
    ["_meta null", parseMessage('{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":null}}'), undefined],
    [
      "_meta array",
      parseMessage('{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":["x"]}}'),
      undefined,
    ],
    [
      "version not a string",
      parseMessage(
        `{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"${META_PROTOCOL_VERSION}":20260728}}}`,
      ),
      undefined,
    ],
    ["response", parseMessage('{"jsonrpc":"2.0","id":1,"result":{"_meta":{}}}'), undefined],
    [
      "__proto__ _meta is just a key",
      parseMessage(
        `{"jsonrpc":"2.0","id":1,"method":"m","params":{"__proto__":{"_meta":{"${META_PROTOCOL_VERSION}":"${V}"}}}}`,
      ),
      undefined,
    ],
  ];
  for (const [name, m, expected] of table) it(name, () => assert.equal(metaProtocolVersion(m), expected));
});

describe("detectEra", () => {
  const base: EraInput = {
    method: "tools/list",
    headerVersion: undefined,
    metaVersion: undefined,
    hasSessionHeader: false,
  };
  const table: [string, Partial<EraInput>, "session" | "stateless"][] = [
    ["nothing → session", {}, "session"],
    ["initialize → session", { method: "initialize" }, "session"],
    [
      "initialize with modern meta → session",
      { method: "initialize", metaVersion: V, headerVersion: V },
      "session",
    ],
    ["session header → session", { hasSessionHeader: true, headerVersion: V, metaVersion: V }, "session"],
    ["meta 2026-07-28 → stateless", { metaVersion: V }, "stateless"],
    ["header 2026-07-28 → stateless", { headerVersion: V }, "stateless"],
    ["both → stateless", { headerVersion: V, metaVersion: V }, "stateless"],
    ["future version → stateless", { headerVersion: "2027-03-01" }, "stateless"],
    ["header 2025-11-25 → session", { headerVersion: "2025-11-25" }, "session"],
    ["meta 2025-06-18 → session", { metaVersion: "2025-06-18" }, "session"],
    ["garbage header → session", { headerVersion: "zzz" }, "session"],
    ["old header, modern meta → stateless", { headerVersion: "2025-11-25", metaVersion: V }, "stateless"],
    [
      "no method (response) with modern header → stateless",
      { method: undefined, headerVersion: V },
      "stateless",
    ],
  ];
  for (const [name, input, expected] of table)
    it(name, () => assert.equal(detectEra({ ...base, ...input }), expected));
});

describe("decodeHeaderValue / encodeHeaderValue", () => {
  const decode: [string, string | undefined][] = [
    ["us-west1", "us-west1"],
    ["a b\tc", "a b\tc"],
    ["  padded  ", "padded"],
    ["=?base64?SGVsbG8sIOS4lueVjA==?=", "Hello, 世界"],
    ["=?base64?IHBhZGRlZCA=?=", " padded "],
    ["=?base64?bGluZTEKbGluZTI=?=", "line1\nline2"],
    ["=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=", "=?base64?literal?="],
    ["=?base64??=", ""],
    ["", ""],
    ["=?base64?=", undefined],
    ["=?base64?SGVsbG8?=", undefined], // not padded
    ["=?base64?SGVsbG8=?=", "Hello"],
    ["=?base64?SGV sbG8=?=", undefined],
    ["=?base64?SGVsbG8_?=", undefined], // URL-safe alphabet
    ["=?base64?/w==?=", undefined], // 0xFF: not UTF-8
    ["=?BASE64?SGVsbG8=?=", "=?BASE64?SGVsbG8=?="], // markers are case-sensitive: a plain value
    ["caf\u00e9", undefined], // obs-text (latin1 byte) is an invalid character
    ["a\u0000b", undefined],
    ["a\u007fb", undefined],
  ];
  for (const [input, expected] of decode) {
    it(`decode ${JSON.stringify(input)}`, () => assert.equal(decodeHeaderValue(input), expected));
  }
  const encode: [string, string][] = [
    ["us-west1", "us-west1"],
    ["Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="],
    [" padded ", "=?base64?IHBhZGRlZCA=?="],
    ["line1\nline2", "=?base64?bGluZTEKbGluZTI=?="],
    ["=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="],
    ["", "=?base64??="],
  ];
  for (const [input, expected] of encode) {
    it(`encode ${JSON.stringify(input)}`, () => {
      assert.equal(encodeHeaderValue(input), expected);
      assert.equal(decodeHeaderValue(expected), input);
    });
  }
});

interface Case {
  name: string;
  msg: RpcMessage;
  headers: Record<string, string>;
  opts?: StatelessHeaderOptions;
  /** Undefined: passes. */
  code?: ErrorCode;
  /** The header named in the error's data. */
  header?: string;
}

const std = (method: string, extra: Record<string, string> = {}) => ({
  "MCP-Protocol-Version": V,
  "Mcp-Method": method,
  ...extra,
});

const call = (args: Record<string, unknown>, name = "execute_sql") =>
  msg("tools/call", { name, arguments: args });

const cases: Case[] = [
  // Standard headers
  { name: "tools/list with both headers", msg: msg("tools/list"), headers: std("tools/list") },
  {
    name: "header names are case-insensitive",
    msg: msg("tools/list"),
    headers: { "mcp-protocol-version": V, "MCP-METHOD": "tools/list" },
  },
  {
    name: "OWS around values is ignored",
    msg: msg("tools/list"),
    headers: { "mcp-protocol-version": ` ${V}\t`, "mcp-method": " tools/list " },
  },
  {
    name: "missing MCP-Protocol-Version",
    msg: msg("tools/list"),
    headers: { "Mcp-Method": "tools/list" },
    code: "EDGE_HEADER_MISMATCH",
    header: "MCP-Protocol-Version",
  },
  {
    name: "MCP-Protocol-Version differs from _meta",
    msg: msg("tools/list"),
    headers: std("tools/list", { "MCP-Protocol-Version": "2025-11-25" }),
    code: "EDGE_HEADER_MISMATCH",
    header: "MCP-Protocol-Version",
  },
  {
    // An invalid envelope, not a header mismatch: the upstream answers it (-32602).
    name: "modern header but no _meta version passes to the server",
    msg: msg("tools/list", {}, { meta: null }),
    headers: std("tools/list"),
  },
  {
    // Only the upstream knows which versions it supports: it answers -32022 with its own list.
    name: "consistent but unknown stateless version passes to the server",
    msg: msg("tools/list", {}, { meta: "2027-01-01" }),
    headers: std("tools/list", { "MCP-Protocol-Version": "2027-01-01" }),
  },
  {
    name: "missing Mcp-Method",
    msg: msg("tools/list"),
    headers: { "MCP-Protocol-Version": V },
    code: "EDGE_HEADER_MISMATCH",
    header: "Mcp-Method",
  },
  {
    name: "Mcp-Method differs",
    msg: msg("tools/list"),
    headers: std("tools/call"),
    code: "EDGE_HEADER_MISMATCH",
    header: "Mcp-Method",
  },
  {
    name: "Mcp-Method is case-sensitive",
    msg: msg("tools/list"),
    headers: std("Tools/List"),
    code: "EDGE_HEADER_MISMATCH",
    header: "Mcp-Method",
  },
  {
    name: "empty Mcp-Method",
    msg: msg("tools/list"),
    headers: std(""),
    code: "EDGE_HEADER_MISMATCH",
    header: "Mcp-Method",
  },
  {
    name: "Mcp-Method with a list (repeated header)",
    msg: msg("tools/list"),
    headers: std("tools/list, tools/list"),
    code: "EDGE_HEADER_MISMATCH",
  },
  // Mcp-Name
  {
    name: "tools/call with Mcp-Name",
    msg: call({}),
    headers: std("tools/call", { "Mcp-Name": "execute_sql" }),
  },
  {
    name: "tools/call without Mcp-Name",
    msg: call({}),
    headers: std("tools/call"),
    code: "EDGE_HEADER_MISMATCH",
    header: "Mcp-Name",
  },
  {
    name: "tools/call with other Mcp-Name",
    msg: call({}),
    headers: std("tools/call", { "Mcp-Name": "drop_table" }),
    code: "EDGE_HEADER_MISMATCH",
    header: "Mcp-Name",
  },
  {
    name: "Mcp-Name is case-sensitive",
    msg: call({}),
    headers: std("tools/call", { "Mcp-Name": "Execute_SQL" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "prompts/get",
    msg: msg("prompts/get", { name: "greet" }),
    headers: std("prompts/get", { "Mcp-Name": "greet" }),
  },
  {
    name: "prompts/get without Mcp-Name",
    msg: msg("prompts/get", { name: "greet" }),
    headers: std("prompts/get"),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "resources/read",
    msg: msg("resources/read", { uri: "file:///projects/myapp/config.json" }),
    headers: std("resources/read", { "Mcp-Name": "file:///projects/myapp/config.json" }),
  },
  {
    name: "resources/read compares uri, not name",
    msg: msg("resources/read", { uri: "file:///a", name: "b" }),
    headers: std("resources/read", { "Mcp-Name": "b" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "resources/read without Mcp-Name",
    msg: msg("resources/read", { uri: "file:///a" }),
    headers: std("resources/read"),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "base64 Mcp-Name",
    msg: call({}, "天気"),
    headers: std("tools/call", { "Mcp-Name": b64("天気") }),
  },
  {
    name: "non-ASCII Mcp-Name sent raw (latin1) is invalid",
    msg: call({}, "café"),
    headers: std("tools/call", { "Mcp-Name": "caf\u00e9" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "bad base64 Mcp-Name",
    msg: call({}, "x"),
    headers: std("tools/call", { "Mcp-Name": "=?base64?eA?=" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "sentinel-looking literal name must be encoded",
    msg: call({}, "=?base64?eA==?="),
    headers: std("tools/call", { "Mcp-Name": "=?base64?eA==?=" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "sentinel-looking literal name encoded",
    msg: call({}, "=?base64?eA==?="),
    headers: std("tools/call", { "Mcp-Name": b64("=?base64?eA==?=") }),
  },
  {
    name: "Mcp-Name present but body name missing",
    msg: msg("tools/call", {}),
    headers: std("tools/call", { "Mcp-Name": "x" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "no name in body and no header: left to upstream",
    msg: msg("tools/call", {}),
    headers: std("tools/call"),
  },
  {
    name: "Mcp-Name on a method without one is ignored",
    msg: msg("tools/list"),
    headers: std("tools/list", { "Mcp-Name": "x" }),
  },
  { name: "tasks/get without Mcp-Name", msg: msg("tasks/get", { taskId: "t1" }), headers: std("tasks/get") },
  {
    name: "tasks/get with matching Mcp-Name",
    msg: msg("tasks/get", { taskId: "t1" }),
    headers: std("tasks/get", { "Mcp-Name": "t1" }),
  },
  {
    name: "tasks/cancel with other Mcp-Name",
    msg: msg("tasks/cancel", { taskId: "t1" }),
    headers: std("tasks/cancel", { "Mcp-Name": "t2" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  // Mcp-Param-* by name
  {
    name: "spec example: Mcp-Param-Region",
    msg: call({ region: "us-west1", query: "SELECT * FROM users" }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Region": "us-west1" }),
  },
  {
    name: "Mcp-Param mismatch",
    msg: call({ region: "us-west1" }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Region": "eu-west1" }),
    code: "EDGE_HEADER_MISMATCH",
    header: "Mcp-Param-region",
  },
  {
    name: "Mcp-Param base64",
    msg: call({ greeting: "Hello, 世界" }),
    headers: std("tools/call", {
      "Mcp-Name": "execute_sql",
      "Mcp-Param-Greeting": "=?base64?SGVsbG8sIOS4lueVjA==?=",
    }),
  },
  {
    name: "Mcp-Param base64 with padding spaces",
    msg: call({ text: " padded " }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Text": "=?base64?IHBhZGRlZCA=?=" }),
  },
  {
    name: "Mcp-Param invalid base64",
    msg: call({ text: "x" }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Text": "=?base64?***?=" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "Mcp-Param integer",
    msg: call({ limit: 42 }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Limit": "42" }),
  },
  {
    name: "Mcp-Param integer compared numerically",
    msg: call({ limit: 42 }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Limit": "42.0" }),
  },
  {
    name: "Mcp-Param negative integer",
    msg: call({ offset: -7 }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Offset": "-7" }),
  },
  {
    name: "Mcp-Param integer mismatch",
    msg: call({ limit: 42 }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Limit": "43" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "Mcp-Param integer vs non-numeric header",
    msg: call({ limit: 42 }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Limit": "0x2a" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "Mcp-Param boolean",
    msg: call({ dry: true }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Dry": "true" }),
  },
  {
    name: "Mcp-Param boolean must be lowercase",
    msg: call({ dry: false }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Dry": "False" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "Mcp-Param string '42' is not compared numerically",
    msg: call({ code: "42" }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Code": "42.0" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "header naming an absent argument is left alone",
    msg: call({ query: "x" }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Tenant": "acme" }),
  },
  {
    name: "header naming a null argument is left alone",
    msg: call({ region: null }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Region": "x" }),
  },
  {
    name: "header naming an object argument is left alone",
    msg: call({ region: { a: 1 } }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Region": "x" }),
  },
  {
    name: "argument without a header passes (schema unknown)",
    msg: call({ region: "us" }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql" }),
  },
  {
    name: "argument names match headers case-insensitively",
    msg: call({ Region: "us" }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "mcp-param-region": "eu" }),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "matchParamsByName: false",
    msg: call({ region: "us" }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Region": "eu" }),
    opts: { matchParamsByName: false },
  },
  {
    name: "Mcp-Param on another method is ignored",
    msg: msg("prompts/get", { name: "p", arguments: { region: "us" } }),
    headers: std("prompts/get", { "Mcp-Name": "p", "Mcp-Param-Region": "eu" }),
  },
  // Mcp-Param-* with declared schema
  {
    name: "declared: nested path",
    msg: call({ location: { region: "us-west1" } }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Region": "us-west1" }),
    opts: { paramHeaders: new Map([["region", ["location", "region"]]]) },
  },
  {
    name: "declared: header name differs from property name",
    msg: call({ zone: "b", region: "a" }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Region": "b" }),
    opts: { paramHeaders: new Map([["region", ["zone"]]]) },
  },
  {
    name: "declared: value present, header missing",
    msg: call({ zone: "b" }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql" }),
    opts: { paramHeaders: new Map([["region", ["zone"]]]) },
    code: "EDGE_HEADER_MISMATCH",
    header: "Mcp-Param-region",
  },
  {
    name: "declared: value absent, header not expected",
    msg: call({}),
    headers: std("tools/call", { "Mcp-Name": "execute_sql" }),
    opts: { paramHeaders: new Map([["region", ["zone"]]]) },
  },
  {
    name: "declared: null value, stray header ignored",
    msg: call({ zone: null }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Region": "x" }),
    opts: { paramHeaders: new Map([["region", ["zone"]]]) },
  },
  {
    name: "declared: mismatch",
    msg: call({ zone: "b" }),
    headers: std("tools/call", { "Mcp-Name": "execute_sql", "Mcp-Param-Region": "c" }),
    opts: { paramHeaders: new Map([["region", ["zone"]]]) },
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "declared: path through prototype is absent",
    msg: call({}),
    headers: std("tools/call", { "Mcp-Name": "execute_sql" }),
    opts: { paramHeaders: new Map([["c", ["constructor", "name"]]]) },
  },
  // Notifications and responses
  { name: "notification with no headers", msg: msg("notifications/x", {}, { id: null }), headers: {} },
  {
    name: "notification with matching headers",
    msg: msg("notifications/x", {}, { id: null }),
    headers: std("notifications/x"),
  },
  {
    name: "notification with wrong Mcp-Method",
    msg: msg("notifications/x", {}, { id: null }),
    headers: std("notifications/y"),
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "notification with wrong version header",
    msg: msg("notifications/x", {}, { id: null }),
    headers: { "MCP-Protocol-Version": "2025-11-25" },
    code: "EDGE_HEADER_MISMATCH",
  },
  {
    name: "posted response",
    msg: parseMessage('{"jsonrpc":"2.0","id":1,"result":{}}'),
    headers: std("x"),
    code: "EDGE_INVALID_REQUEST",
  },
];

describe("validateStatelessHeaders", () => {
  for (const c of cases) {
    it(c.name, () => {
      const run = () => validateStatelessHeaders(headersOf(c.headers), c.msg, c.opts);
      if (c.code === undefined) {
        run();
        return;
      }
      assert.throws(run, (err: unknown) => {
        assert.ok(err instanceof GatewayError, String(err));
        assert.equal(err.code, c.code);
        if (c.header !== undefined) assert.equal(err.data?.["header"], c.header);
        if ("id" in c.msg && "method" in c.msg) assert.equal(err.rpcId, c.msg.id, "echoes the request id");
        return true;
      });
    });
  }

  it("truncates huge values in the message", () => {
    const big = "x".repeat(100_000);
    try {
      validateStatelessHeaders(headersOf(std("tools/call", { "Mcp-Name": big })), call({}, "y"));
      assert.fail("should throw");
    } catch (err) {
      assert.ok(err instanceof GatewayError);
      assert.ok(err.message.length < 300, `message length ${err.message.length}`);
      assert.equal(err.status, 400);
    }
  });

  it("escapes control characters in the message", () => {
    try {
      validateStatelessHeaders(
        headersOf(std("tools/call", { "Mcp-Name": b64("a\r\nSet-Cookie: x") })),
        call({}, "y"),
      );
      assert.fail("should throw");
    } catch (err) {
      assert.ok(err instanceof GatewayError);
      assert.ok(!/[\r\n]/.test(err.message), err.message);
    }
  });
});
