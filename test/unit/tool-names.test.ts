/**
 * Tool-name checks (src/mcp/tool-names.ts) and the tool catalog's views (src/cache/tool-catalog.ts):
 * fixed vectors of the variants a loose upstream lookup could confuse, and the view rules (pages,
 * completeness, list_changed during a fill, bounds).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ToolCatalog, toolPage } from "../../src/cache/tool-catalog.ts";
import { canonicalToolName, ToolNameIndex, toolNameProblem } from "../../src/mcp/tool-names.ts";

describe("tool names", () => {
  it("refuses invisible, control and edge-space characters; accepts exact names of any script", () => {
    for (const bad of [
      "",
      "echo ",
      " echo",
      "echo\n",
      "ec\u200bho",
      "ec\u200cho",
      "echo\u2060",
      "\ufeffecho",
      "ech\u00ado",
      "e\u202echo",
      "echo\u0000",
      "echo\u0085",
      "echo\u2028",
      "ec\ufe0fho",
      "x".repeat(257),
    ])
      assert.ok(toolNameProblem(bad), JSON.stringify(bad));
    for (const ok of ["echo", "get-sum", "a.b_c", "ECHO", "ｅｃｈｏ", "поиск", "搜索", "a b"])
      assert.equal(toolNameProblem(ok), undefined, ok);
  });

  it("canonical forms: case, NFKC and look-alike letters", () => {
    for (const v of [
      "ECHO",
      "Echo",
      "ｅｃｈｏ",
      "\u0435cho",
      "\u0435\u0441h\u043e",
      "ЕСНО",
      "\u03bfecho".slice(1),
      "ech\u03bf",
    ])
      assert.equal(canonicalToolName(v), "echo", JSON.stringify(v));
    assert.equal(canonicalToolName("\u0455earch"), "search");
    assert.notEqual(canonicalToolName("echo2"), "echo");
  });

  it("variants of configured and allowed names, never the names themselves", () => {
    const idx = new ToolNameIndex(["search", "delete_repo", "Echo", "echo"]);
    assert.equal(idx.variantOf("search"), undefined);
    assert.equal(idx.variantOf("SEARCH"), "search");
    assert.equal(idx.variantOf("DELETE_REPO"), "delete_repo");
    assert.equal(idx.variantOf("ｄｅｌｅｔｅ_repo"), "delete_repo");
    // Two configured names that differ only in case are each themselves.
    assert.equal(idx.variantOf("Echo"), undefined);
    assert.equal(idx.variantOf("echo"), undefined);
    assert.ok(idx.variantOf("ECHO"));
    assert.equal(idx.variantOf("other"), undefined);
    assert.equal(idx.variantOf("ADD", ["add"]), "add");
    assert.equal(idx.variantOf("add", ["add"]), undefined);
  });
});

describe("tool catalog", () => {
  it("pages make a view; complete after a page without nextCursor", () => {
    const c = new ToolCatalog();
    const g = c.generation("s");
    c.page("s", "ctx", undefined, { names: ["a", "b"], nextCursor: "2" }, g);
    assert.equal(c.view("s", "ctx")?.complete, false);
    c.page("s", "ctx", "2", { names: ["c"], nextCursor: undefined }, g);
    assert.deepEqual([...(c.view("s", "ctx")?.names ?? [])], ["a", "b", "c"]);
    assert.equal(c.view("s", "ctx")?.complete, true);
    // A later page without its first one is no view.
    c.page("s", "other", "2", { names: ["x"], nextCursor: undefined }, g);
    assert.equal(c.view("s", "other"), undefined);
  });

  it("list_changed makes every view of the server stale, and drops fills that started before it", () => {
    const c = new ToolCatalog();
    const g = c.generation("s");
    c.page("s", "ctx", undefined, { names: ["a"], nextCursor: undefined }, g);
    c.page("t", "ctx", undefined, { names: ["a"], nextCursor: undefined }, c.generation("t"));
    c.see("s", { jsonrpc: "2.0", method: "notifications/tools/list_changed" });
    assert.equal(c.view("s", "ctx"), undefined);
    assert.ok(c.view("t", "ctx"), "another server's views stay");
    c.page("s", "ctx", undefined, { names: ["old"], nextCursor: undefined }, g);
    assert.equal(c.view("s", "ctx"), undefined, "an answer read before the change is not stored");
    c.see("s", { jsonrpc: "2.0", method: "notifications/resources/list_changed" });
    c.see("s", { jsonrpc: "2.0", id: 1, method: "notifications/tools/list_changed" });
    c.page("s", "ctx", undefined, { names: ["new"], nextCursor: undefined }, c.generation("s"));
    assert.ok(c.view("s", "ctx")?.names.has("new"));
  });

  it("fills are shared while one runs; views are bounded per server", async () => {
    const c = new ToolCatalog({ maxViews: 2 });
    let fetches = 0;
    const fetch = async () => {
      fetches++;
      await new Promise((r) => setImmediate(r));
      return { names: new Set(["a"]), complete: true, at: 0 };
    };
    await Promise.all([c.fill("s", "k", fetch), c.fill("s", "k", fetch), c.fill("s", "k", fetch)]);
    assert.equal(fetches, 1);
    for (const k of ["1", "2", "3"]) c.page("s", k, undefined, { names: [k], nextCursor: undefined }, 0);
    assert.equal(c.view("s", "1"), undefined, "the oldest view went");
    assert.ok(c.view("s", "3"));
  });

  it("reads tool pages from results; anything else is no page", () => {
    assert.deepEqual(toolPage({ tools: [{ name: "a" }, { name: 1 }, null], nextCursor: "" }), {
      names: ["a"],
      nextCursor: undefined,
    });
    assert.deepEqual(toolPage({ tools: [], nextCursor: "n" }), { names: [], nextCursor: "n" });
    for (const bad of [null, {}, { tools: "a" }, [], "x"]) assert.equal(toolPage(bad), undefined);
  });
});
