// HTTP/2 abuse against the HBONE server (15008), driven by an independent client
// (test/helpers/h2_abuse_client.py on Debian's python3-h2 stack) over mTLS with a valid
// certificate, while a good SOCKS5 → HBONE echo keeps running through a second ztunnel.
// Each attack must be refused or bounded, logged once, and leave the process serving.
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { HboneServer } from '../../src/tunnel/hbone-server.js';
import { pattern, readAll, sha256, sharedCa, socksConnect, startEcho, startZtunnel, twoNodeYaml } from '../helpers/mesh.js';

const PY = '/usr/bin/python3';
const children = new Set<ChildProcess>();
const CLIENT = join(import.meta.dirname, '../helpers/h2_abuse_client.py');
const hasH2 = existsSync(PY) && (await run(PY, ['-c', 'import h2, hyperframe, hpack'], 10_000)).code === 0;
if (!hasH2) {
  t.plan(0, 'needs Debian python3-h2 at /usr/bin/python3');
  process.exit(0);
}

const echo = await startEcho('127.0.2.2');
// An app that writes as fast as it may: counts what the kernel accepted from it.
let blasted = 0;
const chunk = Buffer.alloc(64 * 1024, 7);
const blaster = net.createServer((s) => {
  s.on('error', () => undefined);
  const pump = (): void => {
    while (!s.destroyed && s.write(chunk)) blasted += chunk.length;
    if (!s.destroyed) blasted += chunk.length;
  };
  s.on('drain', pump);
  pump();
});
await new Promise<void>((r) => blaster.listen(0, '127.0.2.2', r));
const blasterPort = (blaster.address() as net.AddressInfo).port;

const b = await startZtunnel({ NODE_NAME: 'node-b', LOCAL_XDS: twoNodeYaml({ echoPort: echo.port }) });
const a = await startZtunnel({ NODE_NAME: 'node-a', LOCAL_XDS: twoNodeYaml({ echoPort: echo.port }), ZTUNNEL_HBONE_TARGET_PORT: String(b.ports.inbound) });

const dir = mkdtempSync(join(tmpdir(), `h2abuse-${process.pid}-`));
const cert = sharedCa.issueWorkloadCertificate('spiffe://cluster.local/ns/default/sa/client');
writeFileSync(join(dir, 'cert.pem'), cert.certPem);
writeFileSync(join(dir, 'key.pem'), cert.keyPem);
writeFileSync(join(dir, 'ca.pem'), sharedCa.rootCertPem);

t.teardown(async () => {
  for (const c of children) c.kill('SIGKILL');
  good.stop();
  await a.app.stop();
  await b.app.stop();
  echo.server.close();
  blaster.close();
  rmSync(dir, { recursive: true, force: true });
});

function run(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // Hard timeout: SIGKILL; the teardown kills whatever is still running on failure.
    const child = execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      children.delete(child);
      resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr });
    });
    children.add(child);
  });
}

interface AttackResult {
  local_port: number;
  close: string;
  closed_after_ms?: number;
  sent?: number;
  goaway?: { code: number; last_stream: number }[];
  rst?: Record<string, number>;
  responses?: Record<string, number>;
  settings_acks?: number;
  ping_acks?: number;
}

async function attack(mode: string, opts: { count?: number; size?: number; hold?: number; authority?: string; settle?: boolean } = {}): Promise<AttackResult> {
  const args = [CLIENT, mode, '--host', '127.0.2.2', '--port', String(b.ports.inbound), '--authority', opts.authority ?? `127.0.2.2:${echo.port}`];
  args.push('--cert', join(dir, 'cert.pem'), '--key', join(dir, 'key.pem'), '--ca', join(dir, 'ca.pem'));
  args.push('--count', String(opts.count ?? 1000), '--size', String(opts.size ?? 65536), '--hold', String(opts.hold ?? 5), '--wait', '20');
  if (opts.settle) args.push('--settle');
  const r = await run(PY, args, 25_000);
  if (r.code !== 0) throw new Error(`${mode}: python exited ${r.code}: ${r.stderr.slice(-400)}`);
  return JSON.parse(r.stdout) as AttackResult;
}

/** Log lines of B about one client connection (any message). */
function linesFor(port: number): Record<string, unknown>[] {
  return b.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((o) => String(o['src.addr']).endsWith(`:${port}`));
}

/** A well-behaved echo through A → HBONE → B that keeps sending during every attack. */
const good = await (async () => {
  const sock = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80);
  const sent: Buffer[] = [];
  const got: Buffer[] = [];
  let received = 0;
  let seed = 1;
  sock.on('data', (d: Buffer) => {
    got.push(d);
    received += d.length;
  });
  sock.resume();
  const timer = setInterval(() => {
    const { data } = pattern(16 * 1024, seed++);
    sent.push(data);
    sock.write(data);
  }, 20);
  return {
    received: () => received,
    stop: () => {
      clearInterval(timer);
      sock.destroy();
    },
    async finish(): Promise<{ sent: string; got: string }> {
      clearInterval(timer);
      const total = Buffer.concat(sent);
      const until = Date.now() + 10_000;
      while (received < total.length && Date.now() < until) await new Promise((r) => setTimeout(r, 25));
      sock.end();
      return { sent: sha256(total), got: sha256(Buffer.concat(got)) };
    },
  };
})();

/** B still accepts and relays a brand-new connection. */
async function stillServes(): Promise<string> {
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80);
  s.end('still ok');
  return (await readAll(s)).toString();
}

const MB = 1024 * 1024;
const figures: string[] = [];

/** Run one attack with the good connection beside it; common assertions. */
async function underAttack(
  t: Test,
  name: string,
  fn: () => Promise<AttackResult>,
  expectLogs = 1,
): Promise<AttackResult> {
  const rss0 = process.memoryUsage().rss;
  const good0 = good.received();
  const r = await fn();
  // Let B finish closing and writing its log line.
  await new Promise((res) => setTimeout(res, 300));
  const rss1 = process.memoryUsage().rss;
  const lines = linesFor(r.local_port);
  t.equal(lines.length, expectLogs, `${name}: ${expectLogs} log line(s) for the connection (got ${lines.length})`);
  t.ok(good.received() > good0, `${name}: the good connection kept flowing (${good.received() - good0} bytes echoed meanwhile)`);
  t.equal(await stillServes(), 'still ok', `${name}: a new connection is served`);
  t.ok(rss1 - rss0 < 100 * MB, `${name}: RSS ${Math.round(rss0 / MB)} → ${Math.round(rss1 / MB)} MiB`);
  figures.push(`${name}: close=${r.close} after ${r.closed_after_ms ?? '-'} ms, goaway=${JSON.stringify((r.goaway ?? []).map((g) => g.code))}, rst=${JSON.stringify(r.rst ?? {})}, responses=${JSON.stringify(r.responses ?? {})}, log lines=${lines.length} (${String(lines[0]?.error ?? lines[0]?.message ?? '')}), RSS ${Math.round(rss0 / MB)}→${Math.round(rss1 / MB)} MiB`);
  return r;
}

// The handshake timeout (10 s) runs beside the other cases: started now, checked at the end.
const silentTcp = attack('silent_tcp', { hold: 15 });
const helloSilent = attack('hello_silent', { hold: 15 });

t.test('rapid reset: thousands of HEADERS(CONNECT)+RST_STREAM', async (t) => {
  const peersBefore = echo.peers.length;
  const r = await underAttack(t, 'rapid reset (5000)', () => attack('rapid_reset', { count: 5000 }));
  t.equal(r.close, 'eof', 'the server closed the connection');
  t.ok(r.goaway?.some((g) => g.code === 11), 'GOAWAY ENHANCE_YOUR_CALM');
  t.ok((r.goaway?.length ?? 0) <= 2, `GOAWAY once (+ the final one of destroy), not per frame: ${r.goaway?.length}`);
  t.ok(echo.peers.length - peersBefore < 300, `reset streams barely reached the app (${echo.peers.length - peersBefore} app connections)`);
});

t.test('CONTINUATION flood', async (t) => {
  const r = await underAttack(t, 'CONTINUATION flood (5000)', () => attack('continuation', { count: 5000 }));
  t.equal(r.close, 'eof');
  t.ok((r.goaway?.length ?? 0) >= 1, 'GOAWAY');
});

for (const settle of [false, true]) {
  // settle: the client first finishes the SETTINGS exchange, so nghttp2 already enforces the
  // advertised header-list size (it would refuse a larger block silently, never logged).
  t.test(`oversized header block${settle ? ', after the SETTINGS exchange' : ''}`, async (t) => {
    const r = await underAttack(t, `oversized header (3 x 40 KiB${settle ? ', settled' : ''})`, () => attack('big_header', { count: 3, size: 40_000, settle }));
    t.equal(r.close, 'eof');
    t.same(r.responses, {}, 'no stream was answered');
    t.ok(r.goaway?.some((g) => g.code === 11), 'GOAWAY ENHANCE_YOUR_CALM');
  });
}

t.test('1,000 concurrent CONNECTs on one connection', async (t) => {
  const r = await underAttack(t, '1000 concurrent CONNECTs', () => attack('concurrent', { count: 1000 }));
  t.equal(r.close, 'eof', 'refused streams, then the connection is closed');
  t.ok(Object.keys(r.rst ?? {}).length > 0 || (r.goaway?.length ?? 0) > 0, 'RST_STREAM or GOAWAY');
});

t.test('SETTINGS flood', async (t) => {
  const r = await underAttack(t, 'SETTINGS flood (20000)', () => attack('settings_flood', { count: 20_000 }));
  t.equal(r.close, 'eof');
  t.ok((r.settings_acks ?? 0) < 1000, `acknowledged ${r.settings_acks} of ${r.sent}`);
});

t.test('PING flood', async (t) => {
  const r = await underAttack(t, 'PING flood (20000)', () => attack('ping_flood', { count: 20_000 }));
  t.equal(r.close, 'eof');
  t.ok((r.ping_acks ?? 0) < 1000, `answered ${r.ping_acks} of ${r.sent} PINGs`);
});

t.test('a stream whose window stays 0 stalls without unbounded buffering', async (t) => {
  const before = blasted;
  const rss0 = process.memoryUsage().rss;
  const running = attack('zero_window', { hold: 6, authority: `127.0.2.2:${blasterPort}` });
  // Sample what the app managed to write while the client sits at window 0.
  await new Promise((r) => setTimeout(r, 3000));
  const at3 = blasted - before;
  await new Promise((r) => setTimeout(r, 2000));
  const at5 = blasted - before;
  const rss1 = process.memoryUsage().rss;
  const r = await running;
  t.same(r.responses, { 200: 1 }, 'the CONNECT was answered');
  t.equal(at5, at3, `the app is paused: ${at3} bytes written by 3 s, ${at5} by 5 s`);
  t.ok(at5 < 64 * MB, `bounded: ${(at5 / MB).toFixed(1)} MiB left the app`);
  t.ok(rss1 - rss0 < 100 * MB, `RSS ${Math.round(rss0 / MB)} → ${Math.round(rss1 / MB)} MiB`);
  figures.push(`zero window: app wrote ${(at5 / MB).toFixed(1)} MiB then paused (same at 3 s and 5 s), RSS ${Math.round(rss0 / MB)}→${Math.round(rss1 / MB)} MiB`);
  t.equal(await stillServes(), 'still ok');
});

t.test('TLS handshakes that never complete are closed at the handshake timeout', async (t) => {
  for (const [name, p] of [['raw TCP then silence', silentTcp], ['ClientHello then silence', helloSilent]] as const) {
    const r = await p;
    t.equal(r.close, 'eof', `${name}: closed by the server`);
    t.ok((r.closed_after_ms ?? 0) >= 9_000 && (r.closed_after_ms ?? 0) < 14_000, `${name}: after ${r.closed_after_ms} ms (timeout 10 s)`);
    await new Promise((res) => setTimeout(res, 100));
    const lines = linesFor(r.local_port);
    t.equal(lines.length, 1, `${name}: logged once`);
    t.notMatch(String(lines[0]?.['src.addr']), /undefined/, `${name}: peer address known (${String(lines[0]?.['src.addr'])})`);
    t.notMatch(String(lines[0]?.['dst.addr']), /undefined/, `${name}: local address known (${String(lines[0]?.['dst.addr'])})`);
    figures.push(`${name}: closed after ${r.closed_after_ms} ms, log: ${String(lines[0]?.error)}`);
  }
});

t.test('the good connection arrived intact through every attack', async (t) => {
  const { sent, got } = await good.finish();
  t.equal(got, sent, 'sha256 of everything echoed');
  t.comment(`figures:\n${figures.join('\n')}`);
});

t.test('rejections carry accept-time addresses, IPv6 bracketed', async (t) => {
  const v6 = await new Promise<boolean>((resolve) => {
    const probe = net.createServer().once('error', () => resolve(false));
    probe.listen(0, '::1', () => probe.close(() => resolve(true)));
  });
  if (!v6) return t.plan(0, 'no IPv6 loopback');
  const rejected: { peerAddr: string; localAddr: string; reason: string }[] = [];
  const id = 'spiffe://cluster.local/ns/default/sa/server';
  const creds = sharedCa.issueWorkloadCertificate(id);
  const server = new HboneServer({
    tuning: { streamWindowBytes: 65535, connectionWindowBytes: 65535, frameSizeBytes: 16384 },
    trustDomain: 'cluster.local',
    identityFor: () => id,
    tlsFor: () => ({ key: creds.keyPem, cert: creds.certPem, ca: sharedCa.rootCertPem }),
    onStream: () => undefined,
    onRejected: (i) => rejected.push(i),
  });
  const l = net.createServer((s) => server.handleSocket(s));
  await new Promise<void>((r) => l.listen(0, '::1', r));
  t.teardown(() => l.close());
  const port = (l.address() as net.AddressInfo).port;
  const c = net.connect({ host: '::1', port });
  c.on('error', () => undefined);
  await new Promise((r) => c.once('connect', r));
  const clientPort = c.localPort;
  c.end('GET / HTTP/1.1\r\n\r\n'); // not TLS: the handshake fails
  while (rejected.length === 0) await new Promise((r) => setTimeout(r, 20));
  t.equal(rejected.length, 1, 'reported once');
  t.equal(rejected[0]!.peerAddr, `[::1]:${clientPort}`);
  t.equal(rejected[0]!.localAddr, `[::1]:${port}`);
  t.match(rejected[0]!.reason, /TLS handshake failed/);
  t.same(server.identities(), [id]);
});

t.test('retainIdentities drops the servers of identities no longer local', async (t) => {
  const ids = ['spiffe://cluster.local/ns/default/sa/one', 'spiffe://cluster.local/ns/default/sa/two'];
  const creds = new Map(ids.map((id) => [id, sharedCa.issueWorkloadCertificate(id)]));
  let tlsCalls = 0;
  const server = new HboneServer({
    tuning: { streamWindowBytes: 65535, connectionWindowBytes: 65535, frameSizeBytes: 16384 },
    trustDomain: 'cluster.local',
    identityFor: (ip) => (ip === '127.0.9.1' ? ids[0] : ip === '127.0.9.2' ? ids[1] : undefined),
    tlsFor: (id) => {
      tlsCalls++;
      const c = creds.get(id)!;
      return { key: c.keyPem, cert: c.certPem, ca: sharedCa.rootCertPem };
    },
    onStream: () => undefined,
    onRejected: () => undefined,
  });
  const listeners: net.Server[] = [];
  for (const ip of ['127.0.9.1', '127.0.9.2']) {
    const l = net.createServer((s) => server.handleSocket(s));
    await new Promise<void>((r) => l.listen(0, ip, r));
    listeners.push(l);
  }
  t.teardown(() => listeners.forEach((l) => l.close()));
  const poke = async (l: net.Server): Promise<void> => {
    const c = net.connect((l.address() as net.AddressInfo).port, (l.address() as net.AddressInfo).address);
    c.on('error', () => undefined);
    await new Promise((r) => c.once('connect', r));
    await new Promise((r) => setTimeout(r, 50));
    c.destroy();
  };
  await poke(listeners[0]!);
  await poke(listeners[1]!);
  t.same(server.identities().sort(), [...ids].sort(), 'one server per identity');
  server.retainIdentities(new Set([ids[1]!]));
  t.same(server.identities(), [ids[1]], 'the identity that left is dropped');
  const before = tlsCalls;
  await poke(listeners[0]!);
  t.equal(tlsCalls, before + 1, 'a later connection for it builds a fresh server (no stale context)');
  server.retainIdentities(new Set());
  t.same(server.identities(), [], 'all dropped');
});
