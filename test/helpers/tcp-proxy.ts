/**
 * A fault-injecting TCP proxy (the Envoy test method): put it between the edge
 * and a real service (PostgreSQL, Redis), then `cut()` to make the service unreachable — every
 * open connection is reset and new ones are refused — and `restore()` to bring it back on the same
 * port. The service itself keeps running, so what it holds survives the outage.
 *
 *   const proxy = await startTcpProxy(5432);
 *   ... connect to 127.0.0.1:proxy.port ...
 *   await proxy.cut(); ... await proxy.restore(); ... await proxy.stop();
 */
import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";

export interface TcpProxy {
  readonly port: number;
  /** Resets every open connection and stops accepting new ones (connections are refused). */
  cut(): Promise<void>;
  /** Accepts connections again, on the same port. */
  restore(): Promise<void>;
  stop(): Promise<void>;
}

export async function startTcpProxy(targetPort: number, targetHost = "127.0.0.1"): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => s.destroy());
  };
  const make = (): Server =>
    createServer((client) => {
      track(client);
      const upstream = connect(targetPort, targetHost);
      track(upstream);
      client.pipe(upstream);
      upstream.pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
  let server = make();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  let listening = true;
  const close = async () => {
    if (!listening) return;
    listening = false;
    const closed = once(server, "close");
    server.close();
    for (const s of sockets) s.resetAndDestroy();
    await closed;
  };
  return {
    port,
    cut: close,
    async restore() {
      if (listening) return;
      server = make();
      server.listen(port, "127.0.0.1");
      await once(server, "listening");
      listening = true;
    },
    stop: close,
  };
}
