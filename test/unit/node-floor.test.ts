/**
 * One Node floor: `engines.node` in package.json, the README's requirement line and the bin's
 * message agree, and every dependency in the lock file accepts that floor (so a supported Node
 * installs without EBADENGINE warnings).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const read = (f: string) => readFileSync(path.join(ROOT, f), "utf8");

type Version = [number, number, number];

function parse(v: string): Version {
  const m = /^v?(\d+)(?:\.(\d+|x))?(?:\.(\d+|x))?$/.exec(v.trim());
  if (!m) throw new Error(`not a version: ${v}`);
  return [Number(m[1]), Number(m[2] === "x" ? 0 : (m[2] ?? 0)), Number(m[3] === "x" ? 0 : (m[3] ?? 0))];
}

function cmp(a: Version, b: Version): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number);
  return 0;
}

/**
 * Whether `v` satisfies a range of the forms the lock file uses: `A || B`, space-joined
 * comparators (`>=X`, `>= X`, `>X`, `<X`, `<=X`), `^X.Y.Z`, `~X.Y.Z`, a bare `X` or `X.Y` (that
 * major or minor line), `*`. Any other form fails the test, loudly.
 */
function satisfies(v: Version, range: string): boolean {
  return range.split("||").some((alt) => {
    const parts = alt
      .trim()
      .replace(/([<>]=?)\s+/g, "$1")
      .split(/\s+/);
    return parts.every((p) => {
      if (p === "*" || p === "") return true;
      const m = /^(>=|<=|>|<|\^|~|=)?(.+)$/.exec(p);
      if (!m) throw new Error(`unknown range form: ${range}`);
      const op = m[1] ?? "";
      const target = parse(m[2] as string);
      const c = cmp(v, target);
      const dots = (m[2] as string).split(".").length;
      switch (op) {
        case ">=":
          return c >= 0;
        case ">":
          return c > 0;
        case "<=":
          return c <= 0;
        case "<":
          return c < 0;
        case "^":
          return c >= 0 && v[0] === target[0];
        case "~":
          return c >= 0 && v[0] === target[0] && v[1] === target[1];
        default:
          // A bare X (or X.Y): that whole line.
          return dots === 1
            ? v[0] === target[0]
            : dots === 2
              ? v[0] === target[0] && v[1] === target[1]
              : c === 0;
      }
    });
  });
}

const pkg = JSON.parse(read("package.json")) as { engines: { node: string } };
const FLOOR = /^>=(\d+\.\d+(?:\.\d+)?)$/.exec(pkg.engines.node)?.[1] as string;

test("package.json, README and bin/mcp-edge.js name the same Node floor", () => {
  assert.ok(FLOOR, `engines.node is a plain floor (>=X.Y): ${pkg.engines.node}`);
  assert.match(
    read("README.md"),
    new RegExp(`Requirements: Node\\.js ≥ ${FLOOR.replace(".", "\\.")} with npm`),
  );
  const binFloor = /const FLOOR = "([\d.]+)"/.exec(read("bin/mcp-edge.js"))?.[1] as string;
  assert.equal(cmp(parse(binFloor), parse(FLOOR)), 0, `bin says ${binFloor}, engines ${FLOOR}`);
});

test("every package in the lock file accepts the floor (no EBADENGINE on a supported Node)", () => {
  const lock = JSON.parse(read("package-lock.json")) as {
    packages: Record<string, { engines?: Record<string, string> | string[] }>;
  };
  const floor = parse(FLOOR);
  const refusing: string[] = [];
  for (const [name, p] of Object.entries(lock.packages)) {
    const range = !Array.isArray(p.engines) ? p.engines?.node : undefined;
    if (range !== undefined && !satisfies(floor, range)) refusing.push(`${name || "(root)"}: ${range}`);
  }
  assert.deepEqual(refusing, []);
  // The checker itself: a floor just below a dependency's is caught.
  assert.equal(satisfies(parse("22.14.0"), ">=22.15.0"), false);
  assert.equal(satisfies(parse("22.18.0"), "^20.19.0 || ^22.13.0 || >=24"), true);
  assert.equal(satisfies(parse("21.0.0"), "20 || >=22"), false);
});
