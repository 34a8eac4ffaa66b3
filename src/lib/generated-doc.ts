import { readFileSync, writeFileSync } from "node:fs";

/**
 * Generated sections of hand-written docs (docs/config.md, docs/errors.md, docs/lifecycle.md): the
 * markers, the replacement, the drift check and the `--write | --check` entry point.
 */

/** Opening marker of a generated section; `name` tells sections apart and says how to regenerate. */
export function beginMarker(name: string, command: string): string {
  return `<!-- BEGIN GENERATED ${name}: do not edit by hand; run \`${command}\` -->`;
}
export function endMarker(name: string): string {
  return `<!-- END GENERATED ${name} -->`;
}

/**
 * Replaces the generated section `name` of `document` with `content`. Throws when the markers are
 * missing or out of order: a hand edit removed them and the generator must not guess.
 */
export function replaceGenerated(document: string, name: string, command: string, content: string): string {
  const begin = beginMarker(name, command);
  const end = endMarker(name);
  const i = document.indexOf(begin);
  const j = document.indexOf(end);
  if (i < 0 || j < i)
    throw new Error(`the markers of the generated section "${name}" are missing or out of order`);
  return `${document.slice(0, i + begin.length)}\n\n${content.trim()}\n\n${document.slice(j)}`;
}

export interface GeneratedDoc {
  file: string;
  /** The whole expected document, given the current one (undefined when it does not exist). */
  render(current: string | undefined): string;
  command: string;
}

function readOptional(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** Null when the file is up to date, else a message saying what to run. */
export function checkGeneratedDoc(doc: GeneratedDoc): string | null {
  const current = readOptional(doc.file);
  if (current === undefined) return `${doc.file} is missing: run \`${doc.command}\``;
  let expected: string;
  try {
    expected = doc.render(current);
  } catch (err) {
    return `${doc.file}: ${(err as Error).message}`;
  }
  if (expected === current) return null;
  return `${doc.file} is out of date: run \`${doc.command}\` and commit the result`;
}

/** The `--write | --check` entry point shared by the doc generators. */
export function generatedDocMain(doc: GeneratedDoc, argv: string[] = process.argv.slice(2)): number {
  if (argv[0] === "--write") {
    writeFileSync(doc.file, doc.render(readOptional(doc.file)));
    process.stdout.write(`wrote ${doc.file}\n`);
    return 0;
  }
  if (argv[0] === "--check") {
    const problem = checkGeneratedDoc(doc);
    if (problem) {
      process.stderr.write(`${problem}\n`);
      return 1;
    }
    process.stdout.write(`${doc.file} is up to date\n`);
    return 0;
  }
  process.stderr.write(`usage: ${doc.command.replace(" --write", "")} --write | --check\n`);
  return 2;
}
