// Soak: N minutes (default 10) of mixed load through the two-node namespaced mesh of the
// benches (bench/harness.ts): bulk transfers with a SHA-256 check, short HTTP requests on
// keep-alive and on new connections (autocannon), connection churn (bench/soak-client.ts,
// inside the sleep pod), a config rewrite every 30 s (an allow-everything policy toggled
// on and off) and one restart of ztunnel 2 in the middle. Prints a row per minute (errors,
// p99, each ztunnel's RSS and fds) and progress every 10 s; writes bench/soak.svg and
// bench/SOAK.md. Exit 1 when an operation fails outside the restart window, a rewrite is
// not picked up, a ztunnel dies on its own, a load stalls for a minute, or RSS/fds grow
// (buildGrowthChecks in bench/soak-report.ts).
// Run as root after a build: node dist/bench/soak.js [--minutes N] (npm run soak).
// Must never: touch anything outside the namespaces it created (the Topology removes them on
// exit, failure and signals), or run anything unbounded (the client has a deadline and a
// hard exit timer, the wait for it is bounded too).

import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { waitUntil } from '../src/demo/mesh-harness.js';
import { getClockTicks, readProc, runIn, startBenchMesh, type BenchMesh } from './harness.js';
import type { SoakClientConfig } from './soak-client.js';
import {
  buildGrowthChecks,
  buildMarkdown,
  buildMinuteRows,
  buildMinuteTable,
  buildRestartWindow,
  buildSvg,
  isInWindow,
  type Check,
  type ErrEvent,
  type HttpMinute,
  type Machine,
  type SoakData,
  type Tick,
  type ZtLogLine,
} from './soak-report.js';

const USAGE = `usage: node dist/bench/soak.js [--minutes N] [--md FILE] [--svg FILE] [--prefix NAME]
       [--bulk-mb N] [--ka-rate N] [--nc-rate N] [--churn-rate N]
  --minutes N     length of the load (default 10); ztunnel 2 restarts at N·30 s + 15 s
  --md, --svg     outputs (default bench/SOAK.md, bench/soak.svg)
  --raw FILE      also write every recorded sample, tick, error and log line as JSON
  --bulk-mb N     size of each bulk transfer (default 16)
  --ka-rate N     keep-alive requests/s (default 200), --nc-rate N new-connection requests/s (default 60)
  --churn-rate N  churn connections/s (default 20)
`;

const HERE = fileURLToPath(new URL('.', import.meta.url));
const ROOT = join(HERE, '..', '..');
const CLIENT_JS = join(HERE, 'soak-client.js');
const HTTP_PORT = 9080;
const ECHO_PORT = 9000;
const SINK_PORT = 9100;
const RELOAD_EVERY_S = 30;
const SAMPLE_EVERY_MS = 2000;
const GRACE_MS = 3000;
const RESTART_NODE = 'ambient-worker2';
const KA_CONNECTIONS = 8;
const NC_CONNECTIONS = 4;

/** A namespace-wide Allow whose single rule has no clauses: it matches (allows) everything. */
const ALLOW_ALL = { name: 'soak-allow-all', namespace: 'default', scope: 'Namespace', action: 'Allow', dryRun: false, rules: [[]] };

const say = (s = ''): void => void process.stdout.write(`${s}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const clock = (ms: number): string => `${Math.floor(ms / 60_000)}:${String(Math.floor((ms % 60_000) / 1000)).padStart(2, '0')}`;

function readMachine(): Machine {
  const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
  const nproc = Number(spawnSync('nproc', [], { encoding: 'utf8' }).stdout.trim()) || os.cpus().length;
  return {
    nproc,
    model,
    memGiB: (os.totalmem() / 2 ** 30).toFixed(1),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    loadAvg: os.loadavg().map((l) => l.toFixed(2)).join(' '),
  };
}

interface Opts {
  minutes: number;
  md: string;
  svg: string;
  prefix: string;
  raw: string | undefined;
  bulkMb: number;
  kaRate: number;
  ncRate: number;
  churnRate: number;
}

function parseOpts(argv: string[]): Opts | string {
  let v: Record<string, string | boolean | undefined>;
  try {
    v = parseArgs({
      args: argv,
      strict: true,
      options: {
        minutes: { type: 'string' },
        md: { type: 'string' },
        svg: { type: 'string' },
        prefix: { type: 'string' },
        raw: { type: 'string' },
        'bulk-mb': { type: 'string' },
        'ka-rate': { type: 'string' },
        'nc-rate': { type: 'string' },
        'churn-rate': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    return (err as Error).message;
  }
  if (v.help) return '';
  const num = (k: string, def: number, min: number, max: number): number => {
    const n = v[k] === undefined ? def : Number(v[k]);
    if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${k} must be a number from ${min} to ${max}`);
    return n;
  };
  try {
    return {
      minutes: Math.floor(num('minutes', 10, 1, 24 * 60)),
      md: typeof v.md === 'string' ? v.md : join(ROOT, 'bench', 'SOAK.md'),
      svg: typeof v.svg === 'string' ? v.svg : join(ROOT, 'bench', 'soak.svg'),
      prefix: typeof v.prefix === 'string' ? v.prefix : `zs${process.pid % 10000}`,
      raw: typeof v.raw === 'string' ? v.raw : undefined,
      bulkMb: num('bulk-mb', 16, 1, 1024),
      kaRate: num('ka-rate', 200, 10, 100_000),
      ncRate: num('nc-rate', 60, 10, 100_000),
      churnRate: num('churn-rate', 20, 1, 1000),
    };
  } catch (err) {
    return (err as Error).message;
  }
}

class Soak {
  readonly data: SoakData;
  readonly problems: string[] = [];
  private readonly mesh: BenchMesh;
  private readonly o: Opts;
  private restarting = false;
  private restartStopAt: number | undefined;
  private drainDeadlineMs: number | undefined;
  private clientDone = false;
  private clientExit: number | null | undefined;
  private readonly logTail = new Map<string, string[]>();
  private readonly reloadSeen: { node: string; at: number; policies: number }[] = [];
  private printedMinutes = 0;
  /** Every ztunnel log line from the restart until 10 s after it (for --raw). */
  readonly restartLogs: { node: string; line: string }[] = [];

  constructor(mesh: BenchMesh, o: Opts, t0: number) {
    this.mesh = mesh;
    this.o = o;
    this.data = {
      t0,
      minutes: o.minutes,
      nodes: mesh.ztunnels.map((z) => z.node),
      ticks: [],
      errs: [],
      http: [],
      procs: [],
      reloads: [],
      ztLogs: [],
      clockTicks: getClockTicks(),
      graceMs: GRACE_MS,
    };
  }

  get deadline(): number {
    return this.data.t0 + this.o.minutes * 60_000;
  }

  startClient(): void {
    const topo = this.mesh.topo;
    const cfg: SoakClientConfig = {
      t0: this.data.t0,
      minutes: this.o.minutes,
      vip: topo.services.find((s) => s.name === 'productpage')!.vip,
      httpPort: HTTP_PORT,
      podIp: topo.getPod('productpage').ip,
      echoPort: ECHO_PORT,
      sinkPort: SINK_PORT,
      clientIp: topo.getPod('sleep').ip,
      bulkMb: this.o.bulkMb,
      kaRate: this.o.kaRate,
      kaConnections: KA_CONNECTIONS,
      ncRate: this.o.ncRate,
      ncConnections: NC_CONNECTIONS,
      churnRate: this.o.churnRate,
    };
    const child = topo.spawnIn(topo.podNetns('sleep'), process.execPath, [CLIENT_JS, JSON.stringify(cfg)]);
    let buf = '';
    child.stdout?.on('data', (c: Buffer) => {
      buf += c.toString();
      const parts = buf.split('\n');
      buf = parts.pop() ?? '';
      for (const l of parts) this.onClientLine(l);
    });
    let err = '';
    child.stderr?.on('data', (c: Buffer) => void (err += c.toString().slice(0, 2000)));
    child.on('exit', (code) => {
      this.clientExit = code;
      if (code !== 0) this.problems.push(`the load client exited with ${code}: ${err.trim().slice(0, 500)}`);
    });
  }

  private onClientLine(l: string): void {
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(l) as Record<string, unknown>;
    } catch {
      return;
    }
    if (o.k === 'tick') this.data.ticks.push(o as unknown as Tick);
    else if (o.k === 'err') this.data.errs.push(o as unknown as ErrEvent);
    else if (o.k === 'http') this.data.http.push(o as unknown as HttpMinute);
    else if (o.k === 'done') this.clientDone = true;
  }

  /** Reads both ztunnels' new log lines: reload confirmations, warn/error lines; keeps a short tail. */
  pumpLogs(): void {
    for (const z of this.mesh.harness.ztunnels.values()) {
      const lines = z.out.splice(0, z.out.length);
      const tail = this.logTail.get(z.node) ?? [];
      tail.push(...lines.slice(-30));
      this.logTail.set(z.node, tail.slice(-30));
      const r = this.data.restart;
      if (this.restarting || (r !== undefined && Date.now() < r.readyAt + 10_000)) for (const line of lines) this.restartLogs.push({ node: z.node, line });
      for (const l of lines) {
        const interesting = l.includes('"draining"') || l.includes('local config reloaded') || l.includes('"level":"warn"') || l.includes('"level":"error"');
        if (!interesting || !l.startsWith('{')) continue;
        let r: Record<string, unknown>;
        try {
          r = JSON.parse(l) as Record<string, unknown>;
        } catch {
          continue;
        }
        const at = Date.parse(String(r.time)) || Date.now();
        if (r.message === 'draining' && this.restarting && z.node === RESTART_NODE) this.drainDeadlineMs = Number(r.deadlineMs);
        if (r.message === 'local config reloaded') this.reloadSeen.push({ node: z.node, at, policies: Number(r.policies) });
        else if (r.level === 'warn' || r.level === 'error') {
          this.data.ztLogs.push({ at, node: z.node, level: String(r.level), message: String(r.message), error: r.error === undefined ? undefined : String(r.error) });
        }
      }
    }
  }

  sample(): void {
    const at = Date.now();
    for (const node of this.data.nodes) {
      const z = this.mesh.harness.getZtunnel(node);
      const pid = z.child.pid;
      if (z.child.exitCode !== null || z.child.signalCode !== null) {
        if (!this.restarting && node === RESTART_NODE && this.data.restart === undefined) continue;
        if (!this.restarting) this.problems.push(`ztunnel ${node} (pid ${pid}) exited on its own (${z.child.exitCode ?? z.child.signalCode})`);
        continue;
      }
      if (pid === undefined) continue;
      try {
        const p = readProc(pid);
        const fds = readdirSync(`/proc/${pid}/fd`).length;
        this.data.procs.push({ at, node, pid, rssKb: p.rssKb, fds, ticks: p.ticks });
      } catch {
        // the process went away between the two reads (restart)
      }
    }
  }

  async reload(k: number): Promise<void> {
    const policies = k % 2 === 1 ? [ALLOW_ALL] : [];
    const at = Date.now();
    const from = this.reloadSeen.length;
    const skip = this.restarting;
    this.mesh.harness.writeConfig(this.mesh.topo.pods, policies);
    const ev = { at, policies: policies.length, confirmed: {} as Record<string, number | null | 'restarting'> };
    this.data.reloads.push(ev);
    await waitUntil(
      () => {
        this.pumpLogs();
        return this.data.nodes.every((n) => (skip && n === RESTART_NODE) || this.reloadSeen.slice(from).some((s) => s.node === n && s.policies === policies.length));
      },
      10_000,
      100,
    );
    for (const n of this.data.nodes) {
      const seen = this.reloadSeen.slice(from).find((s) => s.node === n && s.policies === policies.length);
      ev.confirmed[n] = skip && n === RESTART_NODE ? 'restarting' : seen === undefined ? null : Math.max(0, seen.at - at);
      if (ev.confirmed[n] === null && !this.restarting) this.problems.push(`config rewrite at ${clock(at - this.data.t0)} (${policies.length} policies): no 'local config reloaded' from ${n} within 10 s`);
    }
  }

  async restart(): Promise<void> {
    const z = this.mesh.harness.getZtunnel(RESTART_NODE);
    const oldPid = z.child.pid ?? -1;
    this.restarting = true;
    const stopAt = Date.now();
    this.restartStopAt = stopAt;
    say(`soak: ${clock(stopAt - this.data.t0)} restarting ztunnel ${RESTART_NODE} (pid ${oldPid})`);
    try {
      const nz = await this.mesh.harness.restartZtunnel(RESTART_NODE, 3000);
      const readyAt = Date.now();
      this.pumpLogs();
      this.data.restart = { node: RESTART_NODE, stopAt, readyAt, oldPid, newPid: nz.child.pid ?? -1, drainDeadlineMs: this.drainDeadlineMs };
      say(`soak: ${clock(readyAt - this.data.t0)} ztunnel ${RESTART_NODE} ready again (pid ${nz.child.pid}) after ${((readyAt - stopAt) / 1000).toFixed(1)} s`);
    } catch (err) {
      this.data.restart = { node: RESTART_NODE, stopAt, readyAt: Date.now(), oldPid, newPid: -1 };
      this.problems.push(`restart of ${RESTART_NODE} failed: ${(err as Error).message}`);
    } finally {
      this.restarting = false;
    }
  }

  progress(): void {
    const d = this.data;
    const now = Date.now();
    const sum = (k: keyof Omit<Tick, 'at'>): number => d.ticks.reduce((s, t) => s + t[k], 0);
    const w = buildRestartWindow(d);
    const restartOpen = this.restarting || (w !== undefined && now <= w[1]);
    const inW = d.errs.filter((e) => isInWindow(e, w) || (restartOpen && e.e >= (this.restartStopAt ?? now))).length;
    const zs = this.lastSamples();
    say(
      `soak: ${clock(now - d.t0)}/${clock(d.minutes * 60_000)} ka ${sum('kaOk')} nc ${sum('ncOk')} churn ${sum('churnOk')} ` +
        `bulk ${sum('bulkOk')} (${(sum('bulkBytes') / 2 ** 30).toFixed(2)} GiB) errors ${d.errs.length - inW} (+${inW} in the restart window) ${zs}`,
    );
  }

  lastSamples(): string {
    return this.data.nodes
      .map((n) => {
        const p = this.data.procs.filter((x) => x.node === n).pop();
        return p === undefined ? `${n} –` : `${n} ${(p.rssKb / 1024).toFixed(0)} MB ${p.fds} fds`;
      })
      .join(', ');
  }

  /** Prints the rows of minutes that are over (and whose autocannon results are in, or 10 s late). */
  printMinutes(force = false): void {
    const now = Date.now();
    const rows = buildMinuteRows(this.data);
    while (this.printedMinutes < this.o.minutes) {
      const m = this.printedMinutes;
      const end = this.data.t0 + (m + 1) * 60_000;
      const haveHttp = this.data.http.some((h) => h.minute === m && h.mode === 'ka') && this.data.http.some((h) => h.minute === m && h.mode === 'nc');
      if (!force && !(now >= end + 2500 && (haveHttp || now >= end + 10_000))) break;
      if (m === 0) say(buildMinuteTable(rows, this.data.nodes).slice(0, 2).join('\n'));
      say(buildMinuteTable([rows[m]!], this.data.nodes)[2]);
      this.printedMinutes += 1;
    }
  }

  stalls(): string[] {
    const rows = buildMinuteRows(this.data);
    const out: string[] = [];
    for (const r of rows) {
      const none = (['kaOk', 'ncOk', 'churnOk', 'bulkOk'] as const).filter((k) => r[k] === 0);
      if (none.length > 0) out.push(`minute ${r.minute}: no completed ${none.join(', ')}`);
    }
    return out;
  }

  tails(): string {
    return [...this.logTail.entries()].map(([n, t]) => `--- ztunnel ${n} (last lines):\n${t.slice(-10).join('\n')}`).join('\n');
  }

  async run(): Promise<void> {
    const d = this.data;
    this.startClient();
    const timers: NodeJS.Timeout[] = [];
    timers.push(setInterval(() => this.sample(), SAMPLE_EVERY_MS));
    timers.push(setInterval(() => this.pumpLogs(), 500));
    timers.push(
      setInterval(() => {
        this.progress();
        this.printMinutes();
      }, 10_000),
    );
    const restartAt = d.t0 + this.o.minutes * 30_000 + 15_000;
    const jobs: Promise<void>[] = [];
    timers.push(setTimeout(() => jobs.push(this.restart()), restartAt - Date.now()));
    for (let k = 1; d.t0 + k * RELOAD_EVERY_S * 1000 < this.deadline - 5000; k++) {
      timers.push(setTimeout(() => jobs.push(this.reload(k)), d.t0 + k * RELOAD_EVERY_S * 1000 - Date.now()));
    }
    await sleep(Math.max(0, this.deadline - Date.now()));
    // The client finishes what is in flight (every operation has a timeout) and says done.
    await waitUntil(() => this.clientDone || this.clientExit !== undefined, 70_000, 200);
    for (const t of timers) clearTimeout(t);
    await Promise.all(jobs);
    this.sample();
    this.pumpLogs();
    if (!this.clientDone) this.problems.push('the load client did not finish within 70 s of the deadline');
    this.printMinutes(true);
  }
}

async function main(argv: string[]): Promise<number> {
  const o = parseOpts(argv);
  if (typeof o === 'string') {
    if (o !== '') process.stderr.write(`${o}\n`);
    (o === '' ? process.stdout : process.stderr).write(USAGE);
    return o === '' ? 0 : 2;
  }
  if (process.platform !== 'linux' || process.getuid?.() !== 0) {
    process.stderr.write('soak: needs root on Linux (network namespaces, iptables, ipset)\n');
    return 1;
  }
  const missing = ['ip', 'ipset', 'iptables-nft-restore', 'curl'].filter((t) => spawnSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' }).status !== 0);
  if (missing.length > 0) {
    process.stderr.write(`soak: missing tools: ${missing.join(' ')} (apt-get install -y iproute2 ipset iptables curl)\n`);
    return 1;
  }
  const machine = readMachine();
  const started = performance.now();
  const date = new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  say(`soak: ${o.minutes} min; machine: ${machine.nproc} cpus, ${machine.memGiB} GiB, ${machine.kernel}, node ${machine.node}, load ${machine.loadAvg}`);
  const mesh = await startBenchMesh({ prefix: o.prefix, log: (s) => say(`soak: ${s}`) });
  let soak: Soak | undefined;
  try {
    await mesh.harness.startApp('productpage', 'productpage', HTTP_PORT);
    await mesh.harness.startApp('productpage', 'echo', ECHO_PORT);
    await mesh.harness.startApp('productpage', 'sink', SINK_PORT);
    const page = await runIn(mesh.topo.podNetns('sleep'), 'curl', ['-s', '--max-time', '5', `http://productpage:${HTTP_PORT}/`], 10_000);
    const sleepIp = mesh.topo.getPod('sleep').ip;
    if (!page.stdout.includes(`Served by productpage to ${sleepIp}:`)) throw new Error(`sleep → productpage does not answer through the mesh (curl exit ${page.code}): ${page.stdout.slice(0, 200)}`);
    say('soak: mesh up, sleep → productpage answers with its own source IP; starting the load');
    soak = new Soak(mesh, o, Date.now() + 3000);
    await soak.run();
  } catch (err) {
    process.stderr.write(`soak: ${(err as Error).message}\n${soak?.tails() ?? ''}\n`);
    await mesh.destroy();
    return 1;
  }
  await mesh.destroy();

  const d = soak.data;
  const rows = buildMinuteRows(d);
  const w = buildRestartWindow(d);
  const outside = d.errs.filter((e) => !isInWindow(e, w));
  const checks: Check[] = [
    { name: 'errors outside the restart window', ok: outside.length === 0, detail: `${outside.length} (in the window: ${d.errs.length - outside.length})` },
    ...buildGrowthChecks(d, rows),
    {
      name: 'config rewrites picked up',
      ok: !soak.problems.some((p) => p.startsWith('config rewrite')),
      detail: `${d.reloads.length} rewrites; confirmation times per node (ms): ${d.reloads.map((r) => Object.values(r.confirmed).map((c) => (c === null ? 'none' : c === 'restarting' ? 'restarting' : String(c))).join('/')).join(', ')}`,
    },
    { name: 'restart', ok: d.restart !== undefined && d.restart.newPid > 0, detail: d.restart === undefined ? 'did not happen' : `${((d.restart.readyAt - d.restart.stopAt) / 1000).toFixed(1)} s from SIGTERM to ready` },
  ];
  const stalls = soak.stalls();
  checks.push({ name: 'every load completed operations in every minute', ok: stalls.length === 0, detail: stalls.length ? stalls.join('; ') : 'yes' });
  const other = soak.problems.filter((p) => !p.startsWith('config rewrite'));
  checks.push({ name: 'ztunnels and load client ran to the end', ok: other.length === 0, detail: other.length ? other.join('; ') : 'yes' });
  const passed = checks.every((c) => c.ok !== false);
  const wallSeconds = (performance.now() - started) / 1000;
  const command = `node dist/bench/soak.js${argv.length ? ` ${argv.join(' ')}` : ''}`;
  const md = buildMarkdown({
    data: d,
    rows,
    checks,
    machine,
    setup: {
      command,
      date,
      bulkMb: o.bulkMb,
      kaRate: o.kaRate,
      kaConnections: KA_CONNECTIONS,
      ncRate: o.ncRate,
      ncConnections: NC_CONNECTIONS,
      churnRate: o.churnRate,
      reloadEverySec: RELOAD_EVERY_S,
    },
    passed,
    wallSeconds,
  });
  const restartAtMin = d.restart === undefined ? undefined : (d.restart.stopAt - d.t0) / 60_000;
  writeFileSync(o.svg, buildSvg(rows, d.nodes, restartAtMin, `ztunnel-ts soak, ${date}, ${o.minutes} min, ${machine.nproc} cpus, node ${machine.node}: ${passed ? 'PASS' : 'FAIL'}`));
  writeFileSync(o.md, md);
  if (o.raw !== undefined) writeFileSync(o.raw, JSON.stringify({ ...d, machine, options: o, checks, passed, problems: soak.problems, restartLogs: soak.restartLogs }));
  say();
  for (const c of checks) say(`soak: ${c.ok === undefined ? 'skipped' : c.ok ? 'ok' : 'FAIL'}: ${c.name}: ${c.detail}`);
  say(`soak: wrote ${o.md} and ${o.svg}; ${passed ? 'PASS' : 'FAIL'}`);
  return passed ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(code), 300).unref();
  },
  (err: unknown) => {
    process.stderr.write(`soak: ${(err as Error).message ?? String(err)}\n`);
    process.exit(1);
  },
);
