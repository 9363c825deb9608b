// The `explain` command without root: its I/O injected — each netns's commands answered from
// the recorded fixtures (test/fixtures/explain), each ztunnel admin answered by the data
// path's own buildRouteDecision / buildAuthorizeDecision over the recorded config. Shows that
// names resolve over /config_dump, that each question goes to the right ztunnel (the route to
// the source node's, the authorization to the destination node's, with the source identity)
// and each netns is read, that a cross-node path without a way to reach the other node is a
// clear error, and the exit codes, text and JSON of the command.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { PolicyStore } from '../../src/authorize/index.js';
import { parseLocalConfig } from '../../src/config/local-config.js';
import type { LocalConfig } from '../../src/config/types.js';
import {
  ExplainGatherError,
  gatherExplanation,
  parseExplainArgs,
  resolveDestination,
  resolveSource,
  runExplainCli,
  type ExplainIo,
  type NodeNetnsLocator,
  type SideLocation,
} from '../../src/explain/cli.js';
import { buildAuthorizeDecision, buildRouteDecision } from '../../src/explain/decision.js';
import type { Command } from '../../src/redirect/plan.js';
import { ProxyState } from '../../src/state/proxy-state.js';

const FIX = path.resolve(import.meta.dirname, '../fixtures/explain');
const W1 = 'ambient-worker';
const W2 = 'ambient-worker2';
const config = parseLocalConfig(fs.readFileSync(path.join(FIX, 'local-config.yaml'), 'utf8'), 'local-config.yaml');

/** netns → fixture directory. */
const HEALTHY: Record<string, string> = { n1: 'healthy/node-worker', z1: 'healthy/ztunnel-worker', n2: 'healthy/node-worker2', z2: 'healthy/ztunnel-worker2' };
const ZTUNNEL_NODE: Record<string, string> = { z1: W1, z2: W2 };

interface FakeIo extends ExplainIo {
  gets: { netns: string | undefined; url: string }[];
  read: Set<string | undefined>;
}

function fakeIo(dirs: Record<string, string> = HEALTHY, cfg: LocalConfig = config): FakeIo {
  const state = new ProxyState(cfg);
  const io: FakeIo = {
    gets: [],
    read: new Set(),
    runner: (netns) => async (cmd: Command) => {
      io.read.add(netns);
      const dir = netns === undefined ? undefined : dirs[netns];
      if (dir === undefined) return { code: 1, stdout: '', stderr: `no netns ${String(netns)}` };
      const file = (f: string) => ({ code: 0, stdout: fs.readFileSync(path.join(FIX, dir, f), 'utf8'), stderr: '' });
      const line = [cmd.file, ...cmd.args].join(' ');
      if (line === 'iptables-nft-save' || line === 'iptables-nft-save -c') return file('iptables.txt');
      if (line === 'ipset save') return file('ipset.txt');
      if (line === 'ip -4 -j rule show') return file('rule.json');
      if (line === 'ip -4 -j route show table all') return file('route.json');
      if (line === 'ip -d -j addr show') return file('addr.json');
      return { code: 1, stdout: '', stderr: `${cmd.file}: not found` };
    },
    async httpGet(netns, url) {
      io.gets.push({ netns, url });
      const node = netns === undefined ? undefined : ZTUNNEL_NODE[netns];
      if (node === undefined) throw new Error('Failed to connect to 127.0.0.1 port 15000: Connection refused');
      const u = new URL(url);
      const dst = (text: string) => {
        const [ip, port] = text.split(':');
        return { ip: ip!, port: Number(port) };
      };
      const p = u.searchParams;
      let body: unknown;
      if (u.pathname === '/config_dump') body = { workloads: cfg.workloads, services: cfg.services.map((s) => ({ ...s, ports: {}, endpoints: {} })) };
      else if (u.pathname === '/debug/route')
        body = buildRouteDecision(state, { src: p.get('src')!, dst: dst(p.get('dst')!), nodeName: node, network: '', illegalPorts: new Set([15001, 15006, 15008]), hbonePort: 15008, random: () => 0 });
      else if (u.pathname === '/debug/authorize')
        body = buildAuthorizeDecision(state, new PolicyStore(cfg.policies), { src: p.get('src')!, dst: dst(p.get('dst')!), identity: p.get('identity') ?? undefined, nodeName: node, network: '' });
      else return { status: 404, body: 'not found\n' };
      return { status: 200, body: JSON.stringify(body) };
    },
  };
  return io;
}

const locator: NodeNetnsLocator = {
  nodes: [W1, W2],
  locate: (node) => (node === W1 ? { nodeNetns: 'n1', ztunnelNetns: 'z1' } : node === W2 ? { nodeNetns: 'n2', ztunnelNetns: 'z2' } : undefined),
};
const here: SideLocation = { nodeNetns: undefined, ztunnelNetns: undefined, admin: 'http://127.0.0.1:15000' };

t.test('with a locator: names resolved, the route asked at the source node, authorization at the destination node', async (t) => {
  const io = fakeIo();
  const e = await gatherExplanation({ src: 'default/sleep', dst: 'productpage:9080', srcSide: here, dstSide: undefined, locator }, io);
  t.equal(e.path, 'hbone');
  t.ok(e.ok, e.hops.map((h) => `${h.step} ${h.why}`).join('\n'));
  t.same(e.query, { src: 'default/sleep', dst: 'productpage:9080', srcIp: '10.244.2.4', dstAddr: '10.96.0.10:9080', sourceNode: W1, destNode: W2 });
  const route = io.gets.find((g) => g.url.includes('/debug/route'))!;
  t.equal(route.netns, 'z1', 'route asked inside the source ztunnel netns');
  t.equal(route.url, 'http://127.0.0.1:15000/debug/route?src=10.244.2.4&dst=10.96.0.10%3A9080');
  const authz = io.gets.find((g) => g.url.includes('/debug/authorize'))!;
  t.equal(authz.netns, 'z2', 'authorization asked at the destination ztunnel');
  t.match(authz.url, /src=10\.244\.2\.4&dst=10\.244\.1\.7%3A9080&identity=spiffe%3A%2F%2Fcluster\.local%2Fns%2Fdefault%2Fsa%2Fsleep$/);
  t.same([...io.read].sort(), ['n1', 'n2', 'z1', 'z2'], 'all four netns read');
  t.equal(e.hops[0]!.where, `node ${W1}`);
  t.equal(e.hops.find((h) => h.step === 'dest-ztunnel-tproxy')!.where, `ztunnel netns ${W2}`);
});

t.test('same node and passthrough stay on the source side; a plaintext client is asked without identity', async (t) => {
  let io = fakeIo();
  const same = await gatherExplanation({ src: '10.244.2.4', dst: 'default/notsleep:9080', srcSide: here, dstSide: undefined, locator }, io);
  t.equal(same.path, 'same-node');
  t.same([...io.read].sort(), ['n1', 'z1']);
  t.equal(io.gets.find((g) => g.url.includes('/debug/authorize'))?.netns, 'z1');
  io = fakeIo();
  const pass = await gatherExplanation({ src: 'default/sleep', dst: '10.244.2.6:8080', srcSide: here, dstSide: undefined, locator }, io);
  t.equal(pass.path, 'passthrough');
  t.notOk(io.gets.some((g) => g.url.includes('/debug/authorize')), 'no authorization for passthrough');
  io = fakeIo();
  const plain = await gatherExplanation({ src: 'default/outsider', dst: 'default/productpage:9080', srcSide: here, dstSide: undefined, locator }, io);
  t.equal(plain.path, 'plaintext-inbound');
  t.ok(plain.ok);
  t.notMatch(io.gets.find((g) => g.url.includes('/debug/authorize'))!.url, /identity=/);
});

t.test('without a locator: flags say where each side is; a cross-node path without them is a clear error', async (t) => {
  const src: SideLocation = { nodeNetns: 'n1', ztunnelNetns: 'z1', admin: 'http://127.0.0.1:15000' };
  const dst: SideLocation = { nodeNetns: 'n2', ztunnelNetns: 'z2', admin: 'http://127.0.0.1:15000/' };
  const e = await gatherExplanation({ src: '10.244.2.4', dst: '10.96.0.10:9080', srcSide: src, dstSide: dst }, fakeIo());
  t.ok(e.ok);
  await t.rejects(gatherExplanation({ src: '10.244.2.4', dst: '10.96.0.10:9080', srcSide: src, dstSide: undefined }, fakeIo()), {
    constructor: ExplainGatherError,
    message: /default\/productpage is on node ambient-worker2, not ambient-worker: say where that node's state is read with --dst-node-netns/,
  });
  await t.rejects(gatherExplanation({ src: '10.244.2.4', dst: '10.96.0.10:9080', srcSide: here, dstSide: undefined }, fakeIo()), {
    message: /cannot reach the ztunnel admin at http:\/\/127\.0\.0\.1:15000\/config_dump: .*Connection refused; is ztunnel running there\?/,
  });
});

t.test('names: SRC and DST resolution over the config dump', async (t) => {
  const dump = { workloads: config.workloads, services: config.services };
  t.same(resolveSource('default/notsleep', dump).ip, '10.244.2.5');
  t.equal(resolveSource('10.9.9.9', dump).workload, undefined, 'an unknown IP is kept, without a workload');
  t.throws(() => resolveSource('default/nope', dump), /SRC default\/nope: no workload of that name in the mesh \(known: default\/sleep/);
  t.throws(() => resolveSource('sleep', dump), /neither an IP nor namespace\/name/);
  t.same(resolveDestination('productpage.default.svc.cluster.local:9080', dump), { ip: '10.96.0.10', port: 9080, what: 'service productpage.default.svc.cluster.local' });
  t.equal(resolveDestination('productpage.default:9080', dump).ip, '10.96.0.10', 'a unique prefix of the hostname');
  t.equal(resolveDestination('default/productpage:9080', dump).ip, '10.244.1.7', 'namespace/name: the workload first');
  t.equal(resolveDestination('default/reviews:9080', dump).ip, '10.96.0.13', 'namespace/name: else the service');
  t.same(resolveDestination('[fd00::1]:80', dump), { ip: 'fd00::1', port: 80, what: 'fd00::1' });
  t.throws(() => resolveDestination('productpage', dump), /is not HOST:PORT/);
  t.throws(() => resolveDestination('productpage:70000', dump), /is not HOST:PORT/);
  t.throws(() => resolveDestination('nosuch:80', dump), /no service with that hostname \(known: /);
  const twins = { services: [{ name: 'a', namespace: 'x', hostname: 'a.x.svc.cluster.local', vips: [] }, { name: 'a', namespace: 'y', hostname: 'a.y.svc.cluster.local', vips: [] }] };
  t.throws(() => resolveDestination('a:80', twins), /DST a is ambiguous: a\.x\.svc\.cluster\.local, a\.y\.svc\.cluster\.local/);
});

t.test('arguments', async (t) => {
  const p = parseExplainArgs(['default/sleep', 'productpage:9080', '--json', '--src-ztunnel-netns', 'zt', '--dst-admin', 'http://127.0.0.1:25000']);
  t.not(p, 'help');
  if (p === 'help') return;
  t.same(p.request.srcSide, { nodeNetns: undefined, ztunnelNetns: 'zt', admin: 'http://127.0.0.1:15000' });
  t.same(p.request.dstSide, { nodeNetns: undefined, ztunnelNetns: undefined, admin: 'http://127.0.0.1:25000' });
  t.equal(p.json, true);
  t.equal(parseExplainArgs(['--help']), 'help');
  t.throws(() => parseExplainArgs(['a']), /expected SRC and DST:PORT, got 1/);
  t.throws(() => parseExplainArgs(['a', 'b:1', '--src-admin', 'localhost:15000']), /--src-admin: "localhost:15000" is not an http\(s\) URL/);
  t.throws(() => parseExplainArgs(['a', 'b:1', '--src-node-netns', 'a b']), /not a netns name/);
  t.throws(() => parseExplainArgs(['a', 'b:1', '--topology', 'zt1', '--src-admin', 'http://x']), /do not combine it/);
  t.throws(() => parseExplainArgs(['a', 'b:1', '--bogus']), /Unknown option/);
});

t.test('the command: text, JSON and exit codes', async (t) => {
  const run = async (argv: string[], io: ExplainIo = fakeIo()) => {
    let out = '';
    let err = '';
    const code = await runExplainCli(argv, { io, topology: () => locator, out: (s) => void (out += s), err: (s) => void (err += s) });
    return { code, out, err };
  };
  const ok = await run(['default/sleep', 'productpage:9080', '--topology', 'ex1']);
  t.equal(ok.code, 0);
  t.match(ok.out, /^explain default\/sleep → productpage:9080 {2}\(10\.244\.2\.4 → 10\.96\.0\.10:9080, nodes ambient-worker → ambient-worker2\)\n10\.244\.2\.4 → 10\.96\.0\.10:9080: HBONE to another node\n/);
  t.match(ok.out, /every hop is in place\n$/);
  const json = await run(['default/sleep', 'productpage:9080', '--topology', 'ex1', '--json']);
  t.match(JSON.parse(json.out), { ok: true, path: 'hbone', query: { srcIp: '10.244.2.4' } });
  const broken = await run(['default/sleep', 'productpage:9080', '--topology', 'ex1'], fakeIo({ ...HEALTHY, n1: 'broken-ipset/node-worker' }));
  t.equal(broken.code, 3, 'a broken hop: exit 3');
  t.match(broken.out, /FAIL source-ipset[\s\S]*fix: ipset add ztunnel-pods-ips 10\.244\.2\.4\nbroken at source-ipset/);
  const gone = await run(['default/sleep', 'productpage:9080']);
  t.equal(gone.code, 1, 'state not gathered: exit 1');
  t.match(gone.err, /^explain: cannot reach the ztunnel admin/);
  const usage = await run(['default/sleep']);
  t.equal(usage.code, 2);
  t.match(usage.err, /usage: ztunnel-ts explain SRC DST:PORT/);
  const noTopo = await runExplainCli(['a', 'b:1', '--topology', 'x'], { io: fakeIo(), out: () => undefined, err: () => undefined });
  t.equal(noTopo, 2, '--topology without a locator');
});
