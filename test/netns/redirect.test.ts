// Root-only: the seed's node-level capture path on a namespaced two-node "cluster".
// Builds the topology, applies node + ztunnel redirection, runs the stand-in transparent
// relay (test/helpers/stand-in-relay.mjs) in each ztunnel netns, and checks that
// sleep → productpage goes through both ztunnel netns with the client IP kept, that a
// non-mesh pod reaches productpage through 15006, that the node agent follows the YAML,
// that applying twice adds nothing twice, and that removal/teardown leave nothing behind.

import t from 'tap';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Topology, DEFAULT_PODS } from '../../src/demo/topology.js';
import { applyNodeRedirect, applyZtunnelRedirect, removeNodeRedirect, removeZtunnelRedirect } from '../../src/redirect/redirect.js';
import { NodeAgent } from '../../src/redirect/node-agent.js';

const RELAY = fileURLToPath(new URL('../helpers/stand-in-relay.mjs', import.meta.url));
const TOOLS = ['ip', 'ipset', 'iptables-nft-restore', 'sysctl', 'curl'];

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux network namespaces';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, iptables, ipset)';
  for (const tool of TOOLS) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `'${tool}' is not installed`;
  }
  return undefined;
}

const reason = skipReason();
if (reason !== undefined) {
  t.plan(0, reason);
} else {
  const topo = new Topology({ prefix: `rt${process.pid % 10000}` });
  const [worker, worker2] = topo.nodes as [(typeof topo.nodes)[0], (typeof topo.nodes)[0]];
  const agents: NodeAgent[] = [];
  const relayLogs = new Map<string, string[]>();
  const relays = new Map<string, ChildProcess>();

  t.teardown(async () => {
    for (const a of agents) await a.stop();
    await topo.destroy();
  });

  const inNs = (ns: string, file: string, args: string[]) => topo.execIn(ns, file, args);
  const waitFor = async (what: string, pred: () => boolean | Promise<boolean>, ms = 5000): Promise<void> => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await pred()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`timed out waiting for ${what}`);
  };
  const collect = (child: ChildProcess, key: string): string[] => {
    const lines: string[] = [];
    relayLogs.set(key, lines);
    let buf = '';
    child.stdout?.on('data', (c: Buffer) => {
      buf += c.toString();
      const parts = buf.split('\n');
      buf = parts.pop() ?? '';
      lines.push(...parts.filter(Boolean));
    });
    return lines;
  };
  const curl = async (pod: string, url: string) => (await inNs(topo.podNetns(pod), 'curl', ['-s', '--max-time', '5', url])).stdout;
  const snapshot = async (ns: string) => {
    const save = (await inNs(ns, 'iptables-nft-save', [])).stdout.split('\n').filter((l) => l.startsWith('-A')).sort();
    const rules = (await inNs(ns, 'ip', ['rule', 'list'])).stdout;
    return { save, rules };
  };

  t.test('setup: topology and redirection', async (t) => {
    await topo.create();
    for (const node of [worker, worker2]) {
      const first = await applyNodeRedirect({ ztunnelIp: node.ztunnelIp, ztunnelNetns: topo.ztunnelNetns(node.name) }, { netns: topo.nodeNetns(node.name) });
      t.ok(first.ok, `node side on ${node.name}: ${first.ok ? '' : first.message}`);
      const z = await applyZtunnelRedirect({}, { netns: topo.ztunnelNetns(node.name) });
      t.ok(z.ok, `ztunnel side on ${node.name}: ${z.ok ? '' : z.message}`);
    }
    // Applying again adds nothing twice, on both sides.
    const nodeNs = topo.nodeNetns(worker2.name);
    const ztNs = topo.ztunnelNetns(worker2.name);
    const before = [await snapshot(nodeNs), await snapshot(ztNs)];
    t.ok((await applyNodeRedirect({ ztunnelIp: worker2.ztunnelIp, ztunnelNetns: ztNs }, { netns: nodeNs })).ok);
    t.ok((await applyZtunnelRedirect({}, { netns: ztNs })).ok);
    t.same([await snapshot(nodeNs), await snapshot(ztNs)], before, 'second apply changes nothing');
    t.match(before[0]!.rules, /100:\s+from all fwmark 0x200\/0x200 goto 32766/);
    t.match(before[0]!.rules, /103:\s+from all lookup 100/);
    t.ok(before[0]!.save.includes('-A ztunnel-PREROUTING -p tcp -m set --match-set ztunnel-pods-ips src -j MARK --set-xmark 0x100/0x100'));
    t.ok(before[1]!.save.some((l) => l.includes('-i pistioout -p tcp -j TPROXY --on-port 15001 --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff')));

    for (const node of [worker, worker2]) {
      const agent = new NodeAgent({ nodeName: node.name, configPath: topo.configPath, netns: topo.nodeNetns(node.name), log: () => undefined, pollMs: 200, debounceMs: 30 });
      agents.push(agent);
      const r = await agent.start();
      t.ok(r.ok, `agent on ${node.name} synced`);
    }
    const table100 = (await inNs(nodeNs, 'ip', ['route', 'show', 'table', '100'])).stdout;
    t.match(table100, '10.244.1.7 via 192.168.126.2 dev istioin src 10.244.1.1');
    const members = (await inNs(nodeNs, 'ipset', ['list', 'ztunnel-pods-ips'])).stdout;
    for (const ip of ['10.244.1.4', '10.244.1.5', '10.244.1.6', '10.244.1.7', '10.244.1.8', '10.244.1.9']) t.match(members, ip);

    for (const node of [worker, worker2]) {
      const relay = topo.spawnIn(topo.ztunnelNetns(node.name), process.execPath, [RELAY, 'relay']);
      relays.set(node.name, relay);
      const lines = collect(relay, node.name);
      await waitFor(`relay on ${node.name}`, () => lines.filter((l) => l.includes('listening')).length === 3);
    }
    const app = topo.spawnIn(topo.podNetns('productpage'), process.execPath, [RELAY, 'http', '9080', 'productpage']);
    const appLines = collect(app, 'app');
    await waitFor('productpage app', () => appLines.some((l) => l.includes('listening')));
  });

  t.test('sleep → productpage goes through both ztunnel netns and keeps the source IP', async (t) => {
    const body = await curl('sleep', 'http://10.244.1.7:9080/');
    t.equal(body.split('\n')[0], '<!DOCTYPE html>');
    t.match(body, 'productpage saw 10.244.2.4');
    const out = relayLogs.get(worker.name)!.map((l) => JSON.parse(l) as { listener?: number; src?: string; dst?: string });
    const inb = relayLogs.get(worker2.name)!.map((l) => JSON.parse(l) as { listener?: number; src?: string; dst?: string });
    t.ok(out.some((e) => e.listener === 15001 && e.src?.startsWith('10.244.2.4:') && e.dst === '10.244.1.7:9080'), 'worker ztunnel got it on 15001');
    t.ok(inb.some((e) => e.listener === 15006 && e.src?.startsWith('10.244.2.4:') && e.dst === '10.244.1.7:9080'), 'worker2 ztunnel got it on 15006');
  });

  t.test('a non-mesh pod reaches productpage through 15006 only', async (t) => {
    const before = relayLogs.get(worker.name)!.length;
    const body = await curl('outsider', 'http://10.244.1.7:9080/');
    t.match(body, 'productpage saw 10.244.2.6');
    t.equal(relayLogs.get(worker.name)!.length, before, 'source node ztunnel not involved');
    t.ok(relayLogs.get(worker2.name)!.some((l) => l.includes('"listener":15006') && l.includes('10.244.2.6:')));
  });

  t.test('node agent follows the YAML while running', async (t) => {
    const nodeNs = topo.nodeNetns(worker2.name);
    const state = async () => ({
      ipset: (await inNs(nodeNs, 'ipset', ['list', 'ztunnel-pods-ips'])).stdout.includes('10.244.1.7\n'),
      route: (await inNs(nodeNs, 'ip', ['route', 'show', 'table', '100'])).stdout.includes('10.244.1.7 via'),
    });
    topo.writeLocalConfig(DEFAULT_PODS.filter((p) => p.name !== 'productpage'));
    await waitFor('productpage removed', async () => {
      const s = await state();
      return !s.ipset && !s.route;
    });
    t.pass('removed from ipset and table 100');
    t.match((await inNs(nodeNs, 'ipset', ['list', 'ztunnel-pods-ips'])).stdout, '10.244.1.4', 'other pods untouched');
    // Out of the mesh: the outsider now reaches productpage directly.
    const before = relayLogs.get(worker2.name)!.length;
    t.match(await curl('outsider', 'http://10.244.1.7:9080/'), 'productpage saw 10.244.2.6');
    t.equal(relayLogs.get(worker2.name)!.length, before, 'not captured any more');
    topo.writeLocalConfig(DEFAULT_PODS);
    await waitFor('productpage added', async () => {
      const s = await state();
      return s.ipset && s.route;
    });
    t.pass('added back');
  });

  t.test('TPROXY reaches listeners bound to [::], with --on-ip 127.0.0.1 and 0.0.0.0', async (t) => {
    const old = relays.get(worker2.name)!;
    await new Promise((r) => {
      old.once('exit', r);
      old.kill('SIGKILL');
    });
    const relay = topo.spawnIn(topo.ztunnelNetns(worker2.name), process.execPath, [RELAY, 'relay', '--v6']);
    const lines = collect(relay, worker2.name);
    await waitFor('v6 relay', () => lines.filter((l) => l.includes('listening')).length === 3);
    t.match(await curl('sleep', 'http://10.244.1.7:9080/'), 'productpage saw 10.244.2.4');
    t.ok(lines.some((l) => l.includes('"listener":15006') && l.includes('10.244.2.4:')), '[::]:15006 got it (on-ip 127.0.0.1)');
    t.ok((await applyZtunnelRedirect({ tproxyOnIp: '0.0.0.0' }, { netns: topo.ztunnelNetns(worker2.name) })).ok);
    const save = (await inNs(topo.ztunnelNetns(worker2.name), 'iptables-nft-save', ['-t', 'mangle'])).stdout;
    t.match(save, '--on-port 15006 --on-ip 0.0.0.0');
    t.notMatch(save, '--on-ip 127.0.0.1', 'chain contents replaced, not appended');
    const n = lines.length;
    t.match(await curl('sleep', 'http://10.244.1.7:9080/'), 'productpage saw 10.244.2.4');
    t.ok(lines.slice(n).some((l) => l.includes('"listener":15006')), '[::]:15006 got it (on-ip 0.0.0.0)');
  });

  t.test('remove undoes exactly what apply added; teardown leaves nothing', async (t) => {
    const nodeNs = topo.nodeNetns(worker.name);
    const ztNs = topo.ztunnelNetns(worker.name);
    for (const a of agents) await a.stop();
    t.ok((await removeZtunnelRedirect(undefined, { netns: ztNs })).ok);
    t.ok((await removeNodeRedirect(undefined, { netns: nodeNs })).ok);
    t.ok((await removeNodeRedirect(undefined, { netns: nodeNs })).ok, 'removing twice is fine');
    const n = await snapshot(nodeNs);
    const z = await snapshot(ztNs);
    t.notMatch(n.save.join('\n'), 'ztunnel-');
    t.notMatch(z.save.join('\n'), 'ztunnel-');
    t.notMatch(n.rules, /^10[0-3]:/m);
    t.notMatch(z.rules, /^2000[03]:/m);
    t.not((await inNs(nodeNs, 'ipset', ['list', 'ztunnel-pods-ips'])).code, 0, 'ipset destroyed');
    t.not((await inNs(nodeNs, 'ip', ['link', 'show', 'istioin'])).code, 0, 'tunnel deleted');
    t.equal((await inNs(nodeNs, 'ip', ['route', 'show', 'table', '101'])).stdout.trim(), '');
    await topo.destroy();
    const left = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.startsWith(`${topo.prefix}-`));
    t.same(left, [], 'no namespaces left');
  });
}
