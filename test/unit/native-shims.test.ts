// The socket shims on loopback, without namespaces: listener fds adopted by net.Server,
// outbound fds wrapped by net.Socket, original-destination lookup without NAT, and the
// NativeError shape. Parts needing CAP_NET_ADMIN/CAP_NET_RAW (IP_TRANSPARENT, SO_MARK) run
// when the process has them, and otherwise the EPERM errors are checked instead; to run
// that branch as root: capsh --drop=cap_net_admin,cap_net_raw -- -c 'npx tap <this file>'.
// The kernel capture path (TPROXY, REDIRECT, spoofing) is test/netns/tproxy.test.ts.

import { readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';
import t, { type Test } from 'tap';

import {
  NativeError,
  canUseTransparent,
  closeFd,
  createFreebindSocketFd,
  createListenerFd,
  createListenerFdBestEffort,
  createMarkedSocketFd,
  getOriginalDst,
  socketFd,
  type ListenerSocketOptions,
} from '../../native-shims/index.js';

/** CAP_NET_ADMIN (bit 12) or CAP_NET_RAW (bit 13) in the effective set, which is what the
 * kernel checks for IP_TRANSPARENT and SO_MARK; read independently of the code under test. */
function hasNetPrivilege(): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m !== null && (BigInt(`0x${m[1]}`) & (3n << 12n)) !== 0n;
}
const privileged = hasNetPrivilege();

function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

interface Served {
  server: net.Server;
  port: number;
  accepted: net.Socket[];
}

/** Adopts a listener fd into a net.Server that answers 'ok\n' and ends. */
async function serveFd(t: { teardown(fn: () => unknown): void }, fd: number): Promise<Served> {
  const accepted: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    accepted.push(sock);
    sock.on('error', () => {});
    sock.resume();
    sock.end('ok\n');
  });
  t.teardown(() => {
    for (const sock of accepted) sock.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => resolve());
  });
  return { server, port: (server.address() as net.AddressInfo).port, accepted };
}

async function serveListener(t: { teardown(fn: () => unknown): void }, opts: ListenerSocketOptions): Promise<Served> {
  return serveFd(t, createListenerFd(opts));
}

/** Connects (optionally through a pre-made fd) and returns what the server sent. */
function fetchOk(port: number, host: string, fd?: number): Promise<{ data: string; sock: net.Socket }> {
  return new Promise((resolve, reject) => {
    const sock = fd === undefined ? new net.Socket({ allowHalfOpen: true }) : new net.Socket({ fd, allowHalfOpen: true });
    let data = '';
    sock.on('error', reject);
    sock.setEncoding('utf8').on('data', (d: string) => (data += d));
    sock.on('end', () => {
      sock.end();
      resolve({ data, sock });
    });
    sock.connect(port, host);
  });
}

function expectNativeError(t: Test, fn: () => unknown, code: string, messageParts: RegExp): void {
  try {
    fn();
    t.fail(`expected NativeError ${code}`);
  } catch (err) {
    t.ok(err instanceof NativeError, 'is a NativeError');
    const e = err as NativeError;
    t.equal(e.code, code);
    t.equal(typeof e.errno, 'number');
    t.match(e.message, messageParts);
  }
}

t.test('IPv4 listener fd on 127.0.0.1:0 is adopted by net.Server and accepts', async (t) => {
  const { port, accepted } = await serveListener(t, { host: '127.0.0.1', port: 0, transparent: false });
  t.ok(port > 0, 'kernel chose a port');
  const { data } = await fetchOk(port, '127.0.0.1');
  t.equal(data, 'ok\n');
  t.equal(accepted.length, 1);
  t.ok(socketFd(accepted[0]!) >= 0, 'socketFd finds the accepted fd');
});

t.test('IPv6 listener on ::1', async (t) => {
  const { port, accepted } = await serveListener(t, { host: '::1', port: 0, transparent: false });
  const { data } = await fetchOk(port, '::1');
  t.equal(data, 'ok\n');
  t.equal(accepted[0]?.localAddress, '::1');
});

t.test("an IPv6 '::' listener also accepts IPv4", async (t) => {
  const { port, accepted } = await serveListener(t, { host: '::', port: 0, transparent: false });
  const { data } = await fetchOk(port, '127.0.0.1');
  t.equal(data, 'ok\n');
  t.equal(accepted[0]?.remoteAddress, '::ffff:127.0.0.1');
});

t.test('getOriginalDst without NAT', async (t) => {
  const { port, accepted } = await serveListener(t, { host: '127.0.0.1', port: 0, transparent: false });
  await fetchOk(port, '127.0.0.1');
  const sock = accepted[0]!;
  const dst = getOriginalDst(socketFd(sock));
  // No conntrack entry gives undefined; an entry without NAT (conntrack active in this
  // netns for other reasons) names the local address. Both mean "use localAddress".
  if (dst === undefined) t.pass('no original destination');
  else t.same(dst, { address: sock.localAddress, port: sock.localPort });
  expectNativeError(t, () => getOriginalDst(-1), 'EBADF', /getsockopt\(SO_ORIGINAL_DST\) failed: EBADF/);
});

t.test('socketFd is -1 for a socket without an OS handle', async (t) => {
  t.equal(socketFd(new net.Socket()), -1);
});

t.test('bind to an address in use gives EADDRINUSE and closes the fd', async (t) => {
  const { port } = await serveListener(t, { host: '127.0.0.1', port: 0, transparent: false });
  const before = openFdCount();
  expectNativeError(
    t,
    () => createListenerFd({ host: '127.0.0.1', port, transparent: false }),
    'EADDRINUSE',
    new RegExp(`^bind\\(127\\.0\\.0\\.1:${port}\\) failed: EADDRINUSE`),
  );
  t.equal(openFdCount(), before, 'no fd leaked');
});

t.test('SO_REUSEPORT lets two listeners share a port', async (t) => {
  const a = await serveListener(t, { host: '127.0.0.1', port: 0, transparent: false, reusePort: true });
  const b = await serveListener(t, { host: '127.0.0.1', port: a.port, transparent: false, reusePort: true });
  t.equal(b.port, a.port);
});

t.test('invalid arguments are NativeError EINVAL and open nothing', async (t) => {
  const before = openFdCount();
  expectNativeError(t, () => createListenerFd({ host: 'localhost', port: 0, transparent: false }), 'EINVAL', /^inet_pton\("localhost"\) failed: EINVAL/);
  expectNativeError(t, () => createListenerFd({ host: '127.0.0.1', port: 70000, transparent: false }), 'EINVAL', /port/);
  expectNativeError(t, () => createFreebindSocketFd({ sourceIp: '10.0.0.300' }), 'EINVAL', /inet_pton/);
  t.equal(openFdCount(), before, 'no fd leaked');
});

t.test('closeFd closes, and a double close is an error', async (t) => {
  const fd = createListenerFd({ host: '127.0.0.1', port: 0, transparent: false });
  closeFd(fd);
  expectNativeError(t, () => closeFd(fd), 'EBADF', /^close\(\d+\) failed: EBADF/);
});

t.test('IP_TRANSPARENT / SO_MARK with CAP_NET_ADMIN or CAP_NET_RAW', { skip: privileged ? false : 'needs CAP_NET_ADMIN or CAP_NET_RAW (root)' }, async (t) => {
  t.equal(canUseTransparent(), true, 'probe says transparent works');

  t.test('transparent + marked listener accepts', async (t) => {
    const { port } = await serveListener(t, { host: '127.0.0.1', port: 0, transparent: true, mark: 0x539 });
    t.equal((await fetchOk(port, '127.0.0.1')).data, 'ok\n');
  });

  t.test('best effort: undefined tries transparent, false does not', async (t) => {
    const tried = createListenerFdBestEffort({ host: '127.0.0.1', port: 0, transparent: undefined });
    t.equal(tried.transparent, true);
    closeFd(tried.fd);
    const plain = createListenerFdBestEffort({ host: '127.0.0.1', port: 0, transparent: false });
    t.equal(plain.transparent, false);
    closeFd(plain.fd);
  });

  t.test('marked socket connects to a loopback server', async (t) => {
    const { port, accepted } = await serveListener(t, { host: '127.0.0.1', port: 0, transparent: false });
    const { data, sock } = await fetchOk(port, '127.0.0.1', createMarkedSocketFd({ family: 4, mark: 0x539 }));
    t.equal(data, 'ok\n');
    t.equal(accepted[0]?.remotePort, sock.localPort, 'server saw this socket');
    const v6 = await serveListener(t, { host: '::1', port: 0, transparent: false });
    t.equal((await fetchOk(v6.port, '::1', createMarkedSocketFd({ family: 6, mark: 1 }))).data, 'ok\n');
  });

  t.test('connect errors on a wrapped fd surface as an error event', async (t) => {
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', () => resolve()));
    const closedPort = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const err = await fetchOk(closedPort, '127.0.0.1', createMarkedSocketFd({ family: 4, mark: 1 })).then(
      () => undefined,
      (e: NodeJS.ErrnoException) => e,
    );
    t.equal(err?.code, 'ECONNREFUSED');
  });

  t.test('freebind socket binds the requested source (IPv4-mapped text is IPv4)', async (t) => {
    const { port, accepted } = await serveListener(t, { host: '127.0.0.1', port: 0, transparent: false });
    const { data } = await fetchOk(port, '127.0.0.1', createFreebindSocketFd({ sourceIp: '::ffff:127.0.0.9', mark: 0x539 }));
    t.equal(data, 'ok\n');
    t.equal(accepted[0]?.remoteAddress, '127.0.0.9', 'server saw the chosen source');
    const v6 = await serveListener(t, { host: '::1', port: 0, transparent: false });
    await fetchOk(v6.port, '::1', createFreebindSocketFd({ sourceIp: '::1' }));
    t.equal(v6.accepted[0]?.remoteAddress, '::1');
  });
});

t.test('without CAP_NET_ADMIN / CAP_NET_RAW the options fail with a clear EPERM', { skip: privileged ? 'has CAP_NET_ADMIN: the privileged path is tested above' : false }, async (t) => {
  t.equal(canUseTransparent(), false);
  expectNativeError(
    t,
    () => createListenerFd({ host: '127.0.0.1', port: 0, transparent: true }),
    'EPERM',
    /^setsockopt\(IP_TRANSPARENT\) failed: EPERM \(needs CAP_NET_ADMIN or CAP_NET_RAW\)$/,
  );
  const fallback = createListenerFdBestEffort({ host: '127.0.0.1', port: 0, transparent: undefined });
  t.equal(fallback.transparent, false, 'best effort falls back to a plain listener');
  closeFd(fallback.fd);
  t.throws(() => createListenerFdBestEffort({ host: '127.0.0.1', port: 0, transparent: true }), NativeError);
  expectNativeError(t, () => createMarkedSocketFd({ family: 4, mark: 1 }), 'EPERM', /SO_MARK.*needs CAP_NET_ADMIN/);
});
