/**
 * The upstream transport contract over every transport, each against a real server: the SDK v1
 * Streamable HTTP and legacy HTTP+SSE servers of test/fixtures/conformance-server.ts (child
 * processes), and the demo stdio server (src/demo/server.ts) spawned by the edge, per session and
 * shared.
 */
import path from "node:path";
import { parseConfig } from "../../src/config/load.ts";
import { Egress } from "../../src/egress/index.ts";
import { createLogger } from "../../src/observability/logger.ts";
import { HttpUpstream } from "../../src/upstream/http.ts";
import { LegacySseUpstream } from "../../src/upstream/legacy-sse.ts";
import { StdioUpstream } from "../../src/upstream/stdio.ts";
import { NODE_BIN, REPO_ROOT, spawnFixture } from "../helpers/spawn.ts";
import { upstreamTransportContract } from "./upstream-transport.contract.ts";

const log = createLogger({ level: "silent" });
const DEMO = path.join(REPO_ROOT, "src/demo/server.ts");

function upstreamConfig(upstream: Record<string, unknown>) {
  const config = parseConfig({
    store: { sqlite: ":memory:" },
    servers: { s: { route: "/s", upstream, auth: ["none"] } },
  });
  return config.servers.s!.upstream;
}

const conformanceTools = {
  tool: { name: "test_simple_text", arguments: {}, text: "simple text response" },
  progressTool: { name: "test_tool_with_progress", arguments: {} },
};

upstreamTransportContract("Streamable HTTP (SDK v1 server)", async () => {
  const server = await spawnFixture("test/fixtures/conformance-server.ts");
  const egress = new Egress({ connectTimeout: 2000, rules: { allowPrivate: true } });
  return {
    upstream: new HttpUpstream(upstreamConfig({ urls: [server.url] }), egress, log),
    ...conformanceTools,
    async close() {
      await egress.destroy();
      await server.stop();
    },
  };
});

upstreamTransportContract("legacy HTTP+SSE (SDK v1 server)", async () => {
  const server = await spawnFixture("test/fixtures/conformance-server.ts", ["--sse"]);
  const egress = new Egress({ connectTimeout: 2000, rules: { allowPrivate: true } });
  return {
    upstream: new LegacySseUpstream(upstreamConfig({ sse: server.url }), egress, log),
    ...conformanceTools,
    async close() {
      await egress.destroy();
      await server.stop();
    },
  };
});

for (const mode of ["session", "shared"] as const) {
  upstreamTransportContract(`stdio, mode ${mode} (demo server)`, async () => ({
    upstream: new StdioUpstream(
      upstreamConfig({ stdio: { command: NODE_BIN, args: [DEMO], mode, inheritEnv: ["PATH", "HOME"] } }),
      log,
    ),
    tool: { name: "echo", arguments: { text: "héllo edge" }, text: "héllo edge" },
    progressTool: { name: "slow", arguments: { steps: 3, delayMs: 10 } },
    spawns: DEMO,
    async close() {},
  }));
}
