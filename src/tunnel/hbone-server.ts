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
  /** The TLS context of the local workload at this IP, or undefined when none lives here. */
  secureContextFor: (localIp: string) => tls.SecureContext | undefined;
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, peer: HbonePeer) => void;
  /** A connection refused before HTTP/2 (unknown local IP, TLS failure, trust domain). */
  onRejected: (info: { peerAddr: string; localAddr: string; reason: string }) => void;
  handshakeTimeoutMs?: number;
}

export class HboneServer {
  private readonly opts: HboneServerOptions;
  private readonly h2: http2.Http2Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly peers = new WeakMap<http2.Http2Session, HbonePeer>();
  private pendingPeer: HbonePeer | undefined;
  private draining = false;

  constructor(opts: HboneServerOptions) {
    this.opts = opts;
    this.h2 = http2.createServer({ settings: h2Settings(opts.tuning, 200), maxSessionMemory: 64 });
    this.h2.on('session', (session) => {
      // 'session' fires synchronously inside emit('connection'), so pendingPeer is ours.
      const peer = this.pendingPeer;
      if (peer) this.peers.set(session, peer);
      this.sessions.add(session);
      raiseConnectionWindow(session, opts.tuning);
      startKeepalive(session);
      session.once('close', () => this.sessions.delete(session));
      session.on('error', () => undefined);
      if (this.draining) session.close();
    });
    this.h2.on('stream', (stream, headers) => {
      const peer = this.peers.get(stream.session as http2.Http2Session);
      if (!peer) {
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      opts.onStream(stream, headers, peer);
    });
  }

  /** Take over a TCP connection accepted on the HBONE listener. */
  handleSocket(socket: net.Socket): void {
    const localIp = canonicalIp(socket.localAddress ?? '') ?? '';
    const peerIp = canonicalIp(socket.remoteAddress ?? '') ?? '';
    const localAddr = `${localIp}:${socket.localPort}`;
    const peerAddr = `${peerIp}:${socket.remotePort}`;
    const context = this.draining ? undefined : this.opts.secureContextFor(localIp);
    if (!context) {
      this.opts.onRejected({ peerAddr, localAddr, reason: this.draining ? 'draining' : `no local workload with IP ${localIp}` });
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const secure = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: context,
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ['h2'],
    });
    const timer = setTimeout(() => {
      this.opts.onRejected({ peerAddr, localAddr, reason: 'TLS handshake timed out' });
      secure.destroy();
    }, this.opts.handshakeTimeoutMs ?? 10_000);
    secure.once('error', (err) => {
      clearTimeout(timer);
      this.opts.onRejected({ peerAddr, localAddr, reason: `TLS handshake failed: ${err.message}` });
      secure.destroy();
    });
    secure.once('secure', () => {
      clearTimeout(timer);
      const cert = secure.getPeerCertificate();
      const tdError = checkClientTrustDomain(this.opts.trustDomain, cert);
      const identity = peerIdentityOf(cert);
      if (tdError || !identity || secure.alpnProtocol !== 'h2') {
        this.opts.onRejected({
          peerAddr,
          localAddr,
          reason: tdError?.message ?? (identity ? `ALPN ${String(secure.alpnProtocol)} is not h2` : 'client certificate has no SPIFFE identity'),
        });
        secure.destroy();
        return;
      }
      secure.removeAllListeners('error');
      this.pendingPeer = { localIp, localPort: socket.localPort ?? 0, peerIp, peerPort: socket.remotePort ?? 0, peerIdentity: identity };
      try {
        this.h2.emit('connection', secure);
      } finally {
        this.pendingPeer = undefined;
      }
    });
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
