// SOCKS5 entry (RFC 1928, no authentication, CONNECT only) on 127.0.0.1:15080 when
// UNSTABLE_ENABLE_SOCKS5=true: an entry into the same outbound path as 15001 that needs
// no root. IPv4, IPv6 and domain names; a domain resolves only to a mesh service's VIP
// (there is no DNS proxy). The success reply is sent once the upstream is up, so a
// refused tunnel is a SOCKS error, not a silent close.
import type net from 'node:net';
import { canonicalIp, formatHostPort } from '../util/ip.js';

export type Socks5Resolver = (host: string) => string | undefined;

export interface Socks5Target {
  ip: string;
  port: number;
}

export type Socks5Parse =
  | { kind: 'more' }
  | { kind: 'error'; reply: number; reason: string }
  | { kind: 'greeting'; consumed: number; noAuth: boolean }
  | { kind: 'request'; consumed: number; host: string; port: number; atyp: number };

const REP_GENERAL = 0x01;
const REP_HOST_UNREACHABLE = 0x04;
const REP_REFUSED = 0x05;
const REP_CMD_UNSUPPORTED = 0x07;
const REP_ATYP_UNSUPPORTED = 0x08;

export function parseGreeting(buf: Buffer): Socks5Parse {
  if (buf.length < 2) return { kind: 'more' };
  if (buf[0] !== 5) return { kind: 'error', reply: REP_GENERAL, reason: `not SOCKS5 (version ${buf[0]})` };
  const n = buf[1] as number;
  if (buf.length < 2 + n) return { kind: 'more' };
  const methods = buf.subarray(2, 2 + n);
  return { kind: 'greeting', consumed: 2 + n, noAuth: methods.includes(0) };
}

export function parseRequest(buf: Buffer): Socks5Parse {
  if (buf.length < 4) return { kind: 'more' };
  if (buf[0] !== 5) return { kind: 'error', reply: REP_GENERAL, reason: `not SOCKS5 (version ${buf[0]})` };
  if (buf[1] !== 1) return { kind: 'error', reply: REP_CMD_UNSUPPORTED, reason: `command ${buf[1]} is not CONNECT` };
  const atyp = buf[3] as number;
  let host: string;
  let off: number;
  if (atyp === 1) {
    if (buf.length < 10) return { kind: 'more' };
    host = `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`;
    off = 8;
  } else if (atyp === 4) {
    if (buf.length < 22) return { kind: 'more' };
    const parts: string[] = [];
    for (let i = 0; i < 8; i++) parts.push(buf.readUInt16BE(4 + i * 2).toString(16));
    // Canonical text (fd00::5, ::1, mapped v4 → v4), or lookups and the loop guard would miss.
    host = canonicalIp(parts.join(':')) ?? parts.join(':');
    off = 20;
  } else if (atyp === 3) {
    if (buf.length < 5) return { kind: 'more' };
    const len = buf[4] as number;
    if (buf.length < 5 + len + 2) return { kind: 'more' };
    host = buf.subarray(5, 5 + len).toString('latin1');
    off = 5 + len;
  } else {
    return { kind: 'error', reply: REP_ATYP_UNSUPPORTED, reason: `address type ${atyp} unsupported` };
  }
  return { kind: 'request', consumed: off + 2, host, port: buf.readUInt16BE(off), atyp };
}

const HANDSHAKE_TIMEOUT_MS = 10_000;

function reply(socket: net.Socket, code: number): void {
  if (socket.destroyed || !socket.writable) return;
  socket.write(Buffer.from([5, code, 0, 1, 0, 0, 0, 0, 0, 0]));
}

/** Send the error reply, then close for good (no half-open fd left behind). */
function closeAfterReply(socket: net.Socket, code: number): void {
  if (socket.destroyed) return;
  if (socket.writable) socket.end(Buffer.from([5, code, 0, 1, 0, 0, 0, 0, 0, 0]));
  setTimeout(() => socket.destroy(), 1000).unref();
}

/**
 * Run the SOCKS5 handshake on a fresh socket, then call `connect` with the target.
 * `connect` gets callbacks to answer the client once the upstream is up or has failed.
 */
export function handleSocks5(
  socket: net.Socket,
  resolve: Socks5Resolver,
  connect: (target: Socks5Target, answer: { ok(): void; fail(refused: boolean): void }) => void,
  onError: (reason: string) => void,
): void {
  let buf: Buffer = Buffer.alloc(0);
  let stage: 'greeting' | 'request' = 'greeting';
  socket.on('error', () => undefined);
  // A client that never finishes the handshake does not get to hold an fd forever.
  socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => {
    onError('SOCKS5 handshake timed out');
    socket.destroy();
  });
  // After a failure the handshake is over: later bytes must not be parsed (and reported) again.
  const stop = (): void => {
    socket.removeListener('data', onData);
    socket.setTimeout(0);
  };
  const bail = (code: number, reason: string): void => {
    stop();
    onError(reason);
    closeAfterReply(socket, code);
  };
  const onData = (chunk: Buffer): void => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    if (stage === 'greeting') {
      const g = parseGreeting(buf);
      if (g.kind === 'more') return;
      if (g.kind === 'error') return bail(g.reply, g.reason);
      if (g.kind !== 'greeting') return;
      if (!g.noAuth) {
        stop();
        onError('client offers no supported authentication method');
        socket.end(Buffer.from([5, 0xff]));
        setTimeout(() => socket.destroy(), 1000).unref();
        return;
      }
      socket.write(Buffer.from([5, 0]));
      buf = buf.subarray(g.consumed);
      stage = 'request';
    }
    const r = parseRequest(buf);
    if (r.kind === 'more') return;
    if (r.kind === 'error') return bail(r.reply, r.reason);
    if (r.kind !== 'request') return;
    stop();
    socket.pause();
    const rest = buf.subarray(r.consumed);
    if (rest.length) socket.unshift(rest);
    const ip = r.atyp === 3 ? resolve(r.host) : r.host;
    if (!ip) return bail(REP_HOST_UNREACHABLE, `cannot resolve ${r.host}: not a mesh service hostname`);
    connect(
      { ip, port: r.port },
      {
        ok: () => {
          reply(socket, 0);
          socket.resume();
        },
        fail: (refused) => closeAfterReply(socket, refused ? REP_REFUSED : REP_GENERAL),
      },
    );
  };
  socket.on('data', onData);
}

export function describeTarget(t: Socks5Target): string {
  return formatHostPort(t.ip, t.port);
}
