// Issue 10's benchmarks (item 1: the harness), side by side in one run on the two-node namespaced
// mesh: HTTP with autocannon (1 KiB responses, keep-alive; saturated at 100 connections, and a
// fixed 1,000 req/s over 16 connections), bulk with iperf3 (1 and 8 streams, each direction),
// new connections per second and idle-connection memory; rows: direct (no proxy), ztunnel-ts
// mesh (HBONE), a stunnel4 pair (mTLS 1.3) between the same two pods, ztunnel-ts passthrough
// and haproxy (TCP, splice) on the same hops. Medians of ≥ 3 repetitions with min–max, goals
// P1–P7 with the measured ratio, an SVG chart of the ratios.
// Run as root after a build: node dist/bench/perf.js [--quick] [--reps N] [--out FILE.md] [--svg FILE.svg]
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
import { LOAD_CLIENT_JS, buildBoxPercent, buildZtunnelTail, getClockTicks, readBoxCpu, readProc, runIn, startBenchMesh, startIn, type BenchMesh } from './harness.js';
import { SampleStore, buildGoalSvg, buildGoalTable, buildGoals, buildSpread, evaluateGoal, formatSpread, runSelfCheck, type RowKey } from './perf-report.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const AUTOCANNON_JS = join(HERE, 'autocannon-client.js');
const HTTP_SERVER_JS = join(HERE, 'http-server.js');
const REPO = join(HERE, '..', '..');

const USAGE = `usage: node dist/bench/perf.js [--quick] [--reps N] [--out FILE.md] [--svg FILE.svg] [--prefix NAME]
       node dist/bench/perf.js --self-check
  --quick      1 repetition, 3 s runs, 500 new connections (validates the harness; figures are noise)
  --reps N     repetitions (default 3; medians and min–max over them)
  --out FILE   markdown report (default bench/RESULTS-perf.md)
  --svg FILE   chart of the goal ratios (default: --out with .svg, or bench/perf.svg)
  --node-args=FLAGS  node flags for the two ztunnels, e.g. --node-args=--max-semi-space-size=2
  --self-check assert the report arithmetic (median, spread, goals, SVG) and exit
`;

const SAT_CONNECTIONS = 100;
const FIXED_CONNECTIONS = 16;
const FIXED_RATE = 1000;
const CONNECT_CONCURRENCY = 20;
const IDLE_CONNECTIONS = 1000;

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
  /** The proxy processes whose CPU is charged to this row, with the side names of P5. */
  procs: { side: string; pid: number }[];
}

function buildRows(mesh: BenchMesh, b: Baselines): Row[] {
  const ip = (pod: string): string => mesh.topo.getPod(pod).ip;
  const zt = (pod: string): number => mesh.ztunnels.find((z) => z.node === mesh.topo.getPod(pod).node)!.pid;
  const std = (svc: BenchService): number => BENCH_PORTS[svc];
  return [
    { key: 'direct', label: 'direct: outsider → plain (no proxy)', from: 'outsider', host: ip('plain'), port: std, procs: [] },
    { key: 'mesh', label: 'ztunnel-ts mesh: sleep → productpage (HBONE, 2 ztunnels)', from: 'sleep', host: ip('productpage'), port: std, procs: [{ side: 'src', pid: zt('sleep') }, { side: 'dst', pid: zt('productpage') }] },
    {
      key: 'stunnel',
      label: 'stunnel4 pair: sleep → productpage (mTLS 1.3, P-256)',
      from: 'sleep',
      host: '127.0.0.1',
      port: (svc) => STUNNEL_LOCAL_PORTS[svc],
      procs: [{ side: 'src', pid: b.stunnelClient.pid! }, { side: 'dst', pid: b.stunnelServer.pid! }],
    },
    { key: 'passthrough', label: 'ztunnel-ts passthrough: sleep → plain (source ztunnel, TCP)', from: 'sleep', host: ip('plain'), port: std, procs: [{ side: 'src', pid: zt('sleep') }] },
    { key: 'haproxy', label: 'haproxy TCP + splice: sleep → plain (in the source ztunnel netns)', from: 'sleep', host: b.haproxyIp, port: (svc) => HAPROXY_PORTS[svc], procs: [{ side: 'src', pid: b.haproxy.pid! }] },
  ];
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
  const before = row.procs.map((p) => readProc(p.pid).ticks);
  const url = `http://${row.host}:${row.port('http')}/`;
  const args = [AUTOCANNON_JS, url, String(connections), String(seconds), ...(rate === undefined ? [] : [String(rate)])];
  const r = await runIn(mesh.topo.podNetns(row.from), process.execPath, args, (seconds + 45) * 1000);
  const cpuSec = new Map(row.procs.map((p, i) => [p.side, (readProc(p.pid).ticks - before[i]!) / getClockTicks()]));
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

/** Idle RSS of both ztunnels after a warm-up, then RSS per idle mesh connection (the old throughput.ts §4, with the per-side split P6 asks for). */
async function runIdleMemory(mesh: BenchMesh, row: Row): Promise<{ idleMb: Map<string, number>; kbPerConn: Map<string, number>; opened: number; errors: number }> {
  await runConnect(mesh, row, 5);
  await sleep(1500);
  const before = row.procs.map((p) => readProc(p.pid).rssKb);
  const { child, lines } = await startIn(
    mesh.topo,
    mesh.topo.podNetns(row.from),
    process.execPath,
    [LOAD_CLIENT_JS, 'idle', row.host, String(row.port('echo')), String(IDLE_CONNECTIONS), '20000'],
    /"ready"/,
    60_000,
  );
  const ready = JSON.parse(lines.find((l) => l.includes('"ready"')) ?? '{}') as { ready?: number; errors?: number };
  await sleep(3000);
  const opened = ready.ready ?? 0;
  const kbPerConn = new Map(row.procs.map((p, i) => [p.side, (readProc(p.pid).rssKb - before[i]!) / Math.max(1, opened)]));
  child.kill('SIGTERM');
  await sleep(2000);
  return { idleMb: new Map(row.procs.map((p, i) => [p.side, before[i]! / 1024])), kbPerConn, opened, errors: ready.errors ?? 0 };
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

function buildReport(o: { store: SampleStore; reps: number; rows: Row[]; figures: Figure[]; machine: Versions; command: string; seconds: number; connectCount: number; notes: string[] }): string {
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
      '. The stunnel pair and haproxy run between the same pods from second, non-mesh addresses on those pods (not captured). ' +
      'Load generators, servers and proxies share the cores: compare ratios. Each cell: median (min–max) over the repetitions; goal ratios are medians of the per-repetition ratios.',
  );
  out.push('');
  const goals = buildGoals().map((g) => evaluateGoal(g, store, reps));
  out.push('## Goals (issue 10, P1–P7)', '', ...buildGoalTable(goals), '', '![goal ratios](perf.svg)', '');
  let n = 0;
  for (const f of o.figures) {
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

async function main(argv: string[]): Promise<number> {
  let values: { quick?: boolean; reps?: string; out?: string; svg?: string; prefix?: string; 'node-args'?: string; 'self-check'?: boolean; help?: boolean };
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      options: {
        quick: { type: 'boolean' },
        reps: { type: 'string' },
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
  const out = values.out ?? join(REPO, 'bench', 'RESULTS-perf.md');
  const svgOut = values.svg ?? (values.out !== undefined ? values.out.replace(/(\.md)?$/, '.svg') : join(REPO, 'bench', 'perf.svg'));
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
    progress('starting the stunnel4 pair and haproxy ...');
    baselines = await startBaselines(mesh.topo, workDir);
    const rows = buildRows(mesh, baselines);
    await checkRows(mesh, rows);
    progress('every row answers 200 with 1 KiB');
    const row = (k: RowKey): Row => rows.find((r) => r.key === k)!;
    const store = new SampleStore();
    const all: RowKey[] = rows.map((r) => r.key);
    const proxied = all.filter((k) => k !== 'direct');
    const notes: string[] = [];

    for (let rep = 0; rep < reps; rep++) {
      const tag = `rep ${rep + 1}/${reps}`;
      progress(`${tag} memory: ${IDLE_CONNECTIONS} idle connections through the mesh ...`);
      const mem = await runIdleMemory(mesh, row('mesh'));
      for (const [side, v] of mem.idleMb) store.set(`mem.idleMb.${side}`, 'mesh', rep, v);
      for (const [side, v] of mem.kbPerConn) store.set(`mem.kbPerConn.${side}`, 'mesh', rep, v);
      progress(`${tag} memory: opened ${mem.opened} (errors ${mem.errors}); idle RSS MB src/dst ${[...mem.idleMb.values()].map((v) => v.toFixed(0)).join('/')}, KB per connection ${[...mem.kbPerConn.values()].map((v) => v.toFixed(1)).join('/')}`);

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
      { id: 'mem.kbPerConn.src', title: `RSS per idle proxied connection, source ztunnel (${IDLE_CONNECTIONS} idle mesh connections, read 3 s after opening)`, unit: 'KB', digits: 1, rows: ['mesh'] },
      { id: 'mem.kbPerConn.dst', title: 'RSS per idle proxied connection, destination ztunnel', unit: 'KB', digits: 1, rows: ['mesh'] },
    ];
    notes.push(
      'Latency percentiles come from every 2xx response time autocannon reports (hrtime, sub-ms), computed by bench/autocannon-client.ts; autocannon\'s own histogram keeps whole milliseconds.',
      'CPU is utime+stime of the proxy processes from /proc over the run, divided by the requests answered: CPU seconds per 1,000 requests = vCPU per 1,000 req/s.',
      'haproxy runs with its default thread count; the stunnel pair uses its default TLS 1.3 cipher and group choice (the certificates are ECDSA P-256).',
      'Connection setup and memory are done here (the figures P6/P7 need); bench/throughput.ts is left as it was (its wrk/node-loop HTTP section is superseded by this file).',
    );
    const report = buildReport({ store, reps, rows, figures, machine, command: `node dist/bench/perf.js${argv.length ? ` ${argv.join(' ')}` : ''}`, seconds, connectCount, notes });
    const goals = buildGoals().map((g) => evaluateGoal(g, store, reps));
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
