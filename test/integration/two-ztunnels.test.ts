// Two in-process ztunnels on loopback carry real TCP over real HBONE (mTLS 1.3 + HTTP/2
// CONNECT) for each other's workloads. Workloads live at 127.0.x.y; clients enter
// through SOCKS5 from their own workload address.
import http2 from 'node:http2';
import net from 'node:net';
import t from 'tap';
import { CertificateAuthority } from '../../src/identity/ca.js';
import {
  eventually,
  httpGet,
  logLines,
  pattern,
  readAll,
  readN,
  sampleValue,
  sha256,
  sharedCa,
  socksConnect,
  startEcho,
  startZtunnel,
  twoNodeYaml,
  type TestZtunnel,
} from '../helpers/mesh.js';
import { within } from '../helpers/within.js';

const echo = await startEcho('127.0.2.2');
const legacyEcho = await startEcho('127.0.2.3', 'double');
t.teardown(() => {
  echo.server.close();
  legacyEcho.server.close();
});

// B serves node-b (server, legacy); A serves node-a (client, foreign) and dials B's HBONE port.
const b = await startZtunnel({ NODE_NAME: 'node-b', LOCAL_XDS: twoNodeYaml({ echoPort: echo.port }) });
const a = await startZtunnel({
  NODE_NAME: 'node-a',
  LOCAL_XDS: twoNodeYaml({ echoPort: echo.port }),
  ZTUNNEL_HBONE_TARGET_PORT: String(b.ports.inbound),
});
t.teardown(async () => {
  await a.app.stop();
  await b.app.stop();
});

async function roundTrip(z: TestZtunnel, from: string, host: string, port: number, msg: string): Promise<string> {
  const before = logLines(z, 'connection complete').length;
  const s = await socksConnect(z.ports.socks5 as number, from, host, port);
  s.end(msg);
  const got = (await readAll(s)).toString();
  // The access-log line is written once both sides have closed.
  await eventually(() => logLines(z, 'connection complete').length > before, 5000, 'access log line');
  return got;
}

t.test('echo through a service VIP crosses HBONE both ways', async (t) => {
  const got = await roundTrip(a, '127.0.1.2', '127.10.0.1', 80, 'hello world');
  t.equal(got, 'hello world');
  // The app saw the client's address: as root the inbound side spoofs it; else ztunnel's own loopback.
  if (process.getuid?.() === 0) t.ok(echo.peers.at(-1)?.startsWith('127.0.1.2:'), `app saw ${echo.peers.at(-1)}`);
  const out = logLines(a, 'connection complete').at(-1);
  await eventually(() => logLines(b, 'connection complete').length > 0, 5000, 'inbound log');
  const inb = logLines(b, 'connection complete').at(-1);
  t.match(out, { direction: 'outbound', 'src.identity': 'spiffe://cluster.local/ns/default/sa/client', 'dst.hbone_addr': `127.0.2.2:${echo.port}`, 'dst.identity': 'spiffe://cluster.local/ns/default/sa/server' });
  t.match(inb, { direction: 'inbound', 'src.identity': 'spiffe://cluster.local/ns/default/sa/client' });
});

t.test('direct workload IP and a service hostname through SOCKS5', async (t) => {
  t.equal(await roundTrip(a, '127.0.1.2', '127.0.2.2', echo.port, 'direct'), 'direct');
  t.equal(await roundTrip(a, '127.0.1.2', 'echo.default.svc.cluster.local', 80, 'by-name'), 'by-name');
});

t.test('a TCP (non-mesh) workload gets plain TCP, with port translation', async (t) => {
  t.equal(await roundTrip(a, '127.0.1.2', '127.0.2.3', legacyEcho.port, 'ab'), 'abab');
  const out = logLines(a, 'connection complete').at(-1);
  t.equal(out?.['dst.hbone_addr'], undefined, 'no HBONE for a TCP workload');
  t.equal(out?.['dst.addr'], `127.0.2.3:${legacyEcho.port}`);
});

t.test('unknown destination passes through', async (t) => {
  // A real listener outside the mesh that records what it receives and answers with something
  // only it can produce: the test fails if passthrough is broken (refused, dropped or rerouted).
  const received: string[] = [];
  const peers: string[] = [];
  const outside = net.createServer({ allowHalfOpen: true }, (c) => {
    peers.push(`${c.remoteAddress}:${c.remotePort}`);
    c.on('error', () => undefined);
    const parts: Buffer[] = [];
    c.on('data', (d: Buffer) => parts.push(d));
    c.on('end', () => {
      const got = Buffer.concat(parts).toString();
      received.push(got);
      c.end(`outside got ${got.length} bytes: ${got}`);
    });
  });
  await new Promise<void>((r) => outside.listen(0, '127.0.3.9', () => r()));
  t.teardown(() => outside.close());
  const { port } = outside.address() as net.AddressInfo;
  const msg = `pass-${process.pid}`;
  const answer = await within(10_000, roundTrip(a, '127.0.1.2', '127.0.3.9', port, msg), 'the passthrough round trip');
  t.same(received, [msg], 'the bytes arrived at the listener, once, intact');
  t.equal(peers.length, 1, 'one connection reached the listener');
  t.equal(answer, `outside got ${msg.length} bytes: ${msg}`, "the listener's answer came back");
  const out = logLines(a, 'connection complete').at(-1);
  t.match(out, { direction: 'outbound', 'dst.addr': `127.0.3.9:${port}` }, 'logged as an outbound connection to the listener');
  t.equal(out?.['dst.hbone_addr'], undefined, 'plain TCP: no HBONE for an unknown destination');
});

t.test('a VIP with no healthy endpoint is refused, not passed through', async (t) => {
  await t.rejects(socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.2', 80));
});

t.test('64 MiB each way arrives intact (sha256)', async (t) => {
  const size = 64 * 1024 * 1024;
  const { data, sha256: want } = pattern(size, 7);
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80);
  const reading = readN(s, size);
  s.write(data);
  const got = await reading;
  s.end();
  t.equal(got.length, size);
  t.equal(sha256(got.subarray(0, size)), want);
});

t.test('half-close: client shuts its write side and still gets the rest', async (t) => {
  // The server answers only after EOF, then closes: needs half-close through both ztunnels.
  const lateServer = net.createServer({ allowHalfOpen: true }, (c) => {
    const parts: Buffer[] = [];
    c.on('data', (d) => parts.push(d));
    c.on('end', () => {
      c.write(Buffer.from(`got ${Buffer.concat(parts).length} bytes`));
      setTimeout(() => c.end(' bye'), 100);
    });
  });
  await new Promise<void>((r) => lateServer.listen(0, '127.0.2.2', r));
  t.teardown(() => lateServer.close());
  const port = (lateServer.address() as net.AddressInfo).port;
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.0.2.2', port);
  s.end('12345');
  t.equal((await readAll(s)).toString(), 'got 5 bytes bye');

  // And the other way: the server half-closes first, the client keeps sending.
  const earlyServer = net.createServer({ allowHalfOpen: true }, (c) => {
    c.end('server done');
    const parts: Buffer[] = [];
    c.on('data', (d) => parts.push(d));
    c.on('end', () => {
      earlyReceived = Buffer.concat(parts).toString();
      c.destroy();
    });
  });
  let earlyReceived = '';
  await new Promise<void>((r) => earlyServer.listen(0, '127.0.2.2', r));
  t.teardown(() => earlyServer.close());
  const s2 = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.0.2.2', (earlyServer.address() as net.AddressInfo).port);
  const body = readAll(s2);
  t.equal((await body).toString(), 'server done');
  s2.end('client still talking');
  await new Promise((r) => s2.once('close', r));
  await new Promise((r) => setTimeout(r, 100));
  t.equal(earlyReceived, 'client still talking');
});

t.test('a server with an unexpected identity is refused', async (t) => {
  // C claims 127.0.4.2 as sa/impostor; A's config expects sa/server there.
  const echoC = await startEcho('127.0.4.2');
  const yamlA = twoNodeYaml({ echoPort: echo.port }).replace('workloads:', `workloads:
- name: server-c
  namespace: default
  serviceAccount: server
  workloadIps: ["127.0.4.2"]
  protocol: HBONE
  node: node-c`);
  const yamlC = yamlA.replace(/serviceAccount: server\n  workloadIps: \["127.0.4.2"\]/, 'serviceAccount: impostor\n  workloadIps: ["127.0.4.2"]');
  const c = await startZtunnel({ NODE_NAME: 'node-c', LOCAL_XDS: yamlC });
  const a2 = await startZtunnel({ NODE_NAME: 'node-a', LOCAL_XDS: yamlA, ZTUNNEL_HBONE_TARGET_PORT: String(c.ports.inbound) });
  t.teardown(async () => {
    await a2.app.stop();
    await c.app.stop();
    echoC.server.close();
  });
  await t.rejects(socksConnect(a2.ports.socks5 as number, '127.0.1.2', '127.0.4.2', echoC.port));
  const line = logLines(a2, 'connection complete').at(-1);
  t.match(String(line?.error), /sa\/server|identity/, 'the log says the identity did not match');
  t.equal(echoC.peers.length, 0, 'the impostor app never got a connection');
  // A keeps serving everyone else.
  t.equal(await roundTrip(a, '127.0.1.2', '127.10.0.1', 80, 'still ok'), 'still ok');
});

t.test('a client certificate from another trust domain is refused', async (t) => {
  const before = echo.peers.length;
  await t.rejects(socksConnect(a.ports.socks5 as number, '127.0.1.3', '127.10.0.1', 80));
  t.equal(echo.peers.length, before, 'the app never saw it');
  t.ok(logLines(b, 'connection failed').some((l) => /trust domain/.test(String(l.error))), 'B logs the trust-domain refusal');
});

/** A raw HBONE client speaking as sa/client, for malformed requests. */
function rawHbone(t: { teardown(fn: () => void): void }, ip: string): http2.ClientHttp2Session {
  const id = 'spiffe://cluster.local/ns/default/sa/client';
  const cert = sharedCa.issueWorkloadCertificate(id);
  const session = http2.connect(`https://${ip}:${b.ports.inbound}`, {
    key: cert.keyPem,
    cert: cert.certPem,
    ca: sharedCa.rootCertPem,
    ALPNProtocols: ['h2'],
    minVersion: 'TLSv1.3',
    checkServerIdentity: () => undefined,
  });
  session.on('error', () => undefined);
  t.teardown(() => session.close());
  return session;
}

function statusOf(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers, { endStream: false });
    req.on('response', (h) => {
      resolve(Number(h[':status']));
      req.close();
    });
    req.on('error', reject);
  });
}

t.test('inbound status mapping', async (t) => {
  const s = rawHbone(t, '127.0.2.2');
  t.equal(await statusOf(s, { ':method': 'CONNECT', ':authority': `127.0.2.2:${b.ports.inbound}` }), 503, 'loop port → 503');
  t.equal(await statusOf(s, { ':method': 'CONNECT', ':authority': '127.0.2.2:15008' }), 503, '15008 → 503');
  t.equal(await statusOf(s, { ':method': 'CONNECT', ':authority': 'not-an-address' }), 400, 'malformed authority → 400');
  t.equal(await statusOf(s, { ':method': 'GET', ':path': '/', ':authority': `127.0.2.2:${echo.port}` }), 400, 'GET → 400');
  t.equal(await statusOf(s, { ':method': 'CONNECT', ':authority': `127.0.1.2:${echo.port}` }), 400, 'ip mismatch → 400');
  t.equal(await statusOf(s, { ':method': 'CONNECT', ':authority': '127.0.2.2:1' }), 503, 'app unreachable → 503');
  t.equal(await statusOf(s, { ':method': 'CONNECT', ':authority': `127.0.2.2:${echo.port}` }), 200, 'a good CONNECT on the same session → 200');
  t.ok(logLines(b, 'connection failed').some((l) => /ip mismatch: 127.0.2.2 != 127.0.1.2/.test(String(l.error))));
  // Still serving everyone else.
  t.equal(await roundTrip(a, '127.0.1.2', '127.10.0.1', 80, 'after'), 'after');
});

t.test('a certificate from another root cannot even handshake', async (t) => {
  const other = CertificateAuthority.generate();
  const cert = other.issueWorkloadCertificate('spiffe://cluster.local/ns/default/sa/client');
  const session = http2.connect(`https://127.0.2.2:${b.ports.inbound}`, {
    key: cert.keyPem,
    cert: cert.certPem,
    ca: sharedCa.rootCertPem,
    ALPNProtocols: ['h2'],
    checkServerIdentity: () => undefined,
  });
  session.on('error', () => undefined);
  const req = session.request({ ':method': 'CONNECT', ':authority': `127.0.2.2:${echo.port}` });
  req.on('error', () => undefined);
  const outcome = await new Promise<string>((r) => {
    req.on('response', () => r('response'));
    req.on('close', () => r('closed'));
  });
  session.destroy();
  t.equal(outcome, 'closed');
});

t.test('pooling: many connections share one HBONE session', async (t) => {
  const before = a.app.configDump() as { pool: { sessions: number } };
  const socks = await Promise.all(Array.from({ length: 20 }, () => socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80)));
  const mid = a.app.configDump() as { pool: { sessions: number } };
  t.ok(mid.pool.sessions - before.pool.sessions <= 1, `20 streams added ${mid.pool.sessions - before.pool.sessions} session(s) (before ${before.pool.sessions})`);
  for (const s of socks) s.end('x');
  for (const s of socks) t.equal((await readAll(s)).toString(), 'x');
});

t.test('istio_tcp_sockets_open counts HBONE-delivered connections on the destination side', async (t) => {
  const gauge = async (z: TestZtunnel, reporter: string): Promise<number> =>
    sampleValue((await httpGet(z.ports.stats, '/metrics')).body, 'istio_tcp_sockets_open', { reporter }) ?? 0;
  const before = { a: await gauge(a, 'source'), b: await gauge(b, 'destination') };
  const socks = await Promise.all(Array.from({ length: 5 }, () => socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80)));
  // Each one is up at B once it echoes.
  for (const s of socks) s.write('x');
  for (const s of socks) t.equal((await readN(s, 1)).toString(), 'x');
  t.equal((await gauge(a, 'source')) - before.a, 5, 'A (source) counts its 5 captured sockets');
  t.equal((await gauge(b, 'destination')) - before.b, 5, 'B (destination) counts the 5 connections it delivers over HBONE');
  for (const s of socks) s.end();
  for (const s of socks) await readAll(s);
  await eventually(async () => (await gauge(b, 'destination')) === before.b && (await gauge(a, 'source')) === before.a, 5000, 'both gauges back');
  t.pass('both back once the connections closed');
});

t.test('a reset from the app reaches the client as a reset, not a clean EOF', async (t) => {
  const resetter = net.createServer({ allowHalfOpen: true }, (c) => {
    c.once('data', () => c.resetAndDestroy());
  });
  await new Promise<void>((r) => resetter.listen(0, '127.0.2.2', r));
  t.teardown(() => resetter.close());
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.0.2.2', (resetter.address() as net.AddressInfo).port);
  const outcome = await new Promise<string>((resolve) => {
    s.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
    s.on('end', () => resolve('clean end'));
    s.resume();
    s.write('trigger');
  });
  t.equal(outcome, 'error ECONNRESET');
});

t.test('after the server is gone, writing on the half-closed connection ends in a reset (no fd kept)', async (t) => {
  // The app answers, closes and is gone: later bytes to it draw a TCP RST.
  const closer = net.createServer((c) => {
    c.end('bye', () => c.destroy());
  });
  await new Promise<void>((r) => closer.listen(0, '127.0.2.2', r));
  t.teardown(() => closer.close());
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.0.2.2', (closer.address() as net.AddressInfo).port);
  const outcome = new Promise<string>((resolve) => {
    s.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
    s.on('close', () => resolve('closed'));
  });
  t.equal((await readAll(s)).toString(), 'bye');
  const timer = setInterval(() => {
    if (!s.destroyed) s.write('more');
  }, 20);
  const got = await outcome;
  clearInterval(timer);
  // The RST shows as ECONNRESET, or as EPIPE when it lands during a write.
  t.match(got, /^error (ECONNRESET|EPIPE)$/);
  await eventually(() => a.app.tracker.size === 0, 3000, 'connection untracked');
});

t.test('a burst never puts more than POOL_MAX_STREAMS_PER_CONNECTION streams on one session', async (t) => {
  const small = await startZtunnel({
    NODE_NAME: 'node-a',
    LOCAL_XDS: twoNodeYaml({ echoPort: echo.port }),
    ZTUNNEL_HBONE_TARGET_PORT: String(b.ports.inbound),
    POOL_MAX_STREAMS_PER_CONNECTION: '5',
  });
  t.teardown(() => small.app.stop());
  const socks = await Promise.all(Array.from({ length: 20 }, () => socksConnect(small.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80)));
  const sessions = (small.app.configDump() as { pool: { sessions: number } }).pool.sessions;
  t.ok(sessions >= 4, `20 concurrent streams with a limit of 5 used ${sessions} sessions`);
  for (const s of socks) s.end('y');
  for (const s of socks) t.equal((await readAll(s)).toString(), 'y');
});

t.test('a spliced TCP connection is tracked and can be aborted (drain, re-authorization)', async (t) => {
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.0.2.3', legacyEcho.port);
  s.write('ab');
  t.equal((await readN(s, 4)).toString(), 'abab', 'bytes flow (ZTUNNEL_SPLICE is on by default)');
  t.equal(a.app.tracker.size, 1, 'tracked while spliced');
  const outcome = new Promise<string>((resolve) => {
    s.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
    s.on('end', () => resolve('clean end'));
  });
  a.app.tracker.abortAll(new Error('test abort'));
  t.equal(await outcome, 'error ECONNRESET', 'the client gets a reset');
  await eventually(() => a.app.tracker.size === 0, 3000, 'untracked');
  const line = await eventually(() => logLines(a, 'connection complete').find((l) => l.error === 'test abort'), 3000, 'access log');
  t.equal(line?.['bytes_sent'], 2, 'bytes counted through the splice worker');
  t.equal(line?.['bytes_recv'], 4);
});

t.test('upstream sockets carry TCP keepalive (idle long-lived connections survive, dead peers are noticed)', async (t) => {
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.0.2.3', legacyEcho.port);
  s.write('k');
  await readN(s, 2);
  // /proc/net/tcp: an idle socket with SO_KEEPALIVE has its keepalive timer armed (tr = 2).
  const hex = (ip: string, port: number): string =>
    `${ip
      .split('.')
      .reverse()
      .map((o) => Number(o).toString(16).padStart(2, '0'))
      .join('')
      .toUpperCase()}:${port.toString(16).padStart(4, '0').toUpperCase()}`;
  const target = hex('127.0.2.3', legacyEcho.port);
  const rows = (await import('node:fs')).readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1);
  const upstream = rows.map((r) => r.trim().split(/\s+/)).find((f) => f[2] === target && f[3] === '01');
  t.ok(upstream, 'found the ztunnel → app socket');
  t.equal(upstream?.[5]?.split(':')[0], '02', 'its keepalive timer is armed');
  s.destroy();
});
