// Running a synchronous piece of code with the calling thread inside another network
// namespace (ztunnel's in-pod mode): sockets created inside stay in that netns for life,
// whatever thread later uses them.
// Must never: run async code or yield inside (only the JS thread switches, and it must be
// back before the event loop runs), or return with the thread left in the other netns.

import { closeSync, openSync } from 'node:fs';

import * as libc from './libc.js';
import { NativeError } from './native-error.js';

const SELF_NETNS = '/proc/thread-self/ns/net';

/**
 * Calls fn() with this thread in the netns at `nsPath` (e.g. /var/run/netns/<name> or
 * /proc/<pid>/ns/net), then returns to the original netns. Needs CAP_SYS_ADMIN.
 * If returning fails the process is in the wrong netns and cannot be trusted: the error
 * says so and the caller should exit.
 */
export function withNetns<T>(nsPath: string, fn: () => T): T {
  const original = openSync(SELF_NETNS, 'r');
  let target: number | undefined;
  try {
    target = openSync(nsPath, 'r');
    if (libc.setns(target, libc.CLONE_NEWNET) !== 0) {
      const errno = libc.lastErrno();
      throw new NativeError('setns', errno, { target: nsPath, reason: libc.strerror(errno) });
    }
    try {
      return fn();
    } finally {
      if (libc.setns(original, libc.CLONE_NEWNET) !== 0) {
        const errno = libc.lastErrno();
        // Replaces any error from fn: staying in the wrong netns is the worse failure.
        // eslint-disable-next-line no-unsafe-finally -- deliberate, see above
        throw new NativeError('setns', errno, {
          target: SELF_NETNS,
          reason: 'could not return to the original network namespace; the process must exit',
        });
      }
    }
  } finally {
    closeSync(original);
    if (target !== undefined) closeSync(target);
  }
}
