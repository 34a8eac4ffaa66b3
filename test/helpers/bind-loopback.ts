/**
 * Preload (`node --import .../bind-loopback.ts server.js`) for third-party servers that listen on
 * every interface and offer no host option (server-everything): every `listen(port)` binds
 * 127.0.0.1 instead. With MCP_EDGE_ANNOUNCE=1 the first server to listen prints
 * `LISTENING http://127.0.0.1:<port>/mcp`, the line test/helpers/spawn.ts waits for.
 */
import net from "node:net";

const original = net.Server.prototype.listen;
let announced = false;

net.Server.prototype.listen = function patchedListen(this: net.Server, ...args: unknown[]) {
  const first = args[0];
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    const port = Number(first);
    const cb = args.find((a) => typeof a === "function") as (() => void) | undefined;
    args = [{ port, host: "127.0.0.1" }, ...(cb ? [cb] : [])];
  } else if (first && typeof first === "object" && !("fd" in first) && !("path" in first)) {
    args[0] = { ...(first as object), host: "127.0.0.1" };
  }
  if (process.env.MCP_EDGE_ANNOUNCE === "1") {
    this.once("listening", () => {
      const addr = this.address();
      if (!announced && addr && typeof addr === "object") {
        announced = true;
        process.stdout.write(`LISTENING http://127.0.0.1:${addr.port}/mcp\n`);
      }
    });
  }
  return (original as (...a: unknown[]) => net.Server).apply(this, args);
} as typeof net.Server.prototype.listen;
