/**
 * Every log line the edge writes is one JSON object with no key written twice (a line with two
 * `server` keys means different things to different log pipelines: most keep the last, some the
 * first, some reject the line). Checked on a real edge process through traffic that logs from
 * every layer: requests, refusals, a route's upstream failing inside a request's scope, a stdio
 * server's stderr, the drain.
 */
import assert from "node:assert/strict";
import { createServer } from "node:net";
import path from "node:path";
import { after, test } from "node:test";
import { type SpawnedEdge, spawnEdge } from "../helpers/edge.ts";
import { mcpPost } from "../helpers/mcp.ts";
import { NODE_BIN, REPO_ROOT } from "../helpers/spawn.ts";

/** Keys that appear twice in one object of a JSON text, at any depth (`a.b` paths). */
export function duplicateKeys(text: string): string[] {
  let i = 0;
  const dups: string[] = [];
  const ws = () => {
    while (/\s/.test(text[i] ?? "")) i++;
  };
  const str = (): string => {
    const start = i;
    i++; // opening quote
    while (text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const value = (at: string): void => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const seen = new Set<string>();
      ws();
      if (text[i] === "}") {
        i++;
        return;
      }
      for (;;) {
        ws();
        const k = str();
        if (seen.has(k)) dups.push(at ? `${at}.${k}` : k);
        seen.add(k);
        ws();
        i++; // colon
        value(at ? `${at}.${k}` : k);
        ws();
        if (text[i++] === "}") return;
      }
    } else if (c === "[") {
      i++;
      ws();
      if (text[i] === "]") {
        i++;
        return;
      }
      for (;;) {
        value(`${at}[]`);
        ws();
        if (text[i++] === "]") return;
      }
    } else if (c === '"') str();
    else while (i < text.length && !/[,}\]\s]/.test(text[i] as string)) i++;
  };
  value("");
  return dups;
}

let edge: SpawnedEdge | undefined;
after(async () => {
  await edge?.stop();
});

test("the duplicate-key check finds duplicates", () => {
  assert.deepEqual(duplicateKeys('{"a":1,"b":{"c":[{"d":1,"d":2}]},"a":"x"}'), ["b.c[].d", "a"]);
  assert.deepEqual(duplicateKeys('{"a":"\\"a\\"","b":[1,2,{}]}'), []);
});

test("no log line of a real edge writes a key twice", async () => {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const dead = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  edge = await spawnEdge({
    servers: {
      demo: {
        route: "/mcp",
        upstream: { stdio: { command: NODE_BIN, args: [path.join(REPO_ROOT, "src/demo/server.ts")] } },
        auth: ["none"],
      },
      dead: { route: "/dead/mcp", upstream: { urls: [`http://127.0.0.1:${dead}/mcp`] }, auth: ["none"] },
      locked: {
        route: "/locked/mcp",
        upstream: { urls: [`http://127.0.0.1:${dead}/mcp`] },
        auth: ["apiKey"],
      },
    },
  });
  const init = {
    jsonrpc: "2.0",
    id: 1,
    method: "initialize",
    params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "1" } },
  };
  const ok = await mcpPost(`${edge.baseUrl}/mcp`, init);
  assert.equal(ok.status, 200);
  const sid = ok.sessionId as string;
  const call = {
    jsonrpc: "2.0",
    id: 2,
    method: "tools/call",
    params: { name: "echo", arguments: { text: "x" } },
  };
  assert.equal((await mcpPost(`${edge.baseUrl}/mcp`, call, { sessionId: sid })).status, 200);
  // Refused, and a route whose only upstream is down (logged from inside the request's scope).
  assert.equal((await mcpPost(`${edge.baseUrl}/locked/mcp`, init, { credential: "mcpe_wrong" })).status, 401);
  assert.equal((await mcpPost(`${edge.baseUrl}/locked/mcp`, init)).status, 401);
  assert.ok((await mcpPost(`${edge.baseUrl}/dead/mcp`, init)).status >= 500);
  const unknown = await mcpPost(`${edge.baseUrl}/mcp`, call, { sessionId: "no-such-session" });
  assert.equal(unknown.status, 404);
  await edge.stop();
  const lines = edge
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"));
  assert.ok(lines.length >= 3, `log lines written:\n${edge.output()}`);
  const bad = lines.map((l) => ({ l, d: duplicateKeys(l) })).filter((x) => x.d.length > 0);
  assert.deepEqual(bad, []);
  edge = undefined;
});
