import type { Socket } from "node:net";
import type { RequestContext } from "../context.ts";
import { GatewayError } from "../errors/errors.ts";
import { sendError, toGatewayError } from "../errors/wire.ts";
import { type RequestEndEvent, requestEndChannel } from "../observability/channels.ts";
import { compose, type StageList } from "./compose.ts";

/**
 * Runs the stage lists (lists.ts) for one request: a refusal or failure thrown by any stage is
 * answered here, once, in the one error shape (src/errors/wire.ts), and every request is reported
 * on `mcp-edge:request:end` when its work is over (audit, metrics and tracing subscribe).
 */
export class Pipeline {
  #run: (ctx: RequestContext) => void | Promise<void>;

  constructor(lists: StageList<RequestContext, unknown>) {
    this.#run = compose(lists);
  }

  /**
   * Stage lists built again from a reloaded config: requests that arrive from now on run them;
   * requests already under way finish on the lists they started with.
   */
  rebuild(lists: StageList<RequestContext, unknown>): void {
    this.#run = compose(lists);
  }

  /** One request's work, as one promise (the drain waits for it). Never rejects. */
  async serve(ctx: RequestContext, socket: Socket): Promise<void> {
    let failure: GatewayError | undefined;
    try {
      await this.#run(ctx);
    } catch (err) {
      failure = toGatewayError(err);
      // After the body, an error answer carries the request's JSON-RPC id (JSON-RPC 2.0 §5).
      if (err instanceof GatewayError && ctx.rpcId !== null) failure = failure.withRpcId(ctx.rpcId);
      answerFailure(ctx, socket, failure);
    } finally {
      // Every request is reported once, answered, refused or failed (audit, metrics).
      if (requestEndChannel.hasSubscribers) {
        const res = ctx.res;
        const event: RequestEndEvent = {
          request: ctx,
          status: res.headersSent ? res.statusCode : 0,
          error: failure,
          durationMs: performance.now() - ctx.startedAt,
        };
        requestEndChannel.publish(event);
      }
    }
  }
}

/** Answers a request whose pipeline threw (a coded error, or an unexpected one: EDGE_INTERNAL). */
function answerFailure(ctx: RequestContext, socket: Socket, ge: GatewayError): void {
  const { req, res } = ctx;
  if (ge.status >= 500) ctx.log.error({ code: ge.code, err: ge.cause ?? ge }, ge.message);
  else ctx.log.debug({ code: ge.code, status: ge.status }, ge.message);
  if (!sendError(res, ge)) res.end();
  // A refused body is not read further: close the connection rather than read the rest. The socket
  // is the one taken when the request arrived (`req.socket` is null once the response finished).
  // The close lingers briefly (FIN, discard what is still in flight, then destroy) so the client
  // reads the 413 rather than a reset (nginx's lingering_close).
  if (ge.code === "EDGE_BODY_TOO_LARGE") {
    res.once("finish", () => {
      socket.end();
      req.resume();
      setTimeout(() => socket.destroy(), 2000).unref();
    });
  }
}
