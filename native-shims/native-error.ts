// NativeError: the one error a failed system call in native-shims/ becomes. It names the
// syscall (and socket option), the errno code, and a hint when the usual cause is a missing
// capability, so start-up failures are readable without strace.
// Must never: be thrown for an expected outcome (e.g. "no original destination").

import { constants } from 'node:os';

const ERRNO_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(constants.errno).map(([name, value]) => [value, name] as const),
);

export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}

export interface NativeErrorDetail {
  /** e.g. 'IP_TRANSPARENT' for setsockopt, '127.0.0.1:15001' for bind. */
  target?: string;
  /** Human explanation; defaults to strerror(errno). */
  reason?: string;
}

export class NativeError extends Error {
  readonly errno: number;
  readonly syscall: string;
  readonly code: string;

  constructor(syscall: string, errno: number, detail: NativeErrorDetail = {}) {
    const code = errnoName(errno);
    const what = detail.target === undefined ? syscall : `${syscall}(${detail.target})`;
    super(`${what} failed: ${code}${detail.reason === undefined ? '' : ` (${detail.reason})`}`);
    this.name = 'NativeError';
    this.errno = errno;
    this.syscall = syscall;
    this.code = code;
  }
}
