// The architecture as a machine check: docs/ARCHITECTURE.md's folder table ("may import")
// is read and enforced over src/, native-shims/, bench/ and test/ — every local import must
// be allowed by its folder's row (`(types)` rows only by `import type`), every file must
// belong to a row, the rows themselves form no cycle, there are no import cycles between
// files, and FFI (koffi) is used only in native-shims/.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';

const root = path.resolve(import.meta.dirname, '../..');

interface Row {
  /** `src/util/`, `src/app.ts`, `bench/` … */
  prefix: string;
  /** util, app, bench, test/helpers … (the prefix without src/, a trailing / or .ts) */
  unit: string;
  allowed: Map<string, 'any' | 'types'>;
  /** `src/*`: anything under src/ and native-shims/. */
  anySrc: boolean;
}

function unitOfPrefix(prefix: string): string {
  return prefix.replace(/^src\//, '').replace(/\/$/, '').replace(/\.ts$/, '');
}

function readTable(): Row[] {
  const doc = fs.readFileSync(path.join(root, 'docs/ARCHITECTURE.md'), 'utf8');
  const rows: Row[] = [];
  for (const line of doc.split('\n')) {
    const m = /^\| `([^`]+)` \|.*\| ([^|]+) \|$/.exec(line);
    if (!m) continue;
    const prefix = m[1] as string;
    const allowed = new Map<string, 'any' | 'types'>();
    let anySrc = false;
    const cell = (m[2] as string).trim();
    if (cell !== '–') {
      for (const raw of cell.split(',')) {
        const tok = raw.trim();
        if (tok === 'src/*') anySrc = true;
        else if (tok.endsWith(' (types)')) allowed.set(tok.slice(0, -' (types)'.length), 'types');
        else allowed.set(tok, 'any');
      }
    }
    rows.push({ prefix, unit: unitOfPrefix(prefix), allowed, anySrc });
  }
  return rows;
}

const rows = readTable();

function rowOf(file: string): Row | undefined {
  return rows.find((r) => file === r.prefix || (r.prefix.endsWith('/') && file.startsWith(r.prefix)));
}

function listTs(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) {
      if (e.name !== 'fixtures') out.push(...listTs(rel));
    } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(rel);
  }
  return out;
}

const files = ['src', 'native-shims', 'bench', 'test'].flatMap((d) => listTs(d));
const IMPORT = /(?:^|\n)\s*(import|export)\s+(type\s+)?[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

interface Imports {
  local: { target: string; typeOnly: boolean }[];
  packages: string[];
}

function importsOf(file: string): Imports {
  const text = fs.readFileSync(path.join(root, file), 'utf8');
  const local: Imports['local'] = [];
  const packages: string[] = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = (m[3] ?? m[4]) as string;
    if (spec.startsWith('.')) {
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)).replace(/\.(m?)js$/, '.$1ts');
      local.push({ target, typeOnly: m[2] !== undefined });
    } else packages.push(spec);
  }
  return { local, packages };
}

const graph = new Map(files.map((f) => [f, importsOf(f)]));

t.test('the table is read', async (t) => {
  t.ok(rows.length >= 20, `${rows.length} rows`);
  t.ok(rowOf('src/util/ip.ts'), 'src/util/ has a row');
  t.equal(rowOf('src/proxy/deliver.ts')?.allowed.get('record'), 'types');
});

t.test('every file belongs to a row of the table', async (t) => {
  const orphans = files.filter((f) => !rowOf(f));
  t.same(orphans, [], 'add a row to docs/ARCHITECTURE.md for these');
});

t.test('every import is allowed by the table', async (t) => {
  const bad: string[] = [];
  for (const [file, { local }] of graph) {
    const from = rowOf(file);
    if (!from) continue;
    for (const { target, typeOnly } of local) {
      const to = rowOf(target);
      if (!to || to === from) continue;
      const isSrc = to.prefix.startsWith('src/') || to.prefix === 'native-shims/';
      if (from.anySrc && isSrc) continue;
      const allowed = from.allowed.get(to.unit);
      if (allowed === 'any' || (allowed === 'types' && typeOnly)) continue;
      bad.push(`${file} → ${target}${allowed === 'types' ? ' (only `import type` is allowed)' : ''}`);
    }
  }
  t.same(bad, [], 'imports the table does not allow');
});

t.test('the product never imports lab code', async (t) => {
  const bad: string[] = [];
  for (const [file, { local }] of graph) {
    if (!file.startsWith('src/') && !file.startsWith('native-shims/')) continue;
    for (const { target } of local) if (target.startsWith('bench/') || target.startsWith('test/')) bad.push(`${file} → ${target}`);
  }
  t.same(bad, []);
});

t.test('the table itself points one way (no cycle between rows)', async (t) => {
  const byUnit = new Map(rows.map((r) => [r.unit, r]));
  const cycles: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (u: string, stack: string[]): void => {
    state.set(u, 'visiting');
    for (const dep of byUnit.get(u)?.allowed.keys() ?? []) {
      if (state.get(dep) === 'visiting') cycles.push([...stack, u, dep].join(' → '));
      else if (!state.has(dep)) visit(dep, [...stack, u]);
    }
    state.set(u, 'done');
  };
  for (const r of rows) if (!state.has(r.unit)) visit(r.unit, []);
  t.same(cycles, []);
  const unknown = rows.flatMap((r) => [...r.allowed.keys()].filter((u) => !byUnit.has(u)).map((u) => `${r.prefix}: ${u}`));
  t.same(unknown, [], 'every name in "may import" is a row');
});

t.test('no import cycles between files', async (t) => {
  const cycles: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string): void => {
    state.set(f, 'visiting');
    stack.push(f);
    for (const { target: dep } of graph.get(f)?.local ?? []) {
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
