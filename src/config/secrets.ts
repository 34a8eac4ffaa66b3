/** Exactly one `${NAME}` reference, without a `:-default` (a default would be a secret in the file). */
const ENV_ONLY = /^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/;
/** An HTTP auth scheme (RFC 9110 §11.1) then one `${NAME}`: `Bearer ${TOKEN}` holds no secret. */
const SCHEME_THEN_ENV = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ \$\{[A-Za-z_][A-Za-z0-9_]*\}$/;

/**
 * Checks the raw (not yet interpolated) config document: every value of
 * `servers.*.credentials.headers`, `servers.*.credentials.oauth.clientSecret`,
 * `connections.*.clientSecret`, `vault.key`, `vault.previousKeys` and the federated IdPs'
 * `auth.authorizationServer.login.idp(s).clientSecret` must come from the
 * environment. Header values may be `${NAME}` or `<scheme> ${NAME}`; the client secret
 * must be exactly `${NAME}`. Returns one problem per offending value, prefixed by its path; the
 * value itself is never repeated (it may be a secret). Pure; the loader turns a non-empty answer
 * into EDGE_CONFIG_SECRET_INLINE.
 */
export function checkSecretsFromEnv(rawDoc: unknown): string[] {
  const problems: string[] = [];
  const isObj = (v: unknown): v is Record<string, unknown> =>
    v !== null && typeof v === "object" && !Array.isArray(v);
  if (!isObj(rawDoc)) return problems;
  const envOnly = (path: string, v: unknown) => {
    if (typeof v !== "string" || !ENV_ONLY.test(v))
      problems.push(`${path}: must be a \${NAME} reference, not a value in the file`);
  };
  if (isObj(rawDoc.connections))
    for (const [name, c] of Object.entries(rawDoc.connections))
      if (isObj(c) && "clientSecret" in c) envOnly(`connections.${name}.clientSecret`, c.clientSecret);
  if (isObj(rawDoc.vault)) {
    if ("key" in rawDoc.vault) envOnly("vault.key", rawDoc.vault.key);
    const prev = rawDoc.vault.previousKeys;
    if (Array.isArray(prev)) prev.forEach((v, i) => envOnly(`vault.previousKeys.${i}`, v));
  }
  // The federated IdPs' client secrets (auth.authorizationServer.login.idp, login.idps.*).
  const login =
    isObj(rawDoc.auth) && isObj(rawDoc.auth.authorizationServer)
      ? rawDoc.auth.authorizationServer.login
      : undefined;
  if (isObj(login)) {
    const idps: [string, unknown][] = [["idp", login.idp]];
    if (isObj(login.idps)) for (const [n, c] of Object.entries(login.idps)) idps.push([`idps.${n}`, c]);
    for (const [path, c] of idps)
      if (isObj(c) && "clientSecret" in c)
        envOnly(`auth.authorizationServer.login.${path}.clientSecret`, c.clientSecret);
  }
  if (!isObj(rawDoc.servers)) return problems;
  for (const [name, server] of Object.entries(rawDoc.servers)) {
    if (!isObj(server) || !isObj(server.credentials)) continue;
    const base = `servers.${name}.credentials`;
    const { headers, oauth } = server.credentials;
    if (isObj(headers)) {
      for (const [h, v] of Object.entries(headers)) {
        if (typeof v !== "string" || !(ENV_ONLY.test(v) || SCHEME_THEN_ENV.test(v)))
          problems.push(
            `${base}.headers.${h}: must be a \${NAME} reference (or "<scheme> \${NAME}"), not a value in the file`,
          );
      }
    }
    if (isObj(oauth) && "clientSecret" in oauth) {
      const v = oauth.clientSecret;
      if (typeof v !== "string" || !ENV_ONLY.test(v))
        problems.push(`${base}.oauth.clientSecret: must be a \${NAME} reference, not a value in the file`);
    }
  }
  return problems;
}
