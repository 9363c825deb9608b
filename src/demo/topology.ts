// A kind-like cluster made of network namespaces, for the demo and the root-only tests:
// a "root" netns with a bridge joining the nodes (ambient-worker 172.18.0.2, ambient-worker2
// 172.18.0.3), one netns per pod (veth to its node, the node as gateway 10.244.N.1), a
// ztunnel pod per node, /etc/netns/<pod>/hosts naming the services' VIPs, and the local
// config YAML (workloads, services) that ztunnel-ts and the node agent read.
// Must never: create anything without the prefix (netns names start with `<prefix>-`,
// /etc/netns/<prefix>-*, and nothing is created in the caller's own netns), or leave it
// behind: destroySync() runs on exit, SIGINT and SIGTERM, and sweep() removes leftovers.
// Invariant: interface names stay ≤ 15 characters (prefix ≤ 8 characters).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { runCommand, type Command } from '../redirect/plan.js';

export interface NodeSpec {
  name: string;
  /** Node address on the bridge (kind's docker network). */
  ip: string;
  /** Third octet of the node's pod /24 (10.244.<n>.0/24). */
  podSubnet: number;
  ztunnelIp: string;
}

export interface PodSpec {
  name: string;
  node: string;
  ip: string;
  /** In the ambient mesh: HBONE workload, added to the ipset by the node agent. */
  inMesh: boolean;
  serviceAccount: string;
  /** App label (workloadName / canonicalName). */
  app: string;
  /** Name of the service it is an endpoint of. */
  service?: string | undefined;
}

export interface ServiceSpec {
  name: string;
  vip: string;
  port: number;
  targetPort: number;
}

export const NAMESPACE = 'default';
export const TRUST_DOMAIN = 'cluster.local';
const BRIDGE_IP = '172.18.0.1';
const BRIDGE_PREFIX = 16;

export const DEFAULT_NODES: readonly NodeSpec[] = [
  { name: 'ambient-worker', ip: '172.18.0.2', podSubnet: 2, ztunnelIp: '10.244.2.3' },
  { name: 'ambient-worker2', ip: '172.18.0.3', podSubnet: 1, ztunnelIp: '10.244.1.3' },
];

export const DEFAULT_PODS: readonly PodSpec[] = [
  { name: 'sleep', node: 'ambient-worker', ip: '10.244.2.4', inMesh: true, serviceAccount: 'sleep', app: 'sleep' },
  { name: 'notsleep', node: 'ambient-worker', ip: '10.244.2.5', inMesh: true, serviceAccount: 'notsleep', app: 'notsleep' },
  { name: 'outsider', node: 'ambient-worker', ip: '10.244.2.6', inMesh: false, serviceAccount: 'outsider', app: 'outsider' },
  { name: 'productpage', node: 'ambient-worker2', ip: '10.244.1.7', inMesh: true, serviceAccount: 'bookinfo-productpage', app: 'productpage', service: 'productpage' },
  { name: 'details', node: 'ambient-worker2', ip: '10.244.1.9', inMesh: true, serviceAccount: 'bookinfo-details', app: 'details', service: 'details' },
  { name: 'ratings', node: 'ambient-worker2', ip: '10.244.1.8', inMesh: true, serviceAccount: 'bookinfo-ratings', app: 'ratings', service: 'ratings' },
  { name: 'reviews-v1', node: 'ambient-worker2', ip: '10.244.1.4', inMesh: true, serviceAccount: 'bookinfo-reviews', app: 'reviews', service: 'reviews' },
  { name: 'reviews-v2', node: 'ambient-worker2', ip: '10.244.1.5', inMesh: true, serviceAccount: 'bookinfo-reviews', app: 'reviews', service: 'reviews' },
  { name: 'reviews-v3', node: 'ambient-worker2', ip: '10.244.1.6', inMesh: true, serviceAccount: 'bookinfo-reviews', app: 'reviews', service: 'reviews' },
];

export const DEFAULT_SERVICES: readonly ServiceSpec[] = [
  { name: 'productpage', vip: '10.96.0.10', port: 9080, targetPort: 9080 },
  { name: 'details', vip: '10.96.0.11', port: 9080, targetPort: 9080 },
  { name: 'ratings', vip: '10.96.0.12', port: 9080, targetPort: 9080 },
  { name: 'reviews', vip: '10.96.0.13', port: 9080, targetPort: 9080 },
];

export interface TopologyOptions {
  /** Default `zt<pid % 10000>`; at most 8 characters. */
  prefix?: string | undefined;
  nodes?: readonly NodeSpec[] | undefined;
  pods?: readonly PodSpec[] | undefined;
  services?: readonly ServiceSpec[] | undefined;
  /** Where the local config YAML goes (default: a fresh directory under /tmp). */
  workDir?: string | undefined;
}

export function buildServiceHostname(name: string): string {
  return `${name}.${NAMESPACE}.svc.cluster.local`;
}

export function buildPodGatewayIp(node: NodeSpec): string {
  return `10.244.${node.podSubnet}.1`;
}

/** The local config document (the local config schema) for these pods, services and policies. */
export function buildLocalConfigDocument(
  pods: readonly PodSpec[],
  services: readonly ServiceSpec[],
  policies: readonly Record<string, unknown>[] = [],
): Record<string, unknown> {
  const svcByName = new Map(services.map((s) => [s.name, s]));
  return {
    workloads: pods.map((p) => {
      const svc = p.service === undefined ? undefined : svcByName.get(p.service);
      return {
        uid: `Kubernetes//Pod/${NAMESPACE}/${p.name}`,
        name: p.name,
        namespace: NAMESPACE,
        serviceAccount: p.serviceAccount,
        trustDomain: TRUST_DOMAIN,
        workloadIps: [p.ip],
        protocol: p.inMesh ? 'HBONE' : 'TCP',
        node: p.node,
        clusterId: 'Kubernetes',
        workloadName: p.app,
        workloadType: 'deployment',
        canonicalName: p.app,
        canonicalRevision: /-(v\d+)$/.exec(p.name)?.[1] ?? 'v1',
        services: svc === undefined ? {} : { [`${NAMESPACE}/${buildServiceHostname(svc.name)}`]: { [svc.port]: svc.targetPort } },
      };
    }),
    services: services.map((s) => ({
      name: s.name,
      namespace: NAMESPACE,
      hostname: buildServiceHostname(s.name),
      vips: [`/${s.vip}`],
      ports: { [s.port]: s.targetPort },
    })),
    ...(policies.length > 0 ? { policies } : {}),
  };
}

export function buildHostsFile(services: readonly ServiceSpec[]): string {
  const lines = ['127.0.0.1 localhost'];
  for (const s of services) lines.push(`${s.vip} ${s.name} ${s.name}.${NAMESPACE} ${buildServiceHostname(s.name)}`);
  return lines.join('\n') + '\n';
}

const liveTopologies = new Set<Topology>();
let handlersInstalled = false;

function installProcessCleanup(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const t of liveTopologies) t.destroySync();
  });
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(sig, () => {
      for (const t of liveTopologies) t.destroySync();
      process.exit(code);
    });
  }
}

export class Topology {
  readonly prefix: string;
  readonly nodes: readonly NodeSpec[];
  readonly pods: readonly PodSpec[];
  readonly services: readonly ServiceSpec[];
  readonly workDir: string;
  readonly configPath: string;
  private readonly created: string[] = [];
  private readonly children = new Set<ChildProcess>();

  constructor(o: TopologyOptions = {}) {
    this.prefix = o.prefix ?? `zt${process.pid % 10000}`;
    if (!/^[a-z][a-z0-9]{0,7}$/.test(this.prefix)) throw new Error(`topology prefix '${this.prefix}' must be 1-8 lowercase letters/digits`);
    this.nodes = o.nodes ?? DEFAULT_NODES;
    this.pods = o.pods ?? DEFAULT_PODS;
    this.services = o.services ?? DEFAULT_SERVICES;
    this.workDir = o.workDir ?? join('/tmp', `${this.prefix}-topology`);
    this.configPath = join(this.workDir, 'local-config.yaml');
  }

  get rootNetns(): string {
    return `${this.prefix}-root`;
  }
  nodeNetns(node: string): string {
    return `${this.prefix}-${node}`;
  }
  ztunnelNetns(node: string): string {
    return `${this.prefix}-ztunnel-${node}`;
  }
  podNetns(pod: string): string {
    return `${this.prefix}-${pod}`;
  }
  getNode(name: string): NodeSpec {
    const n = this.nodes.find((x) => x.name === name);
    if (n === undefined) throw new Error(`no node ${name}`);
    return n;
  }
  getPod(name: string): PodSpec {
    const p = this.pods.find((x) => x.name === name);
    if (p === undefined) throw new Error(`no pod ${name}`);
    return p;
  }
  /** The node's pod-gateway IP (the `src` of its table-100 routes). */
  podGatewayIp(node: string): string {
    return buildPodGatewayIp(this.getNode(node));
  }

  private async ip(netns: string | undefined, args: string[]): Promise<void> {
    const cmd: Command = netns === undefined ? { file: 'ip', args } : { file: 'ip', args: ['-n', netns, ...args] };
    const r = await runCommand(cmd);
    if (r.code !== 0) throw new Error(`ip ${cmd.args.join(' ')}: ${r.stderr.trim()}`);
  }

  private async sysctl(netns: string, key: string, value: string): Promise<void> {
    const r = await runCommand({ file: 'ip', args: ['netns', 'exec', netns, 'sysctl', '-q', '-w', `${key}=${value}`] });
    if (r.code !== 0) throw new Error(`sysctl ${key} in ${netns}: ${r.stderr.trim()}`);
  }

  private async addNetns(name: string): Promise<void> {
    await this.ip(undefined, ['netns', 'add', name]);
    this.created.push(name);
    await this.ip(name, ['link', 'set', 'lo', 'up']);
  }

  /** A pod-like netns with `ip` on eth0, wired to its node as gateway 10.244.N.1. */
  private async addPodNetns(ns: string, node: NodeSpec, ip: string): Promise<void> {
    await this.addNetns(ns);
    const nodeNs = this.nodeNetns(node.name);
    const gw = buildPodGatewayIp(node);
    const hostSide = `${this.prefix}p${ip.split('.')[3]}`;
    await this.ip(undefined, ['link', 'add', hostSide, 'netns', nodeNs, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await this.ip(nodeNs, ['addr', 'add', `${gw}/32`, 'dev', hostSide]);
    await this.ip(nodeNs, ['link', 'set', hostSide, 'up']);
    await this.ip(nodeNs, ['route', 'add', `${ip}/32`, 'dev', hostSide, 'scope', 'link', 'src', gw]);
    await this.sysctl(nodeNs, `net.ipv4.conf.${hostSide}.rp_filter`, '0');
    await this.ip(ns, ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await this.ip(ns, ['link', 'set', 'eth0', 'up']);
    // Point-to-point: even same-subnet pods are reached through the node.
    await this.ip(ns, ['route', 'replace', `10.244.${node.podSubnet}.0/24`, 'via', gw, 'dev', 'eth0', 'onlink']);
    await this.ip(ns, ['route', 'add', 'default', 'via', gw, 'dev', 'eth0', 'onlink']);
    const etc = join('/etc/netns', ns);
    mkdirSync(etc, { recursive: true });
    writeFileSync(join(etc, 'hosts'), buildHostsFile(this.services));
  }

  /** Builds every namespace, link and route, and writes the local config YAML. */
  async create(): Promise<void> {
    liveTopologies.add(this);
    installProcessCleanup();
    try {
      const root = this.rootNetns;
      const br = `${this.prefix}br`;
      await this.addNetns(root);
      await this.ip(root, ['link', 'add', br, 'type', 'bridge']);
      await this.ip(root, ['addr', 'add', `${BRIDGE_IP}/${BRIDGE_PREFIX}`, 'dev', br]);
      await this.ip(root, ['link', 'set', br, 'up']);
      await this.sysctl(root, 'net.ipv4.ip_forward', '1');
      for (const node of this.nodes) {
        const ns = this.nodeNetns(node.name);
        const rootSide = `${this.prefix}n${node.ip.split('.')[3]}`;
        await this.addNetns(ns);
        await this.ip(undefined, ['link', 'add', rootSide, 'netns', root, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
        await this.ip(root, ['link', 'set', rootSide, 'master', br, 'up']);
        await this.ip(ns, ['addr', 'add', `${node.ip}/${BRIDGE_PREFIX}`, 'dev', 'eth0']);
        await this.ip(ns, ['link', 'set', 'eth0', 'up']);
        await this.ip(ns, ['route', 'add', 'default', 'via', BRIDGE_IP]);
        await this.ip(root, ['route', 'add', `10.244.${node.podSubnet}.0/24`, 'via', node.ip]);
        await this.sysctl(ns, 'net.ipv4.ip_forward', '1');
        for (const k of ['all', 'default', 'eth0']) await this.sysctl(ns, `net.ipv4.conf.${k}.rp_filter`, '0');
      }
      for (const node of this.nodes) {
        for (const other of this.nodes) {
          if (other !== node) await this.ip(this.nodeNetns(node.name), ['route', 'add', `10.244.${other.podSubnet}.0/24`, 'via', other.ip]);
        }
        await this.addPodNetns(this.ztunnelNetns(node.name), node, node.ztunnelIp);
      }
      for (const pod of this.pods) await this.addPodNetns(this.podNetns(pod.name), this.getNode(pod.node), pod.ip);
      this.writeLocalConfig(this.pods);
    } catch (err) {
      this.destroySync();
      throw err;
    }
  }

  /** (Re)writes the YAML; tests pass a subset of pods to take some out of the mesh, and policies in the local config schema. */
  writeLocalConfig(pods: readonly PodSpec[], policies: readonly Record<string, unknown>[] = []): string {
    mkdirSync(this.workDir, { recursive: true });
    const tmp = `${this.configPath}.tmp`;
    writeFileSync(tmp, stringify(buildLocalConfigDocument(pods, this.services, policies)));
    // rename: readers never see a half-written file.
    spawnSync('mv', ['-f', tmp, this.configPath]);
    return this.configPath;
  }

  /** Starts `file args` inside `netns`; killed by destroySync(). */
  spawnIn(netns: string, file: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', netns, file, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  /** Runs a command to completion inside `netns`. */
  execIn(netns: string, file: string, args: string[]): ReturnType<typeof runCommand> {
    return runCommand({ file: 'ip', args: ['netns', 'exec', netns, file, ...args] });
  }

  /** Kills our processes, deletes our namespaces and /etc/netns entries. Safe to call twice. */
  destroySync(): void {
    for (const child of this.children) {
      if (child.exitCode === null && child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    this.children.clear();
    Topology.sweep(this.prefix);
    rmSync(this.workDir, { recursive: true, force: true });
    this.created.length = 0;
    liveTopologies.delete(this);
  }

  async destroy(): Promise<void> {
    this.destroySync();
  }

  /** Names of netns currently present with our prefix. */
  static listNetns(prefix: string): string[] {
    const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    return (r.stdout ?? '')
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => n.startsWith(`${prefix}-`));
  }

  /** Removes every netns and /etc/netns directory named `<prefix>-…` (leftovers of a crash). */
  static sweep(prefix: string): void {
    for (const ns of Topology.listNetns(prefix)) {
      // Processes still inside keep the netns alive; kill them first.
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone
        }
      }
      spawnSync('ip', ['netns', 'del', ns]);
    }
    try {
      for (const d of readdirSync('/etc/netns')) if (d.startsWith(`${prefix}-`)) rmSync(join('/etc/netns', d), { recursive: true, force: true });
    } catch {
      // no /etc/netns
    }
  }
}
