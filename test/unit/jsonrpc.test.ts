import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ErrorCode } from "../../src/errors/codes.ts";
import { GatewayError } from "../../src/errors/errors.ts";
import {
  isErrorResponse,
  isNotification,
  isRequest,
  isResponse,
  parseBody,
  parseMessage,
  type RpcId,
  type RpcMessage,
  requestIdKey,
} from "../../src/mcp/jsonrpc.ts";

function expectError(fn: () => unknown, code: ErrorCode, rpcId: RpcId | null = null): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof GatewayError, `expected GatewayError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.equal(err.rpcId, rpcId);
    return true;
  });
}

type Kind = "request" | "notification" | "response";

function kindOf(m: RpcMessage): Kind {
  const kinds = [isRequest(m), isNotification(m), isResponse(m)];
  assert.equal(kinds.filter(Boolean).length, 1, "exactly one classifier matches");
  return isRequest(m) ? "request" : isNotification(m) ? "notification" : "response";
}

const valid: { name: string; body: string; kind: Kind; errorResponse?: boolean }[] = [
  { name: "request, numeric id", body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}', kind: "request" },
  { name: "request, string id", body: '{"jsonrpc":"2.0","id":"abc","method":"ping"}', kind: "request" },
  { name: "request, empty string id", body: '{"jsonrpc":"2.0","id":"","method":"ping"}', kind: "request" },
  { name: "request, id 0", body: '{"jsonrpc":"2.0","id":0,"method":"ping"}', kind: "request" },
  { name: "request, negative id", body: '{"jsonrpc":"2.0","id":-5,"method":"ping"}', kind: "request" },
  {
    name: "request, id 1.0 is an integer",
    body: '{"jsonrpc":"2.0","id":1.0,"method":"ping"}',
    kind: "request",
  },
  {
    name: "request, max safe id",
    body: '{"jsonrpc":"2.0","id":9007199254740991,"method":"ping"}',
    kind: "request",
  },
  {
    name: "request with object params",
    body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{}}}',
    kind: "request",
  },
  {
    name: "request with array params",
    body: '{"jsonrpc":"2.0","id":1,"method":"m","params":[1,2]}',
    kind: "request",
  },
  {
    name: "request with empty params",
    body: '{"jsonrpc":"2.0","id":1,"method":"m","params":{}}',
    kind: "request",
  },
  { name: "extra members ignored", body: '{"jsonrpc":"2.0","id":1,"method":"m","x":1}', kind: "request" },
  { name: "whitespace around", body: ' \n\t{"jsonrpc":"2.0","id":1,"method":"m"}\r\n ', kind: "request" },
  {
    name: "notification",
    body: '{"jsonrpc":"2.0","method":"notifications/initialized"}',
    kind: "notification",
  },
  {
    name: "notification with params",
    body: '{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}',
    kind: "notification",
  },
  { name: "result response", body: '{"jsonrpc":"2.0","id":1,"result":{}}', kind: "response" },
  {
    name: "result response, null result",
    body: '{"jsonrpc":"2.0","id":"a","result":null}',
    kind: "response",
  },
  {
    name: "error response",
    body: '{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"nope"}}',
    kind: "response",
    errorResponse: true,
  },
  {
    name: "error response with data",
    body: '{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"","data":{"a":[1]}}}',
    kind: "response",
    errorResponse: true,
  },
  {
    name: "error response without id",
    body: '{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"}}',
    kind: "response",
    errorResponse: true,
  },
  {
    name: "error response with null id",
    body: '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}',
    kind: "response",
    errorResponse: true,
  },
];

/**
 * `code`: what both readers answer; `strict`: what a client body gets when the strict reader
 * (src/mcp/strict-json.ts) refuses it earlier than JSON.parse + validation would.
 */
const invalid: { name: string; body: string; code: ErrorCode; strict?: ErrorCode; rpcId?: RpcId }[] = [
  // Not JSON
  { name: "empty body", body: "", code: "EDGE_PARSE_ERROR" },
  { name: "whitespace only", body: "  \n", code: "EDGE_PARSE_ERROR" },
  { name: "truncated", body: '{"jsonrpc":"2.0","id":1', code: "EDGE_PARSE_ERROR" },
  { name: "trailing garbage", body: '{"jsonrpc":"2.0","id":1,"method":"m"}x', code: "EDGE_PARSE_ERROR" },
  { name: "two objects", body: '{"jsonrpc":"2.0","id":1,"method":"m"}{}', code: "EDGE_PARSE_ERROR" },
  { name: "single quotes", body: "{'jsonrpc':'2.0'}", code: "EDGE_PARSE_ERROR" },
  { name: "trailing comma", body: '{"jsonrpc":"2.0","id":1,"method":"m",}', code: "EDGE_PARSE_ERROR" },
  { name: "BOM", body: '\uFEFF{"jsonrpc":"2.0","id":1,"method":"m"}', code: "EDGE_PARSE_ERROR" },
  // JSON but not an object
  { name: "null", body: "null", code: "EDGE_INVALID_REQUEST" },
  { name: "number", body: "1", code: "EDGE_INVALID_REQUEST" },
  { name: "string", body: '"x"', code: "EDGE_INVALID_REQUEST" },
  { name: "boolean", body: "true", code: "EDGE_INVALID_REQUEST" },
  { name: "empty object", body: "{}", code: "EDGE_INVALID_REQUEST" },
  // jsonrpc member
  { name: "missing jsonrpc", body: '{"id":1,"method":"m"}', code: "EDGE_INVALID_REQUEST", rpcId: 1 },
  {
    name: "jsonrpc 1.0",
    body: '{"jsonrpc":"1.0","id":1,"method":"m"}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "jsonrpc number",
    body: '{"jsonrpc":2.0,"id":"a","method":"m"}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: "a",
  },
  {
    name: "jsonrpc in __proto__",
    body: '{"__proto__":{"jsonrpc":"2.0"},"id":1,"method":"m"}',
    code: "EDGE_INVALID_REQUEST",
    strict: "EDGE_JSON_FORBIDDEN_MEMBER",
    rpcId: 1,
  },
  {
    name: "__proto__ beside valid members",
    body: '{"jsonrpc":"2.0","id":1,"method":"m","__proto__":{"x":1}}',
    code: "EDGE_JSON_FORBIDDEN_MEMBER",
  },
  // method
  {
    name: "method number",
    body: '{"jsonrpc":"2.0","id":1,"method":1}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "method null",
    body: '{"jsonrpc":"2.0","id":1,"method":null}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "method empty",
    body: '{"jsonrpc":"2.0","id":1,"method":""}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "method array",
    body: '{"jsonrpc":"2.0","id":1,"method":["m"]}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "method and result",
    body: '{"jsonrpc":"2.0","id":1,"method":"m","result":{}}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "method and error",
    body: '{"jsonrpc":"2.0","id":1,"method":"m","error":{"code":1,"message":"x"}}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  // id
  { name: "id null", body: '{"jsonrpc":"2.0","id":null,"method":"m"}', code: "EDGE_INVALID_REQUEST" },
  { name: "id object", body: '{"jsonrpc":"2.0","id":{},"method":"m"}', code: "EDGE_INVALID_REQUEST" },
  { name: "id array", body: '{"jsonrpc":"2.0","id":[1],"method":"m"}', code: "EDGE_INVALID_REQUEST" },
  { name: "id boolean", body: '{"jsonrpc":"2.0","id":true,"method":"m"}', code: "EDGE_INVALID_REQUEST" },
  { name: "id fraction", body: '{"jsonrpc":"2.0","id":1.5,"method":"m"}', code: "EDGE_INVALID_REQUEST" },
  {
    name: "id beyond 2^53",
    body: '{"jsonrpc":"2.0","id":9007199254740993,"method":"m"}',
    code: "EDGE_INVALID_REQUEST",
  },
  {
    name: "id overflowing to Infinity",
    body: '{"jsonrpc":"2.0","id":1e400,"method":"m"}',
    code: "EDGE_INVALID_REQUEST",
    strict: "EDGE_JSON_LIMIT",
  },
  // params
  {
    name: "params null",
    body: '{"jsonrpc":"2.0","id":1,"method":"m","params":null}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "params string",
    body: '{"jsonrpc":"2.0","id":1,"method":"m","params":"x"}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "params number",
    body: '{"jsonrpc":"2.0","id":"q","method":"m","params":3}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: "q",
  },
  {
    name: "notification params bool",
    body: '{"jsonrpc":"2.0","method":"m","params":false}',
    code: "EDGE_INVALID_REQUEST",
  },
  // responses
  { name: "result without id", body: '{"jsonrpc":"2.0","result":{}}', code: "EDGE_INVALID_REQUEST" },
  {
    name: "result with null id",
    body: '{"jsonrpc":"2.0","id":null,"result":{}}',
    code: "EDGE_INVALID_REQUEST",
  },
  {
    name: "result with object id",
    body: '{"jsonrpc":"2.0","id":{},"result":{}}',
    code: "EDGE_INVALID_REQUEST",
  },
  {
    name: "result and error",
    body: '{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"x"}}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "neither method, result nor error",
    body: '{"jsonrpc":"2.0","id":1}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "error null",
    body: '{"jsonrpc":"2.0","id":1,"error":null}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "error string",
    body: '{"jsonrpc":"2.0","id":1,"error":"bad"}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "error array",
    body: '{"jsonrpc":"2.0","id":1,"error":[]}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "error without code",
    body: '{"jsonrpc":"2.0","id":1,"error":{"message":"x"}}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "error with string code",
    body: '{"jsonrpc":"2.0","id":1,"error":{"code":"-32600","message":"x"}}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "error with fractional code",
    body: '{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"x"}}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "error without message",
    body: '{"jsonrpc":"2.0","id":1,"error":{"code":1}}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "error with numeric message",
    body: '{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":2}}',
    code: "EDGE_INVALID_REQUEST",
    rpcId: 1,
  },
  {
    name: "error with boolean id",
    body: '{"jsonrpc":"2.0","id":false,"error":{"code":1,"message":"x"}}',
    code: "EDGE_INVALID_REQUEST",
  },
];

describe("parseBody: single messages", () => {
  for (const c of valid) {
    it(`accepts ${c.name}`, () => {
      for (const body of [c.body, Buffer.from(c.body)]) {
        const parsed = parseBody(body, { allowBatch: false });
        assert.equal(parsed.batch, false);
        assert.equal(parsed.messages.length, 1);
        const m = parsed.messages[0]!;
        assert.equal(kindOf(m), c.kind);
        assert.equal(isErrorResponse(m), c.errorResponse === true);
        assert.deepEqual(m, JSON.parse(c.body), "the message is the parsed value, unchanged");
      }
    });
  }
  for (const c of invalid) {
    it(`rejects ${c.name} with ${c.code}`, () => {
      const strict = c.strict ?? c.code;
      const strictId = c.strict ? null : (c.rpcId ?? null);
      expectError(() => parseBody(c.body, { allowBatch: false }), strict, strictId);
      expectError(() => parseBody(Buffer.from(c.body), { allowBatch: true }), strict, strictId);
      if (c.code.startsWith("EDGE_JSON_")) return; // JSON.parse reads these: only client bodies are strict
      expectError(() => parseMessage(c.body), c.code, c.rpcId ?? null);
    });
  }

  it("rejects invalid UTF-8 in a Buffer body", () => {
    const bad = Buffer.concat([
      Buffer.from('{"jsonrpc":"2.0","id":1,"method":"'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('"}'),
    ]);
    expectError(() => parseBody(bad, { allowBatch: false }), "EDGE_INVALID_UNICODE");
    const overlong = Buffer.concat([
      Buffer.from('{"jsonrpc":"2.0","id":1,"method":"'),
      Buffer.from([0xc0, 0xaf]),
      Buffer.from('"}'),
    ]);
    expectError(() => parseBody(overlong, { allowBatch: false }), "EDGE_INVALID_UNICODE");
  });

  it("accepts multi-byte UTF-8", () => {
    const { messages } = parseBody(
      Buffer.from('{"jsonrpc":"2.0","id":"ü","method":"tools/call","params":{"name":"世界"}}'),
      {
        allowBatch: false,
      },
    );
    assert.deepEqual(messages[0], {
      jsonrpc: "2.0",
      id: "ü",
      method: "tools/call",
      params: { name: "世界" },
    });
  });

  it("refuses __proto__ members and does not pollute prototypes", () => {
    expectError(
      () =>
        parseBody('{"jsonrpc":"2.0","id":1,"method":"m","params":{"__proto__":{"polluted":true}}}', {
          allowBatch: false,
        }),
      "EDGE_JSON_FORBIDDEN_MEMBER",
    );
    assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
    const { messages } = parseBody('{"jsonrpc":"2.0","id":1,"method":"m","params":{"constructor":"x"}}', {
      allowBatch: false,
    });
    const m = messages[0]!;
    assert.ok(isRequest(m));
    assert.equal(Object.getPrototypeOf(m.params), Object.prototype);
    assert.equal((m.params as Record<string, unknown>)["constructor"], "x");
  });

  it("GatewayError carries the right status and JSON-RPC code", () => {
    try {
      parseBody("{", { allowBatch: false });
      assert.fail("should throw");
    } catch (err) {
      assert.ok(err instanceof GatewayError);
      assert.equal(err.status, 400);
    }
  });
});

describe("parseBody: batches", () => {
  const req = (id: number) => `{"jsonrpc":"2.0","id":${id},"method":"m"}`;
  const table: {
    name: string;
    body: string;
    opts: { allowBatch: boolean; maxBatchSize?: number };
    code?: ErrorCode;
    count?: number;
  }[] = [
    {
      name: "batch rejected when not allowed",
      body: `[${req(1)}]`,
      opts: { allowBatch: false },
      code: "EDGE_BATCH_REJECTED",
    },
    {
      name: "empty array rejected when not allowed",
      body: "[]",
      opts: { allowBatch: false },
      code: "EDGE_BATCH_REJECTED",
    },
    { name: "empty batch", body: "[]", opts: { allowBatch: true }, code: "EDGE_INVALID_REQUEST" },
    { name: "single-element batch", body: `[${req(1)}]`, opts: { allowBatch: true }, count: 1 },
    {
      name: "mixed batch",
      body: `[${req(1)},{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":2,"result":{}}]`,
      opts: { allowBatch: true },
      count: 3,
    },
    {
      name: "batch with an invalid element",
      body: `[${req(1)},{"jsonrpc":"2.0"}]`,
      opts: { allowBatch: true },
      code: "EDGE_INVALID_REQUEST",
    },
    {
      name: "batch with a non-object",
      body: `[${req(1)},1]`,
      opts: { allowBatch: true },
      code: "EDGE_INVALID_REQUEST",
    },
    { name: "nested batch", body: `[[${req(1)}]]`, opts: { allowBatch: true }, code: "EDGE_INVALID_REQUEST" },
    {
      name: "batch at the size cap",
      body: `[${req(1)},${req(2)}]`,
      opts: { allowBatch: true, maxBatchSize: 2 },
      count: 2,
    },
    {
      name: "batch over the size cap",
      body: `[${req(1)},${req(2)},${req(3)}]`,
      opts: { allowBatch: true, maxBatchSize: 2 },
      code: "EDGE_INVALID_REQUEST",
    },
    {
      name: "default cap is 100",
      body: `[${Array.from({ length: 101 }, (_, i) => req(i)).join(",")}]`,
      opts: { allowBatch: true },
      code: "EDGE_INVALID_REQUEST",
    },
  ];
  for (const c of table) {
    it(c.name, () => {
      if (c.code !== undefined) {
        expectError(() => parseBody(c.body, c.opts), c.code);
        return;
      }
      const parsed = parseBody(c.body, c.opts);
      assert.equal(parsed.batch, true);
      assert.equal(parsed.messages.length, c.count);
    });
  }
  it("batch errors do not echo an element's id", () => {
    expectError(
      () => parseBody(`[{"jsonrpc":"2.0","id":7,"method":1}]`, { allowBatch: true }),
      "EDGE_INVALID_REQUEST",
      null,
    );
  });
});

describe("parseMessage", () => {
  it("parses upstream messages", () => {
    const m = parseMessage('{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}');
    assert.ok(isResponse(m));
    assert.equal(m.id, 3);
  });
  it("rejects arrays", () => {
    expectError(() => parseMessage(`[{"jsonrpc":"2.0","id":1,"result":{}}]`), "EDGE_BATCH_REJECTED");
  });
});

describe("requestIdKey", () => {
  const table: [RpcId, string][] = [
    [1, "n:1"],
    ["1", "s:1"],
    [0, "n:0"],
    [-0, "n:0"],
    ["", "s:"],
    ["n:1", "s:n:1"],
    [-42, "n:-42"],
  ];
  for (const [id, key] of table)
    it(`${JSON.stringify(id)} → ${key}`, () => assert.equal(requestIdKey(id), key));

  it("never collides between numbers and strings", () => {
    const ids: RpcId[] = [1, "1", 0, "0", "n:1", "s:1", -1, "-1", 9007199254740991, "9007199254740991"];
    assert.equal(new Set(ids.map(requestIdKey)).size, ids.length);
  });

  it("keys a parsed 1.0 like 1 (same JSON number)", () => {
    const a = parseMessage('{"jsonrpc":"2.0","id":1.0,"method":"m"}');
    const b = parseMessage('{"jsonrpc":"2.0","id":1,"result":{}}');
    assert.ok(isRequest(a) && isResponse(b) && b.id !== null && b.id !== undefined);
    assert.equal(requestIdKey(a.id), requestIdKey(b.id));
  });
});

describe("parseBody: Buffer specifics", () => {
  it("a UTF-8 BOM in a Buffer body is a parse error, like in a string body", () => {
    const body = Buffer.concat([
      Buffer.from([0xef, 0xbb, 0xbf]),
      Buffer.from('{"jsonrpc":"2.0","id":1,"method":"m"}'),
    ]);
    expectError(() => parseBody(body, { allowBatch: false }), "EDGE_PARSE_ERROR");
  });
  it("a lone surrogate encoded in UTF-8 (CESU) is invalid Unicode", () => {
    const body = Buffer.concat([
      Buffer.from('{"jsonrpc":"2.0","id":1,"method":"'),
      Buffer.from([0xed, 0xa0, 0x80]),
      Buffer.from('"}'),
    ]);
    expectError(() => parseBody(body, { allowBatch: false }), "EDGE_INVALID_UNICODE");
  });
});
