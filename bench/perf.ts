// Issue 10's benchmarks (item 1: the harness), side by side in one run on the two-node namespaced
// mesh: HTTP with autocannon (1 KiB responses, keep-alive; saturated at 100 connections, and a
// fixed 1,000 req/s over 16 connections), bulk with iperf3 (1 and 8 streams, each direction),
// new connections per second and idle-connection memory (a staircase of idle connections, the
// RSS slope fitted over it); 1 worker thread vs N (ZTUNNEL_WORKER_THREADS, ztunnels restarted
// inside each repetition): 8 streams each way and new connections/s; rows: direct (no proxy), ztunnel-ts
// mesh (HBONE), a stunnel4 pair (mTLS 1.3) between the same two pods, ztunnel-ts passthrough
// and haproxy (TCP, splice) on the same hops. Medians of ≥ 3 repetitions with min–max, goals
// P1–P7 with the measured ratio, an SVG chart of the ratios.
// Run as root after a build: node dist/bench/perf.js [--quick] [--reps N] [--only=workers|memory] [--workers=1,2] [--out FILE.md] [--svg FILE.svg]
//                            node dist/bench/perf.js --self-check      (the report arithmetic; no root)
// Must never: pass or fail on a timing (it reports; exit 1 only when a row cannot run), run
// anything unbounded, or touch anything outside the namespaces it created.

import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { HttpLoadResult } from './autocannon-client.js';
import {
  BENCH_PORTS,
  HAPROXY_PORTS,
  STUNNEL_LOCAL_PORTS,
  startBaselines,
  type BenchService,
  type Baselines,
} from './perf-baselines.js';
import { LOAD_CLIENT_JS, buildBoxPercent, buildZtunnelTail, getClockTicks, readBoxCpu, readProc, runIn, startBenchMesh, startIn, writeGcPreload, type BenchMesh } from './harness.js';
import {
  SampleStore,
  buildGoalSvg,
  buildGoalTable,
  buildGoals,
  buildLineFit,
  buildSpread,
  buildWorkersSummary,
  buildWorkersTable,
  evaluateGoal,
  findSettled,
  formatSpread,
  parseWorkerCount,
  runSelfCheck,
  workerRow,
  type RowKey,
} from './perf-report.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const AUTOCANNON_JS = join(HERE, 'autocannon-client.js');
const HTTP_SERVER_JS = join(HERE, 'http-server.js');
const REPO = join(HERE, '..', '..');

const USAGE = `usage: node dist/bench/perf.js [--quick] [--reps N] [--only=workers|memory] [--workers=LIST|off] [--out FILE.md] [--svg FILE.svg] [--prefix NAME]
       node dist/bench/perf.js --self-check
  --quick      1 repetition, 3 s runs, 500 new connections, 4 × 1,000 idle connections (validates the harness; figures are noise)
  --reps N     repetitions (default 3; medians and min–max over them)
  --only=SECTION  run one section alone (mesh row only, no stunnel/haproxy): workers (the worker-thread
               comparison) or memory (P6); the report then goes to bench/RESULTS-perf-SECTION.md
  --workers=LIST  worker-thread counts compared (ZTUNNEL_WORKER_THREADS; both ztunnels restarted for each,
               alternating order per repetition), first = base of the ratios; default 1,2; off = skip
  --out FILE   markdown report (default bench/RESULTS-perf.md)
  --svg FILE   chart of the goal ratios (default: --out with .svg, or bench/perf.svg)
  --node-args=FLAGS  node flags for the two ztunnels, e.g. --node-args=--max-semi-space-size=2
  --self-check assert the report arithmetic (median, spread, goals, SVG) and exit
`;

const SAT_CONNECTIONS = 100;
const FIXED_CONNECTIONS = 16;
const FIXED_RATE = 1000;
const CONNECT_CONCURRENCY = 20;
/** P6 staircase: IDLE_STEPS steps of idle connections (per step: 2,000, --quick 1,000), RSS read settled after each. */
const IDLE_STEPS = 4;
/** Settled = the last SETTLE_WINDOW samples (every SETTLE_EVERY_MS) within SETTLE_TOLERANCE_KB; give up after SETTLE_MAX_MS. */
const SETTLE_WINDOW = 4;
const SETTLE_EVERY_MS = 500;
const SETTLE_TOLERANCE_KB = 256;
const SETTLE_MAX_MS = 20_000;

const t0 = performance.now();
const say = (s = ''): void => void process.stdout.write(`${s}\n`);
const progress = (s: string): void => say(`[perf ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${s}`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Row {
  key: RowKey;
  label: string;
  /** Client pod. */
  from: string;
  host: string;
  port: (svc: BenchService) => number;
  /** The proxy processes whose CPU is charged to this row, with the side names of P5 (read at each run: a ztunnel restart changes the pid). */
  procs: () => { side: string; pid: number }[];
}

/** The five rows; without baselines (--only) just direct, mesh and passthrough. */
function buildRows(mesh: BenchMesh, b: Baselines | undefined): Row[] {
  const ip = (pod: string): string => mesh.topo.getPod(pod).ip;
  const zt = (pod: string): number => mesh.ztunnels.find((z) => z.node === mesh.topo.getPod(pod).node)!.pid;
  const std = (svc: BenchService): number => BENCH_PORTS[svc];
  const rows: Row[] = [
    { key: 'direct', label: 'direct: outsider → plain (no proxy)', from: 'outsider', host: ip('plain'), port: std, procs: () => [] },
    { key: 'mesh', label: 'ztunnel-ts mesh: sleep → productpage (HBONE, 2 ztunnels)', from: 'sleep', host: ip('productpage'), port: std, procs: () => [{ side: 'src', pid: zt('sleep') }, { side: 'dst', pid: zt('productpage') }] },
  ];
  if (b !== undefined) {
    rows.push({
      key: 'stunnel',
      label: 'stunnel4 pair: sleep → productpage (mTLS 1.3, P-256)',
      from: 'sleep',
      host: '127.0.0.1',
      port: (svc) => STUNNEL_LOCAL_PORTS[svc],
      procs: () => [{ side: 'src', pid: b.stunnelClient.pid! }, { side: 'dst', pid: b.stunnelServer.pid! }],
    });
  }
  rows.push({ key: 'passthrough', label: 'ztunnel-ts passthrough: sleep → plain (source ztunnel, TCP)', from: 'sleep', host: ip('plain'), port: std, procs: () => [{ side: 'src', pid: zt('sleep') }] });
  if (b !== undefined) {
    rows.push({ key: 'haproxy', label: 'haproxy TCP + splice: sleep → plain (in the source ztunnel netns)', from: 'sleep', host: b.haproxyIp, port: (svc) => HAPROXY_PORTS[svc], procs: () => [{ side: 'src', pid: b.haproxy.pid! }] });
  }
  return rows;
}

// ---------- the runs ----------

async function runIperf(mesh: BenchMesh, row: Row, seconds: number, streams: number, reverse: boolean): Promise<number> {
  const args = ['-c', row.host, '-p', String(row.port('iperf')), '-t', String(seconds), '-P', String(streams), '-J', '--connect-timeout', '5000', ...(reverse ? ['-R'] : [])];
  const r = await runIn(mesh.topo.podNetns(row.from), 'iperf3', args, (seconds + 30) * 1000);
  let doc: { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
  try {
    doc = JSON.parse(r.stdout) as typeof doc;
  } catch {
    throw new Error(`iperf3 ${row.key} -P ${streams}${reverse ? ' -R' : ''}: no JSON (exit ${r.code}${r.timedOut ? ', timed out' : ''}) ${r.stderr.trim()}`);
  }
  const bps = doc.end?.sum_received?.bits_per_second;
  if (doc.error !== undefined || bps === undefined) throw new Error(`iperf3 ${row.key} -P ${streams}${reverse ? ' -R' : ''}: ${doc.error ?? 'no result'}`);
  return bps / 1e9;
}

async function runHttp(mesh: BenchMesh, row: Row, seconds: number, connections: number, rate?: number): Promise<HttpLoadResult & { cpuSec: Map<string, number> }> {
  const procs = row.procs();
  const before = procs.map((p) => readProc(p.pid).ticks);
  const url = `http://${row.host}:${row.port('http')}/`;
  const args = [AUTOCANNON_JS, url, String(connections), String(seconds), ...(rate === undefined ? [] : [String(rate)])];
  const r = await runIn(mesh.topo.podNetns(row.from), process.execPath, args, (seconds + 45) * 1000);
  const cpuSec = new Map(procs.map((p, i) => [p.side, (readProc(p.pid).ticks - before[i]!) / getClockTicks()]));
  let j: HttpLoadResult;
  try {
    j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as HttpLoadResult;
  } catch {
    throw new Error(`autocannon ${row.key}: no JSON (exit ${r.code}${r.timedOut ? ', timed out' : ''}) ${r.stderr.trim()}`);
  }
  if (j.requests === 0) throw new Error(`autocannon ${row.key}: no 2xx response (errors ${j.errors}, non-2xx ${j.non2xx})`);
  return { ...j, cpuSec };
}

async function runConnect(mesh: BenchMesh, row: Row, count: number): Promise<{ perSec: number; errors: number }> {
  const args = [LOAD_CLIENT_JS, 'connect', row.host, String(row.port('echo')), String(count), String(CONNECT_CONCURRENCY)];
  const r = await runIn(mesh.topo.podNetns(row.from), process.execPath, args, 300_000);
  const j = JSON.parse(r.stdout.trim().split('\n').pop() || '{}') as { perSec?: number; errors?: number };
  if (j.perSec === undefined) throw new Error(`connect ${row.key}: exit ${r.code} ${r.stderr.trim()}`);
  return { perSec: j.perSec, errors: j.errors ?? 0 };
}

/** Anonymous resident memory (RssAnon: heap, stacks, buffers; no file-backed code pages) of `pid`, in KB. */
function readAnonKb(pid: number): number {
  return Number(/^RssAnon:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

/**
 * Samples RssAnon of every pid every SETTLE_EVERY_MS until the last SETTLE_WINDOW samples of
 * each lie within SETTLE_TOLERANCE_KB (or SETTLE_MAX_MS pass); returns each pid's mean over that
 * last window, and whether all settled.
 */
async function readSettledKb(pids: readonly number[]): Promise<{ kb: number[]; settled: boolean; ms: number }> {
  const series: number[][] = pids.map(() => []);
  const t = performance.now();
  for (;;) {
    pids.forEach((pid, i) => series[i]!.push(readAnonKb(pid)));
    const done = series.every((x) => findSettled(x, SETTLE_WINDOW, SETTLE_TOLERANCE_KB) === x.length - 1);
    if (done || performance.now() - t >= SETTLE_MAX_MS) {
      const kb = series.map((x) => x.slice(-SETTLE_WINDOW).reduce((a, b) => a + b, 0) / Math.min(SETTLE_WINDOW, x.length));
      return { kb, settled: done, ms: performance.now() - t };
    }
    await sleep(SETTLE_EVERY_MS);
  }
}

/**
 * A full GC in each ztunnel (SIGUSR2 → the preload of harness.ts writeGcPreload; twice, so what the first one's
 * finalizers let go is collected too). Refuses a process that was not started with the preload:
 * SIGUSR2 would end it.
 */
async function collectGarbage(pids: readonly number[]): Promise<void> {
  for (const pid of pids) {
    if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('gc-on-signal')) throw new Error(`ztunnel pid ${pid} runs without the GC preload; not signalling it`);
  }
  for (let i = 0; i < 2; i++) {
    for (const pid of pids) process.kill(pid, 'SIGUSR2');
    await sleep(500);
  }
  await sleep(500);
}

interface IdleMemory {
  idleMb: Map<string, number>;
  /** Fitted KB per idle connection, and the fit's r², per side. */
  kbPerConn: Map<string, number>;
  r2: Map<string, number>;
  /** KB per connection of each step alone (diagnostic: how far single steps scatter). */
  stepKb: Map<string, number[]>;
  opened: number;
  errors: number;
  unsettled: number;
}

/**
 * On ztunnels freshly started with the GC preload: idle RSS (VmRSS) after a warm-up and a full
 * GC, then P6: IDLE_STEPS steps of `perStep` idle mesh connections each (a load-client process
 * per step, all held open); after each step a full GC, then RssAnon once it settles; KB per
 * connection = least-squares slope of RssAnon over the connections open (perStep, 2·perStep, ...).
 * The GC removes the garbage of connection setup (how much of it is still there depends on when
 * V8 last collected: steps of 4–30 MB); the slope is blind to one-off costs that do not grow
 * with the count.
 */
async function runIdleMemory(mesh: BenchMesh, row: Row, perStep: number): Promise<IdleMemory> {
  await runConnect(mesh, row, 20);
  await sleep(1500);
  const procs = row.procs();
  const pids = procs.map((p) => p.pid);
  await collectGarbage(pids);
  const points: { x: number; y: number[] }[] = [];
  let unsettled = 0;
  const first = await readSettledKb(pids);
  const idleMb = new Map(procs.map((p) => [p.side, readProc(p.pid).rssKb / 1024]));
  if (!first.settled) unsettled += 1;
  points.push({ x: 0, y: first.kb });
  const clients: { kill(sig: NodeJS.Signals): boolean }[] = [];
  let opened = 0;
  let errors = 0;
  try {
    for (let step = 0; step < IDLE_STEPS; step++) {
      const { child, lines } = await startIn(
        mesh.topo,
        mesh.topo.podNetns(row.from),
        process.execPath,
        [LOAD_CLIENT_JS, 'idle', row.host, String(row.port('echo')), String(perStep), '600000'],
        /"ready"/,
        120_000,
      );
      clients.push(child);
      const ready = JSON.parse(lines.find((l) => l.includes('"ready"')) ?? '{}') as { ready?: number; errors?: number };
      opened += ready.ready ?? 0;
      errors += ready.errors ?? 0;
      await collectGarbage(pids);
      const r = await readSettledKb(pids);
      if (!r.settled) unsettled += 1;
      points.push({ x: opened, y: r.kb });
      progress(`  step ${step + 1}/${IDLE_STEPS}: ${opened} open, RssAnon MB src/dst ${r.kb.map((k) => (k / 1024).toFixed(1)).join('/')} (${r.settled ? 'settled' : 'NOT settled'} after ${(r.ms / 1000).toFixed(1)} s)`);
    }
  } finally {
    for (const c of clients) c.kill('SIGTERM');
  }
  await sleep(3000);
  const kbPerConn = new Map<string, number>();
  const r2 = new Map<string, number>();
  const stepKb = new Map<string, number[]>();
  procs.forEach((p, i) => {
    // From the first step on: the step from 0 also carries one-off growth (V8's young generation
    // and pools sizing up to a busy process), 1.5–2 × the later steps.
    const fit = buildLineFit(points.slice(1).map((q) => ({ x: q.x, y: q.y[i]! })));
    kbPerConn.set(p.side, fit.slope);
    r2.set(p.side, fit.r2);
    stepKb.set(p.side, points.slice(1).map((q, j) => (q.y[i]! - points[j]!.y[i]!) / Math.max(1, q.x - points[j]!.x)));
  });
  return { idleMb, kbPerConn, r2, stepKb, opened, errors, unsettled };
}

/**
 * The worker-thread comparison of one repetition: for each count (order reversed on odd
 * repetitions so that drift during a repetition hits both), both ztunnels restarted with
 * ZTUNNEL_WORKER_THREADS=count, warmed up, then iperf3 -P 8 each way and new connections/s on
 * the mesh row. Leaves the ztunnels running with the last count.
 */
async function runWorkers(o: { mesh: BenchMesh; row: Row; counts: readonly number[]; rep: number; reps: number; seconds: number; connectCount: number; store: SampleStore; reported: Map<number, string> }): Promise<void> {
  const order = o.rep % 2 === 0 ? [...o.counts] : [...o.counts].reverse();
  const tag = `rep ${o.rep + 1}/${o.reps} workers`;
  for (const count of order) {
    progress(`${tag}: restarting both ztunnels with ZTUNNEL_WORKER_THREADS=${count} ...`);
    await o.mesh.restartZtunnels({ ZTUNNEL_WORKER_THREADS: String(count) });
    const said = [...new Set(o.mesh.ztunnels.map((z) => parseWorkerCount(z.handle.out)))].join(' / ');
    o.reported.set(count, said);
    // Warm-up: the HBONE pool and the JIT of the restarted processes.
    await runConnect(o.mesh, o.row, 50);
    await runIperf(o.mesh, o.row, 1, 8, false);
    await sleep(500);
    const fig = (id: string): string => `workers.${id}`;
    for (const reverse of [false, true]) {
      const g = await runIperf(o.mesh, o.row, o.seconds, 8, reverse);
      o.store.set(fig(`iperf8.${reverse ? 'rev' : 'fwd'}`), workerRow(count), o.rep, g);
      progress(`${tag} ${count} (ready line: ${said}): iperf3 -P 8${reverse ? ' -R' : ''} mesh ${g.toFixed(2)} Gbit/s`);
      await sleep(500);
    }
    const c = await runConnect(o.mesh, o.row, o.connectCount);
    o.store.set(fig('conn.rate'), workerRow(count), o.rep, c.perSec);
    o.store.set(fig('conn.errors'), workerRow(count), o.rep, c.errors);
    progress(`${tag} ${count}: new connections mesh ${c.perSec.toFixed(0)}/s, errors ${c.errors}`);
  }
}

// ---------- setup ----------

async function startServers(mesh: BenchMesh): Promise<void> {
  for (const pod of ['productpage', 'plain']) {
    const ns = mesh.topo.podNetns(pod);
    await startIn(mesh.topo, ns, process.execPath, [HTTP_SERVER_JS, String(BENCH_PORTS.http)], /"listening"/, 10_000);
    await mesh.harness.startApp(pod, 'echo', BENCH_PORTS.echo);
    await startIn(mesh.topo, ns, 'iperf3', ['-s', '-p', String(BENCH_PORTS.iperf), '--forceflush'], /Server listening/, 10_000);
  }
}

const countAccessLines = (mesh: BenchMesh): number => mesh.ztunnels.reduce((n, z) => n + z.handle.out.filter((l) => l.includes('"scope":"access"')).length, 0);

/**
 * Every row answers a 1 KiB body before anything is timed (and the HBONE pool is warm), and
 * goes where its label says: the ztunnel rows add access-log lines, the direct, stunnel and
 * haproxy rows add none (their traffic is not captured).
 */
async function checkRows(mesh: BenchMesh, rows: Row[]): Promise<void> {
  for (const row of rows) {
    const url = `http://${row.host}:${row.port('http')}/`;
    // Both ztunnels log a mesh connection, not at the same moment: start from a quiet log.
    let logged = countAccessLines(mesh);
    for (let quiet = 0; quiet < 10; ) {
      await sleep(100);
      const now = countAccessLines(mesh);
      quiet = now === logged ? quiet + 1 : 0;
      logged = now;
    }
    const r = await runIn(mesh.topo.podNetns(row.from), 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', '--max-time', '5', url], 10_000);
    if (r.stdout.trim() !== '200 1024') throw new Error(`${row.label}: GET ${url} gave '${r.stdout.trim()}' (curl exit ${r.code}), expected '200 1024'`);
    const viaZtunnel = row.key === 'mesh' || row.key === 'passthrough';
    const end = Date.now() + 3000;
    while (Date.now() < end && (viaZtunnel ? countAccessLines(mesh) === logged : true)) await sleep(100);
    if ((countAccessLines(mesh) > logged) !== viaZtunnel) {
      throw new Error(`${row.label}: the ztunnels ${viaZtunnel ? 'logged no' : 'logged an'} access-log line for GET ${url}; the row does not take the path its label says`);
    }
  }
}

interface Versions {
  [k: string]: string;
}

function firstLine(file: string, args: string[]): string {
  const r = spawnSync(file, args, { encoding: 'utf8', timeout: 10_000 });
  return `${r.stdout ?? ''}\n${r.stderr ?? ''}`.split('\n').map((l) => l.trim()).find((l) => l !== '' && !/^Initializing/.test(l)) ?? 'unknown';
}

async function readMachine(): Promise<Versions> {
  const a = readBoxCpu();
  const load = os.loadavg().map((l) => l.toFixed(2)).join(' ');
  await sleep(2000);
  const busy = buildBoxPercent(a, readBoxCpu(), os.availableParallelism());
  const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
  const ac = (createRequire(import.meta.url)('autocannon/package.json') as { version: string }).version;
  return {
    nproc: String(os.availableParallelism()),
    CPU: model,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    kernel: os.release(),
    node: process.version,
    stunnel: firstLine('stunnel4', ['-version']),
    haproxy: firstLine('haproxy', ['-v']),
    iperf3: firstLine('iperf3', ['--version']),
    openssl: firstLine('openssl', ['version']),
    autocannon: ac,
    'before the run: load average / machine CPU busy (2 s)': `${load} / ${busy.toFixed(0)} % of ${100 * os.availableParallelism()} %`,
  };
}

// ---------- report ----------

interface Figure {
  id: string;
  title: string;
  unit: string;
  digits: number;
  rows: RowKey[];
  /** The row the × column divides by. */
  base?: RowKey;
  /** Also a column "added over direct" (per-repetition difference), for latencies. */
  added?: boolean;
}

function buildReport(o: {
  store: SampleStore;
  reps: number;
  rows: Row[];
  figures: Figure[];
  machine: Versions;
  command: string;
  seconds: number;
  connectCount: number;
  notes: string[];
  only: Only;
  workerCounts: readonly number[];
  workerReported: ReadonlyMap<number, string>;
  mainWorkers: string;
  memoryMethod: string;
}): string {
  const { store, reps } = o;
  const out: string[] = ['# ztunnel-ts against direct, stunnel4 and haproxy (issue 10)', ''];
  out.push(`Date: ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC. Command: \`${o.command}\` (as root, after \`npx tsc -p tsconfig.build.json\`), ${((performance.now() - t0) / 1000).toFixed(0)} s wall, ${reps} repetition(s), ${o.seconds} s per run.`, '');
  out.push('| machine and versions | |', '|---|---|');
  for (const [k, v] of Object.entries(o.machine)) out.push(`| ${k} | ${v} |`);
  out.push('');
  out.push(
    'One topology: two node namespaces joined by a bridge, the kernel capture path (ipset, marks, TPROXY), one ztunnel-ts per node. ' +
      'Rows, interleaved inside each repetition: ' +
      o.rows.map((r) => `**${r.key}** = ${r.label}`).join('; ') +
      (o.only === 'all'
        ? '. The stunnel pair and haproxy run between the same pods from second, non-mesh addresses on those pods (not captured). '
        : `. A single-section run (--only=${o.only}): the stunnel pair and haproxy are not started. `) +
      'Load generators, servers and proxies share the cores: compare ratios. Each cell: median (min–max) over the repetitions; goal ratios are medians of the per-repetition ratios.',
  );
  out.push('');
  // A single-section run (--only) lists only the goals it measured.
  const goals = buildGoals()
    .map((g) => evaluateGoal(g, store, reps))
    .filter((g) => o.only === 'all' || g.met !== undefined);
  out.push('## Goals (issue 10, P1–P7)', '');
  if (goals.length > 0) out.push(...buildGoalTable(goals), '');
  if (o.workerCounts.length > 0) out.push(buildWorkersSummary(store, reps, o.workerCounts, o.mainWorkers), '');
  else out.push(`The main rows ran with ${o.mainWorkers} worker thread(s) (the process default).`, '');
  if (o.only !== 'workers') out.push(`P6 method: ${o.memoryMethod}`, '');
  out.push('![goal ratios](perf.svg)', '');
  let n = 0;
  if (o.workerCounts.length > 0) {
    n += 1;
    out.push(
      `## ${n}. Worker threads: ${o.workerCounts.join(' vs ')} (ZTUNNEL_WORKER_THREADS, both ztunnels restarted for each count, order alternating per repetition; iperf3 ${o.seconds} s, ${o.connectCount} new connections at concurrency ${CONNECT_CONCURRENCY})`,
      '',
      ...buildWorkersTable(store, reps, o.workerCounts, o.workerReported),
      '',
    );
  }
  for (const f of o.figures.filter((x) => x.rows.some((k) => store.get(x.id, k).some(Number.isFinite)))) {
    n += 1;
    out.push(`## ${n}. ${f.title}`, '');
    const hasBase = f.base !== undefined;
    out.push(
      `| row | ${f.unit} |${hasBase ? ` × ${f.base} |` : ''}${f.added ? ` added over direct, ${f.unit} |` : ''}`,
      `|---|---:|${hasBase ? '---:|' : ''}${f.added ? '---:|' : ''}`,
    );
    for (const key of f.rows) {
      const v = buildSpread(store.get(f.id, key));
      let cells = `| ${key} | ${formatSpread(v, f.digits)} |`;
      if (hasBase) cells += ` ${formatSpread(buildSpread(Array.from({ length: reps }, (_, i) => store.at(f.id, key, i) / store.at(f.id, f.base!, i))))} |`;
      if (f.added) cells += ` ${key === 'direct' ? '–' : formatSpread(buildSpread(Array.from({ length: reps }, (_, i) => store.at(f.id, key, i) - store.at(f.id, 'direct', i))), f.digits)} |`;
      out.push(cells);
    }
    out.push('');
  }
  out.push('## Notes', '', ...o.notes.map((x) => `- ${x}`), '');
  return out.join('\n');
}

// ---------- main ----------

type Only = 'all' | 'workers' | 'memory';

/** `--workers=1,2` → [1, 2]; 'off' → []; undefined for a bad list (each 1..64, distinct, at least two). */
function parseWorkerCounts(text: string): number[] | undefined {
  if (text === 'off') return [];
  const v = text.split(',').map((x) => Number(x.trim()));
  if (v.length < 2 || v.some((x) => !Number.isInteger(x) || x < 1 || x > 64) || new Set(v).size !== v.length) return undefined;
  return v;
}

async function main(argv: string[]): Promise<number> {
  let values: { quick?: boolean; reps?: string; only?: string; workers?: string; out?: string; svg?: string; prefix?: string; 'node-args'?: string; 'self-check'?: boolean; help?: boolean };
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      options: {
        quick: { type: 'boolean' },
        reps: { type: 'string' },
        only: { type: 'string' },
        workers: { type: 'string' },
        out: { type: 'string' },
        svg: { type: 'string' },
        prefix: { type: 'string' },
        'node-args': { type: 'string' },
        'self-check': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    say(USAGE);
    return 0;
  }
  if (values['self-check']) {
    for (const d of runSelfCheck()) say(`ok - ${d}`);
    return 0;
  }
  const quick = values.quick === true;
  const reps = Number(values.reps ?? (quick ? 1 : 3));
  if (!Number.isInteger(reps) || reps < 1 || reps > 20) {
    process.stderr.write(`--reps takes 1..20\n${USAGE}`);
    return 2;
  }
  const only = (values.only ?? 'all') as Only;
  if (!['all', 'workers', 'memory'].includes(only)) {
    process.stderr.write(`--only takes workers or memory\n${USAGE}`);
    return 2;
  }
  const workerCounts = only === 'memory' ? [] : parseWorkerCounts(values.workers ?? '1,2');
  if (workerCounts === undefined || (only === 'workers' && workerCounts.length === 0)) {
    process.stderr.write(`--workers takes a list of at least two distinct counts 1..64 (e.g. 1,2)${only === 'all' ? ' or off' : ''}\n${USAGE}`);
    return 2;
  }
  if (process.platform !== 'linux' || process.getuid?.() !== 0) {
    process.stderr.write('perf: needs root on Linux (network namespaces, iptables, ipset)\n');
    return 1;
  }
  const missing = ['ip', 'ipset', 'iptables-nft-restore', 'curl', 'ss', 'iperf3', 'stunnel4', 'haproxy', 'openssl'].filter(
    (t) => spawnSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' }).status !== 0,
  );
  if (missing.length > 0) {
    process.stderr.write(`perf: missing tools: ${missing.join(' ')} (apt-get install -y iproute2 ipset iptables curl iperf3 stunnel4 haproxy openssl)\n`);
    return 1;
  }
  const seconds = quick ? 3 : 10;
  const connectCount = quick ? 500 : 2000;
  const idlePerStep = quick ? 1000 : 2000;
  const out = values.out ?? join(REPO, 'bench', only === 'all' ? 'RESULTS-perf.md' : `RESULTS-perf-${only}.md`);
  const svgOut = values.svg ?? (values.out !== undefined || only !== 'all' ? out.replace(/(\.md)?$/, '.svg') : join(REPO, 'bench', 'perf.svg'));
  const prefix = values.prefix ?? `zp${process.pid % 10000}`;
  const workDir = join('/tmp', `${prefix}-perf`);
  mkdirSync(workDir, { recursive: true });

  progress('reading the machine (2 s of background load) ...');
  const machine = await readMachine();
  progress(`machine: ${machine['before the run: load average / machine CPU busy (2 s)']}`);
  const ztunnelNodeArgs = values['node-args'] ? values['node-args'].split(' ').filter(Boolean) : undefined;
  if (ztunnelNodeArgs) progress(`ztunnel node flags: ${ztunnelNodeArgs.join(' ')}`);
  const mesh = await startBenchMesh({ prefix, ztunnelNodeArgs, log: (s) => progress(s) });
  let baselines: Baselines | undefined;
  try {
    await startServers(mesh);
    const mainWorkers = [...new Set(mesh.ztunnels.map((z) => parseWorkerCount(z.handle.out)))].join(' / ');
    progress(`worker threads of the main rows (ztunnel-ts ready line): ${mainWorkers}`);
    if (only === 'all') {
      progress('starting the stunnel4 pair and haproxy ...');
      baselines = await startBaselines(mesh.topo, workDir);
    }
    const rows = buildRows(mesh, baselines);
    await checkRows(mesh, rows);
    progress('every row answers 200 with 1 KiB');
    const row = (k: RowKey): Row => rows.find((r) => r.key === k)!;
    const store = new SampleStore();
    const all: RowKey[] = rows.map((r) => r.key);
    const proxied = all.filter((k) => k !== 'direct');
    const notes: string[] = [];
    const workerReported = new Map<number, string>();
    const gcPreloadArgs = writeGcPreload(workDir);
    let unsettled = 0;

    /** The five rows side by side: new connections, HTTP saturated and at 1,000 req/s, iperf3 1 and 8 streams each way. */
    const runMainRows = async (rep: number): Promise<void> => {
      const tag = `rep ${rep + 1}/${reps}`;
      for (const k of all) {
        const r = await runConnect(mesh, row(k), connectCount);
        store.set('conn.rate', k, rep, r.perSec);
        store.set('conn.errors', k, rep, r.errors);
        progress(`${tag} new connections ${k}: ${r.perSec.toFixed(0)}/s, errors ${r.errors}`);
        await sleep(1000);
      }
      for (const k of all) {
        const r = await runHttp(mesh, row(k), seconds, SAT_CONNECTIONS);
        store.set('http.sat.rps', k, rep, r.rps);
        store.set('http.sat.p50', k, rep, r.p50Ms);
        store.set('http.sat.p99', k, rep, r.p99Ms);
        store.set('http.sat.p999', k, rep, r.p999Ms);
        store.set('http.sat.errors', k, rep, r.errors + r.non2xx + r.timeouts);
        progress(`${tag} HTTP saturated ${k}: ${r.rps.toFixed(0)} req/s, p50/p99/p99.9 ${r.p50Ms.toFixed(2)}/${r.p99Ms.toFixed(2)}/${r.p999Ms.toFixed(2)} ms, errors ${r.errors}`);
        await sleep(500);
      }
      for (const k of all) {
        const r = await runHttp(mesh, row(k), seconds, FIXED_CONNECTIONS, FIXED_RATE);
        store.set('http.1k.rps', k, rep, r.rps);
        store.set('http.1k.p50', k, rep, r.p50Ms);
        store.set('http.1k.p99', k, rep, r.p99Ms);
        store.set('http.1k.p999', k, rep, r.p999Ms);
        store.set('http.1k.errors', k, rep, r.errors + r.non2xx + r.timeouts);
        // vCPU per 1,000 req/s = CPU seconds spent per 1,000 requests.
        for (const [side, sec] of r.cpuSec) store.set(`http.1k.cpu.${side}`, k, rep, (sec * 1000) / r.requests);
        progress(`${tag} HTTP 1,000 req/s ${k}: ${r.rps.toFixed(0)} req/s, p50/p99/p99.9 ${r.p50Ms.toFixed(2)}/${r.p99Ms.toFixed(2)}/${r.p999Ms.toFixed(2)} ms, CPU s per 1k req ${[...r.cpuSec.values()].map((s) => ((s * 1000) / r.requests).toFixed(3)).join('/') || '–'}`);
        await sleep(500);
      }
      for (const streams of [1, 8]) {
        for (const reverse of [false, true]) {
          const fig = `iperf${streams}.${reverse ? 'rev' : 'fwd'}`;
          for (const k of all) {
            const g = await runIperf(mesh, row(k), seconds, streams, reverse);
            store.set(fig, k, rep, g);
            progress(`${tag} iperf3 -P ${streams}${reverse ? ' -R' : ''} ${k}: ${g.toFixed(2)} Gbit/s`);
            await sleep(500);
          }
        }
      }
    };

    for (let rep = 0; rep < reps; rep++) {
      const tag = `rep ${rep + 1}/${reps}`;
      if (only !== 'workers') {
        progress(`${tag} memory: restarting both ztunnels with the GC preload (default worker count) ...`);
        await mesh.restartZtunnels({}, gcPreloadArgs);
        progress(`${tag} memory: ${IDLE_STEPS} steps of ${idlePerStep} idle connections through the mesh ...`);
        const mem = await runIdleMemory(mesh, row('mesh'), idlePerStep);
        unsettled += mem.unsettled;
        for (const [side, v] of mem.idleMb) store.set(`mem.idleMb.${side}`, 'mesh', rep, v);
        for (const [side, v] of mem.kbPerConn) store.set(`mem.kbPerConn.${side}`, 'mesh', rep, v);
        for (const [side, v] of mem.r2) store.set(`mem.r2.${side}`, 'mesh', rep, v);
        for (const [side, v] of mem.stepKb) {
          store.set(`mem.stepMin.${side}`, 'mesh', rep, Math.min(...v));
          store.set(`mem.stepMax.${side}`, 'mesh', rep, Math.max(...v));
        }
        progress(
          `${tag} memory: opened ${mem.opened} (errors ${mem.errors}); idle RSS MB src/dst ${[...mem.idleMb.values()].map((v) => v.toFixed(0)).join('/')}, ` +
            `KB per connection (slope) ${[...mem.kbPerConn.values()].map((v) => v.toFixed(2)).join('/')}, r² ${[...mem.r2.values()].map((v) => v.toFixed(4)).join('/')}, ` +
            `single steps ${[...mem.stepKb.values()].map((v) => v.map((x) => x.toFixed(1)).join(' ')).join(' / ')}`,
        );
      }
      if (only === 'all') {
        // The main rows measure the ztunnel as shipped: restarted without the GC preload.
        progress(`${tag}: restarting both ztunnels as started (default worker count, no preload) ...`);
        await mesh.restartZtunnels({});
        await runConnect(mesh, row('mesh'), 50);
        await runMainRows(rep);
      }
      // Leaves the ztunnels with the last worker count; the next repetition restarts them.
      if (workerCounts.length > 0) await runWorkers({ mesh, row: row('mesh'), counts: workerCounts, rep, reps, seconds, connectCount, store, reported: workerReported });
    }

    const w = (name: string, p50: string): Figure[] => [
      { id: `http.${name}.p50`, title: `${p50}: p50 latency`, unit: 'ms', digits: 3, rows: all, base: 'direct', added: true },
      { id: `http.${name}.p99`, title: `${p50}: p99 latency`, unit: 'ms', digits: 3, rows: all, base: 'direct', added: true },
      { id: `http.${name}.p999`, title: `${p50}: p99.9 latency`, unit: 'ms', digits: 3, rows: all, base: 'direct', added: true },
    ];
    const sat = `HTTP keep-alive, autocannon, ${SAT_CONNECTIONS} connections, saturated, ${seconds} s, 1 KiB responses`;
    const fixed = `HTTP keep-alive, autocannon overallRate ${FIXED_RATE} req/s over ${FIXED_CONNECTIONS} connections, ${seconds} s, 1 KiB responses`;
    const figures: Figure[] = [
      { id: 'http.sat.rps', title: `${sat}: req/s`, unit: 'req/s', digits: 0, rows: all, base: 'direct' },
      ...w('sat', sat),
      { id: 'http.sat.errors', title: `${sat}: errors + non-2xx + timeouts`, unit: 'count', digits: 0, rows: all },
      { id: 'http.1k.rps', title: `${fixed}: req/s achieved`, unit: 'req/s', digits: 0, rows: all },
      ...w('1k', fixed),
      { id: 'http.1k.cpu.src', title: `${fixed}: proxy CPU per 1,000 req/s, source side (ztunnel on sleep's node; stunnel client; haproxy)`, unit: 'vCPU', digits: 3, rows: proxied },
      { id: 'http.1k.cpu.dst', title: `${fixed}: proxy CPU per 1,000 req/s, destination side (ztunnel on productpage's node; stunnel server)`, unit: 'vCPU', digits: 3, rows: ['mesh', 'stunnel'] },
      { id: 'iperf1.fwd', title: `iperf3, 1 stream, client → server, ${seconds} s`, unit: 'Gbit/s', digits: 2, rows: all, base: 'direct' },
      { id: 'iperf1.rev', title: `iperf3, 1 stream, server → client (-R), ${seconds} s`, unit: 'Gbit/s', digits: 2, rows: all, base: 'direct' },
      { id: 'iperf8.fwd', title: `iperf3, 8 streams (-P 8), client → server, ${seconds} s`, unit: 'Gbit/s', digits: 2, rows: all, base: 'direct' },
      { id: 'iperf8.rev', title: `iperf3, 8 streams (-P 8), server → client (-R), ${seconds} s`, unit: 'Gbit/s', digits: 2, rows: all, base: 'direct' },
      { id: 'conn.rate', title: `New connections: a TCP connection per 1-byte echo, ${connectCount} connections, concurrency ${CONNECT_CONCURRENCY}`, unit: 'connections/s', digits: 0, rows: all, base: 'direct' },
      { id: 'conn.errors', title: 'New connections: errors', unit: 'count', digits: 0, rows: all },
      { id: 'mem.idleMb.src', title: 'Idle RSS of the source ztunnel (after a warm-up, HBONE session pooled)', unit: 'MB', digits: 1, rows: ['mesh'] },
      { id: 'mem.idleMb.dst', title: 'Idle RSS of the destination ztunnel', unit: 'MB', digits: 1, rows: ['mesh'] },
      { id: 'mem.kbPerConn.src', title: `RSS (RssAnon) per idle proxied connection, source ztunnel: slope over ${IDLE_STEPS} steps of ${idlePerStep} idle mesh connections`, unit: 'KB', digits: 2, rows: ['mesh'] },
      { id: 'mem.kbPerConn.dst', title: 'RSS (RssAnon) per idle proxied connection, destination ztunnel: slope', unit: 'KB', digits: 2, rows: ['mesh'] },
      { id: 'mem.r2.src', title: 'P6 fit quality, source ztunnel: r² of RssAnon over open connections (1 = a straight line)', unit: 'r²', digits: 4, rows: ['mesh'] },
      { id: 'mem.r2.dst', title: 'P6 fit quality, destination ztunnel: r²', unit: 'r²', digits: 4, rows: ['mesh'] },
      { id: 'mem.stepMin.src', title: 'P6 diagnostic, source ztunnel: smallest single step (its RssAnon rise ÷ its connections; what one two-point read would have said)', unit: 'KB', digits: 2, rows: ['mesh'] },
      { id: 'mem.stepMax.src', title: 'P6 diagnostic, source ztunnel: largest single step', unit: 'KB', digits: 2, rows: ['mesh'] },
      { id: 'mem.stepMin.dst', title: 'P6 diagnostic, destination ztunnel: smallest single step', unit: 'KB', digits: 2, rows: ['mesh'] },
      { id: 'mem.stepMax.dst', title: 'P6 diagnostic, destination ztunnel: largest single step', unit: 'KB', digits: 2, rows: ['mesh'] },
    ];
    const memoryMethod =
      `each repetition restarts both ztunnels (default worker count) with a bench-only preload (GC_PRELOAD_SOURCE in bench/harness.ts, \`--expose-gc --require\`: SIGUSR2 = a full GC, in worker threads too), ` +
      `warms up (20 connections), collects garbage and reads the idle RSS (VmRSS). Then ${IDLE_STEPS} steps of ${idlePerStep.toLocaleString('en-US')} idle mesh connections ` +
      `(up to ${(IDLE_STEPS * idlePerStep).toLocaleString('en-US')} held open, one echoed byte each); after each step two full GCs, then RssAnon (anonymous resident memory ` +
      `from /proc/PID/status: heap, buffers, stacks; not file-backed code pages) sampled every ${SETTLE_EVERY_MS} ms until ${SETTLE_WINDOW} samples lie within ${SETTLE_TOLERANCE_KB} KB ` +
      `(at most ${SETTLE_MAX_MS / 1000} s), their mean. KB per idle connection = the least-squares slope of those points over the connections open (from the first step on: ` +
      `the step from 0 also carries one-off growth of a process that was idle, 1.5–2 × the later steps). The old method (one VmRSS read 3 s after opening 1,000 connections ` +
      `minus one before, no GC) measured mostly when V8 had last collected: RSS moves in 4–30 MB jumps with the garbage of connection setup, so its spread ran −14..+32 KB. ` +
      `The main rows then run on ztunnels restarted without the preload.` +
      (unsettled > 0 ? ` ${unsettled} point(s) in this run did not settle within ${SETTLE_MAX_MS / 1000} s (read anyway).` : '');
    if (only === 'all') notes.push(
      'Latency percentiles come from every 2xx response time autocannon reports (hrtime, sub-ms), computed by bench/autocannon-client.ts; autocannon\'s own histogram keeps whole milliseconds.',
      'CPU is utime+stime of the proxy processes from /proc over the run, divided by the requests answered: CPU seconds per 1,000 requests = vCPU per 1,000 req/s.',
      'haproxy runs with its default thread count; the stunnel pair uses its default TLS 1.3 cipher and group choice (the certificates are ECDSA P-256).',
      'Connection setup and memory are done here (the figures P6/P7 need); bench/throughput.ts is left as it was (its wrk/node-loop HTTP section is superseded by this file).',
    );
    if (workerCounts.length > 0) {
      notes.push(
        `Worker threads: for each count both ztunnels are restarted with ZTUNNEL_WORKER_THREADS set (SIGTERM, new process, ready on /healthz/ready), warmed up (50 connections, a 1 s iperf3), then measured on the mesh row; the order of the counts alternates per repetition. ` +
          "The count each ztunnel reports is read from its 'ztunnel-ts ready' log line ('1 (not supported)' = a build without worker threads, where the variable is ignored and both columns measure the same thing).",
      );
    }
    const report = buildReport({
      store,
      reps,
      rows,
      figures,
      machine,
      command: `node dist/bench/perf.js${argv.length ? ` ${argv.join(' ')}` : ''}`,
      seconds,
      connectCount,
      notes,
      only,
      workerCounts,
      workerReported,
      mainWorkers,
      memoryMethod,
    });
    const goals = buildGoals()
      .map((g) => evaluateGoal(g, store, reps))
      .filter((g) => only === 'all' || g.met !== undefined);
    say('');
    say(report);
    writeFileSync(out, report.replace('](perf.svg)', `](${svgOut.split('/').pop()})`));
    writeFileSync(svgOut, buildGoalSvg(goals, `ztunnel-ts issue 10 goals: ${reps} repetition(s), ${seconds} s runs${quick ? ' (--quick)' : ''}`));
    progress(`wrote ${out} and ${svgOut}`);
    return 0;
  } catch (err) {
    process.stderr.write(`perf: ${(err as Error).message}\n`);
    if (baselines !== undefined) process.stderr.write(`--- stunnel / haproxy (last lines):\n${baselines.stderrTail()}\n`);
    for (const z of mesh.ztunnels) {
      const tail = buildZtunnelTail(z.handle);
      if (tail.length) process.stderr.write(`--- ztunnel ${z.node} (last lines):\n${tail.join('\n')}\n`);
    }
    return 1;
  } finally {
    baselines?.cleanup();
    await mesh.destroy();
    rmSync(workDir, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(code), 300).unref();
  },
  (err: unknown) => {
    process.stderr.write(`perf: ${(err as Error).message ?? String(err)}\n`);
    process.exit(1);
  },
);
