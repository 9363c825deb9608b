// `npm run demo` (root): the seed's walk-through, live. Builds a two-node namespaced
// "cluster", applies the node and ztunnel redirection, runs a node agent per node and a
// ztunnel-ts per node (in its ztunnel pod netns), runs
// `curl -s http://productpage:9080/ | head -n1` in the sleep pod, and prints what the blog
// shows: the answer, `ipset list`, `ip rule`, tables 101 and 100 of the destination node,
// the ztunnel's TPROXY rules, and both ztunnels' access-log lines for the request; then
// `ztunnel-ts explain` of that connection (every hop with the object deciding it). With
// --break it then removes sleep from the node's ipset and explains again: explain stops at
// the broken hop and names the fix.
// Must never: leave namespaces, rules or processes behind (the topology cleans up on exit,
// failure, SIGINT and SIGTERM), or install packages when --no-install was given (as root
// with apt-get it installs the missing Debian packages itself and says which).

import { spawn, spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { detectIptablesBackend, buildIptablesBinary } from '../redirect/iptables.js';
import { createRunner } from '../redirect/plan.js';
import { MAIN_JS, MeshHarness } from './mesh-harness.js';
import { Topology } from './topology.js';

/** Tool → Debian package that provides it. */
export const REQUIRED_TOOLS: ReadonlyArray<readonly [string, string]> = [
  ['ip', 'iproute2'],
  ['ipset', 'ipset'],
  ['iptables-nft-restore', 'iptables'],
  ['sysctl', 'procps'],
  ['curl', 'curl'],
];

const DEMO_USAGE = `usage: ztunnel-ts demo [--xds] [--break] [--no-install] [--prefix NAME] [--stand-in SCRIPT]
  --xds              ztunnels and node agents take workloads, services, policies and certificates
                     from a control plane over delta xDS (\`ztunnel-ts control-plane\` on the first node)
  --break            after the explanation, remove sleep from the node's ipset and explain again:
                     explain stops at the broken hop and names the fix
  --no-install       name missing tools instead of installing them with apt-get (the default as root)
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

/** `explain --topology PREFIX`: the demo topology's netns by node name (what main.ts gives explain). */
export function buildTopologyLocator(prefix: string): { nodes: string[]; locate(node: string): { nodeNetns: string; ztunnelNetns: string } | undefined } {
  const topo = new Topology({ prefix });
  return {
    nodes: topo.nodes.map((n) => n.name),
    locate: (node) => (topo.nodes.some((n) => n.name === node) ? { nodeNetns: topo.nodeNetns(node), ztunnelNetns: topo.ztunnelNetns(node) } : undefined),
  };
}

/** Runs `ztunnel-ts explain --topology PREFIX ARGS` (the built CLI, as a user would) and prints what it prints. */
function runExplain(prefix: string, args: string[]): Promise<{ code: number; out: string }> {
  say(`$ ztunnel-ts explain --topology ${prefix} ${args.join(' ')}`);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN_JS, 'explain', '--topology', prefix, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const show = (c: Buffer): void => {
      out += c.toString();
      process.stdout.write(c);
    };
    child.stdout.on('data', show);
    child.stderr.on('data', show);
    child.on('error', (e) => resolve({ code: 127, out: e.message }));
    child.on('close', (code) => resolve({ code: code ?? 1, out }));
  });
}

export async function runDemo(argv: string[]): Promise<number> {
  let values: { install?: boolean; 'no-install'?: boolean; prefix?: string; 'stand-in'?: string; help?: boolean; xds?: boolean; break?: boolean };
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      options: {
        install: { type: 'boolean' },
        'no-install': { type: 'boolean' },
        prefix: { type: 'string' },
        'stand-in': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        xds: { type: 'boolean' },
        break: { type: 'boolean' },
      },
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
  if (missing.length > 0 && !values['no-install'] && hasTool('apt-get')) {
    say(`demo: missing tools; installing the Debian packages: apt-get install -y ${missing.join(' ')}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    if (spawnSync('apt-get', ['install', '-y', ...missing], { stdio: 'inherit', env }).status !== 0) {
      spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
      spawnSync('apt-get', ['install', '-y', ...missing], { stdio: 'inherit', env });
    }
    missing = findMissingPackages();
  }
  if (missing.length > 0) {
    process.stderr.write(`demo: missing tools; run: apt-get install -y ${missing.join(' ')}\n`);
    return 1;
  }
  const standIn = values['stand-in'];
  const mesh = new MeshHarness({
    prefix: values.prefix,
    standIn,
    xds: values.xds === true,
    agentLog: (node, level, msg) => say(`[istio-cni ${node}] ${new Date().toISOString()}\t${level}\tambient\t${msg}`),
    onZtunnelExit: (node, code, stderr) => say(`demo: ztunnel on ${node} exited with ${code}: ${stderr}`),
  });
  for (const f of mesh.findMissingBuild()) {
    process.stderr.write(`demo: ${f} not found; run npm run build first\n`);
    return 1;
  }
  const topo = mesh.topo;
  try {
    say(`demo: building the namespaced cluster (prefix ${topo.prefix}) ...`);
    await mesh.start();
    if (values.xds) {
      say();
      say(`control plane on ${topo.nodes[0]?.name ?? ''} (${mesh.xdsEnv().XDS_ADDRESS ?? ''}):`);
      say(mesh.controlPlaneOut.join('\n'));
      for (const node of topo.nodes) {
        const dump = await topo.execIn(topo.ztunnelNetns(node.name), 'curl', ['-s', '--max-time', '3', 'http://127.0.0.1:15000/config_dump']);
        try {
          const x = (JSON.parse(dump.stdout) as { xds?: { address: string; connected: boolean; types: { typeUrl: string; resources: number; acks: number; nacks: number }[] } }).xds;
          const types = (x?.types ?? []).map((ty) => `${ty.typeUrl.split('/').pop() ?? ''}: ${ty.resources} resources, ${ty.acks} ACK, ${ty.nacks} NACK`).join('; ');
          say(`ztunnel on ${node.name}: xDS ${x?.connected ? 'connected to' : 'NOT connected to'} ${x?.address ?? '?'} — ${types}`);
        } catch {
          say(`ztunnel on ${node.name}: no config_dump (${dump.stderr.trim()})`);
        }
      }
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
      const zt = mesh.getZtunnel(node.name);
      const mine = zt.out.filter((l) => (l.includes('"access"') || l.includes('listener')) && l.includes('10.244.2.4'));
      say(mine.length > 0 ? mine.join('\n') : '(no access-log line mentioning 10.244.2.4)');
    }
    let explained = true;
    if (standIn === undefined) {
      say();
      say('Where does this connection go? Every hop, with the live object deciding it:');
      const e = await runExplain(topo.prefix, ['default/sleep', 'productpage:9080']);
      explained = e.code === 0;
      if (values.break) {
        const src = topo.pods.find((p) => p.name === 'sleep');
        const srcNode = src?.node ?? topo.nodes[0]!.name;
        say();
        say(`demo --break: removing sleep (${src?.ip ?? '?'}) from ipset ztunnel-pods-ips on ${srcNode}, as if its node agent had missed it`);
        say(`root@${srcNode}:/# ipset del ztunnel-pods-ips ${src?.ip ?? '?'}`);
        const del = await topo.execIn(topo.nodeNetns(srcNode), 'ipset', ['del', 'ztunnel-pods-ips', src?.ip ?? '']);
        if (del.code !== 0) say(`(ipset del failed: ${del.stderr.trim()})`);
        const broken = await runExplain(topo.prefix, ['default/sleep', 'productpage:9080']);
        const stopped = broken.code === 3 && broken.out.includes('broken at source-ipset');
        say(
          stopped
            ? 'demo --break: explain stopped at the first hop (source-ipset) and named the fix; nothing after it is checked, since sleep\'s packets never reach ztunnel'
            : `demo --break: explain did NOT stop at source-ipset (exit ${broken.code})`,
        );
        explained = explained && stopped;
      }
    }
    say();
    return firstLine === '<!DOCTYPE html>' && explained ? 0 : 1;
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    for (const [name, zt] of mesh.ztunnels) if (zt.out.length) process.stderr.write(`--- ztunnel ${name} output (last lines):\n${zt.out.slice(-20).join('\n')}\n`);
    return 1;
  } finally {
    await mesh.stop();
    say(`demo: cleaned up (no namespace with prefix ${topo.prefix} left: ${Topology.listNetns(topo.prefix).length === 0})`);
  }
}
