/**
 * Tool names as the edge judges them. A name is compared with the server's `tools/list`, the
 * credential's allow-list and the per-tool scopes and limits exactly, code unit for code unit; an
 * upstream may look names up more loosely (case-insensitively, after Unicode normalization,
 * trimmed), so a variant must never pass as "another tool" the config says nothing about:
 *
 * - `toolNameProblem`: characters no tool name holds — control characters (Cc), format characters
 *   (Cf: zero-width space and joiners, bidi controls, soft hyphen), other default-ignorable code
 *   points (variation selectors, Hangul fillers), line and paragraph separators, and white space
 *   at either end. Such a name is refused whatever the lists say.
 * - `canonicalToolName`: the form two names that a loose lookup could confuse share: NFKC
 *   (fullwidth and other compatibility forms), lower case, and Latin letters for the Cyrillic,
 *   Greek and Armenian letters that look like them (the common part of Unicode's confusables,
 *   UTS #39). A name that equals a configured name only in this form is refused, never mapped.
 *
 * MCP 2025-11-25 (server/tools, "Tool names") recommends names of 1-128 characters among
 * A-Z a-z 0-9 _ - . ; names outside that set are allowed here when exact. Pure.
 */

/** Characters no tool name may hold (see above). */
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}]/u;
const EDGE_SPACE = /^\s|\s$/u;

/** Why `name` cannot be a tool name, or undefined when it can. */
export function toolNameProblem(name: string): string | undefined {
  if (name.length === 0) return "it is empty";
  if (name.length > 256) return "it is longer than 256 characters";
  if (INVISIBLE.test(name)) return "it holds control, format or invisible characters";
  if (EDGE_SPACE.test(name)) return "it begins or ends with white space";
  return undefined;
}

/**
 * Look-alikes of Latin letters (lower case, after NFKC): Cyrillic, Greek, Armenian and a few
 * Latin letters of other scripts' shapes. Unicode's confusables.txt maps each to the Latin letter.
 */
const CONFUSABLE: Readonly<Record<string, string>> = {
  // Cyrillic
  а: "a",
  в: "b",
  с: "c",
  ԁ: "d",
  е: "e",
  һ: "h",
  і: "i",
  ј: "j",
  к: "k",
  ӏ: "l",
  м: "m",
  п: "n",
  о: "o",
  р: "p",
  ԛ: "q",
  г: "r",
  ѕ: "s",
  т: "t",
  у: "y",
  х: "x",
  ԝ: "w",
  ь: "b",
  ү: "y",
  // Greek
  α: "a",
  β: "b",
  ε: "e",
  η: "n",
  ι: "i",
  κ: "k",
  ν: "v",
  ο: "o",
  ρ: "p",
  τ: "t",
  υ: "u",
  χ: "x",
  ϲ: "c",
  ϳ: "j",
  // Armenian
  օ: "o",
  ս: "u",
  հ: "h",
  ց: "g",
  // Latin letters of other shapes
  ı: "i",
  ȷ: "j",
  ɡ: "g",
  ɑ: "a",
  ſ: "s",
};
const CONFUSABLE_CHARS = new RegExp(`[${Object.keys(CONFUSABLE).join("")}]`, "gu");

/**
 * Capital look-alikes, mapped before lower-casing: their lower-case forms no longer look Latin
 * (Cyrillic Н looks like H, its lower case н does not look like h).
 */
const CONFUSABLE_CAPITALS: Readonly<Record<string, string>> = {
  А: "A",
  В: "B",
  Е: "E",
  К: "K",
  М: "M",
  Н: "H",
  О: "O",
  Р: "P",
  С: "C",
  Т: "T",
  У: "Y",
  Х: "X",
  Ѕ: "S",
  І: "I",
  Ј: "J",
  Α: "A",
  Β: "B",
  Ε: "E",
  Ζ: "Z",
  Η: "H",
  Ι: "I",
  Κ: "K",
  Μ: "M",
  Ν: "N",
  Ο: "O",
  Ρ: "P",
  Τ: "T",
  Υ: "Y",
  Χ: "X",
};
const CONFUSABLE_CAPITAL_CHARS = new RegExp(`[${Object.keys(CONFUSABLE_CAPITALS).join("")}]`, "gu");

/** The form in which two names a loose lookup could confuse are equal. */
export function canonicalToolName(name: string): string {
  const folded = name
    .normalize("NFKC")
    .replace(CONFUSABLE_CAPITAL_CHARS, (c) => CONFUSABLE_CAPITALS[c] ?? c)
    .toLowerCase()
    .trim();
  return folded.replace(CONFUSABLE_CHARS, (c) => CONFUSABLE[c] ?? c);
}

/**
 * Names configured for a server (per-tool scopes and limits, allow-lists), by canonical form. A
 * request's name that is not one of them but has the canonical form of one is a variant of it.
 */
export class ToolNameIndex {
  readonly #byCanonical = new Map<string, Set<string>>();

  constructor(names: Iterable<string>) {
    for (const n of names) {
      const c = canonicalToolName(n);
      const set = this.#byCanonical.get(c) ?? new Set<string>();
      set.add(n);
      this.#byCanonical.set(c, set);
    }
  }

  /**
   * A configured name (or one of `extra`) that `name` equals only in canonical form; undefined
   * when `name` is itself configured or is no variant of any.
   */
  variantOf(name: string, extra?: readonly string[] | null): string | undefined {
    const c = canonicalToolName(name);
    const hits = this.#byCanonical.get(c);
    if (hits?.has(name) || extra?.includes(name)) return undefined;
    if (hits) for (const n of hits) return n;
    if (extra) for (const n of extra) if (canonicalToolName(n) === c) return n;
    return undefined;
  }
}
