/**
 * Where the bridge keeps a login: the client registration and the tokens for one (server URL,
 * client) pair. In the OS keychain when one is usable (Linux: libsecret's `secret-tool`, the
 * secret passed on stdin, never in argv), else in a JSON file readable by the user only (0600, in a
 * 0700 directory, written to a temp file and renamed so a reader never sees half a file).
 *
 * Concurrent bridge processes for the same server share one entry; `withLock` serializes the
 * refresh across them with an exclusive-create lock file, so a rotating refresh token (OAuth 2.1
 * §4.3.1, RFC 9700 §4.14.2) is spent once: whoever takes the lock second re-reads the entry and
 * finds the new tokens.
 */
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";
import { z } from "zod";

export const storedSchema = z.object({
  server: z.string(),
  issuer: z.string().optional(),
  client: z
    .object({
      client_id: z.string(),
      client_secret: z.string().optional(),
      auth_method: z.enum(["none", "client_secret_basic", "client_secret_post"]),
      redirect_uri: z.string().optional(),
      source: z.enum(["preregistered", "cimd", "dcr"]),
    })
    .optional(),
  tokens: z
    .object({
      access_token: z.string(),
      token_type: z.string().optional(),
      refresh_token: z.string().optional(),
      /** Epoch ms. */
      expires_at: z.number().optional(),
      /** Epoch ms when issued (the refresh margin is a share of the lifetime). */
      issued_at: z.number().optional(),
      scope: z.string().optional(),
    })
    .optional(),
});

export type Stored = z.infer<typeof storedSchema>;

export interface TokenStore {
  readonly kind: "keychain" | "file";
  load(): Promise<Stored | undefined>;
  save(value: Stored): Promise<void>;
  clear(): Promise<void>;
  /** Runs `fn` holding the cross-process lock of this entry. */
  withLock<T>(fn: () => Promise<T>): Promise<T>;
}

/** The config directory: $MCP_EDGE_CONFIG_DIR, else $XDG_CONFIG_HOME/mcp-edge, else ~/.config/mcp-edge. */
export function configDir(env: NodeJS.ProcessEnv): string {
  if (env.MCP_EDGE_CONFIG_DIR) return env.MCP_EDGE_CONFIG_DIR;
  if (env.XDG_CONFIG_HOME) return path.join(env.XDG_CONFIG_HOME, "mcp-edge");
  if (process.platform === "win32" && env.APPDATA) return path.join(env.APPDATA, "mcp-edge");
  return path.join(homedir(), ".config", "mcp-edge");
}

/** The entry's key: a digest of the server URL and the client identity (no secret in a name). */
export function entryKey(serverUrl: string, client: string): string {
  return createHash("sha256").update(`${serverUrl}\n${client}`).digest("hex").slice(0, 32);
}

function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    chmodSync(dir, 0o700);
  } catch {
    // not ours to change (a shared parent): the file itself is 0600
  }
}

class FileStore implements TokenStore {
  readonly kind = "file" as const;
  readonly file: string;
  readonly #lock: Lock;
  constructor(dir: string, key: string) {
    this.file = path.join(dir, `${key}.json`);
    this.#lock = new Lock(path.join(dir, `${key}.lock`));
    ensureDir(dir);
  }
  async load(): Promise<Stored | undefined> {
    let text: string;
    try {
      text = readFileSync(this.file, "utf8");
    } catch {
      return undefined;
    }
    const parsed = storedSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  }
  async save(value: Stored): Promise<void> {
    const tmp = `${this.file}.${process.pid}.${Date.now()}.tmp`;
    writeFileSync(tmp, JSON.stringify(value), { mode: 0o600 });
    chmodSync(tmp, 0o600);
    renameSync(tmp, this.file);
  }
  async clear(): Promise<void> {
    try {
      unlinkSync(this.file);
    } catch {
      // already gone
    }
  }
  withLock<T>(fn: () => Promise<T>): Promise<T> {
    return this.#lock.run(fn);
  }
}

const SECRET_SERVICE = "mcp-edge-connect";

/** libsecret through `secret-tool` (GNOME Keyring, KWallet): the secret goes on stdin. */
class SecretToolStore implements TokenStore {
  readonly kind = "keychain" as const;
  readonly #key: string;
  readonly #lock: Lock;
  constructor(lockDir: string, key: string) {
    this.#key = key;
    ensureDir(lockDir);
    this.#lock = new Lock(path.join(lockDir, `${key}.lock`));
  }
  #run(args: string[], input?: string): Promise<{ code: number | null; out: string }> {
    return new Promise((resolve) => {
      const child = spawn("secret-tool", args, { shell: false, stdio: ["pipe", "pipe", "ignore"] });
      let out = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => {
        out += d;
      });
      child.once("error", () => resolve({ code: -1, out: "" }));
      child.once("close", (code) => resolve({ code, out }));
      child.stdin.end(input ?? "");
    });
  }
  async load(): Promise<Stored | undefined> {
    const r = await this.#run(["lookup", "service", SECRET_SERVICE, "account", this.#key]);
    if (r.code !== 0 || r.out === "") return undefined;
    const parsed = storedSchema.safeParse(JSON.parse(r.out));
    return parsed.success ? parsed.data : undefined;
  }
  async save(value: Stored): Promise<void> {
    const r = await this.#run(
      [
        "store",
        "--label",
        `mcp-edge connect ${value.server}`,
        "service",
        SECRET_SERVICE,
        "account",
        this.#key,
      ],
      JSON.stringify(value),
    );
    if (r.code !== 0) throw new Error("secret-tool could not store the token");
  }
  async clear(): Promise<void> {
    await this.#run(["clear", "service", SECRET_SERVICE, "account", this.#key]);
  }
  withLock<T>(fn: () => Promise<T>): Promise<T> {
    return this.#lock.run(fn);
  }
}

/** True when `secret-tool` is on PATH and a secret service answers (a D-Bus session is running). */
function secretToolUsable(env: NodeJS.ProcessEnv): boolean {
  if (process.platform !== "linux" || !env.DBUS_SESSION_BUS_ADDRESS) return false;
  const r = spawnSync("secret-tool", ["search", "service", SECRET_SERVICE], {
    shell: false,
    stdio: "ignore",
    timeout: 3000,
  });
  return r.error === undefined && r.status !== null;
}

/**
 * The store for this entry. `MCP_EDGE_TOKEN_STORE=file` forces the file (the keychain is used
 * otherwise when usable). macOS and Windows keychains are not wired yet: the file is used there.
 */
export function openTokenStore(env: NodeJS.ProcessEnv, serverUrl: string, client: string): TokenStore {
  const dir = path.join(configDir(env), "connect");
  const key = entryKey(serverUrl, client);
  if (env.MCP_EDGE_TOKEN_STORE !== "file" && secretToolUsable(env)) return new SecretToolStore(dir, key);
  return new FileStore(dir, key);
}

/** A lock older than this is taken over (its holder crashed mid-refresh). */
const STALE_LOCK_MS = 30_000;

/** An exclusive-create lock file, with in-process queuing in front of it. */
class Lock {
  readonly #file: string;
  #queue: Promise<unknown> = Promise.resolve();
  constructor(file: string) {
    this.#file = file;
  }
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(async () => {
      await this.#acquire();
      try {
        return await fn();
      } finally {
        try {
          unlinkSync(this.#file);
        } catch {
          // taken over as stale
        }
      }
    });
    this.#queue = next.catch(() => undefined);
    return next;
  }
  async #acquire(): Promise<void> {
    const deadline = Date.now() + 2 * STALE_LOCK_MS;
    for (let wait = 10; ; wait = Math.min(wait * 2, 200)) {
      try {
        const fh = await open(this.#file, "wx", 0o600);
        await fh.writeFile(`${process.pid}\n`);
        await fh.close();
        return;
      } catch (err) {
        if ((err as { code?: string }).code !== "EEXIST") throw err;
      }
      try {
        if (Date.now() - statSync(this.#file).mtimeMs > STALE_LOCK_MS) unlinkSync(this.#file);
      } catch {
        // released meanwhile
      }
      if (Date.now() > deadline) throw new Error("timed out waiting for the token lock");
      // Polling a lock file: another process holds it for the length of one token request.
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

/** For tests and `--debug`: the file behind a file store. */
export function storeFile(store: TokenStore): string | undefined {
  return store instanceof FileStore ? store.file : undefined;
}

export function readStoredFile(file: string): Stored {
  return storedSchema.parse(JSON.parse(readFileSync(file, "utf8")));
}
