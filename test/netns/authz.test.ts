// Root-only, end to end: authorization policies from the local config enforced by the real
// ztunnel-ts processes on the kernel capture path (MeshHarness: two nodes, node agents, one
// ztunnel per node). Shows a Namespace-scope Deny on productpage's port naming the policy in
// the destination's access log, an Allow for the sleep principal letting sleep in and
// refusing notsleep, a plaintext (non-mesh) client refused before any byte reaches the app,
// and a live connection closed when the file is rewritten with a Deny.
// Must never: touch anything outside the `az<pid>` namespaces, or leave them behind (the
// harness is stopped in teardown, the Topology also cleans up on exit and signals).

import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { prepareMeshSuite } from '../helpers/mesh-suite.js';
import { collectLines, findLogRecords, waitUntil } from '../../src/demo/mesh-harness.js';

const WORKER2 = 'ambient-worker2';
const SLEEP_PRINCIPAL = 'cluster.local/ns/default/sa/sleep';
const PRODUCTPAGE_IP = '10.244.1.7';
const OUTSIDER_IP = '10.244.2.6';
const NOTSLEEP_IP = '10.244.2.5';
const SLEEP_IP = '10.244.2.4';
const ECHO_PORT = 9093;
const COUNTER_PORT = 9095;

type LogRecord = Record<string, unknown>;

const DENY_PORT_9080 = {
  name: 'deny-productpage-port',
  namespace: 'default',
  scope: 'Namespace',
  action: 'Deny',
  dryRun: false,
  rules: [[[{ destinationPorts: [9080] }]]],
};
const ALLOW_SLEEP_ONLY = {
  name: 'allow-sleep-only',
  namespace: 'default',
  scope: 'Namespace',
  action: 'Allow',
  dryRun: false,
  rules: [[[{ principals: [{ Exact: SLEEP_PRINCIPAL }] }]]],
};
const DENY_SLEEP = {
  name: 'deny-sleep',
  namespace: 'default',
  scope: 'Namespace',
  action: 'Deny',
  dryRun: false,
  rules: [[[{ principals: [{ Exact: SLEEP_PRINCIPAL }] }]]],
};

// Runs in productpage's netns: a TCP server that reports every connection and every byte it
// receives as a JSON line, so the test can tell whether a refused client's bytes arrived.
const COUNTER_APP = `
import net from 'node:net';
const port = Number(process.argv[1]);
net.createServer({ allowHalfOpen: true }, (s) => {
  const peer = s.remoteAddress.replace(/^::ffff:/, '');
  process.stdout.write(JSON.stringify({ conn: peer }) + '\\n');
  s.on('data', (c) => process.stdout.write(JSON.stringify({ peer, data: c.toString() }) + '\\n'));
  s.on('end', () => s.end('got it\\n'));
  s.on('error', () => s.destroy());
}).listen(port, '0.0.0.0', () => process.stdout.write(JSON.stringify({ listening: port }) + '\\n'));
`;

// Runs in a client pod: connects, writes TEXT, then either shuts its write side (`once`) or
// holds the connection open (`hold`); reports connect/data/end/close events as JSON lines.
// In `hold`, once the peer's FIN arrives it keeps writing: a proxy that really closed the
// connection (not just half-closed it) answers with a reset, so an error and `close` follow.
const PROBE = `
import net from 'node:net';
const [mode, host, port, text] = process.argv.slice(1);
const say = (o) => process.stdout.write(JSON.stringify({ ...o, at: Date.now() }) + '\\n');
const s = net.connect({ host, port: Number(port), allowHalfOpen: true });
s.on('connect', () => { say({ ev: 'connect' }); s.write(text); if (mode === 'once') s.end(); });
s.on('data', (c) => say({ ev: 'data', data: c.toString() }));
s.on('end', () => {
  say({ ev: 'end' });
  // Not unref'd: a socket that is neither reading nor writing does not keep node alive.
  if (mode === 'hold') setInterval(() => s.write('after-end'), 100);
});
s.on('error', (e) => say({ ev: 'error', error: e.code || e.message }));
s.on('close', () => { say({ ev: 'close' }); process.exit(0); });
setTimeout(() => process.exit(1), 20000).unref();
`;

const mesh = prepareMeshSuite(t, 'az');

if (mesh) {
  const topo = mesh.topo;
  t.teardown(() => mesh.stop());

  const logs = (): string[] => mesh.getZtunnel(WORKER2).out;
  const curl = (pod: string, url: string) => topo.execIn(topo.podNetns(pod), 'curl', ['-sS', '--max-time', '5', url]);
  const servedTo = (page: string): string | undefined => /Served by productpage to ([\d.]+):\d+/.exec(page)?.[1];
  const waitRecords = async (from: number, message: string, pred: (r: LogRecord) => boolean, ms = 5000): Promise<LogRecord[]> => {
    let found: LogRecord[] = [];
    await waitUntil(() => (found = findLogRecords(logs().slice(from), message).filter(pred)).length > 0, ms, 50);
    return found;
  };
  /** Rewrites the YAML and waits until ztunnel 2 has reloaded it. */
  const applyPolicies = async (policies: Record<string, unknown>[]): Promise<boolean> => {
    const from = logs().length;
    mesh.writeConfig(topo.pods, policies);
    return (await waitRecords(from, 'local config reloaded', (r) => r.policies === policies.length)).length > 0;
  };
  const probe = (pod: string, mode: 'once' | 'hold', port: number, text: string): { child: ChildProcess; events: () => Record<string, unknown>[] } => {
    const child = topo.spawnIn(topo.podNetns(pod), process.execPath, ['--input-type=module', '-e', PROBE, mode, PRODUCTPAGE_IP, String(port), text]);
    const lines = collectLines(child);
    return { child, events: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
  };
  let counter: string[] = [];

  t.before(async () => {
    try {
      await mesh.start();
      await mesh.startApp('productpage', 'echo', ECHO_PORT);
      const c = topo.spawnIn(topo.podNetns('productpage'), process.execPath, ['--input-type=module', '-e', COUNTER_APP, String(COUNTER_PORT)]);
      counter = collectLines(c);
      if (!(await waitUntil(() => counter.some((l) => l.includes('listening')), 10000))) throw new Error('counter app did not start');
    } catch (err) {
      for (const [node, z] of mesh.ztunnels) t.comment(`ztunnel ${node}: ${z.out.slice(-10).join('\n')}\n${z.stderr()}`);
      throw err;
    }
  });

  t.test('a Namespace-scope Deny on port 9080 refuses sleep → productpage and is named in the log', async (t) => {
    const ok = await curl('sleep', 'http://productpage:9080/');
    t.equal(servedTo(ok.stdout), SLEEP_IP, 'allowed before the policy');
    t.ok(await applyPolicies([DENY_PORT_9080]), 'ztunnel 2 reloaded the config with 1 policy');
    const from = logs().length;
    const r = await curl('sleep', 'http://productpage:9080/');
    t.not(r.code, 0, `curl fails (exit ${r.code}: ${r.stderr.trim()})`);
    t.notMatch(r.stdout, /Served by productpage/, 'no page');
    const denied = await waitRecords(from, 'connection complete', (l) => l.direction === 'inbound' && l['src.identity'] === `spiffe://${SLEEP_PRINCIPAL}`);
    t.equal(denied.length, 1, 'one inbound line on ambient-worker2');
    t.match(denied[0], { level: 'error', policy: 'default/deny-productpage-port', error: /explicitly denied by: default\/deny-productpage-port/ });
    t.match(denied[0], { 'dst.hbone_addr': `${PRODUCTPAGE_IP}:9080` });
  });

  t.test('an Allow for the sleep principal lets sleep in and refuses notsleep', async (t) => {
    t.ok(await applyPolicies([ALLOW_SLEEP_ONLY]), 'ztunnel 2 reloaded the config');
    const from = logs().length;
    const sleep = await curl('sleep', 'http://productpage:9080/');
    t.equal(servedTo(sleep.stdout), SLEEP_IP, `sleep gets the page (${sleep.stderr.trim()})`);
    const notsleep = await curl('notsleep', 'http://productpage:9080/');
    t.not(notsleep.code, 0, `notsleep's curl fails (exit ${notsleep.code}: ${notsleep.stderr.trim()})`);
    t.notMatch(notsleep.stdout, /Served by productpage/, 'no page for notsleep');
    const refused = await waitRecords(from, 'connection complete', (l) => String(l['src.addr']).startsWith(`${NOTSLEEP_IP}:`));
    t.match(refused[0], { level: 'error', 'src.identity': 'spiffe://cluster.local/ns/default/sa/notsleep', error: /allow policies exist, but none allowed/ });
  });

  t.test('a plaintext client is refused by an Allow that requires a principal; the app never sees its bytes', async (t) => {
    // Same policy set as the previous subtest (allow sleep only); the counter app shows that
    // allowed bytes do arrive, so the absence of the outsider's bytes means something.
    const allowed = probe('sleep', 'once', COUNTER_PORT, 'hello-from-sleep');
    await new Promise((r) => allowed.child.on('exit', r));
    t.match(allowed.events().find((e) => e.ev === 'data'), { data: 'got it\n' }, 'sleep gets the answer');
    t.ok(await waitUntil(() => counter.some((l) => l.includes('hello-from-sleep')), 3000), 'the app received the sleep bytes');

    const from = logs().length;
    const refused = probe('outsider', 'once', COUNTER_PORT, 'secret-from-outsider');
    await new Promise((r) => refused.child.on('exit', r));
    t.notOk(refused.events().some((e) => e.ev === 'data'), 'the outsider gets no answer');
    t.ok(refused.events().some((e) => e.ev === 'close'), 'its connection is closed');
    const line = await waitRecords(from, 'connection complete', (l) => String(l['src.addr']).startsWith(`${OUTSIDER_IP}:`));
    t.match(line[0], { level: 'error', direction: 'inbound', error: /allow policies exist, but none allowed/ }, 'ztunnel 2 logs the denial');
    t.notOk(line[0] && 'src.identity' in line[0], 'plaintext: no src.identity');
    await new Promise((r) => setTimeout(r, 300));
    t.notOk(counter.some((l) => l.includes(OUTSIDER_IP) || l.includes('secret-from-outsider')), 'the app saw neither a connection nor a byte from the outsider');
  });

  t.test('rewriting the file with a Deny closes an open sleep → productpage connection', async (t) => {
    t.ok(await applyPolicies([]), 'no policies');
    const conn = probe('sleep', 'hold', ECHO_PORT, 'ping');
    t.ok(await waitUntil(() => conn.events().some((e) => e.ev === 'data' && e.data === 'ping'), 5000), 'connection open, echo answered');
    await new Promise((r) => setTimeout(r, 500));
    // Closed is a FIN ('end') or a reset ('error' ECONNRESET), whichever the client sees first.
    const closing = (e: Record<string, unknown>): boolean => e.ev === 'end' || e.ev === 'error' || e.ev === 'close';
    t.notOk(conn.events().some(closing), 'still open');

    const from = logs().length;
    const changedAt = Date.now();
    t.ok(await applyPolicies([DENY_SLEEP]), 'ztunnel 2 reloaded the config with the Deny');
    t.ok(await waitUntil(() => conn.events().some(closing), 5000), 'the client sees its connection closed', { events: conn.events() });
    const endAt = conn.events().find(closing)?.at;
    t.ok(typeof endAt === 'number' && endAt - changedAt < 5000, `closed ${typeof endAt === 'number' ? endAt - changedAt : '?'} ms after the rewrite`);
    // A FIN alone could hide a proxy that half-closed the connection and kept its socket
    // (seen before the copy loop let the reset win over the EOF): the probe keeps writing
    // after a FIN, so only a connection really gone ends in 'close'.
    t.ok(await waitUntil(() => conn.events().some((e) => e.ev === 'close'), 3000), 'the connection is gone for good (reset, not a half-open socket)', {
      events: conn.events(),
    });
    t.notOk(conn.events().some((e) => e.ev === 'data' && e.data !== 'ping'), 'nothing echoed after the Deny');
    const line = await waitRecords(from, 'connection complete', (l) => String(l.error ?? '').includes('connection closed due to policy change'));
    t.equal(line.length, 1, 'ztunnel 2 logs "connection closed due to policy change"');
    t.match(line[0], { level: 'error', 'src.identity': `spiffe://${SLEEP_PRINCIPAL}`, 'dst.hbone_addr': `${PRODUCTPAGE_IP}:${ECHO_PORT}`, error: /explicitly denied by: default\/deny-sleep/ });

    const again = await curl('sleep', 'http://productpage:9080/');
    t.not(again.code, 0, 'new sleep connections are refused as well');
  });
}
