// The HBONE server transport (15008): mutual TLS 1.3 with the certificate of the local
// workload whose IP the connection arrived on (chosen by the socket's local address,
// not SNI: clients send none), client certificate required and its trust domain equal
// to ours, ALPN h2, then an HTTP/2 server whose streams are handed to onStream.
// What a stream means (authorize, connect the app, answer) is proxy/inbound.ts's job.
// Invariant: no HTTP/2 byte is read from a peer whose certificate failed any check.
import http2 from 'node:http2';
import type net from 'node:net';
import tls from 'node:tls';
import { checkClientTrustDomain, peerIdentityOf } from '../identity/verify.js';
import { canonicalIp } from '../util/ip.js';
import { type H2Tuning, h2Settings, raiseConnectionWindow, startKeepalive } from './h2-settings.js';

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
  /** The TLS key/cert/roots of a local identity. */
  tlsFor: (identity: string) => { key: string; cert: string; ca: string };
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, peer: HbonePeer) => void;
  /** A connection refused before HTTP/2 (unknown local IP, TLS failure, trust domain). */
  onRejected: (info: { peerAddr: string; localAddr: string; reason: string }) => void;
  handshakeTimeoutMs?: number;
}

interface IdentityServer {
  server: http2.Http2SecureServer;
  cert: string;
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
  private draining = false;

  constructor(opts: HboneServerOptions) {
    this.opts = opts;
  }

  private serverFor(identity: string): http2.Http2SecureServer {
    const creds = this.opts.tlsFor(identity);
    const existing = this.servers.get(identity);
    if (existing) {
      // Renewed certificate: swap the context for new handshakes.
      if (existing.cert !== creds.cert) {
        existing.server.setSecureContext({ key: creds.key, cert: creds.cert, ca: creds.ca });
        existing.cert = creds.cert;
      }
      return existing.server;
    }
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
      settings: h2Settings(this.opts.tuning, 200),
      maxSessionMemory: 64,
      handshakeTimeout: this.opts.handshakeTimeoutMs ?? 10_000,
    });
    // Runs before http2's own listener: refuse peers of another trust domain before any HTTP/2.
    server.prependListener('secureConnection', (sock: tls.TLSSocket) => {
      const cert = sock.getPeerCertificate();
      const tdError = checkClientTrustDomain(this.opts.trustDomain, cert);
      const identity = peerIdentityOf(cert);
      if (tdError || !identity) {
        this.opts.onRejected({
          peerAddr: `${canonicalIp(sock.remoteAddress ?? '') ?? ''}:${sock.remotePort}`,
          localAddr: `${canonicalIp(sock.localAddress ?? '') ?? ''}:${sock.localPort}`,
          reason: tdError?.message ?? 'client certificate has no SPIFFE identity',
        });
        sock.destroy();
      }
    });
    server.on('tlsClientError', (err, sock) => {
      this.opts.onRejected({
        peerAddr: `${canonicalIp(sock.remoteAddress ?? '') ?? ''}:${sock.remotePort}`,
        localAddr: `${canonicalIp(sock.localAddress ?? '') ?? ''}:${sock.localPort}`,
        reason: `TLS handshake failed: ${err.message}`,
      });
    });
    server.on('session', (session) => {
      this.sessions.add(session);
      raiseConnectionWindow(session, this.opts.tuning);
      startKeepalive(session);
      session.once('close', () => this.sessions.delete(session));
      session.on('error', () => undefined);
      if (this.draining) session.close();
    });
    server.on('sessionError', () => undefined);
    server.on('stream', (stream, headers) => {
      // First thing: a stream must never be without an 'error' listener (a peer's
      // RST_STREAM or a dying session would otherwise crash the process).
      stream.on('error', () => undefined);
      if (stream.destroyed || !stream.session) return;
      const peer = this.peerOf(stream.session as http2.Http2Session);
      if (!peer) {
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      this.opts.onStream(stream, headers, peer);
    });
    this.servers.set(identity, { server, cert: creds.cert });
    return server;
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
    const localIp = canonicalIp(socket.localAddress ?? '') ?? '';
    const identity = this.draining ? undefined : this.opts.identityFor(localIp);
    if (!identity) {
      this.opts.onRejected({
        peerAddr: `${canonicalIp(socket.remoteAddress ?? '') ?? ''}:${socket.remotePort}`,
        localAddr: `${localIp}:${socket.localPort}`,
        reason: this.draining ? 'draining' : `no local workload with IP ${localIp}`,
      });
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    let server: http2.Http2SecureServer;
    try {
      server = this.serverFor(identity);
    } catch (err) {
      this.opts.onRejected({
        peerAddr: `${canonicalIp(socket.remoteAddress ?? '') ?? ''}:${socket.remotePort}`,
        localAddr: `${localIp}:${socket.localPort}`,
        reason: `no certificate for ${identity}: ${(err as Error).message}`,
      });
      socket.destroy();
      return;
    }
    server.emit('connection', socket);
  }

  /** Stub until the per-identity pruning lands (see the h2-abuse branch). */
  retainIdentities(_keep: ReadonlySet<string>): void {
    /* replaced on merge */
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
