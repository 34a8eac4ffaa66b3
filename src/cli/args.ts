import { type ParseArgsOptionsConfig, parseArgs } from "node:util";

/**
 * Shared plumbing for CLI commands: argument parsing with node:util `parseArgs` (strict: an unknown
 * flag is a usage error, exit 2) and where output goes. Commands take a `CommandIo` so tests can
 * capture output without touching the process streams.
 */

export interface Writer {
  write(chunk: string): unknown;
}

export interface CommandIo {
  stdout: Writer;
  stderr: Writer;
  /** Environment for `${ENV}` interpolation. Default: process.env. */
  env: NodeJS.ProcessEnv;
}

export const processIo: CommandIo = { stdout: process.stdout, stderr: process.stderr, env: process.env };

/** Exit status for a usage error (bad or unknown flag), as most Unix tools do. */
export const EXIT_USAGE = 2;

const HELP = { help: { type: "boolean", short: "h" } } as const;

type Parsed<O extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{ args: string[]; options: O & typeof HELP; allowPositionals: true; strict: true }>
>;

/**
 * Parses `argv` (the arguments after the command name). Returns the parsed values, or an exit status
 * when the command should stop: 0 after printing `usage` for `-h/--help`, 2 after a usage error.
 */
export function parseCommandArgs<const O extends ParseArgsOptionsConfig>(
  argv: string[],
  options: O,
  usage: string,
  io: Pick<CommandIo, "stdout" | "stderr"> = processIo,
): Parsed<O> | number {
  let parsed: Parsed<O>;
  try {
    parsed = parseArgs({
      args: argv,
      options: { ...options, ...HELP },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    io.stderr.write(`${(err as Error).message}\n\n${usage}\n`);
    return EXIT_USAGE;
  }
  if ((parsed.values as { help?: boolean }).help) {
    io.stdout.write(`${usage}\n`);
    return 0;
  }
  return parsed;
}
