// Socket-level shims: listener fds with IP_TRANSPARENT / SO_MARK / SO_REUSEPORT, outbound
// fds with a spoofed (freebind) source or a mark, and the netfilter original destination of
// an accepted connection. Node adopts every fd returned here (`listen({fd})`,
// `new net.Socket({fd})`), and libuv makes it non-blocking itself.
// Must never: leak an fd on a failed call (each creator closes what it opened before
// throwing), or return an fd without O_CLOEXEC (children must not inherit listeners).
// Invariant: every failed syscall becomes a NativeError naming the syscall and option.

import { isIP, type Socket } from 'node:net';

import * as libc from './libc.js';
import { NativeError, errnoName } from './native-error.js';

export interface ListenerSocketOptions {
  /** '0.0.0.0' | '::' | '127.0.0.1' | any IPv4/IPv6 literal (IPv6 may carry a %zone). */
  host: string;
  /** 0 = any free port. */
  port: number;
  transparent: boolean;
  reusePort?: boolean;
  mark?: number;
  /** Default 511, Node's own default. */
  backlog?: number;
}

export interface OriginalDst {
  address: string;
  port: number;
}

const DEFAULT_BACKLOG = 511;
const EPERM = 1;
const EINTR = 4;
const EBADF = 9;
const EINVAL = 22;
const ENOTSOCK = 88;

/** Options the kernel refuses (EPERM) unless the netns owner grants CAP_NET_ADMIN or CAP_NET_RAW. */
const PRIVILEGED_OPTIONS = new Set(['IP_TRANSPARENT', 'IPV6_TRANSPARENT', 'SO_MARK']);

type Family = 4 | 6;

interface ParsedIp {
  family: Family;
  /** Network-order address bytes: 4 or 16. */
  bytes: Buffer;
  scopeId: number;
}

function fail(syscall: string, target?: string): never {
  const errno = libc.lastErrno();
  let reason: string;
  if (errno === EPERM && target !== undefined && PRIVILEGED_OPTIONS.has(target)) {
    reason = 'needs CAP_NET_ADMIN or CAP_NET_RAW';
  } else if (syscall === 'bind' && errnoName(errno) === 'EACCES') {
    reason = 'privileged port, needs CAP_NET_BIND_SERVICE';
  } else {
    reason = libc.strerror(errno);
  }
  throw new NativeError(syscall, errno, target === undefined ? { reason } : { target, reason });
}

/** '::ffff:10.0.0.1' (how a dual-stack listener reports IPv4 peers) is handled as 10.0.0.1. */
function unmapIpv4(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m?.[1] ?? ip;
}

function parseIp(text: string): ParsedIp {
  const ip = unmapIpv4(text);
  const zoneAt = ip.indexOf('%');
  const bare = zoneAt < 0 ? ip : ip.slice(0, zoneAt);
  const family = isIP(bare);
  if (family === 4) {
    const bytes = Buffer.alloc(4);
    if (zoneAt < 0 && libc.inetPton(libc.AF_INET, bare, bytes) === 1) return { family: 4, bytes, scopeId: 0 };
  } else if (family === 6) {
    const bytes = Buffer.alloc(16);
    if (libc.inetPton(libc.AF_INET6, bare, bytes) === 1) {
      return { family: 6, bytes, scopeId: zoneAt < 0 ? 0 : parseZone(ip.slice(zoneAt + 1)) };
    }
  }
  throw new NativeError('inet_pton', EINVAL, { target: JSON.stringify(text), reason: 'not an IP address literal' });
}

function parseZone(zone: string): number {
  if (/^\d+$/.test(zone)) return Number(zone);
  const index = libc.ifNameToIndex(zone);
  if (index === 0) throw new NativeError('if_nametoindex', libc.lastErrno(), { target: zone, reason: 'unknown interface' });
  return index;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new NativeError('bind', EINVAL, { target: `port ${port}`, reason: 'port must be an integer in 0..65535' });
  }
}

function buildSockaddr(ip: ParsedIp, port: number): Buffer {
  if (ip.family === 4) {
    const sa = Buffer.alloc(libc.SOCKADDR_IN_BYTES);
    sa.writeUInt16LE(libc.AF_INET, 0);
    sa.writeUInt16BE(port, 2);
    ip.bytes.copy(sa, 4);
    return sa;
  }
  const sa = Buffer.alloc(libc.SOCKADDR_IN6_BYTES);
  sa.writeUInt16LE(libc.AF_INET6, 0);
  sa.writeUInt16BE(port, 2);
  ip.bytes.copy(sa, 8);
  sa.writeUInt32LE(ip.scopeId, 24);
  return sa;
}

function formatIp(family: Family, bytes: Buffer): string {
  const out = Buffer.alloc(64);
  const text = libc.inetNtop(family === 4 ? libc.AF_INET : libc.AF_INET6, bytes, out, out.length);
  if (text === null) fail('inet_ntop');
  return family === 6 ? unmapIpv4(text) : text;
}

function openTcpSocket(family: Family): number {
  const fd = libc.socket(family === 4 ? libc.AF_INET : libc.AF_INET6, libc.SOCK_STREAM | libc.SOCK_CLOEXEC, 0);
  if (fd < 0) fail('socket');
  return fd;
}

function setIntOption(fd: number, level: number, name: number, label: string, value: number): void {
  const val = Buffer.alloc(4);
  val.writeUInt32LE(value >>> 0, 0);
  if (libc.setsockopt(fd, level, name, val, 4) !== 0) fail('setsockopt', label);
}

function setMark(fd: number, mark: number): void {
  if (!Number.isInteger(mark) || mark < 0 || mark > 0xffffffff) {
    throw new NativeError('setsockopt', EINVAL, { target: 'SO_MARK', reason: `mark ${mark} is not a 32-bit unsigned integer` });
  }
  setIntOption(fd, libc.SOL_SOCKET, libc.SO_MARK, 'SO_MARK', mark);
}

function setTransparent(fd: number, family: Family): void {
  // On a dual-stack IPv6 socket IPV6_TRANSPARENT sets the same socket flag as IP_TRANSPARENT,
  // so it covers IPv4-mapped traffic too.
  if (family === 4) setIntOption(fd, libc.SOL_IP, libc.IP_TRANSPARENT, 'IP_TRANSPARENT', 1);
  else setIntOption(fd, libc.SOL_IPV6, libc.IPV6_TRANSPARENT, 'IPV6_TRANSPARENT', 1);
}

function bindTo(fd: number, ip: ParsedIp, port: number, label: string): void {
  const sa = buildSockaddr(ip, port);
  if (libc.bind(fd, sa, sa.length) !== 0) fail('bind', label);
}

/** Runs `configure` on a fresh socket; closes it if anything throws. */
function withNewSocket(family: Family, configure: (fd: number) => void): number {
  const fd = openTcpSocket(family);
  try {
    configure(fd);
  } catch (err) {
    libc.close(fd);
    throw err;
  }
  return fd;
}

function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Creates socket + SO_REUSEADDR (+IP_TRANSPARENT/IPV6_TRANSPARENT, +SO_REUSEPORT, +SO_MARK)
 * + bind + listen; returns the fd (CLOEXEC), ready for `net.createServer().listen({fd})`.
 * An IPv6 listener is dual-stack (IPV6_V6ONLY=0), so '::' accepts IPv4 too.
 */
export function createListenerFd(opts: ListenerSocketOptions): number {
  const ip = parseIp(opts.host);
  checkPort(opts.port);
  return withNewSocket(ip.family, (fd) => {
    setIntOption(fd, libc.SOL_SOCKET, libc.SO_REUSEADDR, 'SO_REUSEADDR', 1);
    if (ip.family === 6) setIntOption(fd, libc.SOL_IPV6, libc.IPV6_V6ONLY, 'IPV6_V6ONLY', 0);
    if (opts.transparent) setTransparent(fd, ip.family);
    if (opts.reusePort === true) setIntOption(fd, libc.SOL_SOCKET, libc.SO_REUSEPORT, 'SO_REUSEPORT', 1);
    if (opts.mark !== undefined) setMark(fd, opts.mark);
    bindTo(fd, ip, opts.port, formatHostPort(opts.host, opts.port));
    if (libc.listen(fd, opts.backlog ?? DEFAULT_BACKLOG) !== 0) fail('listen', formatHostPort(opts.host, opts.port));
  });
}

/**
 * `transparent`: true = required (throws when refused); undefined = best effort (tries
 * transparent, falls back to a plain listener on EPERM); false = plain listener.
 * The returned `transparent` says what the listener actually is.
 */
export function createListenerFdBestEffort(
  opts: Omit<ListenerSocketOptions, 'transparent'> & { transparent: boolean | undefined },
): { fd: number; transparent: boolean } {
  const { transparent, ...rest } = opts;
  if (transparent === false) return { fd: createListenerFd({ ...rest, transparent: false }), transparent: false };
  try {
    return { fd: createListenerFd({ ...rest, transparent: true }), transparent: true };
  } catch (err) {
    const refused = err instanceof NativeError && err.code === 'EPERM' && err.syscall === 'setsockopt';
    if (transparent === true || !refused) throw err;
    return { fd: createListenerFd({ ...rest, transparent: false }), transparent: false };
  }
}

function readOriginalDst(fd: number, level: number, name: number, size: number, family: Family): OriginalDst | undefined {
  const buf = Buffer.alloc(size);
  const len: [number] = [size];
  if (libc.getsockopt(fd, level, name, buf, len) !== 0) {
    const errno = libc.lastErrno();
    if (errno === EBADF || errno === ENOTSOCK) throw new NativeError('getsockopt', errno, { target: 'SO_ORIGINAL_DST', reason: libc.strerror(errno) });
    return undefined;
  }
  const expected = family === 4 ? libc.AF_INET : libc.AF_INET6;
  if (len[0] < size || buf.readUInt16LE(0) !== expected) return undefined;
  const address = family === 4 ? formatIp(4, buf.subarray(4, 8)) : formatIp(6, buf.subarray(8, 24));
  return { address, port: buf.readUInt16BE(2) };
}

/**
 * The pre-NAT destination of an accepted socket: SO_ORIGINAL_DST (IPv4), then
 * IP6T_SO_ORIGINAL_DST (IPv6). undefined when conntrack has none (TPROXY, no NAT, or no
 * conntrack in this netns): the caller then uses socket.localAddress. A conntrack entry
 * without NAT reports the local address itself, which is the same answer.
 * Throws NativeError only for a bad fd (EBADF / ENOTSOCK), which is a caller bug.
 */
export function getOriginalDst(fd: number): OriginalDst | undefined {
  return (
    readOriginalDst(fd, libc.SOL_IP, libc.SO_ORIGINAL_DST, libc.SOCKADDR_IN_BYTES, 4) ??
    readOriginalDst(fd, libc.SOL_IPV6, libc.IP6T_SO_ORIGINAL_DST, libc.SOCKADDR_IN6_BYTES, 6)
  );
}

/**
 * An unconnected TCP socket fd that may use a source IP this host does not own:
 * IP_TRANSPARENT + IP_FREEBIND (or the IPv6 pair), optional SO_MARK, bound to sourceIp:0.
 * Wrap with `new net.Socket({ fd, allowHalfOpen: true })`, then `.connect(port, host)`;
 * the destination must be of the same family as sourceIp ('::ffff:a.b.c.d' counts as IPv4).
 * The replies only come back if the routing/marks of the ztunnel netns rules (src/redirect/ztunnel-redirect.ts) are in place.
 */
export function createFreebindSocketFd(opts: { sourceIp: string; mark?: number }): number {
  const ip = parseIp(opts.sourceIp);
  return withNewSocket(ip.family, (fd) => {
    setTransparent(fd, ip.family);
    if (ip.family === 4) setIntOption(fd, libc.SOL_IP, libc.IP_FREEBIND, 'IP_FREEBIND', 1);
    else setIntOption(fd, libc.SOL_IPV6, libc.IPV6_FREEBIND, 'IPV6_FREEBIND', 1);
    if (opts.mark !== undefined) setMark(fd, opts.mark);
    // Defer the source port choice to connect(), so ports are unique per 4-tuple rather than
    // per source IP: many connections from one pod IP do not exhaust the ephemeral range.
    // The option also works on IPv6 sockets. Older kernels lack it: not fatal.
    const val = Buffer.alloc(4);
    val.writeUInt32LE(1, 0);
    libc.setsockopt(fd, libc.SOL_IP, libc.IP_BIND_ADDRESS_NO_PORT, val, 4);
    bindTo(fd, ip, 0, formatHostPort(unmapIpv4(opts.sourceIp), 0));
  });
}

/** An unconnected TCP socket fd with only SO_MARK set, for marked outbound connects. */
export function createMarkedSocketFd(opts: { family: 4 | 6; mark: number }): number {
  return withNewSocket(opts.family, (fd) => setMark(fd, opts.mark));
}

/** The OS fd behind a connected/accepted net.Socket (socket._handle.fd), or -1. */
export function socketFd(sock: Socket): number {
  const handle = (sock as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

/** Whether this process may set IP_TRANSPARENT (probes a throwaway socket each call). */
export function canUseTransparent(): boolean {
  const fd = libc.socket(libc.AF_INET, libc.SOCK_STREAM | libc.SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const val = Buffer.alloc(4);
  val.writeUInt32LE(1, 0);
  const ok = libc.setsockopt(fd, libc.SOL_IP, libc.IP_TRANSPARENT, val, 4) === 0;
  libc.close(fd);
  return ok;
}

/**
 * Closes an fd this process owns and Node does not (e.g. one never adopted). EINTR counts as
 * closed (Linux always releases the fd); anything else, EBADF above all, means a double close
 * whose fd number may already belong to someone else: it throws.
 */
export function closeFd(fd: number): void {
  if (libc.close(fd) !== 0) {
    const errno = libc.lastErrno();
    if (errno !== EINTR) throw new NativeError('close', errno, { target: String(fd), reason: libc.strerror(errno) });
  }
}

const LINGER_ZERO = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]); // struct linger { l_onoff = 1, l_linger = 0 }

/**
 * SO_LINGER {on, 0}: the next close() of this fd sends a TCP RST instead of a FIN. Works
 * whatever the socket's shutdown state, unlike Node's resetAndDestroy() after end().
 */
export function setLingerZero(fd: number): void {
  if (libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO_LINGER, LINGER_ZERO, 8) !== 0) fail('setsockopt', 'SO_LINGER');
}

/** Abort a raw fd: RST on close (best effort), then close; never throws (the fd may be gone). */
export function resetAndCloseFd(fd: number): void {
  try {
    setLingerZero(fd);
  } catch {
    /* closing anyway */
  }
  try {
    closeFd(fd);
  } catch {
    /* already closed */
  }
}
