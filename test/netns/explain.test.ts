// Root-only, end to end: `ztunnel-ts explain` against the live two-node mesh (MeshHarness:
// node netns, ztunnel netns, node agents, real ztunnel-ts processes answering /debug/*).
// For each path kind — VIP to a mesh pod on another node, same node, mesh → non-mesh
// passthrough, non-mesh → mesh via 15006, a denied pair — explain predicts the hops; then a
// real connection is made from the pod's netns and the test checks that exactly the
// predicted rules' packet counters moved (among every capture rule of both nodes and both
// ztunnel netns: the ipset-mark rules and the TPROXY rules) and that the access-log lines
// come from the predicted ztunnels with the predicted identities and policy. Then each break
// made for real (pod out of the ipset, table-101 route deleted, TPROXY rule deleted, endpoint
// unhealthy) stops explain at the right hop with the right reason, and the fix it prints,
// run as printed, repairs it. The CLI itself runs once (JSON, exit codes).
// Must never: touch anything outside the `ex<pid>` namespaces, or leave them behind (the
// harness is stopped in teardown; the Topology also cleans up on exit and signals).

import { spawnSync } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import { stringify } from 'yaml';
import { prepareMeshSuite } from '../helpers/mesh-suite.js';
import { MAIN_JS, findLogRecords, waitUntil } from '../../src/demo/mesh-harness.js';
import { buildTopologyLocator } from '../../src/demo/demo.js';
import { buildLocalConfigDocument } from '../../src/demo/topology.js';
import { gatherExplanation, type ExplainResult } from '../../src/explain/cli.js';
import { readKernelSnapshot } from '../../src/explain/kernel-snapshot.js';
import { buildIptablesBinary, detectIptablesBackend } from '../../src/redirect/iptables.js';
import { applyZtunnelRedirect } from '../../src/redirect/redirect.js';
import { createRunner } from '../../src/redirect/plan.js';

const W1 = 'ambient-worker';
const W2 = 'ambient-worker2';
const SLEEP = '10.244.2.4';
const NOTSLEEP = '10.244.2.5';
const OUTSIDER = '10.244.2.6';
const PRODUCTPAGE = '10.244.1.7';
const SLEEP_ID = 'spiffe://cluster.local/ns/default/sa/sleep';
const NOTSLEEP_ID = 'spiffe://cluster.local/ns/default/sa/notsleep';

type LogRecord = Record<string, unknown>;

const DENY_NOTSLEEP = {
  name: 'deny-notsleep',
  namespace: 'default',
  scope: 'Namespace',
  action: 'Deny',
  dryRun: false,
  rules: [[[{ principals: [{ Exact: 'cluster.local/ns/default/sa/notsleep' }] }]]],
};

const mesh = prepareMeshSuite(t, 'ex');

if (mesh) {
  const topo = mesh.topo;
  t.teardown(() => mesh.stop());
  const locator = buildTopologyLocator(topo.prefix);
  const explain = (src: string, dst: string): Promise<ExplainResult> =>
    gatherExplanation({ src, dst, srcSide: { nodeNetns: undefined, ztunnelNetns: undefined, admin: 'http://127.0.0.1:15000' }, dstSide: undefined, locator });
  const steps = (e: ExplainResult): string[] => e.hops.map((h) => h.step);

  /** Packet counters of every capture rule explain could name, keyed `where|rule` like its hops. */
  const readCounters = async (): Promise<Map<string, number>> => {
    const m = new Map<string, number>();
    for (const node of [W1, W2]) {
      for (const [label, ns] of [[`node ${node}`, topo.nodeNetns(node)], [`ztunnel netns ${node}`, topo.ztunnelNetns(node)]] as const) {
        const snap = await readKernelSnapshot(createRunner(ns), label);
        for (const r of snap.iptables) {
          if (r.table === 'mangle' && r.chain === 'ztunnel-PREROUTING' && (r.spec.includes('--match-set ztunnel-pods-ips src') || r.spec.includes('-j TPROXY'))) m.set(`${label}|${r.text}`, r.packets);
        }
      }
    }
    return m;
  };
  const predictedRules = (e: ExplainResult): string[] => e.hops.filter((h) => h.counter !== undefined).map((h) => `${h.where}|${h.object}`).sort();
  const moved = (before: Map<string, number>, after: Map<string, number>): string[] => [...after].filter(([k, n]) => n > (before.get(k) ?? 0)).map(([k]) => k).sort();

  const logLen = (node: string): number => mesh.getZtunnel(node).out.length;
  const records = (node: string, from: number, pred: (r: LogRecord) => boolean): LogRecord[] =>
    findLogRecords(mesh.getZtunnel(node).out.slice(from), 'connection complete').filter(pred);
  const curl = (pod: string, url: string) => topo.execIn(topo.podNetns(pod), 'curl', ['-sS', '--max-time', '5', url]);

  /** Explain first, then the real connection: exactly the predicted counters move, the predicted ztunnels log it. */
  const connectAndCompare = async (
    t: Test,
    e: ExplainResult,
    pod: string,
    url: string,
    srcIp: string,
    logs: { node: string; expect: LogRecord }[],
  ): Promise<{ stdout: string; code: number }> => {
    const before = await readCounters();
    const from = new Map([W1, W2].map((n) => [n, logLen(n)]));
    const r = await curl(pod, url);
    // Each expected access-log line names the source and what explain predicted.
    for (const { node, expect } of logs) {
      const mine = (): LogRecord[] => records(node, from.get(node)!, (l) => String(l['src.addr'] ?? '').startsWith(`${srcIp}:`));
      await waitUntil(() => mine().length > 0, 5000, 50);
      t.ok(mine().some((l) => Object.entries(expect).every(([k, v]) => l[k] === v)), `ztunnel ${node} logged the connection with ${JSON.stringify(expect)}`, { found: mine() });
    }
    for (const node of [W1, W2].filter((n) => !logs.some((l) => l.node === n))) {
      t.same(records(node, from.get(node)!, (l) => String(l['src.addr'] ?? '').startsWith(`${srcIp}:`)), [], `ztunnel ${node} (not on the predicted path) logged nothing for it`);
    }
    await new Promise((res) => setTimeout(res, 300));
    t.same(moved(before, await readCounters()), predictedRules(e), 'exactly the predicted rules\' packet counters moved');
    return r;
  };

  /** Rewrites the YAML and waits until both ztunnels reloaded it. */
  const reload = async (write: () => void): Promise<boolean> => {
    const from = new Map([W1, W2].map((n) => [n, logLen(n)]));
    write();
    return waitUntil(() => [W1, W2].every((n) => findLogRecords(mesh.getZtunnel(n).out.slice(from.get(n)!), 'local config reloaded').length > 0), 10_000, 50);
  };
  const runIn = (ns: string, command: string) => {
    const words = command.split('#')[0]!.trim().split(/\s+/);
    return topo.execIn(ns, words[0]!, words.slice(1));
  };

  t.before(async () => {
    await mesh.start();
    await mesh.startApp('outsider', 'http', 8080, 'outsider');
    await mesh.startApp('notsleep', 'http', 9080, 'notsleep');
  });

  t.test('VIP to a mesh pod on another node: HBONE through both ztunnels', async (t) => {
    const e = await explain('default/sleep', 'productpage:9080');
    t.equal(e.path, 'hbone');
    t.ok(e.ok, 'every hop in place');
    t.same(steps(e), ['source-ipset', 'source-mark', 'source-ip-rule', 'source-route', 'source-ztunnel-tproxy', 'source-ztunnel-local', 'route', 'dest-route', 'dest-ztunnel-tproxy', 'dest-ztunnel-local', 'authorize', 'deliver']);
    t.same(e.query, { src: 'default/sleep', dst: 'productpage:9080', srcIp: SLEEP, dstAddr: '10.96.0.10:9080', sourceNode: W1, destNode: W2 });
    t.match(e.hops.find((h) => h.step === 'dest-ztunnel-tproxy')?.object, /--on-port 15008/);
    const r = await connectAndCompare(t, e, 'sleep', 'http://productpage:9080/', SLEEP, [
      { node: W1, expect: { direction: 'outbound', 'src.identity': SLEEP_ID, 'dst.workload': 'productpage' } },
      { node: W2, expect: { direction: 'inbound', 'src.identity': SLEEP_ID, 'dst.workload': 'productpage' } },
    ]);
    t.match(r.stdout, /Served by productpage to 10\.244\.2\.4:/);
  });

  t.test('same node: handed over inside ztunnel 1, nothing reaches node 2', async (t) => {
    const e = await explain(SLEEP, 'default/notsleep:9080');
    t.equal(e.path, 'same-node');
    t.ok(e.ok);
    t.same(steps(e), ['source-ipset', 'source-mark', 'source-ip-rule', 'source-route', 'source-ztunnel-tproxy', 'source-ztunnel-local', 'route', 'same-node', 'authorize', 'deliver']);
    t.equal(e.hops.find((h) => h.step === 'authorize')?.where, `ztunnel ${W1}`);
    await connectAndCompare(t, e, 'sleep', `http://${NOTSLEEP}:9080/`, SLEEP, [{ node: W1, expect: { direction: 'inbound', 'src.identity': SLEEP_ID, 'dst.workload': 'notsleep' } }]);
  });

  t.test('mesh → non-mesh: passthrough in plain TCP from ztunnel 1', async (t) => {
    const e = await explain('default/sleep', `${OUTSIDER}:8080`);
    t.equal(e.path, 'passthrough');
    t.ok(e.ok);
    t.same(steps(e), ['source-ipset', 'source-mark', 'source-ip-rule', 'source-route', 'source-ztunnel-tproxy', 'source-ztunnel-local', 'route', 'deliver']);
    await connectAndCompare(t, e, 'sleep', `http://${OUTSIDER}:8080/`, SLEEP, [{ node: W1, expect: { direction: 'outbound', 'dst.addr': `${OUTSIDER}:8080` } }]);
  });

  t.test('non-mesh → mesh: not captured at the source, ztunnel 2 takes it on 15006', async (t) => {
    const e = await explain('default/outsider', `default/productpage:9080`);
    t.equal(e.path, 'plaintext-inbound');
    t.ok(e.ok);
    t.same(steps(e), ['source-ipset', 'route', 'dest-route', 'dest-ztunnel-tproxy', 'dest-ztunnel-local', 'authorize', 'deliver']);
    t.match(e.hops.find((h) => h.step === 'dest-ztunnel-tproxy')?.object, /-i pistioin -p tcp -j TPROXY --on-port 15006/);
    const r = await connectAndCompare(t, e, 'outsider', `http://${PRODUCTPAGE}:9080/`, OUTSIDER, [
      { node: W2, expect: { direction: 'inbound', 'dst.workload': 'productpage', 'src.identity': undefined } },
    ]);
    t.match(r.stdout, /Served by productpage to 10\.244\.2\.6:/);
  });

  t.test('a denied pair stops at authorization, and the real connection is denied by that policy', async (t) => {
    t.ok(await reload(() => mesh.writeConfig(topo.pods, [DENY_NOTSLEEP])), 'both ztunnels reloaded the Deny');
    const e = await explain('default/notsleep', 'productpage:9080');
    t.notOk(e.ok);
    t.equal(e.brokenAt, 'authorize');
    const hop = e.hops.at(-1)!;
    t.equal(hop.where, `ztunnel ${W2}`);
    t.equal(hop.object, 'Deny policy default/deny-notsleep');
    t.match(hop.why, /explicitly denied by: default\/deny-notsleep/);
    t.match(hop.fix, /kubectl -n default edit authorizationpolicy deny-notsleep/);
    const r = await connectAndCompare(t, e, 'notsleep', 'http://productpage:9080/', NOTSLEEP, [
      { node: W1, expect: { direction: 'outbound', 'src.identity': NOTSLEEP_ID } },
      { node: W2, expect: { direction: 'inbound', 'src.identity': NOTSLEEP_ID, policy: 'default/deny-notsleep' } },
    ]);
    t.notMatch(r.stdout, /Served by productpage/, 'the app never answered');
    t.ok(await reload(() => mesh.writeConfig(topo.pods, [])), 'policy removed');
  });

  t.test('breaks made for real stop explain at their hop; the printed fix repairs them', async (t) => {
    const n1 = topo.nodeNetns(W1);
    // Pod out of the ipset.
    t.equal((await topo.execIn(n1, 'ipset', ['del', 'ztunnel-pods-ips', SLEEP])).code, 0);
    let e = await explain('default/sleep', 'productpage:9080');
    t.equal(e.brokenAt, 'source-ipset');
    t.equal(e.hops.length, 1, 'nothing after the broken hop');
    t.match(e.hops[0]!.why, /not in ipset ztunnel-pods-ips/);
    t.equal(e.hops[0]!.fix, `ipset add ztunnel-pods-ips ${SLEEP}`);
    t.equal((await runIn(n1, e.hops[0]!.fix!)).code, 0, 'fix runs');

    // Table 101's route deleted.
    t.equal((await topo.execIn(n1, 'ip', ['-4', 'route', 'del', 'default', 'table', '101'])).code, 0);
    e = await explain('default/sleep', 'productpage:9080');
    t.equal(e.brokenAt, 'source-route');
    t.match(e.hops.at(-1)!.why, /table 101 has no route for 10\.96\.0\.10/);
    t.equal((await runIn(n1, e.hops.at(-1)!.fix!)).code, 0, 'fix runs');

    // The 15001 TPROXY rule deleted in ztunnel 1's netns.
    const z1 = topo.ztunnelNetns(W1);
    const healthy = await explain('default/sleep', 'productpage:9080');
    t.ok(healthy.ok, 'the two fixes repaired the path');
    const rule = healthy.hops.find((h) => h.step === 'source-ztunnel-tproxy')!.object;
    const backend = buildIptablesBinary(await detectIptablesBackend(createRunner(z1)));
    const del = await topo.execIn(z1, backend, ['-w', '-t', 'mangle', '-D', ...rule.replace(/^-A /, '').split(' ')]);
    t.equal(del.code, 0, `deleted ${rule}`, { stderr: del.stderr });
    e = await explain('default/sleep', 'productpage:9080');
    t.equal(e.brokenAt, 'source-ztunnel-tproxy');
    t.match(e.hops.at(-1)!.object, /no TPROXY pistioout → 15001/);
    t.match(e.hops.at(-1)!.fix, /ztunnel-ts redirect ztunnel/);
    t.ok((await applyZtunnelRedirect({}, { netns: z1 })).ok, 'fix (redirect ztunnel) runs');

    // productpage unhealthy: ztunnel 1 has no endpoint to route to.
    const doc = buildLocalConfigDocument(topo.pods, topo.services) as { workloads: Record<string, unknown>[] };
    for (const w of doc.workloads) if (w.name === 'productpage') w.status = 'Unhealthy';
    t.ok(
      await reload(() => {
        writeFileSync(`${topo.configPath}.tmp`, stringify(doc));
        renameSync(`${topo.configPath}.tmp`, topo.configPath);
      }),
      'both ztunnels reloaded productpage as Unhealthy',
    );
    e = await explain('default/sleep', 'productpage:9080');
    t.equal(e.brokenAt, 'route');
    t.equal(e.hops.at(-1)!.where, `ztunnel ${W1}`);
    t.match(e.hops.at(-1)!.why, /ZT_ERR_ROUTE_NO_HEALTHY_UPSTREAM/);
    t.match(e.hops.at(-1)!.object, /default\/productpage 10\.244\.1\.7 weight 1 Unhealthy \(unusable: endpoint is Unhealthy\)/);
    t.ok(await reload(() => mesh.writeConfig(topo.pods, [])), 'healthy again');
    t.ok((await explain('default/sleep', 'productpage:9080')).ok, 'every hop in place again');
  });

  t.test('the command: --json, exit 0 when every hop is in place, 3 at a break, 1 for an unknown name', async (t) => {
    const cli = (...args: string[]) => spawnSync(process.execPath, [MAIN_JS, 'explain', '--topology', topo.prefix, ...args], { encoding: 'utf8', timeout: 30_000 });
    const ok = cli('default/sleep', 'productpage.default.svc.cluster.local:9080', '--json');
    t.equal(ok.status, 0, ok.stderr);
    const json = JSON.parse(ok.stdout) as ExplainResult;
    t.equal(json.path, 'hbone');
    t.ok(json.hops.find((h) => h.step === 'source-mark')?.counter !== undefined, 'counters in the JSON');
    t.equal((await topo.execIn(topo.nodeNetns(W1), 'ipset', ['del', 'ztunnel-pods-ips', SLEEP])).code, 0);
    const broken = cli('default/sleep', 'productpage:9080');
    t.equal(broken.status, 3);
    t.match(broken.stdout, /FAIL source-ipset @ node ambient-worker[\s\S]*fix: ipset add ztunnel-pods-ips 10\.244\.2\.4[\s\S]*broken at source-ipset/);
    t.equal((await topo.execIn(topo.nodeNetns(W1), 'ipset', ['add', 'ztunnel-pods-ips', SLEEP])).code, 0);
    const unknown = cli('default/nosuchpod', 'productpage:9080');
    t.equal(unknown.status, 1);
    t.match(unknown.stderr, /SRC default\/nosuchpod: no workload of that name in the mesh \(known: /);
  });
}
