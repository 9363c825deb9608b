// The record layer: Istio TCP metrics (exact names, labels, orientation), byte counters
// advancing while a connection is open, and the access log in both formats.
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import type { Workload } from '../../src/config/types.js';
import { ZtError } from '../../src/errors.js';
import type { ConnectionContext } from '../../src/record/types.js';
import { Telemetry, type TelemetryOptions } from '../../src/record/telemetry.js';
import { buildService, buildWorkload } from '../helpers/fixtures.js';

// ---------------------------------------------------------------- fixtures

/** The client pod; the server pods below override what differs. */
function workload(over: Partial<Workload>): Workload {
  return buildWorkload({
    uid: 'cluster1//Pod/default/client-7d9f-abcde',
    name: 'client-7d9f-abcde',
    serviceAccount: 'client',
    workloadIps: ['10.0.0.1'],
    clusterId: 'Kubernetes',
    workloadName: 'client',
    canonicalName: 'client-app',
    canonicalRevision: 'v1',
    ...over,
  });
}

const client = workload({});
const server = workload({
  uid: 'cluster1//Pod/ns-b/server-55c6-xyz12',
  name: 'server-55c6-xyz12',
  namespace: 'ns-b',
  serviceAccount: 'server',
  workloadIps: ['10.0.0.2'],
  node: 'node-b',
  workloadName: 'server',
  canonicalName: 'server-app',
  canonicalRevision: 'v2',
  services: new Map([['ns-b/server.ns-b.svc.cluster.local', new Map([[80, 8080]])]]),
});
const tcpServer = workload({
  uid: 'cluster1//Pod/ns-b/legacy-0',
  name: 'legacy-0',
  namespace: 'ns-b',
  serviceAccount: 'legacy',
  workloadIps: ['10.0.0.3'],
  protocol: 'TCP',
  workloadName: 'legacy',
  canonicalName: 'legacy',
  canonicalRevision: 'latest',
});

const service = buildService({
  namespace: 'ns-b',
  hostname: 'server.ns-b.svc.cluster.local',
  vips: [{ network: '', address: '10.96.0.10' }],
  ports: new Map([[80, 8080]]),
  endpoints: new Map([[server.uid, { workloadUid: server.uid, port: new Map([[80, 8080]]), status: 'Healthy' }]]),
  ipFamilies: 'IPv4',
  canonical: true,
});

const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/client';
const SERVER_ID = 'spiffe://cluster.local/ns/ns-b/sa/server';

function outboundHbone(): ConnectionContext {
  return {
    direction: 'outbound',
    srcAddr: '10.0.0.1:40000',
    srcWorkload: client,
    srcIdentity: CLIENT_ID,
    dstAddr: '10.0.0.2:15008',
    hboneAddr: '10.0.0.2:8080',
    dstService: service,
    dstWorkload: server,
    dstIdentity: SERVER_ID,
    securityPolicy: 'mutual_tls',
  };
}

function inboundHbone(): ConnectionContext {
  return { ...outboundHbone(), direction: 'inbound', srcAddr: '10.0.0.1:51234' };
}

function outboundTcp(): ConnectionContext {
  return {
    direction: 'outbound',
    srcAddr: '10.0.0.1:40001',
    srcWorkload: client,
    srcIdentity: undefined,
    dstAddr: '10.0.0.3:9000',
    hboneAddr: undefined,
    dstService: undefined,
    dstWorkload: tcpServer,
    dstIdentity: 'spiffe://cluster.local/ns/ns-b/sa/legacy',
    securityPolicy: 'unknown',
  };
}

// ---------------------------------------------------------------- helpers

class Lines extends Writable {
  readonly chunks: string[] = [];
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(chunk.toString());
    cb();
  }
  async lines(): Promise<string[]> {
    await sleep(5);
    return this.chunks.join('').split('\n').filter((l) => l !== '');
  }
  async json(): Promise<Record<string, unknown>[]> {
    return (await this.lines()).map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

function make(t: { teardown(fn: () => unknown): void }, over: Partial<TelemetryOptions> = {}): { tel: Telemetry; out: Lines } {
  const out = new Lines();
  const tel = new Telemetry({
    logFormat: 'json',
    logLevel: 'info',
    accessLogOnlyFailed: false,
    clusterId: 'Kubernetes',
    version: '1.2.3-test',
    destination: out,
    ...over,
  });
  t.teardown(() => tel.close());
  return { tel, out };
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text samples (values here never contain `",`). */
function parseSamples(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) throw new Error(`unparsable sample: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!;
    }
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

async function scrape(tel: Telemetry): Promise<Sample[]> {
  return parseSamples(await tel.registry.metrics());
}

function find(samples: Sample[], name: string, where: Record<string, string>): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v));
}

function valueOf(samples: Sample[], name: string, where: Record<string, string>): number | undefined {
  const found = find(samples, name, where);
  if (found.length > 1) throw new Error(`${found.length} series of ${name} match ${JSON.stringify(where)}`);
  return found[0]?.value;
}

// ---------------------------------------------------------------- metrics

t.test('11 bytes up, 22 down: exact counters and labels for both reporters', async (t) => {
  const { tel } = make(t);
  const out = tel.open(outboundHbone());
  const inb = tel.open(inboundHbone());
  t.equal(tel.openConnections(), 2);
  for (const r of [out, inb]) {
    r.bytes.clientToServer += 11;
    r.bytes.serverToClient += 22;
    r.complete();
  }
  t.equal(tel.openConnections(), 0);
  const s = await scrape(tel);

  const expectedSource = {
    reporter: 'source',
    source_workload: 'client',
    source_canonical_service: 'client-app',
    source_canonical_revision: 'v1',
    source_workload_namespace: 'default',
    source_principal: CLIENT_ID,
    source_app: 'client-app',
    source_version: 'v1',
    source_cluster: 'Kubernetes',
    destination_service: 'server.ns-b.svc.cluster.local',
    destination_service_namespace: 'ns-b',
    destination_service_name: 'server',
    destination_workload: 'server',
    destination_canonical_service: 'server-app',
    destination_canonical_revision: 'v2',
    destination_workload_namespace: 'ns-b',
    destination_principal: SERVER_ID,
    destination_app: 'server-app',
    destination_version: 'v2',
    destination_cluster: 'Kubernetes',
    request_protocol: 'tcp',
    response_flags: '-',
    connection_security_policy: 'mutual_tls',
  };
  for (const name of [
    'istio_tcp_connections_opened_total',
    'istio_tcp_connections_closed_total',
    'istio_tcp_received_bytes_total',
    'istio_tcp_sent_bytes_total',
  ]) {
    const src = find(s, name, { reporter: 'source' });
    t.equal(src.length, 1, `${name}: one source series`);
    t.same(src[0]?.labels, expectedSource, `${name}: exact source labels`);
    const dst = find(s, name, { reporter: 'destination' });
    t.equal(dst.length, 1, `${name}: one destination series`);
    t.same(dst[0]?.labels, { ...expectedSource, reporter: 'destination' }, `${name}: exact destination labels`);
  }
  for (const reporter of ['source', 'destination']) {
    t.equal(valueOf(s, 'istio_tcp_connections_opened_total', { reporter }), 1);
    t.equal(valueOf(s, 'istio_tcp_connections_closed_total', { reporter }), 1);
    t.equal(valueOf(s, 'istio_tcp_received_bytes_total', { reporter }), 11, 'received = client → server');
    t.equal(valueOf(s, 'istio_tcp_sent_bytes_total', { reporter }), 22, 'sent = server → client');
  }
  t.equal(find(s, 'istio_tcp_connections_failed_total', {}).length, 0, 'no failures');
});

t.test('missing context becomes "unknown"; TCP keeps destination_principal', async (t) => {
  const { tel } = make(t);
  const ctx = outboundTcp();
  ctx.srcWorkload = undefined;
  tel.open(ctx).complete();
  const s = await scrape(tel);
  const [opened] = find(s, 'istio_tcp_connections_opened_total', {});
  t.equal(opened?.labels['source_workload'], 'unknown');
  t.equal(opened?.labels['source_principal'], 'unknown');
  t.equal(opened?.labels['source_cluster'], 'unknown');
  t.equal(opened?.labels['destination_service'], 'unknown');
  t.equal(opened?.labels['destination_workload'], 'legacy');
  t.equal(opened?.labels['destination_principal'], 'spiffe://cluster.local/ns/ns-b/sa/legacy');
  t.equal(opened?.labels['connection_security_policy'], 'unknown');
  t.equal(Object.keys(opened?.labels ?? {}).length, 23, 'every traffic label present');
});

t.test('byte counters advance while a long connection is open', async (t) => {
  const { tel } = make(t, { byteFlushIntervalMs: 100 });
  const r = tel.open(outboundHbone());
  r.bytes.clientToServer += 100;
  r.bytes.serverToClient += 7;
  let s = await scrape(tel);
  t.equal(valueOf(s, 'istio_tcp_received_bytes_total', {}), undefined, 'nothing before the first flush');
  await sleep(250);
  s = await scrape(tel);
  t.equal(valueOf(s, 'istio_tcp_received_bytes_total', {}), 100, 'flushed while open');
  t.equal(valueOf(s, 'istio_tcp_sent_bytes_total', {}), 7);
  t.equal(valueOf(s, 'istio_tcp_connections_closed_total', {}), undefined, 'still open');
  r.bytes.clientToServer += 50;
  await sleep(250);
  s = await scrape(tel);
  t.equal(valueOf(s, 'istio_tcp_received_bytes_total', {}), 150, 'only the delta is added');
  r.bytes.serverToClient += 3;
  r.complete();
  s = await scrape(tel);
  t.equal(valueOf(s, 'istio_tcp_received_bytes_total', {}), 150, 'complete does not double count');
  t.equal(valueOf(s, 'istio_tcp_sent_bytes_total', {}), 10, 'complete flushes the rest');
  await sleep(150);
  s = await scrape(tel);
  t.equal(valueOf(s, 'istio_tcp_sent_bytes_total', {}), 10, 'a completed record is no longer flushed');
});

t.test('failed connection: failed_total, flag, error-level line; complete is idempotent', async (t) => {
  const { tel, out } = make(t);
  const r = tel.open(outboundHbone());
  r.complete(new ZtError('ZT_ERR_CONNECT_FAILED', 'connection refused'));
  r.complete();
  r.complete(new ZtError('ZT_ERR_TLS_HANDSHAKE'));
  const s = await scrape(tel);
  t.equal(valueOf(s, 'istio_tcp_connections_closed_total', { response_flags: 'CONNECT' }), 1);
  t.equal(find(s, 'istio_tcp_connections_closed_total', {}).length, 1, 'closed once');
  t.equal(valueOf(s, 'istio_tcp_connections_failed_total', { response_flags: 'CONNECT', reporter: 'source' }), 1);
  t.equal(valueOf(s, 'istio_tcp_connections_opened_total', { response_flags: '-' }), 1, 'opened keeps "-"');
  const lines = await out.json();
  t.equal(lines.length, 1);
  t.match(lines[0], { level: 'error', scope: 'access', message: 'connection complete', error: 'connection refused' });

  // A plain Error is a CONNECT failure; an explicit flag wins.
  tel.open(outboundTcp()).complete(new Error('boom'));
  tel.open(outboundTcp()).complete(new Error('x'), { responseFlag: 'NETWORK_POLICY' });
  const s2 = await scrape(tel);
  t.equal(valueOf(s2, 'istio_tcp_connections_failed_total', { response_flags: 'CONNECT', connection_security_policy: 'unknown' }), 1);
  t.equal(valueOf(s2, 'istio_tcp_connections_failed_total', { response_flags: 'NETWORK_POLICY' }), 1);
});

t.test('policy denial: DENY flag and a log line with full context and the policy', async (t) => {
  const { tel, out } = make(t);
  const r = tel.open(inboundHbone());
  r.complete(new ZtError('ZT_ERR_AUTHZ_DENIED'), { extraFields: { policy: 'ns-b/deny-client' } });
  const s = await scrape(tel);
  t.equal(valueOf(s, 'istio_tcp_connections_failed_total', { response_flags: 'DENY', reporter: 'destination' }), 1);
  const [line] = await out.json();
  t.match(line, {
    level: 'error',
    message: 'connection complete',
    'src.addr': '10.0.0.1:51234',
    'src.workload': 'client-7d9f-abcde',
    'src.namespace': 'default',
    'src.identity': CLIENT_ID,
    'dst.workload': 'server-55c6-xyz12',
    'dst.identity': SERVER_ID,
    direction: 'inbound',
    policy: 'ns-b/deny-client',
    error: 'connection closed due to policy rejection',
  });
});

t.test('sockets gauge, build info, process metrics, one registry per instance', async (t) => {
  const { tel } = make(t);
  const { tel: other } = make(t);
  t.not(tel.registry, other.registry);
  tel.socketOpened('source');
  tel.socketOpened('source');
  tel.socketOpened('destination');
  tel.socketClosed('source');
  const s = await scrape(tel);
  t.equal(valueOf(s, 'istio_tcp_sockets_open', { reporter: 'source' }), 1);
  t.equal(valueOf(s, 'istio_tcp_sockets_open', { reporter: 'destination' }), 1);
  t.equal(valueOf(s, 'istio_build', { component: 'ztunnel', tag: '1.2.3-test' }), 1);
  t.ok(find(s, 'process_open_fds', {}).length === 1, 'process_open_fds');
  t.ok(find(s, 'process_resident_memory_bytes', {}).length === 1, 'process_resident_memory_bytes');
  t.ok(find(s, 'nodejs_eventloop_lag_seconds', {}).length === 1, 'nodejs_eventloop_lag_seconds');
  const so = await scrape(other);
  t.equal(find(so, 'istio_tcp_sockets_open', {}).length, 0, 'the other instance saw nothing');
});

// ---------------------------------------------------------------- access log

t.test('JSON access log: fields and orientation, outbound and inbound', async (t) => {
  const { tel, out } = make(t);
  const o = tel.open(outboundHbone());
  o.bytes.clientToServer = 11;
  o.bytes.serverToClient = 22;
  o.complete();
  const i = tel.open(inboundHbone());
  i.bytes.clientToServer = 11;
  i.bytes.serverToClient = 22;
  i.complete();
  const tcp = tel.open(outboundTcp());
  tcp.complete();
  const [ol, il, tl] = await out.json();
  t.same(Object.keys(ol ?? {}), [
    'level',
    'time',
    'scope',
    'src.addr',
    'src.workload',
    'src.namespace',
    'src.identity',
    'src.cluster',
    'dst.addr',
    'dst.hbone_addr',
    'dst.service',
    'dst.workload',
    'dst.namespace',
    'dst.identity',
    'dst.cluster',
    'direction',
    'bytes_sent',
    'bytes_recv',
    'duration',
    'message',
  ]);
  t.match(ol, {
    level: 'info',
    time: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/,
    scope: 'access',
    message: 'connection complete',
    'src.addr': '10.0.0.1:40000',
    'src.workload': 'client-7d9f-abcde',
    'src.namespace': 'default',
    'src.identity': CLIENT_ID,
    'dst.addr': '10.0.0.2:15008',
    'dst.hbone_addr': '10.0.0.2:8080',
    'dst.service': 'server.ns-b.svc.cluster.local',
    'dst.workload': 'server-55c6-xyz12',
    'dst.namespace': 'ns-b',
    'dst.identity': SERVER_ID,
    direction: 'outbound',
    bytes_sent: 11,
    bytes_recv: 22,
    duration: /^\d+ms$/,
  });
  t.match(il, { direction: 'inbound', bytes_sent: 22, bytes_recv: 11 });
  // TCP: no HBONE authority, no service, no identities claimed without mTLS.
  t.match(tl, { direction: 'outbound', 'dst.addr': '10.0.0.3:9000', 'dst.workload': 'legacy-0' });
  for (const absent of ['dst.hbone_addr', 'dst.service', 'src.identity', 'dst.identity']) {
    t.notOk(absent in (tl ?? {}), `${absent} omitted`);
  }
});

t.test('plain format: tab-separated line shape', async (t) => {
  const { tel, out } = make(t, { logFormat: 'plain' });
  const o = tel.open(outboundHbone());
  o.bytes.clientToServer = 11;
  o.bytes.serverToClient = 22;
  o.complete();
  tel.log.child({ scope: 'xds' }).warn({ attempt: 2, url: 'a b' }, 'reconnecting');
  tel.earlyDeny('inbound', '10.0.0.9:1111', '10.0.0.2:15008', 'unknown source', { reason: 'no workload' });
  const lines = await out.lines();
  t.equal(lines.length, 3);
  const ts = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{6}Z';
  t.match(
    lines[0],
    new RegExp(
      `^${ts}\\tinfo\\taccess\\tconnection complete\\t` +
        'src\\.addr="10\\.0\\.0\\.1:40000" src\\.workload="client-7d9f-abcde" src\\.namespace="default" ' +
        `src\\.identity="${CLIENT_ID}" src\\.cluster="Kubernetes" dst\\.addr="10\\.0\\.0\\.2:15008" ` +
        'dst\\.hbone_addr="10\\.0\\.0\\.2:8080" dst\\.service="server\\.ns-b\\.svc\\.cluster\\.local" ' +
        `dst\\.workload="server-55c6-xyz12" dst\\.namespace="ns-b" dst\\.identity="${SERVER_ID}" ` +
        'dst\\.cluster="Kubernetes" direction="outbound" bytes_sent=11 bytes_recv=22 duration="\\d+ms"$',
    ),
  );
  t.match(lines[1], new RegExp(`^${ts}\\twarn\\txds\\treconnecting\\tattempt=2 url="a b"$`));
  t.match(
    lines[2],
    new RegExp(
      `^${ts}\\twarn\\taccess\\tconnection failed\\tsrc\\.addr="10\\.0\\.0\\.9:1111" dst\\.addr="10\\.0\\.0\\.2:15008" ` +
        'direction="inbound" reason="no workload" error="unknown source"$',
    ),
  );
});

t.test('accessLogOnlyFailed: only failures and early denies are written', async (t) => {
  const { tel, out } = make(t, { accessLogOnlyFailed: true, logLevel: 'debug' });
  tel.open(outboundHbone()).complete();
  tel.open(inboundHbone()).complete();
  tel.open(outboundTcp()).complete(new ZtError('ZT_ERR_CONNECT_TIMEOUT'));
  tel.earlyDeny('outbound', '10.0.0.1:1', '10.0.0.5:80', 'no route');
  const lines = await out.json();
  t.same(
    lines.map((l) => [l['level'], l['message']]),
    [
      ['error', 'connection complete'],
      ['warn', 'connection failed'],
    ],
  );
  // Metrics are not affected by the log filter.
  const s = await scrape(tel);
  t.equal(valueOf(s, 'istio_tcp_connections_closed_total', { reporter: 'destination' }), 1);
});

t.test('log level: run-time changes, children follow, bad levels refused', async (t) => {
  const { tel, out } = make(t);
  const xds = tel.log.child({ scope: 'xds' });
  t.equal(tel.getLogLevel(), 'info');
  tel.open(outboundTcp()).complete();
  xds.debug('hidden at info');
  tel.setLogLevel('debug');
  t.equal(tel.getLogLevel(), 'debug');
  xds.debug('shown at debug');
  tel.open(outboundTcp()); // 'connection opened' at debug
  tel.setLogLevel('WARN');
  tel.open(outboundTcp()).complete(); // info: hidden
  tel.open(outboundTcp()).complete(new Error('refused')); // error: shown
  tel.setLogLevel('off');
  tel.open(outboundTcp()).complete(new Error('refused'));
  tel.earlyDeny('outbound', 'a', 'b', 'c');
  const err = t.throws(() => tel.setLogLevel('verbose'));
  t.match(err, { name: 'ZtError', code: 'ZT_ERR_CONFIG_INVALID' });
  t.equal(tel.getLogLevel(), 'off', 'unchanged after a bad level');
  t.throws(() => make(t, { logLevel: 'loud' }));
  const lines = await out.json();
  t.same(
    lines.map((l) => [l['level'], l['scope'], l['message']]),
    [
      ['info', 'access', 'connection complete'],
      ['debug', 'xds', 'shown at debug'],
      ['debug', 'access', 'connection opened'],
      ['error', 'access', 'connection complete'],
    ],
  );
  t.notOk('bytes_sent' in (lines[2] ?? {}), 'opened line has no bytes');
});

t.test('process log: root lines carry scope ztunnel, fields before message', async (t) => {
  const { tel, out } = make(t);
  tel.log.info({ port: 15001 }, 'listening');
  const [line] = await out.json();
  t.same(Object.keys(line ?? {}), ['level', 'time', 'scope', 'port', 'message']);
  t.match(line, { level: 'info', scope: 'ztunnel', port: 15001, message: 'listening' });
});
