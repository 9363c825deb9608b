// The soak's arithmetic and outputs, kept apart from the processes that produce the data:
// per-minute rows (completions, errors inside / outside the peer-restart window, p99 of the
// short requests, each ztunnel's RSS, fd count and CPU), the growth checks, the SVG chart
// (hand-written polylines) and the markdown summary.
// Must never: read or start anything (pure functions over the recorded data).
import type { SoakRates } from './soak-client.js';

export interface ProcPoint {
  at: number;
  node: string;
  pid: number;
  rssKb: number;
  fds: number;
  /** utime + stime, clock ticks. */
  ticks: number;
}

export interface ErrEvent {
  src: string;
  /** Interval in which the failed operation was under way (epoch ms). */
  s: number;
  e: number;
  why: string;
}

export interface HttpMinute {
  mode: 'ka' | 'nc';
  minute: number;
  seconds: number;
  sent: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  mismatches: number;
  p50: number;
  p99: number;
  max: number;
}

export interface Tick {
  at: number;
  bulkOk: number;
  bulkBytes: number;
  churnOk: number;
  kaOk: number;
  ncOk: number;
}

export interface RestartInfo {
  node: string;
  stopAt: number;
  readyAt: number;
  oldPid: number;
  newPid: number;
  /** The draining ztunnel's termination deadline (its 'draining' log line), if seen. */
  drainDeadlineMs?: number | undefined;
}

export interface ReloadEvent {
  at: number;
  policies: number;
  /** Per node: ms from the rewrite to its "local config reloaded" line; null = not seen; 'restarting' = skipped. */
  confirmed: Record<string, number | null | 'restarting'>;
}

export interface ZtLogLine {
  at: number;
  node: string;
  level: string;
  message: string;
  error?: string | undefined;
}

export interface SoakData {
  t0: number;
  minutes: number;
  nodes: string[];
  ticks: Tick[];
  errs: ErrEvent[];
  http: HttpMinute[];
  procs: ProcPoint[];
  restart?: RestartInfo | undefined;
  reloads: ReloadEvent[];
  ztLogs: ZtLogLine[];
  clockTicks: number;
  /** Slack after the restarted ztunnel is ready during which failures still count as restart-window ones. */
  graceMs: number;
}

export interface ZtMinute {
  node: string;
  pids: number[];
  samples: number;
  rssKb: number;
  rssMaxKb: number;
  fdsMin: number;
  fdsMax: number;
  fdsLast: number;
  cpuPct: number;
}

export interface MinuteRow {
  minute: number;
  kaOk: number;
  ncOk: number;
  churnOk: number;
  bulkOk: number;
  bulkBytes: number;
  ka?: HttpMinute | undefined;
  nc?: HttpMinute | undefined;
  errors: number;
  windowErrors: number;
  errorsBySrc: Record<string, number>;
  windowBySrc: Record<string, number>;
  zt: ZtMinute[];
  /** ztunnel log lines at warn or error level, per node (same order as nodes). */
  ztWarn: number[];
  events: string[];
}

export interface Check {
  name: string;
  ok: boolean | undefined;
  detail: string;
}

export const RSS_GROWTH_MAX = 1.3;
export const FD_GROWTH_ABS = 20;
export const FD_GROWTH_REL = 0.5;

/** [from, to] in epoch ms: from the restart's SIGTERM to graceMs after the new ztunnel is ready. */
export function buildRestartWindow(d: Pick<SoakData, 'restart' | 'graceMs'>): [number, number] | undefined {
  return d.restart === undefined ? undefined : [d.restart.stopAt, d.restart.readyAt + d.graceMs];
}

/** A failure is expected when the operation was under way at some point inside the window. */
export function isInWindow(e: Pick<ErrEvent, 's' | 'e'>, w: [number, number] | undefined): boolean {
  return w !== undefined && e.e >= w[0] && e.s <= w[1];
}

const minuteOf = (t0: number, at: number): number => Math.floor((at - t0) / 60_000);

function buildZtMinute(node: string, pts: readonly ProcPoint[], prev: ProcPoint | undefined, clockTicks: number): ZtMinute {
  const last = pts[pts.length - 1];
  let busy = 0;
  let span = 0;
  let a = prev;
  for (const p of pts) {
    if (a !== undefined && a.pid === p.pid) {
      busy += (p.ticks - a.ticks) / clockTicks;
      span += (p.at - a.at) / 1000;
    }
    a = p;
  }
  return {
    node,
    pids: [...new Set(pts.map((p) => p.pid))],
    samples: pts.length,
    rssKb: last?.rssKb ?? NaN,
    rssMaxKb: pts.length ? Math.max(...pts.map((p) => p.rssKb)) : NaN,
    fdsMin: pts.length ? Math.min(...pts.map((p) => p.fds)) : NaN,
    fdsMax: pts.length ? Math.max(...pts.map((p) => p.fds)) : NaN,
    fdsLast: last?.fds ?? NaN,
    cpuPct: span > 0 ? (busy / span) * 100 : NaN,
  };
}

export function buildMinuteRows(d: SoakData): MinuteRow[] {
  const w = buildRestartWindow(d);
  const rows: MinuteRow[] = [];
  for (let m = 0; m < d.minutes; m++) {
    const inM = (at: number): boolean => minuteOf(d.t0, at) === m;
    const ticks = d.ticks.filter((t) => inM(t.at));
    const sum = (k: keyof Omit<Tick, 'at'>): number => ticks.reduce((s, t) => s + t[k], 0);
    const errs = d.errs.filter((e) => inM(e.e) || (m === d.minutes - 1 && minuteOf(d.t0, e.e) >= d.minutes));
    const errorsBySrc: Record<string, number> = {};
    const windowBySrc: Record<string, number> = {};
    for (const e of errs) {
      const into = isInWindow(e, w) ? windowBySrc : errorsBySrc;
      into[e.src] = (into[e.src] ?? 0) + 1;
    }
    const zt = d.nodes.map((node) => {
      const all = d.procs.filter((p) => p.node === node);
      const pts = all.filter((p) => inM(p.at));
      const prev = all.filter((p) => p.at < d.t0 + m * 60_000).pop();
      return buildZtMinute(node, pts, prev, d.clockTicks);
    });
    const events: string[] = [];
    for (const r of d.reloads.filter((x) => inM(x.at))) events.push(`reload@${Math.round((r.at - d.t0) / 1000)}s(${r.policies ? 'allow-all on' : 'off'})`);
    if (d.restart !== undefined && inM(d.restart.stopAt)) {
      events.push(`restart ${d.restart.node}@${Math.round((d.restart.stopAt - d.t0) / 1000)}s, ready in ${((d.restart.readyAt - d.restart.stopAt) / 1000).toFixed(1)} s`);
    }
    rows.push({
      minute: m + 1,
      kaOk: sum('kaOk'),
      ncOk: sum('ncOk'),
      churnOk: sum('churnOk'),
      bulkOk: sum('bulkOk'),
      bulkBytes: sum('bulkBytes'),
      ka: d.http.find((h) => h.mode === 'ka' && h.minute === m),
      nc: d.http.find((h) => h.mode === 'nc' && h.minute === m),
      errors: Object.values(errorsBySrc).reduce((a, b) => a + b, 0),
      windowErrors: Object.values(windowBySrc).reduce((a, b) => a + b, 0),
      errorsBySrc,
      windowBySrc,
      zt,
      ztWarn: d.nodes.map((n) => d.ztLogs.filter((l) => l.node === n && inM(l.at)).length),
      events,
    });
  }
  return rows;
}

/**
 * Growth check, per ztunnel process (pid): its full minutes are those in which every sample of
 * its node was taken from it. With at least three, the last full minute is compared with the
 * second (minute 2 for a process that ran from the start; the first minute is warm-up):
 * RSS at the end of the minute within RSS_GROWTH_MAX × the baseline's, and the minute's lowest
 * fd count within the baseline's lowest + max(FD_GROWTH_ABS, FD_GROWTH_REL × it). The lowest
 * fd count is used because the count at any instant includes the connections in flight.
 * Fewer than three full minutes: not checked (reported as such).
 */
export function buildGrowthChecks(d: SoakData, rows: readonly MinuteRow[]): Check[] {
  const checks: Check[] = [];
  d.nodes.forEach((node, ni) => {
    const pids = [...new Set(d.procs.filter((p) => p.node === node).map((p) => p.pid))];
    for (const pid of pids) {
      const full = rows.filter((r) => {
        const z = r.zt[ni];
        return z !== undefined && z.samples >= 5 && z.pids.length === 1 && z.pids[0] === pid;
      });
      const name = `${node} pid ${pid}`;
      if (full.length < 3) {
        checks.push({ name, ok: undefined, detail: `not checked: ${full.length} full minute(s), 3 needed` });
        continue;
      }
      const base = full[1]!;
      const last = full[full.length - 1]!;
      const b = base.zt[ni]!;
      const l = last.zt[ni]!;
      const rssOk = l.rssKb <= b.rssKb * RSS_GROWTH_MAX;
      const fdLimit = b.fdsMin + Math.max(FD_GROWTH_ABS, Math.ceil(b.fdsMin * FD_GROWTH_REL));
      const fdOk = l.fdsMin <= fdLimit;
      checks.push({
        name,
        ok: rssOk && fdOk,
        detail:
          `RSS minute ${base.minute} ${(b.rssKb / 1024).toFixed(1)} MB → minute ${last.minute} ${(l.rssKb / 1024).toFixed(1)} MB ` +
          `(${((l.rssKb / b.rssKb - 1) * 100).toFixed(1)} %, limit +${((RSS_GROWTH_MAX - 1) * 100).toFixed(0)} %) ${rssOk ? 'ok' : 'FAIL'}; ` +
          `lowest fds ${b.fdsMin} → ${l.fdsMin} (limit ${fdLimit}) ${fdOk ? 'ok' : 'FAIL'}`,
      });
    }
  });
  return checks;
}

// ---------- SVG ----------

interface Series {
  label: string;
  color: string;
  points: (number | undefined)[];
  dashed?: boolean | undefined;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e'];

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function buildPanel(title: string, unit: string, series: Series[], minutes: number, top: number, restartX: number | undefined): string {
  const W = 860;
  const H = 170;
  const left = 70;
  const right = 20;
  const plotW = W - left - right;
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.points.filter((p): p is number => p !== undefined && Number.isFinite(p)))) * 1.1);
  const x = (i: number): number => left + (minutes <= 1 ? plotW / 2 : (i / (minutes - 1)) * plotW);
  const y = (v: number): number => top + 25 + (1 - v / max) * (H - 45);
  const out: string[] = [];
  out.push(`<text x="${left}" y="${top + 14}" font-size="14" font-weight="bold">${esc(title)}</text>`);
  for (let g = 0; g <= 4; g++) {
    const v = (max * g) / 4;
    out.push(`<line x1="${left}" x2="${W - right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
    out.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" font-size="11" text-anchor="end">${Number(v.toPrecision(3))}</text>`);
  }
  out.push(`<text x="14" y="${(top + H / 2).toFixed(1)}" font-size="11" transform="rotate(-90 14 ${(top + H / 2).toFixed(1)})" text-anchor="middle">${esc(unit)}</text>`);
  for (let i = 0; i < minutes; i++) out.push(`<text x="${x(i).toFixed(1)}" y="${top + H - 4}" font-size="11" text-anchor="middle">${i + 1}</text>`);
  if (restartX !== undefined) {
    const rx = x(restartX);
    out.push(`<line x1="${rx.toFixed(1)}" x2="${rx.toFixed(1)}" y1="${top + 22}" y2="${top + H - 18}" stroke="#888" stroke-dasharray="4 3"/>`);
    out.push(`<text x="${(rx + 4).toFixed(1)}" y="${top + 32}" font-size="10" fill="#666">restart</text>`);
  }
  let lx = left + 260;
  series.forEach((s) => {
    const pts = s.points.map((v, i) => (v === undefined || !Number.isFinite(v) ? undefined : `${x(i).toFixed(1)},${y(v).toFixed(1)}`)).filter((p): p is string => p !== undefined);
    const dash = s.dashed ? ' stroke-dasharray="6 3"' : '';
    if (pts.length > 1) out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2"${dash} points="${pts.join(' ')}"/>`);
    for (const p of pts) {
      const [px, py] = p.split(',');
      out.push(`<circle cx="${px}" cy="${py}" r="2.5" fill="${s.color}"/>`);
    }
    out.push(`<line x1="${lx}" x2="${lx + 18}" y1="${top + 10}" y2="${top + 10}" stroke="${s.color}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${lx + 22}" y="${top + 14}" font-size="11">${esc(s.label)}</text>`);
    lx += 30 + s.label.length * 6.2;
  });
  return out.join('\n');
}

/**
 * Three panels over the minutes: RSS per ztunnel, fds per ztunnel, p99 of the short requests.
 * Point i stands for minute i + 1 (its end, for RSS), so a restart `restartAtMin` minutes into
 * the soak is drawn at index restartAtMin − 1, between the points of the minutes around it.
 */
export function buildSvg(rows: readonly MinuteRow[], nodes: readonly string[], restartAtMin: number | undefined, caption: string): string {
  const minutes = rows.length;
  const restartX = restartAtMin === undefined ? undefined : Math.min(Math.max(restartAtMin - 1, 0), Math.max(minutes - 1, 0));
  const perNode = (f: (z: ZtMinute) => number, name: string): Series[] =>
    nodes.map((n, i) => ({ label: `${name} ${n}`, color: COLORS[i % COLORS.length]!, points: rows.map((r) => f(r.zt[i]!)) }));
  const panels = [
    buildPanel('ztunnel RSS at the end of each minute', 'MB', perNode((z) => z.rssKb / 1024, 'RSS'), minutes, 30, restartX),
    buildPanel('ztunnel open fds (lowest and highest sample in each minute)', 'fds', [
      ...perNode((z) => z.fdsMin, 'min'),
      ...nodes.map((n, i) => ({ label: `max ${n}`, color: COLORS[i % COLORS.length]!, dashed: true, points: rows.map((r) => r.zt[i]!.fdsMax) })),
    ], minutes, 210, restartX),
    buildPanel('p99 latency of the short HTTP requests per minute (autocannon)', 'ms', [
      { label: 'keep-alive', color: COLORS[2]!, points: rows.map((r) => r.ka?.p99) },
      { label: 'new connection', color: COLORS[3]!, points: rows.map((r) => r.nc?.p99) },
    ], minutes, 390, restartX),
  ];
  return [
    '<svg xmlns="http://www.w3.org/2000/svg" width="860" height="590" viewBox="0 0 860 590" font-family="sans-serif">',
    '<rect width="860" height="590" fill="white"/>',
    `<text x="430" y="18" font-size="13" text-anchor="middle">${esc(caption)}</text>`,
    ...panels,
    '<text x="430" y="584" font-size="11" text-anchor="middle">minute of the soak</text>',
    '</svg>',
    '',
  ].join('\n');
}

// ---------- markdown ----------

export interface Machine {
  nproc: number;
  model: string;
  memGiB: string;
  kernel: string;
  node: string;
  loadAvg: string;
}

export interface SoakSetup extends SoakRates {
  command: string;
  date: string;
  reloadEverySec: number;
}

const f1 = (n: number | undefined): string => (n !== undefined && Number.isFinite(n) ? n.toFixed(1) : '–');
const f0 = (n: number | undefined): string => (n !== undefined && Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–');
const bySrc = (o: Record<string, number>): string =>
  Object.entries(o)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');

export function buildMinuteTable(rows: readonly MinuteRow[], nodes: readonly string[]): string[] {
  const zh = nodes.map((n) => `${n} RSS MB | ${n} fds min–max | ${n} CPU %`).join(' | ');
  const out = [
    `| min | keep-alive ok | ka p99 ms | new-conn ok | nc p99 ms | churn ok | bulk ok (MB) | errors | restart-window errors | ${zh} | zt warn/error lines | events |`,
    `|---:|---:|---:|---:|---:|---:|---:|---:|---:|${nodes.map(() => '---:|---:|---:|').join('')}---:|---|`,
  ];
  for (const r of rows) {
    const z = r.zt.map((x) => `${f1(x.rssKb / 1024)} | ${f0(x.fdsMin)}–${f0(x.fdsMax)} | ${f0(x.cpuPct)}`).join(' | ');
    out.push(
      `| ${r.minute} | ${f0(r.ka?.ok ?? r.kaOk)} | ${f1(r.ka?.p99)} | ${f0(r.nc?.ok ?? r.ncOk)} | ${f1(r.nc?.p99)} | ${f0(r.churnOk)} | ${r.bulkOk} (${f0(r.bulkBytes / 2 ** 20)}) | ` +
        `${r.errors}${r.errors ? ` (${bySrc(r.errorsBySrc)})` : ''} | ${r.windowErrors}${r.windowErrors ? ` (${bySrc(r.windowBySrc)})` : ''} | ${z} | ${r.ztWarn.join(' / ')} | ${r.events.join('; ')} |`,
    );
  }
  return out;
}

/** Distinct failure reasons with counts, most frequent first. */
export function buildReasonList(errs: readonly ErrEvent[], max = 8): string[] {
  const m = new Map<string, number>();
  for (const e of errs) {
    const k = `${e.src}: ${e.why.replace(/\d{4,}/g, 'N')}`;
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return [...m.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, max)
    .map(([k, v]) => `${v} × ${k}`);
}

/** Distinct ztunnel warn/error lines per node (message and error text), with counts and the minutes they fell in. */
export function buildLogList(lines: readonly ZtLogLine[], nodes: readonly string[], t0?: number, max = 12): string[] {
  const m = new Map<string, { n: number; first: number; last: number }>();
  for (const l of lines) {
    const k = `${l.node} ${l.level}: ${l.message}${l.error ? ` (${l.error.replace(/\d+\.\d+\.\d+\.\d+:\d+/g, 'IP:PORT').replace(/\d{3,}/g, 'N')})` : ''}`;
    const e = m.get(k) ?? { n: 0, first: l.at, last: l.at };
    e.n += 1;
    e.last = l.at;
    m.set(k, e);
  }
  const order = (k: string): number => nodes.findIndex((n) => k.startsWith(`${n} `));
  return [...m.entries()]
    .sort((a, b) => order(a[0]) - order(b[0]) || b[1].n - a[1].n)
    .slice(0, max)
    .map(([k, v]) => `${v.n} × ${k}${t0 === undefined ? '' : `, ${Math.round((v.first - t0) / 1000)}–${Math.round((v.last - t0) / 1000)} s`}`);
}

export interface ReportInput {
  data: SoakData;
  rows: MinuteRow[];
  checks: Check[];
  machine: Machine;
  setup: SoakSetup;
  passed: boolean;
  wallSeconds: number;
}

export function buildMarkdown(r: ReportInput): string {
  const d = r.data;
  const w = buildRestartWindow(d);
  const inW = d.errs.filter((e) => isInWindow(e, w));
  const outW = d.errs.filter((e) => !isInWindow(e, w));
  const total = (k: keyof Omit<Tick, 'at'>): number => d.ticks.reduce((s, t) => s + t[k], 0);
  const out: string[] = [];
  out.push('# ztunnel-ts soak');
  out.push('');
  out.push(`Date: ${r.setup.date}. Command: \`${r.setup.command}\` (as root; \`npm run soak\` builds first), ${r.wallSeconds.toFixed(0)} s wall. Result: **${r.passed ? 'PASS' : 'FAIL'}**.`);
  out.push('');
  out.push('| machine | |');
  out.push('|---|---|');
  out.push(`| nproc | ${r.machine.nproc} |`);
  out.push(`| CPU | ${r.machine.model} |`);
  out.push(`| memory | ${r.machine.memGiB} GiB |`);
  out.push(`| kernel | ${r.machine.kernel} |`);
  out.push(`| node | ${r.machine.node} |`);
  out.push(`| load average before the run | ${r.machine.loadAvg} |`);
  out.push('');
  out.push(
    `The bench mesh (two node namespaces, the kernel capture path, one ztunnel-ts per node; bench/harness.ts) under ${d.minutes} minutes of mixed load from the ` +
      '`sleep` pod (ambient-worker) to `productpage` (ambient-worker2), all of it over HBONE through both ztunnels, all at once:',
  );
  out.push('');
  out.push(`- bulk: one ${r.setup.bulkMb} MB transfer after another (200 ms apart) to a sink app that answers the SHA-256 of what it received; checked against the sent data;`);
  out.push(
    `- short requests, autocannon (one instance per minute, bounded in duration and in count), GET / on the productpage VIP, body checked to name sleep's own IP: ` +
      `keep-alive, ${r.setup.kaConnections} connections, ${r.setup.kaRate} req/s; new connections, ${r.setup.ncConnections} connections at ${r.setup.ncRate} req/s with reconnectRate 2 ` +
      '(autocannon records no response for the request after which it reconnects, so the "new-conn" latencies are those of the first request on each fresh connection, TCP setup through both ztunnels included);',
  );
  out.push(`- connection churn: ${r.setup.churnRate} connections/s to an echo app: connect, 16 bytes out and back, close;`);
  out.push(
    `- a config reload every ${r.setup.reloadEverySec} s: the local config file both ztunnels watch is rewritten with a namespace-wide \`Allow\` policy whose single rule is empty (it allows everything), then without it; ` +
      "each rewrite is confirmed by each ztunnel's `local config reloaded` log line;",
  );
  out.push('- one restart of the destination ztunnel in the middle (SIGTERM, 2 s drain, a new process, until `/healthz/ready` answers).');
  out.push('');
  out.push('Samples of each ztunnel every 2 s: VmRSS, entries in /proc/PID/fd, utime+stime. Load generator, apps and both ztunnels share the cores with whatever else runs on the machine.');
  out.push('');
  out.push('## Per minute');
  out.push('');
  out.push(...buildMinuteTable(r.rows, d.nodes));
  out.push('');
  out.push('![RSS, fds and p99 per minute](soak.svg)');
  out.push('');
  out.push('## Totals');
  out.push('');
  const kaOk = d.http.filter((h) => h.mode === 'ka').reduce((s, h) => s + h.ok, 0);
  const ncOk = d.http.filter((h) => h.mode === 'nc').reduce((s, h) => s + h.ok, 0);
  out.push(
    `keep-alive requests ${f0(kaOk)}, new-connection requests (recorded) ${f0(ncOk)}, churn connections ${f0(total('churnOk'))}, ` +
      `bulk transfers ${f0(total('bulkOk'))} (${f1(total('bulkBytes') / 2 ** 30)} GiB, every digest matched), config rewrites ${d.reloads.length}.`,
  );
  out.push('');
  out.push('## Errors');
  out.push('');
  out.push(`Outside the restart window: **${outW.length}**.${outW.length ? '' : ' None.'}`);
  for (const l of buildReasonList(outW)) out.push(`- ${l}`);
  out.push('');
  if (d.restart !== undefined && w !== undefined) {
    const rs = d.restart;
    out.push(
      `Restart window: ${rs.node} got SIGTERM at ${((rs.stopAt - d.t0) / 1000).toFixed(1)} s (pid ${rs.oldPid}); the new process (pid ${rs.newPid}) was ready ` +
        `${((rs.readyAt - rs.stopAt) / 1000).toFixed(1)} s later; the window closes ${d.graceMs / 1000} s after that. ` +
        `An operation counts as a restart-window failure when it was under way at some point inside the window (autocannon reports only the time of an error, so its requests are taken to have started up to the 5 s request timeout before). ` +
        `Failures in the window: **${inW.length}**.`,
    );
    for (const l of buildReasonList(inW)) out.push(`- ${l}`);
    out.push('');
    const dl = rs.drainDeadlineMs === undefined ? 'its termination deadline' : `its termination deadline (${rs.drainDeadlineMs} ms here, from TERMINATION_GRACE_PERIOD_SECONDS=2 in the bench harness)`;
    out.push(
      `Why they are expected: on SIGTERM the ztunnel sends GOAWAY on its HBONE sessions (streams the source ztunnel opens after that are refused, REFUSED_STREAM), ` +
        `stops listening, and at ${dl} resets what is still open (keep-alive connections, in-flight bulk transfers and their HBONE streams: ECONNRESET at the client). ` +
        'Until the new process listens on 15008, the source ztunnel cannot open a new HBONE connection, so connections started in that gap fail or time out. ' +
        'The source ztunnel stays up throughout; the failures should stop once the new process is ready; any later one is counted above as outside the window.',
    );
    out.push('');
  }
  out.push('## ztunnel log lines at warn or error level');
  out.push('');
  if (d.ztLogs.length === 0) out.push('None.');
  for (const l of buildLogList(d.ztLogs, d.nodes, d.t0)) out.push(`- ${l}`);
  out.push('');
  out.push('## Checks');
  out.push('');
  for (const c of r.checks) out.push(`- ${c.ok === undefined ? 'skipped' : c.ok ? 'ok' : '**FAIL**'}: ${c.name}: ${c.detail}`);
  out.push('');
  return out.join('\n');
}
