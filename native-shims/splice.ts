// Zero-copy relay shims: pipes, splice(2), epoll, eventfd, and the fd chores around them
// (dup with CLOEXEC, pipe resizing, shutdown, SO_ERROR). Used by the splice worker
// (src/copy/splice-worker.ts), which moves bytes socket → pipe → socket in the kernel.
// The hot calls (spliceMove, epollWait, shutdownWrite, writeFd) return -errno instead of
// throwing, because EAGAIN and peer resets are ordinary outcomes there; the set-up calls
// (createPipe, dupCloexec, epoll/eventfd creation) throw NativeError.
// Must never: block (every fd handed here is non-blocking, except epollWait, which waits
// at most its timeout), or return an fd without O_CLOEXEC.
// Invariant: Linux only; struct epoll_event is packed (12 bytes) on x86_64 and naturally
// aligned (16 bytes) elsewhere, so events are read through EPOLL_EVENT_BYTES / offsets.

import koffi from 'koffi';

import * as libc from './libc.js';
import { NativeError } from './native-error.js';

// dlopen() refcounts: this is the same mapping libc.ts loaded, only the handle is new.
const lib = koffi.load('libc.so.6');

const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const F_DUPFD_CLOEXEC = 1030;
const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;
const SPLICE_F_MOVE = 1;
const SPLICE_F_NONBLOCK = 2;
const EPOLL_CLOEXEC = O_CLOEXEC;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EFD_CLOEXEC = O_CLOEXEC;
const EFD_NONBLOCK = O_NONBLOCK;
const SHUT_WR = 1;
const SO_ERROR = 4;
const EINTR = 4;

export const EAGAIN = 11;
export const EPOLLIN = 0x001;
export const EPOLLPRI = 0x002;
export const EPOLLOUT = 0x004;
export const EPOLLERR = 0x008;
export const EPOLLHUP = 0x010;
export const EPOLLRDHUP = 0x2000;
// Bit 31: a plain literal would be a negative int32 once combined with `|`.
export const EPOLLET = (1 << 31) >>> 0;

/** The kernel's struct epoll_event: EPOLL_PACKED on x86_64 only. */
const EPOLL_PACKED = process.arch === 'x64';
export const EPOLL_EVENT_BYTES = EPOLL_PACKED ? 12 : 16;
const EPOLL_DATA_OFFSET = EPOLL_PACKED ? 4 : 8;

/** The declared layout, kept so a test can check it against EPOLL_EVENT_BYTES. */
export const EpollEventType = EPOLL_PACKED
  ? koffi.pack('zt_epoll_event_packed', { events: 'uint32', data: 'uint64' })
  : koffi.struct('zt_epoll_event', { events: 'uint32', data: 'uint64' });

type NumCall = (...args: unknown[]) => number;

// koffi has no ssize_t: long is the same width on LP64.
const pipe2C = lib.func('int pipe2(_Out_ int *fds, int flags)') as NumCall as (fds: Int32Array, flags: number) => number;
const spliceC = lib.func('long splice(int fd_in, void *off_in, int fd_out, void *off_out, size_t len, uint32 flags)') as NumCall as (
  fdIn: number,
  offIn: null,
  fdOut: number,
  offOut: null,
  len: number,
  flags: number,
) => number;
const fcntlIntC = lib.func('int fcntl(int fd, int cmd, int arg)') as NumCall as (fd: number, cmd: number, arg: number) => number;
const epollCreate1C = lib.func('int epoll_create1(int flags)') as NumCall as (flags: number) => number;
const epollCtlC = lib.func('int epoll_ctl(int epfd, int op, int fd, void *event)') as NumCall as (
  epfd: number,
  op: number,
  fd: number,
  event: Buffer | null,
) => number;
const epollWaitC = lib.func('int epoll_wait(int epfd, void *events, int maxevents, int timeout)') as NumCall as (
  epfd: number,
  events: Buffer,
  maxEvents: number,
  timeoutMs: number,
) => number;
const eventfdC = lib.func('int eventfd(uint32 initval, int flags)') as NumCall as (initval: number, flags: number) => number;
const shutdownC = lib.func('int shutdown(int fd, int how)') as NumCall as (fd: number, how: number) => number;
const writeC = lib.func('long write(int fd, const void *buf, size_t count)') as NumCall as (fd: number, buf: Uint8Array, count: number) => number;
const readC = lib.func('long read(int fd, _Out_ void *buf, size_t count)') as NumCall as (fd: number, buf: Uint8Array, count: number) => number;
const recvC = lib.func('long recv(int fd, _Out_ void *buf, size_t len, int flags)') as NumCall as (
  fd: number,
  buf: Uint8Array,
  len: number,
  flags: number,
) => number;
const MSG_DONTWAIT = 0x40;

const SPLICE_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

function fail(syscall: string, target?: string): never {
  const errno = libc.lastErrno();
  const reason = libc.strerror(errno);
  throw new NativeError(syscall, errno, target === undefined ? { reason } : { target, reason });
}

/**
 * Moves up to `len` bytes from fdIn to fdOut (one of them a pipe) without copying through
 * user space. Returns the bytes moved (> 0), 0 at EOF of fdIn, or -errno (-EAGAIN: nothing
 * to read, or no room to write, right now).
 */
export function spliceMove(fdIn: number, fdOut: number, len: number): number {
  for (;;) {
    const n = spliceC(fdIn, null, fdOut, null, len, SPLICE_FLAGS);
    if (n >= 0) return n;
    const errno = koffi.errno();
    if (errno !== EINTR) return -errno;
  }
}

/** A non-blocking, close-on-exec pipe: [read end, write end]. */
export function createPipe(): [number, number] {
  const fds = new Int32Array(2);
  if (pipe2C(fds, O_NONBLOCK | O_CLOEXEC) !== 0) fail('pipe2');
  return [fds[0] ?? -1, fds[1] ?? -1];
}

/**
 * Resizes a pipe; returns the capacity the kernel actually set (a power-of-two number of
 * pages >= bytes), or -errno (EPERM: over pipe-user-pages-soft/pipe-max-size for an
 * unprivileged user; EBUSY: more bytes queued than the new size).
 */
export function setPipeSize(fd: number, bytes: number): number {
  const r = fcntlIntC(fd, F_SETPIPE_SZ, bytes);
  return r >= 0 ? r : -koffi.errno();
}

export function getPipeSize(fd: number): number {
  const r = fcntlIntC(fd, F_GETPIPE_SZ, 0);
  if (r < 0) fail('fcntl', 'F_GETPIPE_SZ');
  return r;
}

/**
 * A second fd for the same open socket (or any file), close-on-exec. The kernel object
 * lives as long as either fd is open, so the original owner may close its own fd after this.
 */
export function dupCloexec(fd: number): number {
  const r = fcntlIntC(fd, F_DUPFD_CLOEXEC, 0);
  if (r < 0) fail('fcntl', `F_DUPFD_CLOEXEC ${fd}`);
  return r;
}

export function epollCreate(): number {
  const fd = epollCreate1C(EPOLL_CLOEXEC);
  if (fd < 0) fail('epoll_create1');
  return fd;
}

/** Registers fd with `events`; `token` (uint32) comes back with each of its events. */
export function epollAdd(epfd: number, fd: number, events: number, token: number): void {
  const ev = Buffer.alloc(EPOLL_EVENT_BYTES);
  ev.writeUInt32LE(events >>> 0, 0);
  ev.writeUInt32LE(token >>> 0, EPOLL_DATA_OFFSET);
  if (epollCtlC(epfd, EPOLL_CTL_ADD, fd, ev) !== 0) fail('epoll_ctl', `ADD ${fd}`);
}

/** Unregisters fd; 0 or -errno (ENOENT/EBADF are harmless at teardown). */
export function epollDel(epfd: number, fd: number): number {
  return epollCtlC(epfd, EPOLL_CTL_DEL, fd, null) === 0 ? 0 : -koffi.errno();
}

/** A buffer for `maxEvents` events, to pass to epollWait and read with the two readers below. */
export function buildEpollEventBuffer(maxEvents: number): Buffer {
  return Buffer.alloc(maxEvents * EPOLL_EVENT_BYTES);
}

/** Number of events written to `events` (0 on timeout or EINTR), or -errno. */
export function epollWait(epfd: number, events: Buffer, maxEvents: number, timeoutMs: number): number {
  const n = epollWaitC(epfd, events, maxEvents, timeoutMs);
  if (n >= 0) return n;
  const errno = koffi.errno();
  return errno === EINTR ? 0 : -errno;
}

export function epollEventMask(events: Buffer, i: number): number {
  return events.readUInt32LE(i * EPOLL_EVENT_BYTES);
}

export function epollEventToken(events: Buffer, i: number): number {
  return events.readUInt32LE(i * EPOLL_EVENT_BYTES + EPOLL_DATA_OFFSET);
}

/** A non-blocking, close-on-exec eventfd: any thread may wake an epoll waiter with it. */
export function createEventFd(): number {
  const fd = eventfdC(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) fail('eventfd');
  return fd;
}

const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);
const SINK = new Uint8Array(8);

/** Adds 1 to the eventfd counter (wakes its epoll waiters). Never blocks. */
export function signalEventFd(fd: number): void {
  writeC(fd, ONE, 8);
}

/** Resets the eventfd counter to 0 (EAGAIN when already 0 is fine). */
export function drainEventFd(fd: number): void {
  readC(fd, SINK, 8);
}

/** write(2): bytes written or -errno. */
export function writeFd(fd: number, buf: Uint8Array, len: number = buf.length): number {
  for (;;) {
    const n = writeC(fd, buf, len);
    if (n >= 0) return n;
    const errno = koffi.errno();
    if (errno !== EINTR) return -errno;
  }
}

/**
 * recv(2) without waiting: bytes read (> 0), 0 at EOF, or -errno. Unlike splice(2), recv
 * reads past a TCP urgent mark (the out-of-band byte itself is dropped, as Node does).
 */
export function recvFd(fd: number, buf: Uint8Array): number {
  for (;;) {
    const n = recvC(fd, buf, buf.length, MSG_DONTWAIT);
    if (n >= 0) return n;
    const errno = koffi.errno();
    if (errno !== EINTR) return -errno;
  }
}

/** shutdown(SHUT_WR): sends our FIN, the read side stays open. 0 or -errno. */
export function shutdownWrite(fd: number): number {
  return shutdownC(fd, SHUT_WR) === 0 ? 0 : -koffi.errno();
}

/** The socket's pending error (and clears it): 0 when none, or when fd is not a socket. */
export function getSocketError(fd: number): number {
  const val = Buffer.alloc(4);
  const len: [number] = [4];
  if (libc.getsockopt(fd, libc.SOL_SOCKET, SO_ERROR, val, len) !== 0) return 0;
  return val.readInt32LE(0);
}
