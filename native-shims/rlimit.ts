// The open-files limit (RLIMIT_NOFILE) of this process: read it, and raise the soft limit
// to the hard one at start-up, so a proxy holding two fds per proxied connection is not
// capped at the common soft default of 1024 while the hard limit allows far more.
// Must never: lower a limit, or touch the hard limit (raising it needs CAP_SYS_RESOURCE
// and is the operator's decision).
// Invariant: RLIM_INFINITY (all ones) is reported as Infinity.

import { readFileSync } from 'node:fs';

import * as libc from './libc.js';
import { NativeError } from './native-error.js';

export interface FdLimit {
  soft: number;
  hard: number;
}

export interface FdLimitRaise {
  before: FdLimit;
  after: FdLimit;
  /** True when the soft limit was changed. */
  raised: boolean;
}

const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

function fromRlim(v: bigint): number {
  return v === RLIM_INFINITY ? Infinity : Number(v);
}

function toRlim(v: number): bigint {
  return v === Infinity ? RLIM_INFINITY : BigInt(v);
}

/** The current soft and hard RLIMIT_NOFILE. Throws NativeError if getrlimit fails. */
export function getFdLimit(): FdLimit {
  const buf = Buffer.alloc(libc.RLIMIT_BYTES);
  if (libc.getrlimit(libc.RLIMIT_NOFILE, buf) !== 0) {
    const errno = libc.lastErrno();
    throw new NativeError('getrlimit', errno, { target: 'RLIMIT_NOFILE', reason: libc.strerror(errno) });
  }
  return { soft: fromRlim(buf.readBigUInt64LE(0)), hard: fromRlim(buf.readBigUInt64LE(8)) };
}

/**
 * Raises the soft RLIMIT_NOFILE to the hard limit when the hard one is higher (never
 * lowers it). An unlimited hard limit is honoured as far as the kernel takes it: setrlimit
 * refuses soft values above fs.nr_open, so then the soft limit goes to nr_open.
 * Throws NativeError if the kernel refuses.
 */
export function raiseFdLimit(): FdLimitRaise {
  const before = getFdLimit();
  if (before.soft >= before.hard) return { before, after: before, raised: false };
  let target = before.hard;
  if (target === Infinity) target = readNrOpen() ?? before.soft;
  if (target <= before.soft) return { before, after: before, raised: false };
  const buf = Buffer.alloc(libc.RLIMIT_BYTES);
  buf.writeBigUInt64LE(toRlim(target), 0);
  buf.writeBigUInt64LE(toRlim(before.hard), 8);
  if (libc.setrlimit(libc.RLIMIT_NOFILE, buf) !== 0) {
    const errno = libc.lastErrno();
    throw new NativeError('setrlimit', errno, { target: 'RLIMIT_NOFILE', reason: libc.strerror(errno) });
  }
  return { before, after: getFdLimit(), raised: true };
}

function readNrOpen(): number | undefined {
  try {
    // Synchronous, tiny, once at start-up.
    const text = readFileSync('/proc/sys/fs/nr_open', 'utf8');
    const n = Number(text.trim());
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}
