import { classifyAddress, deniedName, parseHostLiteral } from "../egress/policy.ts";
import type { WarningCode } from "../errors/codes.ts";
import { bareHost, isLoopbackHost, isUnspecified } from "../lib/hosts.ts";
import type { Config } from "./schema.ts";

/**
 * Unsafe opt-ins: a valid config can still ask for something
 * dangerous. Each such choice either needs its named opt-in (else it is an error: the edge refuses
 * to boot, `mcp-edge validate` exits 1) or is allowed with a coded warning, logged at boot and
 * printed by `validate`. Pure: the caller decides how to report.
 */

export interface ConfigWarning {
  code: WarningCode;
  message: string;
}

export interface ConfigAssessment {
  warnings: ConfigWarning[];
  /** Each one makes the config unusable (boot fails with EDGE_CONFIG_UNSAFE). */
  errors: string[];
}

/** Whether two listeners would try to bind the same socket. Port 0 picks a free port: never. */
function sameSocket(a: { host: string; port: number }, b: { host: string; port: number }): boolean {
  if (a.port === 0 || a.port !== b.port) return false;
  const ha = bareHost(a.host);
  const hb = bareHost(b.host);
  return ha === hb || isUnspecified(ha) || isUnspecified(hb);
}

export function assessConfig(config: Config): ConfigAssessment {
  const warnings: ConfigWarning[] = [];
  const errors: string[] = [];
  const listen = `${config.listen.host}:${config.listen.port}`;
  const publicListener = !isLoopbackHost(config.listen.host);

  for (const [name, server] of Object.entries(config.servers)) {
    if (!server.auth.includes("none")) continue;
    const what = `route ${server.route} (server ${name})`;
    if (!publicListener) {
      warnings.push({
        code: "EDGE_WARN_AUTH_NONE",
        message: `${what} accepts requests without authentication (auth: [none]); the listener ${listen} is loopback only`,
      });
    } else if (config.unsafe.allowUnauthenticatedPublic) {
      warnings.push({
        code: "EDGE_WARN_AUTH_NONE_PUBLIC",
        message: `${what} accepts requests without authentication on the non-loopback listener ${listen} (unsafe.allowUnauthenticatedPublic)`,
      });
    } else {
      errors.push(
        `servers.${name}.auth: ${what} has auth: [none] on the non-loopback listener ${listen}; ` +
          "listen on 127.0.0.1, add an authentication method, or set unsafe.allowUnauthenticatedPublic: true",
      );
    }
  }

  if (publicListener && config.publicUrl === undefined && config.security.allowedHosts.length === 0) {
    warnings.push({
      code: "EDGE_WARN_ANY_HOST",
      message: `the listener ${listen} is not loopback and neither publicUrl nor security.allowedHosts is set: any Host header is accepted (DNS rebinding)`,
    });
  }

  if (config.security.trustForwardedHeaders) {
    warnings.push({
      code: "EDGE_WARN_TRUST_FORWARDED",
      message:
        "security.trustForwardedHeaders is on: client address and scheme are taken from X-Forwarded-* / Forwarded; only do this behind a proxy that overwrites them",
    });
  }

  // The edge's own egress: run-time URLs and redirects reaching private ranges is a named opt-in.
  if (config.egress.allowPrivateNetworks) {
    warnings.push({
      code: "EDGE_WARN_EGRESS_PRIVATE",
      message:
        "egress.allowPrivateNetworks: URLs discovered at run time and redirect hops may reach private, loopback and link-local addresses",
    });
  }

  // The authorization server fetching client metadata documents from private addresses.
  const cimd = config.auth.authorizationServer.registration.cimd;
  if (config.auth.authorizationServer.enabled && cimd.enabled && cimd.allowPrivateNetworks) {
    warnings.push({
      code: "EDGE_WARN_EGRESS_PRIVATE",
      message:
        "auth.authorizationServer.registration.cimd.allowPrivateNetworks: client metadata documents may be fetched from private, loopback and link-local addresses",
    });
  }

  // Egress proxy (src/egress/proxy.ts): reaching private ranges is a named opt-in per server.
  for (const [name, server] of Object.entries(config.servers)) {
    const egress = server.egress;
    if (egress.allowPrivate) {
      warnings.push({
        code: "EDGE_WARN_EGRESS_PRIVATE",
        message: `servers.${name}.egress.allowPrivate: the server may reach private, loopback and link-local addresses through the egress proxy`,
      });
    }
    for (const target of egress.allow) {
      const host = bareHost(target.slice(0, target.lastIndexOf(":")));
      const denied = parseHostLiteral(host) ? classifyAddress(host).denied : deniedName(host) !== undefined;
      if (!denied) continue;
      warnings.push({
        code: "EDGE_WARN_EGRESS_PRIVATE",
        message: `servers.${name}.egress.allow: ${target} is a non-public address; the server may reach it through the egress proxy`,
      });
    }
  }

  const keyRoutes = Object.entries(config.servers).filter(([, server]) => server.auth.includes("apiKey"));
  if (keyRoutes.length > 0 && config.admin.token === undefined) {
    warnings.push({
      code: "EDGE_WARN_NO_ADMIN_TOKEN",
      message: `routes accept API keys (${keyRoutes.map(([n]) => n).join(", ")}) but admin.token is not set: the admin API is off, so no key can be created`,
    });
  }

  // Distributed mode: a stdio process or a legacy-SSE connection belongs to one edge instance.
  if (config.store.redis) {
    for (const [name, server] of Object.entries(config.servers)) {
      const kind = server.upstream.stdio ? "stdio" : server.upstream.sse ? "legacy SSE" : undefined;
      if (!kind) continue;
      warnings.push({
        code: "EDGE_WARN_INSTANCE_BOUND_UPSTREAM",
        message: `servers.${name}: a ${kind} upstream's sessions live in one edge instance; a request that reaches another instance re-initializes the session there (use session affinity at the load balancer, or a Streamable HTTP upstream)`,
      });
    }
  }

  const admin = config.admin.listen;
  if (!isLoopbackHost(admin.host)) {
    warnings.push({
      code: "EDGE_WARN_ADMIN_PUBLIC",
      message: `the admin listener ${admin.host}:${admin.port} is not loopback: the admin API and dashboard are reachable from the network`,
    });
  }

  // Not an opt-in but a boot failure worth catching early: `admin: { listen: { host: x } }` without
  // a port takes the listener default 8787, the public port.
  if (sameSocket(config.listen, admin)) {
    errors.push(
      `admin.listen: ${admin.host}:${admin.port} collides with listen ${listen}; give the admin listener its own port`,
    );
  }

  return { warnings, errors };
}
