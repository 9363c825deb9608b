// Side-by-side data-path bench on one two-node namespaced mesh, in one run: iperf3 single
// stream both ways, HTTP keep-alive latency, new-connection rate and idle-connection memory,
// each for the mesh path and for the same traffic with no ztunnel in the way, reported as
// ratios, with each ztunnel's CPU % (/proc utime+stime) and peak RSS (VmHWM) per scenario.
// Run as root after a build: node dist/bench/throughput.js [--quick] [--out FILE] [--no-authz] [--cpu-prof]
// A full run writes bench/RESULTS.md; --quick writes only with --out.
// Must never: pass or fail on a timing (it reports; exit 1 only when a scenario cannot run),
// run anything unbounded, or touch anything outside the namespaces it created (the
// Topology removes them on exit, failure and signals).

import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { KERNEL_LOCAL_PORT_RANGE, ZTUNNEL_LOCAL_PORT_RANGE } from '../src/redirect/constants.js';
import {
  LOAD_CLIENT_JS,
  buildBoxPercent,
  buildCpuPercent,
  buildZtunnelTail,
  readBoxCpu,
  readProc,
  resetPeakRss,
  runIn,
  startBenchMesh,
  startIn,
  type BenchMesh,
  type ProcSample,
} from './harness.js';

const USAGE = `usage: node dist/bench/throughput.js [--quick] [--out FILE] [--no-authz] [--cpu-prof] [--prefix NAME]
       node dist/bench/throughput.js --only connect [--rounds N] [--quick] [--out FILE]
  --quick      3 s iperf3 / HTTP runs, 500 new connections (default 8 s / 10 s / 2000)
  --out FILE   where to write the markdown report (default bench/RESULTS.md for a full run; none for --quick)
  --no-authz   do not run dist/bench/authorize.bench.js for the report
  --cpu-prof   instead of the benches: profile both ztunnels (node --cpu-prof) during the mesh
               iperf3 runs and print the top self-time functions (appended to --out FILE if given)
  --only connect  only section 3, N rounds (default 3) of direct, mesh, passthrough, and passthrough with
               the source ztunnel netns' port range set back to the kernel default (the state before
               ZTUNNEL_LOCAL_PORT_RANGE), rows summed over the rounds; printed, and written to --out FILE
`;

const IPERF_PORT = 5201;
const HTTP_PORT = 8080;
const ECHO_PORT = 9000;
const IDLE_CONNECTIONS = 1000;
const CONNECT_CONCURRENCY = 20;
const HTTP_CONNECTIONS = 50;

const say = (s = ''): void => void process.stdout.write(`${s}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface PathSpec {
  key: 'direct' | 'mesh' | 'passthrough' | 'inbound';
  label: string;
  from: string;
  to: string;
}

const PATHS: readonly PathSpec[] = [
  { key: 'direct', label: 'direct: outsider → plain (no ztunnel)', from: 'outsider', to: 'plain' },
  { key: 'mesh', label: 'mesh: sleep → productpage (HBONE, 2 ztunnels)', from: 'sleep', to: 'productpage' },
  { key: 'passthrough', label: 'passthrough: sleep → plain (source ztunnel, TCP)', from: 'sleep', to: 'plain' },
  { key: 'inbound', label: 'inbound: outsider → productpage (dest ztunnel, plaintext 15006)', from: 'outsider', to: 'productpage' },
];

interface ZtUse {
  node: string;
  cpuPct: number;
  cpuSec: number;
  peakRssKb: number;
}

interface Measured<T> {
  value: T;
  zt: ZtUse[];
  /** Whole machine busy, % of one core (max 100 × nproc). */
  boxPct: number;
}

const CORES = os.availableParallelism();

async function measure<T>(mesh: BenchMesh, run: () => Promise<T>): Promise<Measured<T>> {
  for (const z of mesh.ztunnels) resetPeakRss(z.pid);
  const before = new Map<number, ProcSample>(mesh.ztunnels.map((z) => [z.pid, readProc(z.pid)]));
  const box0 = readBoxCpu();
  const value = await run();
  const boxPct = buildBoxPercent(box0, readBoxCpu(), CORES);
  const zt = mesh.ztunnels.map((z) => {
    const a = before.get(z.pid)!;
    const b = readProc(z.pid);
    return { node: z.node, cpuPct: buildCpuPercent(a, b), cpuSec: (buildCpuPercent(a, b) / 100) * ((b.at - a.at) / 1000), peakRssKb: b.hwmKb };
  });
  return { value, zt, boxPct };
}

function ipOf(mesh: BenchMesh, pod: string): string {
  return mesh.topo.getPod(pod).ip;
}

// ---------- iperf3 ----------

interface IperfResult {
  gbps: number;
  retransmits: number | undefined;
}

async function runIperf(mesh: BenchMesh, p: PathSpec, seconds: number, reverse: boolean): Promise<IperfResult> {
  const args = ['-c', ipOf(mesh, p.to), '-p', String(IPERF_PORT), '-t', String(seconds), '-J', '--connect-timeout', '5000', ...(reverse ? ['-R'] : [])];
  const r = await runIn(mesh.topo.podNetns(p.from), 'iperf3', args, (seconds + 25) * 1000);
  let doc: { error?: string; end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } } };
  try {
    doc = JSON.parse(r.stdout) as typeof doc;
  } catch {
    throw new Error(`iperf3 ${p.key}${reverse ? ' -R' : ''}: no JSON (exit ${r.code}${r.timedOut ? ', timed out' : ''}) ${r.stderr.trim()}`);
  }
  const bps = doc.end?.sum_received?.bits_per_second;
  if (doc.error !== undefined || bps === undefined) throw new Error(`iperf3 ${p.key}${reverse ? ' -R' : ''}: ${doc.error ?? 'no result'}`);
  return { gbps: bps / 1e9, retransmits: doc.end?.sum_sent?.retransmits };
}

// ---------- HTTP keep-alive latency ----------

interface HttpResult {
  tool: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

export function buildWrkDurationMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text.trim());
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 'ms' ? v : m[2] === 's' ? v * 1000 : v * 60_000;
}

export function buildWrkResult(out: string): HttpResult | undefined {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(out)?.[1];
  const p50 = /^\s+50%\s+(\S+)/m.exec(out)?.[1];
  const p99 = /^\s+99%\s+(\S+)/m.exec(out)?.[1];
  if (rps === undefined || p50 === undefined || p99 === undefined) return undefined;
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const errors = non2xx + (sock ? sock.slice(1).reduce((s, n) => s + Number(n), 0) : 0);
  return { tool: 'wrk', rps: Number(rps), p50Ms: buildWrkDurationMs(p50), p99Ms: buildWrkDurationMs(p99), errors };
}

const hasWrk = spawnSync('sh', ['-c', 'command -v wrk'], { stdio: 'ignore' }).status === 0;

async function runHttpLoad(mesh: BenchMesh, p: PathSpec, seconds: number): Promise<HttpResult> {
  const ns = mesh.topo.podNetns(p.from);
  const url = `http://${ipOf(mesh, p.to)}:${HTTP_PORT}/`;
  if (hasWrk) {
    const r = await runIn(ns, 'wrk', ['-t2', `-c${HTTP_CONNECTIONS}`, `-d${seconds}s`, '--timeout', '5s', '--latency', url], (seconds + 30) * 1000);
    const res = buildWrkResult(r.stdout);
    if (res === undefined) throw new Error(`wrk ${p.key}: ${r.stdout.trim()} ${r.stderr.trim()}`);
    return res;
  }
  const r = await runIn(ns, process.execPath, [LOAD_CLIENT_JS, 'http', ipOf(mesh, p.to), String(HTTP_PORT), String(HTTP_CONNECTIONS), String(seconds)], (seconds + 40) * 1000);
  const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { perSec?: number; p50Ms?: number; p99Ms?: number; errors?: number };
  if (j.perSec === undefined) throw new Error(`http load ${p.key}: ${r.stderr.trim()}`);
  return { tool: 'node loop', rps: j.perSec, p50Ms: j.p50Ms ?? NaN, p99Ms: j.p99Ms ?? NaN, errors: j.errors ?? 0 };
}

// ---------- new connection per request ----------

interface ConnectResult {
  count: number;
  errors: number;
  perSec: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  over200ms: number;
  /** Connections that took ≥ 1 s: a lost SYN is retransmitted after 1 s. */
  over1s: number;
}

async function runConnectRate(mesh: BenchMesh, p: PathSpec, count: number): Promise<ConnectResult> {
  const r = await runIn(
    mesh.topo.podNetns(p.from),
    process.execPath,
    [LOAD_CLIENT_JS, 'connect', ipOf(mesh, p.to), String(ECHO_PORT), String(count), String(CONNECT_CONCURRENCY)],
    300_000,
  );
  const j = JSON.parse(r.stdout.trim().split('\n').pop() || '{}') as Partial<ConnectResult> & { over1sCount?: number; over200msCount?: number };
  if (j.perSec === undefined) throw new Error(`connect ${p.key}: exit ${r.code} ${r.stderr.trim()}`);
  return {
    count: j.count ?? 0,
    errors: j.errors ?? 0,
    perSec: j.perSec,
    p50Ms: j.p50Ms ?? NaN,
    p99Ms: j.p99Ms ?? NaN,
    p999Ms: j.p999Ms ?? NaN,
    maxMs: j.maxMs ?? NaN,
    over200ms: j.over200msCount ?? 0,
    over1s: j.over1sCount ?? 0,
  };
}

/** Sets net.ipv4.ip_local_port_range in the ztunnel netns of `node` (the A/B of --only connect). */
async function setZtunnelPortRange(mesh: BenchMesh, node: string, range: { low: number; high: number }): Promise<void> {
  const r = await runIn(mesh.topo.ztunnelNetns(node), 'sysctl', ['-q', '-w', `net.ipv4.ip_local_port_range=${range.low} ${range.high}`], 10_000);
  if (r.code !== 0) throw new Error(`sysctl ip_local_port_range in ${node}'s ztunnel netns: ${r.stderr.trim()}`);
}

/** Section 3 alone, `rounds` times, with the passthrough row run with and without ZTUNNEL_LOCAL_PORT_RANGE. */
async function runConnectOnly(prefix: string, count: number, rounds: number, out: string | undefined): Promise<number> {
  const mesh = await startBenchMesh({ prefix, log: (s) => say(`bench: ${s}`) });
  try {
    await startServers(mesh);
    const srcNode = mesh.topo.getPod('sleep').node;
    const rows: { label: string; key: PathSpec['key']; range: { low: number; high: number }; runs: ConnectResult[] }[] = [
      { label: 'direct: outsider → plain (no ztunnel)', key: 'direct', range: ZTUNNEL_LOCAL_PORT_RANGE, runs: [] },
      { label: 'mesh: sleep → productpage (HBONE)', key: 'mesh', range: ZTUNNEL_LOCAL_PORT_RANGE, runs: [] },
      { label: `passthrough: sleep → plain, ztunnel ports ${ZTUNNEL_LOCAL_PORT_RANGE.low}-${ZTUNNEL_LOCAL_PORT_RANGE.high} (fix)`, key: 'passthrough', range: ZTUNNEL_LOCAL_PORT_RANGE, runs: [] },
      { label: `passthrough: sleep → plain, ztunnel ports ${KERNEL_LOCAL_PORT_RANGE.low}-${KERNEL_LOCAL_PORT_RANGE.high} (before)`, key: 'passthrough', range: KERNEL_LOCAL_PORT_RANGE, runs: [] },
    ];
    for (let i = 0; i < rounds; i++) {
      for (const row of rows) {
        await setZtunnelPortRange(mesh, srcNode, row.range);
        const r = await runConnectRate(mesh, PATHS.find((x) => x.key === row.key)!, count);
        row.runs.push(r);
        say(`bench: round ${i + 1}/${rounds} ${row.label}: p99.9 ${f2(r.p999Ms)} ms, max ${f0(r.maxMs)} ms, ≥ 200 ms ${r.over200ms}, ≥ 1 s ${r.over1s}`);
        // Client TIME_WAITs expire (60 s) only partly between rows; every row sees the same history.
        await sleep(1000);
      }
    }
    await setZtunnelPortRange(mesh, srcNode, ZTUNNEL_LOCAL_PORT_RANGE);
    const md = [
      `## Connection setup tail: \`node dist/bench/throughput.js --only connect --rounds ${rounds}${count === 500 ? ' --quick' : ''}\``,
      '',
      `${rounds} rounds × ${count} new connections per row (1-byte echo, concurrency ${CONNECT_CONCURRENCY}), rows interleaved in each round on one topology; ` +
        'the "before" row sets the source ztunnel netns back to the kernel default port range for its runs.',
      '',
      '| path | connections | errors | p50 ms (median of rounds) | p99 ms (max of rounds) | p99.9 ms (max of rounds) | max ms | ≥ 200 ms | ≥ 1 s |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ];
    for (const row of rows) {
      const sum = (k: 'count' | 'errors' | 'over200ms' | 'over1s'): number => row.runs.reduce((a, r) => a + r[k], 0);
      const max = (k: 'p99Ms' | 'p999Ms' | 'maxMs'): number => Math.max(...row.runs.map((r) => r[k]));
      const p50s = row.runs.map((r) => r.p50Ms).sort((a, b) => a - b);
      md.push(`| ${row.label} | ${sum('count')} | ${sum('errors')} | ${f2(p50s[Math.floor(p50s.length / 2)] ?? NaN)} | ${f2(max('p99Ms'))} | ${f2(max('p999Ms'))} | ${f0(max('maxMs'))} | ${sum('over200ms')} | ${sum('over1s')} |`);
    }
    printAndAppend(md, out);
    return 0;
  } finally {
    await mesh.destroy();
  }
}

/** Prints a report section and appends it to `out` when given. */
function printAndAppend(md: string[], out: string | undefined, note?: string): void {
  md.push('');
  say(md.join('\n'));
  if (note !== undefined) say(note);
  if (out !== undefined) {
    appendFileSync(out, md.join('\n'));
    say(`bench: appended to ${out}`);
  }
}

// ---------- idle-connection memory ----------

interface MemorySide {
  node: string;
  rssBeforeKb: number;
  rssAfterKb: number;
  fdsBefore: number;
  fdsAfter: number;
}

interface MemoryResult {
  opened: number;
  errors: number;
  openMs: number;
  sides: MemorySide[];
}

const countFds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

async function runIdleMemory(mesh: BenchMesh): Promise<MemoryResult> {
  const p = PATHS.find((x) => x.key === 'mesh')!;
  // Warm: the HBONE pool's TLS/h2 session exists before the baseline is read (memory is counted per tunneled connection).
  await runConnectRate(mesh, p, 5);
  await sleep(1500);
  const before = mesh.ztunnels.map((z) => ({ node: z.node, pid: z.pid, rss: readProc(z.pid).rssKb, fds: countFds(z.pid) }));
  const holdMs = 20_000;
  const { child, lines } = await startIn(
    mesh.topo,
    mesh.topo.podNetns(p.from),
    process.execPath,
    [LOAD_CLIENT_JS, 'idle', ipOf(mesh, p.to), String(ECHO_PORT), String(IDLE_CONNECTIONS), String(holdMs)],
    /"ready"/,
    60_000,
  );
  const ready = JSON.parse(lines.find((l) => l.includes('"ready"')) ?? '{}') as { ready?: number; errors?: number; openMs?: number };
  await sleep(3000);
  const sides = before.map((b) => ({ node: b.node, rssBeforeKb: b.rss, rssAfterKb: readProc(b.pid).rssKb, fdsBefore: b.fds, fdsAfter: countFds(b.pid) }));
  child.kill('SIGTERM');
  await sleep(2000);
  return { opened: ready.ready ?? 0, errors: ready.errors ?? 0, openMs: ready.openMs ?? NaN, sides };
}

// ---------- CPU profile ----------

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

export function buildSelfTimes(profile: { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }): { name: string; ms: number; pct: number }[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    total += dt;
    const cf = byId.get(id)?.callFrame;
    const where = cf?.url ? ` ${cf.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/')}:${cf.lineNumber + 1}` : '';
    const name = `${cf?.functionName || '(anonymous)'}${where}`;
    self.set(name, (self.get(name) ?? 0) + dt);
  });
  return [...self.entries()]
    .map(([name, us]) => ({ name, ms: us / 1000, pct: total > 0 ? (us / total) * 100 : 0 }))
    .sort((a, b) => b.ms - a.ms);
}

async function runCpuProfile(prefix: string | undefined, seconds: number, out: string | undefined): Promise<number> {
  const profDir = join('/tmp', `${prefix ?? `zb${process.pid % 10000}`}-cpuprof`);
  mkdirSync(profDir, { recursive: true });
  const mesh = await startBenchMesh({ prefix, ztunnelNodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profDir}`], log: (s) => say(`bench: ${s}`) });
  try {
    await startServers(mesh);
    const p = PATHS.find((x) => x.key === 'mesh')!;
    const gbps: string[] = [];
    for (const reverse of [false, true]) {
      const r = await runIperf(mesh, p, seconds, reverse);
      gbps.push(r.gbps.toFixed(2));
      say(`bench: profiled ${p.label}${reverse ? ' (-R)' : ''}: ${r.gbps.toFixed(2)} Gbit/s`);
    }
    await mesh.stopZtunnels(10_000);
    for (const z of mesh.ztunnels) {
      if (z.child.exitCode !== null || z.child.signalCode !== null) continue;
      // A second SIGINT makes ztunnel-ts process.exit(), which still writes the profile.
      say(`bench: ztunnel on ${z.node} did not exit within 10 s of SIGTERM (drain hang?); sending SIGINT twice`);
      z.child.kill('SIGINT');
      await sleep(100);
      z.child.kill('SIGINT');
      await sleep(3000);
    }
    const pidToNode = new Map(mesh.ztunnels.map((z) => [z.pid, z.node]));
    const md: string[] = ['', `## CPU profile: \`node dist/bench/throughput.js --cpu-prof\` (mesh iperf3, ${seconds} s each way, ${gbps.join(' / ')} Gbit/s under the profiler)`];
    const files = readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'));
    if (files.length === 0) throw new Error(`no .cpuprofile written in ${profDir}`);
    for (const f of files) {
      // CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile
      const pid = Number(f.split('.')[3]);
      const top = buildSelfTimes(JSON.parse(readFileSync(join(profDir, f), 'utf8')) as Parameters<typeof buildSelfTimes>[0]);
      md.push('', `ztunnel on ${pidToNode.get(pid) ?? `pid ${pid}`} (${f}), top self time:`, '');
      md.push('| # | function | self ms | % of samples |', '|---:|---|---:|---:|');
      top.slice(0, 12).forEach((t, i) => md.push(`| ${i + 1} | \`${t.name}\` | ${t.ms.toFixed(0)} | ${t.pct.toFixed(1)} |`));
    }
    printAndAppend(md, out, `bench: profiles kept in ${profDir}`);
    return 0;
  } finally {
    await mesh.destroy();
  }
}

// ---------- setup and report ----------

async function startServers(mesh: BenchMesh): Promise<void> {
  for (const pod of ['productpage', 'plain']) {
    const ns = mesh.topo.podNetns(pod);
    await mesh.harness.startApp(pod, 'http', HTTP_PORT, pod);
    await mesh.harness.startApp(pod, 'echo', ECHO_PORT);
    await startIn(mesh.topo, ns, 'iperf3', ['-s', '-p', String(IPERF_PORT), '--forceflush'], /Server listening/, 10_000);
  }
  // Every path answers before anything is timed (and the HBONE pool is warm).
  for (const p of PATHS) {
    const r = await runIn(mesh.topo.podNetns(p.from), 'curl', ['-s', '--max-time', '5', `http://${ipOf(mesh, p.to)}:${HTTP_PORT}/`], 10_000);
    if (!r.stdout.includes('"service"')) throw new Error(`${p.label}: no answer from the HTTP server (curl exit ${r.code})`);
    const client = /"client":"([\d.]+):/.exec(r.stdout)?.[1];
    if (client !== ipOf(mesh, p.from)) throw new Error(`${p.label}: server saw ${client}, expected ${ipOf(mesh, p.from)}`);
  }
}

interface Machine {
  /** Machine busy (% of one core) over 2 s before the bench started anything: other tenants' load. */
  backgroundPct: number;
  loadAvg: string;
  cpus: number;
  model: string;
  kernel: string;
  node: string;
  memGiB: string;
}

async function readMachine(): Promise<Machine> {
  const a = readBoxCpu();
  const loadAvg = os.loadavg().map((l) => l.toFixed(2)).join(' ');
  await sleep(2000);
  const backgroundPct = buildBoxPercent(a, readBoxCpu(), CORES);
  const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
  const nproc = spawnSync('nproc', [], { encoding: 'utf8' }).stdout.trim();
  return { backgroundPct, loadAvg, cpus: Number(nproc) || os.cpus().length, model, kernel: os.release(), node: process.version, memGiB: (os.totalmem() / 2 ** 30).toFixed(1) };
}

const f2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '–');
const f0 = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–');
const mb = (kb: number): string => (kb / 1024).toFixed(0);
const cpuCells = (zt: ZtUse[]): string => zt.map((z) => `${z.cpuPct.toFixed(0)}`).join(' / ');
const rssCells = (zt: ZtUse[]): string => zt.map((z) => mb(z.peakRssKb)).join(' / ');
const cpuSum = (zt: ZtUse[]): number => zt.reduce((s, z) => s + z.cpuSec, 0);

interface Results {
  machine: Machine;
  quick: boolean;
  iperfSeconds: number;
  httpSeconds: number;
  connectCount: number;
  nodes: string[];
  iperf: { path: PathSpec; reverse: boolean; m: Measured<IperfResult> }[];
  http: { path: PathSpec; m: Measured<HttpResult> }[];
  connect: { path: PathSpec; m: Measured<ConnectResult> }[];
  memory: MemoryResult;
  authz: string | undefined;
  command: string;
  date: string;
  wallSeconds: number;
}

function buildReport(r: Results): string {
  const out: string[] = [];
  const zNames = r.nodes.map((n) => `zt@${n}`).join(' / ');
  out.push('# ztunnel-ts benchmarks');
  out.push('');
  out.push(`Date: ${r.date}. Command: \`${r.command}\` (as root, after \`npx tsc -p tsconfig.build.json\`), ${r.wallSeconds.toFixed(0)} s wall.`);
  out.push('');
  out.push('| machine | |');
  out.push('|---|---|');
  out.push(`| nproc | ${r.machine.cpus} |`);
  out.push(`| CPU | ${r.machine.model} |`);
  out.push(`| memory | ${r.machine.memGiB} GiB |`);
  out.push(`| kernel | ${r.machine.kernel} |`);
  out.push(`| node | ${r.machine.node} |`);
  out.push(`| before the run: load average / machine CPU busy (2 s) | ${r.machine.loadAvg} / ${r.machine.backgroundPct.toFixed(0)} % of ${100 * r.machine.cpus} % |`);
  out.push('');
  out.push(
    'One topology, one run: two node namespaces joined by a bridge, the kernel capture path (ipset, marks, TPROXY), one ztunnel-ts per node. ' +
      'Pods: sleep (mesh) and outsider (no mesh) on ambient-worker; productpage (mesh) and plain (no mesh) on ambient-worker2, so every path crosses nodes. ' +
      'Load generator, servers and both ztunnels share the cores, so the figures are relative: compare ratios, not absolutes. ' +
      `CPU % is utime+stime from /proc over the scenario (100 % = one core), ${zNames}; machine CPU % is all cores busy from /proc/stat (max ${100 * r.machine.cpus}); peak RSS is VmHWM, reset before each scenario (clear_refs 5). ` +
      'Each figure is a single run with no repetitions: rerun to see the spread; on a saturated 2-core box p99 and single-stream Gbit/s vary noticeably between runs.',
  );
  out.push('');

  const directGbps = (reverse: boolean): number => r.iperf.find((x) => x.path.key === 'direct' && x.reverse === reverse)?.m.value.gbps ?? NaN;
  out.push(`## 1. Throughput: iperf3, single stream, ${r.iperfSeconds} s each way`);
  out.push('');
  out.push(`| path | direction | Gbit/s | × direct | retransmits | ztunnel CPU % (${zNames}) | ztunnel CPU % per Gbit/s (sum) | machine CPU % | peak RSS MB (${zNames}) |`);
  out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of r.iperf) {
    const v = x.m.value;
    out.push(
      `| ${x.path.label} | ${x.reverse ? 'server → client (-R)' : 'client → server'} | ${f2(v.gbps)} | ${f2(v.gbps / directGbps(x.reverse))} | ` +
        `${v.retransmits ?? '–'} | ${cpuCells(x.m.zt)} | ${x.path.key === 'direct' ? '–' : f0(x.m.zt.reduce((a, z) => a + z.cpuPct, 0) / v.gbps)} | ` +
        `${x.m.boxPct.toFixed(0)} | ${rssCells(x.m.zt)} |`,
    );
  }
  out.push('');

  const dh = r.http.find((x) => x.path.key === 'direct')?.m.value;
  out.push(`## 2. HTTP keep-alive latency: ${r.http[0]?.m.value.tool ?? 'wrk'}, ${HTTP_CONNECTIONS} connections, ${r.httpSeconds} s, GET / (≈60-byte JSON)`);
  out.push('');
  out.push(`| path | req/s | × direct | p50 ms | p99 ms | p50 × direct | p99 × direct | added p50 / p99 ms | errors | ztunnel CPU % (${zNames}) | machine CPU % | ztunnel CPU ms per 1000 req (sum) |`);
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of r.http) {
    const v = x.m.value;
    const perK = v.rps > 0 ? (cpuSum(x.m.zt) * 1000) / ((v.rps * r.httpSeconds) / 1000) : NaN;
    out.push(
      `| ${x.path.label} | ${f0(v.rps)} | ${f2(v.rps / (dh?.rps ?? NaN))} | ${f2(v.p50Ms)} | ${f2(v.p99Ms)} | ${f2(v.p50Ms / (dh?.p50Ms ?? NaN))} | ` +
        `${f2(v.p99Ms / (dh?.p99Ms ?? NaN))} | ${x.path.key === 'direct' ? '–' : `${f2(v.p50Ms - (dh?.p50Ms ?? NaN))} / ${f2(v.p99Ms - (dh?.p99Ms ?? NaN))}`} | ` +
        `${v.errors} | ${cpuCells(x.m.zt)} | ${x.m.boxPct.toFixed(0)} | ${x.path.key === 'direct' ? '–' : f0(perK)} |`,
    );
  }
  out.push('');
  out.push('Anchor (Istio ambient performance blog posts): Rust ztunnel ≈ 60 ms CPU per 1000 requests (0.06 vCPU at 1000 rps, unsaturated); the mesh row is at saturation, so it is an upper bound on that figure.');
  out.push('');

  const dc = r.connect.find((x) => x.path.key === 'direct')?.m.value;
  out.push(`## 3. Connection setup: a new TCP connection per request (1-byte echo), ${r.connectCount} connections, concurrency ${CONNECT_CONCURRENCY}`);
  out.push('');
  out.push(`| path | connections/s | × direct | p50 ms | p99 ms | max ms | ≥ 1 s | errors | ztunnel CPU % (${zNames}) | machine CPU % | ztunnel CPU ms per connection (sum) |`);
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of r.connect) {
    const v = x.m.value;
    out.push(
      `| ${x.path.label} | ${f0(v.perSec)} | ${f2(v.perSec / (dc?.perSec ?? NaN))} | ${f2(v.p50Ms)} | ${f2(v.p99Ms)} | ${f0(v.maxMs)} | ${v.over1s} | ${v.errors} | ${cpuCells(x.m.zt)} | ${x.m.boxPct.toFixed(0)} | ` +
        `${x.path.key === 'direct' ? '–' : f2((cpuSum(x.m.zt) * 1000) / Math.max(1, v.count))} |`,
    );
  }
  out.push('');
  out.push('Anchor: a field report for the Rust ztunnel works out to ≈1.7 ms CPU per new connection (rough; issue #1288).');
  out.push('');

  const m = r.memory;
  out.push(`## 4. Memory: ${IDLE_CONNECTIONS} idle connections sleep → productpage echo through the mesh`);
  out.push('');
  out.push(`Opened ${m.opened} (errors ${m.errors}) in ${f0(m.openMs)} ms, one byte echoed on each; VmRSS read before (after a warm-up, HBONE session pooled) and 3 s after.`);
  out.push('');
  out.push('| ztunnel | RSS before MB | RSS after MB | Δ MB | KB per connection | fds before → after |');
  out.push('|---|---:|---:|---:|---:|---:|');
  let total = 0;
  for (const s of m.sides) {
    const d = s.rssAfterKb - s.rssBeforeKb;
    total += d;
    out.push(`| ${s.node} | ${mb(s.rssBeforeKb)} | ${mb(s.rssAfterKb)} | ${(d / 1024).toFixed(1)} | ${f2(d / Math.max(1, m.opened))} | ${s.fdsBefore} → ${s.fdsAfter} |`);
  }
  out.push(`| both | | | ${(total / 1024).toFixed(1)} | ${f2(total / Math.max(1, m.opened))} | |`);
  out.push('');
  out.push('Anchors: a throwaway Node h2 tunnel prototype: ≈ 46–48 KB per tunneled connection (both sides); Rust ztunnel ≈ 3.8 KB per connection (PR #1024).');
  out.push('');
  if (r.authz !== undefined) {
    out.push('## 5. Authorization: `node dist/bench/authorize.bench.js`');
    out.push('');
    out.push(r.authz.trim());
    out.push('');
  }
  return out.join('\n');
}

/** The machine line and the markdown table of the authz bench (its other output is progress). */
function runAuthzBench(here: string): string | undefined {
  const js = join(here, 'authorize.bench.js');
  if (!existsSync(js)) return undefined;
  say('bench: running authorize.bench.js ...');
  const r = spawnSync(process.execPath, [js], { encoding: 'utf8', timeout: 180_000 });
  if (r.status !== 0) return `(authorize.bench.js failed: exit ${r.status} ${r.stderr.trim()})`;
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('|') || l.startsWith('Each scenario'))
    .join('\n')
    .replace(/^(Each scenario.*)$/m, '$1\n');
}

async function main(argv: string[]): Promise<number> {
  let values: { quick?: boolean; out?: string; 'no-authz'?: boolean; 'cpu-prof'?: boolean; prefix?: string; only?: string; rounds?: string; help?: boolean };
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      options: {
        quick: { type: 'boolean' },
        out: { type: 'string' },
        'no-authz': { type: 'boolean' },
        'cpu-prof': { type: 'boolean' },
        prefix: { type: 'string' },
        only: { type: 'string' },
        rounds: { type: 'string' },
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
  if (process.platform !== 'linux' || process.getuid?.() !== 0) {
    process.stderr.write('bench: needs root on Linux (network namespaces, iptables, ipset)\n');
    return 1;
  }
  const missing = ['ip', 'ipset', 'iptables-nft-restore', 'curl', 'iperf3'].filter((t) => spawnSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' }).status !== 0);
  if (missing.length > 0) {
    process.stderr.write(`bench: missing tools: ${missing.join(' ')} (apt-get install -y iproute2 ipset iptables curl iperf3; wrk optional)\n`);
    return 1;
  }
  const quick = values.quick === true;
  const iperfSeconds = quick ? 3 : 8;
  const httpSeconds = quick ? 3 : 10;
  const connectCount = quick ? 500 : 2000;
  const prefix = values.prefix ?? `zb${process.pid % 10000}`;
  if (values['cpu-prof']) return runCpuProfile(prefix, iperfSeconds, values.out);
  if (values.only !== undefined) {
    const rounds = Number(values.rounds ?? 3);
    if (values.only !== 'connect' || !Number.isInteger(rounds) || rounds < 1 || rounds > 50) {
      process.stderr.write(`bench: --only takes 'connect', --rounds 1..50\n${USAGE}`);
      return 2;
    }
    return runConnectOnly(prefix, connectCount, rounds, values.out);
  }

  const here = fileURLToPath(new URL('.', import.meta.url));
  const machine = await readMachine();
  if (machine.backgroundPct > 20) say(`bench: warning: the machine is already ${machine.backgroundPct.toFixed(0)} % busy before the bench (load ${machine.loadAvg}); figures will be skewed`);
  const t0 = performance.now();
  const mesh = await startBenchMesh({ prefix, log: (s) => say(`bench: ${s}`) });
  try {
    await startServers(mesh);
    const path = (k: PathSpec['key']): PathSpec => PATHS.find((p) => p.key === k)!;

    say(`bench: memory, ${IDLE_CONNECTIONS} idle connections through the mesh ...`);
    const memory = await runIdleMemory(mesh);

    const connect: Results['connect'] = [];
    for (const p of [path('direct'), path('mesh'), path('passthrough')]) {
      say(`bench: connection rate, ${p.label} ...`);
      connect.push({ path: p, m: await measure(mesh, () => runConnectRate(mesh, p, connectCount)) });
      await sleep(1000);
    }

    const http: Results['http'] = [];
    for (const p of [path('direct'), path('mesh'), path('inbound')]) {
      say(`bench: HTTP load, ${p.label} ...`);
      http.push({ path: p, m: await measure(mesh, () => runHttpLoad(mesh, p, httpSeconds)) });
      await sleep(1000);
    }

    const iperf: Results['iperf'] = [];
    for (const p of PATHS) {
      for (const reverse of [false, true]) {
        say(`bench: iperf3 ${p.label}${reverse ? ' -R' : ''} ...`);
        iperf.push({ path: p, reverse, m: await measure(mesh, () => runIperf(mesh, p, iperfSeconds, reverse)) });
        await sleep(500);
      }
    }
    await mesh.destroy();

    const authz = values['no-authz'] ? undefined : runAuthzBench(here);
    const report = buildReport({
      machine,
      quick,
      iperfSeconds,
      httpSeconds,
      connectCount,
      nodes: mesh.ztunnels.map((z) => z.node),
      iperf,
      http,
      connect,
      memory,
      authz,
      command: `node dist/bench/throughput.js${argv.length ? ` ${argv.join(' ')}` : ''}`,
      date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
      wallSeconds: (performance.now() - t0) / 1000,
    });
    say();
    say(report);
    const out = values.out ?? (quick ? undefined : join(here, '..', '..', 'bench', 'RESULTS.md'));
    if (out !== undefined) {
      writeFileSync(out, report);
      say(`bench: wrote ${out}`);
    }
    return 0;
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    for (const z of mesh.ztunnels) {
      const tail = buildZtunnelTail(z.handle);
      if (tail.length) process.stderr.write(`--- ztunnel ${z.node} (last lines):\n${tail.join('\n')}\n`);
    }
    return 1;
  } finally {
    await mesh.destroy();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(code), 300).unref();
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).message ?? String(err)}\n`);
    process.exit(1);
  },
);
