// The pipe loop: copies bytes both ways between the downstream and upstream sides of one
// connection with backpressure, counting bytes with one integer add per chunk.
// Invariants (as upstream ztunnel's copy.rs, https://github.com/istio/ztunnel/blob/master/src/copy.rs):
// - half-close: EOF one way ends the other side's write side only; the reverse
//   direction keeps flowing until it sees its own EOF;
// - a peer's reset becomes a reset on the other side (TCP RST, or an RST_STREAM with an
//   error code on an HTTP/2 CONNECT stream), never a clean FIN;
// - nothing is allocated, logged or labelled per chunk.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { getSystemErrorName } from 'node:util';
import { getSocketError, setLingerZero, socketFd } from '../../native-shims/index.js';
import type { ByteCounters } from '../record/types.js';

/** One end of a proxied connection: the stream and how to abort it with a reset. */
export interface CopySide {
  stream: Duplex;
  /** Abort with a reset (TCP RST / RST_STREAM with an error code). */
  reset(): void;
  /** Did this side end without an error-class reset? Called on 'close' without 'end'. */
  closedCleanly?(): boolean;
  /** Called on 'end': the pending socket error, when the "EOF" was really a peer's reset. */
  resetErrno?(): number;
}

/**
 * Close with a TCP RST. Node's resetAndDestroy() fails (EINVAL, fd kept open) once end()
 * was called, which is exactly the half-closed case, so use SO_LINGER {1, 0} + destroy().
 */
export function resetSocket(sock: net.Socket): void {
  if (sock.destroyed) return;
  const fd = socketFd(sock);
  if (fd >= 0) {
    try {
      setLingerZero(fd);
    } catch {
      /* the fd is going away anyway */
    }
  }
  sock.destroy();
}

/**
 * A TCP socket as one side of a copy. Linux reports a peer's RST as a plain EOF when it
 * lands behind data already read (recv returns 0, the error stays in SO_ERROR; ~80 % of
 * resets under load): so an 'end' is checked against SO_ERROR before it becomes a FIN.
 */
export function socketSide(sock: net.Socket): CopySide {
  return {
    stream: sock,
    reset: () => resetSocket(sock),
    resetErrno: () => {
      const fd = socketFd(sock);
      return fd >= 0 ? getSocketError(fd) : 0;
    },
  };
}

export interface CopyOutcome {
  /** The first error seen on either side (a peer reset included). */
  error: Error | undefined;
}

type Direction = 'clientToServer' | 'serverToClient';

export function copyBidirectional(client: CopySide, server: CopySide, counters: ByteCounters): Promise<CopyOutcome> {
  return new Promise((resolve) => {
    let closed = 0;
    let error: Error | undefined;
    const onClosed = (): void => {
      closed += 1;
      if (closed === 2) resolve({ error });
    };
    const fail = (err: Error): void => {
      if (!error) error = err;
    };
    pump(client, server, counters, 'clientToServer', fail);
    pump(server, client, counters, 'serverToClient', fail);
    client.stream.once('close', onClosed);
    server.stream.once('close', onClosed);
  });
}

function pump(src: CopySide, dst: CopySide, counters: ByteCounters, dir: Direction, fail: (e: Error) => void): void {
  const from = src.stream;
  const to = dst.stream;
  let ended = false;
  let errored = false;
  const onDrain = (): void => {
    from.resume();
  };
  from.on('data', (chunk: Buffer) => {
    if (to.destroyed) {
      // Nobody left to take these bytes (and no 'drain' would ever come): reset this side.
      src.reset();
      return;
    }
    counters[dir] += chunk.length;
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', onDrain);
  to.once('close', () => {
    // The other side is gone for good while this one still has bytes to send.
    if (!ended && !from.destroyed) src.reset();
  });
  from.once('end', () => {
    ended = true;
    const errno = src.resetErrno?.() ?? 0;
    if (errno > 0) {
      errored = true;
      const code = getSystemErrorName(-errno);
      fail(Object.assign(new Error(`read ${code}`), { code }));
      if (!to.destroyed) dst.reset();
      return;
    }
    // Wait one turn: if an error follows the EOF at once, the reset wins over a clean FIN.
    setImmediate(() => {
      if (!errored && !to.destroyed && !to.writableEnded) to.end();
    });
  });
  from.once('error', (err: Error) => {
    errored = true;
    fail(err);
    if (!to.destroyed) dst.reset();
  });
  from.once('close', () => {
    if (ended) return;
    // Closed without EOF: a clean stream end (e.g. RST_STREAM NO_ERROR/CANCEL) counts as EOF,
    // anything else is propagated as a reset.
    if (src.closedCleanly?.()) {
      if (!to.destroyed && !to.writableEnded) to.end();
    } else if (!to.destroyed) {
      dst.reset();
    }
  });
}
