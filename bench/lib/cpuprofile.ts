/**
 * Summarises a V8 `.cpuprofile` (node --cpu-prof): self time per function and per file, as Markdown.
 *
 *   node bench/lib/cpuprofile.ts <file.cpuprofile> [top=25]
 *
 * Self time of a node = the time deltas of the samples that landed in it. Idle time is left out of
 * the shares, so a percentage is of the time the process was busy.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

function where(url: string): string {
  if (!url) return "";
  const file = url.startsWith("file://") ? fileURLToPath(url) : url;
  const rel = path.isAbsolute(file) ? path.relative(ROOT, file) : file;
  // node_modules/<pkg>/... → <pkg>; keep repo files as they are.
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(rel);
  if (m) return `${m[1]} (dependency)`;
  // A commit exported by --edge-ref lives in a temp directory: show its files as src/...
  const src = /(?:^|\/)(src\/.+)$/.exec(rel);
  return src?.[1] ?? rel;
}

export function summarizeProfile(file: string, top = 25): string {
  const p = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i] as number;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const fns = new Map<string, { name: string; at: string; us: number; src: boolean }>();
  const files = new Map<string, number>();
  let busy = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (!n) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    if (functionName === "(idle)") {
      idle += us;
      continue;
    }
    busy += us;
    const at = where(url);
    const key = `${functionName}|${url}|${lineNumber}`;
    const f = fns.get(key) ?? {
      name: functionName || "(anonymous)",
      at: at ? `${at}:${lineNumber + 1}` : "",
      us: 0,
      src: at.startsWith("src/"),
    };
    f.us += us;
    fns.set(key, f);
    const fileKey = at || functionName;
    files.set(fileKey, (files.get(fileKey) ?? 0) + us);
  }
  const pct = (us: number) => `${((100 * us) / Math.max(1, busy)).toFixed(1)}%`;
  const sorted = [...fns.values()].sort((a, b) => b.us - a.us);
  const lines = [
    `Profile \`${path.relative(ROOT, file)}\`: ${(busy / 1e6).toFixed(2)} s busy, ${(idle / 1e6).toFixed(2)} s idle. Shares are of busy time.`,
    "",
    "Top functions by self time:",
    "",
    "| self | share | function | where |",
    "|---:|---:|---|---|",
    ...sorted
      .slice(0, top)
      .map((f) => `| ${(f.us / 1000).toFixed(0)} ms | ${pct(f.us)} | \`${f.name}\` | ${f.at} |`),
    "",
    "Top functions in `src/` by self time:",
    "",
    "| self | share | function | where |",
    "|---:|---:|---|---|",
    ...sorted
      .filter((f) => f.src)
      .slice(0, 15)
      .map((f) => `| ${(f.us / 1000).toFixed(0)} ms | ${pct(f.us)} | \`${f.name}\` | ${f.at} |`),
    "",
    "Self time by file or package:",
    "",
    "| self | share | file |",
    "|---:|---:|---|",
    ...[...files.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 20)
      .map(([f, us]) => `| ${(us / 1000).toFixed(0)} ms | ${pct(us)} | ${f} |`),
  ];
  return lines.join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write("usage: node bench/lib/cpuprofile.ts <file.cpuprofile> [top]\n");
    process.exit(2);
  }
  process.stdout.write(`${summarizeProfile(file, Number(process.argv[3] ?? 25))}\n`);
}
