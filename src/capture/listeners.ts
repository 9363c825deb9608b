// The capture listeners: 15001 (outbound), 15006 (plaintext inbound) and 15008 (HBONE
// inbound), created through native-shims with IP_TRANSPARENT so that TPROXY can hand
// them connections for any address, and the original destination of each accepted
// socket (SO_ORIGINAL_DST after REDIRECT, else the local address TPROXY preserved).
// ENABLE_ORIG_SRC: true = transparent required (failure is fatal), false = never,
// unset = best effort.
import net from 'node:net';
import { createListenerFdBestEffort, getOriginalDst, socketFd } from '../../native-shims/index.js';
import { ZtError } from '../errors.js';
import { KEEPALIVE_IDLE_MS } from '../config/env.js';
import { canonicalIp } from '../util/ip.js';

export interface CaptureListener {
  server: net.Server;
  port: number;
  transparent: boolean;
}

export interface ListenOptions {
  host: string;
  port: number;
  transparent: boolean | undefined;
  mark?: number | undefined;
  /** Byte-stream listeners need half-close (default true); the TLS/HTTP/2 listener must not have it. */
  allowHalfOpen?: boolean;
  /** Accept queue length; default CAPTURE_BACKLOG. */
  backlog?: number;
  /** SO_REUSEPORT: one listener per data-path thread on the same port (the kernel spreads connections). */
  reusePort?: boolean;
  onConnection: (socket: net.Socket) => void;
}

/**
 * Accept queue of the capture listeners. One node proxy accepts the connections of every pod
 * on the node, and while its event loop is busy the kernel completes handshakes on its own:
 * once the queue is full it drops the client's final ACK or its SYN, and that client waits
 * for a retransmission (1 s, then 2 s, ...). Node's default (511) overflowed thousands of
 * times with 10,000 connections opened 256 at a time (test/netns/scale.test.ts). The kernel
 * caps this at net.core.somaxconn (4096 by default).
 */
export const CAPTURE_BACKLOG = 4096;

export function listenCapture(o: ListenOptions): Promise<CaptureListener> {
  let created: { fd: number; transparent: boolean };
  const backlog = o.backlog ?? CAPTURE_BACKLOG;
  try {
    const reusePort = o.reusePort === true;
    created = createListenerFdBestEffort(
      o.mark === undefined
        ? { host: o.host, port: o.port, transparent: o.transparent, backlog, reusePort }
        : { host: o.host, port: o.port, transparent: o.transparent, mark: o.mark, backlog, reusePort },
    );
  } catch (err) {
    return Promise.reject(new ZtError('ZT_ERR_NATIVE', `listener ${o.host}:${o.port}: ${(err as Error).message}`, { cause: err }));
  }
  // TCP keepalive on captured byte streams (not on 15008, as upstream): idle pods' connections
  // must survive middleboxes and dead peers must be noticed (user need: long-lived connections).
  const keepAlive = o.allowHalfOpen ?? true;
  const server = net.createServer(
    { allowHalfOpen: o.allowHalfOpen ?? true, noDelay: true, keepAlive, keepAliveInitialDelay: KEEPALIVE_IDLE_MS },
    o.onConnection,
  );
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    // Node calls listen(2) again on the fd, with 511 unless given a backlog (positional for a handle).
    server.listen({ fd: created.fd }, backlog, () => {
      server.removeListener('error', reject);
      server.on('error', () => undefined);
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : o.port;
      resolve({ server, port, transparent: created.transparent });
    });
  });
}

/** A plain loopback TCP listener (SOCKS5), no FFI needed. */
export function listenPlain(host: string, port: number, onConnection: (s: net.Socket) => void): Promise<CaptureListener> {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, onConnection);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.removeListener('error', reject);
      const addr = server.address();
      resolve({ server, port: typeof addr === 'object' && addr ? addr.port : port, transparent: false });
    });
  });
}

/** Where the client meant to go: SO_ORIGINAL_DST (REDIRECT), else the TPROXY'd local address. */
export function originalDestination(socket: net.Socket): { ip: string; port: number } {
  const fd = socketFd(socket);
  const orig = fd >= 0 ? getOriginalDst(fd) : undefined;
  if (orig) return { ip: canonicalIp(orig.address) ?? orig.address, port: orig.port };
  return { ip: canonicalIp(socket.localAddress ?? '') ?? '', port: socket.localPort ?? 0 };
}
