/** Longest a POST waits for its session's standalone GET stream to open upstream (ms). */
const GET_ORDER_WAIT_MS = 2000;

/**
 * Standalone GET streams being opened upstream, per session. A client that opens its GET stream
 * and then POSTs expects the server to see them in that order: servers send server-to-client
 * requests (sampling, elicitation) on the standalone stream when one is open, and drop them when
 * none is. The GET path through the edge can be slower than the POST path (a new stream connection
 * versus a warm one), so POSTs of the session wait (bounded) for the GET to be open upstream.
 */
export class GetOrder {
  readonly #opening = new Map<string, Promise<void>>();

  /** Marks a GET of `sessionId` as opening; call the returned function once it is open (or failed). */
  opening(sessionId: string): () => void {
    const opened = Promise.withResolvers<void>();
    this.#opening.set(sessionId, opened.promise);
    return () => {
      if (this.#opening.get(sessionId) === opened.promise) this.#opening.delete(sessionId);
      opened.resolve();
    };
  }

  /** Undefined when no GET of the session is opening; else resolves when it is open or after the bound. */
  wait(sessionId: string): Promise<void> | undefined {
    const opening = this.#opening.get(sessionId);
    if (!opening) return undefined;
    return Promise.race([opening, new Promise<void>((r) => setTimeout(r, GET_ORDER_WAIT_MS).unref())]);
  }
}
