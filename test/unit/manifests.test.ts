// deploy/: every Kubernetes manifest is checked offline against Kubernetes' own API schemas,
// as shipped by the `kubernetes-models` package (generated from the Kubernetes OpenAPI spec):
// - its validators (`new Kind(obj).validate()`): types, required fields, enums, formats;
// - its TypeScript interfaces, walked with the TypeScript checker, for field names: the
//   OpenAPI schemas do not forbid unknown keys (the API server rejects them only with strict
//   field validation), so a typo'd field would otherwise pass. Every key of a manifest must
//   be a property of its type (or fall under a map's string index).
// Negative cases with in-memory manifests show each check fails on what it must catch. The
// ConfigMap's config.yaml must also pass ztunnel-ts' own local-config loader, and the pods
// must carry what the issue asks for (probe, capabilities, token, env).
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import { parseLocalConfig } from '../../src/config/local-config.js';

const root = path.resolve(import.meta.dirname, '../..');
const deployDir = path.join(root, 'deploy');

interface Manifest {
  file: string;
  obj: Record<string, unknown>;
}

function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...yamlFiles(p));
    else if (/\.ya?ml$/.test(e.name)) out.push(p);
  }
  return out.sort();
}

function loadManifests(): Manifest[] {
  const out: Manifest[] = [];
  for (const file of yamlFiles(deployDir)) {
    for (const doc of parseAllDocuments(fs.readFileSync(file, 'utf8'))) {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
      const obj = doc.toJS() as Record<string, unknown> | null;
      if (obj !== null) out.push({ file: path.relative(root, file), obj });
    }
  }
  return out;
}

/** `kubernetes-models/apps/v1/DaemonSet`, `kubernetes-models/v1/Namespace`. */
function modulePath(obj: Record<string, unknown>): string {
  const apiVersion = String(obj.apiVersion);
  const kind = String(obj.kind);
  if (!/^[a-z0-9.]*\/?v[0-9a-z]+$/.test(apiVersion) || !/^[A-Z][A-Za-z]+$/.test(kind)) throw new Error(`bad apiVersion/kind ${apiVersion} ${kind}`);
  return `kubernetes-models/${apiVersion}/${kind}`;
}

type ModelClass = new (data: unknown) => { validate(): void };

/** The package's schema validators: types, required fields, enums. */
async function schemaErrors(obj: Record<string, unknown>): Promise<string | undefined> {
  const mod = (await import(modulePath(obj))) as Record<string, ModelClass>;
  const Cls = mod[String(obj.kind)];
  if (Cls === undefined) return `no model for ${String(obj.kind)}`;
  try {
    new Cls(obj).validate();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

// ---- field names: the package's interfaces, through the TypeScript checker -------------

const virtualFile = path.join(root, 'test/unit/__manifest_types__.ts');

function makeChecker(kinds: { module: string; kind: string }[]): { checker: ts.TypeChecker; typeOf: Map<string, ts.Type> } {
  const src = kinds.map((k, i) => `import type { I${k.kind} as T${i} } from '${k.module}';\nexport type K${i} = T${i};\n`).join('');
  const options: ts.CompilerOptions = { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, strict: true, skipLibCheck: true, noEmit: true, types: [] };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) => (path.resolve(name) === virtualFile ? ts.createSourceFile(name, src, lang) : getSourceFile(name, lang, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => path.resolve(name) === virtualFile || fileExists(name);
  const program = ts.createProgram([virtualFile], options, host);
  const diags = ts.getPreEmitDiagnostics(program).filter((d) => d.file && path.resolve(d.file.fileName) === virtualFile);
  if (diags.length > 0) throw new Error(ts.formatDiagnostics(diags, host));
  const checker = program.getTypeChecker();
  const sf = program.getSourceFile(virtualFile);
  if (sf === undefined) throw new Error('virtual source file missing');
  const typeOf = new Map<string, ts.Type>();
  const moduleSymbol = checker.getSymbolAtLocation(sf);
  if (moduleSymbol === undefined) throw new Error('no module symbol');
  for (const sym of checker.getExportsOfModule(moduleSymbol)) {
    const i = Number(sym.name.slice(1));
    const k = kinds[i];
    if (k !== undefined) typeOf.set(k.module, checker.getDeclaredTypeOfSymbol(sym));
  }
  return { checker, typeOf };
}

function nonNullish(checker: ts.TypeChecker, type: ts.Type): ts.Type[] {
  const parts = type.isUnion() ? type.types : [type];
  return parts.filter((p) => !(p.flags & (ts.TypeFlags.Undefined | ts.TypeFlags.Null)));
}

/** Every key of `value` must be a property of `type` (or be under a string index). */
function unknownFields(checker: ts.TypeChecker, value: unknown, type: ts.Type, at: string, out: string[]): void {
  if (value === null || typeof value !== 'object') return;
  const candidates = nonNullish(checker, type);
  if (candidates.some((c) => c.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown))) return;
  if (Array.isArray(value)) {
    const arr = candidates.map((c) => checker.getIndexTypeOfType(c, ts.IndexKind.Number)).find((x) => x !== undefined);
    if (arr === undefined) return; // a type error; the schema validator reports it
    value.forEach((v, i) => unknownFields(checker, v, arr, `${at}[${i}]`, out));
    return;
  }
  const objTypes = candidates.filter((c) => c.flags & ts.TypeFlags.Object);
  if (objTypes.length === 0) return;
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    let next: ts.Type | undefined;
    for (const c of objTypes) {
      const prop = checker.getPropertyOfType(c, key);
      next = prop !== undefined ? checker.getTypeOfSymbol(prop) : checker.getIndexTypeOfType(c, ts.IndexKind.String);
      if (next !== undefined) break;
    }
    if (next === undefined) out.push(`${at}.${key}: unknown field`);
    else unknownFields(checker, v, next, `${at}.${key}`, out);
  }
}

const manifests = loadManifests();

// An in-memory DaemonSet built from the real one, broken in one place each.
const realDs = manifests.find((m) => m.obj.kind === 'DaemonSet' && m.file === 'deploy/istiod/ztunnel.yaml');
const clone = (): Record<string, unknown> => structuredClone(realDs?.obj ?? {});
type Any = any;
const broken: { name: string; obj: Record<string, unknown>; expect: RegExp }[] = [
  {
    name: 'a typo\'d field name (readinesProbe)',
    obj: ((o: Any) => {
      const c = o.spec.template.spec.containers[0];
      c.readinesProbe = c.readinessProbe;
      delete c.readinessProbe;
      return o;
    })(clone()),
    expect: /containers\[0\]\.readinesProbe: unknown field/,
  },
  {
    name: 'a typo\'d field deep inside (serviceAccountToken.audiance)',
    obj: ((o: Any) => {
      o.spec.template.spec.volumes[0].projected.sources[0].serviceAccountToken.audiance = 'istio-ca';
      return o;
    })(clone()),
    expect: /serviceAccountToken\.audiance: unknown field/,
  },
  {
    name: 'a wrong type (containerPort as a string)',
    obj: ((o: Any) => {
      o.spec.template.spec.containers[0].ports[0].containerPort = 'fifteen-thousand';
      return o;
    })(clone()),
    expect: /containerPort must be integer/,
  },
  {
    name: 'a missing required field (a container without name)',
    obj: ((o: Any) => {
      delete o.spec.template.spec.containers[0].name;
      return o;
    })(clone()),
    expect: /containers\/0 must have required property '?name'?/,
  },
];

const kinds = [...new Map([...manifests, ...broken.map((b) => ({ file: b.name, obj: b.obj }))].map((m) => [modulePath(m.obj), String(m.obj.kind)])).entries()].map(
  ([module, kind]) => ({ module, kind }),
);
const { checker, typeOf } = makeChecker(kinds);

async function allErrors(obj: Record<string, unknown>): Promise<string[]> {
  const errors: string[] = [];
  const s = await schemaErrors(obj);
  if (s !== undefined) errors.push(s);
  const type = typeOf.get(modulePath(obj));
  if (type === undefined) errors.push(`no type for ${modulePath(obj)}`);
  else unknownFields(checker, obj, type, String(obj.kind), errors);
  return errors;
}

t.test('every manifest under deploy/ passes the Kubernetes schemas, field names included', async (t) => {
  t.ok(manifests.length >= 7, `found ${manifests.length} manifests`);
  for (const m of manifests) {
    const errors = await allErrors(m.obj);
    t.same(errors, [], `${m.file}: ${String(m.obj.kind)} ${String((m.obj.metadata as { name?: string } | undefined)?.name)}`);
  }
});

t.test('the checks fail on broken manifests', async (t) => {
  t.ok(realDs, 'deploy/istiod has the ztunnel DaemonSet');
  for (const b of broken) {
    const errors = await allErrors(b.obj);
    t.match(errors.join('\n'), b.expect, b.name);
  }
  // A typo'd field on its own passes the package's validator: the field-name walk is what catches it.
  t.equal(await schemaErrors(broken[0]?.obj ?? {}), undefined, 'validate() alone accepts an unknown field');
});

// ---- what the pods must carry --------------------------------------------------------------

function daemonSet(file: string): Any {
  const m = manifests.find((x) => x.file === file && x.obj.kind === 'DaemonSet');
  if (m === undefined) throw new Error(`no DaemonSet in ${file}`);
  return m.obj;
}

t.test('the ztunnel DaemonSets carry what the proxy needs', async (t) => {
  for (const file of ['deploy/istiod/ztunnel.yaml', 'deploy/local-file/ztunnel.yaml']) {
    const ds = daemonSet(file);
    const pod = ds.spec.template.spec;
    const c = pod.containers[0];
    t.equal(ds.metadata.namespace, 'istio-system', `${file}: namespace`);
    t.equal(pod.hostNetwork, false, `${file}: in the pod network`);
    t.equal(pod.serviceAccountName, 'ztunnel');
    t.ok(pod.terminationGracePeriodSeconds > 0, 'terminationGracePeriodSeconds');
    t.same(c.readinessProbe.httpGet, { path: '/healthz/ready', port: 15021 }, `${file}: readiness probe`);
    t.same([...c.securityContext.capabilities.add].sort(), ['NET_ADMIN', 'NET_RAW'], `${file}: only NET_ADMIN and NET_RAW`);
    t.same(c.securityContext.capabilities.drop, ['ALL']);
    t.notOk(c.securityContext.privileged, 'not privileged');
    t.ok(c.resources.requests.cpu && c.resources.requests.memory, 'resource requests');
    const fieldOf = (name: string): string | undefined => c.env.find((e: Any) => e.name === name)?.valueFrom?.fieldRef?.fieldPath;
    t.equal(fieldOf('NODE_NAME'), 'spec.nodeName');
    t.equal(fieldOf('POD_NAME'), 'metadata.name');
    t.equal(fieldOf('POD_NAMESPACE'), 'metadata.namespace');
    t.equal(fieldOf('INSTANCE_IP'), 'status.podIP');
    t.equal(pod.initContainers[0].args.slice(0, 2).join(' '), 'redirect ztunnel', 'capture rules applied at start');
  }
  const ds = daemonSet('deploy/istiod/ztunnel.yaml');
  const pod = ds.spec.template.spec;
  const c = pod.containers[0];
  t.equal(c.env.find((e: Any) => e.name === 'XDS_ADDRESS')?.value, 'istiod.istio-system.svc:15012');
  const token = pod.volumes.find((v: Any) => v.projected)?.projected.sources[0].serviceAccountToken;
  t.same({ path: token.path, audience: token.audience }, { path: 'istio-token', audience: 'istio-ca' });
  const mountOf = (vol: string): string | undefined => c.volumeMounts.find((m: Any) => m.name === vol)?.mountPath;
  t.equal(mountOf(pod.volumes.find((v: Any) => v.projected).name), '/var/run/secrets/tokens');
  const rootCert = pod.volumes.find((v: Any) => v.configMap?.name === 'istio-ca-root-cert');
  t.ok(rootCert, 'istio-ca-root-cert ConfigMap');
  t.equal(mountOf(rootCert.name), '/var/run/secrets/istio');
});

t.test('the node agents run on the host network with NET_ADMIN only; the istiod one reads xDS', async (t) => {
  for (const file of ['deploy/local-file/node-agent.yaml', 'deploy/istiod/node-agent.yaml']) {
    const pod = daemonSet(file).spec.template.spec;
    t.equal(pod.hostNetwork, true, file);
    t.same(pod.containers[0].securityContext.capabilities.add, ['NET_ADMIN'], file);
    t.equal(pod.containers[0].args[0], 'node-agent', file);
  }
  const pod = daemonSet('deploy/istiod/node-agent.yaml').spec.template.spec;
  const c = pod.containers[0];
  t.ok(c.args.includes('--xds'), 'node-agent --xds');
  t.equal(c.env.find((e: Any) => e.name === 'XDS_ADDRESS')?.value, 'istiod.istio-system.svc:15012');
  const token = pod.volumes.find((v: Any) => v.projected)?.projected.sources[0].serviceAccountToken;
  t.same({ path: token?.path, audience: token?.audience }, { path: 'istio-token', audience: 'istio-ca' });
  t.ok(pod.volumes.some((v: Any) => v.configMap?.name === 'istio-ca-root-cert'), 'the root cert ConfigMap');
  t.ok(parseArgsLike(c.args), 'its arguments parse as the CLI expects');
});

/** `node-agent --xds --node $(NODE_NAME)`: the options the xDS node agent accepts. */
function parseArgsLike(args: string[]): boolean {
  const known = new Set(['node-agent', '--xds', '--node', '$(NODE_NAME)', '--pod-gateway-ip', '--netns']);
  return args.every((a) => known.has(a));
}

t.test("the local-file ConfigMap's config.yaml passes ztunnel-ts' own loader", async (t) => {
  const cm = manifests.find((m) => m.obj.kind === 'ConfigMap' && (m.obj.metadata as Any).name === 'ztunnel-local-config');
  t.ok(cm, 'ConfigMap ztunnel-local-config');
  const text = (cm?.obj.data as Record<string, string> | undefined)?.['config.yaml'] ?? '';
  const cfg = parseLocalConfig(text, 'config.yaml');
  t.ok(cfg.workloads.length > 0, 'has workloads');
  const ds = daemonSet('deploy/local-file/ztunnel.yaml');
  t.equal(ds.spec.template.spec.containers[0].env.find((e: Any) => e.name === 'LOCAL_XDS_PATH')?.value, '/etc/ztunnel/config.yaml');
});
