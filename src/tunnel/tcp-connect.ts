// Upstream TCP connects for every path: to a peer's HBONE port, to a plain TCP
// destination, and from the inbound side to the local app. Optionally from a foreign
// source IP (original-source preservation: IP_TRANSPARENT + IP_FREEBIND) and with an
// SO_MARK. A spoofing failure only downgrades to an unspoofed connect (as upstream);
// the connect itself has a hard timeout. HBONE carrier sockets also get TCP keepalive and
// TCP_USER_TIMEOUT once connected (setCarrierLiveness), so the kernel aborts a connection
// whose sent data stays unacknowledged (peer behind a partition) even if no HTTP/2 PING runs.
import net from 'node:net';
import { createFreebindSocketFd, createMarkedSocketFd, setTcpUserTimeout, socketFd } from '../../native-shims/index.js';
import { KEEPALIVE_IDLE_MS } from '../config/env.js';
import { ZtError } from '../errors.js';
import { formatHostPort } from '../util/ip.js';
import { pooledReadOption } from './read-pool.js';

export interface TcpConnectOptions {
  /** Bind to this (possibly foreign) source IP first. Ignored when equal to the destination. */
  sourceIp?: string | undefined;
  mark?: number | undefined;
  timeoutMs: number;
  /** Error code for a timeout (HBONE connects report NETWORK_POLICY). */
  timeoutCode?: 'ZT_ERR_CONNECT_TIMEOUT' | 'ZT_ERR_HBONE_CONNECT_TIMEOUT';
  onSpoofFailure?: (err: unknown) => void;
  /** Default true (byte streams need half-close). TLS/HTTP/2 carriers want false: a peer's FIN must close them. */
  allowHalfOpen?: boolean;
}

/** A socket created (not yet connected) with the requested source IP / mark. */
export function createUpstreamSocket(ip: string, opts: TcpConnectOptions): net.Socket {
  let fd = -1;
  if (opts.sourceIp && opts.sourceIp !== ip) {
    try {
      fd = createFreebindSocketFd(opts.mark === undefined ? { sourceIp: opts.sourceIp } : { sourceIp: opts.sourceIp, mark: opts.mark });
    } catch (err) {
      opts.onSpoofFailure?.(err);
    }
  }
  if (fd < 0 && opts.mark !== undefined) {
    try {
      fd = createMarkedSocketFd({ family: net.isIPv6(ip) ? 6 : 4, mark: opts.mark });
    } catch (err) {
      opts.onSpoofFailure?.(err);
    }
  }
  const allowHalfOpen = opts.allowHalfOpen ?? true;
  // Byte streams (the copy loop's legs) read through the shared area of read-pool.ts; a
  // TLS/HTTP/2 carrier is read by Node's TLS in C++ and keeps Node's reads.
  // (new net.Socket() takes `onread` as net.connect() does; @types/node lists it for connect only.)
  const onread = allowHalfOpen ? pooledReadOption() : undefined;
  const o: net.SocketConstructorOpts & { onread?: net.OnReadOpts } = fd >= 0 ? { fd, allowHalfOpen } : { allowHalfOpen };
  if (onread) o.onread = onread;
  return new net.Socket(o);
}

/** Connects and resolves once established; rejects with a ZtError. */
export function connectTcp(ip: string, port: number, opts: TcpConnectOptions): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = createUpstreamSocket(ip, opts);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new ZtError(opts.timeoutCode ?? 'ZT_ERR_CONNECT_TIMEOUT', `connect to ${formatHostPort(ip, port)} timed out after ${opts.timeoutMs}ms`));
    }, opts.timeoutMs);
    const onError = (err: Error): void => {
      clearTimeout(timer);
      sock.destroy();
      reject(new ZtError('ZT_ERR_CONNECT_FAILED', `connect to ${formatHostPort(ip, port)} failed: ${err.message}`, { cause: err }));
    };
    sock.once('error', onError);
    sock.connect({ host: ip, port }, () => {
      clearTimeout(timer);
      // Set here: socket.connect() ignores the keepAlive/noDelay options of net.connect().
      sock.setNoDelay(true);
      sock.setKeepAlive(true, KEEPALIVE_IDLE_MS);
      sock.removeListener('error', onError);
      resolve(sock);
    });
  });
}

/**
 * Liveness options for a connected HBONE carrier socket: TCP_NODELAY, TCP keepalive after
 * KEEPALIVE_IDLE_MS idle, and TCP_USER_TIMEOUT = userTimeoutMs (0 leaves the kernel default).
 * TCP_USER_TIMEOUT is best effort: a failure is reported to onError and the socket is used as is.
 */
export function setCarrierLiveness(sock: net.Socket, userTimeoutMs: number, onError?: (err: unknown) => void): void {
  sock.setNoDelay(true);
  sock.setKeepAlive(true, KEEPALIVE_IDLE_MS);
  if (userTimeoutMs <= 0) return;
  const fd = socketFd(sock);
  if (fd < 0) return;
  try {
    setTcpUserTimeout(fd, userTimeoutMs);
  } catch (err) {
    onError?.(err);
  }
}
