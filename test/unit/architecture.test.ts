/**
 * The import graph of src/: no cycles, and no import in a forbidden direction. Every `import`,
 * `export ... from` and `import("...")` of every file under src/ counts, type-only ones included (a
 * type import still couples the two modules). Only relative specifiers are the project's own.
 *
 * RULES is the layering, as data: `from` files may not import `to` files, except `allow`. A rule
 * the code does not meet yet carries `pending` (why, and who fixes it): it still runs and lists
 * its violations, as a todo test, so the suite stays green while the table says where the code is
 * heading. Remove `pending` once the rule holds; it then fails on any new violation.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** A path pattern: `src/store/` (a folder, everything under it) or `src/gateway.ts` (one file). */
type Pattern = string;

interface Rule {
  name: string;
  from: Pattern[];
  to: Pattern[];
  /** Targets allowed although they match `to`. */
  allow?: Pattern[];
  /** Files the rule does not apply to although they match `from`. */
  exceptFrom?: Pattern[];
  /** Set while the code does not meet the rule yet: the reason. */
  pending?: string;
}

/** The wiring at the top: what starts the edge and composes the request pipeline. */
const WIRING: Pattern[] = ["src/gateway.ts", "src/boot/", "src/server/", "src/main.ts", "src/cli/"];
/** The request pipeline and what runs inside it. */
const PIPELINE: Pattern[] = ["src/pipeline/", "src/forward/", "src/context.ts"];
/** The JSON-RPC / SSE / era codecs, used on both sides. */
const CODECS: Pattern[] = ["src/mcp/"];
/** Pure helpers every layer may use: they import nothing of the project. */
const LIB: Pattern[] = ["src/lib/"];
/**
 * The egress address policy: pure rules over addresses and URLs (ipaddr.js only), which config
 * validation reads to check `egress.*` entries at load time.
 */
const ADDRESS_POLICY: Pattern[] = ["src/egress/policy.ts"];
const SRC: Pattern[] = ["src/"];

export const RULES: Rule[] = [
  {
    name: "stores import no layer above them (pipeline, forward, context, gateway, server, boot)",
    from: ["src/store/"],
    to: [...PIPELINE, ...WIRING],
  },
  {
    name: "lib and the address policy are leaves: they import nothing of the project",
    from: [...LIB, ...ADDRESS_POLICY],
    to: SRC,
    allow: LIB,
  },
  {
    name: "errors is a leaf: it imports nothing of the project but itself and lib",
    from: ["src/errors/"],
    to: SRC,
    allow: ["src/errors/", ...LIB],
  },
  {
    name: "config is a leaf: it imports nothing of the project but itself, errors, lib and the address policy",
    from: ["src/config/"],
    to: SRC,
    allow: ["src/config/", "src/errors/", ...LIB, ...ADDRESS_POLICY],
  },
  {
    name: "the codecs are a leaf: they import nothing of the project but themselves, errors and lib",
    from: CODECS,
    to: SRC,
    allow: [...CODECS, "src/errors/", ...LIB],
  },
  {
    name: "nothing imports the pipeline but the wiring and the pipeline itself",
    from: SRC,
    exceptFrom: [...WIRING, "src/pipeline/"],
    to: ["src/pipeline/"],
  },
  {
    name: "nothing below the pipeline imports the request context, the forwarders or the wiring",
    from: [
      "src/store/",
      "src/upstream/",
      "src/session/",
      "src/auth/",
      "src/as/",
      "src/audit/",
      "src/ratelimit/",
      "src/cache/",
      "src/egress/",
      "src/observability/",
      ...CODECS,
      "src/errors/",
      "src/config/",
    ],
    to: ["src/context.ts", "src/forward/", ...WIRING],
  },
  {
    name: "tracing is reached through diagnostics channels: only the wiring imports it",
    from: SRC,
    exceptFrom: [...WIRING, "src/observability/"],
    to: ["src/observability/tracing.ts"],
  },
];

/**
 * Cycles that exist today and are being removed (each: its files, sorted, and why it is allowed for
 * now). Any other cycle fails at once.
 */
export const PENDING_CYCLES: { files: string[]; pending: string }[] = [];

// ---------------------------------------------------------------------------- the graph

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(path.join(ROOT, dir))) {
    const rel = `${dir}/${entry}`;
    if (statSync(path.join(ROOT, rel)).isDirectory()) out.push(...filesUnder(rel));
    else if (/\.(ts|mts)$/.test(entry)) out.push(rel);
  }
  return out;
}

/** Block comments and whole-line `//` comments, blanked (so commented-out imports do not count). */
function stripComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, " ")).replace(/^\s*\/\/.*$/gm, "");
}

const SPECIFIERS = [
  /\bfrom\s*["']([^"']+)["']/g, // import ... from "x", import type ... from "x", export ... from "x"
  /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g, // import("x")
  /^\s*import\s*["']([^"']+)["']/gm, // import "x"
];

export function importsOf(file: string, text: string): string[] {
  const code = stripComments(text);
  const out = new Set<string>();
  for (const re of SPECIFIERS) {
    for (const m of code.matchAll(re)) {
      const spec = m[1] as string;
      if (spec.startsWith("."))
        out.add(path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)));
    }
  }
  return [...out];
}

function buildGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of filesUnder("src")) {
    graph.set(file, importsOf(file, readFileSync(path.join(ROOT, file), "utf8")));
  }
  return graph;
}

function matches(file: string, patterns: readonly Pattern[]): boolean {
  return patterns.some((p) => (p.endsWith("/") ? file.startsWith(p) : file === p));
}

/** Every strongly connected component of more than one file (or a file importing itself). */
export function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(scc.sort());
    }
  };
  for (const v of [...graph.keys()].sort()) if (!idx.has(v)) visit(v);
  return out;
}

/** The imports that break a rule, as `from -> to`. */
export function violations(graph: Map<string, string[]>, rule: Rule): string[] {
  const out: string[] = [];
  for (const [from, targets] of graph) {
    if (!matches(from, rule.from) || matches(from, rule.exceptFrom ?? [])) continue;
    for (const to of targets) {
      if (!matches(to, rule.to) || matches(to, rule.allow ?? [])) continue;
      out.push(`${from} -> ${to}`);
    }
  }
  return out.sort();
}

// ---------------------------------------------------------------------------- the checks

const graph = buildGraph();

describe("import graph of src/", () => {
  test("the parser sees every kind of import (fixed vector)", () => {
    const text = [
      'import a from "./a.ts";',
      'import type { B } from "../b.ts";',
      "import {",
      "  type C,",
      "  d,",
      '} from "./c/d.ts";',
      'export { e } from "./e.ts";',
      'export * from "./f.ts";',
      'const g = await import("./g.ts");',
      'import "./h.ts";',
      '// import { x } from "./commented.ts";',
      '/* import { y } from "./block.ts"; */',
      'import { z } from "node:fs";',
    ].join("\n");
    assert.deepEqual(importsOf("src/x/y.ts", text).sort(), [
      "src/b.ts",
      "src/x/a.ts",
      "src/x/c/d.ts",
      "src/x/e.ts",
      "src/x/f.ts",
      "src/x/g.ts",
      "src/x/h.ts",
    ]);
  });

  test("the graph resolves: every relative import names a file that exists", () => {
    const missing = [...graph].flatMap(([from, to]) =>
      to.filter((t) => !graph.has(t)).map((t) => `${from} -> ${t}`),
    );
    assert.deepEqual(missing, []);
    assert.ok(graph.size > 50, `read ${graph.size} files`);
  });

  test("the cycle finder finds a cycle (fixed vector)", () => {
    const g = new Map([
      ["a", ["b"]],
      ["b", ["c"]],
      ["c", ["a"]],
      ["d", ["a"]],
    ]);
    assert.deepEqual(cycles(g), [["a", "b", "c"]]);
  });

  const found = cycles(graph);
  const known = new Set(PENDING_CYCLES.map((c) => c.files.join(" <-> ")));

  test("no import cycles (but those pending below)", () => {
    const fresh = found.map((c) => c.join(" <-> ")).filter((c) => !known.has(c));
    assert.deepEqual(fresh, [], `cycles:\n${fresh.join("\n")}`);
  });

  for (const c of PENDING_CYCLES) {
    test(`no cycle ${c.files.join(" <-> ")}`, { todo: c.pending }, () => {
      assert.ok(!found.some((f) => f.join(" <-> ") === c.files.join(" <-> ")), "the cycle is still there");
    });
  }

  for (const rule of RULES) {
    test(rule.name, rule.pending ? { todo: rule.pending } : {}, () => {
      const v = violations(graph, rule);
      assert.deepEqual(v, [], `imports breaking the rule:\n${v.join("\n")}`);
    });
  }
});

describe("the project stands alone", () => {
  test("no comment, doc or test cites a document outside the repository", () => {
    const outside = /\b(?:SPEC\.md|SPEC §|security\.md|DESIGN\.md|mcp-spec\.md)/;
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of readdirSync(path.join(ROOT, dir))) {
        if (entry === "node_modules" || entry.startsWith(".")) continue;
        const rel = `${dir}/${entry}`;
        if (statSync(path.join(ROOT, rel)).isDirectory()) walk(rel);
        else if (
          /\.(ts|js|md|yaml|yml|json)$/.test(entry) &&
          outside.test(readFileSync(path.join(ROOT, rel), "utf8"))
        )
          offenders.push(rel);
      }
    };
    for (const dir of ["src", "test", "docs", "bench", "examples", "schema"]) walk(dir);
    if (outside.test(readFileSync(path.join(ROOT, "README.md"), "utf8"))) offenders.push("README.md");
    // This file names the patterns it looks for.
    assert.deepEqual(
      offenders.filter((f) => f !== "test/unit/architecture.test.ts"),
      [],
    );
  });
});
