// Scratch: record what SDK v2 client sends / v2 server returns. Not part of the project.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { spawnFixture } from "../test/helpers/spawn.ts";

async function recorder(target: string) {
  const log: string[] = [];
  const srv = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString();
    const hdrs = Object.fromEntries(Object.entries(req.headers).filter(([k]) => /^mcp|accept|content-type|last-event/i.test(k)));
    const t = new URL(target);
    const up = await fetch(new URL(req.url ?? "/", target), { method: req.method, headers: { ...(req.headers as Record<string, string>), host: t.host }, body: body || undefined });
    const text = await up.text();
    const rh = Object.fromEntries([...up.headers].filter(([k]) => /^mcp|content-type/i.test(k)));
    log.push(`>> ${req.method} ${JSON.stringify(hdrs)}\n   ${body.slice(0, 600)}\n<< ${up.status} ${JSON.stringify(rh)}\n   ${text.slice(0, 700)}`);
    res.writeHead(up.status, Object.fromEntries([...up.headers].filter(([k]) => k !== "content-length" && k !== "transfer-encoding")));
    res.end(text);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/mcp`, log, close: () => { srv.closeAllConnections(); srv.close(); } };
}

for (const fixture of [["test/fixtures/v2-server.ts", []], ["test/fixtures/conformance-server.ts", []]] as const) {
  const fx = await spawnFixture(fixture[0], [...fixture[1]]);
  const rec = await recorder(fx.url);
  console.log(`\n################ v2 client -> ${fixture[0]}`);
  try {
    const client = new Client({ name: "wire", version: "1.0.0" }, { capabilities: { elicitation: {} } });
    client.setRequestHandler("elicitation/create", async () => ({ action: "accept", content: { name: "Alice", username: "a", email: "a@b" } }));
    const transport = new StreamableHTTPClientTransport(new URL(rec.url));
    await client.connect(transport);
    console.log("negotiated:", (transport as unknown as { _protocolVersion?: string })._protocolVersion, "session:", transport.sessionId);
    await client.listTools();
    console.log(JSON.stringify(await client.callTool({ name: "test_simple_text", arguments: {} })));
    try { console.log(JSON.stringify(await client.callTool({ name: "test_custom_headers", arguments: { region: "eu-west", query: "q" } }))); } catch (e) { console.log("custom", String(e)); }
    try { console.log(JSON.stringify(await client.callTool({ name: "test_input_required_result_elicitation", arguments: {} }))); } catch (e) { console.log("mrtr", String(e)); }
    await client.readResource({ uri: "test://static-text" });
    await client.close();
  } catch (e) { console.log("ERR", e); }
  for (const l of rec.log) console.log(l);
  rec.close();
  await fx.stop();
}
