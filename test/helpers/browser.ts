/**
 * A person's browser for OAuth flows driven over plain HTTP: a cookie jar per origin, redirects
 * followed by hand (so each hop is visible), form posts with the page's own Origin. Enough for
 * pages that need no script (the edge's connect pages, oidc-provider's interactions).
 */
export interface Page {
  url: string;
  status: number;
  text: string;
  headers: Headers;
}

export class Browser {
  readonly #jar = new Map<string, Map<string, string>>();
  /** Every URL visited, in order (redirect hops included). */
  readonly visited: string[] = [];

  #cookies(url: URL): string {
    const jar = this.#jar.get(url.origin);
    return jar ? [...jar].map(([k, v]) => `${k}=${v}`).join("; ") : "";
  }

  #store(url: URL, res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair = ""] = line.split(";");
      const eq = pair.indexOf("=");
      if (eq <= 0) continue;
      const jar = this.#jar.get(url.origin) ?? new Map<string, string>();
      this.#jar.set(url.origin, jar);
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (/max-age=0/i.test(line) || value === "") jar.delete(name);
      else jar.set(name, value);
    }
  }

  /** The cookie named so, for an origin. */
  cookie(origin: string, name: string): string | undefined {
    return this.#jar.get(origin)?.get(name);
  }

  /** Forgets the cookies of an origin (another browser, as far as that site can tell). */
  clear(origin: string): void {
    this.#jar.delete(origin);
  }

  /**
   * `stopAt`: a URL prefix the browser does not go to: the page returned then has status 0 and the
   * URL it would have opened (an attacker who hands that URL to someone else).
   */
  async get(url: string, stopAt?: string): Promise<Page> {
    return this.#go(url, { method: "GET" }, stopAt);
  }

  /** Posts a form from a page of `from`'s origin (the Origin header a browser sends). */
  async post(url: string, form: Record<string, string>, from: string = url, stopAt?: string): Promise<Page> {
    return this.#go(
      url,
      {
        method: "POST",
        body: new URLSearchParams(form).toString(),
        headers: { "content-type": "application/x-www-form-urlencoded", origin: new URL(from).origin },
      },
      stopAt,
    );
  }

  async #go(
    start: string,
    init: { method: string; body?: string; headers?: Record<string, string> },
    stopAt: string | undefined,
    hops = 20,
  ): Promise<Page> {
    let url = new URL(start);
    let req = init;
    for (let i = 0; i <= hops; i++) {
      if (i > 0 && stopAt !== undefined && url.toString().startsWith(stopAt))
        return { url: url.toString(), status: 0, text: "", headers: new Headers() };
      this.visited.push(url.toString());
      const res = await fetch(url, {
        method: req.method,
        redirect: "manual",
        headers: { ...req.headers, cookie: this.#cookies(url), accept: "text/html" },
        ...(req.body !== undefined ? { body: req.body } : {}),
      });
      this.#store(url, res);
      const location = res.headers.get("location");
      if (res.status >= 300 && res.status < 400 && location) {
        await res.arrayBuffer();
        url = new URL(location, url);
        // 303 (and 302 after a POST, as browsers do) turns the next hop into a GET.
        req = { method: "GET" };
        continue;
      }
      return { url: url.toString(), status: res.status, text: await res.text(), headers: res.headers };
    }
    throw new Error(`more than ${hops} redirects from ${start}`);
  }
}

/** The value of a hidden input in a page (HTML-unescaped). */
export function formValue(html: string, name: string): string | undefined {
  const m = new RegExp(`name="${name}" value="([^"]*)"`).exec(html);
  return m?.[1]
    ?.replaceAll("&quot;", '"')
    .replaceAll("&#39;", "'")
    .replaceAll("&lt;", "<")
    .replaceAll("&gt;", ">")
    .replaceAll("&amp;", "&");
}

/** The `action` of the first form in a page, resolved against the page's URL. */
export function formAction(page: Page): string | undefined {
  const m = /<form[^>]*action="([^"]*)"/.exec(page.text);
  return m?.[1] === undefined ? undefined : new URL(m[1].replaceAll("&amp;", "&"), page.url).toString();
}
