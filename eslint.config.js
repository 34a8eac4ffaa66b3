// One linter (ESLint with typescript-eslint), one formatter (Prettier, see .prettierrc.json).
import js from "@eslint/js";
import tseslint from "typescript-eslint";

const egressOnly = "All egress goes through src/egress (one guarded way out, SSRF checks, pinned addresses).";

export default tseslint.config(
  { ignores: ["node_modules/**", "scratch/**", "bench/results/**", "schema/**", ".mcp-edge/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: "readonly",
        console: "readonly",
        Buffer: "readonly",
        URL: "readonly",
        URLSearchParams: "readonly",
        setTimeout: "readonly",
        clearTimeout: "readonly",
        setInterval: "readonly",
        clearInterval: "readonly",
        setImmediate: "readonly",
        AbortController: "readonly",
        AbortSignal: "readonly",
        TextDecoder: "readonly",
        TextEncoder: "readonly",
        performance: "readonly",
        structuredClone: "readonly",
        fetch: "readonly",
        Headers: "readonly",
        Response: "readonly",
        ReadableStream: "readonly",
        crypto: "readonly",
        NodeJS: "readonly",
        CryptoKey: "readonly",
      },
    },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": ["error", { fixStyle: "inline-type-imports" }],
      "no-control-regex": "off",
    },
  },
  {
    // The rule the MCP SDK turned a past bug into: no outbound HTTP outside src/egress.
    files: ["src/**/*.ts"],
    // src/check/http.ts: `mcp-edge check` probes the URL the operator typed, and must send what a
    // client or an attacker would (a forged Host, a foreign Origin, an oversized body) without
    // following redirects; URLs the target discloses still go through src/egress (discovered.ts).
    // src/connect/http.ts: the `mcp-edge connect` bridge runs on the user's machine, toward the
    // server the user typed (often localhost or an intranet host) and through the user's proxy
    // (undici EnvHttpProxyAgent). The server-side SSRF guard does not fit it; its own checks on
    // server-supplied URLs are in that file (docs/connect.md, "Outbound requests").
    ignores: ["src/egress/**", "src/check/http.ts", "src/connect/http.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          paths: [
            { name: "undici", message: egressOnly },
            { name: "node:https", message: egressOnly },
            { name: "https", message: egressOnly },
            { name: "http", message: "Import node:http (servers only)." },
            {
              name: "node:http",
              importNames: ["request", "get", "Agent", "globalAgent"],
              message: egressOnly,
            },
          ],
        },
      ],
      "no-restricted-globals": ["error", { name: "fetch", message: egressOnly }],
    },
  },
  {
    files: ["test/**/*.ts", "bench/**/*.ts", "scripts/**/*.ts"],
    rules: { "@typescript-eslint/no-explicit-any": "off" },
  },
);
