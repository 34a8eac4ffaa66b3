import { BlockList, isIP } from "node:net";

/** Host-name helpers shared by the config checks and the listener hygiene: pure, no project imports. */

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/**
 * True when a listener bound to `host` is reachable from this machine only: 127.0.0.0/8, ::1 (any
 * spelling, IPv4-mapped included) or `localhost`. Any other name may resolve anywhere, and the
 * unspecified addresses (0.0.0.0, ::) are every interface, so they count as public.
 */
export function isLoopbackHost(host: string): boolean {
  const h = bareHost(host);
  if (h === "localhost" || h === "localhost.") return true;
  const family = isIP(h);
  if (family === 4) return LOOPBACK.check(h, "ipv4");
  if (family === 6) return LOOPBACK.check(h, "ipv6");
  return false;
}

const UNSPECIFIED = new BlockList();
UNSPECIFIED.addAddress("0.0.0.0", "ipv4");
UNSPECIFIED.addAddress("::", "ipv6");

export function bareHost(host: string): string {
  const h = host.trim().toLowerCase();
  return h.startsWith("[") && h.endsWith("]") ? h.slice(1, -1) : h;
}

/** 0.0.0.0 or :: (any spelling): every interface. */
export function isUnspecified(host: string): boolean {
  const h = bareHost(host);
  const family = isIP(h);
  return family !== 0 && UNSPECIFIED.check(h, family === 4 ? "ipv4" : "ipv6");
}
