// `explain` on recorded kernel state: the node and ztunnel netns of the namespaced two-node
// mesh, recorded by test/fixtures/explain/record.mjs after real traffic (healthy/) and after
// real breaks (broken-*/), replayed through parseKernelSnapshot; ztunnel's decisions come from
// the recorded local config through buildRouteDecision / buildAuthorizeDecision (the data
// path's buildOutboundRoute and PolicyStore). Each path kind is explained end to end, and
// each break stops at its hop with the reason and the fix.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { PolicyStore } from '../../src/authorize/index.js';
import type { Authorization, LocalConfig } from '../../src/config/types.js';
import { parseLocalConfig } from '../../src/config/local-config.js';
import {
  buildAuthorizeDecision,
  buildExplanation,
  buildRouteDecision,
  explainPath,
  findRoute,
  formatExplanation,
  formatExplanationJson,
  parseKernelSnapshot,
  readKernelSnapshot,
  type ExplainInput,
  type KernelSnapshot,
} from '../../src/explain/index.js';
import { ProxyState } from '../../src/state/proxy-state.js';

const FIX = path.resolve(import.meta.dirname, '../fixtures/explain');
const W1 = 'ambient-worker';
const W2 = 'ambient-worker2';
const SLEEP = '10.244.2.4';
const NOTSLEEP = '10.244.2.5';
const OUTSIDER = '10.244.2.6';
const PRODUCTPAGE = '10.244.1.7';
const VIP = '10.96.0.10';
const SLEEP_ID = 'spiffe://cluster.local/ns/default/sa/sleep';

function snapshot(dir: string, label: string): KernelSnapshot {
  const read = (f: string): string => fs.readFileSync(path.join(FIX, dir, f), 'utf8');
  return parseKernelSnapshot(
    { ipsetSave: read('ipset.txt'), ipRuleJson: read('rule.json'), ipRouteJson: read('route.json'), iptablesSave: read('iptables.txt'), ipAddrJson: read('addr.json') },
    label,
  );
}

const healthy = {
  node1: snapshot('healthy/node-worker', `node ${W1}`),
  node2: snapshot('healthy/node-worker2', `node ${W2}`),
  zt1: snapshot('healthy/ztunnel-worker', `ztunnel netns ${W1}`),
  zt2: snapshot('healthy/ztunnel-worker2', `ztunnel netns ${W2}`),
};

const recordedConfig = parseLocalConfig(fs.readFileSync(path.join(FIX, 'local-config.yaml'), 'utf8'), 'local-config.yaml');

interface Case {
  src: string;
  dst: { ip: string; port: number };
  config?: LocalConfig;
  nodes?: Partial<typeof healthy>;
}

/** Everything explain would gather: the kernel snapshots per node and both ztunnels' decisions. */
function gather(c: Case): ExplainInput {
  const config = c.config ?? recordedConfig;
  const state = new ProxyState(config);
  const snaps = { ...healthy, ...c.nodes };
  const srcWorkload = state.findWorkloadByIp('', c.src);
  const srcNode = srcWorkload?.node ?? W1;
  const route = buildRouteDecision(state, {
    src: c.src,
    dst: c.dst,
    nodeName: srcNode,
    network: '',
    illegalPorts: new Set([15001, 15006, 15008]),
    hbonePort: 15008,
    random: () => 0,
  });
  const destNodeName = route.destination?.node;
  const target = route.target?.split(':');
  const captured = srcWorkload?.protocol === 'HBONE';
  const authorization =
    route.kind === 'hbone' && target !== undefined
      ? buildAuthorizeDecision(state, new PolicyStore(config.policies), {
          src: c.src,
          dst: { ip: target[0]!, port: Number(target[1]) },
          identity: captured ? route.source?.identity : undefined,
          nodeName: destNodeName,
          network: '',
        })
      : undefined;
  const byNode = (n: string | undefined): [KernelSnapshot | undefined, KernelSnapshot | undefined] =>
    n === W1 ? [snaps.node1, snaps.zt1] : n === W2 ? [snaps.node2, snaps.zt2] : [undefined, undefined];
  const [sourceNode, sourceZtunnel] = byNode(srcNode);
  const [destNode, destZtunnel] = byNode(destNodeName);
  return { src: c.src, dst: c.dst, route, authorization, sourceNode: sourceNode!, sourceZtunnel, destNode, destZtunnel };
}

const steps = (hops: readonly { step: string }[]): string[] => hops.map((h) => h.step);

function withPolicies(policies: Authorization[]): LocalConfig {
  return { ...recordedConfig, policies };
}

function policy(name: string, action: 'Allow' | 'Deny', principal: string): Authorization {
  const match = {
    namespaces: [], notNamespaces: [], principals: [{ kind: 'Exact' as const, value: principal }], notPrincipals: [],
    serviceAccounts: [], notServiceAccounts: [], sourceIps: [], notSourceIps: [], destinationIps: [], notDestinationIps: [],
    destinationPorts: [], notDestinationPorts: [],
  };
  return { name, namespace: 'default', scope: 'Namespace', action, dryRun: false, rules: [[[match]]] };
}

t.test('the recorded snapshots parse into the objects the path depends on', async (t) => {
  t.same([...healthy.node1.ipsets.get('ztunnel-pods-ips')!].sort(), [SLEEP, NOTSLEEP], 'node 1 ipset: the two HBONE pods, not the outsider');
  t.ok(healthy.node1.rules.some((r) => r.text === '100: from all fwmark 0x200/0x200 goto 32766'), 'goto rule printed like ip rule');
  t.ok(healthy.node1.rules.some((r) => r.text === '101: from all fwmark 0x100/0x100 lookup 101'));
  t.equal(findRoute(healthy.node1, '101', PRODUCTPAGE)?.text, 'default via 192.168.127.2 dev istioout table 101');
  t.equal(findRoute(healthy.node2, '100', PRODUCTPAGE)?.text, '10.244.1.7 via 192.168.126.2 dev istioin src 10.244.1.1 table 100', 'longest prefix wins');
  t.equal(findRoute(healthy.node1, 'main', PRODUCTPAGE)?.dst, '10.244.1.0/24');
  const tproxy = healthy.zt1.iptables.find((r) => r.spec.includes('--on-port 15001'));
  t.ok(tproxy !== undefined && tproxy.packets > 0, 'the 15001 TPROXY rule counted the recorded traffic');
  t.same(healthy.node1.errors, []);
});

t.test('healthy: VIP to a mesh pod on another node, every hop in order with its object', async (t) => {
  const input = gather({ src: SLEEP, dst: { ip: VIP, port: 9080 } });
  const e = buildExplanation(input);
  t.equal(e.path, 'hbone');
  t.ok(e.ok, formatExplanation(e));
  t.same(steps(e.hops), [
    'source-ipset', 'source-mark', 'source-ip-rule', 'source-route', 'source-ztunnel-tproxy', 'source-ztunnel-local',
    'route', 'dest-route', 'dest-ztunnel-tproxy', 'dest-ztunnel-local', 'authorize', 'deliver',
  ]);
  const hop = (s: string) => e.hops.find((h) => h.step === s)!;
  t.equal(hop('source-ipset').object, `add ztunnel-pods-ips ${SLEEP}`);
  t.equal(hop('source-mark').object, '-A ztunnel-PREROUTING -p tcp -m set --match-set ztunnel-pods-ips src -j MARK --set-xmark 0x100/0x100');
  t.ok(hop('source-mark').counter!.packets > 0, 'with its packet counter');
  t.equal(hop('source-ip-rule').object, '101: from all fwmark 0x100/0x100 lookup 101');
  t.match(hop('source-route').why, /leaves by istioout/);
  t.match(hop('source-ztunnel-tproxy').object, /-i pistioout -p tcp -j TPROXY --on-port 15001/);
  t.match(hop('route').object, /VIP 10\.96\.0\.10:9080 → service productpage\.default\.svc\.cluster\.local port 9080→9080 → endpoints \[default\/productpage 10\.244\.1\.7 weight 1 Healthy\]/);
  t.match(hop('route').object, /HBONE to 10\.244\.1\.7:15008, authority 10\.244\.1\.7:9080, expects spiffe:\/\/cluster\.local\/ns\/default\/sa\/bookinfo-productpage/);
  t.equal(hop('dest-route').where, `node ${W2}`);
  t.match(hop('dest-route').object, /10\.244\.1\.7 via 192\.168\.126\.2 dev istioin/);
  t.match(hop('dest-ztunnel-tproxy').object, /--dport 15008 -j TPROXY --on-port 15008/);
  t.ok(hop('dest-ztunnel-tproxy').counter!.packets > 0, 'node 2 counted the HBONE SYNs');
  t.match(hop('authorize').why, /allowed/);
  t.match(hop('deliver').why, /from 10\.244\.2\.4 .*the app sees the client's own IP 10\.244\.2\.4/);
  t.equal(hop('deliver').where, `node ${W2}`);
  t.match(formatExplanation(e), /every hop is in place/);
});

t.test('healthy: same node, handed over in process (no 15008 hop)', async (t) => {
  const e = buildExplanation(gather({ src: SLEEP, dst: { ip: NOTSLEEP, port: 9080 } }));
  t.equal(e.path, 'same-node');
  t.ok(e.ok, formatExplanation(e));
  t.same(steps(e.hops).slice(6), ['route', 'same-node', 'authorize', 'deliver']);
  t.match(e.hops.at(-1)!.object, /^10\.244\.2\.5 dev exrecp5/);
});

t.test('healthy: mesh → non-mesh goes out in plain TCP, no authorization', async (t) => {
  const e = buildExplanation(gather({ src: SLEEP, dst: { ip: OUTSIDER, port: 8080 } }));
  t.equal(e.path, 'passthrough');
  t.ok(e.ok, formatExplanation(e));
  t.same(steps(e.hops).slice(6), ['route', 'deliver']);
  t.match(e.hops[6]!.object, /default\/outsider \(TCP, not in the mesh\) → plain TCP to 10\.244\.2\.6:8080/);
  t.match(e.hops[7]!.why, /spoofed, fwmark 0x210\/0x210 skips capture/);
  const unknown = buildExplanation(gather({ src: SLEEP, dst: { ip: '172.18.0.3', port: 80 } }));
  t.ok(unknown.ok);
  t.match(unknown.hops[6]!.object, /unknown to the mesh → passthrough/);
});

t.test('healthy: non-mesh → mesh enters the destination ztunnel on 15006', async (t) => {
  const input = gather({ src: OUTSIDER, dst: { ip: PRODUCTPAGE, port: 9080 } });
  const e = buildExplanation(input);
  t.equal(e.path, 'plaintext-inbound');
  t.ok(e.ok, formatExplanation(e));
  t.same(steps(e.hops), ['source-ipset', 'route', 'dest-route', 'dest-ztunnel-tproxy', 'dest-ztunnel-local', 'authorize', 'deliver']);
  t.match(e.hops[0]!.why, /default\/outsider is a TCP workload: not captured/);
  const tproxy = e.hops[3]!;
  t.match(tproxy.object, /-i pistioin -p tcp -j TPROXY --on-port 15006/);
  t.ok(tproxy.counter!.packets > 0, 'the recorded outsider traffic went through 15006');
  t.match(e.hops[5]!.why, /plaintext client 10\.244\.2\.6/);
});

t.test('a denied pair stops at authorization, naming the policy and the fix', async (t) => {
  const deny = buildExplanation(gather({ src: SLEEP, dst: { ip: VIP, port: 9080 }, config: withPolicies([policy('deny-sleep', 'Deny', 'cluster.local/ns/default/sa/sleep')]) }));
  t.notOk(deny.ok);
  t.equal(deny.brokenAt, 'authorize');
  const last = deny.hops.at(-1)!;
  t.equal(last.step, 'authorize', 'nothing after the broken hop');
  t.equal(last.object, 'Deny policy default/deny-sleep');
  t.equal(last.fix, 'remove or narrow the Deny policy: kubectl -n default edit authorizationpolicy deny-sleep (local config: its entry under policies:)');

  const none = buildExplanation(gather({ src: SLEEP, dst: { ip: VIP, port: 9080 }, config: withPolicies([policy('allow-other', 'Allow', 'cluster.local/ns/default/sa/other')]) }));
  t.equal(none.brokenAt, 'authorize');
  t.match(none.hops.at(-1)!.object, /allow policies \[default\/allow-other \(Allow\)\]: none matches/);
  t.match(none.hops.at(-1)!.fix, /add an Allow rule matching spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep port 9080 to one of: default\/allow-other/);

  const allowed = buildExplanation(gather({ src: SLEEP, dst: { ip: VIP, port: 9080 }, config: withPolicies([policy('allow-sleep', 'Allow', 'cluster.local/ns/default/sa/sleep')]) }));
  t.ok(allowed.ok);
  t.match(allowed.hops.find((h) => h.step === 'authorize')!.why, /allowed by default\/allow-sleep/);
});

t.test('breaks recorded for real stop at the right hop with the reason and the fix', async (t) => {
  const vip = { ip: VIP, port: 9080 };
  const ipset = buildExplanation(gather({ src: SLEEP, dst: vip, nodes: { node1: snapshot('broken-ipset/node-worker', `node ${W1}`) } }));
  t.equal(ipset.brokenAt, 'source-ipset');
  t.equal(ipset.hops.length, 1);
  t.match(ipset.hops[0]!.why, /10\.244\.2\.4 \(default\/sleep, HBONE\) is not in ipset ztunnel-pods-ips/);
  t.equal(ipset.hops[0]!.fix, 'ipset add ztunnel-pods-ips 10.244.2.4');

  const t101 = buildExplanation(gather({ src: SLEEP, dst: vip, nodes: { node1: snapshot('broken-table101/node-worker', `node ${W1}`) } }));
  t.equal(t101.brokenAt, 'source-route');
  t.match(t101.hops.at(-1)!.why, /table 101 has no route for 10\.96\.0\.10/);
  t.equal(t101.hops.at(-1)!.fix, 'ip -4 route replace default via 192.168.127.2 dev istioout table 101');

  const wrong = buildExplanation(gather({ src: SLEEP, dst: vip, nodes: { node1: snapshot('wrong-link-table101/node-worker', `node ${W1}`) } }));
  t.equal(wrong.brokenAt, 'source-route');
  t.equal(wrong.hops.at(-1)!.object, 'default via 172.18.0.1 dev eth0 table 101');
  t.match(wrong.hops.at(-1)!.why, /out by eth0, not istioout/);

  const tproxy = buildExplanation(gather({ src: SLEEP, dst: vip, nodes: { zt1: snapshot('broken-tproxy/ztunnel-worker', `ztunnel netns ${W1}`) } }));
  t.equal(tproxy.brokenAt, 'source-ztunnel-tproxy');
  t.equal(tproxy.hops.at(-1)!.object, 'mangle ztunnel-PREROUTING: no TPROXY pistioout → 15001');
  t.match(tproxy.hops.at(-1)!.fix, /^ztunnel-ts redirect ztunnel/);

  const t100 = buildExplanation(gather({ src: SLEEP, dst: vip, nodes: { node2: snapshot('broken-table100/node-worker2', `node ${W2}`) } }));
  t.equal(t100.brokenAt, 'dest-route');
  t.equal(t100.hops.at(-1)!.where, `node ${W2}`);
  t.equal(t100.hops.at(-1)!.fix, 'ip -4 route replace 10.244.1.7/32 via 192.168.126.2 dev istioin src 10.244.1.1 table 100');
});

t.test('a missing ip rule (edited from the recording) stops at the rule hop', async (t) => {
  const node1 = { ...healthy.node1, rules: healthy.node1.rules.filter((r) => r.priority !== 101) };
  const e = buildExplanation(gather({ src: SLEEP, dst: { ip: VIP, port: 9080 }, nodes: { node1 } }));
  t.equal(e.brokenAt, 'source-ip-rule');
  t.equal(e.hops.at(-1)!.fix, 'ip -4 rule add pref 101 fwmark 0x100/0x100 lookup 101');
  const zt2 = { ...healthy.zt2, iptables: healthy.zt2.iptables.filter((r) => r.chain !== 'PREROUTING') };
  const unhooked = buildExplanation(gather({ src: SLEEP, dst: { ip: VIP, port: 9080 }, nodes: { zt2 } }));
  t.equal(unhooked.brokenAt, 'dest-ztunnel-tproxy');
  t.equal(unhooked.hops.at(-1)!.object, 'mangle PREROUTING: no -j ztunnel-PREROUTING');
  const node2 = {
    ...healthy.node2,
    routes: healthy.node2.routes.map((r) => (r.table === '100' && r.dst === PRODUCTPAGE ? { ...r, dev: 'eth0', gateway: '172.18.0.1', text: '10.244.1.7 via 172.18.0.1 dev eth0 table 100' } : r)),
  };
  const misrouted = buildExplanation(gather({ src: SLEEP, dst: { ip: VIP, port: 9080 }, nodes: { node2 } }));
  t.equal(misrouted.brokenAt, 'dest-route');
  t.match(misrouted.hops.at(-1)!.why, /table 100 sends 10\.244\.1\.7 by eth0, not istioin/);
});

t.test('no healthy endpoint stops at ztunnel\'s decision, listing each endpoint', async (t) => {
  const config: LocalConfig = {
    ...recordedConfig,
    workloads: recordedConfig.workloads.map((w) => (w.name === 'productpage' ? { ...w, status: 'Unhealthy' as const } : w)),
  };
  const e = buildExplanation(gather({ src: SLEEP, dst: { ip: VIP, port: 9080 }, config }));
  t.equal(e.path, 'refused');
  t.equal(e.brokenAt, 'route');
  const hop = e.hops.at(-1)!;
  t.match(hop.why, /^ZT_ERR_ROUTE_NO_HEALTHY_UPSTREAM: no healthy upstream/);
  t.match(hop.object, /default\/productpage 10\.244\.1\.7 weight 1 Healthy \(unusable: workload is Unhealthy\)/);
  t.match(hop.fix, /make an endpoint usable \(default\/productpage: workload is Unhealthy\)/);
});

t.test('text and JSON forms', async (t) => {
  const e = buildExplanation(gather({ src: SLEEP, dst: { ip: VIP, port: 9080 }, nodes: { node1: snapshot('broken-ipset/node-worker', `node ${W1}`) } }));
  const text = formatExplanation(e);
  t.match(text, /^10\.244\.2\.4 → 10\.96\.0\.10:9080: HBONE to another node\n/);
  t.match(text, / 1\. FAIL source-ipset @ node ambient-worker\n/);
  t.match(text, /fix: ipset add ztunnel-pods-ips 10\.244\.2\.4\n/);
  t.match(text, /broken at source-ipset/);
  const ok = formatExplanation(buildExplanation(gather({ src: SLEEP, dst: { ip: VIP, port: 9080 } })));
  t.match(ok, /\[\d+ pkts, \d+ bytes\]/, 'counters shown');
  const json = JSON.parse(formatExplanationJson(e)) as { ok: boolean; brokenAt: string; hops: unknown[] };
  t.same({ ok: json.ok, brokenAt: json.brokenAt, hops: json.hops.length }, { ok: false, brokenAt: 'source-ipset', hops: 1 });
  t.same(explainPath(gather({ src: SLEEP, dst: { ip: VIP, port: 9080 } })).length, 12, 'explainPath is the hop list itself');
});

t.test('readKernelSnapshot runs read-only commands through the runner and records failures', async (t) => {
  const seen: string[] = [];
  const dir = path.join(FIX, 'healthy/node-worker');
  const snap = await readKernelSnapshot(async (cmd) => {
    const line = [cmd.file, ...cmd.args].join(' ');
    seen.push(line);
    const file: Record<string, string> = {
      'ipset save': 'ipset.txt',
      'ip -4 -j rule show': 'rule.json',
      'ip -4 -j route show table all': 'route.json',
      'iptables-nft-save -c': 'iptables.txt',
      'iptables-nft-save': 'iptables.txt',
    };
    const f = file[line];
    if (f !== undefined) return { code: 0, stdout: fs.readFileSync(path.join(dir, f), 'utf8'), stderr: '' };
    return { code: 1, stdout: '', stderr: 'Cannot open netlink socket' };
  }, 'node test');
  t.ok(seen.every((l) => !/ (add|del|replace|-A|-D|-I|flush) /.test(` ${l} `)), 'nothing but reads');
  t.ok(snap.ipsets.get('ztunnel-pods-ips')?.has(SLEEP));
  t.ok(snap.iptables.length > 10);
  t.same(snap.links, [], 'the failed addr read gives no links');
  t.match(snap.errors.join('\n'), /`ip -d -j addr show` failed \(exit 1\): Cannot open netlink socket/);
  const garbled = parseKernelSnapshot({ ipsetSave: '', ipRuleJson: '{not json', ipRouteJson: '', iptablesSave: '', ipAddrJson: '{}' }, 'x');
  t.equal(garbled.errors.length, 2, 'unparsable JSON is reported, not thrown');
});
