// The architecture as a machine check (docs/ARCHITECTURE.md): imports point downward
// only, there are no import cycles, and FFI (koffi) is used only in native-shims/.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';

const root = path.resolve(import.meta.dirname, '../..');

/** Lower rank = lower layer. A module may import only from ranks ≤ its own. */
const RANKS: [prefix: string, rank: number][] = [
  ['native-shims/', 0],
  ['src/errors.ts', 0],
  ['src/util/', 0],
  ['src/config/', 1],
  ['src/record/', 2],
  ['src/state/', 3],
  ['src/identity/', 3],
  ['src/authorize/', 3],
  ['src/route/', 4],
  ['src/capture/', 4],
  ['src/copy/', 4],
  ['src/redirect/', 4],
  ['src/admin/', 4],
  ['src/tunnel/', 5],
  ['src/proxy/', 6],
  ['src/app.ts', 7],
  ['src/demo/', 8],
  ['src/main.ts', 9],
];

function rankOf(file: string): number {
  const hit = RANKS.find(([prefix]) => file === prefix || file.startsWith(prefix));
  if (!hit) throw new Error(`${file} is in no layer: add it to RANKS and docs/ARCHITECTURE.md`);
  return hit[1];
}

function listTs(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) out.push(...listTs(rel));
    else if (e.name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

const files = [...listTs('src'), ...listTs('native-shims')];
const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

function importsOf(file: string): { local: string[]; packages: string[] } {
  const text = fs.readFileSync(path.join(root, file), 'utf8');
  const local: string[] = [];
  const packages: string[] = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = (m[1] ?? m[2]) as string;
    if (spec.startsWith('.')) {
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)).replace(/\.js$/, '.ts');
      local.push(target);
    } else packages.push(spec);
  }
  return { local, packages };
}

const graph = new Map(files.map((f) => [f, importsOf(f)]));

t.test('every import points to the same or a lower layer', async (t) => {
  const upward: string[] = [];
  for (const [file, { local }] of graph) {
    for (const target of local) {
      if (!graph.has(target)) continue;
      if (rankOf(target) > rankOf(file)) upward.push(`${file} → ${target}`);
    }
  }
  t.same(upward, [], 'no upward imports');
});

t.test('no import cycles', async (t) => {
  const cycles: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string): void => {
    state.set(f, 'visiting');
    stack.push(f);
    for (const dep of graph.get(f)?.local ?? []) {
      if (!graph.has(dep)) continue;
      if (state.get(dep) === 'visiting') cycles.push([...stack.slice(stack.indexOf(dep)), dep].join(' → '));
      else if (!state.has(dep)) visit(dep);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of files) if (!state.has(f)) visit(f);
  t.same(cycles, []);
});

t.test('FFI only in native-shims/', async (t) => {
  const offenders = [...graph].filter(([f, { packages }]) => !f.startsWith('native-shims/') && packages.includes('koffi')).map(([f]) => f);
  t.same(offenders, []);
  t.ok([...graph].some(([f, { packages }]) => f.startsWith('native-shims/') && packages.includes('koffi')), 'the check sees koffi where it is used');
});
