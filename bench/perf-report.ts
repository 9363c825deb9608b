// The perf bench's bookkeeping, pure: samples per (figure, row) over repetitions, median and
// spread, issue 10's goals (P1–P7) evaluated per repetition, the markdown tables and the SVG
// chart of the goal ratios. No I/O; `runSelfCheck()` asserts the arithmetic
// (`node dist/bench/perf.js --self-check`, no root needed).
// Must never: invent a value (a figure that was not measured stays NaN and prints '–').

import assert from 'node:assert/strict';

export type RowKey = 'direct' | 'mesh' | 'stunnel' | 'passthrough' | 'haproxy';

/** Samples of one figure (e.g. `iperf1.fwd`) for one row, one entry per repetition (NaN when that repetition failed). */
export class SampleStore {
  private readonly data = new Map<string, number[]>();

  set(figure: string, row: string, rep: number, value: number): void {
    const k = `${figure}|${row}`;
    const a = this.data.get(k) ?? [];
    while (a.length <= rep) a.push(NaN);
    a[rep] = value;
    this.data.set(k, a);
  }

  get(figure: string, row: string): number[] {
    return this.data.get(`${figure}|${row}`) ?? [];
  }

  at(figure: string, row: string, rep: number): number {
    return this.get(figure, row)[rep] ?? NaN;
  }
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** Median (mean of the middle two for an even count) and min–max of the finite values. */
export function buildSpread(values: readonly number[]): Spread {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const mid = Math.floor(v.length / 2);
  const median = v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { median, min: v[0]!, max: v[v.length - 1]!, n: v.length };
}

export function formatNumber(n: number, digits = 2): string {
  if (!Number.isFinite(n)) return '–';
  return Math.abs(n) >= 1000 ? Math.round(n).toLocaleString('en-US') : n.toFixed(digits);
}

/** `median (min–max)`, or just the value for one sample. */
export function formatSpread(s: Spread, digits = 2): string {
  if (s.n === 0) return '–';
  if (s.n === 1 || s.min === s.max) return formatNumber(s.median, digits);
  return `${formatNumber(s.median, digits)} (${formatNumber(s.min, digits)}–${formatNumber(s.max, digits)})`;
}

export interface Goal {
  id: string;
  text: string;
  /** 'atLeast': measured ≥ target is met; 'atMost': measured ≤ target is met. */
  kind: 'atLeast' | 'atMost';
  target: number;
  unit: string;
  /** The measured quantity in one repetition (a ratio or an absolute). */
  value(s: SampleStore, rep: number): number;
}

const ratio = (fig: string, a: RowKey, b: RowKey) => (s: SampleStore, rep: number): number => s.at(fig, a, rep) / s.at(fig, b, rep);

/** Issue 10's goals P1–P7, each read from the samples of one repetition. */
export function buildGoals(): Goal[] {
  const g: Goal[] = [];
  for (const [dir, name] of [['fwd', 'client → server'], ['rev', 'server → client']] as const) {
    g.push({ id: `P1 ${dir}`, text: `HBONE 1 stream / stunnel pair, ${name}`, kind: 'atLeast', target: 1.0, unit: '×', value: ratio(`iperf1.${dir}`, 'mesh', 'stunnel') });
  }
  for (const [dir, name] of [['fwd', 'client → server'], ['rev', 'server → client']] as const) {
    g.push({ id: `P1b ${dir}`, text: `HBONE 8 streams / stunnel pair, ${name}`, kind: 'atLeast', target: 1.2, unit: '×', value: ratio(`iperf8.${dir}`, 'mesh', 'stunnel') });
  }
  for (const [dir, name] of [['fwd', 'client → server'], ['rev', 'server → client']] as const) {
    g.push({ id: `P2 ${dir}`, text: `passthrough 1 stream / haproxy splice, ${name}`, kind: 'atLeast', target: 1.0, unit: '×', value: ratio(`iperf1.${dir}`, 'passthrough', 'haproxy') });
  }
  g.push({ id: 'P3', text: 'saturated req/s, 100 connections, mesh / direct', kind: 'atLeast', target: 0.7, unit: '×', value: ratio('http.sat.rps', 'mesh', 'direct') });
  g.push({
    id: 'P4',
    text: 'added p99 at 1,000 req/s (mesh − direct)',
    kind: 'atMost',
    target: 0.5,
    unit: 'ms',
    value: (s, rep) => s.at('http.1k.p99', 'mesh', rep) - s.at('http.1k.p99', 'direct', rep),
  });
  for (const side of ['src', 'dst'] as const) {
    g.push({ id: `P5 ${side}`, text: `ztunnel CPU per 1,000 req/s, ${side === 'src' ? 'source' : 'destination'} side`, kind: 'atMost', target: 0.06, unit: 'vCPU', value: (s, rep) => s.at(`http.1k.cpu.${side}`, 'mesh', rep) });
  }
  for (const side of ['src', 'dst'] as const) {
    g.push({ id: `P6 ${side}`, text: `RSS per idle proxied connection, ${side === 'src' ? 'source' : 'destination'} ztunnel`, kind: 'atMost', target: 12, unit: 'KB', value: (s, rep) => s.at(`mem.kbPerConn.${side}`, 'mesh', rep) });
  }
  for (const side of ['src', 'dst'] as const) {
    g.push({ id: `P6 idle ${side}`, text: `idle RSS, ${side === 'src' ? 'source' : 'destination'} ztunnel`, kind: 'atMost', target: 60, unit: 'MB', value: (s, rep) => s.at(`mem.idleMb.${side}`, 'mesh', rep) });
  }
  g.push({ id: 'P7', text: 'new connections/s, mesh / direct', kind: 'atLeast', target: 0.6, unit: '×', value: ratio('conn.rate', 'mesh', 'direct') });
  return g;
}

export interface GoalResult {
  goal: Goal;
  measured: Spread;
  /** ≥ 1 means met: measured/target for 'atLeast', target/measured for 'atMost' (median). */
  score: number;
  met: boolean | undefined;
}

/** A goal's measured value in every repetition, summarised; score and verdict from the median. */
export function evaluateGoal(goal: Goal, s: SampleStore, reps: number): GoalResult {
  const per = Array.from({ length: reps }, (_, i) => goal.value(s, i));
  const measured = buildSpread(per);
  const m = measured.median;
  if (!Number.isFinite(m)) return { goal, measured, score: NaN, met: undefined };
  const met = goal.kind === 'atLeast' ? m >= goal.target : m <= goal.target;
  const score = goal.kind === 'atLeast' ? m / goal.target : m <= 0 ? Infinity : goal.target / m;
  return { goal, measured, score, met };
}

export function buildGoalTable(results: readonly GoalResult[]): string[] {
  const out = ['| goal | what | target | measured: median (min–max) | goal met |', '|---|---|---:|---:|---|'];
  for (const r of results) {
    const target = `${r.goal.kind === 'atLeast' ? '≥' : '≤'} ${r.goal.target} ${r.goal.unit}`;
    const verdict = r.met === undefined ? '– (not measured)' : r.met ? 'yes' : 'no';
    out.push(`| ${r.goal.id} | ${r.goal.text} | ${target} | ${formatSpread(r.measured, r.goal.unit === 'vCPU' ? 3 : 2)} ${r.goal.unit} | ${verdict} |`);
  }
  return out;
}

const escapeXml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/**
 * Horizontal bars, one per goal: length = score (≥ 1 = met, capped at 2), a line at 1,
 * green when met, red when not, grey when not measured; the measured median and target beside.
 */
export function buildGoalSvg(results: readonly GoalResult[], title: string): string {
  const rowH = 26;
  const left = 330;
  const barW = 300;
  const top = 48;
  const width = left + barW + 230;
  const height = top + results.length * rowH + 40;
  const x = (score: number): number => left + (Math.min(Math.max(score, 0), 2) / 2) * barW;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="10" y="36" fill="#555">bar = measured ÷ goal for "≥" goals, goal ÷ measured for "≤" goals (median of the repetitions); right of the line = goal met</text>`,
  ];
  results.forEach((r, i) => {
    const y = top + i * rowH;
    const fill = r.met === undefined ? '#bbb' : r.met ? '#3a9d5d' : '#d2473c';
    parts.push(`<text x="${left - 8}" y="${y + 16}" text-anchor="end">${escapeXml(`${r.goal.id}: ${r.goal.text}`.slice(0, 52))}</text>`);
    const w = Number.isFinite(r.score) ? x(r.score) - left : 0;
    parts.push(`<rect class="bar" x="${left}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${fill}"/>`);
    const sign = r.goal.kind === 'atLeast' ? '≥' : '≤';
    const digits = r.goal.unit === 'vCPU' ? 3 : 2;
    parts.push(`<text x="${left + barW + 8}" y="${y + 16}">${escapeXml(`${formatNumber(r.measured.median, digits)} ${r.goal.unit} (goal ${sign} ${r.goal.target})`)}</text>`);
  });
  const yEnd = top + results.length * rowH;
  parts.push(`<line x1="${x(1)}" y1="${top - 2}" x2="${x(1)}" y2="${yEnd + 2}" stroke="black" stroke-dasharray="4 3"/>`);
  for (const t of [0, 0.5, 1, 1.5, 2]) parts.push(`<text x="${x(t)}" y="${yEnd + 18}" text-anchor="middle" fill="#555">${t}${t === 2 ? '+' : ''}</text>`);
  parts.push('</svg>', '');
  return parts.join('\n');
}

// ---------- P6: memory per idle connection from a staircase of idle connections ----------

export interface LineFit {
  /** Least-squares slope (y per x). */
  slope: number;
  intercept: number;
  /** Coefficient of determination (1 = every point on the line; NaN when y is constant). */
  r2: number;
  n: number;
}

/** Ordinary least squares of y on x; NaN slope with fewer than 2 distinct x. */
export function buildLineFit(points: readonly { x: number; y: number }[]): LineFit {
  const p = points.filter((q) => Number.isFinite(q.x) && Number.isFinite(q.y));
  const n = p.length;
  const mx = p.reduce((a, q) => a + q.x, 0) / n;
  const my = p.reduce((a, q) => a + q.y, 0) / n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (const q of p) {
    sxx += (q.x - mx) ** 2;
    sxy += (q.x - mx) * (q.y - my);
    syy += (q.y - my) ** 2;
  }
  if (n < 2 || sxx === 0) return { slope: NaN, intercept: NaN, r2: NaN, n };
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx, r2: syy === 0 ? NaN : (sxy * sxy) / (sxx * syy), n };
}

/**
 * Index of the first sample that closes a settled window: the last `window` samples lie within
 * `tolerance` of each other (max − min). undefined when the series never settles.
 */
export function findSettled(samples: readonly number[], window: number, tolerance: number): number | undefined {
  for (let i = window - 1; i < samples.length; i++) {
    const w = samples.slice(i - window + 1, i + 1);
    if (Math.max(...w) - Math.min(...w) <= tolerance) return i;
  }
  return undefined;
}

// ---------- worker threads: 1 worker vs N workers ----------

/** The worker-thread figures measured per worker count (mesh row); ids are `workers.<id>`, rows `w<count>`. */
export const WORKER_FIGURES = [
  { id: 'iperf8.fwd', what: 'iperf3 8 streams (-P 8), client → server', unit: 'Gbit/s', digits: 2, ratio: true },
  { id: 'iperf8.rev', what: 'iperf3 8 streams (-P 8), server → client (-R)', unit: 'Gbit/s', digits: 2, ratio: true },
  { id: 'conn.rate', what: 'new connections/s (1-byte echo each)', unit: 'connections/s', digits: 0, ratio: true },
  { id: 'conn.errors', what: 'new connections: errors', unit: 'count', digits: 0, ratio: false },
] as const;

export const workerRow = (count: number): string => `w${count}`;

/** Per-repetition ratio count / base of one worker figure, summarised. */
export function buildWorkerRatio(s: SampleStore, id: string, count: number, base: number, reps: number): Spread {
  return buildSpread(Array.from({ length: reps }, (_, i) => s.at(`workers.${id}`, workerRow(count), i) / s.at(`workers.${id}`, workerRow(base), i)));
}

/**
 * The worker count a ztunnel-ts reports in its 'ztunnel-ts ready' JSON log line: the first
 * numeric field whose name contains "worker"; '1 (not supported)' when the line has none (a
 * build without worker threads), 'unknown' when there is no ready line.
 */
export function parseWorkerCount(lines: readonly string[]): string {
  for (const l of lines) {
    if (!l.startsWith('{')) continue;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(l) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (o.message !== 'ztunnel-ts ready') continue;
    for (const [k, v] of Object.entries(o)) {
      if (/worker/i.test(k) && (typeof v === 'number' || (typeof v === 'string' && /^\d+$/.test(v)))) return String(v);
    }
    return '1 (not supported)';
  }
  return 'unknown';
}

const plural = (n: number): string => `${n} worker${n === 1 ? '' : 's'}`;

/** Markdown table: one line per worker figure, a column per worker count (median (min–max)), then count / base ratios. */
export function buildWorkersTable(s: SampleStore, reps: number, counts: readonly number[], reported: ReadonlyMap<number, string>): string[] {
  const [base, ...others] = counts;
  if (base === undefined) return [];
  const out = [
    `| measure (mesh, sleep → productpage) | ${counts.map(plural).join(' | ')} | ${others.map((c) => `${c} / ${base}`).join(' | ')} |`,
    `|---|${counts.map(() => '---:|').join('')}${others.map(() => '---:|').join('')}`,
  ];
  for (const f of WORKER_FIGURES) {
    const cells = counts.map((c) => formatSpread(buildSpread(s.get(`workers.${f.id}`, workerRow(c))), f.digits));
    const ratios = others.map((c) => (f.ratio ? `${formatSpread(buildWorkerRatio(s, f.id, c, base, reps))} ×` : '–'));
    out.push(`| ${f.what}, ${f.unit} | ${cells.join(' | ')} | ${ratios.join(' | ')} |`);
  }
  out.push(`| worker threads the ztunnels reported ('ztunnel-ts ready') | ${counts.map((c) => reported.get(c) ?? 'unknown').join(' | ')} | ${others.map(() => '').join(' | ')} |`);
  return out;
}

/** One line for the goals section: the ratios of the last worker count to the first. */
export function buildWorkersSummary(s: SampleStore, reps: number, counts: readonly number[], mainWorkers: string): string {
  const base = counts[0];
  const top = counts[counts.length - 1];
  if (base === undefined || top === undefined || top === base) return `Worker threads: main rows ran with ${mainWorkers} worker thread(s); no worker comparison in this run.`;
  const r = (id: string): string => `${formatSpread(buildWorkerRatio(s, id, top, base, reps))} ×`;
  return (
    `Worker threads (ZTUNNEL_WORKER_THREADS, ${plural(top)} / ${plural(base)}, median (min–max) of per-repetition ratios): ` +
    `iperf3 8 streams client → server ${r('iperf8.fwd')}, server → client ${r('iperf8.rev')}; new connections/s ${r('conn.rate')}. ` +
    `The main rows ran with ${mainWorkers} worker thread(s) (the process default).`
  );
}

/** The arithmetic above, asserted; throws on the first mismatch. */
export function runSelfCheck(): string[] {
  const done: string[] = [];
  assert.deepEqual(buildSpread([3, 1, 2]), { median: 2, min: 1, max: 3, n: 3 });
  assert.deepEqual(buildSpread([4, NaN, 1, 2, 3]), { median: 2.5, min: 1, max: 4, n: 4 });
  assert.equal(buildSpread([]).n, 0);
  assert.equal(formatSpread(buildSpread([1.5, 1, 2])), '1.50 (1.00–2.00)');
  assert.equal(formatSpread(buildSpread([1500])), '1,500');
  done.push('median / spread');

  const s = new SampleStore();
  // Three repetitions: per-repetition ratios 0.5, 1.0, 2.0 → median 1.0 (ratio of medians would be 8/8 too, so use uneven values).
  [[2, 4], [8, 8], [20, 10]].forEach(([mesh, stunnel], rep) => {
    s.set('iperf1.fwd', 'mesh', rep, mesh!);
    s.set('iperf1.fwd', 'stunnel', rep, stunnel!);
  });
  const goals = buildGoals();
  const p1 = evaluateGoal(goals.find((g) => g.id === 'P1 fwd')!, s, 3);
  assert.deepEqual([p1.measured.median, p1.measured.min, p1.measured.max, p1.met], [1, 0.5, 2, true]);
  const p1rev = evaluateGoal(goals.find((g) => g.id === 'P1 rev')!, s, 3);
  assert.equal(p1rev.met, undefined);
  s.set('http.1k.p99', 'mesh', 0, 1.4);
  s.set('http.1k.p99', 'direct', 0, 0.4);
  const p4 = evaluateGoal(goals.find((g) => g.id === 'P4')!, s, 1);
  assert.equal(p4.met, false);
  assert.ok(Math.abs(p4.score - 0.5) < 1e-9, `P4 score ${p4.score}`);
  s.set('http.1k.cpu.src', 'mesh', 0, 0.03);
  const p5 = evaluateGoal(goals.find((g) => g.id === 'P5 src')!, s, 1);
  assert.equal(p5.met, true);
  assert.ok(Math.abs(p5.score - 2) < 1e-9);
  assert.deepEqual(
    goals.map((g) => g.id.split(' ')[0]),
    ['P1', 'P1', 'P1b', 'P1b', 'P2', 'P2', 'P3', 'P4', 'P5', 'P5', 'P6', 'P6', 'P6', 'P6', 'P7'],
  );
  done.push('goals per repetition (median of per-repetition ratios, ≤ goals inverted)');

  const table = buildGoalTable([p1, p1rev, p4]);
  assert.equal(table.length, 5);
  assert.match(table[2]!, /^\| P1 fwd \|.*\| ≥ 1 × \| 1\.00 \(0\.50–2\.00\) × \| yes \|$/);
  assert.match(table[3]!, /not measured/);
  const svg = buildGoalSvg([p1, p1rev, p4, p5], 'a <b> & c');
  assert.equal((svg.match(/class="bar"/g) ?? []).length, 4);
  assert.match(svg, /a &lt;b&gt; &amp; c/);
  // P1 score 1 → bar to the 1.0 line (150 of 300 px); P5 score 2 → full 300; unmeasured → 0.
  assert.match(svg, /class="bar" x="330" y="52" width="150.0"/);
  assert.match(svg, /width="300.0" height="18" fill="#3a9d5d"/);
  assert.match(svg, /width="0.0" height="18" fill="#bbb"/);
  // A score above 2 (0.06 / 0.01 = 6) is drawn at the 2+ end, not past the chart.
  s.set('http.1k.cpu.dst', 'mesh', 0, 0.01);
  const p5dst = evaluateGoal(goals.find((g) => g.id === 'P5 dst')!, s, 1);
  assert.ok(Math.abs(p5dst.score - 6) < 1e-9);
  assert.match(buildGoalSvg([p5dst], 't'), /class="bar" x="330" y="52" width="300.0"/);
  done.push('markdown goal table and SVG bars');
  // P6 staircase: slope of RSS (KB) over idle connections, and the settle rule.
  const fit = buildLineFit([{ x: 0, y: 100 }, { x: 1000, y: 110 }, { x: 2000, y: 121 }, { x: 3000, y: 129 }]);
  assert.ok(Math.abs(fit.slope - 0.0098) < 1e-9, `slope ${fit.slope}`);
  assert.ok(fit.r2 > 0.99 && fit.r2 < 1, `r2 ${fit.r2}`);
  assert.ok(Math.abs(buildLineFit([{ x: 1, y: 3 }, { x: 3, y: 7 }]).intercept - 1) < 1e-9);
  assert.ok(Number.isNaN(buildLineFit([{ x: 5, y: 1 }, { x: 5, y: 2 }]).slope));
  assert.equal(findSettled([10, 50, 90, 100, 101, 100, 100], 3, 2), 5);
  assert.equal(findSettled([10, 50, 90, 130], 3, 2), undefined);
  assert.equal(findSettled([0, 5, 7, 5], 3, 2), 3, 'a window exactly as wide as the tolerance is settled');
  done.push('P6 line fit (slope, r²) and settle window');

  // Workers: per-repetition ratios 2 / 1, reported counts from the ready line.
  const w = new SampleStore();
  [[1, 1.5], [2, 2.4], [1, 2]].forEach(([one, two], rep) => {
    w.set('workers.iperf8.fwd', workerRow(1), rep, one!);
    w.set('workers.iperf8.fwd', workerRow(2), rep, two!);
    w.set('workers.conn.rate', workerRow(1), rep, 500);
    w.set('workers.conn.rate', workerRow(2), rep, 500 * (rep + 1));
  });
  assert.deepEqual(buildWorkerRatio(w, 'iperf8.fwd', 2, 1, 3), { median: 1.5, min: 1.2, max: 2, n: 3 });
  const wt = buildWorkersTable(w, 3, [1, 2], new Map([[1, '1'], [2, '2']]));
  assert.equal(wt.length, 2 + WORKER_FIGURES.length + 1);
  assert.equal(wt[0], '| measure (mesh, sleep → productpage) | 1 worker | 2 workers | 2 / 1 |');
  assert.equal(wt[2], '| iperf3 8 streams (-P 8), client → server, Gbit/s | 1.00 (1.00–2.00) | 2.00 (1.50–2.40) | 1.50 (1.20–2.00) × |');
  assert.match(wt[4]!, /\| 500 \| 1,000 \(500–1,500\) \| 2\.00 \(1\.00–3\.00\) × \|$/);
  assert.match(wt[5]!, /\| – \| – \| – \|$/);
  assert.match(wt[6]!, /\| 1 \| 2 \|/);
  const sum = buildWorkersSummary(w, 3, [1, 2], '2');
  assert.match(sum, /client → server 1\.50 \(1\.20–2\.00\) ×, server → client – ×; new connections\/s 2\.00 \(1\.00–3\.00\) ×\. The main rows ran with 2 worker/);
  assert.match(buildWorkersSummary(w, 3, [], '1'), /no worker comparison/);
  const ready = (extra: string): string => `{"level":"info","message":"ztunnel-ts ready","mode":"node"${extra}}`;
  assert.equal(parseWorkerCount(['not json', ready(',"workerThreads":4')]), '4');
  assert.equal(parseWorkerCount([ready(',"workers":"2"')]), '2');
  assert.equal(parseWorkerCount([ready('')]), '1 (not supported)');
  assert.equal(parseWorkerCount(['{"message":"listening"}']), 'unknown');
  done.push('workers table, summary line and the worker count of the ready line');
  return done;
}
