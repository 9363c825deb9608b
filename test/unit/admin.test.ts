// Admin (15000), stats (15020) and readiness (15021) servers over real HTTP on
// 127.0.0.1:0, plus the config-dump redaction.
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import zlib from 'node:zlib';
import t from 'tap';
import {
  Readiness,
  closeServer,
  isLoopbackHost,
  redactSecrets,
  startAdminServer,
  startReadinessServer,
  startStatsServer,
} from '../../src/admin/index.js';
import { Telemetry } from '../../src/record/telemetry.js';
import type { ConnectionContext } from '../../src/record/types.js';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

function request(server: http.Server, method: string, path: string, headers: http.OutgoingHttpHeaders = {}): Promise<Reply> {
  const { port } = server.address() as AddressInfo;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString() });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

class Sink extends Writable {
  override _write(_c: Buffer, _e: BufferEncoding, cb: () => void): void {
    cb();
  }
}

function telemetry(t: { teardown(fn: () => unknown): void }): Telemetry {
  const tel = new Telemetry({
    logFormat: 'json',
    logLevel: 'info',
    accessLogOnlyFailed: false,
    clusterId: 'Kubernetes',
    version: '9.9.9',
    destination: new Sink(),
  });
  t.teardown(() => tel.close());
  return tel;
}

const CERT = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

t.test('admin server', async (t) => {
  const tel = telemetry(t);
  let quits = 0;
  let dump: unknown = {
    workloads: [{ name: 'client', services: new Map([['default/svc.default.svc.cluster.local', new Map([[80, 8080]])]]) }],
    certificates: [{ identity: 'spiffe://cluster.local/ns/default/sa/client', certChain: [{ pem: CERT }], privateKey: 'x', keyPem: 'y' }],
  };
  const server = await startAdminServer({
    host: '127.0.0.1',
    port: 0,
    configDump: () => dump,
    telemetry: tel,
    onQuit: async () => {
      quits++;
    },
  });
  t.teardown(() => closeServer(server));
  t.not((server.address() as AddressInfo).port, 0, 'bound to a real port');

  await t.test('index and 404', async (t) => {
    const index = await request(server, 'GET', '/');
    t.equal(index.status, 200);
    t.match(index.headers['content-type'], /text\/html/);
    t.match(index.text, /\/config_dump/);
    t.equal((await request(server, 'GET', '/nope')).status, 404);
    t.equal((await request(server, 'POST', '/debug/anything')).status, 404);
  });

  await t.test('config_dump: pretty JSON, Maps rendered, keys dropped', async (t) => {
    const res = await request(server, 'GET', '/config_dump');
    t.equal(res.status, 200);
    t.equal(res.headers['content-type'], 'application/json');
    t.match(res.text, /\n  "workloads": \[/, 'pretty printed');
    const body = JSON.parse(res.text) as Record<string, unknown>;
    t.same(body, {
      workloads: [{ name: 'client', services: { 'default/svc.default.svc.cluster.local': { '80': 8080 } } }],
      certificates: [{ identity: 'spiffe://cluster.local/ns/default/sa/client', certChain: [{ pem: CERT }] }],
    });
    t.notMatch(res.text, /PRIVATE KEY/);
  });

  await t.test('config_dump refuses to print a private key', async (t) => {
    dump = { certificates: [{ note: '-----BEGIN PRIVATE KEY-----\nsecret-bytes\n-----END PRIVATE KEY-----' }] };
    const res = await request(server, 'GET', '/config_dump');
    t.equal(res.status, 500);
    t.notMatch(res.text, /PRIVATE KEY|secret-bytes/, 'the secret is not echoed');
    t.match(res.text, /private key material/);
  });

  await t.test('logging', async (t) => {
    let res = await request(server, 'POST', '/logging');
    t.equal(res.status, 200);
    t.equal(res.text, 'current log level is info\n');
    res = await request(server, 'GET', '/logging');
    t.equal(res.text, 'current log level is info\n', 'GET reads');
    res = await request(server, 'POST', '/logging?level=debug');
    t.equal(res.status, 200);
    t.equal(res.text, 'current log level is debug\n');
    t.equal(tel.getLogLevel(), 'debug', 'the level really changed');
    res = await request(server, 'GET', '/logging?level=trace');
    t.equal(res.status, 405, 'GET cannot change the level');
    t.equal(tel.getLogLevel(), 'debug');
    res = await request(server, 'POST', '/logging?level=chatty');
    t.equal(res.status, 400);
    t.match(res.text, /usage: POST \/logging/);
    t.equal(tel.getLogLevel(), 'debug', 'unchanged after a bad level');
    res = await request(server, 'POST', '/logging?reset');
    t.equal(res.text, 'current log level is info\n');
    t.equal((await request(server, 'PUT', '/logging')).status, 405);
  });

  await t.test('quitquitquit: POST only, answers then calls onQuit', async (t) => {
    let res = await request(server, 'GET', '/quitquitquit');
    t.equal(res.status, 405);
    t.equal(quits, 0);
    res = await request(server, 'POST', '/quitquitquit');
    t.equal(res.status, 200);
    t.equal(res.text, 'shutdown now\n');
    await new Promise((r) => setImmediate(r));
    t.equal(quits, 1);
  });
});

t.test('admin server refuses a non-loopback host', async (t) => {
  const tel = telemetry(t);
  await t.rejects(
    startAdminServer({ host: '0.0.0.0', port: 0, configDump: () => ({}), telemetry: tel, onQuit: async () => {} }),
    { code: 'ZT_ERR_CONFIG_INVALID' },
  );
  t.ok(isLoopbackHost('127.0.0.1'));
  t.ok(isLoopbackHost('::1'));
  t.ok(isLoopbackHost('localhost'));
  t.notOk(isLoopbackHost('10.0.0.1'));
  t.notOk(isLoopbackHost('::'));
});

t.test('readiness: 503 naming pending tasks, then 200', async (t) => {
  const readiness = new Readiness();
  readiness.pending('state manager');
  readiness.pending('proxy');
  const server = await startReadinessServer({ host: '127.0.0.1', port: 0, readiness });
  t.teardown(() => closeServer(server));
  let res = await request(server, 'GET', '/healthz/ready');
  t.equal(res.status, 503);
  t.equal(res.text, 'not ready, pending: proxy, state manager\n');
  readiness.ready('proxy');
  res = await request(server, 'GET', '/healthz/ready');
  t.equal(res.text, 'not ready, pending: state manager\n');
  readiness.ready('state manager');
  t.ok(readiness.isReady());
  res = await request(server, 'GET', '/healthz/ready');
  t.equal(res.status, 200);
  t.equal(res.text, 'ready\n');
  t.equal((await request(server, 'POST', '/healthz/ready')).status, 405);
  t.equal((await request(server, 'GET', '/healthz/live')).status, 404);
  readiness.pending('workload proxy manager');
  t.equal((await request(server, 'GET', '/healthz/ready')).status, 503, 'can become pending again');
});

t.test('stats server serves the registry', async (t) => {
  const tel = telemetry(t);
  const ctx: ConnectionContext = {
    direction: 'outbound',
    srcAddr: '10.0.0.1:40000',
    srcWorkload: undefined,
    srcIdentity: undefined,
    dstAddr: '10.0.0.3:9000',
    hboneAddr: undefined,
    dstService: undefined,
    dstWorkload: undefined,
    dstIdentity: undefined,
    securityPolicy: 'unknown',
  };
  const r = tel.open(ctx);
  r.bytes.clientToServer = 11;
  r.complete();
  const server = await startStatsServer({ host: '127.0.0.1', port: 0, registry: tel.registry });
  t.teardown(() => closeServer(server));

  for (const path of ['/metrics', '/stats/prometheus']) {
    const res = await request(server, 'GET', path);
    t.equal(res.status, 200, path);
    t.match(res.headers['content-type'], /^text\/plain/);
    t.match(res.text, /^# TYPE istio_tcp_connections_opened_total counter$/m);
    t.match(res.text, /^istio_tcp_received_bytes_total\{reporter="source",.*\} 11$/m);
    t.match(res.text, /^istio_build\{component="ztunnel",tag="9.9.9"\} 1$/m);
    t.match(res.text, /^process_open_fds \d+$/m);
    t.notMatch(res.text, /istio_tcp_connections_failed_total/, 'families without samples are omitted');
  }

  const om = await request(server, 'GET', '/metrics', { accept: 'application/openmetrics-text; version=1.0.0' });
  t.match(om.headers['content-type'], /^application\/openmetrics-text/);
  t.match(om.text, /^# TYPE istio_tcp_connections_opened counter$/m);
  t.match(om.text, /^istio_tcp_connections_opened_total\{.*\} 1$/m);
  t.match(om.text, /# EOF\n$/);
  t.notMatch(om.text, /\n\n/, 'no blank lines in OpenMetrics');
  const again = await request(server, 'GET', '/metrics');
  t.match(again.text, /^# TYPE istio_tcp_connections_opened_total counter$/m, 'text format unchanged after OpenMetrics');

  const plain = await request(server, 'GET', '/metrics');
  for (const [coding, decode] of [
    ['gzip', zlib.gunzipSync],
    ['br', zlib.brotliDecompressSync],
  ] as const) {
    const res = await request(server, 'GET', '/metrics', { 'accept-encoding': coding });
    t.equal(res.headers['content-encoding'], coding);
    const text = decode(res.body).toString();
    t.match(text, /^istio_tcp_received_bytes_total\{.*\} 11$/m, `${coding} decodes`);
    t.equal(text.split('\n').filter((l) => l.startsWith('istio_')).join('\n'), plain.text.split('\n').filter((l) => l.startsWith('istio_')).join('\n'));
  }
  t.equal((await request(server, 'GET', '/')).status, 404);
});

t.test('redactSecrets', async (t) => {
  const input = {
    a: 1,
    key: 'drop me',
    nested: { privateKey: 'x', private_key: 'y', keyPem: 'z', keyId: 'kept', monkey: 'kept', list: [new Set(['s']), null] },
    when: new Date(0),
    buf: Buffer.from('hi'),
  };
  const out = redactSecrets(input);
  t.same(out, {
    a: 1,
    nested: { keyId: 'kept', monkey: 'kept', list: [['s'], null] },
    when: '1970-01-01T00:00:00.000Z',
    buf: 'aGk=',
  });
  t.equal(input.key, 'drop me', 'the input is not modified');
  t.throws(() => redactSecrets({ x: ['-----BEGIN RSA PRIVATE KEY-----'] }));
  t.throws(() => redactSecrets({ x: Buffer.from('-----BEGIN EC PRIVATE KEY-----') }));
  const cyclic: Record<string, unknown> = { name: 'c' };
  cyclic['self'] = cyclic;
  t.same(redactSecrets(cyclic), { name: 'c', self: '[Circular]' });
});

t.test('closeServer drops idle keep-alive connections', async (t) => {
  const readiness = new Readiness();
  const server = await startReadinessServer({ host: '127.0.0.1', port: 0, readiness });
  const agent = new http.Agent({ keepAlive: true });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/healthz/ready', agent }, (res) => {
      res.resume();
      res.on('end', resolve);
    }).on('error', reject);
  });
  const started = Date.now();
  await closeServer(server, 5000);
  t.ok(Date.now() - started < 1000, 'closed without waiting for the keep-alive timeout');
  t.notOk(server.listening);
  agent.destroy();
});

t.test('a client that never finishes its headers is cut off after about 2 s', async (t) => {
  const server = await startReadinessServer({ host: '127.0.0.1', port: 0, readiness: new Readiness() });
  t.teardown(() => closeServer(server));
  const { port } = server.address() as AddressInfo;
  const started = Date.now();
  const reply = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write('GET /healthz/ready HTTP/1.1\r\nHost: x\r\n'));
    let data = '';
    socket.on('data', (c: Buffer) => (data += c.toString()));
    socket.on('close', () => resolve(data));
    socket.on('error', reject);
    setTimeout(() => socket.destroy(), 8000).unref();
  });
  const elapsed = Date.now() - started;
  t.ok(elapsed >= 1500 && elapsed < 4500, `closed after ${elapsed} ms`);
  t.match(reply, /^HTTP\/1\.1 408/);
});
