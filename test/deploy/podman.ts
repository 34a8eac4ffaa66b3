/**
 * Podman for the container-image test: build the repository's Dockerfile and run the image, as a
 * user's `docker build` / `docker run` would, on a machine where no registry serves base images.
 *
 * - Podman reads a containers.conf written here (CONTAINERS_CONF, never the machine's global one):
 *   `runc` with the `cgroupfs` manager and no default ulimits, which is what works in these
 *   machines' containers (no systemd, cgroup v1).
 * - The base image: the Dockerfile's default is the public `node:24-slim`, which cannot be pulled
 *   here. `ensureBaseImage` makes an equivalent locally — Debian bookworm from the mirror apt uses
 *   (`debootstrap --variant=minbase`), plus the Node 24 binary package-lock.json pins
 *   (node_modules/node) and the npm the machine runs `npm ci` with — and `podman import`s it under
 *   a tag naming both versions, so later runs find it and skip the ~2 minutes of debootstrap.
 * - Production dependencies come from the npm registry during the build (as for a user). When the
 *   machine trusts extra CAs (NODE_EXTRA_CA_CERTS, else the system bundle: e.g. a TLS-intercepting
 *   proxy's), they are passed as the `ca` build secret the Dockerfile accepts.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "../helpers/spawn.ts";
import { tempDir } from "../helpers/edge.ts";

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

const CONTAINERS_CONF = `# Written by test/deploy/podman.ts for podman runs of the tests only.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`;

let confDir: string | undefined;

/** The environment every podman command of the tests runs with. */
export function podmanEnv(): NodeJS.ProcessEnv {
  if (confDir === undefined) {
    confDir = tempDir("mcp-edge-podman-");
    writeFileSync(path.join(confDir, "containers.conf"), CONTAINERS_CONF);
  }
  return { ...process.env, CONTAINERS_CONF: path.join(confDir, "containers.conf") };
}

/** Removes the containers.conf written for this process (call after the last podman command). */
export function podmanConfCleanup(): void {
  if (confDir !== undefined) rmSync(confDir, { recursive: true, force: true });
  confDir = undefined;
}

/** Runs a command to its end, bounded; the result whatever the exit code. */
export function run(
  command: string,
  args: string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string; input?: NodeJS.ReadableStream } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? REPO_ROOT,
      env: options.env ?? process.env,
      stdio: [options.input ? "pipe" : "ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout?.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    if (options.input && child.stdin) options.input.pipe(child.stdin);
    const timeoutMs = options.timeoutMs ?? 120_000;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${command} ${args.join(" ")}: no end within ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `podman ARGS`; throws with its output unless it exits 0. */
export async function podman(args: string[], timeoutMs = 120_000): Promise<string> {
  const r = await run("podman", args, { env: podmanEnv(), timeoutMs });
  if (r.code !== 0)
    throw new Error(
      `podman ${args.join(" ")} exited ${r.code}:\n${r.stderr.slice(-4000)}${r.stdout.slice(-2000)}`,
    );
  return r.stdout;
}

/** Undefined when podman and debootstrap are usable; else why not. */
export async function podmanMissing(): Promise<string | undefined> {
  for (const [tool, args] of [
    ["podman", ["--version"]],
    ["runc", ["--version"]],
    ["debootstrap", ["--version"]],
  ] as const) {
    const r = await run(tool, [...args], { timeoutMs: 30_000 }).catch((err: Error) => ({
      code: -1,
      stdout: "",
      stderr: err.message,
    }));
    if (r.code !== 0) return `${tool} is not usable (${r.stderr.trim() || `exit ${r.code}`})`;
  }
  return undefined;
}

/** The Debian mirror and release apt uses on this machine (deb822 .sources, else sources.list). */
export function debianMirror(): { url: string; suite: string } {
  const osRelease = readFileSync("/etc/os-release", "utf8");
  const suite = /^VERSION_CODENAME=(\S+)$/m.exec(osRelease)?.[1] ?? "bookworm";
  const files: string[] = [];
  if (existsSync("/etc/apt/sources.list")) files.push("/etc/apt/sources.list");
  if (existsSync("/etc/apt/sources.list.d"))
    for (const f of readdirSync("/etc/apt/sources.list.d").sort())
      if (f.endsWith(".sources") || f.endsWith(".list")) files.push(path.join("/etc/apt/sources.list.d", f));
  for (const f of files) {
    const text = readFileSync(f, "utf8");
    for (const stanza of text.split(/\n\s*\n/)) {
      const uris = /^URIs:\s*(\S+)/m.exec(stanza)?.[1];
      const suites = /^Suites:\s*(.+)$/m.exec(stanza)?.[1]?.split(/\s+/) ?? [];
      if (uris && /^Types:.*\bdeb\b/m.test(stanza) && suites.includes(suite) && !/security/.test(uris))
        return { url: uris, suite };
    }
    for (const line of text.split("\n")) {
      const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s/.exec(line.trim() + " ");
      if (m?.[1] && m[2] === suite && !/security/.test(m[1])) return { url: m[1], suite };
    }
  }
  return { url: "http://deb.debian.org/debian", suite };
}

/** The Node binary package-lock.json pins (the `node` devDependency) and its version. */
function pinnedNode(): { bin: string; version: string } {
  const bin = path.join(REPO_ROOT, "node_modules", "node", "bin", "node");
  const version = (
    JSON.parse(readFileSync(path.join(REPO_ROOT, "node_modules", "node", "package.json"), "utf8")) as {
      version: string;
    }
  ).version;
  return { bin, version };
}

/** The npm package directory of the `npm` on PATH (the one that ran `npm ci`). */
async function hostNpm(): Promise<{ dir: string; version: string }> {
  const which = await run("sh", ["-c", "command -v npm"], { timeoutMs: 10_000 });
  const npmBin = which.stdout.trim();
  if (which.code !== 0 || !npmBin) throw new Error("no npm on PATH to put in the test base image");
  // bin/npm-cli.js -> the package root.
  const dir = path.dirname(path.dirname(realpathSync(npmBin)));
  const version = (JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as { version: string })
    .version;
  return { dir, version };
}

/** Bump when the recipe below changes, so that a cached base image is rebuilt. */
const RECIPE = 1;

/**
 * A local stand-in for node:24-slim: Debian (minbase), Node at /usr/local/bin/node, npm at
 * /usr/local/bin/npm. Built once, then found by its tag. Returns the tag.
 */
export async function ensureBaseImage(log: (line: string) => void): Promise<string> {
  const node = pinnedNode();
  const npm = await hostNpm();
  const mirror = debianMirror();
  const digest = createHash("sha256")
    .update(JSON.stringify({ RECIPE, node: node.version, npm: npm.version, mirror }))
    .digest("hex")
    .slice(0, 12);
  const tag = `localhost/mcp-edge-test-base:node${node.version}-${mirror.suite}-${digest}`;
  const exists = await run("podman", ["image", "exists", tag], { env: podmanEnv(), timeoutMs: 60_000 });
  if (exists.code === 0) {
    log(`base image ${tag} is cached`);
    return tag;
  }
  // Big and short-lived: under /var/tmp, not a tmpfs /tmp.
  const work = path.join("/var/tmp", `mcp-edge-base-${process.pid}-${Date.now()}`);
  const root = path.join(work, "rootfs");
  mkdirSync(work, { recursive: true });
  try {
    log(`debootstrap --variant=minbase ${mirror.suite} from ${mirror.url} (a few minutes, once)`);
    const boot = await run("debootstrap", ["--variant=minbase", mirror.suite, root, mirror.url], {
      timeoutMs: 15 * 60_000,
    });
    if (boot.code !== 0)
      throw new Error(
        `debootstrap exited ${boot.code}:\n${boot.stderr.slice(-3000)}${boot.stdout.slice(-3000)}`,
      );
    // What a slim image leaves out: documentation, locales, apt's downloaded lists and packages.
    for (const d of [
      "usr/share/doc",
      "usr/share/man",
      "usr/share/info",
      "usr/share/locale",
      "var/lib/apt/lists",
    ])
      for (const f of existsSync(path.join(root, d)) ? readdirSync(path.join(root, d)) : [])
        rmSync(path.join(root, d, f), { recursive: true, force: true });
    rmSync(path.join(root, "var/cache/apt/archives"), { recursive: true, force: true });
    mkdirSync(path.join(root, "var/cache/apt/archives/partial"), { recursive: true });
    // Node and npm where the official image has them.
    mkdirSync(path.join(root, "usr/local/bin"), { recursive: true });
    copyFileSync(node.bin, path.join(root, "usr/local/bin/node"));
    chmodSync(path.join(root, "usr/local/bin/node"), 0o755);
    cpSync(npm.dir, path.join(root, "usr/local/lib/node_modules/npm"), { recursive: true });
    symlinkSync("../lib/node_modules/npm/bin/npm-cli.js", path.join(root, "usr/local/bin/npm"));
    symlinkSync("../lib/node_modules/npm/bin/npx-cli.js", path.join(root, "usr/local/bin/npx"));
    log(`podman import -> ${tag}`);
    const tar = spawn("tar", ["-C", root, "-c", "."], { stdio: ["ignore", "pipe", "inherit"] });
    const imported = await run(
      "podman",
      [
        "import",
        "--change",
        "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        'CMD=["node"]',
        "-",
        tag,
      ],
      { env: podmanEnv(), input: tar.stdout!, timeoutMs: 10 * 60_000 },
    );
    if (imported.code !== 0) throw new Error(`podman import exited ${imported.code}:\n${imported.stderr}`);
    return tag;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Builds the repository's Dockerfile on `base`; returns the image tag. */
export async function buildImage(base: string, tag: string): Promise<void> {
  const args = ["build", "--format", "docker", "--layers", "--build-arg", `BASE=${base}`, "-t", tag];
  // The CAs this machine trusts, for the build's npm: Node's extra ones, else the system bundle.
  const ca = [process.env.NODE_EXTRA_CA_CERTS, "/etc/ssl/certs/ca-certificates.crt"].find(
    (f): f is string => f !== undefined && f !== "" && existsSync(f),
  );
  if (ca) args.push("--secret", `id=ca,src=${ca}`);
  args.push("-f", path.join(REPO_ROOT, "Dockerfile"), REPO_ROOT);
  await podman(args, 15 * 60_000);
}
