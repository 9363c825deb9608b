// Fuzz: the local config loader (parseLocalConfig / loadLocalConfigFile). Any text in, either a
// frozen LocalConfig or a ZtError ZT_ERR_CONFIG_INVALID whose message starts with the source
// and names a line or key path; never another exception, never a slow input. Includes
// generated alias bombs ("billion laughs") and deep nesting. Seeds: see test/helpers/fuzz.ts.
import t from 'tap';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { stringify } from 'yaml';
import { ZtError } from '../../src/errors.js';
import { loadLocalConfigFile, parseLocalConfig } from '../../src/config/local-config.js';
import { fuzz } from '../helpers/fuzz.js';

const SOURCE = 'fuzz.yaml';

/** Parses; returns the error (or undefined); throws on anything but a clean config error. */
function cleanly(text: string, source = SOURCE): ZtError | undefined {
  try {
    const c = parseLocalConfig(text, source);
    if (!Object.isFrozen(c) || !Array.isArray(c.workloads)) throw new Error('result is not a frozen LocalConfig');
    return undefined;
  } catch (err) {
    if (!(err instanceof ZtError)) throw new Error(`unexpected ${(err as Error)?.constructor?.name}: ${String((err as Error)?.message ?? err)}`);
    if (err.code !== 'ZT_ERR_CONFIG_INVALID') throw new Error(`unexpected code ${err.code}`);
    if (!err.message.startsWith(`${source}: `)) throw new Error(`message does not name the source: ${err.message}`);
    // Past the source, it names a line, or a key path followed by the problem.
    const rest = err.message.slice(source.length + 2);
    if (!/line \d+/.test(rest) && !/^[A-Za-z_[][^:]*: /.test(rest)) throw new Error(`message names neither a line nor a key: ${err.message}`);
    return err;
  }
}

// ---- generators

const ipish = fc.oneof(
  fc.ipV4(),
  fc.ipV6(),
  fc.ipV4Extended(),
  fc.constantFrom('10.0.0.1/8', '::ffff:1.2.3.4', '01.2.3.4', '1.2.3', 'fd00::1%eth0', '[::1]', '', 'net/10.0.0.1', '/10.96.0.1'),
);
const scalar = fc.oneof(
  fc.string({ maxLength: 12 }),
  ipish,
  fc.integer({ min: -2, max: 70000 }),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom('HBONE', 'TCP', 'Healthy', 'Allow', 'Deny', 'Global', 'Namespace', 'spiffe://td/ns/a/sa/b', 'ns/host', 'a/b/c'),
);
const KEYS = [
  'workloads', 'services', 'policies', 'uid', 'name', 'namespace', 'workloadIps', 'protocol', 'node', 'waypoint', 'destination',
  'hboneMtlsPort', 'services', 'ns/svc.example', '9080', 'hostname', 'vips', 'ports', 'endpoints', 'workloadUid', 'port', 'status',
  'scope', 'action', 'rules', 'Exact', 'Prefix', 'Presence', 'sourceIps', 'destinationPorts', 'capacity', 'locality', 'region',
  'cidrVips', 'cidr', 'subjectAltNames', 'loadBalancer', 'mode', 'applicationTunnel', 'unknownKey', 'serviceAccounts',
];
const { tree } = fc.letrec((tie) => ({
  tree: fc.oneof({ depthSize: 'small', withCrossShrink: true }, scalar, tie('list'), tie('map')),
  list: fc.array(tie('tree'), { maxLength: 4 }),
  map: fc.dictionary(fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 6 })), tie('tree'), { maxKeys: 5 }),
}));

/** A plausible config: the top-level keys the loader knows, with generated insides. */
const configTree = fc.record(
  { workloads: fc.array(fc.dictionary(fc.constantFrom(...KEYS), tree, { maxKeys: 6 }), { maxLength: 3 }), services: fc.array(tree, { maxLength: 2 }), policies: fc.array(tree, { maxLength: 2 }) },
  { requiredKeys: [] },
);

/** YAML text with anchors, aliases, tags and flow/block style mixed in by editing emitted text. */
const yamlText = fc.tuple(configTree, fc.array(fc.tuple(fc.nat(), fc.constantFrom('&a ', '*a', '!Exact ', '!!binary ', '!!str ', '? ', '- ', '{', '}', '[', ']', ':', '\t', '\n', '#', "'", '"', '%YAML 1.2\n---\n', '---\n', '<<: ')), { maxLength: 4 })).map(([obj, edits]) => {
  let text = stringify(obj);
  for (const [at, piece] of edits) {
    const i = text.length === 0 ? 0 : at % (text.length + 1);
    text = text.slice(0, i) + piece + text.slice(i);
  }
  return text;
});

t.test('generated configs: a result or a clean error naming file and key', async (t) => {
  fuzz(t, 'structured', configTree.map((o) => stringify(o)), (text) => void cleanly(text), { runs: 700 });
  fuzz(t, 'edited text (anchors, aliases, tags, stray syntax)', yamlText, (text) => void cleanly(text), { runs: 700 });
  fuzz(t, 'arbitrary text', fc.string({ unit: 'grapheme-ascii', maxLength: 200 }), (text) => void cleanly(text), { runs: 700 });
  fuzz(t, 'arbitrary unicode', fc.string({ unit: 'binary', maxLength: 100 }), (text) => void cleanly(text), { runs: 400 });
});

// ---- alias bombs and deep nesting

/** `levels` anchors, each a seq or map holding `width` aliases of the previous one. */
const bomb = fc.record({
  width: fc.integer({ min: 2, max: 12 }),
  levels: fc.integer({ min: 1, max: 12 }),
  maps: fc.boolean(),
  under: fc.constantFrom('', 'workloads', 'services', 'policies', 'x'),
});

function bombText(b: { width: number; levels: number; maps: boolean; under: string }): { text: string; expands: number } {
  const lines = [b.under === '' ? 'a0: &a0 "lol"' : `${b.under}:\n - &a0 "lol"`];
  let expands = 1;
  for (let i = 1; i <= b.levels; i++) {
    const items = Array.from({ length: b.width }, (_, j) => (b.maps ? `k${j}: *a${i - 1}` : `*a${i - 1}`)).join(', ');
    const body = b.maps ? `{${items}}` : `[${items}]`;
    lines.push(b.under === '' ? `a${i}: &a${i} ${body}` : ` - &a${i} ${body}`);
    expands = expands * b.width + 1;
  }
  return { text: `${lines.join('\n')}\n`, expands };
}

t.test('alias bombs: bounded time, a clear error once the expansion is large', async (t) => {
  fuzz(
    t,
    'billion laughs',
    bomb,
    (b) => {
      const { text, expands } = bombText(b);
      const err = cleanly(text);
      if (expands > 200_000 && !(err && /aliases expand to more than \d+ nodes/.test(err.message))) {
        throw new Error(`a bomb of ${expands} nodes was not refused as one: ${err?.message}`);
      }
    },
    { runs: 60, perInputMs: 3000 },
  );
  // Regression (found by this fuzzer, seed 686155299, input {width: 3, levels: 10}): yaml's
  // Alias.resolve() searches the whole document on every call, and the walk resolved the same
  // alias node again each time it was reached: 4.8 s for this 600-byte file. Now once per node.
  const slow = bombText({ width: 3, levels: 10, maps: false, under: '' }).text;
  const t0 = performance.now();
  cleanly(slow);
  t.ok(performance.now() - t0 < 2500, `a 3×10 bomb is refused in ${(performance.now() - t0).toFixed(0)} ms`);
  // The classic shape, named: nine levels of ten.
  const err = cleanly(bombText({ width: 10, levels: 9, maps: false, under: '' }).text);
  t.match(err?.message, /^fuzz\.yaml: aliases expand to more than 100000 nodes \(an alias bomb\?\) \(line \d+\)$/);
});

t.test('deep nesting: a clean error, not a stack overflow', async (t) => {
  const nest = fc.record({ depth: fc.integer({ min: 1, max: 3000 }), style: fc.constantFrom('seq', 'map', 'block', 'policy') });
  const text = ({ depth, style }: { depth: number; style: string }): string => {
    if (style === 'seq') return `workloads: ${'['.repeat(depth)}${']'.repeat(depth)}`;
    if (style === 'map') return `workloads: ${'{a: '.repeat(depth)}1${'}'.repeat(depth)}`;
    if (style === 'policy') return `policies: [{name: a, namespace: b, scope: Global, action: Allow, rules: ${'['.repeat(depth)}${']'.repeat(depth)}}]`;
    return Array.from({ length: Math.min(depth, 2000) }, (_, i) => `${' '.repeat(i)}k${i}:`).join('\n');
  };
  fuzz(
    t,
    'nesting',
    nest,
    (n) => {
      const err = cleanly(text(n));
      if (n.depth > 110 && n.style !== 'block' && !(err && /nesting is (deeper than|too deep)/.test(err.message))) {
        throw new Error(`depth ${n.depth} not refused as too deep: ${err?.message}`);
      }
    },
    { runs: 30, perInputMs: 3000 },
  );
  // Regression (found by a direct probe while writing this fuzzer; the window is narrow and
  // depends on the stack in use, so random depths rarely hit it): at about 1500 levels of a
  // policy's rules yaml still parsed, the walk then overflowed the stack, and a RangeError
  // escaped the loader. The walk now stops at 100 levels, far from either stack limit.
  for (const depth of [101, 150, 900]) {
    t.match(cleanly(text({ depth, style: 'policy' }))?.message, /^fuzz\.yaml: nesting is deeper than 100 levels \(line 1\)$/, `depth ${depth}`);
  }
  t.notOk(cleanly(text({ depth: 90, style: 'map' }))?.message.includes('nesting'), '90 levels are still read');
  // Deeper still, yaml itself overflows and says only "Maximum call stack size exceeded".
  t.match(cleanly(text({ depth: 3000, style: 'seq' }))?.message, /^fuzz\.yaml: invalid YAML at line 1, column \d+: nesting is too deep/);
});

t.test('loadLocalConfigFile: generated files, and paths that are not files', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), `zt-fuzz-${process.pid}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'local.yaml');
  fuzz(
    t,
    'files',
    fc.oneof(yamlText, fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('latin1'))),
    (text) => {
      writeFileSync(file, text, 'latin1');
      try {
        loadLocalConfigFile(file);
      } catch (err) {
        if (!(err instanceof ZtError) || !err.message.startsWith(`${file}: `)) throw err;
      }
    },
    { runs: 200 },
  );
  for (const path of [join(dir, 'missing.yaml'), dir]) {
    t.throws(() => loadLocalConfigFile(path), { name: 'ZtError', code: 'ZT_ERR_CONFIG_INVALID', message: new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: cannot read the local config file`) });
  }
});
