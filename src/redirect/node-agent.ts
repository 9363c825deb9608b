// The node agent (istio-cni's ambient role in the seed): keeps the node's ipset
// `ztunnel-pods-ips` and the per-pod table-100 routes in step with the captured workloads
// of this node — those whose `node` is NODE_NAME and whose `protocol` is HBONE, taken from
// the local config file (watched: fs.watch plus a poll, debounced) or from a mesh the caller
// keeps current (`mesh`, e.g. fed by the same xDS stream as ztunnel; the caller calls sync()
// on each change). Applies only the differences, logging each change like istio-cni
// ("Adding pod … to ipset").
// Must never: restart or flush anything, drop pods because the file is momentarily
// unreadable or invalid (a bad file keeps the current state and logs an error), or touch
// routes in table 100 that are not pod routes through istioin.
// Invariant: one sync at a time; a change noticed during a sync triggers one more sync.

import { watch, statSync, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { loadLocalConfigFile } from '../config/local-config.js';
import type { LocalConfig } from '../config/types.js';
import { NODE_TABLES, PODS_IPSET, TUNNELS } from './constants.js';
import { findInterfaceAddress } from './discover.js';
import { createRunner, formatCommand, type Command, type Runner } from './plan.js';

export interface CapturedPod {
  /** `name/namespace`, as istio-cni logs it. */
  key: string;
  uid: string;
  ip: string;
}

export interface CaptureDiff {
  addToIpset: CapturedPod[];
  removeFromIpset: string[];
  addRoutes: CapturedPod[];
  removeRoutes: string[];
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/** IPv4 address → pod, for this node's HBONE workloads (the ipset is IPv4 hash:ip). */
export function buildCapturedPods(config: LocalConfig, nodeName: string): Map<string, CapturedPod> {
  const pods = new Map<string, CapturedPod>();
  for (const w of config.workloads) {
    if (w.node !== nodeName || w.protocol !== 'HBONE') continue;
    for (const ip of w.workloadIps) {
      if (IPV4.test(ip)) pods.set(ip, { key: `${w.name}/${w.namespace}`, uid: w.uid, ip });
    }
  }
  return pods;
}

/** Members of `ipset save <set>` output. */
export function buildIpsetMembers(saveOutput: string): Set<string> {
  const members = new Set<string>();
  for (const line of saveOutput.split('\n')) {
    const m = /^add \S+ (\S+)/.exec(line.trim());
    if (m?.[1] !== undefined) members.add(m[1].replace(/\/32$/, ''));
  }
  return members;
}

/** Destinations of our pod routes (`X via 192.168.126.2 dev istioin`) in `ip -o route show table 100`. */
export function buildPodRouteDestinations(routeOutput: string): Set<string> {
  const dsts = new Set<string>();
  for (const line of routeOutput.split('\n')) {
    const m = /^(\d+\.\d+\.\d+\.\d+)(?:\/32)? via (\S+) dev (\S+)/.exec(line.trim());
    if (m && m[2] === TUNNELS.inbound.ztunnelIp && m[3] === TUNNELS.inbound.nodeName) dsts.add(m[1]!);
  }
  return dsts;
}

export function buildCaptureDiff(desired: ReadonlyMap<string, CapturedPod>, ipset: ReadonlySet<string>, routes: ReadonlySet<string>): CaptureDiff {
  const diff: CaptureDiff = { addToIpset: [], removeFromIpset: [], addRoutes: [], removeRoutes: [] };
  for (const [ip, pod] of desired) {
    if (!ipset.has(ip)) diff.addToIpset.push(pod);
    if (!routes.has(ip)) diff.addRoutes.push(pod);
  }
  for (const ip of ipset) if (!desired.has(ip)) diff.removeFromIpset.push(ip);
  for (const ip of routes) if (!desired.has(ip)) diff.removeRoutes.push(ip);
  return diff;
}

export function buildPodRouteSpec(ip: string, podGatewayIp: string): string[] {
  return [`${ip}/32`, 'via', TUNNELS.inbound.ztunnelIp, 'dev', TUNNELS.inbound.nodeName, 'src', podGatewayIp];
}

export type AgentLog = (level: 'info' | 'warn' | 'error', message: string) => void;

/** istio-cni's log shape: `<RFC 3339 time>\t<level>\tambient\t<message>`. */
export const defaultAgentLog: AgentLog = (level, message) => {
  process.stdout.write(`${new Date().toISOString()}\t${level}\tambient\t${message}\n`);
};

export interface NodeAgentOptions {
  nodeName: string;
  /** The local config file to follow; or `mesh` instead. */
  configPath?: string | undefined;
  /** The current mesh (from xDS): read on every sync, no file is watched. */
  mesh?: (() => LocalConfig) | undefined;
  /** How to name the source in log lines (default: the file path). */
  sourceName?: string | undefined;
  /** Source of table-100 routes; found from the node's ztunnel route when omitted. */
  podGatewayIp?: string | undefined;
  /** Named netns to program (default: the current one). */
  netns?: string | undefined;
  runner?: Runner | undefined;
  log?: AgentLog | undefined;
  load?: ((path: string) => LocalConfig) | undefined;
  debounceMs?: number | undefined;
  pollMs?: number | undefined;
}

export interface SyncResult {
  ok: boolean;
  added: string[];
  removed: string[];
}

export class NodeAgent {
  private readonly nodeName: string;
  private readonly configPath: string | undefined;
  private readonly sourceName: string;
  private podGatewayIp: string | undefined;
  private readonly run: Runner;
  private readonly log: AgentLog;
  private readonly load: () => LocalConfig;
  private readonly debounceMs: number;
  private readonly pollMs: number;
  private watcher: FSWatcher | undefined = undefined;
  private pollTimer: NodeJS.Timeout | undefined = undefined;
  private debounceTimer: NodeJS.Timeout | undefined = undefined;
  private lastStamp = '';
  private running: Promise<SyncResult> | undefined = undefined;
  private again = false;
  private stopped = false;
  private lastError = '';

  constructor(o: NodeAgentOptions) {
    this.nodeName = o.nodeName;
    this.configPath = o.configPath;
    this.sourceName = o.sourceName ?? o.configPath ?? 'the mesh';
    this.podGatewayIp = o.podGatewayIp;
    this.run = o.runner ?? createRunner(o.netns);
    this.log = o.log ?? defaultAgentLog;
    const path = o.configPath;
    if (o.mesh !== undefined) this.load = o.mesh;
    else if (path !== undefined) {
      const load = o.load ?? loadLocalConfigFile;
      this.load = () => load(path);
    } else throw new Error('NodeAgent needs configPath or mesh');
    this.debounceMs = o.debounceMs ?? 100;
    this.pollMs = o.pollMs ?? 2000;
  }

  /** First sync (its result), then watch the file. */
  async start(): Promise<SyncResult> {
    const first = await this.sync();
    if (this.configPath === undefined) return first;
    this.lastStamp = this.stamp();
    this.watchFile();
    this.pollTimer = setInterval(() => {
      if (this.stamp() !== this.lastStamp) this.schedule();
    }, this.pollMs);
    this.pollTimer.unref();
    return first;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = undefined;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    await this.running;
  }

  /** Brings ipset and routes in line with the file now; concurrent calls share one pass. */
  sync(): Promise<SyncResult> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.syncLoop().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async syncLoop(): Promise<SyncResult> {
    const total: SyncResult = { ok: true, added: [], removed: [] };
    do {
      this.again = false;
      const r = await this.syncOnce();
      total.ok = r.ok;
      total.added.push(...r.added);
      total.removed.push(...r.removed);
    } while (this.again && !this.stopped);
    return total;
  }

  private watchFile(): void {
    const path = this.configPath;
    if (path === undefined) return;
    // Watch the directory: editors and atomic writers replace the file (a new inode).
    try {
      const name = basename(path);
      this.watcher = watch(dirname(path), (_event, file) => {
        if (file === null || file === name) this.schedule();
      });
      this.watcher.on('error', () => undefined);
    } catch {
      this.log('warn', `cannot watch ${this.configPath}; polling every ${this.pollMs} ms`);
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => {
      this.lastStamp = this.stamp();
      void this.sync();
    }, this.debounceMs);
  }

  private stamp(): string {
    if (this.configPath === undefined) return '';
    try {
      const s = statSync(this.configPath);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return 'missing';
    }
  }

  private async exec(cmd: Command): Promise<boolean> {
    const r = await this.run(cmd);
    if (r.code !== 0) this.log('error', `${formatCommand(cmd)} failed: ${(r.stderr || r.stdout).trim()}`);
    return r.code === 0;
  }

  private async findPodGatewayIp(): Promise<string | undefined> {
    if (this.podGatewayIp !== undefined) return this.podGatewayIp;
    // The node side put `<ztunnel IP> dev <veth> scope link` in table 100; its interface
    // holds the pod gateway address.
    const r = await this.run({ file: 'ip', args: ['-4', '-o', 'route', 'show', 'table', String(NODE_TABLES.inbound)] });
    for (const line of r.stdout.split('\n')) {
      const m = /^\S+ dev (\S+) scope link/.exec(line.trim());
      if (m?.[1] === undefined) continue;
      this.podGatewayIp = await findInterfaceAddress(this.run, m[1]);
      if (this.podGatewayIp !== undefined) break;
    }
    return this.podGatewayIp;
  }

  private async syncOnce(): Promise<SyncResult> {
    const result: SyncResult = { ok: true, added: [], removed: [] };
    let config: LocalConfig;
    try {
      config = this.load();
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      if (msg !== this.lastError) this.log('error', `cannot read ${this.sourceName}, keeping the current pods: ${msg}`);
      this.lastError = msg;
      return { ...result, ok: false };
    }
    this.lastError = '';
    const gateway = await this.findPodGatewayIp();
    if (gateway === undefined) {
      this.log('error', 'no pod gateway IP (is `redirect node` applied?); pass --pod-gateway-ip');
      return { ...result, ok: false };
    }
    const ipsetNow = await this.run({ file: 'ipset', args: ['save', PODS_IPSET] });
    if (ipsetNow.code !== 0) {
      this.log('error', `ipset ${PODS_IPSET} is missing (is \`redirect node\` applied?): ${ipsetNow.stderr.trim()}`);
      return { ...result, ok: false };
    }
    const routesNow = await this.run({ file: 'ip', args: ['-4', '-o', 'route', 'show', 'table', String(NODE_TABLES.inbound)] });
    const diff = buildCaptureDiff(
      buildCapturedPods(config, this.nodeName),
      buildIpsetMembers(ipsetNow.stdout),
      buildPodRouteDestinations(routesNow.stdout),
    );
    for (const pod of diff.addToIpset) {
      this.log('info', `Adding pod '${pod.key}' (${pod.uid}) to ipset`);
      if (await this.exec({ file: 'ipset', args: ['add', PODS_IPSET, pod.ip, '-exist'] })) result.added.push(pod.ip);
      else result.ok = false;
    }
    for (const pod of diff.addRoutes) {
      const spec = buildPodRouteSpec(pod.ip, gateway);
      this.log('info', `Adding route for ${pod.key}: [table ${NODE_TABLES.inbound} ${spec.join(' ')}]`);
      if (!(await this.exec({ file: 'ip', args: ['-4', 'route', 'replace', ...spec, 'table', String(NODE_TABLES.inbound)] }))) result.ok = false;
      else if (!result.added.includes(pod.ip)) result.added.push(pod.ip);
    }
    for (const ip of diff.removeFromIpset) {
      this.log('info', `Removing pod ${ip} from ipset`);
      if (await this.exec({ file: 'ipset', args: ['del', PODS_IPSET, ip, '-exist'] })) result.removed.push(ip);
      else result.ok = false;
    }
    for (const ip of diff.removeRoutes) {
      this.log('info', `Removing route for ${ip}: [table ${NODE_TABLES.inbound} ${ip}/32]`);
      if (!(await this.exec({ file: 'ip', args: ['-4', 'route', 'del', `${ip}/32`, 'table', String(NODE_TABLES.inbound)] }))) result.ok = false;
      else if (!result.removed.includes(ip)) result.removed.push(ip);
    }
    return result;
  }
}
