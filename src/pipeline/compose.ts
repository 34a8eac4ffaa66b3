import type { ErrorCode } from "../errors/codes.ts";

/**
 * A stage of the request pipeline: one named check or step, built by a factory at boot from the
 * validated config. It enriches the context or throws a coded error (`GatewayError`).
 *
 * `Needs` is what earlier stages have set when it runs; `Adds` what it sets for later ones. The
 * stage lists (lists.ts) are checked by the compiler: a stage placed before the one that fills
 * what it needs does not type-check.
 */
export interface Stage<Needs, Adds = unknown> {
  /** Stable name: docs/lifecycle.md, logs and tests use it. */
  readonly name: string;
  /** What the stage checks or does, one sentence (docs/lifecycle.md). */
  readonly does: string;
  /** The codes it answers with (each in src/errors/codes.ts). */
  readonly codes: readonly ErrorCode[];
  /** The file that implements it, relative to the repository root. */
  readonly file: string;
  /**
   * A step: runs, then the next stage. Returns a promise only when it has something to wait for,
   * so a request whose checks are all synchronous passes without a promise per stage. Undefined
   * (with `around` also undefined) when config turned the stage off.
   */
  readonly run?: ((ctx: Needs & Partial<Adds>) => void | Promise<void>) | undefined;
  /**
   * Around the rest of the list: takes a resource before `next` and gives it back after, in one
   * place (a rate-limit slot), or answers without calling `next` (a cache hit).
   */
  readonly around?:
    ((ctx: Needs & Partial<Adds>, next: () => void | Promise<void>) => void | Promise<void>) | undefined;
}

/**
 * A stage as the fold sees it: its context type erased (every `Stage<C, A>` is one, since `never`
 * is every context). Types are checked where lists are built (`StageList.then`).
 */
type AnyStage = Stage<never, never>;

/** Where a list hands over to another: picks the list for the rest of the request. */
export interface Branch<C> {
  readonly name: string;
  /** Which list follows, and why (docs/lifecycle.md). */
  readonly does: string;
  readonly file: string;
  /** Each list starts from what the lists before the branch filled. */
  readonly lists: Readonly<Record<string, StageList<C, unknown>>>;
  readonly pick: (ctx: C) => string;
}

/**
 * An ordered list of stages, built with `then`: each stage's `Needs` must be met by what the
 * stages before it `Add`. `In` is the context the list starts from, `C` what it holds after the
 * last stage so far. Ends in a branch or simply ends.
 */
export class StageList<In, C = In> {
  readonly stages: readonly AnyStage[];
  readonly branch: Branch<unknown> | undefined;

  private constructor(stages: readonly AnyStage[], branch?: Branch<unknown>) {
    this.stages = stages;
    this.branch = branch;
  }

  static start<In>(): StageList<In, In> {
    return new StageList<In, In>([]);
  }

  then<A>(stage: Stage<C, A>): StageList<In, C & A> {
    return new StageList<In, C & A>([...this.stages, stage as AnyStage]);
  }

  /** Ends this list by handing over to one of `lists`, picked per request. */
  fork(branch: Branch<C>): StageList<In, C> {
    return new StageList<In, C>(this.stages, branch as unknown as Branch<unknown>);
  }
}

/**
 * Folds a list into one function (hono's `compose` is the model): steps run in order; an `around`
 * stage gets the rest of the list as `next`; a branch continues with the list it picks. Stages that
 * config turned off are dropped here, once, not checked per request.
 */
export function compose<In>(list: StageList<In, unknown>): (ctx: In) => void | Promise<void> {
  const stages = list.stages.filter((s) => s.run !== undefined || s.around !== undefined);
  const branch = list.branch;
  const tails = branch ? new Map(Object.entries(branch.lists).map(([k, l]) => [k, compose(l)])) : undefined;
  const n = stages.length;
  const end = (ctx: In): void | Promise<void> => {
    if (!branch || !tails) return;
    const key = branch.pick(ctx);
    const tail = tails.get(key);
    if (!tail) throw new Error(`pipeline: branch ${branch.name} picked unknown list ${key}`);
    return tail(ctx);
  };
  const dispatch = (ctx: In, from: number): void | Promise<void> => {
    for (let i = from; i < n; i++) {
      const s = stages[i] as AnyStage;
      if (s.around) {
        const around = s.around as (c: In, next: () => void | Promise<void>) => void | Promise<void>;
        return around(ctx, () => dispatch(ctx, i + 1));
      }
      const r = (s.run as (c: In) => void | Promise<void>)(ctx);
      if (r !== undefined) return r.then(() => dispatch(ctx, i + 1));
    }
    return end(ctx);
  };
  return (ctx) => dispatch(ctx, 0);
}
