/**
 * The documentation names only files that are in the repository: every relative link and every
 * `src/…`-style path in backticks exists, and no doc names a path of one machine (a home or work
 * directory) or a planning document outside the repository. Files the docs tell the reader to
 * create, or that a command writes, are listed below with who makes them.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Named by the docs, not in the repository: made by the reader or by a command. */
const CREATED: Readonly<Record<string, string>> = {
  "bench/results/RESULTS-quick.md": "written by `npm run bench:quick`",
  "deploy/.env": "copied by the reader from deploy/.env.example (git-ignored: it holds secrets)",
};

/** Top-level folders whose paths the docs name in backticks. */
const TOP = ["src", "test", "docs", "deploy", "bench", "examples", "schema", "bin", "scripts", ".ci"];

function markdownFiles(): string[] {
  const out = ["README.md"];
  const walk = (dir: string) => {
    for (const e of readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const rel = path.join(dir, e.name);
      if (e.isDirectory() && e.name !== "node_modules" && e.name !== "results") walk(rel);
      else if (e.isFile() && e.name.endsWith(".md")) out.push(rel);
    }
  };
  for (const d of ["docs", "bench", "deploy", "examples"]) if (existsSync(path.join(ROOT, d))) walk(d);
  return out;
}

function missing(file: string): string[] {
  const text = readFileSync(path.join(ROOT, file), "utf8");
  const problems: string[] = [];
  for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
    const target = m[1] as string;
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith("#")) continue;
    const p = path.normalize(path.join(path.dirname(file), target.split("#")[0] as string));
    if (!existsSync(path.join(ROOT, p)) && !(p in CREATED)) problems.push(`link ${target}`);
  }
  const code = new RegExp(`\`((?:${TOP.map((t) => t.replace(".", "\\.")).join("|")})/[^\`\\s*{}<>]+)\``, "g");
  for (const m of text.matchAll(code)) {
    const p = (m[1] as string).split(":")[0]?.replace(/\/+$/, "") as string;
    if (!existsSync(path.join(ROOT, p)) && !(p in CREATED)) problems.push(`path \`${m[1]}\``);
  }
  for (const m of text.matchAll(/(?:\/work\/|\/Users\/|\/home\/(?!me\/)[a-z]+\/|SPEC\.md|DESIGN\.md)/g))
    problems.push(
      `machine or planning path near "${text.slice(Math.max(0, (m.index ?? 0) - 20), (m.index ?? 0) + 40)}"`,
    );
  return problems;
}

test("every file the docs name is in the repository (or listed as made by the reader or a command)", () => {
  const files = markdownFiles();
  assert.ok(files.length >= 10, `found the docs: ${files.join(", ")}`);
  const problems = files.flatMap((f) => missing(f).map((p) => `${f}: ${p}`));
  assert.deepEqual(problems, []);
});

test("files the docs say the reader or a command makes are git-ignored (never committed by mistake)", () => {
  const ignored = readFileSync(path.join(ROOT, ".gitignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  for (const [p, why] of Object.entries(CREATED)) {
    // A pattern with no inner slash matches a name at any depth; one with a slash, from the root.
    const hit = ignored.some((g) => {
      const pattern = g.replace(/\/$/, "");
      return pattern.includes("/")
        ? p === pattern || p.startsWith(`${pattern}/`)
        : p.split("/").includes(pattern);
    });
    assert.ok(hit, `${p} (${why}) is not in .gitignore`);
  }
});
