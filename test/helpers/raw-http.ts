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

export interface RawExchange {
  /** The status of the first response, 0 when none came. */
  status: number;
  /** Its headers, names lower-cased (the last value of a repeated name). */
  headers: Record<string, string>;
  /** Its body (whatever followed the head, as latin1 text). */
  body: string;
  /** Everything the server wrote. */
  raw: string;
}

/**
 * Writes `request` (a whole HTTP/1.1 message written by hand, for spellings an HTTP client would
 * normalize: repeated Host, folded lines, CL+TE) on its own connection and collects the answer
 * until the server closes the connection or `waitMs` passes.
 */
export function rawExchange(port: number, request: string, waitMs = 5000): Promise<RawExchange> {
  return new Promise<RawExchange>((resolve, reject) => {
    const received: Buffer[] = [];
    const s = connect(port, "127.0.0.1", () => s.write(request));
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      const raw = Buffer.concat(received).toString("latin1");
      const end = raw.indexOf("\r\n\r\n");
      const [statusLine = "", ...lines] = (end < 0 ? "" : raw.slice(0, end)).split("\r\n");
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(":");
        if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      resolve({
        status: Number(statusLine.split(" ")[1] ?? 0),
        headers,
        body: end < 0 ? "" : raw.slice(end + 4),
        raw,
      });
    };
    const timer = setTimeout(finish, waitMs);
    s.on("data", (d: Buffer) => {
      received.push(d);
      // A whole response with a declared length is complete without waiting for the close.
      const text = Buffer.concat(received).toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      const declared = /\r\ncontent-length:\s*(\d+)/i.exec(text.slice(0, end));
      if (end >= 0 && declared && Buffer.byteLength(text.slice(end + 4), "latin1") >= Number(declared[1]))
        finish();
      else if (
        end >= 0 &&
        /\r\ntransfer-encoding:\s*chunked/i.test(text.slice(0, end)) &&
        text.endsWith("\r\n0\r\n\r\n")
      )
        finish();
    });
    s.on("close", finish);
    s.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNREFUSED") reject(err);
    });
  });
}
