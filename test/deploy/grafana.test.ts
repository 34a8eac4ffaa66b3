/**
 * deploy/grafana/mcp-edge.json, the Grafana dashboard of the Prometheus metrics: valid JSON with
 * the shape Grafana imports (a datasource variable every panel and query uses, unique panel ids,
 * panels on the grid without overlap, well-formed PromQL), and every metric and label its queries
 * name exists on the /metrics page of a real edge — in distributed mode on the real Redis and
 * PostgreSQL, so the Redis and stream gauges are there too — after traffic that fills the series:
 * calls, a tool error, a 429, a session ended.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Redis } from "ioredis";
import { type InProcessEdge, startEdge, tempDir } from "../helpers/edge.ts";
import { POSTGRES_URL, postgresFixture, postgresSkipReason } from "../helpers/postgres.ts";
import { dropPrefix, REDIS_URL, redisReady, testPrefix } from "../helpers/redis.ts";
import { REPO_ROOT, type SpawnedFixture, spawnFixture } from "../helpers/spawn.ts";

const FILE = path.join(REPO_ROOT, "deploy", "grafana", "mcp-edge.json");

interface Target {
  expr: string;
  refId: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
}

const dashboard = JSON.parse(readFileSync(FILE, "utf8")) as {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown; datasource?: { uid: string } }[] };
};

/** Every PromQL expression of the dashboard: panel queries and query variables. */
function expressions(): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const p of dashboard.panels)
    for (const t of p.targets ?? []) out.push({ where: `${p.title} / ${t.refId}`, expr: t.expr });
  for (const v of dashboard.templating.list) {
    if (v.type !== "query") continue;
    const q = v.query as { query: string };
    // label_values(metric, label): the metric and the label, as a selector and a `by`.
    const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(q.query);
    assert.ok(m, `variable ${v.name}: a label_values() query`);
    out.push({ where: `variable ${v.name}`, expr: `sum by (${m[2]}) (${m[1]})` });
  }
  return out;
}

/** Identifiers of a PromQL expression in selector position (followed by `{`, `[`, `)` or the end). */
const FUNCTIONS = new Set([
  "sum",
  "max",
  "min",
  "avg",
  "topk",
  "rate",
  "increase",
  "histogram_quantile",
  "by",
  "without",
]);

function metricsOf(expr: string): string[] {
  const names = new Set<string>();
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\bby \([^)]*\)/g, "")
    .replace(/\[[^\]]*\]/g, "");
  for (const m of stripped.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()/g)) {
    const id = m[1] as string;
    if (FUNCTIONS.has(id) || /^\d/.test(id)) continue;
    if (
      /^(le|server|outcome|method|tool|tenant|code|limit|reason|instance|mcp_method_name|gen_ai_tool_name|error_type|mcp_protocol_version)$/.test(
        id,
      )
    )
      continue; // label names inside a selector: checked below
    names.add(id);
  }
  return [...names];
}

/** Label names of an expression: in `by (...)` and in selectors `{name op "value", ...}`. */
function labelsOf(expr: string): { by: string[]; selectors: { metric: string; labels: string[] }[] } {
  const by = [...expr.matchAll(/\bby \(([^)]*)\)/g)].flatMap((m) =>
    (m[1] as string).split(",").map((s) => s.trim()),
  );
  const selectors = [...expr.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}/g)].map((m) => ({
    metric: m[1] as string,
    labels: [...(m[2] as string).matchAll(/(\w+)\s*(?:=~|!~|!=|=)\s*"/g)].map((l) => l[1] as string),
  }));
  return { by, selectors };
}

/** Labels Prometheus adds at scrape time: not on the edge's page. */
const SCRAPE_LABELS = new Set(["instance", "job"]);

describe("Grafana dashboard: its shape", () => {
  test("valid JSON that Grafana imports: uid, title, a datasource variable every query uses", () => {
    assert.equal(dashboard.uid, "mcp-edge");
    assert.ok(dashboard.schemaVersion >= 36);
    const ds = dashboard.templating.list.find((v) => v.type === "datasource");
    assert.ok(ds, "a datasource variable");
    assert.equal((ds as { query: unknown }).query, "prometheus");
    const ref = `\${${ds.name}}`;
    for (const v of dashboard.templating.list.filter((x) => x.type === "query"))
      assert.equal(v.datasource?.uid, ref, `variable ${v.name} uses the datasource variable`);
    for (const p of dashboard.panels) {
      if (p.type === "row") continue;
      assert.equal(p.datasource?.uid, ref, `${p.title}: the datasource variable`);
      assert.ok((p.targets ?? []).length > 0, `${p.title}: has a query`);
      for (const t of p.targets ?? []) assert.equal(t.datasource?.uid, ref, `${p.title}/${t.refId}`);
    }
  });

  test("unique ids, panels inside the 24-column grid, none overlapping", () => {
    const ids = dashboard.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, "unique panel ids");
    const cells = new Map<string, string>();
    for (const p of dashboard.panels) {
      const g = p.gridPos;
      assert.ok(g.x >= 0 && g.w > 0 && g.x + g.w <= 24, `${p.title}: inside the grid (${JSON.stringify(g)})`);
      for (let y = g.y; y < g.y + g.h; y++)
        for (let x = g.x; x < g.x + g.w; x++) {
          const other = cells.get(`${x},${y}`);
          assert.equal(other, undefined, `${p.title} overlaps ${other}`);
          cells.set(`${x},${y}`, p.title);
        }
    }
  });

  test("every query is well-formed: balanced brackets, closed strings, known functions", () => {
    for (const { where, expr } of expressions()) {
      const stack: string[] = [];
      const pairs: Record<string, string> = { ")": "(", "]": "[", "}": "{" };
      const text = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
      assert.equal((text.match(/"/g) ?? []).length % 2, 0, `${where}: strings closed`);
      for (const c of text) {
        if (c === "(" || c === "[" || c === "{") stack.push(c);
        else if (c in pairs) assert.equal(stack.pop(), pairs[c], `${where}: ${expr}`);
      }
      assert.deepEqual(stack, [], `${where}: balanced`);
      for (const m of text.matchAll(/\b([a-z_]+)\s*\(/g))
        assert.ok(FUNCTIONS.has(m[1] as string), `${where}: unknown function ${m[1]}`);
    }
  });
});

const ready = (await redisReady("grafana dashboard")) && (await postgresSkipReason()) === undefined;

describe(
  "Grafana dashboard: every metric and label it queries is on a real edge's /metrics",
  { skip: !ready && "needs Redis and PostgreSQL" },
  () => {
    const prefix = testPrefix();
    let upstream: SpawnedFixture;
    let edge: InProcessEdge;
    after(async () => {
      await edge?.stop();
      await upstream?.stop();
      const redis = new Redis(REDIS_URL);
      await dropPrefix(redis, prefix).catch(() => undefined);
      redis.disconnect();
    });
    const pg = postgresFixture();

    before(async () => {
      upstream = await spawnFixture("test/fixtures/conformance-server.ts");
      const dir = tempDir();
      edge = await startEdge(
        {
          store: {
            sqlite: path.join(dir, "edge.db"),
            redis: { url: REDIS_URL, keyPrefix: prefix, commandTimeout: "1s" },
            postgres: { url: POSTGRES_URL, schema: pg.schema(), poolSize: 2 },
          },
          servers: {
            s: {
              route: "/mcp",
              upstream: { urls: [upstream.url] },
              auth: ["none"],
              limits: { tools: { test_simple_text: "1/min" } },
            },
          },
        },
        dir,
      );
    });

    test("after traffic, the page has every metric and label the dashboard uses", async () => {
      const client = new Client({ name: "grafana-test", version: "1" });
      const transport = new StreamableHTTPClientTransport(new URL(edge.url()));
      await client.connect(transport);
      await client.callTool({ name: "echo_headers", arguments: {} });
      await client.callTool({ name: "test_error_handling", arguments: {} });
      await client.callTool({ name: "test_simple_text", arguments: {} });
      await assert.rejects(
        client.callTool({ name: "test_simple_text", arguments: {} }),
        "the second is a 429",
      );
      await transport.terminateSession();
      await client.close();

      const page = await (await fetch(`${edge.gw.adminUrl}/metrics`)).text();
      const names = new Set<string>();
      for (const m of page.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
        const [name, type] = [m[1] as string, m[2] as string];
        if (type === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(`${name}${s}`);
        else if (type === "summary") for (const s of ["", "_sum", "_count"]) names.add(`${name}${s}`);
        else names.add(name);
      }
      const labels = new Map<string, Set<string>>();
      for (const m of page.matchAll(/^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} /gm)) {
        const set = labels.get(m[1] as string) ?? new Set<string>();
        for (const l of (m[2] as string).matchAll(/(\w+)="/g)) set.add(l[1] as string);
        labels.set(m[1] as string, set);
      }
      let checked = 0;
      for (const { where, expr } of expressions()) {
        const metrics = metricsOf(expr);
        assert.ok(metrics.length > 0, `${where}: names a metric`);
        for (const metric of metrics) {
          assert.ok(names.has(metric), `${where}: ${metric} is not on /metrics`);
          checked++;
        }
        const { by, selectors } = labelsOf(expr);
        for (const s of selectors) {
          const known = labels.get(s.metric);
          assert.ok(known, `${where}: ${s.metric} has series after the traffic`);
          for (const l of s.labels) assert.ok(known.has(l), `${where}: ${s.metric} has no label ${l}`);
        }
        for (const l of by) {
          if (l === "le" || SCRAPE_LABELS.has(l)) continue;
          for (const metric of metrics)
            assert.ok(labels.get(metric)?.has(l), `${where}: by (${l}): ${metric} has no such label`);
        }
      }
      assert.ok(checked >= 30, `metric references checked: ${checked}`);
    });
  },
);
