// The HBONE server transport (15008): mutual TLS 1.3 with the certificate of the local
// workload whose IP the connection arrived on (chosen by the socket's local address,
// not SNI: clients send none), client certificate required and its trust domain equal
// to ours, ALPN h2, then an HTTP/2 server whose streams are handed to onStream.
// What a stream means (authorize, connect the app, answer) is proxy/inbound.ts's job.
// Certificates come from `tlsFor`: synchronously when the identity's is held (the usual case,
// no promise per connection), else a promise (issuance in flight): the socket waits, unread,
// at most the handshake timeout, then is closed with a logged reason (onRejected). A rotated
// certificate replaces the identity's SecureContext for new handshakes; open sessions go on.
// Invariant: no HTTP/2 byte is read from a peer whose certificate failed any check.
//
// HTTP/2 abuse (each case is exercised by test/integration/h2-abuse.test.ts with an
// independent client). What Node 20 (nghttp2 >= 1.61) already does, and what we add:
// - Rapid reset (CVE-2023-44487, fixed in Node 20.8.1 / nghttp2 1.57): nghttp2 sends GOAWAY
//   after a burst of ~1000 resets but keeps the socket open, and every reset stream still
//   reaches the application first. We hand a stream over only on the next turn of the event
//   loop (a HEADERS+RST_STREAM pair in one read never reaches the app) and count streams
//   that the peer ends before we answer: beyond `maxEarlyResets` per window, GOAWAY
//   ENHANCE_YOUR_CALM and the connection is closed.
// - CONTINUATION flood (CVE-2024-27983 fixed in Node 20.12.1; the generic nghttp2 variant
//   CVE-2024-28182 by nghttp2 1.61, also in 20.12.1): nghttp2 refuses a header block of
//   more than 8 CONTINUATIONs with GOAWAY; header size is bounded by maxHeaderListSize.
// - Too many concurrent streams: MAX_CONCURRENT_STREAMS is advertised; nghttp2 treats a peer
//   exceeding the acknowledged value as a connection error; maxSessionRejectedStreams bounds
//   streams Node itself refuses.
// - SETTINGS / PING floods: nghttp2 bounds unsent ACKs (a peer that does not read), Node
//   bounds entries per SETTINGS frame (maxSettings); a peer that reads its ACKs can flood
//   forever, so we count SETTINGS and PING frames per window (`maxControlFrames`).
// - A stream whose window stays 0: Http2Stream's write buffer applies backpressure, the
//   relay pauses the app socket (bounded by highWaterMark + kernel buffers).
// - A TLS handshake that never completes: handshakeTimeout; no ALPN: unknownProtocolTimeout.
// Every such connection is reported ONCE through onRejected, however many frames it sent.
import http2 from 'node:http2';
import type net from 'node:net';
import tls from 'node:tls';
import { checkClientTrustDomain, peerIdentityOf } from '../identity/verify.js';
import { canonicalIp, formatHostPort } from '../util/ip.js';
import { type H2Tuning, h2Settings, raiseConnectionWindow, startKeepalive } from './h2-settings.js';

export interface TlsCreds {
  key: string;
  /** The chain, leaf first. */
  cert: string;
  /** The roots peers' certificates are verified against. */
  ca: string;
}

/** Who is on the other end of one HBONE connection, proven by TLS. */
export interface HbonePeer {
  localIp: string;
  localPort: number;
  peerIp: string;
  peerPort: number;
  /** spiffe://… from the verified client certificate. */
  peerIdentity: string;
}

export interface HboneServerOptions {
  tuning: H2Tuning;
  trustDomain: string;
  /** The identity (spiffe://…) of the local workload at this IP, or undefined when none lives here. */
  identityFor: (localIp: string) => string | undefined;
  /**
   * The TLS key/cert chain/roots of a local identity: the value when it is at hand, a promise
   * while it is being fetched (rejects when it cannot be had).
   */
  tlsFor: (identity: string) => TlsCreds | Promise<TlsCreds>;
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, peer: HbonePeer) => void;
  /**
   * A connection refused before HTTP/2 (unknown local IP, TLS failure, trust domain), or an
   * HTTP/2 connection closed for misbehaviour (flood, protocol error). Called at most once
   * per connection; `peerIdentity` is set once TLS has proven it.
   */
  onRejected: (info: { peerAddr: string; localAddr: string; reason: string; peerIdentity?: string }) => void;
  /** TLS handshake deadline (default 10 s). */
  handshakeTimeoutMs?: number;
  /** Abuse limits per HTTP/2 connection; see DEFAULT_ABUSE_LIMITS. */
  limits?: Partial<AbuseLimits>;
}

export interface AbuseLimits {
  /** Streams the peer may end (RST_STREAM) before we answered, per window. */
  maxEarlyResets: number;
  /** SETTINGS + PING frames the peer may send per window. */
  maxControlFrames: number;
  windowMs: number;
}

export const DEFAULT_ABUSE_LIMITS: AbuseLimits = { maxEarlyResets: 200, maxControlFrames: 200, windowMs: 10_000 };

/** MAX_CONCURRENT_STREAMS advertised to peers. */
export const HBONE_MAX_CONCURRENT_STREAMS = 200;

/** Header list bytes (RFC 9113 §6.5.2: name + value + 32 per field) a CONNECT may carry. */
export const MAX_HEADER_LIST_BYTES = 16 * 1024;

/**
 * What we advertise as SETTINGS_MAX_HEADER_LIST_SIZE: larger than what we accept, on
 * purpose. Once the peer has acknowledged the advertised value, nghttp2 refuses a larger
 * block with a bare RST_STREAM that never reaches JavaScript: the abuse would go unlogged
 * and the connection would stay open. Up to this size the block reaches our own check
 * (MAX_HEADER_LIST_BYTES), which logs it once and closes the connection; beyond it nghttp2's
 * per-field limit (64 KiB) ends the session. Memory stays bounded either way.
 */
export const ADVERTISED_HEADER_LIST_BYTES = 64 * 1024;

function headerListSize(headers: http2.IncomingHttpHeaders): number {
  let n = 0;
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) n += k.length + String(one).length + 32;
  }
  return n;
}

/** What we know of one accepted connection, captured while its socket is alive. */
interface ConnInfo {
  peerAddr: string;
  localAddr: string;
  peerIdentity?: string;
  reported: boolean;
}

/** Counts events in fixed windows; true once `limit` is exceeded within one window. */
class WindowCounter {
  private start = 0;
  private n = 0;
  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
  ) {}
  hit(now: number): boolean {
    if (now - this.start >= this.windowMs) {
      this.start = now;
      this.n = 0;
    }
    return ++this.n > this.limit;
  }
}

/**
 * Streams opened and streams the peer reset before our answer, in fixed windows. Trips when
 * the resets exceed `limit` AND are more than half of the streams opened in the window (as
 * Envoy's premature-reset rule): a busy, honest client that cancels some CONNECTs (timeouts)
 * never trips it; the rapid-reset pattern (nearly every stream reset) does.
 */
export class EarlyResetWindow {
  private start = 0;
  private opened = 0;
  private early = 0;
  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
  ) {}
  private roll(now: number): void {
    if (now - this.start >= this.windowMs) {
      this.start = now;
      this.opened = 0;
      this.early = 0;
    }
  }
  open(now: number): void {
    this.roll(now);
    this.opened += 1;
  }
  reset(now: number): boolean {
    this.roll(now);
    this.early += 1;
    return this.early > this.limit && this.early * 2 > this.opened;
  }
}

interface IdentityServer {
  server: http2.Http2SecureServer;
  cert: string;
  ca: string;
}

/**
 * One (non-listening) Http2SecureServer per local identity: the accepted socket is
 * handed to the server of the workload it arrived for, so the certificate is chosen
 * by local address before the handshake, and Node's own TLS → HTTP/2 path does the rest.
 */
export class HboneServer {
  private readonly opts: HboneServerOptions;
  private readonly servers = new Map<string, IdentityServer>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly peers = new WeakMap<http2.Http2Session, HbonePeer>();
  /** Keyed by the accepted TCP socket (a TLSSocket is found through its `_parent`). */
  private readonly conns = new WeakMap<net.Socket, ConnInfo>();
  private readonly limits: AbuseLimits;
  private draining = false;

  constructor(opts: HboneServerOptions) {
    this.opts = opts;
    this.limits = { ...DEFAULT_ABUSE_LIMITS, ...opts.limits };
  }

  /** The accept-time record of a socket (the raw one, a TLSSocket over it, or a session's socket proxy). */
  private connOf(sock: net.Socket | undefined): ConnInfo | undefined {
    if (!sock) return undefined;
    try {
      return this.conns.get(sock) ?? this.conns.get((sock as unknown as { _parent?: net.Socket })._parent as net.Socket);
    } catch {
      return undefined; // a destroyed session's socket proxy throws
    }
  }

  /** Report a connection once, whatever number of frames or errors it produced. */
  private reject(conn: ConnInfo | undefined, reason: string): void {
    if (conn?.reported) return;
    if (conn) conn.reported = true;
    this.opts.onRejected({
      peerAddr: conn?.peerAddr ?? 'unknown',
      localAddr: conn?.localAddr ?? 'unknown',
      reason,
      ...(conn?.peerIdentity ? { peerIdentity: conn.peerIdentity } : {}),
    });
  }

  private serverFor(identity: string, creds: TlsCreds): http2.Http2SecureServer {
    const existing = this.servers.get(identity);
    if (existing) {
      // Renewed certificate (or roots): swap the context for new handshakes.
      if (existing.cert !== creds.cert || existing.ca !== creds.ca) {
        existing.server.setSecureContext({ key: creds.key, cert: creds.cert, ca: creds.ca, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' });
        existing.cert = creds.cert;
        existing.ca = creds.ca;
      }
      return existing.server;
    }
    const handshakeTimeout = this.opts.handshakeTimeoutMs ?? 10_000;
    const server = http2.createSecureServer({
      key: creds.key,
      cert: creds.cert,
      ca: creds.ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
      maxVersion: 'TLSv1.3',
      ALPNProtocols: ['h2'],
      allowHTTP1: false,
      settings: { ...h2Settings(this.opts.tuning, HBONE_MAX_CONCURRENT_STREAMS), maxHeaderListSize: ADVERTISED_HEADER_LIST_BYTES },
      // HBONE CONNECT requests carry a handful of headers; anything near these is abuse.
      maxHeaderListPairs: 64,
      maxSessionMemory: 64,
      maxSessionInvalidFrames: 100,
      maxSessionRejectedStreams: 100,
      maxSettings: 32,
      handshakeTimeout,
      unknownProtocolTimeout: handshakeTimeout,
    });
    // Runs before http2's own listener: refuse peers of another trust domain before any HTTP/2.
    server.prependListener('secureConnection', (sock: tls.TLSSocket) => {
      const cert = sock.getPeerCertificate();
      const tdError = checkClientTrustDomain(this.opts.trustDomain, cert);
      const identity = peerIdentityOf(cert);
      const conn = this.connOf(sock);
      if (tdError || !identity) {
        this.reject(conn, tdError?.message ?? 'client certificate has no SPIFFE identity');
        sock.destroy();
        return;
      }
      if (conn) conn.peerIdentity = identity;
    });
    server.on('tlsClientError', (err, sock) => {
      this.reject(this.connOf(sock), `TLS handshake failed: ${err.message}`);
    });
    server.on('unknownProtocol', (sock: tls.TLSSocket) => {
      this.reject(this.connOf(sock), 'TLS client did not negotiate ALPN h2');
      sock.destroy();
    });
    server.on('session', (session) => this.watchSession(session));
    server.on('sessionError', () => undefined);
    server.on('stream', (stream) => {
      // First thing: a stream must never be without an 'error' listener (a peer's
      // RST_STREAM or a dying session would otherwise crash the process).
      stream.on('error', () => undefined);
    });
    this.servers.set(identity, { server, cert: creds.cert, ca: creds.ca });
    return server;
  }

  /** Per-connection accounting for what Node does not bound itself; reports the connection once. */
  private watchSession(session: http2.ServerHttp2Session): void {
    this.sessions.add(session);
    const conn = this.connOf(session.socket as net.Socket);
    const earlyResets = new EarlyResetWindow(this.limits.maxEarlyResets, this.limits.windowMs);
    const controlFrames = new WindowCounter(this.limits.maxControlFrames, this.limits.windowMs);
    /** Streams we refused ourselves (not counted as the peer's resets). */
    const ownReset = new WeakSet<http2.Http2Stream>();
    let reason: string | undefined;
    const note = (why: string): void => {
      reason ??= why;
    };
    let calmed = false;
    const calm = (why: string): void => {
      if (calmed || session.destroyed) return;
      calmed = true;
      note(why);
      // GOAWAY first (destroy() alone sends NO_ERROR when called from inside a frame callback),
      // then close the connection without waiting for the peer's streams.
      session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      setImmediate(() => session.destroy(undefined, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM));
    };
    raiseConnectionWindow(session, this.opts.tuning);
    startKeepalive(session);
    session.on('error', (err: Error) => note(`HTTP/2 session error: ${err.message}`));
    session.on('frameError', (type: number, code: number) => note(`HTTP/2 frame error (frame type ${type}, code ${code})`));
    session.on('remoteSettings', () => {
      if (controlFrames.hit(Date.now())) calm(`HTTP/2 SETTINGS/PING flood (more than ${this.limits.maxControlFrames} in ${this.limits.windowMs} ms)`);
    });
    session.on('ping', () => {
      if (controlFrames.hit(Date.now())) calm(`HTTP/2 SETTINGS/PING flood (more than ${this.limits.maxControlFrames} in ${this.limits.windowMs} ms)`);
    });
    session.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      stream.on('error', () => undefined);
      earlyResets.open(Date.now());
      stream.on('close', () => {
        // The peer ended a stream we had not answered yet: the rapid-reset pattern.
        if (!stream.headersSent && stream.rstCode !== undefined && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR && !ownReset.has(stream)) {
          if (earlyResets.reset(Date.now())) calm(`HTTP/2 rapid reset (more than ${this.limits.maxEarlyResets} streams, and most of those opened, reset before an answer in ${this.limits.windowMs} ms)`);
        }
      });
      // Node advertises maxHeaderListSize but does not enforce it below nghttp2's 64 KiB per field.
      const size = headerListSize(headers);
      if (size > MAX_HEADER_LIST_BYTES) {
        ownReset.add(stream);
        stream.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
        calm(`HTTP/2 header block of ${size} bytes (limit ${MAX_HEADER_LIST_BYTES})`);
        return;
      }
      // Hand over on the next turn: a stream whose RST_STREAM came in the same read is gone by then.
      setImmediate(() => {
        if (stream.destroyed || stream.closed || session.destroyed) return;
        const peer = this.peerOf(session);
        if (!peer) {
          ownReset.add(stream);
          stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
          return;
        }
        this.opts.onStream(stream, headers, peer);
      });
    });
    session.once('close', () => {
      this.sessions.delete(session);
      if (reason !== undefined) this.reject(conn, reason);
    });
    if (this.draining) session.close();
  }

  /** The verified peer of a session, computed once per session. */
  private peerOf(session: http2.Http2Session): HbonePeer | undefined {
    const cached = this.peers.get(session);
    if (cached) return cached;
    if (session.destroyed) return undefined;
    const sock = session.socket as tls.TLSSocket | undefined;
    if (!sock || !sock.authorized) return undefined;
    const cert = sock.getPeerCertificate();
    if (checkClientTrustDomain(this.opts.trustDomain, cert)) return undefined;
    const identity = peerIdentityOf(cert);
    if (!identity) return undefined;
    const peer: HbonePeer = {
      localIp: canonicalIp(sock.localAddress ?? '') ?? '',
      localPort: sock.localPort ?? 0,
      peerIp: canonicalIp(sock.remoteAddress ?? '') ?? '',
      peerPort: sock.remotePort ?? 0,
      peerIdentity: identity,
    };
    this.peers.set(session, peer);
    return peer;
  }

  /** Take over a TCP connection accepted on the HBONE listener. */
  handleSocket(socket: net.Socket): void {
    // Addresses are read now: once TLS fails or times out the socket no longer has them.
    const localIp = canonicalIp(socket.localAddress ?? '') ?? socket.localAddress ?? '';
    const conn: ConnInfo = {
      peerAddr: formatHostPort(canonicalIp(socket.remoteAddress ?? '') ?? socket.remoteAddress ?? '', socket.remotePort ?? 0),
      localAddr: formatHostPort(localIp, socket.localPort ?? 0),
      reported: false,
    };
    const identity = this.draining ? undefined : this.opts.identityFor(localIp);
    if (!identity) {
      this.reject(conn, this.draining ? 'draining' : `no local workload with IP ${localIp}`);
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    let creds: TlsCreds | Promise<TlsCreds>;
    try {
      creds = this.opts.tlsFor(identity);
    } catch (err) {
      this.reject(conn, `no certificate for ${identity}: ${(err as Error).message}`);
      socket.destroy();
      return;
    }
    if (!(creds instanceof Promise)) {
      this.handOver(socket, conn, identity, creds);
      return;
    }
    this.awaitCreds(socket, conn, localIp, identity, creds);
  }

  private handOver(socket: net.Socket, conn: ConnInfo, identity: string, creds: TlsCreds): void {
    let server: http2.Http2SecureServer;
    try {
      server = this.serverFor(identity, creds);
    } catch (err) {
      this.reject(conn, `no certificate for ${identity}: ${(err as Error).message}`);
      socket.destroy();
      return;
    }
    this.conns.set(socket, conn);
    server.emit('connection', socket);
  }

  /**
   * The identity's certificate is being fetched: the socket waits (its ClientHello stays in
   * its buffer, read by TLS once handed over) at most the handshake timeout.
   */
  private awaitCreds(socket: net.Socket, conn: ConnInfo, localIp: string, identity: string, pending: Promise<TlsCreds>): void {
    const timeoutMs = this.opts.handshakeTimeoutMs ?? 10_000;
    let settled = false;
    const finish = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      socket.removeListener('error', onError);
      socket.removeListener('close', onClose);
      return true;
    };
    const fail = (reason: string): void => {
      if (!finish()) return;
      this.reject(conn, reason);
      socket.destroy();
    };
    const onError = (): void => undefined;
    const onClose = (): void => fail(`peer closed while the certificate for ${identity} was being fetched`);
    const timer = setTimeout(() => fail(`certificate for ${identity} not ready within the handshake timeout (${timeoutMs} ms)`), timeoutMs);
    socket.on('error', onError);
    socket.once('close', onClose);
    pending.then(
      (creds) => {
        if (settled || socket.destroyed) return;
        // The workload may have left, or the server started draining, while we waited.
        if (this.draining) return fail('draining');
        if (this.opts.identityFor(localIp) !== identity) return fail(`workload ${identity} left ${localIp} while its certificate was being fetched`);
        finish();
        this.handOver(socket, conn, identity, creds);
      },
      (err: unknown) => fail(`no certificate for ${identity}: ${err instanceof Error ? err.message : String(err)}`),
    );
  }

  /**
   * Drop the per-identity servers of identities not in `keep` (workloads that left this
   * node): new handshakes can no longer pick them; their live sessions finish on their own.
   */
  retainIdentities(keep: ReadonlySet<string>): void {
    for (const [identity, entry] of this.servers) {
      if (keep.has(identity)) continue;
      this.servers.delete(identity);
      entry.server.close();
    }
  }

  /** Identities that currently have a server (for tests and the admin dump). */
  identities(): string[] {
    return [...this.servers.keys()];
  }

  sessionCount(): number {
    return this.sessions.size;
  }

  /** Graceful: GOAWAY to every peer; sessions close when their streams end. */
  drain(): void {
    this.draining = true;
    for (const s of this.sessions) s.close();
  }

  /** Force-close everything (the drain deadline passed). */
  destroy(): void {
    this.draining = true;
    for (const s of this.sessions) s.destroy();
    this.sessions.clear();
  }
}
