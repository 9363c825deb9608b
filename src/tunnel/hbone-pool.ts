// The HBONE client: pooled mutual-TLS 1.3 + HTTP/2 sessions to peer ztunnels, one
// CONNECT stream per proxied TCP connection (https://istio.io/latest/docs/ambient/architecture/hbone/,
// https://github.com/istio/ztunnel/blob/master/src/proxy/pool.rs).
// Pool key = { source identity, expected destination identities, destination ip:port,
// spoofed source IP (when original-source is on) }. A session carries at most
// maxStreams streams; a full one is skipped and a new one opened for the same key.
// Concurrent requesters for one key share a single session being created (no storms).
// Idle sessions are released after idleMs; dead ones (GOAWAY, error, close) are evicted.
//
// Peer faults. A session is taken out of the pool ("unusable": no new streams; its running
// streams go on) as soon as the peer looks silent, rather than when its keepalive finally
// destroys it:
// - Health probe: a stream requested on a session that has heard nothing from the peer for
//   more than probeAfterMs (default 1 s; any byte read or PING reply counts) sends one PING
//   along with the CONNECT (no added latency), and so does a CONNECT still unanswered
//   probeAfterMs later. Any PING, probe or keepalive, that stays
//   unanswered for probeTimeoutMs (default 2 s) with nothing else heard marks the session
//   unusable, and the CONNECTs still waiting for a response on it are cancelled and retried
//   once on another session (safe: no byte of theirs has been relayed yet).
// - A CONNECT with no response within connectTimeoutMs fails and marks its session unusable.
// - An unusable session is closed (GOAWAY) once its last stream ends, or destroyed by its
//   keepalive, which keeps running while streams remain, also after a GOAWAY either way.
// - Fail fast (per destination ip:port, a circuit breaker): a peer that stopped answering
//   (late PING, CONNECT timeout) is "suspect": a new session to it is a trial that callers
//   wait for at most trialGraceMs (default 3 s, also the trial's own connect timeout) instead
//   of CONNECT_TIMEOUT. A trial or any session creation that fails to reach the peer
//   (timeout, refused, unreachable) puts it "down" for a backoff window (0.5 s doubling to
//   2 s, ±20 % jitter) in which new connections fail at once (ZT_ERR_PEER_UNREACHABLE);
//   the first one after the window starts the next trial. Any session that comes up clears
//   it. So during a partition new connections fail within trialGraceMs (most at once), and
//   after it heals the first trial succeeds: recovery within one backoff window, no restart.
// Bounds (defaults = upstream ztunnel: PING after 10 s of silence, 20 s timeout): an open
// stream across a partition ends at most keepaliveTimeoutMs (20 s) + timer slack after the
// peer's last byte, by the PING keepalive; independently, TCP_USER_TIMEOUT (20 s) makes the
// kernel abort the connection once sent data stays unacknowledged that long, and TCP
// keepalive (KEEPALIVE_IDLE_MS) covers a socket nobody writes to.
// TLS: one SecureContext per local identity, rebuilt when its certificate changes (the stale
// one is dropped); sessions already up keep the context they were made with.
// Invariants: TLS 1.3 only, ALPN h2 only, no SNI, the server's SPIFFE identity must be
// one of the expected ones or the session is never used.
import http2 from 'node:http2';
import tls from 'node:tls';
import { ZtError } from '../errors.js';
import { checkServerIdentity } from '../identity/verify.js';
import { formatHostPort } from '../util/ip.js';
import {
  type H2Tuning,
  type Keepalive,
  KEEPALIVE_INTERVAL_MS,
  KEEPALIVE_TIMEOUT_MS,
  h2Settings,
  raiseConnectionWindow,
  startKeepalive,
} from './h2-settings.js';
import { createUpstreamSocket, setCarrierLiveness } from './tcp-connect.js';

export interface HboneTarget {
  /** spiffe://… of the local workload we speak as. */
  sourceIdentity: string;
  tls: { key: string; cert: string; ca: string };
  expectedIdentities: readonly string[];
  dst: { ip: string; port: number };
  /** Foreign source IP for the TCP connection (original-source); part of the key. */
  sourceIp: string | undefined;
}

export interface PoolOptions {
  tuning: H2Tuning;
  maxStreamsPerConnection: number;
  idleReleaseMs: number;
  connectTimeoutMs: number;
  mark: number | undefined;
  onSpoofFailure?: (err: unknown) => void;
  /** HTTP/2 PING after this long without hearing from the peer. Default 10 s (upstream). */
  keepaliveIntervalMs?: number;
  /** Destroy a session whose PING is outstanding and whose peer was silent this long. Default 20 s (upstream). */
  keepaliveTimeoutMs?: number;
  /** A new stream on a session silent for longer than this sends a PING along. Default 1 s. */
  probeAfterMs?: number;
  /** A PING unanswered this long marks its session unusable. Default 2 s. */
  probeTimeoutMs?: number;
  /** TCP_USER_TIMEOUT of HBONE sockets; 0 = kernel default. Default 20 s. */
  tcpUserTimeoutMs?: number;
  /** How long callers wait for a trial session to a suspect peer (and the trial's connect timeout). Default 3 s. */
  trialGraceMs?: number;
  /** Backoff of a peer found unreachable: first window, and the cap. Default 500 ms / 2 s. */
  peerBackoffBaseMs?: number;
  peerBackoffMaxMs?: number;
}

export const TRIAL_GRACE_MS = 3_000;
export const PEER_BACKOFF_BASE_MS = 500;
export const PEER_BACKOFF_MAX_MS = 2_000;

/** A destination that stopped answering (see "Fail fast" above). */
interface SuspectPeer {
  /** Consecutive failures to reach it (0: suspect only, the next session is a trial). */
  failures: number;
  /** New connections fail at once until then. */
  retryAt: number;
  lastError: string;
}

interface Creation {
  promise: Promise<PooledSession>;
  startedAt: number;
}

const TIMED_OUT = Symbol('timed out');

/** The promise's value or error, or TIMED_OUT after ms (the promise goes on). */
function within<T>(p: Promise<T>, ms: number): Promise<T | Error | typeof TIMED_OUT> {
  if (ms <= 0) return Promise.resolve(TIMED_OUT);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(TIMED_OUT), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        resolve(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/** Errors that say the peer could not be reached at all (not a TLS or identity problem). */
function isUnreachable(err: unknown): boolean {
  return err instanceof ZtError && (err.code === 'ZT_ERR_HBONE_CONNECT_TIMEOUT' || err.code === 'ZT_ERR_CONNECT_FAILED');
}

export const PROBE_AFTER_MS = 1_000;
export const PROBE_TIMEOUT_MS = 2_000;
export const HBONE_TCP_USER_TIMEOUT_MS = 20_000;

interface PooledSession {
  key: string;
  /** The peer's ip:port. */
  dst: string;
  session: http2.ClientHttp2Session;
  active: number;
  lastUsed: number;
  usable: boolean;
  keepalive: Keepalive | undefined;
  /** CONNECTs on this session still waiting for their response: told when it turns unhealthy. */
  waiting: Set<() => void>;
}

/** What request() asks connect() to do when its session turned unhealthy before the response. */
const RETRY = Symbol('retry');

/**
 * One tls.SecureContext per local identity, for its current certificate: building one parses
 * the key, the chain and the roots, which is too much per connection. A changed certificate
 * (rotation) replaces the entry, so stale contexts are not kept.
 */
export class SecureContextCache {
  private readonly byIdentity = new Map<string, { cert: string; ca: string; context: tls.SecureContext }>();

  get(identity: string, creds: { key: string; cert: string; ca: string }): tls.SecureContext {
    const hit = this.byIdentity.get(identity);
    if (hit && hit.cert === creds.cert && hit.ca === creds.ca) return hit.context;
    const context = tls.createSecureContext({
      key: creds.key,
      cert: creds.cert,
      ca: creds.ca,
      minVersion: 'TLSv1.3',
      maxVersion: 'TLSv1.3',
    });
    this.byIdentity.set(identity, { cert: creds.cert, ca: creds.ca, context });
    return context;
  }

  forget(identity: string): void {
    this.byIdentity.delete(identity);
  }

  get size(): number {
    return this.byIdentity.size;
  }
}

export class HbonePool {
  private readonly opts: PoolOptions;
  private readonly sessions = new Map<string, PooledSession[]>();
  private readonly creating = new Map<string, Creation>();
  /** Destinations (ip:port) that stopped answering; absent = healthy. */
  private readonly suspects = new Map<string, SuspectPeer>();
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;
  /** Shared TLS contexts (one per local identity); public for tests and config_dump. */
  readonly secureContexts = new SecureContextCache();

  constructor(opts: PoolOptions) {
    this.opts = opts;
    this.sweeper = setInterval(() => this.releaseIdle(), Math.max(1000, Math.min(opts.idleReleaseMs, 30_000)));
    this.sweeper.unref();
  }

  static keyOf(t: HboneTarget): string {
    return `${t.sourceIdentity}|${t.expectedIdentities.join(',')}|${formatHostPort(t.dst.ip, t.dst.port)}|${t.sourceIp ?? ''}`;
  }

  /**
   * Open one CONNECT stream; resolves once the peer answered 200. If its session turns
   * unhealthy (health probe) before the response, the CONNECT is retried once on another one.
   */
  async connect(target: HboneTarget, authority: string, headers: http2.OutgoingHttpHeaders): Promise<http2.ClientHttp2Stream> {
    for (let attempt = 0; ; attempt += 1) {
      if (this.closed) throw new ZtError('ZT_ERR_DRAINING');
      // checkout() has already reserved a stream slot on the session (active += 1).
      const pooled = await this.checkout(target);
      const result = await this.request(pooled, authority, headers, attempt === 0);
      if (result !== RETRY) return result;
    }
  }

  private request(
    pooled: PooledSession,
    authority: string,
    headers: http2.OutgoingHttpHeaders,
    mayRetry: boolean,
  ): Promise<http2.ClientHttp2Stream | typeof RETRY> {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = pooled.session.request({ ':method': 'CONNECT', ':authority': authority, ...headers }, { endStream: false });
    } catch (err) {
      this.release(pooled);
      throw new ZtError('ZT_ERR_H2', `HBONE request failed: ${(err as Error).message}`, { cause: err });
    }
    // Never without an 'error' listener: an RST_STREAM or a dying session may arrive at any
    // time, also between the response and the caller's own listener.
    stream.on('error', () => undefined);
    stream.on('close', () => this.release(pooled));
    // Health probe: a session that has been quiet gets a PING along with this CONNECT; and
    // if the answer is still missing after probeAfterMs, the peer has been quiet that long
    // by then (e.g. a partition that began just before the CONNECT): probe again.
    pooled.keepalive?.probe(this.probeAfterMs);
    return new Promise<http2.ClientHttp2Stream | typeof RETRY>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        pooled.waiting.delete(onUnhealthy);
        stream.removeListener('error', onError);
        stream.removeListener('close', onClose);
      };
      const onTimeout = (): void => {
        done();
        stream.close(http2.constants.NGHTTP2_CANCEL);
        // A peer that does not answer one CONNECT gets no more of them on this session.
        this.markUnhealthy(pooled, `no response to a CONNECT within ${this.opts.connectTimeoutMs}ms`);
        reject(new ZtError('ZT_ERR_HBONE_STATUS', `no HBONE response within ${this.opts.connectTimeoutMs}ms`));
      };
      // One timer per CONNECT: first the re-probe point, then (re-armed) the response timeout.
      const probeAt = this.probeAfterMs + 10;
      let timer: NodeJS.Timeout =
        probeAt < this.opts.connectTimeoutMs
          ? setTimeout(() => {
              pooled.keepalive?.probe(this.probeAfterMs);
              timer = setTimeout(onTimeout, this.opts.connectTimeoutMs - probeAt);
            }, probeAt)
          : setTimeout(onTimeout, this.opts.connectTimeoutMs);
      const onUnhealthy = (): void => {
        if (!mayRetry) return;
        done();
        stream.close(http2.constants.NGHTTP2_CANCEL);
        resolve(RETRY);
      };
      const onError = (err: Error): void => {
        done();
        reject(new ZtError('ZT_ERR_H2', `HBONE stream failed: ${err.message}`, { cause: err }));
      };
      const onClose = (): void => {
        done();
        reject(new ZtError('ZT_ERR_HBONE_STATUS', `HBONE stream closed before a response (code ${stream.rstCode})`));
      };
      pooled.waiting.add(onUnhealthy);
      stream.once('error', onError);
      stream.once('close', onClose);
      stream.once('response', (h) => {
        done();
        const status = Number(h[':status']);
        if (status !== 200) {
          stream.close(http2.constants.NGHTTP2_CANCEL);
          reject(new ZtError('ZT_ERR_HBONE_STATUS', `http status: ${status}`));
          return;
        }
        resolve(stream);
      });
    });
  }

  /** Number of live sessions (for tests and config_dump). */
  sessionCount(): number {
    let n = 0;
    for (const list of this.sessions.values()) n += list.length;
    return n;
  }

  /** Drain: GOAWAY every session; they close when their streams end. */
  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const list of this.sessions.values()) for (const p of list) p.session.close();
    this.sessions.clear();
  }

  /** Close every session now, streams included. */
  destroy(): void {
    const all = [...this.sessions.values()].flat();
    this.close();
    for (const p of all) p.session.destroy();
  }

  private get probeAfterMs(): number {
    return this.opts.probeAfterMs ?? PROBE_AFTER_MS;
  }

  /** Out of the pool for new streams (GOAWAY, error, close, or unhealthy). Idempotent. */
  private evict(p: PooledSession): void {
    p.usable = false;
    const list = this.sessions.get(p.key);
    if (!list) return;
    const i = list.indexOf(p);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.sessions.delete(p.key);
  }

  /**
   * The peer looks silent: no new streams here, CONNECTs still waiting move to another session,
   * and the session is closed once its running streams end (or destroyed by its keepalive).
   */
  private markUnhealthy(p: PooledSession, why: string): void {
    this.peerSuspect(p.dst, why);
    this.evict(p);
    for (const notify of [...p.waiting]) notify();
    p.waiting.clear();
    if (p.active === 0 && !p.session.closed) p.session.close();
  }

  private limitOf(p: PooledSession): number {
    const remote = p.session.remoteSettings?.maxConcurrentStreams;
    return Math.min(this.opts.maxStreamsPerConnection, remote && remote > 0 ? remote : Infinity);
  }

  /** A session of this key with a free stream slot, reserved for the caller (active += 1). */
  private async checkout(target: HboneTarget): Promise<PooledSession> {
    const key = HbonePool.keyOf(target);
    const dst = formatHostPort(target.dst.ip, target.dst.port);
    for (;;) {
      const free = this.findFree(key);
      if (free) return this.reserve(free);
      const suspect = this.suspects.get(dst);
      if (suspect && Date.now() < suspect.retryAt) throw this.unreachable(dst, suspect, `next attempt in ${suspect.retryAt - Date.now()}ms`);
      // Concurrent requesters for one key share one creation (no storms).
      const creation = this.creating.get(key) ?? this.startCreation(key, dst, target, suspect !== undefined);
      const outcome = suspect
        ? await within(creation.promise, creation.startedAt + this.trialGraceMs - Date.now())
        : await creation.promise.catch((err: unknown) => err as Error);
      if (outcome === TIMED_OUT) throw this.unreachable(dst, suspect as SuspectPeer, 'still trying to reach it');
      // Every waiter of a failed attempt fails with it, instead of retrying one by one.
      if (outcome instanceof Error) throw outcome;
      // Created and pooled: loop to take a slot on it (or on another, if it is full already).
    }
  }

  private get trialGraceMs(): number {
    return this.opts.trialGraceMs ?? TRIAL_GRACE_MS;
  }

  private startCreation(key: string, dst: string, target: HboneTarget, trial: boolean): Creation {
    const timeoutMs = trial ? Math.min(this.trialGraceMs, this.opts.connectTimeoutMs) : this.opts.connectTimeoutMs;
    const promise = this.createSession(key, target, timeoutMs).then(
      (p) => {
        this.suspects.delete(dst);
        return p;
      },
      (err: unknown) => {
        if (isUnreachable(err)) this.peerFailed(dst, err as ZtError);
        throw err;
      },
    );
    const creation: Creation = { promise, startedAt: Date.now() };
    this.creating.set(key, creation);
    // Also the rejection handler of a trial nobody waits for any more.
    promise.then(
      () => this.creating.get(key) === creation && this.creating.delete(key),
      () => this.creating.get(key) === creation && this.creating.delete(key),
    );
    return creation;
  }

  /** The peer could not be reached: down for the next backoff window. */
  private peerFailed(dst: string, err: ZtError): void {
    const prev = this.suspects.get(dst);
    const failures = (prev?.failures ?? 0) + 1;
    const base = this.opts.peerBackoffBaseMs ?? PEER_BACKOFF_BASE_MS;
    const max = this.opts.peerBackoffMaxMs ?? PEER_BACKOFF_MAX_MS;
    const window = Math.min(max, base * 2 ** (failures - 1)) * (0.8 + 0.4 * Math.random());
    this.suspects.set(dst, { failures, retryAt: Date.now() + Math.round(window), lastError: err.message });
  }

  /** The peer stopped answering on a live session: its next session is a trial. */
  private peerSuspect(dst: string, why: string): void {
    if (!this.suspects.has(dst)) this.suspects.set(dst, { failures: 0, retryAt: 0, lastError: why });
  }

  private unreachable(dst: string, s: SuspectPeer, when: string): ZtError {
    return new ZtError(
      'ZT_ERR_PEER_UNREACHABLE',
      `peer ${dst} is not answering (${s.failures} failed attempt${s.failures === 1 ? '' : 's'}, last: ${s.lastError}); ${when}`,
    );
  }

  /** Destinations currently failing fast (config_dump). */
  unreachablePeers(): { peer: string; failures: number; retryInMs: number; lastError: string }[] {
    const now = Date.now();
    return [...this.suspects].map(([peer, s]) => ({ peer, failures: s.failures, retryInMs: Math.max(0, s.retryAt - now), lastError: s.lastError }));
  }

  private findFree(key: string): PooledSession | undefined {
    const list = this.sessions.get(key);
    if (!list) return undefined;
    for (const p of list) {
      if (p.usable && !p.session.closed && !p.session.destroyed && p.active < this.limitOf(p)) return p;
    }
    return undefined;
  }

  private reserve(p: PooledSession): PooledSession {
    p.active += 1;
    p.lastUsed = Date.now();
    return p;
  }

  private createSession(key: string, target: HboneTarget, timeoutMs: number): Promise<PooledSession> {
    const { tuning } = this.opts;
    return new Promise<PooledSession>((resolve, reject) => {
      let secureContext: tls.SecureContext;
      try {
        secureContext = this.secureContexts.get(target.sourceIdentity, target.tls);
      } catch (err) {
        reject(new ZtError('ZT_ERR_TLS_HANDSHAKE', `TLS credentials of ${target.sourceIdentity} are unusable: ${(err as Error).message}`, { cause: err }));
        return;
      }
      const raw = createUpstreamSocket(target.dst.ip, {
        sourceIp: target.sourceIp,
        mark: this.opts.mark,
        timeoutMs,
        onSpoofFailure: this.opts.onSpoofFailure,
        allowHalfOpen: false,
      });
      raw.setNoDelay(true);
      // Once TCP is up the peer is reachable: a later failure is a TLS/HTTP/2 one, not "unreachable".
      let tcpUp = false;
      raw.once('connect', () => {
        tcpUp = true;
        setCarrierLiveness(raw, this.opts.tcpUserTimeoutMs ?? HBONE_TCP_USER_TIMEOUT_MS);
      });
      raw.connect({ host: target.dst.ip, port: target.dst.port });
      const sock = tls.connect({
        socket: raw,
        secureContext,
        minVersion: 'TLSv1.3',
        maxVersion: 'TLSv1.3',
        ALPNProtocols: ['h2'],
        rejectUnauthorized: true,
        // No SNI: peers are identified by their SPIFFE URI SAN only.
        checkServerIdentity: (_host, cert) => checkServerIdentity(target.expectedIdentities, cert),
      });
      let settled = false;
      const fail = (err: ZtError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.destroy();
        raw.destroy();
        reject(err);
      };
      const timer = setTimeout(() => {
        fail(
          new ZtError(
            'ZT_ERR_HBONE_CONNECT_TIMEOUT',
            `HBONE connect to ${formatHostPort(target.dst.ip, target.dst.port)} timed out after ${timeoutMs}ms (maybe a NetworkPolicy is blocking HBONE port ${target.dst.port})`,
          ),
        );
      }, timeoutMs);
      sock.once('error', (err: Error & { code?: string }) => {
        if (err instanceof ZtError) return fail(err);
        const handshake = tcpUp || err.code?.startsWith('ERR_TLS') || err.code?.startsWith('ERR_SSL');
        fail(
          new ZtError(
            handshake ? 'ZT_ERR_TLS_HANDSHAKE' : 'ZT_ERR_CONNECT_FAILED',
            `HBONE connect to ${formatHostPort(target.dst.ip, target.dst.port)} failed: ${err.message}`,
            { cause: err },
          ),
        );
      });
      sock.once('secureConnect', () => {
        if (sock.alpnProtocol !== 'h2') {
          fail(new ZtError('ZT_ERR_TLS_HANDSHAKE', `peer did not negotiate ALPN h2 (got ${String(sock.alpnProtocol)})`));
          return;
        }
        const session = http2.connect(`https://${formatHostPort(target.dst.ip, target.dst.port)}`, {
          createConnection: () => sock,
          settings: h2Settings(tuning),
          maxSessionMemory: 64,
        });
        raiseConnectionWindow(session, tuning);
        // Node does not always notice a peer closing right after the handshake (e.g. our
        // certificate refused under TLS 1.3): tie the session to the socket's life.
        sock.once('close', () => {
          if (!session.destroyed) session.destroy(new Error('HBONE connection closed by the peer'));
        });
        const pooled: PooledSession = { key, dst: formatHostPort(target.dst.ip, target.dst.port), session, active: 0, lastUsed: Date.now(), usable: true, keepalive: undefined, waiting: new Set() };
        // Lost without a GOAWAY (the peer process died: RST; or TCP_USER_TIMEOUT): the next
        // session to it is a trial. Our own closes never show up as a socket error.
        const onLost = (err: NodeJS.ErrnoException): void => {
          if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || err.code === 'ETIMEDOUT') this.peerSuspect(pooled.dst, `HBONE connection lost (${err.code})`);
        };
        // The error may surface on the TCP socket, the TLS socket or the session.
        raw.on('error', onLost);
        sock.on('error', onLost);
        session.on('error', onLost);
        pooled.keepalive = startKeepalive(session, {
          intervalMs: this.opts.keepaliveIntervalMs ?? KEEPALIVE_INTERVAL_MS,
          timeoutMs: this.opts.keepaliveTimeoutMs ?? KEEPALIVE_TIMEOUT_MS,
          lateMs: this.opts.probeTimeoutMs ?? PROBE_TIMEOUT_MS,
          onLate: () => this.markUnhealthy(pooled, 'a PING went unanswered'),
          bytesRead: () => raw.bytesRead,
        });
        const evict = (): void => this.evict(pooled);
        let goaway = false;
        session.once('goaway', () => {
          goaway = true;
          evict();
        });
        session.once('close', () => {
          // Still in service (we neither released nor gave up on it), no GOAWAY, pool open:
          // the peer went away without a word (its process died, the link broke). Its next
          // session is a trial.
          if (pooled.usable && !goaway && !this.closed) this.peerSuspect(pooled.dst, 'HBONE connection ended without a GOAWAY');
          evict();
        });
        session.on('error', evict);
        session.once('connect', () => {
          if (settled) return;
          if (this.closed) {
            // The pool was closed while this session was being set up.
            session.close();
            fail(new ZtError('ZT_ERR_DRAINING'));
            return;
          }
          settled = true;
          clearTimeout(timer);
          const list = this.sessions.get(key);
          if (list) list.push(pooled);
          else this.sessions.set(key, [pooled]);
          resolve(pooled);
        });
        session.once('error', (err) => fail(new ZtError('ZT_ERR_H2', `HTTP/2 session failed: ${err.message}`, { cause: err })));
        // The server may refuse our certificate only after the TLS 1.3 handshake (trust domain).
        session.once('close', () =>
          fail(new ZtError('ZT_ERR_TLS_HANDSHAKE', `peer ${formatHostPort(target.dst.ip, target.dst.port)} closed the connection during the HBONE handshake (our certificate refused?)`)),
        );
      });
    });
  }

  private release(p: PooledSession): void {
    p.active -= 1;
    p.lastUsed = Date.now();
    // An unhealthy session is kept only for its running streams.
    if (!p.usable && p.active === 0 && !p.session.closed && !p.session.destroyed) p.session.close();
  }

  private releaseIdle(): void {
    const now = Date.now();
    for (const [key, list] of this.sessions) {
      for (const p of [...list]) {
        if (p.active === 0 && now - p.lastUsed >= this.opts.idleReleaseMs) {
          p.usable = false;
          p.session.close();
          list.splice(list.indexOf(p), 1);
        }
      }
      if (list.length === 0) this.sessions.delete(key);
    }
  }
}
