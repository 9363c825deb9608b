// The raw libc bindings (koffi) and the kernel constants they take: the one module in the
// project that loads a native library. Everything here is a thin, typed wrapper that returns
// the C result; turning -1 + errno into a NativeError is the caller's (sockets.ts) job.
// Must never: be imported from outside native-shims/, hold state, or block for long
// (every call here is a non-blocking syscall on the JS thread).
// Invariant: the constants are Linux x86_64/arm64 values (same on both); Linux only.

import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_CLOEXEC = 0o2000000;

export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_REUSEPORT = 15;
export const SO_MARK = 36;
export const SO_LINGER = 13;

export const SOL_IP = 0;
export const IP_FREEBIND = 15;
export const IP_TRANSPARENT = 19;
export const IP_BIND_ADDRESS_NO_PORT = 24;
/** netfilter's getsockopt for the pre-NAT destination (linux/netfilter_ipv4.h). */
export const SO_ORIGINAL_DST = 80;

export const SOL_IPV6 = 41;
export const IPV6_V6ONLY = 26;
export const IPV6_TRANSPARENT = 75;
export const IPV6_FREEBIND = 78;
/** linux/netfilter_ipv6/ip6_tables.h; same number as the IPv4 one, other level. */
export const IP6T_SO_ORIGINAL_DST = 80;

export const CLONE_NEWNET = 0x40000000;

export const SOCKADDR_IN_BYTES = 16;
export const SOCKADDR_IN6_BYTES = 28;

type IntCall = (...args: unknown[]) => number;

export const socket = libc.func('int socket(int domain, int type, int protocol)') as IntCall as (
  domain: number,
  type: number,
  protocol: number,
) => number;

export const setsockopt = libc.func(
  'int setsockopt(int fd, int level, int name, const void *val, uint32 len)',
) as IntCall as (fd: number, level: number, name: number, val: Buffer, len: number) => number;

export const getsockopt = libc.func(
  'int getsockopt(int fd, int level, int name, _Out_ void *val, _Inout_ uint32 *len)',
) as IntCall as (fd: number, level: number, name: number, val: Buffer, len: [number]) => number;

export const bind = libc.func('int bind(int fd, const void *addr, uint32 len)') as IntCall as (
  fd: number,
  addr: Buffer,
  len: number,
) => number;

export const listen = libc.func('int listen(int fd, int backlog)') as IntCall as (fd: number, backlog: number) => number;

export const close = libc.func('int close(int fd)') as IntCall as (fd: number) => number;

export const setns = libc.func('int setns(int fd, int nstype)') as IntCall as (fd: number, nstype: number) => number;

export const inetPton = libc.func('int inet_pton(int af, const char *src, _Out_ void *dst)') as IntCall as (
  af: number,
  src: string,
  dst: Buffer,
) => number;

export const inetNtop = libc.func(
  'const char *inet_ntop(int af, const void *src, _Out_ void *dst, uint32 size)',
) as unknown as (af: number, src: Buffer, dst: Buffer, size: number) => string | null;

export const ifNameToIndex = libc.func('uint32 if_nametoindex(const char *name)') as IntCall as (name: string) => number;

const strerrorC = libc.func('const char *strerror(int errnum)') as unknown as (errnum: number) => string | null;

/** errno of the last koffi call on this thread; read it before any other native call. */
export function lastErrno(): number {
  return koffi.errno();
}

export function strerror(errno: number): string {
  return strerrorC(errno) ?? `errno ${errno}`;
}

/** sys/resource.h: RLIMIT_NOFILE; struct rlimit is two rlim_t (unsigned 64-bit on Linux x86_64/arm64). */
export const RLIMIT_NOFILE = 7;
export const RLIMIT_BYTES = 16;

export const getrlimit = libc.func('int getrlimit(int resource, _Out_ void *rlim)') as IntCall as (resource: number, rlim: Buffer) => number;

export const setrlimit = libc.func('int setrlimit(int resource, const void *rlim)') as IntCall as (resource: number, rlim: Buffer) => number;
