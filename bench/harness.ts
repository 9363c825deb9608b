// Bench harness: the demo's two-node mesh (Topology + node/ztunnel redirection + node agents
// + one ztunnel-ts per node) with a bench-specific pod set, plus the /proc readers the
// benches use (CPU ticks, VmRSS/VmHWM) and bounded command runners inside pod namespaces.
// Must never: touch anything outside the namespaces its Topology created, run a command
// without a timeout, or outlive the bench (Topology.destroySync runs on exit and signals;
// stop() also stops the agents and ztunnels).
// Invariant: the ztunnel pids are the node processes themselves (`ip netns exec` execs
// without forking), so /proc/<pid> of a spawned child is the ztunnel's.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NodeAgent } from '../src/redirect/node-agent.js';
import { applyNodeRedirect, applyZtunnelRedirect } from '../src/redirect/redirect.js';
import { DEFAULT_NODES, DEFAULT_PODS, DEFAULT_SERVICES, Topology, type PodSpec } from '../src/demo/topology.js';

const distRoot = join(fileURLToPath(new URL('.', import.meta.url)), '..');
export const MAIN_JS = join(distRoot, 'src', 'main.js');
export const APPS_JS = join(distRoot, 'src', 'demo', 'apps.js');
export const LOAD_CLIENT_JS = join(distRoot, 'bench', 'load-client.js');

/** A pod outside the mesh on the destination node: the target of the no-mesh baselines. */
export const PLAIN_POD: PodSpec = {
  name: 'plain',
  node: 'ambient-worker2',
  ip: '10.244.1.10',
  inMesh: false,
  serviceAccount: 'plain',
  app: 'plain',
};

/** sleep (mesh) and outsider (no mesh) on ambient-worker; productpage (mesh) and plain (no mesh) on ambient-worker2. */
export function buildBenchPods(): PodSpec[] {
  const keep = new Set(['sleep', 'outsider', 'productpage']);
  return [...DEFAULT_PODS.filter((p) => keep.has(p.name)), PLAIN_POD];
}

export interface ZtunnelProc {
  node: string;
  child: ChildProcess;
  pid: number;
  /** Last lines of stdout+stderr, for failure reports (stdout must be drained or the ztunnel blocks on its access log). */
  tail: string[];
}

export interface BenchMesh {
  topo: Topology;
  ztunnels: ZtunnelProc[];
  /** SIGTERM the ztunnels and wait (bounded) for them to exit, e.g. so --cpu-prof writes its profile. */
  stopZtunnels(timeoutMs: number): Promise<void>;
  destroy(): Promise<void>;
}

export interface BenchMeshOptions {
  prefix?: string | undefined;
  /** Extra environment for the ztunnel processes (e.g. NODE_OPTIONS=--cpu-prof). */
  ztunnelEnv?: NodeJS.ProcessEnv | undefined;
  /** Node flags for the ztunnel processes (e.g. --cpu-prof, which Node 20 refuses in NODE_OPTIONS). */
  ztunnelNodeArgs?: readonly string[] | undefined;
  log?: ((s: string) => void) | undefined;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function keepTail(child: ChildProcess, tail: string[], max = 40): void {
  const push = (c: Buffer): void => {
    for (const l of c.toString().split('\n')) if (l) tail.push(l);
    if (tail.length > max) tail.splice(0, tail.length - max);
  };
  child.stdout?.on('data', push);
  child.stderr?.on('data', push);
}

async function waitUntil(pred: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return true;
    await sleep(200);
  }
  return false;
}

/** Builds the topology and the capture path and starts both ztunnels; throws (after cleaning up) when anything fails. */
export async function startBenchMesh(o: BenchMeshOptions = {}): Promise<BenchMesh> {
  const log = o.log ?? (() => undefined);
  for (const f of [MAIN_JS, APPS_JS]) if (!existsSync(f)) throw new Error(`${f} not found; run npx tsc -p tsconfig.build.json first`);
  const topo = new Topology({
    prefix: o.prefix,
    nodes: DEFAULT_NODES,
    pods: buildBenchPods(),
    services: DEFAULT_SERVICES.filter((s) => s.name === 'productpage'),
  });
  const agents: NodeAgent[] = [];
  const ztunnels: ZtunnelProc[] = [];
  const stopZtunnels = async (timeoutMs: number): Promise<void> => {
    for (const z of ztunnels) if (z.child.exitCode === null && z.child.signalCode === null) z.child.kill('SIGTERM');
    await waitUntil(async () => ztunnels.every((z) => z.child.exitCode !== null || z.child.signalCode !== null), timeoutMs);
  };
  const destroy = async (): Promise<void> => {
    for (const a of agents) await a.stop();
    await stopZtunnels(1000);
    await topo.destroy();
  };
  try {
    log(`building the namespaced cluster (prefix ${topo.prefix})`);
    await topo.create();
    for (const node of topo.nodes) {
      const n = await applyNodeRedirect(
        { ztunnelIp: node.ztunnelIp, podGatewayIp: topo.podGatewayIp(node.name), ztunnelNetns: topo.ztunnelNetns(node.name) },
        { netns: topo.nodeNetns(node.name) },
      );
      if (!n.ok) throw new Error(`node redirection on ${node.name}: ${n.message}`);
      const z = await applyZtunnelRedirect({}, { netns: topo.ztunnelNetns(node.name) });
      if (!z.ok) throw new Error(`ztunnel redirection on ${node.name}: ${z.message}`);
    }
    for (const node of topo.nodes) {
      const agent = new NodeAgent({
        nodeName: node.name,
        configPath: topo.configPath,
        podGatewayIp: topo.podGatewayIp(node.name),
        netns: topo.nodeNetns(node.name),
        log: (level, msg) => (level === 'info' ? undefined : log(`[agent ${node.name}] ${level} ${msg}`)),
      });
      agents.push(agent);
      if (!(await agent.start()).ok) throw new Error(`node agent on ${node.name} failed`);
    }
    const caDir = join(topo.workDir, 'ca');
    mkdirSync(caDir, { recursive: true });
    const ca = spawnSync(process.execPath, [MAIN_JS, 'ca', 'create', '--out', caDir, '--force'], { encoding: 'utf8', timeout: 30_000 });
    if (ca.status !== 0) throw new Error(`ca create: ${ca.stderr.trim()}`);
    for (const node of topo.nodes) {
      const child = topo.spawnIn(topo.ztunnelNetns(node.name), process.execPath, [...(o.ztunnelNodeArgs ?? []), MAIN_JS], {
        PROXY_MODE: 'node',
        NODE_NAME: node.name,
        LOCAL_XDS_PATH: topo.configPath,
        LOCAL_CA_CERT: join(caDir, 'ca-cert.pem'),
        LOCAL_CA_KEY: join(caDir, 'ca-key.pem'),
        LOG_FORMAT: 'json',
        ENABLE_ORIG_SRC: 'true',
        TERMINATION_GRACE_PERIOD_SECONDS: '2',
        ...o.ztunnelEnv,
      });
      if (child.pid === undefined) throw new Error(`could not start the ztunnel on ${node.name}`);
      const z: ZtunnelProc = { node: node.name, child, pid: child.pid, tail: [] };
      keepTail(child, z.tail);
      ztunnels.push(z);
    }
    for (const z of ztunnels) {
      const ns = topo.ztunnelNetns(z.node);
      const ready = await waitUntil(async () => {
        const r = await topo.execIn(ns, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '1', 'http://127.0.0.1:15021/healthz/ready']);
        return r.stdout.trim() === '200';
      }, 20_000);
      if (!ready) throw new Error(`ztunnel on ${z.node} did not become ready:\n${z.tail.join('\n')}`);
      const comm = readFileSync(`/proc/${z.pid}/comm`, 'utf8').trim();
      if (comm !== 'node') throw new Error(`ztunnel pid ${z.pid} is '${comm}', not node`);
    }
    return { topo, ztunnels, stopZtunnels, destroy };
  } catch (err) {
    await destroy();
    throw err;
  }
}

export interface ProcSample {
  /** utime + stime, in clock ticks, all threads. */
  ticks: number;
  rssKb: number;
  hwmKb: number;
  at: number;
}

let clkTck = 0;
export function getClockTicks(): number {
  if (clkTck === 0) clkTck = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
  return clkTck;
}

export function readProc(pid: number): ProcSample {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised comm; utime and stime are fields 14 and 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { ticks: Number(f[11]) + Number(f[12]), rssKb: kb('VmRSS'), hwmKb: kb('VmHWM'), at: performance.now() };
}

export interface BoxSample {
  busy: number;
  total: number;
}

/** Whole-machine CPU jiffies from /proc/stat (idle + iowait count as not busy). */
export function readBoxCpu(): BoxSample {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** Busy share of all cores between two samples, in % of one core (so 2 cores max out at 200). */
export function buildBoxPercent(a: BoxSample, b: BoxSample, cores: number): number {
  const dt = b.total - a.total;
  return dt > 0 ? ((b.busy - a.busy) / dt) * 100 * cores : 0;
}

/** Resets VmHWM to the current RSS (clear_refs 5), so each scenario reports its own peak. */
export function resetPeakRss(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    // Older kernels: the peak then covers the whole run so far.
  }
}

/** CPU use between two samples, in % of one core. */
export function buildCpuPercent(a: ProcSample, b: ProcSample): number {
  const secs = (b.at - a.at) / 1000;
  return secs > 0 ? ((b.ticks - a.ticks) / getClockTicks() / secs) * 100 : 0;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of running) if (c.pid !== undefined) c.kill('SIGKILL');
});

/** Runs `file args` in `netns` to completion, killed after timeoutMs. */
export function runIn(netns: string, file: string, args: string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn('ip', ['netns', 'exec', netns, file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (c: Buffer) => void (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => void (stderr += c.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      stderr += err.message;
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      running.delete(child);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

/** Starts a long-running `file args` in `netns` and resolves once a stdout line matches `ready` (or rejects after timeoutMs). */
export function startIn(
  topo: Topology,
  netns: string,
  file: string,
  args: string[],
  ready: RegExp,
  timeoutMs: number,
): Promise<{ child: ChildProcess; lines: string[] }> {
  const child = topo.spawnIn(netns, file, args);
  const lines: string[] = [];
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${file} ${args.join(' ')} in ${netns}: not ready after ${timeoutMs} ms`)), timeoutMs);
    child.stdout?.on('data', (c: Buffer) => {
      buf += c.toString();
      const parts = buf.split('\n');
      buf = parts.pop() ?? '';
      for (const l of parts) {
        lines.push(l);
        if (ready.test(l)) {
          clearTimeout(timer);
          resolve({ child, lines });
        }
      }
    });
    child.stderr?.resume();
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${file} ${args.join(' ')} in ${netns} exited with ${code}`));
    });
  });
}
