// TCP options Node does not expose, for sockets Node already owns (pass socketFd(sock)):
// TCP_USER_TIMEOUT (how long sent data may stay unacknowledged before the kernel aborts
// the connection with ETIMEDOUT, tcp(7)), and a read-back of the keepalive settings.
// Must never: close or otherwise take over the fd (Node owns it).
// Invariant: every failed syscall becomes a NativeError naming the option.

import * as libc from './libc.js';
import { NativeError } from './native-error.js';

/** netinet/tcp.h (Linux). */
const SOL_TCP = 6;
const TCP_KEEPIDLE = 4;
const TCP_USER_TIMEOUT = 18;
/** asm-generic/socket.h */
const SO_KEEPALIVE = 9;

const EINVAL = 22;

function readInt(fd: number, level: number, name: number, label: string): number {
  const buf = Buffer.alloc(4);
  const len: [number] = [4];
  if (libc.getsockopt(fd, level, name, buf, len) !== 0) {
    const errno = libc.lastErrno();
    throw new NativeError('getsockopt', errno, { target: label, reason: libc.strerror(errno) });
  }
  return buf.readUInt32LE(0);
}

/**
 * TCP_USER_TIMEOUT in milliseconds (0 = the kernel default, ~15 retransmissions ≈ 15 min).
 * With it set, unacknowledged data (and unanswered keepalive probes) older than `ms` abort
 * the connection: a peer behind a partition is noticed by the kernel itself.
 */
export function setTcpUserTimeout(fd: number, ms: number): void {
  if (!Number.isInteger(ms) || ms < 0 || ms > 0x7fffffff) {
    throw new NativeError('setsockopt', EINVAL, { target: 'TCP_USER_TIMEOUT', reason: `${ms} is not a millisecond count` });
  }
  const val = Buffer.alloc(4);
  val.writeUInt32LE(ms, 0);
  if (libc.setsockopt(fd, SOL_TCP, TCP_USER_TIMEOUT, val, 4) !== 0) {
    const errno = libc.lastErrno();
    throw new NativeError('setsockopt', errno, { target: 'TCP_USER_TIMEOUT', reason: libc.strerror(errno) });
  }
}

export interface TcpLivenessOptions {
  keepAlive: boolean;
  /** TCP_KEEPIDLE, seconds. */
  keepIdleSeconds: number;
  /** TCP_USER_TIMEOUT, milliseconds (0 = kernel default). */
  userTimeoutMs: number;
}

/** The liveness-related options of a TCP socket fd, as the kernel has them. */
export function readTcpLivenessOptions(fd: number): TcpLivenessOptions {
  return {
    keepAlive: readInt(fd, libc.SOL_SOCKET, SO_KEEPALIVE, 'SO_KEEPALIVE') !== 0,
    keepIdleSeconds: readInt(fd, SOL_TCP, TCP_KEEPIDLE, 'TCP_KEEPIDLE'),
    userTimeoutMs: readInt(fd, SOL_TCP, TCP_USER_TIMEOUT, 'TCP_USER_TIMEOUT'),
  };
}
