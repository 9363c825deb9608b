// Starts the whole namespaced mesh and hands back what the demo and the root-only
// end-to-end tests need: the Topology, a node agent per node, a ztunnel-ts process per node
// (in its ztunnel pod netns, with its stdout lines), the bookinfo-like apps, and ways to
// start more apps, restart a ztunnel and stop everything.
// Must never: leave namespaces, rules or processes behind — stop() is idempotent, the
// Topology kills what was spawned through it and deletes its namespaces on exit/signals,
// and a failed start() is followed by stop() in the callers' finally/teardown.
// Invariant: every process runs inside a namespace of this topology (spawnIn), so all
// traffic stays inside the namespaces.

import { spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NodeAgent, type AgentLog } from '../redirect/node-agent.js';
import { applyNodeRedirect, applyZtunnelRedirect } from '../redirect/redirect.js';
import { Topology, type PodSpec, type ServiceSpec } from './topology.js';

export interface MeshHarnessOptions {
  /** Topology prefix (≤ 8 characters); default `zt<pid>`. */
  prefix?: string | undefined;
  /** Run this relay script (`node SCRIPT relay`) instead of ztunnel-ts (development). */
  standIn?: string | undefined;
  /** Extra environment for the ztunnel processes. */
  ztunnelEnv?: NodeJS.ProcessEnv | undefined;
  /** Node flags for the ztunnel processes (e.g. --cpu-prof, which Node 20 refuses in NODE_OPTIONS). */
  ztunnelNodeArgs?: readonly string[] | undefined;
  /** Pods and services of the topology; default the bookinfo-like DEFAULT_PODS / DEFAULT_SERVICES. */
  pods?: readonly PodSpec[] | undefined;
  services?: readonly ServiceSpec[] | undefined;
  /** Start the bookinfo apps in start() (default true); false for callers that run their own servers. */
  startApps?: boolean | undefined;
  /** The node agents' log lines, with the node they come from; default silent. */
  agentLog?: ((node: string, ...line: Parameters<AgentLog>) => void) | undefined;
  /** Called when a ztunnel process exits on its own with a non-zero code. */
  onZtunnelExit?: ((node: string, code: number, stderr: string) => void) | undefined;
  /** Every stdout line of every ztunnel process, restarted ones included (the suites watch for "unexpected error"). */
  onZtunnelLine?: ((node: string, line: string) => void) | undefined;
  readyTimeoutMs?: number | undefined;
  /**
   * Take everything from a control plane instead of the file: `ztunnel-ts control-plane` runs in
   * the first node's netns (serving the same YAML, watched, over delta xDS, and signing CSRs); the
   * node agents run as `node-agent --xds` processes in the node netns; the ztunnels get
   * XDS_ADDRESS / XDS_ROOT_CA / AUTH_TOKEN and their certificates from its CA.
   */
  xds?: boolean | undefined;
}

/** The control plane's port on the first node (istiod's xDS/CA port). */
export const CONTROL_PLANE_PORT = 15012;

export interface ZtunnelHandle {
  node: string;
  netns: string;
  child: ChildProcess;
  /** Its stdout lines so far (JSON log lines for ztunnel-ts); grows while it runs. */
  out: string[];
  /** Its stderr so far. */
  stderr: () => string;
}

// The harness runs from dist/src/demo (the demo) or from src/demo under tap's TypeScript
// loader (the tests); the processes it spawns always run the compiled files.
const srcDir = fileURLToPath(new URL('..', import.meta.url));
const builtSrcDir = basename(dirname(srcDir)) === 'dist' ? srcDir : join(srcDir, '..', 'dist', 'src');
export const MAIN_JS = join(builtSrcDir, 'main.js');
export const APPS_JS = join(builtSrcDir, 'demo', 'apps.js');

/** Polls `pred` every `intervalMs` until it holds (true) or `ms` pass (false). */
export async function waitUntil(pred: () => Promise<boolean> | boolean, ms: number, intervalMs = 100): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await pred()) return true;
    if (Date.now() >= end) return false;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Collects a child's stdout as lines (the array keeps growing). */
export function collectLines(child: ChildProcess, onLine?: (line: string) => void): string[] {
  const out: string[] = [];
  let buf = '';
  child.stdout?.on('data', (c: Buffer) => {
    buf += c.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    for (const p of parts) {
      if (!p) continue;
      out.push(p);
      onLine?.(p);
    }
  });
  return out;
}

/** Parsed JSON lines whose `message` is `message` (e.g. 'connection complete'). */
export function findLogRecords(lines: readonly string[], message: string): Record<string, unknown>[] {
  const found: Record<string, unknown>[] = [];
  for (const l of lines) {
    if (!l.startsWith('{')) continue;
    try {
      const o = JSON.parse(l) as Record<string, unknown>;
      if (o.message === message) found.push(o);
    } catch {
      // not a JSON log line
    }
  }
  return found;
}

export class MeshHarness {
  readonly topo: Topology;
  readonly agents: NodeAgent[] = [];
  readonly ztunnels = new Map<string, ZtunnelHandle>();
  private readonly o: MeshHarnessOptions;
  private caDir = '';
  private stopped = false;
  /** xDS mode: the control plane and the node-agent processes (killed by stop() / the Topology). */
  private controlPlane: ChildProcess | undefined;
  readonly agentProcesses: ChildProcess[] = [];
  readonly controlPlaneOut: string[] = [];

  constructor(o: MeshHarnessOptions = {}) {
    this.o = o;
    this.topo = new Topology({ prefix: o.prefix, pods: o.pods, services: o.services });
  }

  /** Entry points this harness needs that are missing (run `npm run build`). */
  findMissingBuild(): string[] {
    return [this.o.standIn ?? MAIN_JS, APPS_JS].filter((f) => !existsSync(f));
  }

  /** Topology, redirection, node agents, apps (unless startApps is false), CA, ztunnels; resolves once every ztunnel is ready. Throws on failure (then call stop()). */
  async start(): Promise<void> {
    const topo = this.topo;
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
    this.caDir = join(topo.workDir, 'ca');
    mkdirSync(this.caDir, { recursive: true });
    if (this.o.standIn === undefined) {
      const ca = spawnSync(process.execPath, [MAIN_JS, 'ca', 'create', '--out', this.caDir, '--force'], { encoding: 'utf8', timeout: 30_000 });
      if (ca.status !== 0) throw new Error(`ca create: ${ca.stderr.trim()}`);
    }
    if (this.o.xds) {
      await this.startControlPlane();
      await Promise.all(topo.nodes.map((node) => this.startXdsAgent(node.name)));
    }
    for (const node of this.o.xds ? [] : topo.nodes) {
      const agent = new NodeAgent({
        nodeName: node.name,
        configPath: topo.configPath,
        podGatewayIp: topo.podGatewayIp(node.name),
        netns: topo.nodeNetns(node.name),
        log: (level, message) => this.o.agentLog?.(node.name, level, message),
      });
      this.agents.push(agent);
      if (!(await agent.start()).ok) throw new Error(`node agent on ${node.name} failed`);
    }
    const apps: Promise<ChildProcess>[] = [];
    for (const pod of this.o.startApps === false ? [] : topo.pods) {
      if (pod.name === 'productpage') apps.push(this.startApp(pod.name, 'productpage', 9080));
      else if (pod.service !== undefined) apps.push(this.startApp(pod.name, 'http', 9080, pod.name));
    }
    await Promise.all(apps);

    for (const node of topo.nodes) this.startZtunnel(node.name);
    for (const node of topo.nodes) await this.waitZtunnelReady(node.name);
  }

  /** XDS_ADDRESS, XDS_ROOT_CA and AUTH_TOKEN of the control plane (xds mode). */
  xdsEnv(): NodeJS.ProcessEnv {
    const node = this.topo.nodes[0];
    if (node === undefined) throw new Error('no node');
    return { XDS_ADDRESS: `${node.ip}:${CONTROL_PLANE_PORT}`, XDS_ROOT_CA: join(this.caDir, 'ca-cert.pem'), AUTH_TOKEN: join(this.topo.workDir, 'istio-token') };
  }

  /** The control plane in the first node's netns, serving the topology's YAML; resolves once it serves. */
  private async startControlPlane(): Promise<void> {
    const topo = this.topo;
    const node = topo.nodes[0];
    if (node === undefined) throw new Error('no node');
    if (!existsSync(topo.configPath)) topo.writeLocalConfig(topo.pods);
    const tokenFile = join(topo.workDir, 'istio-token');
    writeFileSync(tokenFile, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600 });
    const child = topo.spawnIn(topo.nodeNetns(node.name), process.execPath, [
      MAIN_JS,
      'control-plane',
      '--config',
      topo.configPath,
      '--ca-dir',
      this.caDir,
      '--token-file',
      tokenFile,
      '--listen',
      `${node.ip}:${CONTROL_PLANE_PORT}`,
      '--name',
      node.ip,
    ]);
    this.controlPlane = child;
    const out = collectLines(child, (line) => this.controlPlaneOut.push(line));
    let err = '';
    child.stderr?.on('data', (c: Buffer) => void (err += c.toString()));
    const ok = await waitUntil(() => child.exitCode !== null || out.some((l) => l.includes('serving')), 15_000, 50);
    if (!ok || child.exitCode !== null) throw new Error(`control plane did not start: ${err.trim() || out.join('\n')}`);
  }

  /** `node-agent --xds` in the node's netns; resolves after its first sync from xDS. */
  private async startXdsAgent(node: string): Promise<void> {
    const topo = this.topo;
    const child = topo.spawnIn(
      topo.nodeNetns(node),
      process.execPath,
      [MAIN_JS, 'node-agent', '--xds', '--node', node, '--pod-gateway-ip', topo.podGatewayIp(node)],
      this.xdsEnv(),
    );
    this.agentProcesses.push(child);
    const out = collectLines(child, (line) => {
      const [, level, , message] = line.split('\t');
      this.o.agentLog?.(node, (level ?? 'info') as 'info', message ?? line);
    });
    let err = '';
    child.stderr?.on('data', (c: Buffer) => void (err += c.toString()));
    const ok = await waitUntil(() => child.exitCode !== null || out.some((l) => l.includes('first sync from xDS done')), 20_000, 50);
    if (!ok || child.exitCode !== null || !out.some((l) => l.includes('first sync from xDS done (ok)'))) {
      throw new Error(`node agent --xds on ${node} failed: ${err.trim() || out.slice(-5).join('\n')}`);
    }
  }

  /** Spawns the ztunnel of `node` (not waiting for readiness); replaces the handle. */
  startZtunnel(node: string): ZtunnelHandle {
    const topo = this.topo;
    const netns = topo.ztunnelNetns(node);
    const child =
      this.o.standIn === undefined
        ? topo.spawnIn(netns, process.execPath, [...(this.o.ztunnelNodeArgs ?? []), MAIN_JS], {
            PROXY_MODE: 'node',
            NODE_NAME: node,
            ...(this.o.xds
              ? { ...this.xdsEnv(), POD_NAMESPACE: 'istio-system', SERVICE_ACCOUNT: 'ztunnel', POD_NAME: `ztunnel-${node}` }
              : { LOCAL_XDS_PATH: topo.configPath, LOCAL_CA_CERT: join(this.caDir, 'ca-cert.pem'), LOCAL_CA_KEY: join(this.caDir, 'ca-key.pem') }),
            LOG_FORMAT: 'json',
            ENABLE_ORIG_SRC: 'true',
            ...this.o.ztunnelEnv,
          })
        : topo.spawnIn(netns, process.execPath, [this.o.standIn, 'relay']);
    const onLine = this.o.onZtunnelLine;
    const out = collectLines(child, onLine && ((line) => onLine(node, line)));
    let err = '';
    child.stderr?.on('data', (c: Buffer) => void (err += c.toString()));
    child.on('exit', (code) => {
      if (code !== null && code !== 0 && !this.stopped) this.o.onZtunnelExit?.(node, code, err.trim());
    });
    const handle: ZtunnelHandle = { node, netns, child, out, stderr: () => err };
    this.ztunnels.set(node, handle);
    return handle;
  }

  getZtunnel(node: string): ZtunnelHandle {
    const z = this.ztunnels.get(node);
    if (z === undefined) throw new Error(`no ztunnel for node ${node}`);
    return z;
  }

  /** Waits for 200 on :15021/healthz/ready (or the stand-in's three listeners); throws on timeout or exit. */
  async waitZtunnelReady(node: string): Promise<void> {
    const z = this.getZtunnel(node);
    const ms = this.o.readyTimeoutMs ?? 45_000;
    const ready =
      this.o.standIn === undefined
        ? await waitUntil(async () => {
            if (z.child.exitCode !== null) return true;
            const r = await this.topo.execIn(z.netns, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '1', 'http://127.0.0.1:15021/healthz/ready']);
            return r.stdout.trim() === '200';
          }, ms, 200)
        : await waitUntil(() => z.child.exitCode !== null || z.out.filter((l) => l.includes('listening')).length >= 3, ms, 100);
    if (z.child.exitCode !== null) throw new Error(`ztunnel on ${node} exited (${z.child.exitCode}): ${z.stderr().trim()}`);
    if (!ready) throw new Error(`ztunnel on ${node} did not become ready within ${ms} ms`);
  }

  /** Stops the ztunnel of `node` (SIGTERM, SIGKILL after `graceMs`), starts a new one and waits until it is ready. */
  async restartZtunnel(node: string, graceMs = 3000): Promise<ZtunnelHandle> {
    const old = this.getZtunnel(node).child;
    if (old.exitCode === null && old.signalCode === null) {
      const exited = new Promise<void>((r) => old.once('exit', () => r()));
      old.kill('SIGTERM');
      const timer = setTimeout(() => old.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    }
    const z = this.startZtunnel(node);
    await this.waitZtunnelReady(node);
    return z;
  }

  /** Starts `apps.js KIND PORT [EXTRA]` in a pod; resolves once it listens. */
  async startApp(pod: string, kind: string, port: number, extra?: string): Promise<ChildProcess> {
    const args = [APPS_JS, kind, String(port), ...(extra === undefined ? [] : [extra])];
    const child = this.topo.spawnIn(this.topo.podNetns(pod), process.execPath, args);
    const out = collectLines(child);
    const ok = await waitUntil(() => child.exitCode !== null || out.some((l) => l.includes('"listening"')), 10000, 50);
    if (!ok || child.exitCode !== null) throw new Error(`app ${kind} on ${pod}:${port} did not start`);
    return child;
  }

  /** Rewrites the local config (pods in the mesh config, optional policies); ztunnels and agents reload it. */
  writeConfig(pods: readonly PodSpec[] = this.topo.pods, policies?: readonly Record<string, unknown>[]): void {
    this.topo.writeLocalConfig(pods, policies);
  }

  /** Stops agents and ztunnels, deletes the topology. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const a of this.agents) await a.stop();
    for (const c of [...this.agentProcesses, ...(this.controlPlane ? [this.controlPlane] : [])]) if (c.exitCode === null) c.kill('SIGTERM');
    const exits: Promise<void>[] = [];
    for (const { child } of this.ztunnels.values()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      exits.push(new Promise<void>((r) => child.once('exit', () => r())));
      child.kill('SIGTERM');
    }
    // Drained ztunnels exit quickly; destroy() SIGKILLs whatever is still there after this.
    await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 1000))]);
    await this.topo.destroy();
  }
}
