// Zero-copy relaying of a TCP ↔ TCP connection: the sockets' fds are duplicated and handed
// to the splice worker (splice-worker.ts), which moves the bytes in the kernel; the Node
// sockets are destroyed at once. Same contract as copyBidirectional (copy.ts): half-close
// each way, a reset on one side becomes an RST on the other, exact byte counts per
// direction, resolves when both directions are done, never rejects.
// Hand-over rules: bytes the caller queued for writing are flushed first; bytes Node had
// already read (e.g. right behind a SOCKS5 handshake) are taken from the readable buffer
// and sent ahead of the spliced stream, so callers may pass sockets in any read state.
// Must never: send anything on a socket while handing it over (destroying a Node socket
// only closes Node's fd; the duplicate keeps the connection open), or leave a connection
// in the worker after it reported done. When splicing is impossible (not Linux, a socket
// without an fd, worker failure) it falls back to copyBidirectional.
// Caveat for callers: the Node sockets emit 'close' at the hand-over, not when the
// connection ends; completion is this function's promise.
import net from 'node:net';
import tls from 'node:tls';
import { getSystemErrorName } from 'node:util';
import { Worker } from 'node:worker_threads';
import {
  closeFd,
  createEventFd,
  createPipe,
  dupCloexec,
  resetAndCloseFd,
  signalEventFd,
  socketFd,
} from '../../native-shims/index.js';
import type { ByteCounters } from '../record/types.js';
import { type CopyOutcome, copyBidirectional, resetSocket, socketSide } from './copy.js';
import type { SpliceDone, SpliceReport, SpliceRequest, SpliceWorkerData } from './splice-worker.js';

export interface SpliceOptions {
  /** Aborting resets both sides (as CopySide.reset() on both does for copyBidirectional). */
  signal?: AbortSignal;
}

/** Counter slots per shared chunk; a chunk is 2 Float64 per connection. */
const SLOTS_PER_CHUNK = 1024;
const COUNTER_REFRESH_MS = 1000;

interface Pending {
  fds: [number, number];
  counters: ByteCounters;
  chunk: Float64Array;
  offset: number;
  resolve: (outcome: CopyOutcome) => void;
}

/** The worker, its wake-up eventfd, and the connections it runs. One per process. */
class SpliceEngine {
  private readonly worker: Worker;
  private readonly eventFd: number;
  private readonly pending = new Map<number, Pending>();
  private readonly chunks: Float64Array[] = [];
  private readonly freeSlots: number[] = [];
  private nextSlot = 0;
  private timer: NodeJS.Timeout | undefined = undefined;
  private exited = false;
  private stopping = false;
  private started = false;
  /** true once the worker runs its loop; false if it died before (e.g. failed to load). */
  readonly ready: Promise<boolean>;
  readonly exitedPromise: Promise<void>;
  private readonly onProcessExit = (): void => this.wake();

  constructor() {
    this.eventFd = createEventFd();
    const data: SpliceWorkerData = { eventFd: this.eventFd };
    this.worker = new Worker(workerUrl(), { workerData: data });
    this.worker.unref();
    let onReady: (ok: boolean) => void = () => undefined;
    this.ready = new Promise((resolve) => (onReady = resolve));
    this.worker.on('message', (m: SpliceReport) => {
      if (m.type === 'done') this.onDone(m);
      else {
        this.started = true;
        onReady(true);
      }
    });
    // A worker that dies reports every connection it had adopted (its `finally`), and those
    // messages arrive before 'exit': what is still pending then was never adopted (e.g. the
    // worker failed to load), so its fds are still ours to reset and close.
    this.worker.on('error', () => undefined);
    this.exitedPromise = new Promise((resolve) => {
      this.worker.once('exit', () => {
        this.exited = true;
        onReady(false);
        if (engine === this) engine = undefined;
        process.removeListener('exit', this.onProcessExit);
        for (const [slot, p] of this.pending) {
          for (const fd of p.fds) resetAndCloseFd(fd);
          this.settle(slot, p, new Error('splice worker exited'));
        }
        this.stopTimer();
        try {
          closeFd(this.eventFd);
        } catch {
          /* already closed */
        }
        resolve();
      });
    });
    // At process exit Node joins worker threads: get this one out of epoll_wait at once.
    process.on('exit', this.onProcessExit);
  }

  get isExited(): boolean {
    return this.exited;
  }

  get isReady(): boolean {
    return this.started && !this.exited;
  }

  add(fds: [number, number], prefixes: [Buffer | null, Buffer | null], counters: ByteCounters, signal: AbortSignal | undefined): Promise<CopyOutcome> {
    const slot = this.freeSlots.pop() ?? this.nextSlot++;
    const chunkIndex = Math.floor(slot / SLOTS_PER_CHUNK);
    let chunk = this.chunks[chunkIndex];
    if (!chunk) {
      chunk = new Float64Array(new SharedArrayBuffer(SLOTS_PER_CHUNK * 2 * Float64Array.BYTES_PER_ELEMENT));
      this.chunks[chunkIndex] = chunk;
    }
    const offset = (slot % SLOTS_PER_CHUNK) * 2;
    chunk[offset] = 0;
    chunk[offset + 1] = 0;
    return new Promise((resolve) => {
      const onAbort = (): void => this.send({ type: 'abort', slot });
      this.pending.set(slot, {
        fds,
        counters,
        chunk,
        offset,
        resolve: (outcome) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(outcome);
        },
      });
      if (this.pending.size === 1) {
        this.worker.ref();
        this.startTimer();
      }
      this.send({ type: 'add', slot, fds, prefixes, counters: chunk, offset });
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  stop(): Promise<void> {
    if (!this.exited) {
      // Keep the loop alive until the worker has closed its fds and gone.
      this.stopping = true;
      this.worker.ref();
      this.send({ type: 'stop' });
    }
    return this.exitedPromise;
  }

  private send(req: SpliceRequest): void {
    if (this.exited) return;
    this.worker.postMessage(req);
    this.wake();
  }

  private wake(): void {
    if (!this.exited) signalEventFd(this.eventFd);
  }

  private onDone(m: SpliceDone): void {
    const p = this.pending.get(m.slot);
    if (!p) return;
    p.chunk[p.offset] = m.clientToServer;
    p.chunk[p.offset + 1] = m.serverToClient;
    this.settle(m.slot, p, buildDoneError(m));
    this.freeSlots.push(m.slot);
  }

  private settle(slot: number, p: Pending, error: Error | undefined): void {
    this.pending.delete(slot);
    readCounters(p);
    if (this.pending.size === 0) {
      this.stopTimer();
      if (!this.stopping) this.worker.unref();
    }
    p.resolve({ error });
  }

  private startTimer(): void {
    this.timer = setInterval(() => {
      for (const p of this.pending.values()) readCounters(p);
    }, COUNTER_REFRESH_MS);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

let engine: SpliceEngine | undefined;
let available: boolean | undefined;

function workerUrl(): URL {
  // Run from source (tests, ts loader) the sibling is .ts; built, it is .js.
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`./splice-worker${ext}`, import.meta.url);
}

function readCounters(p: Pending): void {
  p.counters.clientToServer = p.chunk[p.offset] ?? 0;
  p.counters.serverToClient = p.chunk[p.offset + 1] ?? 0;
}

/** Like Node's own socket errors ('read ECONNRESET'), so logs read the same either way. */
function buildDoneError(m: SpliceDone): Error | undefined {
  if (m.reason === 'ok') return undefined;
  if (m.reason === 'abort') return new Error('connection aborted');
  if (m.reason === 'stop') return new Error('splice worker stopped');
  // getSystemErrorName throws on 0 / positive numbers: never let a bad errno crash a handler.
  const code = m.errno > 0 ? getSystemErrorName(-m.errno) : 'ECONNABORTED';
  const err = new Error(`${m.failedOp ?? 'read'} ${code}`) as NodeJS.ErrnoException;
  err.code = code;
  err.errno = -m.errno;
  err.syscall = m.failedOp ?? 'read';
  return err;
}

/** Linux with the FFI working (probed once: a pipe can be made). */
export function spliceAvailable(): boolean {
  if (available === undefined) {
    available = false;
    if (process.platform === 'linux') {
      try {
        const [r, w] = createPipe();
        closeFd(r);
        closeFd(w);
        available = true;
      } catch {
        available = false;
      }
    }
  }
  return available;
}

/**
 * Starts the worker now rather than at the first connection (which would otherwise wait
 * for it); false when it cannot run here, and then spliceAvailable() turns false too.
 */
export async function startSpliceWorker(): Promise<boolean> {
  if (!spliceAvailable()) return false;
  try {
    const ok = await getEngine().ready;
    if (!ok) available = false;
    return ok;
  } catch {
    available = false;
    return false;
  }
}

/** Stops the worker (connections still running are reset); the next splice starts a new one. */
export async function stopSpliceWorker(): Promise<void> {
  const e = engine;
  engine = undefined;
  if (e) await e.stop();
}

function getEngine(): SpliceEngine {
  if (!engine || engine.isExited) engine = new SpliceEngine();
  return engine;
}


function copyFallback(client: net.Socket, server: net.Socket, counters: ByteCounters, signal: AbortSignal | undefined): Promise<CopyOutcome> {
  if (client.destroyed || server.destroyed || signal?.aborted) {
    // Gone (or aborted) while we waited: copyBidirectional would wait for a 'close' that
    // already fired, and an 'abort' listener added now would never run.
    resetSocket(client);
    resetSocket(server);
    return Promise.resolve({ error: new Error(signal?.aborted ? 'connection aborted' : 'connection closed before the relay started') });
  }
  const onAbort = (): void => {
    resetSocket(client);
    resetSocket(server);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  // The wait for the worker may have paused both sockets; a paused stream does not start
  // flowing again just because the copy loop adds its 'data' listeners.
  const copying = copyBidirectional(socketSide(client), socketSide(server), counters);
  client.resume();
  server.resume();
  return copying.then((outcome) => {
    signal?.removeEventListener('abort', onAbort);
    return outcome;
  });
}

/** A plain TCP socket Node could give up now. A TLSSocket is a net.Socket too, but its bytes are not the wire's. */
function canHandOver(sock: net.Socket): boolean {
  return sock instanceof net.Socket && !(sock instanceof tls.TLSSocket) && !sock.destroyed && !sock.connecting && !sock.writableEnded && socketFd(sock) >= 0;
}

/** Resolves once everything written so far left Node (a write callback runs after all earlier ones). */
function flushWrites(sock: net.Socket): Promise<void> {
  if (sock.writableLength === 0 || sock.destroyed) return Promise.resolve();
  return new Promise((resolve) => sock.write(Buffer.alloc(0), () => resolve()));
}

/** Empties Node's readable buffer without letting any other listener see those bytes. */
function takeBuffered(sock: net.Socket): Buffer | null {
  sock.removeAllListeners('data');
  sock.removeAllListeners('readable');
  sock.pause();
  const chunks: Buffer[] = [];
  for (let c = sock.read() as Buffer | null; c !== null; c = sock.read() as Buffer | null) chunks.push(c);
  return chunks.length === 0 ? null : Buffer.concat(chunks);
}

/**
 * Relays client ↔ server in the kernel. Both must be connected net.Sockets created with
 * allowHalfOpen (as every TCP leg of the proxy is). They are destroyed at the hand-over.
 */
export async function spliceBidirectional(
  client: net.Socket,
  server: net.Socket,
  counters: ByteCounters,
  opts: SpliceOptions = {},
): Promise<CopyOutcome> {
  const { signal } = opts;
  if (!spliceAvailable() || !canHandOver(client) || !canHandOver(server)) {
    return copyFallback(client, server, counters, signal);
  }
  let e: SpliceEngine;
  try {
    e = getEngine();
  } catch {
    available = false;
    return copyFallback(client, server, counters, signal);
  }
  if (!e.isReady || client.writableLength > 0 || server.writableLength > 0) {
    // Rare waits: the worker's first start, a SOCKS5 reply still leaving. Node keeps what
    // it reads meanwhile in the (paused) readable buffers, which go ahead below.
    client.pause();
    server.pause();
    const [ok] = await Promise.all([e.ready, flushWrites(client), flushWrites(server)]);
    if (!ok) available = false;
    if (!ok || !e.isReady || !canHandOver(client) || !canHandOver(server)) return copyFallback(client, server, counters, signal);
  }
  if (signal?.aborted) return copyFallback(client, server, counters, signal);
  // From here to the post to the worker everything is synchronous: Node reads nothing more.
  let dupClient: number;
  let dupServer: number;
  try {
    dupClient = dupCloexec(socketFd(client));
  } catch {
    return copyFallback(client, server, counters, signal);
  }
  try {
    dupServer = dupCloexec(socketFd(server));
  } catch {
    closeFd(dupClient);
    return copyFallback(client, server, counters, signal);
  }
  const prefixes: [Buffer | null, Buffer | null] = [takeBuffered(client), takeBuffered(server)];
  for (const sock of [client, server]) {
    // Later events (e.g. an 'error' from a handle being torn down) must not throw.
    sock.on('error', () => undefined);
    sock.destroy();
  }
  return e.add([dupClient, dupServer], prefixes, counters, signal);
}
