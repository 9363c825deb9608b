// Inbound: HBONE CONNECT streams from 15008 (upstream: https://github.com/istio/ztunnel/blob/master/src/proxy/inbound.rs)
// and plaintext connections from 15006 (upstream: inbound_passthrough.rs). This file
// validates what arrived and builds the delivery; deliver.ts does the rest (authorize →
// connect the app → answer → copy → record), the same way for every path.
// Nothing here throws past a handler: a bug is counted, logged once, and closes only its
// own connection.
import http2 from 'node:http2';
import type net from 'node:net';
import type { Service, Workload } from '../config/types.js';
import { resetSocket, socketSide } from '../copy/copy.js';
import { ZtError } from '../errors.js';
import { buildBaggage, forwardedHost } from '../tunnel/hbone-headers.js';
import type { HbonePeer } from '../tunnel/hbone-server.js';
import { canonicalIp, formatHostPort, parseHostPort } from '../util/ip.js';
import { deliverLocal, h2StreamSide } from './deliver.js';
import { type ProxyContext, findLocalWorkloadByIp } from './proxy-context.js';

/** Which of the workload's services the connection was for: forwarded host, else by target port. */
function guessService(ctx: ProxyContext, w: Workload, port: number, host: string | undefined): Service | undefined {
  const services = ctx.view().state.servicesOf(w);
  if (host) {
    const byHost = services.find((s) => s.hostname === host);
    if (byHost) return byHost;
  }
  for (const s of services) {
    const ep = s.endpoints.get(w.uid);
    for (const [svcPort, target] of s.ports) {
      const t = ep?.port.get(svcPort) || target;
      if (t === port) return s;
    }
  }
  return undefined;
}

export class InboundProxy {
  private readonly ctx: ProxyContext;

  constructor(ctx: ProxyContext) {
    this.ctx = ctx;
  }

  /** One CONNECT stream on an authenticated HBONE connection. */
  handleStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, peer: HbonePeer): void {
    try {
      this.acceptStream(stream, headers, peer);
    } catch (err) {
      this.ctx.telemetry.unexpected('handler', 'inbound', err);
      respond(stream, 500);
      if (!stream.destroyed) stream.destroy();
    }
  }

  /** A plaintext connection captured on 15006, for origDst. */
  handlePlaintext(socket: net.Socket, origDst: { ip: string; port: number }): void {
    try {
      this.acceptPlaintext(socket, origDst);
    } catch (err) {
      this.ctx.telemetry.unexpected('handler', 'inbound', err);
      resetSocket(socket);
    }
  }

  private acceptStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, peer: HbonePeer): void {
    const { ctx } = this;
    const srcAddr = formatHostPort(peer.peerIp, peer.peerPort);
    const dstAddr = formatHostPort(peer.localIp, peer.localPort);
    const early = (err: ZtError): void => {
      ctx.telemetry.earlyDeny('inbound', srcAddr, dstAddr, err.message, { 'src.identity': peer.peerIdentity });
      respond(stream, err.hboneStatus);
    };
    if (headers[':method'] !== 'CONNECT') return early(new ZtError('ZT_ERR_INBOUND_BAD_METHOD', `method ${String(headers[':method'])} is not CONNECT`));
    const authority = headers[':authority'];
    const hp = typeof authority === 'string' ? parseHostPort(authority) : undefined;
    const targetIp = hp && canonicalIp(hp.host);
    if (!hp || !targetIp) return early(new ZtError('ZT_ERR_INBOUND_BAD_AUTHORITY', `invalid authority ${JSON.stringify(authority ?? '')}: expected ip:port`));
    if (targetIp !== peer.localIp) return early(new ZtError('ZT_ERR_INBOUND_IP_MISMATCH', `ip mismatch: ${peer.localIp} != ${targetIp}`));
    if (ctx.illegalPorts.has(hp.port)) return early(new ZtError('ZT_ERR_ROUTE_SELF_CALL', `attempted recursive call to ourselves (port ${hp.port})`));
    const workload = findLocalWorkloadByIp(ctx, peer.localIp);
    if (!workload) return early(new ZtError('ZT_ERR_INBOUND_UNKNOWN_WORKLOAD', `unknown local workload ${peer.localIp}`));
    const { state } = ctx.view();
    const srcWorkload = state.findWorkloadByIp(ctx.config.network, peer.peerIp);
    void deliverLocal(ctx, {
      downstream: h2StreamSide(stream),
      srcAddr,
      srcIp: peer.peerIp,
      srcWorkload,
      srcIdentity: peer.peerIdentity,
      target: { ip: targetIp, port: hp.port },
      workload,
      service: guessService(ctx, workload, hp.port, forwardedHost(headers.forwarded)),
      hboneAddr: authority as string,
      dstAddr,
      accept: () => {
        if (stream.destroyed || stream.closed) return false;
        const baggage = buildBaggage(workload);
        try {
          stream.respond(baggage ? { ':status': 200, baggage } : { ':status': 200 });
          return true;
        } catch {
          return false;
        }
      },
      refuse: (err) => respond(stream, err.hboneStatus),
    });
  }

  private acceptPlaintext(socket: net.Socket, origDst: { ip: string; port: number }): void {
    const { ctx } = this;
    const srcIp = canonicalIp(socket.remoteAddress ?? '');
    socket.on('error', () => undefined);
    // A client that reset right after the handshake has no peer address any more.
    if (!srcIp || !origDst.ip) {
      socket.destroy();
      return;
    }
    const srcAddr = formatHostPort(srcIp, socket.remotePort ?? 0);
    const dstAddr = formatHostPort(origDst.ip, origDst.port);
    if (ctx.illegalPorts.has(origDst.port)) {
      ctx.telemetry.earlyDeny('inbound', srcAddr, dstAddr, `attempted recursive call to ourselves (port ${origDst.port})`);
      socket.destroy();
      return;
    }
    const workload = findLocalWorkloadByIp(ctx, origDst.ip);
    if (!workload) {
      ctx.telemetry.earlyDeny('inbound', srcAddr, dstAddr, `unknown local workload ${origDst.ip}`);
      socket.destroy();
      return;
    }
    void deliverLocal(ctx, {
      downstream: socketSide(socket),
      srcAddr,
      srcIp,
      srcWorkload: ctx.view().state.findWorkloadByIp(ctx.config.network, srcIp),
      srcIdentity: undefined,
      target: origDst,
      workload,
      service: guessService(ctx, workload, origDst.port, undefined),
      hboneAddr: undefined,
      dstAddr,
      accept: () => !socket.destroyed,
      refuse: () => resetSocket(socket),
    });
  }
}

function respond(stream: http2.ServerHttp2Stream, status: number): void {
  if (stream.destroyed || stream.headersSent) return;
  try {
    stream.respond({ ':status': status }, { endStream: true });
  } catch {
    stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
  }
}
