/**
 * deploy/kubernetes/: every manifest validates against the Kubernetes API schemas (the validators
 * the kubernetes-models package generates from Kubernetes' OpenAPI document), and the pieces fit:
 * probes on the edge's own endpoints and ports, zero-unavailable rollouts, a disruption budget, the
 * restricted security context, a config checksum that matches the ConfigMap, Secret references that
 * the example Secret provides, selectors that select the pods, and a kustomization listing them all.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import ts from "typescript";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { parseConfig } from "../../src/config/load.ts";
import { REPO_ROOT } from "../helpers/spawn.ts";

const DIR = path.join(REPO_ROOT, "deploy", "kubernetes");

type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; [k: string]: any };
  [k: string]: any;
};

function loadAll(): { file: string; doc: Manifest }[] {
  const out: { file: string; doc: Manifest }[] = [];
  for (const file of readdirSync(DIR)
    .filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml")
    .sort()) {
    for (const d of parseAllDocuments(readFileSync(path.join(DIR, file), "utf8"))) {
      assert.deepEqual(d.errors, [], `${file} is valid YAML`);
      const doc = d.toJS() as Manifest | null;
      if (doc) out.push({ file, doc });
    }
  }
  return out;
}

interface Validatable {
  validate(): void;
}

/** The kubernetes-models class of an apiVersion and kind (e.g. apps/v1 Deployment). */
async function modelOf(apiVersion: string, kind: string): Promise<new (data: unknown) => Validatable> {
  const mod = (await import(`kubernetes-models/${apiVersion}/${kind}`)) as Record<string, unknown>;
  const cls = mod[kind];
  assert.equal(typeof cls, "function", `kubernetes-models has ${apiVersion} ${kind}`);
  return cls as new (data: unknown) => Validatable;
}

/**
 * Field names the Kubernetes API does not know. The schema validators accept unknown fields (as the
 * API's OpenAPI document does), so a misspelt optional field (`readinesProbe`) would pass them and
 * be dropped by the API server; the package's TypeScript types are exact, and TypeScript's
 * excess-property check on an object literal finds such a field at any depth.
 */
function unknownFields(manifests: Manifest[]): string[] {
  const file = path.join(REPO_ROOT, "test", "deploy", "__kubernetes_manifests__.ts");
  const source = manifests
    .map(
      (m, i) =>
        `import type { I${m.kind} as T${i} } from "kubernetes-models/${m.apiVersion}/${m.kind}";\n` +
        `export const m${i}: T${i} = ${JSON.stringify(m)};\n`,
    )
    .join("");
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, language, ...rest) =>
    name === file
      ? ts.createSourceFile(name, source, language)
      : getSourceFile.call(host, name, language, ...rest);
  host.fileExists = (name) => name === file || fileExists.call(host, name);
  host.readFile = (name) => (name === file ? source : readFile.call(host, name));
  const program = ts.createProgram([file], options, host);
  return ts
    .getPreEmitDiagnostics(program, program.getSourceFile(file))
    .map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
}

function one(kind: string, name?: string): Manifest {
  const found = loadAll().filter(
    (m) => m.doc.kind === kind && (name === undefined || m.doc.metadata.name === name),
  );
  assert.equal(found.length, 1, `one ${kind}${name ? ` ${name}` : ""}`);
  return (found[0] as { doc: Manifest }).doc;
}

function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

describe("deploy/kubernetes", () => {
  test("every manifest validates against the Kubernetes API schema of its kind", async () => {
    const all = loadAll();
    assert.ok(all.length >= 9, `${all.length} manifests`);
    for (const { file, doc } of all) {
      const Model = await modelOf(doc.apiVersion, doc.kind);
      assert.doesNotThrow(() => new Model(doc).validate(), `${file}: ${doc.kind} ${doc.metadata.name}`);
    }
    const kinds = new Set(all.map((m) => m.doc.kind));
    for (const k of [
      "Deployment",
      "Service",
      "PodDisruptionBudget",
      "ConfigMap",
      "NetworkPolicy",
      "ServiceAccount",
      "Ingress",
      "Secret",
    ])
      assert.ok(kinds.has(k), `a ${k}`);
  });

  test("no manifest has a field the Kubernetes API does not know (TypeScript's exact types)", () => {
    const manifests = loadAll().map((m) => m.doc);
    assert.deepEqual(unknownFields(manifests), []);
    // Teeth: a misspelt probe and a misspelt security field are found (one error per manifest).
    const probe = structuredClone(one("Deployment"));
    const c1 = probe.spec.template.spec.containers[0];
    c1.readinesProbe = c1.readinessProbe;
    delete c1.readinessProbe;
    const security = structuredClone(one("Deployment"));
    security.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem = true;
    const found = unknownFields([probe, security]).join("\n");
    assert.match(found, /readinesProbe/);
    assert.match(found, /readOnlyRootFileSystem/);
  });

  test("the validation has teeth: wrong types and missing required fields are refused", async () => {
    const Deployment = await modelOf("apps/v1", "Deployment");
    const good = one("Deployment");
    const wrongType = structuredClone(good);
    wrongType.spec.replicas = "three";
    assert.throws(() => new Deployment(wrongType).validate());
    const noName = structuredClone(good);
    delete noName.spec.template.spec.containers[0].name;
    assert.throws(() => new Deployment(noName).validate());
    const badPolicy = structuredClone(good);
    badPolicy.spec.template.spec.securityContext.seccompProfile = {};
    assert.throws(() => new Deployment(badPolicy).validate());
  });

  test("Deployment: probes on the edge's endpoints, zero-unavailable rollout, restricted security", () => {
    const d = one("Deployment");
    const pod = d.spec.template.spec;
    const c = pod.containers[0];
    assert.equal(pod.containers.length, 1);

    // Ports: the names the probes and Services use, on the ports the config listens on.
    const ports = Object.fromEntries(
      (c.ports as { name: string; containerPort: number }[]).map((p) => [p.name, p.containerPort]),
    );
    const config = parseConfig(parseYaml(one("ConfigMap").data["mcp-edge.yaml"]), placeholderEnv());
    assert.equal(ports.http, config.listen.port);
    assert.equal(ports.admin, config.admin.listen.port);
    assert.equal(config.listen.host, "0.0.0.0");

    assert.deepEqual(c.startupProbe.httpGet, { path: "/healthz", port: "http" });
    assert.deepEqual(c.readinessProbe.httpGet, { path: "/readyz", port: "http" });
    assert.deepEqual(c.livenessProbe.httpGet, { path: "/healthz", port: "http" });

    assert.equal(d.spec.strategy.type, "RollingUpdate");
    assert.equal(d.spec.strategy.rollingUpdate.maxUnavailable, 0);
    assert.ok(d.spec.strategy.rollingUpdate.maxSurge >= 1);
    assert.ok(d.spec.replicas >= 2);
    // SIGTERM drains for drain.timeout (+ the readiness grace): the pod gets that long.
    assert.ok(pod.terminationGracePeriodSeconds * 1000 >= config.drain.timeout + 5000);

    // Security context: non-root (the image's numeric user), no privilege escalation, no
    // capabilities, read-only root, seccomp RuntimeDefault; no service-account token.
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(pod.securityContext.seccompProfile.type, "RuntimeDefault");
    const dockerfile = readFileSync(path.join(REPO_ROOT, "Dockerfile"), "utf8");
    const imageUser = /^USER (\d+):(\d+)$/m.exec(dockerfile);
    assert.equal(String(pod.securityContext.runAsUser), imageUser?.[1], "runAsUser is the image's USER");
    assert.equal(c.securityContext.runAsNonRoot, true);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.deepEqual(c.securityContext.capabilities.drop, ["ALL"]);
    assert.equal(c.securityContext.capabilities.add, undefined);
    assert.equal(c.securityContext.seccompProfile.type, "RuntimeDefault");
    assert.notEqual(c.securityContext.privileged, true);
    assert.equal(pod.automountServiceAccountToken, false);

    // The only writable paths are volumes: the config (read-only) and /data.
    const mounts = Object.fromEntries(
      (c.volumeMounts as { name: string; mountPath: string }[]).map((m) => [m.mountPath, m.name]),
    );
    assert.deepEqual(Object.keys(mounts).sort(), ["/data", "/etc/mcp-edge"]);
    const volumes = Object.fromEntries((pod.volumes as { name: string }[]).map((v) => [v.name, v]));
    assert.equal(
      (volumes[mounts["/etc/mcp-edge"] as string] as any).configMap.name,
      one("ConfigMap").metadata.name,
    );
    assert.ok(config.store.sqlite.startsWith("/data/"), "the store file is on the /data volume");
    assert.deepEqual(c.args, ["serve", "-c", "/etc/mcp-edge/mcp-edge.yaml"]);
    assert.ok(Object.keys(one("ConfigMap").data).includes("mcp-edge.yaml"));
  });

  test("the checksum annotation is the ConfigMap's, so a config change rolls the pods", () => {
    const d = one("Deployment");
    const cm = one("ConfigMap");
    const sum = createHash("sha256").update(cm.data["mcp-edge.yaml"]).digest("hex");
    assert.equal(
      d.spec.template.metadata.annotations["checksum/config"],
      `sha256:${sum}`,
      `deployment.yaml: set checksum/config to "sha256:${sum}"`,
    );
  });

  test("Secret references: every key the pods read is in the example Secret; none is inline", () => {
    const d = one("Deployment");
    const secret = one("Secret");
    const c = d.spec.template.spec.containers[0];
    const refs = (c.env as any[])
      .filter((e) => e.valueFrom?.secretKeyRef)
      .map((e) => e.valueFrom.secretKeyRef);
    assert.ok(refs.length >= 3);
    for (const r of refs) {
      assert.equal(r.name, secret.metadata.name);
      assert.ok(r.key in secret.stringData, `${r.key} is in secret.example.yaml`);
    }
    for (const e of c.env as { name: string; value?: string }[])
      if (/TOKEN|PASSWORD|SECRET|DATABASE_URL|REDIS_URL/.test(e.name))
        assert.equal(e.value, undefined, `${e.name} comes from the Secret`);
    // Every ${NAME} of the config is set in the pod's environment.
    const names = new Set((c.env as { name: string }[]).map((e) => e.name));
    const configValues = JSON.stringify(parseYaml(one("ConfigMap").data["mcp-edge.yaml"] as string));
    for (const m of configValues.matchAll(/\$\{([A-Z_][A-Z0-9_]*)\}/g))
      assert.ok(names.has(m[1] as string), `${m[1]} is set in the Deployment`);
  });

  test("Services, PodDisruptionBudget and NetworkPolicy select the edge pods", () => {
    const d = one("Deployment");
    const labels = d.spec.template.metadata.labels as Record<string, string>;
    assert.ok(selects(d.spec.selector.matchLabels, labels));
    const portNames = new Set(
      (d.spec.template.spec.containers[0].ports as { name: string }[]).map((p) => p.name),
    );
    for (const { doc } of loadAll().filter((m) => m.doc.kind === "Service")) {
      assert.ok(selects(doc.spec.selector, labels), doc.metadata.name);
      for (const p of doc.spec.ports)
        assert.ok(portNames.has(p.targetPort), `${doc.metadata.name} -> ${p.targetPort}`);
      assert.equal(doc.spec.type, "ClusterIP", "nothing is exposed but through the Ingress");
    }
    const pdb = one("PodDisruptionBudget");
    assert.ok(selects(pdb.spec.selector.matchLabels, labels));
    assert.ok(pdb.spec.minAvailable >= 1 && pdb.spec.minAvailable < d.spec.replicas, "drains can proceed");

    const np = one("NetworkPolicy");
    assert.ok(selects(np.spec.podSelector.matchLabels, labels));
    assert.deepEqual(np.spec.policyTypes, ["Ingress", "Egress"]);
    for (const rule of np.spec.ingress) for (const p of rule.ports) assert.ok(portNames.has(p.port));
    // The cloud metadata address is never an egress destination.
    const blocks = (np.spec.egress as any[]).flatMap((r) => (r.to ?? []).filter((t: any) => t.ipBlock));
    for (const b of blocks) assert.ok(b.ipBlock.except?.includes("169.254.169.254/32"));

    const ing = one("Ingress");
    assert.equal(
      ing.spec.rules[0].http.paths[0].backend.service.name,
      one("Service", "mcp-edge").metadata.name,
    );
    assert.ok(ing.spec.tls?.length > 0, "TLS at the Ingress");
    assert.equal(ing.metadata.annotations["nginx.ingress.kubernetes.io/proxy-buffering"], "off");
  });

  test("kustomization.yaml lists every manifest but the example Secret", () => {
    const k = parseYaml(readFileSync(path.join(DIR, "kustomization.yaml"), "utf8")) as {
      apiVersion: string;
      kind: string;
      namespace: string;
      resources: string[];
    };
    assert.equal(k.apiVersion, "kustomize.config.k8s.io/v1beta1");
    assert.equal(k.kind, "Kustomization");
    assert.equal(k.namespace, one("Namespace").metadata.name);
    const files = readdirSync(DIR)
      .filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml" && f !== "secret.example.yaml")
      .sort();
    assert.deepEqual([...k.resources].sort(), files);
  });
});

/** Values for the config's ${NAME}s, shaped as the Secret's are. */
function placeholderEnv(): NodeJS.ProcessEnv {
  return {
    MCP_EDGE_PUBLIC_URL: "https://mcp.example.com",
    MCP_EDGE_ADMIN_TOKEN: "x".repeat(64),
    REDIS_URL: "redis://:p@valkey:6379",
    DATABASE_URL: "postgres://mcp_edge:p@postgres:5432/mcp_edge",
    MCP_UPSTREAM_URL: "http://upstream:3000/mcp",
  };
}
