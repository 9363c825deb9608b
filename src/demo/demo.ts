// `npm run demo` (root): the seed's walk-through, live. Builds a two-node namespaced
// "cluster", applies the node and ztunnel redirection, runs a node agent per node and a
// ztunnel-ts per node (in its ztunnel pod netns), runs
// `curl -s http://productpage:9080/ | head -n1` in the sleep pod, and prints what the blog
// shows: the answer, `ipset list`, `ip rule`, tables 101 and 100 of the destination node,
// the ztunnel's TPROXY rules, and both ztunnels' access-log lines for the request.
// Must never: leave namespaces, rules or processes behind (the topology cleans up on exit,
// failure, SIGINT and SIGTERM), or install packages unless --install was given.

import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { NodeAgent } from '../redirect/node-agent.js';
import { applyNodeRedirect, applyZtunnelRedirect } from '../redirect/redirect.js';
import { detectIptablesBackend, buildIptablesBinary } from '../redirect/iptables.js';
import { createRunner } from '../redirect/plan.js';
import { Topology } from './topology.js';

/** Tool → Debian package that provides it. */
export const REQUIRED_TOOLS: ReadonlyArray<readonly [string, string]> = [
  ['ip', 'iproute2'],
  ['ipset', 'ipset'],
  ['iptables-nft-restore', 'iptables'],
  ['sysctl', 'procps'],
  ['curl', 'curl'],
];

const DEMO_USAGE = `usage: ztunnel-ts demo [--install] [--prefix NAME] [--stand-in SCRIPT]
  --install          apt-get install missing tools instead of just naming them
  --prefix NAME      name prefix of everything created (default zt<pid>)
  --stand-in SCRIPT  run SCRIPT relay instead of ztunnel-ts in the ztunnel pods (development)
`;

const say = (s = ''): void => void process.stdout.write(`${s}\n`);

function hasTool(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

/** Debian packages providing the missing tools. */
export function findMissingPackages(has: (tool: string) => boolean = hasTool): string[] {
  return [...new Set(REQUIRED_TOOLS.filter(([tool]) => !has(tool)).map(([, pkg]) => pkg))];
}

function lines(child: ChildProcess): string[] {
  const out: string[] = [];
  let buf = '';
  child.stdout?.on('data', (c: Buffer) => {
    buf += c.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    out.push(...parts.filter(Boolean));
  });
  return out;
}

async function waitFor(what: string, pred: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  say(`demo: timed out waiting for ${what}`);
  return false;
}

export async function runDemo(argv: string[]): Promise<number> {
  let values: { install?: boolean; prefix?: string; 'stand-in'?: string; help?: boolean };
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      options: { install: { type: 'boolean' }, prefix: { type: 'string' }, 'stand-in': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    }).values;
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n${DEMO_USAGE}`);
    return 2;
  }
  if (values.help) {
    say(DEMO_USAGE);
    return 0;
  }
  if (process.platform !== 'linux' || process.getuid?.() !== 0) {
    process.stderr.write('demo: needs root on Linux (it creates network namespaces, iptables rules and an ipset)\n');
    return 1;
  }
  let missing = findMissingPackages();
  if (missing.length > 0 && values.install) {
    say(`demo: installing ${missing.join(' ')}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    if (spawnSync('apt-get', ['install', '-y', ...missing], { stdio: 'inherit', env }).status !== 0) {
      spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
      spawnSync('apt-get', ['install', '-y', ...missing], { stdio: 'inherit', env });
    }
    missing = findMissingPackages();
  }
  if (missing.length > 0) {
    process.stderr.write(`demo: missing tools; run: apt-get install -y ${missing.join(' ')}   (or: npm run demo -- --install)\n`);
    return 1;
  }
  const here = fileURLToPath(new URL('.', import.meta.url));
  const mainJs = join(here, '..', 'main.js');
  const appsJs = join(here, 'apps.js');
  const standIn = values['stand-in'];
  for (const f of standIn === undefined ? [mainJs, appsJs] : [standIn, appsJs]) {
    if (!existsSync(f)) {
      process.stderr.write(`demo: ${f} not found; run npm run build first\n`);
      return 1;
    }
  }

  const topo = new Topology({ prefix: values.prefix });
  const agents: NodeAgent[] = [];
  const ztunnels = new Map<string, { child: ChildProcess; out: string[] }>();
  try {
    say(`demo: building the namespaced cluster (prefix ${topo.prefix}) ...`);
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
        log: (level, msg) => say(`[istio-cni ${node.name}] ${new Date().toISOString()}\t${level}\tambient\t${msg}`),
      });
      agents.push(agent);
      if (!(await agent.start()).ok) throw new Error(`node agent on ${node.name} failed`);
    }
    for (const pod of topo.pods) {
      if (pod.name === 'productpage') topo.spawnIn(topo.podNetns(pod.name), process.execPath, [appsJs, 'productpage', '9080']);
      else if (pod.service !== undefined) topo.spawnIn(topo.podNetns(pod.name), process.execPath, [appsJs, 'http', '9080', pod.name]);
    }

    const caDir = join(topo.workDir, 'ca');
    mkdirSync(caDir, { recursive: true });
    if (standIn === undefined) {
      const ca = spawnSync(process.execPath, [mainJs, 'ca', 'create', '--out', caDir, '--force'], { encoding: 'utf8' });
      if (ca.status !== 0) throw new Error(`ca create: ${ca.stderr.trim()}`);
    }
    for (const node of topo.nodes) {
      const ns = topo.ztunnelNetns(node.name);
      const child =
        standIn === undefined
          ? topo.spawnIn(ns, process.execPath, [mainJs], {
              PROXY_MODE: 'node',
              NODE_NAME: node.name,
              LOCAL_XDS_PATH: topo.configPath,
              LOCAL_CA_CERT: join(caDir, 'ca-cert.pem'),
              LOCAL_CA_KEY: join(caDir, 'ca-key.pem'),
              LOG_FORMAT: 'json',
              ENABLE_ORIG_SRC: 'true',
            })
          : topo.spawnIn(ns, process.execPath, [standIn, 'relay']);
      const out = lines(child);
      let err = '';
      child.stderr?.on('data', (c: Buffer) => void (err += c.toString()));
      child.on('exit', (code) => {
        if (code !== null && code !== 0) say(`demo: ztunnel on ${node.name} exited with ${code}: ${err.trim()}`);
      });
      ztunnels.set(node.name, { child, out });
    }
    for (const node of topo.nodes) {
      const ns = topo.ztunnelNetns(node.name);
      const zt = ztunnels.get(node.name)!;
      const ready =
        standIn === undefined
          ? await waitFor(`ztunnel readiness on ${node.name}`, async () => {
              const r = await topo.execIn(ns, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '1', 'http://127.0.0.1:15021/healthz/ready']);
              return r.stdout.trim() === '200';
            }, 20000)
          : await waitFor(`stand-in on ${node.name}`, () => zt.out.filter((l) => l.includes('listening')).length >= 3, 10000);
      if (!ready) throw new Error(`ztunnel on ${node.name} did not become ready`);
    }

    const url = standIn === undefined ? 'http://productpage:9080/' : 'http://10.244.1.7:9080/';
    say();
    say(`$ kubectl exec deploy/sleep -- curl -s ${url} | head -n1`);
    const curl = await topo.execIn(topo.podNetns('sleep'), 'curl', ['-s', '--max-time', '10', url]);
    const firstLine = curl.stdout.split('\n')[0] ?? '';
    say(firstLine || `(no answer; curl exit ${curl.code})`);
    const served = /Served by productpage to ([\d.]+:\d+)/.exec(curl.stdout)?.[1];
    if (served) say(`(productpage saw the client as ${served})`);

    const dest = topo.pods.find((p) => p.name === 'productpage')?.node ?? topo.nodes[topo.nodes.length - 1]!.name;
    const nodeNs = topo.nodeNetns(dest);
    const show = async (ns: string, title: string, file: string, args: string[], filter?: (l: string) => boolean): Promise<void> => {
      say();
      say(title);
      const r = await topo.execIn(ns, file, args);
      const text = (r.stdout || r.stderr).trimEnd();
      say(filter ? text.split('\n').filter(filter).join('\n') : text);
    };
    await show(nodeNs, `root@${dest}:/# ipset list`, 'ipset', ['list']);
    await show(nodeNs, `root@${dest}:/# ip rule`, 'ip', ['rule']);
    await show(nodeNs, `root@${dest}:/# ip r show table 101`, 'ip', ['route', 'show', 'table', '101']);
    await show(nodeNs, `root@${dest}:/# ip r show table 100`, 'ip', ['route', 'show', 'table', '100']);
    await show(nodeNs, `root@${dest}:/# ip r get 10.244.1.7`, 'ip', ['route', 'get', '10.244.1.7']);
    const ztNs = topo.ztunnelNetns(dest);
    const backend = await detectIptablesBackend(createRunner(ztNs));
    await show(ztNs, `ztunnel on ${dest}: iptables-save -t mangle`, buildIptablesBinary(backend, '-save'), ['-t', 'mangle'], (l) => !l.startsWith('#'));

    await new Promise((r) => setTimeout(r, 500));
    for (const node of topo.nodes) {
      say();
      say(`access log of the ztunnel on ${node.name}:`);
      const zt = ztunnels.get(node.name)!;
      const mine = zt.out.filter((l) => (l.includes('"access"') || l.includes('listener')) && l.includes('10.244.2.4'));
      say(mine.length > 0 ? mine.join('\n') : '(no access-log line mentioning 10.244.2.4)');
    }
    say();
    return firstLine === '<!DOCTYPE html>' ? 0 : 1;
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    for (const [name, zt] of ztunnels) if (zt.out.length) process.stderr.write(`--- ztunnel ${name} output (last lines):\n${zt.out.slice(-20).join('\n')}\n`);
    return 1;
  } finally {
    for (const a of agents) await a.stop();
    for (const { child } of ztunnels.values()) if (child.exitCode === null) child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    await topo.destroy();
    say(`demo: cleaned up (no namespace with prefix ${topo.prefix} left: ${Topology.listNetns(topo.prefix).length === 0})`);
  }
}
