// A stand-in for ztunnel on the seed's node-level capture path, for root-only netns tests:
// transparent (IP_TRANSPARENT) listeners on 15001/15006/15008 that accept TPROXY'd
// connections, read the original destination from the accepted socket's local address,
// and connect upstream from the client's own IP (IP_TRANSPARENT + IP_FREEBIND) — a plain
// TCP relay, no HBONE, no policy. Logs one JSON line per connection on stdout.
// Also `http PORT NAME`: a tiny HTTP app that answers with the client address it saw.
// Must never: be used outside tests; it relays anything it is handed.
// Usage: node stand-in-relay.mjs relay [--v6]      (listeners on 0.0.0.0, or [::] with --v6)
//        node stand-in-relay.mjs http PORT NAME

import koffi from 'koffi';
import http from 'node:http';
import net from 'node:net';

const libc = koffi.load('libc.so.6');
const socket = libc.func('int socket(int, int, int)');
const setsockopt = libc.func('int setsockopt(int, int, int, const void *val, uint32 len)');
const bind = libc.func('int bind(int, const void *addr, uint32 len)');
const listen = libc.func('int listen(int, int)');
const errnoLoc = libc.func('int *__errno_location()');
const errno = () => koffi.decode(errnoLoc(), 'int');

const AF_INET = 2, AF_INET6 = 10, SOCK_STREAM = 1, SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1, SO_REUSEADDR = 2, SOL_IP = 0, IP_FREEBIND = 15, IP_TRANSPARENT = 19;
const SOL_IPV6 = 41, IPV6_TRANSPARENT = 75, IPV6_V6ONLY = 26;

const one = () => { const b = Buffer.alloc(4); b.writeInt32LE(1); return b; };
const zero = () => Buffer.alloc(4);
function check(rc, what) { if (rc < 0) throw new Error(`${what}: errno ${errno()}`); return rc; }

function sockaddrIn(ip, port) {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_INET, 0);
  b.writeUInt16BE(port, 2);
  ip.split('.').forEach((o, i) => b.writeUInt8(Number(o), 4 + i));
  return b;
}

function sockaddrIn6Any(port) {
  const b = Buffer.alloc(28);
  b.writeUInt16LE(AF_INET6, 0);
  b.writeUInt16BE(port, 2);
  return b;
}

function transparentListenerFd(port, v6) {
  const fd = check(socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), 'socket');
  check(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one(), 4), 'SO_REUSEADDR');
  if (v6) {
    check(setsockopt(fd, SOL_IPV6, IPV6_V6ONLY, zero(), 4), 'IPV6_V6ONLY');
    check(setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, one(), 4), 'IPV6_TRANSPARENT');
    check(bind(fd, sockaddrIn6Any(port), 28), `bind [::]:${port}`);
  } else {
    check(setsockopt(fd, SOL_IP, IP_TRANSPARENT, one(), 4), 'IP_TRANSPARENT');
    check(bind(fd, sockaddrIn('0.0.0.0', port), 16), `bind 0.0.0.0:${port}`);
  }
  check(listen(fd, 511), 'listen');
  return fd;
}

function spoofedSocket(sourceIp) {
  const fd = check(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), 'socket');
  check(setsockopt(fd, SOL_IP, IP_TRANSPARENT, one(), 4), 'IP_TRANSPARENT');
  check(setsockopt(fd, SOL_IP, IP_FREEBIND, one(), 4), 'IP_FREEBIND');
  check(bind(fd, sockaddrIn(sourceIp, 0), 16), `bind ${sourceIp}`);
  return new net.Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
}

const v4 = (a) => (a ?? '').replace(/^::ffff:/, '');

function relay(v6) {
  for (const port of [15001, 15006, 15008]) {
    const server = net.createServer({ allowHalfOpen: true }, (c) => {
      const src = v4(c.remoteAddress), dst = v4(c.localAddress), dport = c.localPort;
      console.log(JSON.stringify({ listener: port, src: `${src}:${c.remotePort}`, dst: `${dst}:${dport}` }));
      let up;
      try { up = spoofedSocket(src); } catch (e) { console.log(JSON.stringify({ listener: port, error: e.message })); c.destroy(); return; }
      up.connect(dport, dst);
      c.pipe(up);
      up.pipe(c);
      c.on('error', () => up.destroy());
      up.on('error', (e) => { console.log(JSON.stringify({ listener: port, upstreamError: e.message })); c.destroy(); });
    });
    server.listen({ fd: transparentListenerFd(port, v6) }, () => console.log(JSON.stringify({ listening: port })));
  }
}

function app(port, name) {
  http
    .createServer((req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(`<!DOCTYPE html>\n<html><body>${name} saw ${v4(req.socket.remoteAddress)}</body></html>\n`);
    })
    .listen(port, '0.0.0.0', () => console.log(JSON.stringify({ listening: port })));
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'relay') relay(rest.includes('--v6'));
else if (mode === 'http') app(Number(rest[0]), rest[1] ?? 'app');
else { console.error('usage: stand-in-relay.mjs relay [--v6] | http PORT NAME'); process.exit(2); }
