// The kernel capture path the shims exist for, on real namespaces (root only):
// TPROXY into an IP_TRANSPARENT listener (IPv4 and IPv6), REDIRECT + getOriginalDst, and a
// spoofed-source outbound connect through createFreebindSocketFd. Listeners and outbound
// sockets are created inside the proxy netns with withNetns and adopted by this process.
// Topology (all inside namespaces this file creates, prefix zt-tp-<pid>-):
//   client 10.77.1.1/24 fd77:1::1/64 ──veth── proxy 10.77.1.2/24 fd77:1::2/64
//   client routes 10.77.0.0/16 and fd77::/64 via the proxy; the proxy has no other link.
//   TPROXY → 15001: 10.77.0.0/24, fd77::/112 · TPROXY → non-transparent 15002: 10.77.3.0/24
//   REDIRECT → 15006: 10.77.2.0/24 · → 15007 (::): 10.77.4.0/24 · → 15008 (::): fd77::2:0/112

import net from 'node:net';
import t from 'tap';

import {
  createFreebindSocketFd,
  createListenerFd,
  getOriginalDst,
  socketFd,
  withNetns,
  type OriginalDst,
} from '../../native-shims/index.js';
import { NetnsSandbox, findNetnsSkipReason } from '../helpers/netns.js';

const PREFIX = 'zt-tp-';
const skipReason = findNetnsSkipReason(['ip', 'iptables', 'ip6tables', 'socat']);

interface Seen {
  local: string;
  remote: string;
  originalDst: OriginalDst | undefined;
}

function hostPort(address: string | undefined, port: number | undefined): string {
  return address?.includes(':') === true ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Adopts a listener fd; each connection is answered with 'ok\n' and recorded. */
function adopt(t: { teardown(fn: () => unknown): void }, fd: number): { seen: Seen[]; ready: Promise<void> } {
  const seen: Seen[] = [];
  const open = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    seen.push({
      local: hostPort(sock.localAddress, sock.localPort),
      remote: sock.remoteAddress ?? '',
      originalDst: getOriginalDst(socketFd(sock)),
    });
    open.add(sock);
    sock.on('close', () => open.delete(sock));
    sock.on('error', () => {});
    sock.resume();
    sock.end('ok\n');
  });
  t.teardown(() => {
    for (const sock of open) sock.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const ready = new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => resolve());
  });
  return { seen, ready };
}

t.test('TPROXY, REDIRECT and spoofed source in throwaway namespaces', { skip: skipReason ?? false }, async (t) => {
  NetnsSandbox.sweep(PREFIX);
  const sb = new NetnsSandbox(`${PREFIX}${process.pid}-`);
  t.teardown(() => sb.cleanup());

  const proxy = sb.add('proxy');
  const client = sb.add('client');
  sb.addVeth(
    { ns: proxy, name: 'ztp0', addresses: ['10.77.1.2/24', 'fd77:1::2/64'] },
    { ns: client, name: 'ztc0', addresses: ['10.77.1.1/24', 'fd77:1::1/64'] },
  );
  sb.run(client, ['ip', 'route', 'add', '10.77.0.0/16', 'via', '10.77.1.2']);
  sb.run(client, ['ip', '-6', 'route', 'add', 'fd77::/64', 'via', 'fd77:1::2']);
  for (const key of ['all', 'default', 'ztp0']) sb.run(proxy, ['sysctl', '-qw', `net.ipv4.conf.${key}.rp_filter=0`]);
  for (const v of ['-4', '-6']) {
    sb.run(proxy, ['ip', v, 'rule', 'add', 'fwmark', '0x400/0xfff', 'lookup', '100']);
    sb.run(proxy, ['ip', v, 'route', 'add', 'local', v === '-4' ? '0.0.0.0/0' : '::/0', 'dev', 'lo', 'table', '100']);
  }
  for (const [ipt, tproxyDst, onIp] of [
    ['iptables', '10.77.0.0/24', '127.0.0.1'],
    ['ip6tables', 'fd77::/112', '::1'],
  ] as const) {
    // Packets of sockets that are already transparent (accepted TPROXY connections, spoofed
    // outbound ones) skip TPROXY and are routed locally by the fwmark rule (see src/redirect/ztunnel-redirect.ts).
    sb.run(proxy, [ipt, '-t', 'mangle', '-A', 'PREROUTING', '-p', 'tcp', '-m', 'socket', '--transparent', '-j', 'MARK', '--set-xmark', '0x400/0xfff']);
    sb.run(proxy, [ipt, '-t', 'mangle', '-A', 'PREROUTING', '-p', 'tcp', '-m', 'mark', '--mark', '0x400/0xfff', '-j', 'RETURN']);
    sb.run(proxy, [ipt, '-t', 'mangle', '-A', 'PREROUTING', '-i', 'ztp0', '-p', 'tcp', '-d', tproxyDst,
      '-j', 'TPROXY', '--on-port', '15001', '--on-ip', onIp, '--tproxy-mark', '0x400/0xfff']);
  }
  // An SO_REUSEPORT group of transparent listeners (what per-worker listeners would be).
  sb.run(proxy, ['iptables', '-t', 'mangle', '-A', 'PREROUTING', '-i', 'ztp0', '-p', 'tcp', '-d', '10.77.6.0/24',
    '-j', 'TPROXY', '--on-port', '15009', '--on-ip', '127.0.0.1', '--tproxy-mark', '0x400/0xfff']);
  // Control: TPROXY to a listener that is NOT transparent; the kernel must refuse to deliver.
  sb.run(proxy, ['iptables', '-t', 'mangle', '-A', 'PREROUTING', '-i', 'ztp0', '-p', 'tcp', '-d', '10.77.3.0/24',
    '-j', 'TPROXY', '--on-port', '15002', '--on-ip', '127.0.0.1', '--tproxy-mark', '0x400/0xfff']);
  sb.run(proxy, ['iptables', '-t', 'nat', '-A', 'PREROUTING', '-i', 'ztp0', '-p', 'tcp', '-d', '10.77.2.0/24', '-j', 'REDIRECT', '--to-ports', '15006']);
  sb.run(proxy, ['iptables', '-t', 'nat', '-A', 'PREROUTING', '-i', 'ztp0', '-p', 'tcp', '-d', '10.77.4.0/24', '-j', 'REDIRECT', '--to-ports', '15007']);
  sb.run(proxy, ['ip6tables', '-t', 'nat', '-A', 'PREROUTING', '-i', 'ztp0', '-p', 'tcp', '-d', 'fd77::2:0/112', '-j', 'REDIRECT', '--to-ports', '15008']);

  const inProxy = <T>(fn: () => T): T => withNetns(sb.path(proxy), fn);
  const inClient = <T>(fn: () => T): T => withNetns(sb.path(client), fn);
  const socat = (target: string, extra = '') =>
    sb.exec(client, ['socat', '-T', '5', '-', `${target}${extra}`], { input: 'hi\n', timeoutMs: 15_000 });

  t.test('TPROXY (IPv4) delivers to the transparent listener with the original destination as local address', async (t) => {
    const { seen, ready } = adopt(t, inProxy(() => createListenerFd({ host: '127.0.0.1', port: 15001, transparent: true })));
    await ready;
    const r = await socat('TCP4:10.77.0.9:9080');
    t.equal(r.stdout, 'ok\n', `client got the answer (${r.stderr.trim()})`);
    t.equal(seen.length, 1);
    t.equal(seen[0]?.local, '10.77.0.9:9080', 'localAddress is the original destination');
    t.equal(seen[0]?.remote, '10.77.1.1', 'remoteAddress is the client');
    // conntrack is active in this netns (the nat rules), but TPROXY does not NAT: either no
    // entry or one whose destination is the local address itself.
    if (seen[0]?.originalDst !== undefined) t.same(seen[0].originalDst, { address: '10.77.0.9', port: 9080 });
  });

  t.test('TPROXY (IPv6) into an IPV6_TRANSPARENT listener on ::1', async (t) => {
    const { seen, ready } = adopt(t, inProxy(() => createListenerFd({ host: '::1', port: 15001, transparent: true })));
    await ready;
    const r = await socat('TCP6:[fd77::9]:9443');
    t.equal(r.stdout, 'ok\n', `client got the answer (${r.stderr.trim()})`);
    t.equal(seen[0]?.local, '[fd77::9]:9443');
    t.equal(seen[0]?.remote, 'fd77:1::1');
  });

  t.test('TPROXY spreads connections across an SO_REUSEPORT group of transparent listeners', async (t) => {
    // The basis for per-worker listeners (ZTUNNEL_WORKER_THREADS): the kernel's TPROXY socket
    // lookup selects within the reuseport group, so no acceptor has to hand fds around.
    const group = [0, 1].map(() => adopt(t, inProxy(() => createListenerFd({ host: '127.0.0.1', port: 15009, transparent: true, reusePort: true }))));
    await Promise.all(group.map((g) => g.ready));
    const N = 60;
    for (let i = 0; i < N; i += 6) {
      const batch = await Promise.all([0, 1, 2, 3, 4, 5].map((j) => socat(`TCP4:10.77.6.${((i + j) % 50) + 1}:${9000 + i + j}`)));
      for (const r of batch) t.equal(r.stdout, 'ok\n', `answered (${r.stderr.trim()})`);
    }
    const counts = group.map((g) => g.seen.length);
    t.equal(counts[0]! + counts[1]!, N, `every connection accepted once (${counts.join(' + ')})`);
    t.ok(counts.every((c) => c >= 10), `both listeners of the group got a share: ${counts.join(' / ')}`);
    t.ok(group.every((g) => g.seen.every((s) => s.local.startsWith('10.77.6.'))), 'each still sees the original destination');
  });

  t.test('control: TPROXY to a non-transparent listener is not delivered', async (t) => {
    const { seen, ready } = adopt(t, inProxy(() => createListenerFd({ host: '127.0.0.1', port: 15002, transparent: false })));
    await ready;
    const r = await socat('TCP4:10.77.3.9:9080', ',connect-timeout=2');
    t.not(r.code, 0, 'client connect fails');
    t.equal(seen.length, 0, 'listener saw nothing');
  });

  t.test('REDIRECT: getOriginalDst returns the pre-NAT destination', async (t) => {
    const { seen, ready } = adopt(t, inProxy(() => createListenerFd({ host: '0.0.0.0', port: 15006, transparent: false })));
    await ready;
    const r = await socat('TCP4:10.77.2.9:8080');
    t.equal(r.stdout, 'ok\n', `client got the answer (${r.stderr.trim()})`);
    t.equal(seen[0]?.local, '10.77.1.2:15006', 'localAddress is the redirect target');
    t.same(seen[0]?.originalDst, { address: '10.77.2.9', port: 8080 });
  });

  t.test('REDIRECT into a dual-stack :: listener reports plain IPv4 text', async (t) => {
    const { seen, ready } = adopt(t, inProxy(() => createListenerFd({ host: '::', port: 15007, transparent: false })));
    await ready;
    const r = await socat('TCP4:10.77.4.7:7070');
    t.equal(r.stdout, 'ok\n', `client got the answer (${r.stderr.trim()})`);
    t.equal(seen[0]?.remote, '::ffff:10.77.1.1', 'IPv4 client accepted on the IPv6 socket');
    t.same(seen[0]?.originalDst, { address: '10.77.4.7', port: 7070 });
  });

  t.test('REDIRECT (IPv6): getOriginalDst falls through to IP6T_SO_ORIGINAL_DST', async (t) => {
    const { seen, ready } = adopt(t, inProxy(() => createListenerFd({ host: '::', port: 15008, transparent: false })));
    await ready;
    const r = await socat('TCP6:[fd77::2:9]:8443');
    t.equal(r.stdout, 'ok\n', `client got the answer (${r.stderr.trim()})`);
    t.equal(seen[0]?.remote, 'fd77:1::1');
    t.same(seen[0]?.originalDst, { address: 'fd77::2:9', port: 8443 });
  });

  t.test('spoofed source: the server in the client netns sees the foreign IP', async (t) => {
    const { seen, ready } = adopt(t, inClient(() => createListenerFd({ host: '10.77.1.1', port: 8000, transparent: false })));
    await ready;
    sb.run(client, ['ip', 'route', 'add', '10.77.5.0/24', 'via', '10.77.1.2']);
    const fd = inProxy(() => createFreebindSocketFd({ sourceIp: '10.77.5.50', mark: 0x539 }));
    const sock = new net.Socket({ fd, allowHalfOpen: true });
    const answer = await new Promise<string>((resolve, reject) => {
      let data = '';
      const timer = setTimeout(() => reject(new Error('spoofed connect timed out')), 5000);
      sock.on('error', reject);
      sock.setEncoding('utf8').on('data', (d: string) => (data += d));
      sock.on('end', () => {
        clearTimeout(timer);
        sock.end();
        resolve(data);
      });
      sock.connect(8000, '10.77.1.1', () => t.equal(sock.localAddress, '10.77.5.50', 'bound to the foreign source'));
    });
    t.equal(answer, 'ok\n', 'data flows both ways');
    t.equal(seen[0]?.remote, '10.77.5.50', 'server saw the spoofed source IP');
  });
});
