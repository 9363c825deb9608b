// The pipe loop: copies bytes both ways between the downstream and upstream sides of one
// connection with backpressure, counting bytes with one integer add per chunk.
// Invariants (as upstream ztunnel's copy.rs, https://github.com/istio/ztunnel/blob/master/src/copy.rs):
// - half-close: EOF one way ends the other side's write side only; the reverse
//   direction keeps flowing until it sees its own EOF;
// - a peer's reset becomes a reset on the other side (TCP RST, or an RST_STREAM with an
//   error code on an HTTP/2 CONNECT stream), never a clean FIN;
// - nothing is allocated, logged or labelled per chunk.
import net from 'node:net';
import type { Duplex, Writable } from 'node:stream';
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
 * A class, not an object of closures: an idle connection holds one small object per side.
 */
class SocketSide implements CopySide {
  constructor(readonly stream: net.Socket) {}
  reset(): void {
    resetSocket(this.stream);
  }
  resetErrno(): number {
    const fd = socketFd(this.stream);
    return fd >= 0 ? getSocketError(fd) : 0;
  }
}

export function socketSide(sock: net.Socket): CopySide {
  return new SocketSide(sock);
}

export interface CopyOutcome {
  /** The first error seen on either side (a peer reset included). */
  error: Error | undefined;
}

type Direction = 'clientToServer' | 'serverToClient';

/**
 * One direction of a copy. Its listeners are module-level functions (`this` is the emitter)
 * that find their Pump on the stream, so a connection holds two small objects instead of a
 * closure and a once-wrapper per listener.
 */
class Pump {
  ended = false;
  errored = false;
  readonly coalesce: boolean;
  constructor(
    readonly src: CopySide,
    readonly dst: CopySide,
    readonly counters: ByteCounters,
    readonly dir: Direction,
    readonly copy: Copy,
  ) {
    this.coalesce = dst.stream instanceof net.Socket;
  }
}

/** Both directions of one connection, and its outcome. */
class Copy {
  closed = 0;
  error: Error | undefined = undefined;
  c2s!: Pump;
  s2c!: Pump;
  constructor(readonly resolve: (o: CopyOutcome) => void) {}
  fail(err: Error): void {
    if (!this.error) this.error = err;
  }
}

/** The one property the copy puts on each of its two streams. */
const kCopy = Symbol('copy: the connection of this stream');
type Pumped = Duplex & { [kCopy]?: Copy };
const copyOf = (s: Duplex): Copy => (s as Pumped)[kCopy]!;
/** The pump reading from this stream. */
const outOf = (s: Duplex): Pump => {
  const c = copyOf(s);
  return c.c2s.src.stream === s ? c.c2s : c.s2c;
};
/** The pump writing into this stream. */
const inOf = (s: Duplex): Pump => {
  const c = copyOf(s);
  return c.c2s.src.stream === s ? c.s2c : c.c2s;
};

export function copyBidirectional(client: CopySide, server: CopySide, counters: ByteCounters): Promise<CopyOutcome> {
  return new Promise((resolve) => {
    const copy = new Copy(resolve);
    copy.c2s = new Pump(client, server, counters, 'clientToServer', copy);
    copy.s2c = new Pump(server, client, counters, 'serverToClient', copy);
    for (const s of [client.stream, server.stream] as Pumped[]) {
      s[kCopy] = copy;
      // 'close' and 'end' come once per stream, and a second 'error' is harmless here: `on`
      // saves the wrapper `once` allocates per listener.
      s.on('data', onData);
      s.on('drain', onDrain);
      s.on('end', onEnd);
      s.on('error', onError);
      s.on('close', onClose);
    }
  });
}

/** One 'close' listener per stream: for the pump reading from it, the one writing into it, and the outcome. */
function onClose(this: Duplex): void {
  const copy = copyOf(this);
  // As before the merge: the client's own direction first, then the reverse one.
  if (copy.c2s.src.stream === this) {
    srcClosed(copy.c2s);
    dstClosed(copy.s2c);
  } else {
    dstClosed(copy.c2s);
    srcClosed(copy.s2c);
  }
  copy.closed += 1;
  if (copy.closed === 2) copy.resolve({ error: copy.error });
}

/**
 * Bytes a destination may hold queued (in its Writable buffer, plus the write in flight)
 * before its source is paused. Larger than Node's 16 KiB default on purpose: an HTTP/2
 * stream reports "full" after every 64 KiB socket read, and pausing and resuming the source
 * socket per chunk (readStop/readStart) cost more than the copy itself. Per direction, so an
 * upper bound of memory queued in user space per connection is about 2 × (this + one chunk).
 */
export const PAUSE_AT_BYTES = 256 * 1024;

/**
 * Chunks at least this large into a TCP socket are coalesced until the check phase of this
 * loop turn (cork now, uncork in one shared setImmediate): an HTTP/2 stream delivers bulk data
 * in TLS-record-sized pieces (≤ 16 KiB), and one writev of all that arrived in one read costs
 * one syscall and one wake-up of the receiver instead of one per record. Smaller chunks
 * (request/response traffic) are written at once, unless a batch is open anyway.
 */
export const COALESCE_MIN_BYTES = 8 * 1024;

const corked: Writable[] = [];
let flushScheduled = false;

function flushCorked(): void {
  flushScheduled = false;
  // Only those corked before this flush: one corked meanwhile has its own flush scheduled.
  const n = corked.length;
  for (let i = 0; i < n; i++) corked[i]!.uncork();
  corked.splice(0, n);
}

function corkUntilCheck(to: Writable): void {
  to.cork();
  corked.push(to);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flushCorked);
  }
}

/**
 * A chunk read into a pooled buffer (src/tunnel/read-pool.ts: the sockets we create) carries
 * the pool's release function on its ArrayBuffer under this registered symbol: the buffer
 * goes back to the pool once the write of the chunk completed (its bytes then are in the
 * kernel, or in nghttp2's/TLS's own buffers), instead of a new backing store per read.
 */
const kPooledRelease = Symbol.for('ztunnel-ts.pooled-read.release');
type MaybePooled = ArrayBufferLike & { [kPooledRelease]?: (chunk: Buffer) => void };

function writeChunk(to: Writable, chunk: Buffer): boolean {
  const release = (chunk.buffer as MaybePooled)[kPooledRelease];
  if (release === undefined) return to.write(chunk);
  return to.write(chunk, () => release(chunk));
}

function onData(this: Duplex, chunk: Buffer): void {
  const p = outOf(this);
  const to = p.dst.stream;
  if (to.destroyed) {
    // Nobody left to take these bytes (and no 'drain' would ever come): reset this side.
    p.src.reset();
    return;
  }
  p.counters[p.dir] += chunk.length;
  if (p.coalesce && chunk.length >= COALESCE_MIN_BYTES && to.writableCorked === 0 && !to.writableEnded) corkUntilCheck(to);
  // write() said "full": 'drain' will come once its buffer is empty; pause only past our own mark.
  if (!writeChunk(to, chunk) && to.writableLength >= PAUSE_AT_BYTES) this.pause();
}

function onDrain(this: Duplex): void {
  const from = inOf(this).src.stream;
  if (from.isPaused()) from.resume();
}

/** The destination is gone for good while the source may still have bytes to send. */
function dstClosed(p: Pump): void {
  if (!p.ended && !p.src.stream.destroyed) p.src.reset();
}

function onEnd(this: Duplex): void {
  const p = outOf(this);
  if (p.ended) return;
  p.ended = true;
  const to = p.dst.stream;
  const errno = p.src.resetErrno?.() ?? 0;
  if (errno > 0) {
    p.errored = true;
    const code = getSystemErrorName(-errno);
    p.copy.fail(Object.assign(new Error(`read ${code}`), { code }));
    if (!to.destroyed) p.dst.reset();
    return;
  }
  // Wait one turn: if an error follows the EOF at once, the reset wins over a clean FIN.
  setImmediate(endLater, p);
}

function endLater(p: Pump): void {
  const to = p.dst.stream;
  if (!p.errored && !to.destroyed && !to.writableEnded) to.end();
}

function onError(this: Duplex, err: Error): void {
  const p = outOf(this);
  if (p.errored) return;
  p.errored = true;
  p.copy.fail(err);
  if (!p.dst.stream.destroyed) p.dst.reset();
}

function srcClosed(p: Pump): void {
  if (p.ended) return;
  const to = p.dst.stream;
  // Closed without EOF: a clean stream end (e.g. RST_STREAM NO_ERROR/CANCEL) counts as EOF,
  // anything else is propagated as a reset.
  if (p.src.closedCleanly?.()) {
    if (!to.destroyed && !to.writableEnded) to.end();
  } else if (!to.destroyed) {
    p.dst.reset();
  }
}
