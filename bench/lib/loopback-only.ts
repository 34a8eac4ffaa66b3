/**
 * Preloaded (`node --import`) into programs that listen on every interface and have no option to
 * choose (supergateway 4 calls `app.listen(port)`): a listen without a host binds 127.0.0.1 instead,
 * so the benchmark exposes nothing beyond loopback. Nothing else changes.
 */
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function patched(this: net.Server, ...args: unknown[]) {
  const [first] = args;
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, cb]): insert the host when the next argument is not one.
    if (typeof args[1] !== "string") args.splice(1, 0, "127.0.0.1");
  } else if (first !== null && typeof first === "object" && !("path" in first) && !("fd" in first)) {
    const o = first as net.ListenOptions;
    if (o.host === undefined && !("_handle" in o)) args[0] = { ...o, host: "127.0.0.1" };
  }
  return (listen as (...a: unknown[]) => net.Server).apply(this, args);
} as typeof net.Server.prototype.listen;
