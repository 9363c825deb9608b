// The splice worker: one worker_threads Worker per process that relays every spliced
// connection in the kernel (socket → pipe → socket, splice(2)), driven by one epoll set.
// Started by splice-copy.ts, which hands it duplicated socket fds; from then on this thread
// owns those fds and closes each exactly once.
// Semantics mirror copy.ts: EOF one way → shutdown(SHUT_WR) on the other socket only, the
// reverse keeps flowing; an error on either socket (a peer reset included) → both sockets
// closed with SO_LINGER {1,0}, i.e. an RST; done when both directions saw EOF and drained.
// Must never: block longer than one epoll_wait timeout (the main thread's stop message and
// process exit must get through: an eventfd wakes us), touch an fd after closing it, or
// allocate per splice call. Byte counts go to shared memory (no message per chunk).
// Edge-triggered epoll: every event for a connection pumps both directions until neither
// side makes progress, so no readiness is ever left unconsumed.
import { type MessagePort, parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import {
  EAGAIN,
  EPOLLERR,
  EPOLLET,
  EPOLLIN,
  EPOLLOUT,
  EPOLLPRI,
  EPOLLRDHUP,
  buildEpollEventBuffer,
  closeFd,
  createPipe,
  drainEventFd,
  epollAdd,
  epollCreate,
  epollDel,
  epollEventMask,
  epollEventToken,
  epollWait,
  getSocketError,
  recvFd,
  resetAndCloseFd,
  setLingerZero,
  setPipeSize,
  shutdownWrite,
  spliceMove,
  writeFd,
} from '../../native-shims/index.js';

/** Main thread → worker. Read synchronously with receiveMessageOnPort after an eventfd wake-up. */
export type SpliceRequest =
  | {
      type: 'add';
      slot: number;
      /** [client, server]: duplicated fds, now owned by the worker. */
      fds: [number, number];
      /** Bytes Node had already read from client (→ server) and from server (→ client). */
      prefixes: [Uint8Array | null, Uint8Array | null];
      /** Shared byte counters: [offset] client → server, [offset + 1] server → client. */
      counters: Float64Array;
      offset: number;
    }
  | { type: 'abort'; slot: number }
  | { type: 'stop' };

/** Worker → main thread: 'ready' once the epoll set is up, then one 'done' per connection. */
export type SpliceReport = { type: 'ready' } | SpliceDone;

export interface SpliceDone {
  type: 'done';
  slot: number;
  clientToServer: number;
  serverToClient: number;
  /** 0 = both directions ended cleanly. */
  errno: number;
  /** Which socket failed, and on which operation (for a Node-like 'read ECONNRESET' message). */
  failedSide: 'client' | 'server' | undefined;
  failedOp: 'read' | 'write' | undefined;
  reason: 'ok' | 'error' | 'abort' | 'stop';
}

export interface SpliceWorkerData {
  eventFd: number;
}

const SMALL_PIPE_BYTES = 64 * 1024;
const BULK_PIPE_BYTES = 1024 * 1024;
/** A direction that has moved this much is a bulk flow: its pipe grows to BULK_PIPE_BYTES. */
const GROW_AFTER_BYTES = 512 * 1024;
/**
 * Grown pipes at once: an unprivileged user's pipe-user-pages-soft (16384 pages) is 64 MiB,
 * and past it every new pipe is cut to one page. Keep well under it.
 */
const GROWN_PIPE_LIMIT = 48;
const POOL_LIMIT = 64;
const MAX_EVENTS = 256;
const WAIT_TIMEOUT_MS = 1000;
const WAKE_TOKEN = 0xffffffff;
const SOCKET_EVENTS = (EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET) >>> 0;
/** Scratch for the rare recv(2) path (urgent data); its bytes are copied out at once. */
const URGENT_BUF = Buffer.alloc(64 * 1024);
const ECONNABORTED = 103;

interface Pipe {
  r: number;
  w: number;
  capacity: number;
}

interface Direction {
  src: number;
  dst: number;
  pipe: Pipe;
  /** Bytes in the pipe, not yet written to dst. */
  queued: number;
  /** Bytes taken from src (prefix included): the byte count reported for this direction. */
  moved: number;
  prefix: Uint8Array | null;
  eof: boolean;
  finished: boolean;
  growTried: boolean;
  /**
   * TCP urgent data arrived (EPOLLPRI): splice(2) stops at the urgent mark (EAGAIN, then
   * 0 at FIN) and would silently lose the rest. Until the socket is drained, read with
   * recv(2) — which skips the out-of-band byte, as Node does — and forward as a prefix.
   */
  urgent: boolean;
}

interface Connection {
  slot: number;
  fds: [number, number];
  dirs: [Direction, Direction];
  counters: Float64Array;
  offset: number;
}

/** Why pump() stopped a connection: the failing fd and operation, with its errno. */
interface Failure {
  errno: number;
  fd: number;
  op: 'read' | 'write';
}

if (!parentPort) throw new Error('splice-worker.ts must run as a worker thread');
const port: MessagePort = parentPort;
const { eventFd } = workerData as SpliceWorkerData;

const epfd = epollCreate();
const events = buildEpollEventBuffer(MAX_EVENTS);
const conns = new Map<number, Connection>();
const pool: Pipe[] = [];
let grownPipes = 0;

function acquirePipe(): Pipe {
  const p = pool.pop();
  if (p) return p;
  const [r, w] = createPipe();
  return { r, w, capacity: SMALL_PIPE_BYTES };
}

function closePipe(p: Pipe): void {
  closeFd(p.r);
  closeFd(p.w);
}

function releasePipe(d: Direction): void {
  const p = d.pipe;
  if (p.capacity > SMALL_PIPE_BYTES) grownPipes -= 1;
  // A pipe with bytes left in it (the connection was reset) cannot be reused.
  if (d.queued > 0 || pool.length >= POOL_LIMIT) return closePipe(p);
  if (p.capacity > SMALL_PIPE_BYTES) {
    const size = setPipeSize(p.w, SMALL_PIPE_BYTES);
    if (size < 0) return closePipe(p);
    p.capacity = size;
  }
  pool.push(p);
}

function buildDirection(src: number, dst: number, prefix: Uint8Array | null): Direction {
  const bytes = prefix !== null && prefix.length > 0 ? prefix : null;
  return {
    src,
    dst,
    pipe: acquirePipe(),
    queued: 0,
    moved: bytes === null ? 0 : bytes.length,
    prefix: bytes,
    eof: false,
    finished: false,
    growTried: false,
    urgent: false,
  };
}

function maybeGrow(d: Direction): void {
  if (d.growTried || d.moved < GROW_AFTER_BYTES || grownPipes >= GROWN_PIPE_LIMIT) return;
  // Over budget or above pipe-max-size the kernel says EPERM: stay small, try no more.
  d.growTried = true;
  const size = setPipeSize(d.pipe.w, BULK_PIPE_BYTES);
  if (size > SMALL_PIPE_BYTES) {
    d.pipe.capacity = size;
    grownPipes += 1;
  }
}

/** Moves what can be moved now in one direction; a Failure when a socket errored. */
function pumpDirection(conn: Connection, index: 0 | 1): Failure | undefined {
  const d = conn.dirs[index];
  if (d.finished) return undefined;
  for (;;) {
    let progress = false;
    if (d.prefix !== null) {
      // Bytes Node read before the hand-over go first, through the same pipe.
      const n = writeFd(d.pipe.w, d.prefix);
      if (n > 0) {
        d.queued += n;
        d.prefix = n < d.prefix.length ? d.prefix.subarray(n) : null;
        progress = true;
      }
    } else if (!d.eof && d.urgent) {
      const n = recvFd(d.src, URGENT_BUF);
      if (n > 0) {
        d.prefix = Buffer.from(URGENT_BUF.subarray(0, n));
        d.moved += n;
        conn.counters[conn.offset + index] = d.moved;
        progress = true;
      } else if (n === 0) {
        d.eof = true;
      } else if (n === -EAGAIN) {
        d.urgent = false; // drained: past the mark, splice works again
      } else {
        return { errno: -n, fd: d.src, op: 'read' };
      }
    } else if (!d.eof) {
      const n = spliceMove(d.src, d.pipe.w, d.pipe.capacity);
      if (n > 0) {
        d.queued += n;
        d.moved += n;
        conn.counters[conn.offset + index] = d.moved;
        progress = true;
        maybeGrow(d);
      } else if (n === 0) {
        d.eof = true;
      } else if (n !== -EAGAIN) {
        return { errno: -n, fd: d.src, op: 'read' };
      }
      // EAGAIN: the socket is empty or the pipe is full; draining the pipe below tells which.
    }
    if (d.queued > 0) {
      const n = spliceMove(d.pipe.r, d.dst, d.queued);
      if (n > 0) {
        d.queued -= n;
        progress = true;
      } else if (n < 0 && n !== -EAGAIN) {
        return { errno: -n, fd: d.dst, op: 'write' };
      }
    }
    if (!progress) break;
  }
  if (d.eof && d.queued === 0 && d.prefix === null) {
    d.finished = true;
    // Half-close: our FIN to dst; the reverse direction keeps flowing. If dst is already
    // gone (e.g. reset, with its error event still queued), report that, not a clean close.
    if (shutdownWrite(d.dst) < 0) {
      const errno = getSocketError(d.dst);
      return { errno: errno > 0 ? errno : ECONNABORTED, fd: d.dst, op: 'write' };
    }
  }
  return undefined;
}

function pump(conn: Connection): void {
  const failure = pumpDirection(conn, 0) ?? pumpDirection(conn, 1);
  if (failure) return finish(conn, 'error', failure);
  if (conn.dirs[0].finished && conn.dirs[1].finished) finish(conn, 'ok', undefined);
}

/** Closes both sockets (with an RST unless both directions ended cleanly) and reports. */
function finish(conn: Connection, reason: SpliceDone['reason'], failure: Failure | undefined): void {
  if (conns.get(conn.slot) !== conn) return; // finished already
  conns.delete(conn.slot);
  for (const fd of conn.fds) {
    epollDel(epfd, fd);
    if (reason !== 'ok') {
      try {
        setLingerZero(fd);
      } catch {
        /* closing anyway */
      }
    }
    closeFd(fd);
  }
  releasePipe(conn.dirs[0]);
  releasePipe(conn.dirs[1]);
  const [d0, d1] = conn.dirs;
  conn.counters[conn.offset] = d0.moved;
  conn.counters[conn.offset + 1] = d1.moved;
  const done: SpliceDone = {
    type: 'done',
    slot: conn.slot,
    clientToServer: d0.moved,
    serverToClient: d1.moved,
    errno: failure?.errno ?? (reason === 'ok' ? 0 : ECONNABORTED),
    failedSide: failure === undefined ? undefined : failure.fd === conn.fds[0] ? 'client' : 'server',
    failedOp: failure?.op,
    reason,
  };
  port.postMessage(done);
}

/** A connection that could not even be set up (e.g. no fd for a pipe): reset it alone. */
function failAdd(req: Extract<SpliceRequest, { type: 'add' }>, errno: number): void {
  for (const fd of req.fds) resetAndCloseFd(fd);
  const done: SpliceDone = {
    type: 'done',
    slot: req.slot,
    clientToServer: 0,
    serverToClient: 0,
    errno: errno > 0 ? errno : ECONNABORTED,
    failedSide: 'client',
    failedOp: 'read',
    reason: 'error',
  };
  port.postMessage(done);
}

function add(req: Extract<SpliceRequest, { type: 'add' }>): void {
  const [a, b] = req.fds;
  // Pipes may fail (EMFILE/ENFILE): that must cost this connection only, never the worker.
  let d0: Direction | undefined;
  let d1: Direction;
  try {
    d0 = buildDirection(a, b, req.prefixes[0]);
    d1 = buildDirection(b, a, req.prefixes[1]);
  } catch (err) {
    if (d0) closePipe(d0.pipe);
    return failAdd(req, (err as { errno?: number }).errno ?? ECONNABORTED);
  }
  const conn: Connection = {
    slot: req.slot,
    fds: [a, b],
    dirs: [d0, d1],
    counters: req.counters,
    offset: req.offset,
  };
  conns.set(conn.slot, conn);
  try {
    epollAdd(epfd, a, SOCKET_EVENTS, conn.slot * 2);
    epollAdd(epfd, b, SOCKET_EVENTS, conn.slot * 2 + 1);
  } catch (err) {
    const errno = (err as { errno?: number }).errno ?? ECONNABORTED;
    return finish(conn, 'error', { errno, fd: a, op: 'read' });
  }
  // Readiness that predates registration is reported by ADD, but the prefixes need a push.
  pump(conn);
}

/** Handles queued requests; false once asked to stop. */
function handleRequests(): boolean {
  for (;;) {
    const m = receiveMessageOnPort(port);
    if (m === undefined) return true;
    const req = m.message as SpliceRequest;
    if (req.type === 'add') add(req);
    else if (req.type === 'abort') {
      const conn = conns.get(req.slot);
      if (conn) finish(conn, 'abort', undefined);
    } else return false;
  }
}

function onSocketEvent(token: number, mask: number): void {
  const conn = conns.get(Math.floor(token / 2));
  if (!conn) return; // finished earlier in this batch
  try {
    handleSocketEvent(conn, token, mask);
  } catch (err) {
    // A bug or an exhausted resource in one connection must not take the others down.
    finish(conn, 'error', { errno: (err as { errno?: number }).errno ?? ECONNABORTED, fd: conn.fds[0], op: 'read' });
  }
}

function handleSocketEvent(conn: Connection, token: number, mask: number): void {
  if (mask & EPOLLPRI) {
    const fd = conn.fds[token % 2];
    for (const d of conn.dirs) if (d.src === fd) d.urgent = true;
  }
  if (mask & EPOLLERR) {
    // A reset on a socket neither direction is reading or writing right now (e.g. after
    // its EOF) would otherwise go unnoticed: take the error from the socket itself.
    const fd = conn.fds[token % 2] as number;
    const errno = getSocketError(fd);
    if (errno !== 0) return finish(conn, 'error', { errno, fd, op: 'read' });
  }
  pump(conn);
}

function run(): void {
  epollAdd(epfd, eventFd, EPOLLIN, WAKE_TOKEN);
  port.postMessage({ type: 'ready' } satisfies SpliceReport);
  let running = handleRequests();
  while (running) {
    const n = epollWait(epfd, events, MAX_EVENTS, WAIT_TIMEOUT_MS);
    let woken = false;
    for (let i = 0; i < n; i++) {
      const token = epollEventToken(events, i);
      if (token === WAKE_TOKEN) woken = true;
      else onSocketEvent(token, epollEventMask(events, i));
    }
    // After the batch: a slot freed above may be reused by an 'add', and stale events
    // in this batch must not reach the new connection.
    if (woken) {
      drainEventFd(eventFd);
      running = handleRequests();
    }
  }
}

try {
  run();
} finally {
  for (const conn of [...conns.values()]) finish(conn, 'stop', undefined);
  for (const p of pool.splice(0)) closePipe(p);
  epollDel(epfd, eventFd);
  closeFd(epfd);
}
