import {
  type CheckContext,
  initializeRequest,
  modernRequest,
  post,
  randomToken,
  record,
  statusText,
} from "./context.ts";
import type { DiscoveredFetcher } from "./discovered.ts";
import { BEARER_ERRORS, bearerOf, parseChallenges } from "./findings.ts";
import type { Exchange, ProbeAnswer } from "./http.ts";

/**
 * Auth posture: what an unauthenticated client meets (401 challenge, RFC 9728 metadata, the
 * authorization server's RFC 8414 metadata) and two refusals (a bogus token, a token in the query
 * string). Nothing here needs a working credential except the query-string probe.
 */

/** The request the era starts with, without the operator's credentials. */
async function firstRequest(
  ctx: CheckContext,
  modern: boolean,
  headers: Record<string, string> = {},
  url?: string,
): Promise<{ answer: ProbeAnswer; exchange: Exchange }> {
  if (modern) {
    const r = modernRequest("server/discover");
    return post(
      ctx,
      r.body,
      { ...r.headers, ...headers },
      { auth: false, enoughId: r.id, ...(url ? { url } : {}) },
    );
  }
  const init = initializeRequest();
  return post(ctx, init.body, headers, { auth: false, enoughId: init.id, ...(url ? { url } : {}) });
}

function json(answer: ProbeAnswer): Record<string, unknown> | undefined {
  if (answer.status !== 200) return undefined;
  try {
    const v = JSON.parse(answer.body) as unknown;
    return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** RFC 9728 §3.1: the well-known URI is inserted between the host and the path. */
export function prmWellKnown(resource: URL): { pathInserted: string; root: string } {
  const path = resource.pathname === "/" ? "" : resource.pathname.replace(/\/$/, "");
  return {
    pathInserted: `${resource.origin}/.well-known/oauth-protected-resource${path}`,
    root: `${resource.origin}/.well-known/oauth-protected-resource`,
  };
}

/** RFC 8414 §3.1 and OIDC Discovery §4 spellings, in the order MCP 2025-11-25 clients try them. */
export function asMetadataUrls(issuer: string): string[] {
  const u = new URL(issuer);
  const path = u.pathname === "/" ? "" : u.pathname.replace(/\/$/, "");
  if (!path)
    return [
      `${u.origin}/.well-known/oauth-authorization-server`,
      `${u.origin}/.well-known/openid-configuration`,
    ];
  return [
    `${u.origin}/.well-known/oauth-authorization-server${path}`,
    `${u.origin}/.well-known/openid-configuration${path}`,
    `${u.origin}${path}/.well-known/openid-configuration`,
  ];
}

function sameResource(a: unknown, b: URL): boolean {
  if (typeof a !== "string") return false;
  try {
    return new URL(a).href === b.href;
  } catch {
    return false;
  }
}

const OAUTH_RULES = [
  "auth.challenge-metadata",
  "auth.challenge-scope",
  "auth.prm",
  "auth.prm-resource",
  "auth.prm-well-known",
  "auth.no-offline-access",
  "auth.as-metadata",
  "auth.pkce-s256",
  "auth.registration",
  "auth.iss-response",
];

export interface AuthOutcome {
  /** The target wants credentials (a 401 without them). */
  protected: boolean;
  /** HTML pages found on the way (the authorization endpoint), for the header check. */
  htmlCandidates: string[];
}

export async function probeAuth(
  ctx: CheckContext,
  fetcher: DiscoveredFetcher,
  modern: boolean,
): Promise<AuthOutcome> {
  const skipAll = (why: string) => {
    for (const id of [
      "auth.challenge",
      "auth.challenge-syntax",
      "auth.challenge-metadata",
      "auth.challenge-scope",
      "auth.prm",
      "auth.prm-resource",
      "auth.prm-well-known",
      "auth.no-offline-access",
      "auth.as-metadata",
      "auth.pkce-s256",
      "auth.registration",
      "auth.iss-response",
      "auth.invalid-token-401",
      "auth.query-token-refused",
    ])
      record(ctx, id, "skip", why);
  };

  const anon = await firstRequest(ctx, modern);
  if (anon.answer.status !== 401) {
    const why =
      anon.answer.status >= 200 && anon.answer.status < 300
        ? "the endpoint answers without credentials (no authorization to judge)"
        : `an unauthenticated request was answered ${statusText(anon.answer)}, not 401`;
    skipAll(why);
    ctx.notes.push(`auth: ${why}`);
    return { protected: false, htmlCandidates: [] };
  }

  const wwwAuth = anon.answer.headers["www-authenticate"];
  const bearer = bearerOf(wwwAuth);
  record(
    ctx,
    "auth.challenge",
    bearer ? "pass" : "fail",
    bearer
      ? "401 with a Bearer challenge"
      : `401 ${wwwAuth ? `with WWW-Authenticate ${JSON.stringify(wwwAuth)} but no Bearer challenge` : "without WWW-Authenticate"}`,
    [anon.exchange],
  );

  // A bogus token: 401 (its challenge is judged for syntax too).
  const bogus = await firstRequest(ctx, modern, { authorization: `Bearer mcp-edge-check-${randomToken()}` });
  const bogusOk = bogus.answer.status === 401;
  record(
    ctx,
    "auth.invalid-token-401",
    bogusOk ? "pass" : "fail",
    bogusOk
      ? "401 for a bearer token the server never issued"
      : `an invalid bearer token was answered ${statusText(bogus.answer)}`,
    [bogus.exchange],
  );

  const syntaxProblems: string[] = [];
  const syntaxEvidence: Exchange[] = [];
  for (const ex of [anon, bogus]) {
    const v = ex.answer.headers["www-authenticate"];
    if (!v) continue;
    syntaxEvidence.push(ex.exchange);
    const parsed = parseChallenges(v);
    if (typeof parsed === "string") {
      syntaxProblems.push(`${JSON.stringify(v)}: ${parsed}`);
      continue;
    }
    for (const c of parsed) {
      const err = c.params.error;
      if (c.scheme.toLowerCase() === "bearer" && err !== undefined && !BEARER_ERRORS.has(err))
        syntaxProblems.push(`error="${err}" is not an RFC 6750 error code`);
      const rm = c.params.resource_metadata;
      if (rm !== undefined && !URL.canParse(rm))
        syntaxProblems.push(`resource_metadata ${JSON.stringify(rm)} is not a URL`);
    }
  }
  record(
    ctx,
    "auth.challenge-syntax",
    syntaxEvidence.length === 0 ? "skip" : syntaxProblems.length === 0 ? "pass" : "fail",
    syntaxEvidence.length === 0
      ? "no challenge to parse"
      : syntaxProblems.length === 0
        ? "challenges parse (RFC 9110 §11.6.1)"
        : syntaxProblems.join("; "),
    syntaxEvidence,
  );

  const rmUrl = bearer?.params.resource_metadata;
  const scope = bearer?.params.scope;
  const htmlCandidates: string[] = [];

  // Protected resource metadata: the challenge's URL, then the well-known URIs.
  const wk = prmWellKnown(ctx.url);
  const fetched = new Map<string, { answer: ProbeAnswer; exchange: Exchange }>();
  const get = async (u: string) => {
    const hit = fetched.get(u);
    if (hit) return hit;
    const r = await fetcher.get(u);
    fetched.set(u, r);
    return r;
  };
  let prm: Record<string, unknown> | undefined;
  let prmEx: Exchange | undefined;
  for (const u of [rmUrl, wk.pathInserted, wk.root]) {
    if (!u || !URL.canParse(u)) continue;
    const r = await get(u);
    const doc = json(r.answer);
    if (
      doc &&
      Array.isArray(doc.authorization_servers) &&
      doc.authorization_servers.length > 0 &&
      typeof doc.resource === "string"
    ) {
      prm = doc;
      prmEx = r.exchange;
      break;
    }
  }
  const prmEvidence = [...fetched.values()].map((r) => r.exchange);
  if (rmUrl === undefined && prm === undefined) {
    // MCP authorization is optional: an endpoint that names metadata nowhere uses credentials of
    // its own (API keys). Nothing OAuth is judged; the notes say OAuth-only clients cannot log in.
    const why =
      "no OAuth discovery offered (no resource_metadata in the challenge, no well-known metadata): the endpoint uses its own credentials";
    for (const id of OAUTH_RULES) record(ctx, id, "skip", why, id === "auth.prm" ? prmEvidence : []);
    ctx.notes.push(
      "auth: no OAuth discovery, so OAuth-only MCP clients cannot log in (MCP authorization is optional)",
    );
  } else {
    const noBearer = "no Bearer challenge to read (auth.challenge)";
    record(
      ctx,
      "auth.challenge-metadata",
      !bearer ? "skip" : rmUrl ? "pass" : "fail",
      !bearer
        ? noBearer
        : rmUrl
          ? `resource_metadata=${rmUrl}`
          : "the 401 challenge has no resource_metadata (clients must fall back to the well-known URIs)",
      [anon.exchange],
    );
    record(
      ctx,
      "auth.challenge-scope",
      !bearer ? "skip" : scope ? "pass" : "fail",
      !bearer ? noBearer : scope ? `scope="${scope}"` : "the 401 challenge names no scope",
      [anon.exchange],
    );
    record(
      ctx,
      "auth.prm",
      prm ? "pass" : "fail",
      prm
        ? `metadata names ${(prm.authorization_servers as unknown[]).length} authorization server(s)`
        : "no protected resource metadata with resource and authorization_servers at the challenge URL or the well-known URIs",
      prmEvidence,
    );
    record(
      ctx,
      "auth.prm-resource",
      !prm ? "skip" : sameResource(prm.resource, ctx.url) ? "pass" : "fail",
      !prm
        ? "no metadata"
        : sameResource(prm.resource, ctx.url)
          ? `resource = ${ctx.url.href}`
          : `resource ${JSON.stringify(prm.resource)} differs from ${ctx.url.href}`,
      prmEx ? [prmEx] : [],
    );

    // Presence only: whether the document's resource matches is auth.prm-resource.
    const pi = await get(wk.pathInserted);
    const piDoc = json(pi.answer);
    const piOk = piDoc !== undefined && typeof piDoc.resource === "string";
    let wkDetail = piOk
      ? `served at ${wk.pathInserted}`
      : `${wk.pathInserted} answered ${statusText(pi.answer)}${piDoc ? ` with resource ${JSON.stringify(piDoc.resource)}` : ""}`;
    const wkEvidence = [pi.exchange];
    if (wk.root !== wk.pathInserted) {
      const root = await get(wk.root);
      wkEvidence.push(root.exchange);
      const rootDoc = json(root.answer);
      if (rootDoc)
        wkDetail += sameResource(rootDoc.resource, ctx.url)
          ? "; also at the root URI"
          : `; the root URI describes ${JSON.stringify(rootDoc.resource)}`;
    }
    if (!prm) record(ctx, "auth.prm-well-known", "skip", "no metadata anywhere (auth.prm)", wkEvidence);
    else record(ctx, "auth.prm-well-known", piOk ? "pass" : "fail", wkDetail, wkEvidence);

    const offline: string[] = [];
    if (scope?.split(/\s+/).includes("offline_access")) offline.push("the 401 challenge");
    if (Array.isArray(prm?.scopes_supported) && prm.scopes_supported.includes("offline_access"))
      offline.push("scopes_supported");
    record(
      ctx,
      "auth.no-offline-access",
      offline.length === 0 ? "pass" : "fail",
      offline.length === 0
        ? "offline_access is not demanded"
        : `offline_access listed in ${offline.join(" and ")}`,
      [anon.exchange, ...(prmEx ? [prmEx] : [])],
    );

    // Authorization server metadata (the first one listed).
    const issuer = (prm?.authorization_servers as unknown[] | undefined)?.find(
      (x): x is string => typeof x === "string" && URL.canParse(x),
    );
    if (!issuer) {
      for (const id of ["auth.as-metadata", "auth.pkce-s256", "auth.registration", "auth.iss-response"])
        record(ctx, id, "skip", "no authorization server named");
    } else {
      const tried: Exchange[] = [];
      let as: Record<string, unknown> | undefined;
      let asEx: Exchange | undefined;
      for (const u of asMetadataUrls(issuer)) {
        const r = await get(u);
        tried.push(r.exchange);
        const doc = json(r.answer);
        if (doc) {
          as = doc;
          asEx = r.exchange;
          break;
        }
      }
      const issuerOk = as !== undefined && as.issuer === issuer;
      record(
        ctx,
        "auth.as-metadata",
        issuerOk ? "pass" : "fail",
        !as
          ? `no metadata for ${issuer} at ${asMetadataUrls(issuer).join(", ")}`
          : issuerOk
            ? `issuer ${issuer}`
            : `issuer ${JSON.stringify(as.issuer)} differs from ${issuer}`,
        tried,
      );
      if (!as) {
        for (const id of ["auth.pkce-s256", "auth.registration", "auth.iss-response"])
          record(ctx, id, "skip", "no authorization server metadata");
      } else {
        const ev = asEx ? [asEx] : [];
        const methods = as.code_challenge_methods_supported;
        const s256 = Array.isArray(methods) && methods.includes("S256");
        record(
          ctx,
          "auth.pkce-s256",
          s256 ? "pass" : "fail",
          s256
            ? "code_challenge_methods_supported includes S256"
            : `code_challenge_methods_supported is ${JSON.stringify(methods)}`,
          ev,
        );
        const cimd = as.client_id_metadata_document_supported === true;
        const dcr = typeof as.registration_endpoint === "string";
        record(
          ctx,
          "auth.registration",
          cimd || dcr ? "pass" : "fail",
          cimd || dcr
            ? [cimd ? "CIMD" : "", dcr ? "dynamic registration" : ""].filter(Boolean).join(" and ") +
                " offered"
            : "neither client_id_metadata_document_supported nor registration_endpoint (clients need a pre-registered id)",
          ev,
        );
        const iss = as.authorization_response_iss_parameter_supported === true;
        record(
          ctx,
          "auth.iss-response",
          iss ? "pass" : "fail",
          iss
            ? "authorization_response_iss_parameter_supported: true"
            : "authorization_response_iss_parameter_supported is not true (RFC 9207 mix-up defence)",
          ev,
        );
        if (typeof as.authorization_endpoint === "string") htmlCandidates.push(as.authorization_endpoint);
      }
    }
  }

  // A token in the query string (RFC 6750 §2.3 method, forbidden by MCP): only with a real token.
  if (!ctx.bearer) {
    record(
      ctx,
      "auth.query-token-refused",
      "skip",
      "needs a working bearer token (-H 'Authorization: Bearer …')",
    );
  } else {
    const u = new URL(ctx.url.href);
    u.searchParams.set("access_token", ctx.bearer);
    const q = await firstRequest(ctx, modern, {}, u.href);
    const refused = q.answer.status === 401 || q.answer.status === 400;
    record(
      ctx,
      "auth.query-token-refused",
      refused ? "pass" : "fail",
      refused
        ? `?access_token= without the header: ${q.answer.status}`
        : `a token in the query string was answered ${statusText(q.answer)}`,
      [q.exchange],
    );
  }
  return { protected: true, htmlCandidates };
}
