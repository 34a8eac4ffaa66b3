/**
 * Opening the login page. The authorization URL comes from the authorization server's metadata,
 * a document the remote side controls; handing it to an OS "open" command through a shell is the
 * remote-code-execution class of CVE-2025-6514. So:
 *
 * - only `https:` URLs, or `http:` on a loopback host (a local development AS), are opened
 *   (MCP Security Best Practices: validate the authorization URL's scheme);
 * - the serialized URL must consist of URL characters that no shell or Windows command line gives
 *   a meaning to beyond `&`/`=` in the query (no `$`, backquote, `;`, `|`, quotes, parentheses,
 *   spaces, angle brackets, backslashes, braces, carets) — a URL with any of them is refused, not
 *   escaped;
 * - the opener is spawned with an argument array and `shell: false` (xdg-open / open / rundll32's
 *   FileProtocolHandler), never through `cmd`, PowerShell or `sh -c`.
 */
import { spawn as nodeSpawn } from "node:child_process";
import { isLoopbackHost } from "./http.ts";

/** Characters allowed in a URL handed to the OS opener (RFC 3986 unreserved, gen-delims, `&=+,%`). */
const SAFE_URL = /^[A-Za-z0-9\-._~:/?#[\]@&=+,%]+$/;

/** Throws when `raw` must not be opened in a browser; returns the parsed URL otherwise. */
export function checkBrowserUrl(raw: string): URL {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new Error(`the authorization URL is not a URL: ${JSON.stringify(raw.slice(0, 200))}`);
  }
  const loopbackHttp = u.protocol === "http:" && isLoopbackHost(u.hostname);
  if (u.protocol !== "https:" && !loopbackHttp) {
    throw new Error(`refused to open a ${u.protocol} authorization URL (only https:, or http: on loopback)`);
  }
  if (u.username || u.password) throw new Error("refused an authorization URL with credentials in it");
  if (!SAFE_URL.test(u.href) || !SAFE_URL.test(raw)) {
    throw new Error(
      `refused an authorization URL with characters a shell would interpret: ${JSON.stringify(u.href.slice(0, 200))}`,
    );
  }
  return u;
}

type Spawn = typeof nodeSpawn;

/** The opener for this platform: program and the arguments before the URL. */
export function opener(platform: NodeJS.Platform = process.platform): [string, string[]] {
  if (platform === "darwin") return ["open", []];
  if (platform === "win32") return ["rundll32", ["url.dll,FileProtocolHandler"]];
  return ["xdg-open", []];
}

/**
 * Opens `url` (checked again here) in the user's browser. Resolves false when no opener could be
 * started (the caller has printed the URL anyway).
 */
export async function openBrowser(url: string, spawn: Spawn = nodeSpawn): Promise<boolean> {
  const checked = checkBrowserUrl(url);
  const [program, args] = opener();
  return new Promise((resolve) => {
    try {
      const child = spawn(program, [...args, checked.href], {
        shell: false,
        stdio: "ignore",
        detached: true,
        windowsHide: true,
      });
      child.once("error", () => resolve(false));
      child.once("spawn", () => {
        child.unref();
        resolve(true);
      });
    } catch {
      resolve(false);
    }
  });
}
