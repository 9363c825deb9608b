// The pure builders of the capture path: node and ztunnel plans (ipset, marks, tables,
// TPROXY ports, ip rules), the restore payloads, the remove plans, backend choice, the
// node agent's diff and parsers, the plan executor's idempotency, and the demo's YAML.

import t from 'tap';
import { parse } from 'yaml';
import { parseLocalConfig } from '../../src/config/local-config.js';
import { buildBackendChoice, buildRestorePayload, countSavedRules } from '../../src/redirect/iptables.js';
import { buildNodeApplyPlan, buildNodeChains, buildNodeRemovePlan, type NodeRedirectOptions } from '../../src/redirect/node-redirect.js';
import { buildZtunnelApplyPlan, buildZtunnelChains, buildZtunnelRemovePlan } from '../../src/redirect/ztunnel-redirect.js';
import { executePlan, formatPlan, type Command, type CommandResult, type Step } from '../../src/redirect/plan.js';
import { buildCaptureDiff, buildCapturedPods, buildIpsetMembers, buildPodRouteDestinations, buildPodRouteSpec, NodeAgent } from '../../src/redirect/node-agent.js';
import { runRedirectCli } from '../../src/redirect/cli.js';
import { buildHostsFile, buildLocalConfigDocument, DEFAULT_PODS, DEFAULT_SERVICES } from '../../src/demo/topology.js';
import { buildBulkDigest, buildProductPage } from '../../src/demo/apps.js';
import { findMissingPackages } from '../../src/demo/demo.js';

const NODE: NodeRedirectOptions = {
  ztunnelIp: '10.244.1.3',
  ztunnelIface: 'veth1',
  podGatewayIp: '10.244.1.1',
  hostIp: '172.18.0.3',
  backend: 'nft',
  tunnel: { kind: 'veth', ztunnelNetns: 'zt-ns' },
};
const ZT = { nodeIp: '10.244.1.1', ztunnelIp: '10.244.1.3', iface: 'eth0', backend: 'nft' as const, tunnel: 'veth' as const, tproxyOnIp: '127.0.0.1' };

const argvOf = (s: Step): string => [s.cmd.file, ...s.cmd.args].join(' ');
const argvs = (steps: Step[]): string[] => steps.map(argvOf);

t.test('node plan: ipset, tunnels, tables, rules', async (t) => {
  const plan = argvs(buildNodeApplyPlan(NODE));
  t.ok(plan.includes('ipset create ztunnel-pods-ips hash:ip -exist'));
  t.ok(plan.includes('ip link add name istioin type veth peer name pistioin netns zt-ns'));
  t.ok(plan.includes('ip link add name istioout type veth peer name pistioout netns zt-ns'));
  t.ok(plan.includes('ip addr replace 192.168.126.1/30 dev istioin'));
  t.ok(plan.includes('ip addr replace 192.168.127.1/30 dev istioout'));
  t.ok(plan.includes('ip -4 route replace default via 192.168.127.2 dev istioout table 101'));
  t.ok(plan.includes('ip -4 route replace default via 10.244.1.3 dev veth1 onlink table 102'));
  t.ok(plan.includes('ip -4 route replace 10.244.1.3/32 dev veth1 scope link table 100'));
  t.ok(plan.includes('ip -4 rule add pref 100 fwmark 0x200/0x200 goto 32766'));
  t.ok(plan.includes('ip -4 rule add pref 101 fwmark 0x100/0x100 lookup 101'));
  t.ok(plan.includes('ip -4 rule add pref 102 fwmark 0x40/0x40 lookup 102'));
  t.ok(plan.includes('ip -4 rule add pref 103 lookup 100'));
  for (const i of ['all', 'default', 'istioin', 'istioout', 'veth1']) t.ok(plan.includes(`sysctl -q -w net.ipv4.conf.${i}.rp_filter=0`), `rp_filter ${i}`);
  // Rules come last: nothing is steered before the tables exist.
  t.ok(plan.indexOf('ip -4 rule add pref 103 lookup 100') > plan.indexOf('ip -4 route replace default via 192.168.127.2 dev istioout table 101'));
  const geneve = argvs(buildNodeApplyPlan({ ...NODE, tunnel: { kind: 'geneve' } }));
  t.ok(geneve.includes('ip link add name istioin type geneve id 1000 remote 10.244.1.3'));
  t.ok(geneve.includes('ip link add name istioout type geneve id 1001 remote 10.244.1.3'));
});

t.test('node chains: mark order as in the former upstream node-level rules', async (t) => {
  const payload = buildRestorePayload('mangle', buildNodeChains(NODE));
  const lines = payload.split('\n');
  t.equal(lines[0], '*mangle');
  t.ok(lines.includes(':ztunnel-PREROUTING - [0:0]'));
  const idx = (s: string): number => lines.findIndex((l) => l === s);
  const pods = idx('-A ztunnel-PREROUTING -p tcp -m set --match-set ztunnel-pods-ips src -j MARK --set-xmark 0x100/0x100');
  const ret = idx('-A ztunnel-PREROUTING ! -i veth1 -m connmark --mark 0x210/0x210 -j MARK --set-xmark 0x40/0x40');
  const spoof = idx('-A ztunnel-PREROUTING ! -s 10.244.1.3/32 -i veth1 -j MARK --set-xmark 0x210/0x210');
  t.ok(pods > 0 && ret > 0 && spoof > 0, payload);
  t.ok(ret < spoof && spoof < pods, 'return marking before spoof marking before pod capture');
  t.ok(lines.includes('-A ztunnel-FORWARD -m mark --mark 0x210/0x210 -j CONNMARK --save-mark --nfmask 0x210 --ctmask 0x210'));
  t.ok(lines.includes('-A ztunnel-INPUT -m mark --mark 0x220/0x220 -j CONNMARK --save-mark --nfmask 0x220 --ctmask 0x220'));
  t.ok(lines.includes('-A ztunnel-OUTPUT -s 172.18.0.3/32 -j MARK --set-xmark 0x220/0x220'));
  t.equal(lines.at(-2), 'COMMIT');
  const nat = buildRestorePayload('nat', buildNodeChains(NODE));
  t.match(nat, '-A ztunnel-POSTROUTING -m mark --mark 0x100/0x100 -j ACCEPT');
  t.notMatch(nat, 'ztunnel-FORWARD', 'only the table asked for');
  // Hooks are checked before being inserted (idempotent), at position 1.
  const hooks = buildNodeApplyPlan(NODE).filter((s) => s.kind === 'ensure' && s.cmd.file === 'iptables-nft');
  t.equal(hooks.length, 7);
  t.same(hooks[0]!.kind === 'ensure' && hooks[0]!.check.cmd.args, ['-w', '-t', 'mangle', '-C', 'PREROUTING', '-j', 'ztunnel-PREROUTING']);
  t.same(hooks[0]!.cmd.args, ['-w', '-t', 'mangle', '-I', 'PREROUTING', '1', '-j', 'ztunnel-PREROUTING']);
  const restore = buildNodeApplyPlan({ ...NODE, backend: 'legacy' }).find((s) => s.cmd.file.endsWith('-restore'));
  t.same(restore?.cmd.file, 'iptables-legacy-restore');
  t.same(restore?.cmd.args, ['-w', '--noflush']);
});

t.test('ztunnel plan: TPROXY ports, marks, local table', async (t) => {
  const chains = buildRestorePayload('mangle', buildZtunnelChains(ZT)).split('\n');
  const socketRule = chains.indexOf('-A ztunnel-PREROUTING -p tcp -m socket --transparent -j MARK --set-xmark 0x400/0xfff');
  const hbone = chains.indexOf('-A ztunnel-PREROUTING -i pistioin -p tcp -m tcp --dport 15008 -j TPROXY --on-port 15008 --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff');
  const out = chains.indexOf('-A ztunnel-PREROUTING -i pistioout -p tcp -j TPROXY --on-port 15001 --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff');
  const inPlain = chains.indexOf('-A ztunnel-PREROUTING -i pistioin -p tcp -j TPROXY --on-port 15006 --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff');
  t.ok(socketRule > 0 && socketRule < hbone && hbone < inPlain && out > 0, 'socket mark first, 15008 before the catch-all 15006');
  t.ok(chains.includes('-A ztunnel-PREROUTING -i eth0 -p tcp ! -d 10.244.1.3/32 -j MARK --set-xmark 0x4d3/0xfff'));
  const plan = argvs(buildZtunnelApplyPlan(ZT));
  t.ok(plan.includes('ip -4 rule add pref 20000 fwmark 0x400/0xfff lookup 100'));
  t.ok(plan.includes('ip -4 rule add pref 20003 fwmark 0x4d3/0xfff lookup 100'));
  t.ok(plan.includes('ip -4 route replace local 0.0.0.0/0 dev lo table 100'));
  t.ok(plan.includes('ip -4 route replace default via 192.168.127.1 dev pistioout table 101'));
  t.ok(plan.includes('ip -4 route replace default via 192.168.126.1 dev pistioin table 102'));
  t.ok(plan.includes('ip addr replace 192.168.126.2/30 dev pistioin'));
  t.ok(plan.includes('ip addr replace 192.168.127.2/30 dev pistioout'));
  // connect() tries the low end's parity first: an odd low end keeps ztunnel's spoofed upstream
  // ports off the pods' (even) ones, so the two legs of a passthrough never share a 4-tuple (issue 8).
  const range = plan.find((l) => l.startsWith('sysctl -q -w net.ipv4.ip_local_port_range='));
  t.equal(range, 'sysctl -q -w net.ipv4.ip_local_port_range=32769 61000', 'ztunnel netns port range set');
  t.equal(Number(/=(\d+) /.exec(range ?? '')?.[1]) % 2, 1, 'its low end is odd');
  t.ok(argvs(buildZtunnelRemovePlan('nft')).includes('sysctl -q -w net.ipv4.ip_local_port_range=32768 60999'), 'remove restores the kernel default');
  t.notOk(plan.some((l) => l.includes('type geneve')), 'veth mode creates no link here');
  t.ok(argvs(buildZtunnelApplyPlan({ ...ZT, tunnel: 'geneve' })).includes('ip link add name pistioin type geneve id 1000 remote 10.244.1.1'));
  t.match(buildRestorePayload('mangle', buildZtunnelChains({ ...ZT, tproxyOnIp: '0.0.0.0' })), '--on-port 15001 --on-ip 0.0.0.0');
});

t.test('remove plans only touch what apply added', async (t) => {
  const node = buildNodeRemovePlan('nft');
  const text = argvs(node);
  t.ok(text.includes('iptables-nft -w -t mangle -D PREROUTING -j ztunnel-PREROUTING'));
  t.ok(text.includes('iptables-nft -w -t nat -X ztunnel-POSTROUTING'));
  t.ok(text.includes('ip -4 rule del pref 101 fwmark 0x100/0x100 lookup 101'));
  t.ok(text.includes('ipset destroy ztunnel-pods-ips'));
  t.ok(text.includes('ip link del dev istioin'));
  t.notOk(text.some((l) => /-F (PREROUTING|POSTROUTING|INPUT|OUTPUT|FORWARD)$/.test(l)), 'never flushes a built-in chain');
  t.ok(text.indexOf('ip -4 rule del pref 103 lookup 100') < text.indexOf('ipset destroy ztunnel-pods-ips'), 'rules go first');
  // Rule removal checks that the rule at that pref is ours.
  const r101 = node.find((s) => argvOf(s).startsWith('ip -4 rule del pref 101'));
  t.same(r101?.kind === 'remove' && r101.check.includes, 'fwmark 0x100/0x100 lookup 101');
  const zt = argvs(buildZtunnelRemovePlan('legacy'));
  t.ok(zt.includes('iptables-legacy -w -t mangle -X ztunnel-PREROUTING'));
  t.ok(zt.includes('ip -4 rule del pref 20003 fwmark 0x4d3/0xfff lookup 100'));
  t.ok(zt.includes('ip -4 route flush table 100'));
});

t.test('backend choice', async (t) => {
  t.equal(countSavedRules('*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j X\n-A X -j RETURN\nCOMMIT\n'), 2);
  t.equal(buildBackendChoice(0, 0), 'nft', 'nft when both are empty');
  t.equal(buildBackendChoice(3, 3), 'nft');
  t.equal(buildBackendChoice(0, 1), 'legacy');
  t.equal(buildBackendChoice(-1, 0), 'legacy', 'nft binary missing');
});

/** A fake host: remembers hooks and ip rules that were added, answers checks from that. */
function fakeHost(): { run: (c: Command) => Promise<CommandResult>; log: string[] } {
  const hooks = new Set<string>();
  const rules = new Map<string, string>();
  const log: string[] = [];
  const ok = (stdout = ''): CommandResult => ({ code: 0, stdout, stderr: '' });
  const run = async (c: Command): Promise<CommandResult> => {
    const a = c.args;
    if (c.file.startsWith('iptables-') && !c.file.endsWith('-restore')) {
      const op = a[3];
      const key = `${a[2]} ${a[4]} ${a.at(-1)}`;
      if (op === '-C') return hooks.has(key) ? ok() : { code: 1, stdout: '', stderr: 'no' };
      log.push([c.file, ...a].join(' '));
      if (op === '-I') hooks.add(key);
      if (op === '-D') hooks.delete(key);
      return ok();
    }
    if (c.file === 'ip' && a[1] === 'rule') {
      const pref = a[4]!;
      if (a[2] === 'list') return ok(rules.get(pref) ?? '');
      log.push([c.file, ...a].join(' '));
      if (a[2] === 'add') rules.set(pref, `${pref}:\tfrom all ${a.slice(5).join(' ')}`);
      if (a[2] === 'del') rules.delete(pref);
      return ok();
    }
    log.push([c.file, ...a].join(' '));
    return ok();
  };
  return { run, log };
}

t.test('executePlan: ensure steps make a second apply add nothing', async (t) => {
  const host = fakeHost();
  const plan = buildZtunnelApplyPlan(ZT);
  const first = await executePlan(plan, host.run);
  t.ok(first.ok);
  const addsFirst = host.log.filter((l) => / -I | rule add /.test(l)).length;
  t.equal(addsFirst, 3, 'one hook + two ip rules');
  host.log.length = 0;
  t.ok((await executePlan(plan, host.run)).ok);
  t.same(host.log.filter((l) => / -I | rule add /.test(l)), [], 'nothing added twice');
  host.log.length = 0;
  t.ok((await executePlan(buildZtunnelRemovePlan('nft'), host.run)).ok);
  t.equal(host.log.filter((l) => / -D | rule del /.test(l)).length, 3, 'remove deletes the hook and both rules');
  host.log.length = 0;
  t.ok((await executePlan(buildZtunnelRemovePlan('nft'), host.run)).ok);
  t.same(host.log.filter((l) => / -D | rule del /.test(l)), [], 'removing again deletes nothing');
  const failing = await executePlan([{ kind: 'run', what: 'boom', cmd: { file: 'x', args: [] } }], async () => ({ code: 3, stdout: '', stderr: 'nope' }));
  t.same(failing.ok, false);
  t.match(formatPlan(plan), '# only if absent: iptables-nft -w -t mangle -C PREROUTING -j ztunnel-PREROUTING');
  t.match(formatPlan(plan), "iptables-nft-restore -w --noflush <<'EOF'\n*mangle");
});

t.test('node agent: captured pods, parsers, diff', async (t) => {
  const config = parseLocalConfig(
    `workloads:
- {uid: u1, name: productpage, namespace: default, workloadIps: ["10.244.1.7"], protocol: HBONE, node: w2, services: {}}
- {uid: u2, name: legacy, namespace: default, workloadIps: ["10.244.1.20"], protocol: TCP, node: w2, services: {}}
- {uid: u3, name: sleep, namespace: default, workloadIps: ["10.244.2.4"], protocol: HBONE, node: w1, services: {}}
- {uid: u4, name: reviews, namespace: default, workloadIps: ["10.244.1.4"], protocol: HBONE, node: w2, services: {}}
`,
    'test',
  );
  const pods = buildCapturedPods(config, 'w2');
  t.same([...pods.keys()].sort(), ['10.244.1.4', '10.244.1.7'], 'HBONE workloads of this node only');
  t.equal(pods.get('10.244.1.7')?.key, 'productpage/default');
  t.same([...buildIpsetMembers('create ztunnel-pods-ips hash:ip family inet\nadd ztunnel-pods-ips 10.244.1.4\nadd ztunnel-pods-ips 10.244.1.99\n')], ['10.244.1.4', '10.244.1.99']);
  const routes = buildPodRouteDestinations(
    '10.244.1.3 dev veth1 scope link \n10.244.1.4 via 192.168.126.2 dev istioin src 10.244.1.1 \n10.9.9.9 via 10.0.0.1 dev eth0 \n10.244.1.99 via 192.168.126.2 dev istioin src 10.244.1.1\n',
  );
  t.same([...routes].sort(), ['10.244.1.4', '10.244.1.99'], 'only pod routes through istioin');
  const diff = buildCaptureDiff(pods, new Set(['10.244.1.4', '10.244.1.99']), routes);
  t.same(diff.addToIpset.map((p) => p.ip), ['10.244.1.7']);
  t.same(diff.addRoutes.map((p) => p.ip), ['10.244.1.7']);
  t.same(diff.removeFromIpset, ['10.244.1.99']);
  t.same(diff.removeRoutes, ['10.244.1.99']);
  t.same(buildPodRouteSpec('10.244.1.7', '10.244.1.1'), ['10.244.1.7/32', 'via', '192.168.126.2', 'dev', 'istioin', 'src', '10.244.1.1']);
});

t.test('node agent: applies only differences, keeps state on a bad file, logs like istio-cni', async (t) => {
  const ipset = new Set<string>(['10.244.1.99']);
  const routes = new Set<string>();
  const cmds: string[] = [];
  const run = async (c: Command): Promise<CommandResult> => {
    const a = c.args;
    if (c.file === 'ipset' && a[0] === 'save') return { code: 0, stdout: [...ipset].map((ip) => `add ztunnel-pods-ips ${ip}`).join('\n'), stderr: '' };
    if (c.file === 'ip' && a.includes('show')) return { code: 0, stdout: [...routes].map((ip) => `${ip} via 192.168.126.2 dev istioin src 10.244.1.1`).join('\n'), stderr: '' };
    cmds.push([c.file, ...a].join(' '));
    if (c.file === 'ipset' && a[0] === 'add') ipset.add(a[2]!);
    if (c.file === 'ipset' && a[0] === 'del') ipset.delete(a[2]!);
    if (c.file === 'ip' && a.includes('replace')) routes.add(a[3]!.replace('/32', ''));
    if (c.file === 'ip' && a.includes('del')) routes.delete(a[3]!.replace('/32', ''));
    return { code: 0, stdout: '', stderr: '' };
  };
  let yaml = 'workloads:\n- {uid: u1, name: productpage, namespace: default, workloadIps: ["10.244.1.7"], protocol: HBONE, node: w2, services: {}}\n';
  const logs: string[] = [];
  const agent = new NodeAgent({
    nodeName: 'w2',
    configPath: '/nonexistent/never-read.yaml',
    podGatewayIp: '10.244.1.1',
    runner: run,
    log: (level, m) => logs.push(`${level} ${m}`),
    load: () => parseLocalConfig(yaml, 'test'),
  });
  const r = await agent.sync();
  t.same(r.added, ['10.244.1.7']);
  t.same(r.removed, ['10.244.1.99']);
  t.ok(logs.includes("info Adding pod 'productpage/default' (u1) to ipset"));
  t.ok(logs.includes('info Adding route for productpage/default: [table 100 10.244.1.7/32 via 192.168.126.2 dev istioin src 10.244.1.1]'));
  cmds.length = 0;
  t.same((await agent.sync()).added, [], 'second sync changes nothing');
  t.same(cmds, []);
  yaml = 'workloads: [';
  const bad = await agent.sync();
  t.equal(bad.ok, false);
  t.same([...ipset], ['10.244.1.7'], 'a bad file keeps the current pods');
  t.ok(logs.some((l) => l.startsWith('error cannot read')));
  await agent.stop();
});

t.test('cli: usage errors and dry-run without root', async (t) => {
  const writes: string[] = [];
  const orig = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string) => (writes.push(String(s)), true)) as typeof process.stderr.write;
  try {
    t.equal(await runRedirectCli(['node']), 2, 'missing --ztunnel-ip');
    t.equal(await runRedirectCli(['sideways']), 2);
    t.equal(await runRedirectCli(['node', '--ztunnel-ip', '1.2.3.4', '--backend', 'bogus']), 2);
  } finally {
    process.stderr.write = orig;
  }
  t.match(writes.join(''), '--ztunnel-ip is required');
});

t.test('demo topology: YAML, hosts, apps', async (t) => {
  const doc = buildLocalConfigDocument(DEFAULT_PODS, DEFAULT_SERVICES);
  const config = parseLocalConfig(JSON.stringify(doc), 'demo');
  const pp = config.workloads.find((w) => w.name === 'productpage');
  t.equal(pp?.protocol, 'HBONE');
  t.equal(pp?.serviceAccount, 'bookinfo-productpage');
  t.equal(pp?.node, 'ambient-worker2');
  t.equal(config.workloads.find((w) => w.name === 'outsider')?.protocol, 'TCP');
  const svc = config.services.find((s) => s.name === 'productpage');
  t.same(svc?.vips, [{ network: '', address: '10.96.0.10' }]);
  t.equal(svc?.ports.get(9080), 9080);
  t.ok(svc?.endpoints.has('Kubernetes//Pod/default/productpage'));
  t.ok(parse(JSON.stringify(doc)));
  t.match(buildHostsFile(DEFAULT_SERVICES), '10.96.0.10 productpage productpage.default productpage.default.svc.cluster.local');
  t.equal(buildProductPage('10.244.2.4:1234').split('\n')[0], '<!DOCTYPE html>');
  t.match(buildProductPage('10.244.2.4:1234'), '10.244.2.4:1234');
  t.equal(buildBulkDigest(0), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  t.not(buildBulkDigest(100000), buildBulkDigest(100001));
  t.same(findMissingPackages((tool) => tool !== 'ipset' && tool !== 'curl'), ['ipset', 'curl']);
});
