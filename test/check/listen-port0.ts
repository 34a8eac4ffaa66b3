/**
 * Preload (`node --import .../listen-port0.ts example.js`) for the official SDK v1 example servers,
 * which listen on a fixed port (3000) on every interface: every `listen(...)` binds 127.0.0.1 on a
 * free port instead, and the first one prints `LISTENING http://127.0.0.1:<port>/mcp` (the line
 * test/helpers/spawn.ts waits for). Tests never open a fixed port or one beyond loopback.
 */
import net from "node:net";

const original = net.Server.prototype.listen;
let announced = false;

net.Server.prototype.listen = function listenOnFreeLoopbackPort(this: net.Server, ...args: unknown[]) {
  const cb = args.find((a) => typeof a === "function") as (() => void) | undefined;
  this.once("listening", () => {
    const addr = this.address();
    if (!announced && addr && typeof addr === "object") {
      announced = true;
      process.stdout.write(`LISTENING http://127.0.0.1:${addr.port}/mcp\n`);
    }
  });
  return (original as (...a: unknown[]) => net.Server).apply(this, [
    { port: 0, host: "127.0.0.1" },
    ...(cb ? [cb] : []),
  ]);
} as typeof net.Server.prototype.listen;
