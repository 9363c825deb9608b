// Bench harness: the demo's two-node mesh (MeshHarness: topology, node/ztunnel redirection,
// node agents, CA, one ztunnel-ts per node) with a bench-specific pod set and no bookinfo apps,
// plus the /proc readers the benches use (CPU ticks, VmRSS/VmHWM) and bounded command runners
// inside pod namespaces.
// Must never: touch anything outside the namespaces its Topology created, run a command
// without a timeout, or outlive the bench (Topology.destroySync runs on exit and signals;
// destroy() also stops the agents and ztunnels).
// Invariant: the ztunnel pids are the node processes themselves (`ip netns exec` execs
// without forking), so /proc/<pid> of a spawned child is the ztunnel's.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MeshHarness, waitUntil, type ZtunnelHandle } from '../src/demo/mesh-harness.js';
import { DEFAULT_PODS, DEFAULT_SERVICES, type PodSpec, type Topology } from '../src/demo/topology.js';

export const LOAD_CLIENT_JS = join(fileURLToPath(new URL('.', import.meta.url)), 'load-client.js');
/**
 * Bench-only preload (CommonJS: Node 20 runs `--require` preloads in worker threads too, `--import`
 * ones only in the main thread): with `--expose-gc`, SIGUSR2 runs a full garbage collection in
 * the main thread and, over a BroadcastChannel, in every worker thread, so the memory bench can
 * read RSS without the uncollected garbage of connection setup in it. Nothing else changes in the
 * process: the channel is unref'd and a signal listener keeps nothing alive.
 */
export const GC_PRELOAD_SOURCE = `'use strict';
const { BroadcastChannel, isMainThread } = require('node:worker_threads');
const gc = globalThis.gc;
if (typeof gc === 'function') {
  const channel = new BroadcastChannel('ztunnel-ts-bench-gc');
  channel.unref();
  if (isMainThread) {
    process.on('SIGUSR2', () => {
      gc();
      channel.postMessage('gc');
    });
  } else {
    channel.onmessage = () => gc();
  }
}
`;

/** Writes the GC preload into `dir` as gc-on-signal.cjs; returns the node flags that load it. */
export function writeGcPreload(dir: string): string[] {
  const file = join(dir, 'gc-on-signal.cjs');
  writeFileSync(file, GC_PRELOAD_SOURCE);
  return ['--expose-gc', '--require', file];
}

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
  /** The current process: replaced in place by restartZtunnels(). */
  child: ChildProcess;
  pid: number;
  handle: ZtunnelHandle;
}

export interface BenchMesh {
  harness: MeshHarness;
  topo: Topology;
  ztunnels: ZtunnelProc[];
  /** SIGTERM the ztunnels and wait (bounded) for them to exit, e.g. so --cpu-prof writes its profile. */
  stopZtunnels(timeoutMs: number): Promise<void>;
  /**
   * Restarts both ztunnels (one after the other, each waited until ready) with the start
   * environment plus `extra` and the start node flags plus `extraNodeArgs` (`{}`, none = back to
   * the start configuration); updates `ztunnels` in place.
   */
  restartZtunnels(extra: NodeJS.ProcessEnv, extraNodeArgs?: readonly string[]): Promise<void>;
  destroy(): Promise<void>;
}

export interface BenchMeshOptions {
  prefix?: string | undefined;
  /** Extra environment for the ztunnel processes. */
  ztunnelEnv?: NodeJS.ProcessEnv | undefined;
  /** Node flags for the ztunnel processes (e.g. --cpu-prof). */
  ztunnelNodeArgs?: readonly string[] | undefined;
  log?: ((s: string) => void) | undefined;
}

const isRunning = (c: ChildProcess): boolean => c.exitCode === null && c.signalCode === null;

/** Last `max` lines a ztunnel wrote (stdout, then stderr), for failure reports. */
export function buildZtunnelTail(z: ZtunnelHandle, max = 15): string[] {
  return [...z.out, ...z.stderr().split('\n').filter(Boolean)].slice(-max);
}

/** Builds the topology and the capture path and starts both ztunnels; throws (after cleaning up) when anything fails. */
export async function startBenchMesh(o: BenchMeshOptions = {}): Promise<BenchMesh> {
  const log = o.log ?? (() => undefined);
  // MeshHarness reads these two each time it spawns a ztunnel (startZtunnel spreads them into
  // the child's environment and argv), so restartZtunnels() changes them in place instead of
  // needing a per-restart option in src/.
  const baseEnv: NodeJS.ProcessEnv = { TERMINATION_GRACE_PERIOD_SECONDS: '2', ...o.ztunnelEnv };
  const ztunnelEnv: NodeJS.ProcessEnv = { ...baseEnv };
  const baseNodeArgs: readonly string[] = [...(o.ztunnelNodeArgs ?? [])];
  const ztunnelNodeArgs: string[] = [...baseNodeArgs];
  const harness = new MeshHarness({
    prefix: o.prefix,
    pods: buildBenchPods(),
    services: DEFAULT_SERVICES.filter((s) => s.name === 'productpage'),
    startApps: false,
    ztunnelEnv,
    ztunnelNodeArgs,
    agentLog: (node, level, msg) => (level === 'info' ? undefined : log(`[agent ${node}] ${level} ${msg}`)),
  });
  const missing = harness.findMissingBuild();
  if (missing.length > 0) throw new Error(`${missing.join(', ')} not found; run npx tsc -p tsconfig.build.json first`);
  const ztunnels: ZtunnelProc[] = [];
  const stopZtunnels = async (timeoutMs: number): Promise<void> => {
    for (const z of ztunnels) if (isRunning(z.child)) z.child.kill('SIGTERM');
    await waitUntil(() => !ztunnels.some((z) => isRunning(z.child)), timeoutMs, 200);
  };
  const restartZtunnels = async (extra: NodeJS.ProcessEnv, extraNodeArgs: readonly string[] = []): Promise<void> => {
    for (const k of Object.keys(ztunnelEnv)) delete ztunnelEnv[k];
    Object.assign(ztunnelEnv, baseEnv, extra);
    ztunnelNodeArgs.splice(0, ztunnelNodeArgs.length, ...baseNodeArgs, ...extraNodeArgs);
    for (const z of ztunnels) {
      const h = await harness.restartZtunnel(z.node, 5000);
      const pid = h.child.pid;
      if (pid === undefined) throw new Error(`could not restart the ztunnel on ${z.node}`);
      Object.assign(z, { child: h.child, pid, handle: h });
    }
  };
  try {
    log(`building the namespaced cluster (prefix ${harness.topo.prefix})`);
    await harness.start();
    for (const h of harness.ztunnels.values()) {
      const pid = h.child.pid;
      if (pid === undefined) throw new Error(`could not start the ztunnel on ${h.node}`);
      const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      if (comm !== 'node') throw new Error(`ztunnel pid ${pid} is '${comm}', not node`);
      ztunnels.push({ node: h.node, child: h.child, pid, handle: h });
    }
    return { harness, topo: harness.topo, ztunnels, stopZtunnels, restartZtunnels, destroy: () => harness.stop() };
  } catch (err) {
    const tails = [...harness.ztunnels.values()].map((z) => `\n--- ztunnel ${z.node} (last lines):\n${buildZtunnelTail(z).join('\n')}`);
    await harness.stop();
    throw new Error(`${(err as Error).message}${tails.join('')}`);
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
