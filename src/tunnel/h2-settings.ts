// HTTP/2 settings shared by the HBONE client pool and the HBONE server.
// Both windows must be raised: the per-stream initialWindowSize AND the session's
// connection window (setLocalWindowSize). Either alone gains nothing
// (measured on a 2-core VM: ~1.85x throughput with both).
import http2 from 'node:http2';
import type { Config } from '../config/types.js';

export interface H2Tuning {
  streamWindowBytes: number;
  connectionWindowBytes: number;
  frameSizeBytes: number;
}

export function h2TuningOf(config: Config): H2Tuning {
  return {
    streamWindowBytes: config.http2StreamWindowSize,
    connectionWindowBytes: config.http2ConnectionWindowSize,
    frameSizeBytes: config.http2FrameSize,
  };
}

export function h2Settings(t: H2Tuning, maxConcurrentStreams?: number): http2.Settings {
  const s: http2.Settings = {
    initialWindowSize: Math.min(t.streamWindowBytes, 2 ** 31 - 1),
    maxFrameSize: t.frameSizeBytes,
    enablePush: false,
  };
  if (maxConcurrentStreams !== undefined) s.maxConcurrentStreams = maxConcurrentStreams;
  return s;
}

/** Raise the connection-level receive window once the session is up. */
export function raiseConnectionWindow(session: http2.Http2Session, t: H2Tuning): void {
  const apply = (): void => {
    if (!session.destroyed) session.setLocalWindowSize(t.connectionWindowBytes);
  };
  if (session.connecting) session.once('connect', apply);
  else apply();
}

/** Upstream ztunnel's HTTP/2 keepalive: PING after 10 s without a frame, give up after 20 s. */
export const KEEPALIVE_INTERVAL_MS = 10_000;
export const KEEPALIVE_TIMEOUT_MS = 20_000;

export interface KeepaliveOptions {
  /** Send a PING once nothing was heard from the peer for this long. Default 10 s (upstream). */
  intervalMs?: number;
  /**
   * Destroy the session when a PING is outstanding and nothing was heard from the peer for
   * this long. Default 20 s (upstream). So a dead peer is dropped at most timeoutMs (+ timer
   * slack) after its last byte, whether or not the session is still open for new streams.
   */
  timeoutMs?: number;
  /** A PING unanswered (and nothing else heard) for this long is "late": onLate fires once. Default 2 s. */
  lateMs?: number;
  onLate?: () => void;
  /**
   * Bytes read so far on the carrier socket (the raw TCP socket: Node's TLS layer reads it
   * natively, so its counter still moves). Any growth counts as hearing from the peer, so a
   * busy session needs no PINGs. Without it only PING replies count.
   */
  bytesRead?: () => number;
}

export interface Keepalive {
  /**
   * Health probe: unless the peer was heard within maxAgeMs, send a PING now (one at a time);
   * if it stays unanswered for lateMs, onLate fires. Never delays the caller.
   */
  probe(maxAgeMs: number): void;
  /** When the peer was last heard from (Date.now() time; conservative). */
  lastHeardAt(): number;
  stop(): void;
}

/** Node's key for a session's native handle; see sendPing(). */
function nativeHandleOf(session: http2.Http2Session): { ping?: unknown } | undefined {
  const key = Object.getOwnPropertySymbols(session).find((k) => k.description === 'kHandle');
  const handle = key === undefined ? undefined : (session as unknown as Record<symbol, unknown>)[key];
  return typeof handle === 'object' && handle !== null ? (handle as { ping?: unknown }) : undefined;
}

/**
 * Sends one PING; `done(true)` on its ACK, `done(false)` if it was cancelled. Returns false when
 * no PING could be sent. Node's session.ping() refuses (reports "cancelled" without sending)
 * once the session is closing, i.e. after a GOAWAY in either direction, although HTTP/2 allows
 * PINGs until the connection ends and those are the sessions whose remaining streams most need
 * dead-peer detection. So a closing session pings through its native handle, which nghttp2
 * serves as usual. Where that internal is missing (another Node version), false: such a
 * session relies on TCP keepalive and TCP_USER_TIMEOUT (tcp-connect.ts) instead.
 */
function sendPing(session: http2.Http2Session, done: (ack: boolean) => void): boolean {
  if (session.destroyed || session.connecting) return false;
  try {
    if (!session.closed) {
      return session.ping((err) => done(!err));
    }
    const handle = nativeHandleOf(session);
    if (typeof handle?.ping !== 'function') return false;
    const ping = handle.ping as (payload: undefined, cb: (ack: boolean) => void) => boolean;
    return ping.call(handle, undefined, (ack) => done(ack));
  } catch {
    return false;
  }
}

/**
 * HTTP/2 PING keepalive for a client or server session, running until the session is
 * destroyed (also while it drains after a GOAWAY). One timer per session, re-armed at the
 * next deadline: PING after intervalMs of silence; "late" (onLate) when a PING is unanswered
 * for lateMs with nothing else heard since it was sent; destroy when a PING is outstanding
 * and nothing was heard for timeoutMs.
 * Hearing = a PING reply, or (with opts.bytesRead) growth of the socket's byte counter. The
 * counter is sampled, not watched: growth seen at a sample counts as heard at the previous
 * sample's time, which errs towards probing more, never towards trusting a silent peer.
 */
export function startKeepalive(session: http2.Http2Session, opts: KeepaliveOptions = {}): Keepalive {
  const intervalMs = opts.intervalMs ?? KEEPALIVE_INTERVAL_MS;
  const timeoutMs = Math.max(opts.timeoutMs ?? KEEPALIVE_TIMEOUT_MS, intervalMs);
  const lateMs = opts.lateMs ?? 2_000;
  const readBytes = opts.bytesRead;
  let lastHeard = Date.now();
  let lastSample = lastHeard;
  let lastBytes = readBytes ? readBytes() : 0;
  /** Date.now() when the outstanding PING was sent; 0 = none outstanding. */
  let pingSentAt = 0;
  let lateReported = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  const sample = (now: number): void => {
    if (readBytes) {
      const bytes = readBytes();
      if (bytes !== lastBytes) {
        lastBytes = bytes;
        lastHeard = Math.max(lastHeard, lastSample);
      }
    }
    lastSample = now;
  };

  const stop = (): void => {
    stopped = true;
    if (timer) clearTimeout(timer);
    timer = undefined;
  };

  const ping = (now: number): void => {
    pingSentAt = now;
    lateReported = false;
    const sent = sendPing(session, (ack) => {
      if (!ack || stopped) return;
      pingSentAt = 0;
      lastHeard = Date.now();
      arm();
    });
    // Not sendable (closing without a native handle, or nghttp2's PING queue full): count as
    // outstanding anyway, so the timeout still ends a peer that is never heard from again.
    if (!sent) lateReported = true;
  };

  const arm = (): void => {
    if (stopped) return;
    if (timer) clearTimeout(timer);
    const next =
      pingSentAt === 0
        ? lastHeard + intervalMs
        : Math.min(lateReported ? Infinity : pingSentAt + lateMs, lastHeard + timeoutMs);
    timer = setTimeout(tick, Math.max(10, next - Date.now()));
    timer.unref();
  };

  const tick = (): void => {
    timer = undefined;
    if (stopped || session.destroyed) return stop();
    const now = Date.now();
    sample(now);
    if (pingSentAt !== 0) {
      if (now - lastHeard >= timeoutMs) {
        stop();
        session.destroy(new Error(`HTTP/2 keepalive: peer silent for ${now - lastHeard}ms`));
        return;
      }
      if (!lateReported && now - pingSentAt >= lateMs && lastHeard < pingSentAt) {
        lateReported = true;
        opts.onLate?.();
      }
    } else if (now - lastHeard >= intervalMs) {
      ping(now);
    }
    arm();
  };

  session.once('close', stop);
  arm();
  return {
    probe(maxAgeMs: number): void {
      if (stopped || session.destroyed) return;
      const now = Date.now();
      sample(now);
      if (now - lastHeard <= maxAgeMs || pingSentAt !== 0) return;
      ping(now);
      arm();
    },
    lastHeardAt: () => lastHeard,
    stop,
  };
}

export const CONNECT_ERROR = http2.constants.NGHTTP2_CONNECT_ERROR;
export const NO_ERROR = http2.constants.NGHTTP2_NO_ERROR;
export const CANCEL = http2.constants.NGHTTP2_CANCEL;
