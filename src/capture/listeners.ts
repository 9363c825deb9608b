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
  onConnection: (socket: net.Socket) => void;
}

export function listenCapture(o: ListenOptions): Promise<CaptureListener> {
  let created: { fd: number; transparent: boolean };
  try {
    created = createListenerFdBestEffort(
      o.mark === undefined
        ? { host: o.host, port: o.port, transparent: o.transparent }
        : { host: o.host, port: o.port, transparent: o.transparent, mark: o.mark },
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
    server.listen({ fd: created.fd }, () => {
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
