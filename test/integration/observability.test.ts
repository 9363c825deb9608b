// Metrics, access logs, admin, readiness, drain and live reload of two in-process
// ztunnels on loopback, after known traffic (11 bytes out, 22 back, as upstream's tests).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import {
  eventually,
  httpGet,
  logLines,
  readAll,
  readN,
  sampleValue,
  socksConnect,
  startEcho,
  startZtunnel,
  twoNodeYaml,
} from '../helpers/mesh.js';

const echo = await startEcho('127.0.2.2', 'double');
t.teardown(() => echo.server.close());
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zt-obs-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const yamlB = path.join(dir, 'b.yaml');
fs.writeFileSync(yamlB, twoNodeYaml({ echoPort: echo.port }));

const b = await startZtunnel({ NODE_NAME: 'node-b', LOCAL_XDS_PATH: yamlB }, undefined, { byteFlushIntervalMs: 100 });
const a = await startZtunnel(
  { NODE_NAME: 'node-a', LOCAL_XDS: twoNodeYaml({ echoPort: echo.port }), ZTUNNEL_HBONE_TARGET_PORT: String(b.ports.inbound) },
  undefined,
  { byteFlushIntervalMs: 100 },
);
t.teardown(async () => {
  await a.app.stop();
  await b.app.stop();
});

const traffic = {
  source_workload: 'client',
  source_workload_namespace: 'default',
  source_principal: 'spiffe://cluster.local/ns/default/sa/client',
  destination_workload: 'server',
  destination_workload_namespace: 'default',
  destination_principal: 'spiffe://cluster.local/ns/default/sa/server',
  destination_service: 'echo.default.svc.cluster.local',
  destination_service_name: 'echo',
  destination_service_namespace: 'default',
  request_protocol: 'tcp',
  connection_security_policy: 'mutual_tls',
};

t.test('exact counters and labels for both reporters after 11 bytes out, 22 back', async (t) => {
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80);
  s.write('hello world');
  t.equal((await readN(s, 22)).toString(), 'hello worldhello world');
  s.end();
  await readAll(s);
  await eventually(() => logLines(b, 'connection complete').length >= 1 && logLines(a, 'connection complete').length >= 1, 5000, 'access logs');
  for (const [z, reporter] of [
    [a, 'source'],
    [b, 'destination'],
  ] as const) {
    const m = (await httpGet(z.ports.stats, '/metrics')).body;
    const labels = { ...traffic, reporter };
    t.equal(sampleValue(m, 'istio_tcp_connections_opened_total', labels), 1, `${reporter}: opened`);
    t.equal(sampleValue(m, 'istio_tcp_connections_closed_total', { ...labels, response_flags: '-' }), 1, `${reporter}: closed`);
    t.equal(sampleValue(m, 'istio_tcp_received_bytes_total', labels), 11, `${reporter}: received = client → server`);
    t.equal(sampleValue(m, 'istio_tcp_sent_bytes_total', labels), 22, `${reporter}: sent = server → client`);
    t.equal(sampleValue(m, 'istio_tcp_connections_failed_total', labels), undefined, `${reporter}: nothing failed`);
    t.ok(sampleValue(m, 'istio_build', { component: 'ztunnel' }) === 1, 'istio_build');
    t.ok((sampleValue(m, 'process_open_fds', {}) ?? 0) > 0, 'process metrics');
    // /stats/prometheus is the same registry.
    t.match((await httpGet(z.ports.stats, '/stats/prometheus')).body, /istio_tcp_connections_opened_total/);
  }
  // Access-log orientation (upstream: https://github.com/istio/ztunnel/blob/master/src/proxy/metrics.rs).
  const out = logLines(a, 'connection complete').at(-1);
  const inb = logLines(b, 'connection complete').at(-1);
  t.match(out, {
    scope: 'access',
    level: 'info',
    direction: 'outbound',
    'src.addr': /^127\.0\.1\.2:\d+$/,
    'src.workload': 'client',
    'src.namespace': 'default',
    'src.identity': 'spiffe://cluster.local/ns/default/sa/client',
    'dst.addr': `127.0.2.2:${b.ports.inbound}`,
    'dst.hbone_addr': `127.0.2.2:${echo.port}`,
    'dst.service': 'echo.default.svc.cluster.local',
    'dst.workload': 'server',
    'dst.namespace': 'default',
    'dst.identity': 'spiffe://cluster.local/ns/default/sa/server',
    bytes_sent: 11,
    bytes_recv: 22,
    duration: /^\d+ms$/,
  });
  t.match(inb, {
    direction: 'inbound',
    'src.identity': 'spiffe://cluster.local/ns/default/sa/client',
    'src.workload': 'client',
    'dst.workload': 'server',
    'dst.hbone_addr': `127.0.2.2:${echo.port}`,
    'dst.identity': 'spiffe://cluster.local/ns/default/sa/server',
    bytes_sent: 22,
    bytes_recv: 11,
  });
});

t.test('byte counters advance while a connection is still open', async (t) => {
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80);
  const labels = { ...traffic, reporter: 'source' };
  const before = sampleValue((await httpGet(a.ports.stats, '/metrics')).body, 'istio_tcp_received_bytes_total', labels) ?? 0;
  s.write('x'.repeat(1000));
  await readN(s, 2000);
  const during = await eventually(async () => {
    const v = sampleValue((await httpGet(a.ports.stats, '/metrics')).body, 'istio_tcp_received_bytes_total', labels) ?? 0;
    return v >= before + 1000 ? v : 0;
  }, 3000, 'received bytes to advance');
  t.equal(during, before + 1000, 'counted before the connection closed');
  t.equal(s.destroyed, false, 'the connection is still open');
  s.end();
  await readAll(s);
});

t.test('a failed connection: error-level line with an error field, failed counter', async (t) => {
  await t.rejects(socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.2', 80));
  const line = logLines(a, 'connection complete').at(-1);
  t.match(line, { level: 'error', error: /no healthy upstream/ });
  const m = (await httpGet(a.ports.stats, '/metrics')).body;
  t.ok((sampleValue(m, 'istio_tcp_connections_failed_total', { reporter: 'source', destination_service: 'empty.default.svc.cluster.local' }) ?? 0) >= 1);
});

t.test('admin: config_dump, logging, localhost only', async (t) => {
  const dump = await httpGet(a.ports.admin, '/config_dump');
  t.equal(dump.status, 200);
  const parsed = JSON.parse(dump.body) as { workloads: { name: string }[]; certificates: { identity: string }[] };
  t.ok(parsed.workloads.some((w) => w.name === 'client'), 'workloads');
  t.ok(parsed.certificates.some((c) => c.identity === 'spiffe://cluster.local/ns/default/sa/client'), 'certificates by identity');
  t.notMatch(dump.body, /PRIVATE KEY/, 'no private key anywhere');
  t.match((await httpGet(a.ports.admin, '/logging', 'POST')).body, /current log level is info/);
  t.equal((await httpGet(a.ports.admin, '/logging?level=debug', 'POST')).status, 200);
  t.match((await httpGet(a.ports.admin, '/logging', 'POST')).body, /debug/);
  t.equal((await httpGet(a.ports.admin, '/logging?level=nonsense', 'POST')).status, 400);
  await httpGet(a.ports.admin, '/logging?level=info', 'POST');
  t.equal((await httpGet(a.ports.admin, '/quitquitquit')).status, 405, 'quitquitquit is POST only');
  t.equal(a.app.config.adminBindAddress, '127.0.0.1');
  t.match((await httpGet(a.ports.readiness, '/healthz/ready')).body, /^ready/);
});

t.test('live reload: a new workload becomes reachable; a broken file keeps the old config', async (t) => {
  const echo2 = await startEcho('127.0.2.9');
  t.teardown(() => echo2.server.close());
  // A must know the new workload too to route to it as HBONE; B must own it to serve it.
  const extraWorkload = `
- name: late
  namespace: default
  serviceAccount: late
  workloadIps: ["127.0.2.9"]
  protocol: HBONE
  node: node-b`;
  const withLate = twoNodeYaml({ echoPort: echo.port }).replace('workloads:', `workloads:${extraWorkload}`);
  const a2 = await startZtunnel({ NODE_NAME: 'node-a', LOCAL_XDS: withLate, ZTUNNEL_HBONE_TARGET_PORT: String(b.ports.inbound) });
  t.teardown(() => a2.app.stop());
  // Before B knows it: B has no workload at 127.0.2.9, so the connection fails.
  await t.rejects(socksConnect(a2.ports.socks5 as number, '127.0.1.2', '127.0.2.9', echo2.port));
  fs.writeFileSync(yamlB, withLate);
  await eventually(() => logLines(b, 'local config reloaded').length >= 1, 5000, 'reload');
  const s = await socksConnect(a2.ports.socks5 as number, '127.0.1.2', '127.0.2.9', echo2.port);
  s.end('late ok');
  t.equal((await readAll(s)).toString(), 'late ok');
  // A broken file is refused, logged, and the previous config stays in force.
  fs.writeFileSync(yamlB, 'workloads:\n- name: [unclosed\n');
  await eventually(() => logLines(b, 'local config reload refused; keeping the previous config').length >= 1, 5000, 'refusal');
  t.match(String(logLines(b, 'local config reload refused; keeping the previous config').at(-1)?.error), /b\.yaml/);
  const s2 = await socksConnect(a2.ports.socks5 as number, '127.0.1.2', '127.0.2.9', echo2.port);
  s2.end('still ok');
  t.equal((await readAll(s2)).toString(), 'still ok');
  fs.writeFileSync(yamlB, twoNodeYaml({ echoPort: echo.port }));
});

t.test('drain: open connections keep working, new ones are refused, readiness 503, done by the deadline', async (t) => {
  const echoD = await startEcho('127.0.5.2');
  t.teardown(() => echoD.server.close());
  const yaml = twoNodeYaml({ echoPort: echo.port }).replace('workloads:', `workloads:
- name: drainee
  namespace: default
  workloadIps: ["127.0.5.2"]
  protocol: HBONE
  node: node-d`);
  const d = await startZtunnel({ NODE_NAME: 'node-d', LOCAL_XDS: yaml, CONNECTION_TERMINATION_DEADLINE: '1500ms' });
  const c = await startZtunnel({ NODE_NAME: 'node-a', LOCAL_XDS: yaml, ZTUNNEL_HBONE_TARGET_PORT: String(d.ports.inbound) });
  t.teardown(() => c.app.stop());
  const open = await socksConnect(c.ports.socks5 as number, '127.0.1.2', '127.0.5.2', echoD.port);
  open.write('before');
  t.equal((await readN(open, 6)).toString(), 'before');
  const started = Date.now();
  const quit = await httpGet(d.ports.admin, '/quitquitquit', 'POST');
  t.equal(quit.status, 200);
  // Draining: the readiness server still answers, and answers 503 (not ready), so the kubelet
  // takes the pod out of rotation; a closed port would look like a crash instead.
  const ready = await httpGet(d.ports.readiness, '/healthz/ready');
  t.equal(ready.status, 503, `readiness is 503 while draining (${ready.body.trim()})`);
  t.match(ready.body, /^not ready/);
  open.write('during');
  t.equal((await readN(open, 6)).toString(), 'during', 'the open connection still works while draining');
  // A new HBONE connection to the draining ztunnel is refused.
  await t.rejects(socksConnect(c.ports.socks5 as number, '127.0.1.2', '127.0.5.2', echoD.port), 'new connections refused');
  await d.app.stopped;
  const took = Date.now() - started;
  t.ok(took < 1500 + 1000, `stopped by the deadline (${took} ms)`);
  t.ok(open.destroyed || (await new Promise((r) => open.once('close', () => r(true)))), 'the remaining connection was closed at the deadline');
});
