/**
 * A fault-injecting TCP proxy (the Envoy test method): put it between the edge
 * and a real service (PostgreSQL, Redis), then `cut()` to make the service unreachable — every
 * open connection is reset and new ones are refused — or `hang()` to make it hung — connections
 * stay open and new ones are accepted, but no byte goes through either way — and `restore()` to
 * bring it back on the same port (a hang resumes where it stopped: nothing is lost). The service
 * itself keeps running, so what it holds survives the outage.
 *
 *   const proxy = await startTcpProxy(5432);
 *   ... connect to 127.0.0.1:proxy.port ...
 *   await proxy.cut(); ... await proxy.restore(); ... await proxy.stop();
 *   proxy.hang(); ... await proxy.restore();
 */
import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";

export interface TcpProxy {
  readonly port: number;
  /** Resets every open connection and stops accepting new ones (connections are refused). */
  cut(): Promise<void>;
  /** Black-holes the service: connections open and are kept, bytes are held, none is answered. */
  hang(): void;
  /** Accepts connections again, on the same port, and lets held bytes through. */
  restore(): Promise<void>;
  stop(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket | undefined;
}

export async function startTcpProxy(targetPort: number, targetHost = "127.0.0.1"): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  const pairs = new Set<Pair>();
  let hung = false;
  const track = (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => s.destroy());
  };
  const flow = (p: Pair) => {
    if (p.upstream === undefined) {
      const upstream = connect(targetPort, targetHost);
      track(upstream);
      p.upstream = upstream;
      p.client.on("close", () => upstream.destroy());
      upstream.on("close", () => p.client.destroy());
    }
    p.client.pipe(p.upstream);
    p.upstream.pipe(p.client);
    p.client.resume();
  };
  const hold = (p: Pair) => {
    p.client.unpipe();
    p.client.pause();
    p.upstream?.unpipe();
    p.upstream?.pause();
  };
  const make = (): Server =>
    createServer((client) => {
      track(client);
      const p: Pair = { client, upstream: undefined };
      pairs.add(p);
      client.on("close", () => pairs.delete(p));
      if (hung) client.pause();
      else flow(p);
    });
  let server = make();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  let listening = true;
  const close = async () => {
    hung = false;
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
    hang() {
      hung = true;
      for (const p of pairs) hold(p);
    },
    async restore() {
      if (hung) {
        hung = false;
        for (const p of pairs) flow(p);
      }
      if (listening) return;
      server = make();
      server.listen(port, "127.0.0.1");
      await once(server, "listening");
      listening = true;
    },
    stop: close,
  };
}
