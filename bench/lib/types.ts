/** The shapes the benchmarks write as JSON and the report and goals read. */
import type { TrialResult } from "../load.ts";

export interface Trial extends TrialResult {
  proxyCpuUsPerReq: number;
  upstreamCpuUsPerReq: number;
  /** Distributed mode: CPU of the Redis and PostgreSQL servers on this machine, per request. */
  storeCpuUsPerReq?: number;
  /**
   * CPU used on the machine during the trial by anything but the load generator, the upstream and
   * the proxy, in % of one CPU: other work sharing the machine, which makes a trial noisier.
   */
  backgroundCpuPct: number;
}

export interface Row {
  scenario: string;
  path: string;
  connections: number;
  trials: Trial[];
  /** Medians over the trials, per figure. */
  rps: number;
  p50Ms: number;
  p99Ms: number;
  proxyCpuUsPerReq: number;
  upstreamCpuUsPerReq: number;
  /** Distributed mode: Redis + PostgreSQL server CPU per request (median). */
  storeCpuUsPerReq?: number;
  loadgenCpuUsPerReq: number;
  backgroundCpuPct: number;
  /** Resident memory of the proxy after the row's trials, MiB (NaN for direct). */
  proxyRssMiB: number;
  errors: number;
  firstError?: string;
}

export interface ScenarioInfo {
  id: string;
  title: string;
  /** The two paths every other path is compared with (direct and minimal; the two stdio bridges). */
  refs: [string, string];
}

export interface PathInfo {
  id: string;
  title: string;
}

export interface E2EResult {
  kind: "e2e";
  started: string;
  elapsedS: number;
  command: string;
  quick: boolean;
  settings: { trials: number; durationMs: number; warmupMs: number; processWarmupMs?: number };
  scenarios: ScenarioInfo[];
  paths: PathInfo[];
  /** The (scenario, connections) cells run, with their paths, in order. */
  cells: { scenario: string; connections: number; paths: string[] }[];
  /** Paths that could not run, with the reason (nginx not installed, distributed mode not wired, ...). */
  unavailable: Record<string, string>;
  /** Versions of the peers compared (mcp-proxy, supergateway, nginx). */
  versions: Record<string, string>;
  rows: Row[];
  machine: Machine;
  edgeLabel: string;
  profile: string;
}

export interface Machine {
  nproc: number;
  model: string;
  memory: string;
  kernel: string;
  node: string;
  commit: string;
  /** 1, 5 and 15 minute load averages when the run started and when it ended. */
  loadStart: number[];
  loadEnd?: number[];
}

export interface MicroCase {
  group: string;
  name: string;
  /** Median ns per operation over the rounds. */
  nsPerOp: number;
  /** Operations in flight at once (1: one after the other). */
  concurrency: number;
  ops: number;
  note?: string;
}

export interface MicroResult {
  kind: "micro";
  started: string;
  elapsedS: number;
  command: string;
  rounds: number;
  cases: MicroCase[];
  /** Groups that could not run (Redis down), with the reason. */
  skipped: Record<string, string>;
  machine: Machine;
}

/** Growth between two readings of the edge, in bytes, in total and per item. */
export interface MemoryDelta {
  rssDeltaBytes: number;
  /** RSS growth per item: the goal's figure. */
  perItemBytes: number;
  heapDeltaBytes: number;
  heapPerItemBytes: number;
  /** V8's committed heap (heapTotal) growth per item. */
  heapTotalPerItemBytes: number;
  /** Growth of `external` (native memory bound to JS objects) per item. */
  externalPerItemBytes: number;
  /** RSS growth per item split: anonymous memory, and file-backed + shared (SQLite's -shm, mapped files). */
  rssAnonPerItemBytes: number;
  rssFilePerItemBytes: number;
}

export interface MemoryStep {
  /** Sessions held (the step's size: 1 000, 10 000). */
  count: number;
  /** Streams held: `count`, unless the open-file limit allows fewer (see `note`). */
  streamCount: number;
  sessions: MemoryDelta;
  streams?: MemoryDelta;
  baselineRssBytes: number;
  /** RSS and heap growth over the baseline once every stream and session is closed again. */
  afterCloseRssDeltaBytes?: number;
  afterCloseHeapDeltaBytes?: number;
  note?: string;
}

export interface MemoryResult {
  kind: "memory";
  started: string;
  elapsedS: number;
  command: string;
  steps: MemoryStep[];
  fdLimit: { soft: number; hard: number };
  notes: string[];
  machine: Machine;
}
