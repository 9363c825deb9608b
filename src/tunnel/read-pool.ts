// Reads without a fresh ArrayBuffer per read, for the byte-stream sockets we create
// (tcp-connect.ts). By default Node allocates a new 64 KiB backing store for every socket
// read; V8 counts each one as external memory, and the external bytes allocated since the
// last mark-compact count against the old generation's limit, so a bulk transfer starts a
// full GC every ~20–30 MB read (bench/RESULTS.md §8).
//
// Here every such socket reads into one shared area (net.Socket's `onread` option); the
// callback runs synchronously after each read, so the bytes are copied out at once into a
// buffer taken from a small free list (large reads) or from Node's allocator (small reads,
// whose buffer is pooled by Node anyway), and pushed into the socket's readable side as
// usual: 'data', pause/resume, EOF and errors behave exactly as without the option.
// A consumer that knows when a chunk is no longer referenced (the copy loop, once the write
// of it completed) hands it back with the function stored on the chunk's ArrayBuffer under
// POOLED_READ_RELEASE (only a whole chunk, once, goes back); a chunk never handed back is
// simply collected. An idle socket holds no buffer of its own (the area is shared, and
// module state is per thread, so each worker thread has its own area and free list).
import type net from 'node:net';

/** The size of one read (Node's own default read size). */
export const READ_SIZE = 64 * 1024;
/** Reads smaller than this are copied into a plain Buffer (Node pools those under 4 KiB). */
export const POOL_MIN_BYTES = 8 * 1024;
/** Free buffers kept per thread: 32 × 64 KiB = 2 MiB at most. */
export const POOL_MAX_FREE = 32;

/**
 * Registered (Symbol.for) so that src/copy/ can hand a chunk back without importing this
 * module (the layering keeps copy/ below tunnel/): `chunk.buffer[POOLED_READ_RELEASE]?.(chunk)`.
 */
export const POOLED_READ_RELEASE: unique symbol = Symbol.for('ztunnel-ts.pooled-read.release') as never;

type Pooled = ArrayBufferLike & { [POOLED_READ_RELEASE]?: (chunk: Uint8Array) => void };

const area = Buffer.allocUnsafeSlow(READ_SIZE);
const free: Buffer[] = [];
/** Pooled buffers handed out, with the length of the chunk pushed from each. */
const inUse = new WeakMap<ArrayBufferLike, number>();
let created = 0;

function release(chunk: Uint8Array): void {
  // Only the whole chunk this pool pushed, and only once: a part of it (a consumer that read
  // fewer bytes, the rest still queued elsewhere) or a second release would hand out a
  // buffer still in use. Anything else is left to the GC.
  const ab = chunk.buffer;
  if (chunk.byteOffset !== 0 || inUse.get(ab) !== chunk.length) return;
  inUse.delete(ab);
  if (free.length < POOL_MAX_FREE) free.push(Buffer.from(ab, 0, READ_SIZE));
}

function take(): Buffer {
  let b = free.pop();
  if (!b) {
    b = Buffer.allocUnsafeSlow(READ_SIZE);
    (b.buffer as Pooled)[POOLED_READ_RELEASE] = release;
    created += 1;
  }
  return b;
}

/** The `onread` callback: `this` is the socket (Node calls it as a method of the stream). */
function onPooledRead(this: net.Socket, nread: number, buf: Uint8Array): boolean {
  let chunk: Buffer;
  if (nread < POOL_MIN_BYTES) {
    chunk = Buffer.allocUnsafe(nread);
    chunk.set(buf.subarray(0, nread));
  } else {
    const b = take();
    b.set(buf.subarray(0, nread));
    chunk = b.subarray(0, nread);
    inUse.set(b.buffer, nread);
  }
  // false: the readable side is full; Node stops reading until it is read from again.
  return this.push(chunk);
}

/** The `onread` option for a byte-stream socket. */
export function pooledReadOption(): net.OnReadOpts {
  return { buffer: area, callback: onPooledRead };
}

/** For tests: buffers created so far and buffers free now. */
export function readPoolStats(): { created: number; free: number } {
  return { created, free: free.length };
}
