import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { GatewayError } from "../errors/errors.ts";
import { type Config, type ConfigInput, configSchema } from "./schema.ts";
import { checkSecretsFromEnv } from "./secrets.ts";

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/**
 * Replaces `${NAME}` (and `${NAME:-default}`) in every string value of the parsed document. It
 * works on values, not on the file's text, so an environment value can never inject YAML.
 */
export function interpolateEnv(value: unknown, env: NodeJS.ProcessEnv, path: string[] = []): unknown {
  if (typeof value === "string") {
    return value.replace(ENV_REF, (_m, name: string, fallback: string | undefined) => {
      const v = env[name];
      if (v !== undefined) return v;
      if (fallback !== undefined) return fallback;
      throw new GatewayError(
        "EDGE_CONFIG_ENV_MISSING",
        `${path.join(".") || "(root)"}: \${${name}} is not set`,
      );
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolateEnv(v, env, [...path, String(i)]));
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = interpolateEnv(v, env, [...path, k]);
    return out;
  }
  return value;
}

/** One line per problem, each prefixed by its path in the document (`servers.github.route: ...`). */
export function formatIssues(error: z.ZodError): string {
  return error.issues
    .map((i) => `  ${i.path.length ? i.path.map(String).join(".") : "(root)"}: ${i.message}`)
    .join("\n");
}

/** Validates an already-parsed document. Throws EDGE_CONFIG_INVALID with every problem listed. */
export function parseConfig(doc: unknown, env: NodeJS.ProcessEnv = process.env): Config {
  // Secrets must come from the environment: checked on the document as written, before `${ENV}`
  // is replaced (after it, an inline secret and an interpolated one look the same).
  const inline = checkSecretsFromEnv(doc);
  if (inline.length > 0) {
    throw new GatewayError(
      "EDGE_CONFIG_SECRET_INLINE",
      `secrets written in the config:\n  ${inline.join("\n  ")}`,
    );
  }
  const interpolated = interpolateEnv(doc ?? {}, env);
  const result = configSchema.safeParse(interpolated);
  if (!result.success) {
    throw new GatewayError("EDGE_CONFIG_INVALID", `invalid configuration:\n${formatIssues(result.error)}`);
  }
  return result.data;
}

/** Reads, interpolates and validates a YAML (or JSON) config file. */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new GatewayError("EDGE_CONFIG_INVALID", `cannot read ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  let doc: unknown;
  try {
    doc = parseYaml(text, { prettyErrors: true });
  } catch (err) {
    throw new GatewayError("EDGE_CONFIG_INVALID", `${file} is not valid YAML: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return parseConfig(doc, env);
}

export type { Config, ConfigInput };
