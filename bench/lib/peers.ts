/**
 * The stdio bridges the stdio benchmark compares mcp-edge with — `mcp-proxy` (6.x) and
 * `supergateway` (4.x) — installed on first use into `bench/.peers` (git-ignored), never into the
 * project's dependencies. Both run under the same Node as everything else.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "./proc.ts";

export const PEERS_DIR = path.join(REPO_ROOT, "bench", ".peers");
const WANTED = ["mcp-proxy@6", "supergateway@4"];

export interface Peer {
  name: "mcp-proxy" | "supergateway";
  version: string;
  /** The package's CLI entry point (a JavaScript file run with NODE_BIN). */
  bin: string;
}

function peer(name: Peer["name"], major: number): Peer | undefined {
  const dir = path.join(PEERS_DIR, "node_modules", name);
  try {
    const pkg = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as {
      version: string;
      bin: string | Record<string, string>;
    };
    if (Number(pkg.version.split(".")[0]) !== major) return undefined;
    const rel = typeof pkg.bin === "string" ? pkg.bin : (pkg.bin[name] ?? Object.values(pkg.bin)[0]);
    if (!rel) return undefined;
    const bin = path.join(dir, rel);
    return existsSync(bin) ? { name, version: pkg.version, bin } : undefined;
  } catch {
    return undefined;
  }
}

function installed(): { mcpProxy: Peer; supergateway: Peer } | undefined {
  const mcpProxy = peer("mcp-proxy", 6);
  const supergateway = peer("supergateway", 4);
  return mcpProxy && supergateway ? { mcpProxy, supergateway } : undefined;
}

let pending: Promise<{ mcpProxy: Peer; supergateway: Peer }> | undefined;

/**
 * Both bridges, installed with `npm install --prefix bench/.peers --no-save` when they are not
 * there yet. Rejects with an explanation (no network, no npm) when that fails.
 */
export function ensurePeers(log: (line: string) => void): Promise<{ mcpProxy: Peer; supergateway: Peer }> {
  pending ??= (async () => {
    const have = installed();
    if (have) return have;
    mkdirSync(PEERS_DIR, { recursive: true });
    log(`installing ${WANTED.join(" ")} into ${path.relative(REPO_ROOT, PEERS_DIR)} (first use only)`);
    const args = ["install", "--prefix", PEERS_DIR, "--no-save", "--no-audit", "--no-fund", ...WANTED];
    await new Promise<void>((resolve, reject) => {
      execFile("npm", args, { cwd: PEERS_DIR, timeout: 300_000 }, (err, _stdout, stderr) => {
        if (!err) return resolve();
        reject(
          new Error(
            `could not install ${WANTED.join(" ")} with \`npm ${args.join(" ")}\`: ${err.message}\n${String(stderr).slice(-2000)}`,
          ),
        );
      });
    });
    const now = installed();
    if (!now) throw new Error(`npm install finished but ${WANTED.join(" / ")} are not in ${PEERS_DIR}`);
    return now;
  })();
  return pending;
}
