import { connect } from "node:net";

/**
 * Sends one request written by hand (`head`: header lines, each ending in CRLF, after Host) on its
 * own connection, with `Connection: close`, and waits for the server to close it: for header
 * spellings an HTTP client would normalize (repeats, case).
 */
export function sendRawRequest(port: number, head: string, target = "/mcp"): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const s = connect(port, "127.0.0.1", () =>
      s.write(`GET ${target} HTTP/1.1\r\nHost: x\r\n${head}Connection: close\r\n\r\n`),
    );
    s.on("data", () => {});
    s.on("end", () => resolve());
    s.on("error", reject);
  });
}
