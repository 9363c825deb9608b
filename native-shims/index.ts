// The public face of native-shims/: the only FFI in the project (koffi → libc).
// Everything above imports from here, never from libc.ts.

export { NativeError } from './native-error.js';
export {
  type ListenerSocketOptions,
  type OriginalDst,
  createListenerFd,
  createListenerFdBestEffort,
  getOriginalDst,
  createFreebindSocketFd,
  createMarkedSocketFd,
  socketFd,
  canUseTransparent,
  closeFd,
  setLingerZero,
  resetAndCloseFd,
} from './sockets.js';
export { withNetns } from './netns.js';
export { type TcpLivenessOptions, setTcpUserTimeout, readTcpLivenessOptions } from './tcp-options.js';
export {
  EAGAIN,
  EPOLLIN,
  EPOLLOUT,
  EPOLLPRI,
  EPOLLERR,
  EPOLLHUP,
  EPOLLRDHUP,
  EPOLLET,
  EPOLL_EVENT_BYTES,
  EpollEventType,
  spliceMove,
  createPipe,
  setPipeSize,
  getPipeSize,
  dupCloexec,
  epollCreate,
  epollAdd,
  epollDel,
  buildEpollEventBuffer,
  epollWait,
  epollEventMask,
  epollEventToken,
  createEventFd,
  signalEventFd,
  drainEventFd,
  writeFd,
  recvFd,
  shutdownWrite,
  getSocketError,
} from './splice.js';
export { type FdLimit, type FdLimitRaise, getFdLimit, raiseFdLimit } from './rlimit.js';
