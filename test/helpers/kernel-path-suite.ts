// Root-only, end to end: the seed's node-level capture path with two real ztunnel-ts
// processes. Builds the namespaced two-node cluster through MeshHarness (topology, node and
// ztunnel redirection, node agents, apps, one ztunnel per node) and shows, each point its
// own subtest: sleep → productpage over HBONE (both access logs and both metrics
// endpoints), the client IP kept, a non-mesh client entering through 15006, mesh → non-mesh
// passthrough, same-node traffic, 256 MiB each way intact with half-close, capture following
// the config live, a ztunnel restart, and nothing left behind afterwards.
// Run twice: from the local config file (kernel-path.test.ts) and with everything — both
// ztunnels and both node agents — taken from a control plane over delta xDS
// (kernel-path-xds.test.ts).
// Must never: touch anything outside the `<stem><pid>` namespaces, or leave them behind (the
// harness is stopped in teardown, the Topology also cleans up on exit and signals).

import type { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { prepareMeshSuite } from './mesh-suite.js';
import { findLogRecords, waitUntil } from '../../src/demo/mesh-harness.js';
import { buildBulkDigest } from '../../src/demo/apps.js';
import { Topology } from '../../src/demo/topology.js';
import { NODE_TABLES, PODS_IPSET } from '../../src/redirect/constants.js';

const WORKER = 'ambient-worker';
const WORKER2 = 'ambient-worker2';
const SLEEP_ID = 'spiffe://cluster.local/ns/default/sa/sleep';
const PRODUCTPAGE_ID = 'spiffe://cluster.local/ns/default/sa/bookinfo-productpage';
const SLEEP_IP = '10.244.2.4';
const OUTSIDER_IP = '10.244.2.6';
const NOTSLEEP_IP = '10.244.2.5';
const PRODUCTPAGE_IP = '10.244.1.7';
const BULK_BYTES = 256 * 1024 * 1024;
const SINK_PORT = 9091;
const SOURCE_PORT = 9092;
const APP_PORT = 8080;

type LogRecord = Record<string, unknown>;

// A tiny TCP client run inside a pod netns (node -e): `send HOST PORT BYTES` writes the
// bulk bytes, shuts its write side and prints what comes back; `recv HOST PORT` shuts its
// write side at once and prints the sha256 and length of everything it then receives.
function buildClientScript(appsUrl: string): string {
  return `
import net from 'node:net';
import { createHash } from 'node:crypto';
const { buildBulkBlock } = await import(${JSON.stringify(appsUrl)});
const [mode, host, port, bytesText] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port), allowHalfOpen: true });
const h = createHash('sha256');
let got = 0;
const chunks = [];
s.on('data', (c) => { got += c.length; if (mode === 'recv') h.update(c); else chunks.push(c); });
s.on('end', () => {
  const out = mode === 'recv' ? { sha: h.digest('hex'), bytes: got } : { reply: Buffer.concat(chunks).toString() };
  process.stdout.write(JSON.stringify(out) + '\\n');
  s.end();
});
s.on('error', (e) => { process.stdout.write(JSON.stringify({ error: e.message, bytes: got }) + '\\n'); process.exit(1); });
s.on('connect', () => {
  if (mode === 'recv') { s.end(); return; }
  let left = Number(bytesText), i = 0;
  const pump = () => {
    while (left > 0) {
      const b = buildBulkBlock(i++);
      const c = b.subarray(0, Math.min(b.length, left));
      left -= c.length;
      if (!s.write(c)) { s.once('drain', pump); return; }
    }
    s.end();
  };
  pump();
});
`;
}

function findHostState(prefix: string): { links: string[]; rules: string; netns: string[] } {
  const links = (spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).stdout ?? '')
    .split('\n')
    .map((l) => /^\d+:\s+([^:@]+)/.exec(l)?.[1] ?? '')
    .filter((n) => n.startsWith(prefix));
  const rules = spawnSync('ip', ['rule', 'list'], { encoding: 'utf8' }).stdout ?? '';
  const netns = (spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '').split('\n').filter((l) => l.startsWith(`${prefix}-`));
  return { links, rules, netns };
}

/** Sum of the samples of `name` whose labels include every `labels` pair. */
function findMetricTotal(text: string, name: string, labels: Record<string, string>): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const close = line.lastIndexOf('}');
    const body = line.slice(name.length + 1, close);
    const have = new Map<string, string>();
    for (const m of body.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) have.set(m[1]!, m[2]!);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) total += Number(line.slice(close + 1).trim().split(' ')[0]);
  }
  return total;
}

/** The suite, on a harness fed by the file or (xds) by the control plane. */
export function runKernelPathSuite(t: Test, o: { stem: string; xds?: boolean; workerThreads?: number }): void {
  const mesh = prepareMeshSuite(t, o.stem, {
    ...(o.xds ? { xds: true } : {}),
    ...(o.workerThreads ? { ztunnelEnv: { ZTUNNEL_WORKER_THREADS: String(o.workerThreads) } } : {}),
  });

  if (mesh) {
    const prefix = mesh.topo.prefix;
    const topo = mesh.topo;
    const hostBefore = findHostState(prefix);
    const appsUrl = new URL('../../dist/src/demo/apps.js', import.meta.url).href;
    t.teardown(() => mesh.stop());

    const exec = (pod: string, file: string, args: string[]) => topo.execIn(topo.podNetns(pod), file, args);
    const curl = (pod: string, url: string, maxTime = 5) => exec(pod, 'curl', ['-sS', '--max-time', String(maxTime), url]);
    const logs = (node: string): string[] => mesh.getZtunnel(node).out;
    /** 'connection complete' records of `node` logged after line `from` that satisfy `pred`, waiting up to `ms`. */
    const waitAccess = async (node: string, from: number, pred: (r: LogRecord) => boolean, ms = 3000): Promise<LogRecord[]> => {
      let found: LogRecord[] = [];
      await waitUntil(() => (found = findLogRecords(logs(node).slice(from), 'connection complete').filter(pred)).length > 0, ms, 50);
      return found;
    };
    const scrape = async (node: string): Promise<string> =>
      (await topo.execIn(topo.ztunnelNetns(node), 'curl', ['-s', '--max-time', '3', 'http://127.0.0.1:15020/metrics'])).stdout;
    const runClient = async (pod: string, args: string[], timeoutMs: number): Promise<Record<string, unknown>> => {
      const child = topo.spawnIn(topo.podNetns(pod), process.execPath, ['--input-type=module', '-e', buildClientScript(appsUrl), ...args]);
      let out = '';
      let err = '';
      child.stdout?.on('data', (c: Buffer) => void (out += c.toString()));
      child.stderr?.on('data', (c: Buffer) => void (err += c.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      await new Promise((r) => child.on('close', r));
      clearTimeout(timer);
      try {
        return JSON.parse(out.trim().split('\n').pop() ?? '') as Record<string, unknown>;
      } catch {
        return { error: `no result (exit ${child.exitCode ?? child.signalCode}): ${err.trim().slice(0, 300)}` };
      }
    };
    const ipsetMembers = async (node: string): Promise<string> => (await topo.execIn(topo.nodeNetns(node), 'ipset', ['list', PODS_IPSET])).stdout;
    const inboundRoutes = async (node: string): Promise<string> =>
      (await topo.execIn(topo.nodeNetns(node), 'ip', ['route', 'show', 'table', String(NODE_TABLES.inbound)])).stdout;
    const hasCapture = async (node: string, ip: string): Promise<boolean> =>
      new RegExp(`^${ip.replace(/\./g, '\\.')}$`, 'm').test(await ipsetMembers(node)) && (await inboundRoutes(node)).includes(`${ip} via`);

    t.before(async () => {
      try {
        await mesh.start();
        await Promise.all([
          mesh.startApp('productpage', 'sink', SINK_PORT),
          mesh.startApp('productpage', 'source', SOURCE_PORT, String(BULK_BYTES)),
          mesh.startApp('outsider', 'http', APP_PORT, 'outsider'),
          mesh.startApp('notsleep', 'http', APP_PORT, 'notsleep'),
        ]);
      } catch (err) {
        for (const [node, z] of mesh.ztunnels) t.comment(`ztunnel ${node}: ${z.out.slice(-10).join('\n')}\n${z.stderr()}`);
        throw err;
      }
    });

    t.test('1. sleep → productpage:9080 leaves via ztunnel 1 (15001), crosses HBONE to ztunnel 2 (15008)', async (t) => {
      const [m1, m2] = [await scrape(WORKER), await scrape(WORKER2)];
      const src = { reporter: 'source', source_principal: SLEEP_ID, destination_principal: PRODUCTPAGE_ID, connection_security_policy: 'mutual_tls' };
      const dst = { ...src, reporter: 'destination' };
      const before1 = findMetricTotal(m1, 'istio_tcp_connections_opened_total', src);
      const before2 = findMetricTotal(m2, 'istio_tcp_connections_opened_total', dst);
      const [from1, from2] = [logs(WORKER).length, logs(WORKER2).length];

      const r = await curl('sleep', 'http://productpage:9080/');
      t.equal(r.code, 0, `curl exit 0 (${r.stderr.trim()})`);
      t.equal(r.stdout.split('\n')[0], '<!DOCTYPE html>', 'the page');
      t.match(r.stdout, /The Comedy of Errors/);

      const out = await waitAccess(WORKER, from1, (l) => l.direction === 'outbound' && l['dst.hbone_addr'] === `${PRODUCTPAGE_IP}:9080`);
      t.equal(out.length, 1, 'one outbound access-log line on ambient-worker');
      t.match(out[0], {
        'src.addr': new RegExp(`^${SLEEP_IP}:\\d+$`),
        'src.identity': SLEEP_ID,
        'dst.addr': `${PRODUCTPAGE_IP}:15008`,
        'dst.hbone_addr': `${PRODUCTPAGE_IP}:9080`,
        'dst.identity': PRODUCTPAGE_ID,
        'dst.workload': 'productpage',
        'dst.service': 'productpage.default.svc.cluster.local',
      });
      const inb = await waitAccess(WORKER2, from2, (l) => l.direction === 'inbound' && l['dst.hbone_addr'] === `${PRODUCTPAGE_IP}:9080`);
      t.equal(inb.length, 1, 'one inbound access-log line on ambient-worker2');
      t.match(inb[0], { 'src.addr': new RegExp(`^${SLEEP_IP}:`), 'src.identity': SLEEP_ID, 'dst.identity': PRODUCTPAGE_ID, 'dst.addr': `${PRODUCTPAGE_IP}:15008` });
      t.notOk(logs(WORKER).slice(from1).some((l) => l.includes('"inbound"') && l.includes('connection complete')), 'no inbound line on ambient-worker');
      t.notOk(logs(WORKER2).slice(from2).some((l) => l.includes('"outbound"') && l.includes('connection complete')), 'no outbound line on ambient-worker2');

      const after1 = findMetricTotal(await scrape(WORKER), 'istio_tcp_connections_opened_total', src);
      const after2 = findMetricTotal(await scrape(WORKER2), 'istio_tcp_connections_opened_total', dst);
      t.equal(after1 - before1, 1, 'worker: istio_tcp_connections_opened_total{reporter="source",mutual_tls,sleep→productpage} +1');
      t.equal(after2 - before2, 1, 'worker2: istio_tcp_connections_opened_total{reporter="destination",mutual_tls,sleep→productpage} +1');
    });

    t.test('2. productpage sees the sleep pod IP as its client', async (t) => {
      const r = await curl('sleep', 'http://productpage:9080/');
      const client = /Served by productpage to ([\d.]+):\d+/.exec(r.stdout)?.[1];
      t.equal(client, SLEEP_IP);
    });

    t.test('3. a non-mesh pod → productpage pod IP enters ztunnel 2 through 15006', async (t) => {
      const [from1, from2] = [logs(WORKER).length, logs(WORKER2).length];
      const r = await curl('outsider', `http://${PRODUCTPAGE_IP}:9080/`);
      t.equal(r.code, 0, `curl exit 0 (${r.stderr.trim()})`);
      t.equal(/Served by productpage to ([\d.]+):\d+/.exec(r.stdout)?.[1], OUTSIDER_IP, 'productpage sees the outsider IP');
      const inb = await waitAccess(WORKER2, from2, (l) => l.direction === 'inbound' && String(l['src.addr']).startsWith(`${OUTSIDER_IP}:`));
      t.equal(inb.length, 1, 'one inbound line on ambient-worker2');
      t.equal(inb[0]?.['dst.addr'], `${PRODUCTPAGE_IP}:9080`, 'dst.addr is the pod (plaintext, no 15008 hop)');
      t.notOk(inb[0] && 'src.identity' in inb[0], 'no src.identity');
      t.notOk(inb[0] && 'dst.hbone_addr' in inb[0], 'no dst.hbone_addr');
      const fromOutsider = (l: LogRecord): boolean => String(l['src.addr']).startsWith(`${OUTSIDER_IP}:`);
      t.equal(findLogRecords(logs(WORKER).slice(from1), 'connection complete').filter(fromOutsider).length, 0, 'ztunnel 1 did not see it (outsider is not captured)');
    });

    t.test('4. a mesh pod → a non-mesh pod is plain TCP passthrough', async (t) => {
      const from1 = logs(WORKER).length;
      const r = await curl('sleep', `http://${OUTSIDER_IP}:${APP_PORT}/`);
      t.equal(r.code, 0, `curl exit 0 (${r.stderr.trim()})`);
      t.match(JSON.parse(r.stdout || '{}'), { service: 'outsider' }, 'delivered to the outsider app');
      const out = await waitAccess(WORKER, from1, (l) => l.direction === 'outbound' && l['dst.addr'] === `${OUTSIDER_IP}:${APP_PORT}`);
      t.equal(out.length, 1, 'one outbound line on ambient-worker');
      t.notOk(out[0] && 'dst.hbone_addr' in out[0], 'no dst.hbone_addr (TCP, not HBONE)');
      t.match(out[0], { 'src.addr': new RegExp(`^${SLEEP_IP}:`), 'dst.workload': 'outsider' });
    });

    t.test('5. two pods on the same node reach each other through their ztunnel', async (t) => {
      const [from1, from2] = [logs(WORKER).length, logs(WORKER2).length];
      const r = await curl('sleep', `http://${NOTSLEEP_IP}:${APP_PORT}/`);
      t.equal(r.code, 0, `curl exit 0 (${r.stderr.trim()})`);
      const body = JSON.parse(r.stdout || '{}') as { service?: string; client?: string };
      t.equal(body.service, 'notsleep', 'delivered to notsleep');
      t.equal(body.client?.split(':')[0], SLEEP_IP, 'notsleep sees the sleep IP');
      const out = await waitAccess(WORKER, from1, (l) => l.direction === 'outbound' && l['dst.workload'] === 'notsleep');
      t.equal(out.length, 1, 'outbound line on ambient-worker');
      t.match(out[0], { 'src.identity': SLEEP_ID, 'dst.identity': 'spiffe://cluster.local/ns/default/sa/notsleep', 'dst.hbone_addr': `${NOTSLEEP_IP}:${APP_PORT}` });
      const inb = await waitAccess(WORKER, from1, (l) => l.direction === 'inbound' && l['dst.workload'] === 'notsleep');
      t.equal(inb.length, 1, 'inbound line on ambient-worker too (same ztunnel)');
      t.match(inb[0], { 'src.identity': SLEEP_ID });
      const toNotsleep = (l: LogRecord): boolean => l['dst.workload'] === 'notsleep';
      t.equal(findLogRecords(logs(WORKER2).slice(from2), 'connection complete').filter(toNotsleep).length, 0, 'ztunnel 2 not involved');
    });

    t.test('6. 256 MiB each way intact, half-close honoured', async (t) => {
      const digest = buildBulkDigest(BULK_BYTES);
      const up = await runClient('sleep', ['send', PRODUCTPAGE_IP, String(SINK_PORT), String(BULK_BYTES)], 60000);
      t.equal(up.reply, `${digest} ${BULK_BYTES}\n`, 'sleep → productpage sink: digest and length, answered after the client shut down its write side');
      const down = await runClient('sleep', ['recv', PRODUCTPAGE_IP, String(SOURCE_PORT)], 60000);
      t.same(down, { sha: digest, bytes: BULK_BYTES }, 'productpage source → sleep, received in full after the client shut down its write side');
    });

    t.test('7. capture follows the config live, ztunnels keep running', async (t) => {
      const pids = [mesh.getZtunnel(WORKER).child.pid, mesh.getZtunnel(WORKER2).child.pid];
      t.ok(await hasCapture(WORKER2, PRODUCTPAGE_IP), 'productpage captured at first');
      t.notOk(await hasCapture(WORKER, OUTSIDER_IP), 'outsider not captured at first');

      // productpage leaves the config: its ipset entry and route go, its traffic bypasses ztunnel 2.
      mesh.writeConfig(topo.pods.filter((p) => p.name !== 'productpage'));
      t.ok(await waitUntil(async () => !(await hasCapture(WORKER2, PRODUCTPAGE_IP)), 5000), 'productpage ipset entry and table-100 route removed');
      t.notMatch(await ipsetMembers(WORKER2), PRODUCTPAGE_IP, 'not in the ipset');
      t.notMatch(await inboundRoutes(WORKER2), PRODUCTPAGE_IP, 'no route in table 100');
      let from2 = logs(WORKER2).length;
      let r = await curl('outsider', `http://${PRODUCTPAGE_IP}:9080/`);
      t.equal(/Served by productpage to ([\d.]+):/.exec(r.stdout)?.[1], OUTSIDER_IP, `still delivered, directly (${r.stderr.trim()})`);
      await new Promise((res) => setTimeout(res, 300));
      const fromOutsider = (l: LogRecord): boolean => String(l['src.addr']).startsWith(`${OUTSIDER_IP}:`);
      t.equal(findLogRecords(logs(WORKER2).slice(from2), 'connection complete').filter(fromOutsider).length, 0, 'no access-log line on ztunnel 2');

      // productpage comes back and outsider joins the mesh: both gain capture.
      mesh.writeConfig(topo.pods.map((p) => (p.name === 'outsider' ? { ...p, inMesh: true } : p)));
      t.ok(await waitUntil(async () => (await hasCapture(WORKER2, PRODUCTPAGE_IP)) && (await hasCapture(WORKER, OUTSIDER_IP)), 5000), 'productpage and outsider captured');
      const from1 = logs(WORKER).length;
      from2 = logs(WORKER2).length;
      r = await curl('outsider', `http://${PRODUCTPAGE_IP}:9080/`);
      t.equal(/Served by productpage to ([\d.]+):/.exec(r.stdout)?.[1], OUTSIDER_IP, `delivered (${r.stderr.trim()})`);
      const out = await waitAccess(WORKER, from1, (l) => l.direction === 'outbound' && String(l['src.addr']).startsWith(`${OUTSIDER_IP}:`));
      t.match(out[0], { 'src.identity': 'spiffe://cluster.local/ns/default/sa/outsider', 'dst.hbone_addr': `${PRODUCTPAGE_IP}:9080` }, 'outsider now leaves through ztunnel 1 as HBONE');
      const inb = await waitAccess(WORKER2, from2, (l) => l.direction === 'inbound' && String(l['src.addr']).startsWith(`${OUTSIDER_IP}:`));
      t.match(inb[0], { 'src.identity': 'spiffe://cluster.local/ns/default/sa/outsider' }, 'and enters ztunnel 2 through 15008');

      mesh.writeConfig(topo.pods);
      t.ok(await waitUntil(async () => !(await hasCapture(WORKER, OUTSIDER_IP)), 5000), 'outsider out of the mesh again');
      t.same([mesh.getZtunnel(WORKER).child.pid, mesh.getZtunnel(WORKER2).child.pid], pids, 'same ztunnel PIDs');
      t.ok(mesh.getZtunnel(WORKER).child.exitCode === null && mesh.getZtunnel(WORKER2).child.exitCode === null, 'both still running');
    });

    if (o.workerThreads !== undefined && o.workerThreads > 1) {
      const workers = o.workerThreads;
      t.test(`7b. ${workers} worker threads: the kernel spreads the captured connections over all of them`, async (t) => {
        type Dump = { workers: { threadId: number; accepted: { outbound: number } }[] };
        const dump = async (): Promise<Dump> =>
          JSON.parse((await topo.execIn(topo.ztunnelNetns(WORKER), 'curl', ['-s', '--max-time', '3', 'http://127.0.0.1:15000/config_dump'])).stdout) as Dump;
        const before = await dump();
        t.equal(before.workers.length, workers, `ztunnel 1 runs ${workers} data-path threads`);
        t.ok(before.workers.every((w) => w.threadId > 0), 'worker threads, not the main thread');
        for (let i = 0; i < 24; i++) t.ok((await curl('sleep', 'http://productpage:9080/')).stdout.length > 0, `request ${i + 1} answered`);
        const after = await dump();
        const got = after.workers.map((w, i) => w.accepted.outbound - (before.workers[i]?.accepted.outbound ?? 0));
        t.equal(got.reduce((a, b) => a + b, 0), 24, `24 TPROXY'd connections on 15001 in all (${got.join(' + ')})`);
        t.ok(got.every((n) => n > 0), `every worker accepted some (${got.join(', ')})`);
      });
    }

    t.test('8. ztunnel 2 restarted; afterwards nothing is left', async (t) => {
      const oldPid = mesh.getZtunnel(WORKER2).child.pid;
      const z = await mesh.restartZtunnel(WORKER2);
      t.not(z.child.pid, oldPid, 'a new process');
      const from2 = z.out.length;
      const r = await curl('sleep', 'http://productpage:9080/');
      t.equal(r.code, 0, `curl exit 0 (${r.stderr.trim()})`);
      t.equal(/Served by productpage to ([\d.]+):/.exec(r.stdout)?.[1], SLEEP_IP, 'the first new connection after readiness succeeds');
      const inb = await waitAccess(WORKER2, from2, (l) => l.direction === 'inbound' && l['src.identity'] === SLEEP_ID);
      t.equal(inb.length, 1, 'served by the new ztunnel 2');

      const children = [...mesh.ztunnels.values()].map((h) => h.child);
      await mesh.stop();
      t.ok(children.every((c) => c.exitCode !== null || c.signalCode !== null), 'ztunnel processes gone');
      t.same(Topology.listNetns(prefix), [], 'ip netns list: no namespace with the prefix');
      const after = findHostState(prefix);
      t.same(after.netns, [], 'ip netns list is clean');
      t.same(after.links, [], `ip link: no link named ${prefix}*`);
      t.same(after.links, hostBefore.links, 'same links as before');
      t.equal(after.rules, hostBefore.rules, 'ip rule unchanged in the caller netns');
    });
  }
}
