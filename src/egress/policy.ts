import ipaddr from "ipaddr.js";

/**
 * The egress address policy: pure functions that say whether
 * mcp-edge may connect to a URL once its host has been resolved. No I/O here; `guard.ts` resolves
 * names, calls these and connects only to the address that passed.
 *
 * Every IP string is parsed by ipaddr.js, never by a regular expression (MCP security best
 * practices: "don't hand-roll IP parsing"; the npm `ip` package was fooled by `127.1`, `0x7f.1`,
 * `017700000001` and `::fFFf:127.0.0.1`: CVE-2023-42282, CVE-2024-29415).
 *
 * Fail closed: an address that does not parse, a name that resolves to nothing,
 * and any IPv6 address outside the global unicast block 2000::/3 are denied.
 */

type Addr = ipaddr.IPv4 | ipaddr.IPv6;

export interface AddressClass {
  /**
   * The range the address falls in: "unicast" for a public address, else e.g. "loopback",
   * "private", "linkLocal", "metadata", "carrierGradeNat", "benchmarking", "documentation",
   * "uniqueLocal", "siteLocal", "multicast", "broadcast", "reserved", "unspecified", "discard",
   * "teredo", "nat64Local", "invalid". Addresses that embed an IPv4 address name both:
   * "ipv4Mapped→loopback", "ipv4Compatible→unicast", "ipv4Translated→private", "6to4→private",
   * "nat64→metadata".
   */
  range: string;
  /** Denied under the default rules (no private-network opt-in, no exception). */
  denied: boolean;
}

export interface EgressRules {
  /**
   * Unsafe opt-in (`egress.allowPrivateNetworks`): let run-time URLs reach the ranges in
   * `PRIVATE_RANGES` (RFC 1918, loopback, link-local, CGNAT, ULA). Cloud metadata, multicast,
   * reserved and unspecified addresses stay denied.
   */
  allowPrivate: boolean;
  /**
   * `host:port` exceptions (`api.internal:443`, `10.0.0.7:8080`, `[fd00::7]:443`): a URL whose
   * host and port match one exactly skips the name and address checks (the scheme and redirect
   * checks still apply). The name is still resolved once and the connection pinned.
   */
  allowHosts?: readonly string[];
  /**
   * Address ranges (CIDR, or a single address) that pass the address check whatever their class:
   * an internal network an operator means to reach without opening every private range. Tests use
   * it to stand a loopback alias (127.0.0.2/32) in for a "public" address.
   */
  allowCidrs?: readonly string[];
  /**
   * Ports besides 80 and 443 that run-time URLs and redirect hops may reach, on any address the
   * rest of the policy allows (`egress.allowPorts`). Opening an address range never opens a port:
   * see `checkPort`.
   */
  allowPorts?: readonly number[];
}

export type Decision = { allowed: true } | { allowed: false; rule: string; address?: string };

/** A host that is an IP literal, parsed and normalized. */
export interface HostLiteral {
  family: 4 | 6;
  /** Canonical form: dotted-quad IPv4, RFC 5952 IPv6 (zone id kept, after a `%`). */
  address: string;
  zoneId?: string;
}

// ---- ranges ------------------------------------------------------------------------------------

/**
 * Ordered most specific first: the first match names the range. Sources: IANA IPv4 and IPv6
 * Special-Purpose Address Registries (RFC 6890), cloud metadata endpoints (AWS IMDS and its IPv6
 * twin, ECS task metadata, GCP, Azure, Alibaba, Oracle).
 */
const V4_TABLE: ReadonlyArray<readonly [string, string]> = [
  ["metadata", "169.254.169.254/32"], // AWS, GCP, Azure, Oracle, OpenStack IMDS
  ["metadata", "169.254.170.2/32"], // AWS ECS task metadata and credentials
  ["metadata", "169.254.169.123/32"], // AWS time sync (same network as IMDS)
  ["metadata", "100.100.100.200/32"], // Alibaba Cloud
  ["metadata", "168.63.129.16/32"], // Azure WireServer (public space, platform-only)
  ["unspecified", "0.0.0.0/8"], // RFC 1122 "this network"; 0.0.0.0 reaches the local host
  ["loopback", "127.0.0.0/8"],
  ["private", "10.0.0.0/8"],
  ["private", "172.16.0.0/12"],
  ["private", "192.168.0.0/16"],
  ["linkLocal", "169.254.0.0/16"],
  ["carrierGradeNat", "100.64.0.0/10"], // RFC 6598
  ["reserved", "192.0.0.0/24"], // RFC 6890 IETF protocol assignments
  ["documentation", "192.0.2.0/24"], // RFC 5737 TEST-NET-1
  ["reserved", "192.88.99.0/24"], // RFC 7526 6to4 relay anycast (deprecated)
  ["benchmarking", "198.18.0.0/15"], // RFC 2544
  ["documentation", "198.51.100.0/24"], // TEST-NET-2
  ["documentation", "203.0.113.0/24"], // TEST-NET-3
  ["multicast", "224.0.0.0/4"],
  ["broadcast", "255.255.255.255/32"],
  ["reserved", "240.0.0.0/4"], // RFC 1112 class E
];

const V6_TABLE: ReadonlyArray<readonly [string, string]> = [
  ["metadata", "fd00:ec2::254/128"], // AWS IMDS over IPv6
  ["metadata", "fd00:ec2::23/128"], // AWS DNS/time on Nitro
  ["unspecified", "::/128"],
  ["loopback", "::1/128"],
  ["discard", "100::/64"], // RFC 6666
  ["nat64Local", "64:ff9b:1::/48"], // RFC 8215 local-use translation
  ["teredo", "2001::/32"], // RFC 4380: the client address is obfuscated; never reach through it
  ["benchmarking", "2001:2::/48"], // RFC 5180
  ["reserved", "2001::/23"], // RFC 2928 IETF protocol assignments (ORCHID, AMT, AS112, ...)
  ["documentation", "2001:db8::/32"], // RFC 3849
  ["documentation", "3fff::/20"], // RFC 9637
  ["reserved", "5f00::/16"], // RFC 9602 segment routing
  ["uniqueLocal", "fc00::/7"],
  ["linkLocal", "fe80::/10"],
  ["siteLocal", "fec0::/10"], // RFC 3879, deprecated
  ["multicast", "ff00::/8"],
];

/** IPv6 prefixes that carry an IPv4 address in their last 32 bits (or bits 16..47 for 6to4). */
const V6_EMBEDDING: ReadonlyArray<readonly [string, string]> = [
  ["ipv4Mapped", "::ffff:0:0/96"], // RFC 4291 §2.5.5.2
  ["ipv4Translated", "::ffff:0:0:0/96"], // RFC 6145 / 7915
  ["nat64", "64:ff9b::/96"], // RFC 6052 well-known prefix
  ["6to4", "2002::/16"], // RFC 3056
  ["ipv4Compatible", "::/96"], // RFC 4291 §2.5.5.1, deprecated (after :: and ::1, checked first)
];

/**
 * Classes an operator may open with `allowPrivateNetworks`. Everything else that is not
 * "unicast" stays denied whatever the opt-in: metadata endpoints hand out cloud credentials.
 */
export const PRIVATE_RANGES: ReadonlySet<string> = new Set([
  "loopback",
  "private",
  "linkLocal",
  "carrierGradeNat",
  "uniqueLocal",
  "siteLocal",
]);

function compile(table: ReadonlyArray<readonly [string, string]>): Array<[string, [Addr, number]]> {
  return table.map(([name, cidr]) => [name, ipaddr.parseCIDR(cidr)]);
}

const V4 = compile(V4_TABLE);
const V6 = compile(V6_TABLE);
const V6_EMBED = compile(V6_EMBEDDING);

function match(addr: Addr, table: Array<[string, [Addr, number]]>): string | undefined {
  for (const [name, range] of table) {
    if (addr.kind() === range[0].kind() && addr.match(range)) return name;
  }
  return undefined;
}

/** The IPv4 address embedded in an IPv6 one, for the prefixes in V6_EMBEDDING. */
function embeddedV4(kind: string, v6: ipaddr.IPv6): ipaddr.IPv4 {
  const p = v6.parts;
  // 6to4 (RFC 3056 §2): 2002:AABB:CCDD::/48 carries AA.BB.CC.DD in parts 1 and 2.
  const [hi, lo] = kind === "6to4" ? [p[1] ?? 0, p[2] ?? 0] : [p[6] ?? 0, p[7] ?? 0];
  return new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
}

function classifyV4(v4: ipaddr.IPv4): AddressClass {
  const range = match(v4, V4) ?? "unicast";
  return { range, denied: range !== "unicast" };
}

function classifyV6(v6: ipaddr.IPv6): AddressClass {
  const direct = match(v6, V6);
  if (direct) return { range: direct, denied: true };
  const embedding = match(v6, V6_EMBED);
  if (embedding) {
    const inner = classifyV4(embeddedV4(embedding, v6));
    // Mapped, NAT64 and 6to4 reach the embedded IPv4 host: they are as safe as it is. The
    // deprecated compatible and translated forms have no business on the wire: always denied.
    const alwaysDenied = embedding === "ipv4Compatible" || embedding === "ipv4Translated";
    return { range: `${embedding}→${inner.range}`, denied: alwaysDenied || inner.denied };
  }
  // Only 2000::/3 is allocated global unicast (RFC 4291 §2.4, IANA); anything else is reserved.
  if (!v6.match(GLOBAL_UNICAST)) return { range: "reserved", denied: true };
  return { range: "unicast", denied: false };
}

const GLOBAL_UNICAST = ipaddr.IPv6.parseCIDR("2000::/3");

function parseAddress(ip: string): Addr | undefined {
  const bare = ip.startsWith("[") && ip.endsWith("]") ? ip.slice(1, -1) : ip;
  // ipaddr.parse accepts every inet_aton form (127.1, 0x7f.1, 2130706433, 017700000001) and IPv6
  // with an embedded dotted quad or a zone id. `%25` is the URL spelling of the zone separator.
  const text = bare.includes("%25") ? bare.replace("%25", "%") : bare;
  if (!ipaddr.isValid(text)) return undefined;
  try {
    return ipaddr.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The range of one IP address, in any literal spelling (see `parseHostLiteral`). Anything that is
 * not an IP address is `{ range: "invalid", denied: true }`.
 */
export function classifyAddress(ip: string): AddressClass {
  const addr = parseAddress(ip.trim());
  if (!addr) return { range: "invalid", denied: true };
  return addr.kind() === "ipv4" ? classifyV4(addr as ipaddr.IPv4) : classifyV6(addr as ipaddr.IPv6);
}

/**
 * Whether a host (as written, or as WHATWG `URL.hostname` gives it) is an IP literal, and which.
 * Handles dotted decimal, the inet_aton shorthands that resolvers still accept (`127.1`, `0x7f.1`,
 * `0177.0.0.1`, `2130706433`, `017700000001`), IPv6 with or without brackets, with an embedded
 * dotted quad (`::fFFf:127.0.0.1`) and with a zone id (`fe80::1%eth0`, `[fe80::1%25eth0]`).
 * Returns undefined for a name. WHATWG URL already rewrites most IPv4 shorthands to dotted decimal
 * and `::ffff:a.b.c.d` to hextets (`::ffff:7f00:1`); both spellings land here the same.
 */
export function parseHostLiteral(host: string): HostLiteral | undefined {
  const h = host.trim();
  const addr = parseAddress(h.endsWith(".") && !h.includes(":") ? h.slice(0, -1) : h);
  if (!addr) return undefined;
  if (addr.kind() === "ipv4") return { family: 4, address: addr.toString() };
  const v6 = addr as ipaddr.IPv6;
  return v6.zoneId
    ? { family: 6, address: v6.toRFC5952String(), zoneId: v6.zoneId }
    : { family: 6, address: v6.toRFC5952String() };
}

// ---- names ---------------------------------------------------------------------------------------

/**
 * Names refused before any resolution: they name this machine (RFC 6761 §6.3: `localhost` and
 * everything under it) or a cloud metadata service whatever DNS says.
 */
const DENIED_NAMES: ReadonlyMap<string, string> = new Map([
  ["localhost", "localhost"],
  ["metadata", "metadata"],
  ["metadata.google.internal", "metadata"],
  ["metadata.goog", "metadata"],
  ["instance-data", "metadata"],
  ["instance-data.ec2.internal", "metadata"],
]);

/** The rule that refuses a host name, if one does (`name:localhost`, `name:metadata`). */
export function deniedName(hostname: string): string | undefined {
  let h = hostname.trim().toLowerCase();
  while (h.endsWith(".")) h = h.slice(0, -1);
  if (h === "") return "name:empty";
  const exact = DENIED_NAMES.get(h);
  if (exact) return `name:${exact}`;
  if (h.endsWith(".localhost")) return "name:localhost";
  return undefined;
}

// ---- targets ---------------------------------------------------------------------------------------

const DEFAULT_PORTS: Readonly<Record<string, string>> = { "http:": "80", "https:": "443" };

/** The port a URL connects to (the scheme's default when none is written). */
export function effectivePort(url: URL): string {
  return url.port || DEFAULT_PORTS[url.protocol] || "";
}

/** `host:port` as `allowHosts` spells it: lower-case name, IPv6 in brackets, canonical IP. */
function hostKey(hostname: string, port: string): string {
  const lit = parseHostLiteral(hostname);
  let host = hostname.toLowerCase();
  while (host.endsWith(".")) host = host.slice(0, -1);
  if (lit) host = lit.family === 6 ? `[${lit.address}]` : lit.address;
  return `${host}:${port}`;
}

/** Parses one `allowHosts` entry into the key `hostKey` makes; throws on a malformed one. */
export function parseAllowHost(entry: string): string {
  let url: URL;
  try {
    // A scheme without a default port: WHATWG URL keeps ":80" and ":443" as written.
    url = new URL(`egress://${entry.trim()}`);
  } catch {
    throw new Error(`egress exception ${JSON.stringify(entry)} is not host:port`);
  }
  if (url.port === "") throw new Error(`egress exception ${JSON.stringify(entry)} needs a port (host:port)`);
  if (url.hostname === "" || url.pathname !== "" || url.search || url.hash || url.username) {
    throw new Error(`egress exception ${JSON.stringify(entry)} is not host:port`);
  }
  return hostKey(url.hostname, url.port);
}

/** Parses one `allowCidrs` entry (a CIDR or a single address); throws on a malformed one. */
export function parseAllowCidr(entry: string): [Addr, number] {
  if (ipaddr.isValidCIDR(entry)) return ipaddr.parseCIDR(entry);
  const addr = parseAddress(entry);
  if (addr) return [addr, addr.kind() === "ipv4" ? 32 : 128];
  throw new Error(`egress address range ${JSON.stringify(entry)} is not a CIDR or an IP address`);
}

/** Rules compiled once (exceptions parsed); `checkTarget` accepts either form. */
interface CompiledRules {
  allowPrivate: boolean;
  hosts: ReadonlySet<string>;
  cidrs: ReadonlyArray<[Addr, number]>;
  ports: ReadonlySet<string>;
}

/** The ports of the web (RFC 9110 §4.2.1, §4.2.2): the only ones open without being named. */
export const DEFAULT_PORTS_ALLOWED: readonly number[] = [80, 443];

const compiled = new WeakMap<EgressRules, CompiledRules>();

function compileRules(rules: EgressRules): CompiledRules {
  let c = compiled.get(rules);
  if (!c) {
    c = {
      allowPrivate: rules.allowPrivate,
      hosts: new Set((rules.allowHosts ?? []).map(parseAllowHost)),
      cidrs: (rules.allowCidrs ?? []).map(parseAllowCidr),
      ports: new Set([...DEFAULT_PORTS_ALLOWED, ...(rules.allowPorts ?? [])].map(String)),
    };
    compiled.set(rules, c);
  }
  return c;
}

/**
 * Validates rules (exceptions that do not parse throw), so a bad config fails at boot rather than
 * on the first request.
 */
export function validateRules(rules: EgressRules): void {
  compileRules(rules);
}

/** True when the URL's host:port is an explicit `allowHosts` exception. */
export function isExcepted(url: URL, rules: EgressRules): boolean {
  const c = compileRules(rules);
  return c.hosts.size > 0 && c.hosts.has(hostKey(url.hostname, effectivePort(url)));
}

function inCidrs(addr: Addr, cidrs: ReadonlyArray<[Addr, number]>): boolean {
  if (cidrs.length === 0) return false;
  // An IPv4-mapped address also matches the IPv4 range it maps to.
  const alt =
    addr.kind() === "ipv6" && (addr as ipaddr.IPv6).isIPv4MappedAddress()
      ? (addr as ipaddr.IPv6).toIPv4Address()
      : undefined;
  return cidrs.some(
    (r) => (addr.kind() === r[0].kind() && addr.match(r)) || (alt !== undefined && alt.match(r)),
  );
}

/** The `host:port` a URL connects to, spelled as `allowHosts` entries are (for `checkPort`'s `named`). */
export function namedTarget(url: URL): string {
  return hostKey(url.hostname, effectivePort(url));
}

/**
 * The port rule, separate from the address rule: a checked URL may connect to port 80 or 443, to
 * a port in `allowPorts`, or to a `host:port` named explicitly — an `allowHosts` exception, or one
 * of `named` (the `host:port` of a URL written in the config that this request stems from: the
 * configured origin of a redirected request, the configured issuer whose metadata gave a
 * `jwks_uri`). Opening addresses (`allowPrivate`, `allowCidrs`) never opens a port, so an opt-in
 * for an internal network does not reach its Redis (6379), SMTP (25) or memcached (11211).
 */
export function checkPort(url: URL, rules: EgressRules, named: readonly string[] = []): Decision {
  const c = compileRules(rules);
  const port = effectivePort(url);
  if (c.ports.has(port)) return { allowed: true };
  const key = hostKey(url.hostname, port);
  if (c.hosts.has(key) || named.includes(key)) return { allowed: true };
  return { allowed: false, rule: `port:${port}` };
}

/** The decision for one resolved address under the rules. */
export function checkAddress(ip: string, rules: EgressRules): Decision {
  const c = compileRules(rules);
  const addr = parseAddress(ip);
  if (!addr) return { allowed: false, rule: "range:invalid", address: ip };
  if (inCidrs(addr, c.cidrs)) return { allowed: true };
  const cls = classifyAddress(ip);
  if (!cls.denied) return { allowed: true };
  if (c.allowPrivate && PRIVATE_RANGES.has(innerRange(cls.range))) return { allowed: true };
  return { allowed: false, rule: `range:${cls.range}`, address: addr.toString() };
}

/** "ipv4Mapped→private" → "private" (the opt-in opens an address however it is spelled). */
function innerRange(range: string): string {
  const i = range.indexOf("→");
  if (i < 0) return range;
  const outer = range.slice(0, i);
  // Deprecated embeddings stay denied even when what they embed would be allowed.
  return outer === "ipv4Compatible" || outer === "ipv4Translated" ? range : range.slice(i + 1);
}

/**
 * The checks that need no resolution: scheme (http and https only), the `allowHosts` exception,
 * denied names, and the address of an IP-literal host. `{ allowed: true }` means "resolve the
 * name and call `checkTarget`" (or, for a literal, connect to it).
 */
export function checkUrl(url: URL, rules: EgressRules): Decision {
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return { allowed: false, rule: "scheme" };
  }
  if (isExcepted(url, rules)) return { allowed: true };
  const literal = parseHostLiteral(url.hostname);
  if (literal) return checkAddress(literal.address, rules);
  const name = deniedName(url.hostname);
  if (name) return { allowed: false, rule: name };
  return { allowed: true };
}

/**
 * May mcp-edge connect to `url` whose host resolved to `addresses`? Every address must pass: a
 * name answering one public and one private address is denied (the resolver's order is not a
 * security boundary). An empty list is denied (`unresolved`). For an IP-literal host the literal
 * itself is checked first, then the addresses.
 */
export function checkTarget(url: URL, addresses: readonly string[], rules: EgressRules): Decision {
  const pre = checkUrl(url, rules);
  if (!pre.allowed) return pre;
  if (isExcepted(url, rules)) return { allowed: true };
  if (addresses.length === 0) return { allowed: false, rule: "unresolved" };
  for (const a of addresses) {
    const d = checkAddress(a, rules);
    if (!d.allowed) return d;
  }
  return { allowed: true };
}
