// Inbound: HBONE CONNECT streams from 15008 (upstream: https://github.com/istio/ztunnel/blob/master/src/proxy/inbound.rs), plaintext
// connections from 15006 (inbound_passthrough.rs), and same-node HBONE traffic handed over in process.
// Order for every path: validate → build context → authorize → connect the app → only
// then answer 200 → copy. A denied connection never reaches the app: no byte is sent.
// Every authorized connection is tracked for re-authorization on policy change.
// Errors become values at one edge per connection: the CONNECT status, the metrics and
// the access-log line (record.complete); nothing here throws past a handler.
import http2 from 'node:http2';
import type net from 'node:net';
import type { Service, Workload } from '../config/types.js';
import { type AuthzConnection, type PolicyStore, buildAuthzConnection } from '../authorize/index.js';
import { type CopySide, resetSocket, socketSide } from '../copy/copy.js';
import { relay } from '../copy/relay.js';
import { ZtError, errorMessage } from '../errors.js';
import { spiffeIdOfWorkload } from '../identity/spiffe.js';
import type { ConnectionRecord } from '../record/telemetry.js';
import type { ConnectionContext } from '../record/types.js';
import { CANCEL, NO_ERROR } from '../tunnel/h2-settings.js';
import { buildBaggage, forwardedHost } from '../tunnel/hbone-headers.js';
import type { HbonePeer } from '../tunnel/hbone-server.js';
import { connectTcp } from '../tunnel/tcp-connect.js';
import { canonicalIp, formatHostPort, parseHostPort } from '../util/ip.js';
import { type ProxyContext, findLocalWorkloadByIp } from './proxy-context.js';

export function h2StreamSide(stream: http2.Http2Stream): CopySide {
  // Node drops stream.session before 'close': keep our own reference to the session.
  const session = stream.session;
  return {
    stream,
    // destroy() sends RST_STREAM (INTERNAL_ERROR) alone; close(code) would first send an
    // END_STREAM that the peer would take for a clean half-close.
    reset: () => {
      if (!stream.destroyed) stream.destroy(new Error('connection reset'));
    },
    // RST_STREAM NO_ERROR/CANCEL counts as EOF (as upstream); a session that died under
    // the stream (connection lost, forced close) is a reset.
    closedCleanly: () => (stream.rstCode === NO_ERROR || stream.rstCode === CANCEL) && !(session?.destroyed ?? true),
  };
}

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

export interface LocalDelivery {
  downstream: CopySide;
  srcAddr: string;
  srcIp: string;
  srcWorkload: Workload | undefined;
  /** Proven identity of the source (same-node HBONE: the source workload's own). */
  srcIdentity: string | undefined;
  target: { ip: string; port: number };
  workload: Workload;
  service: Service | undefined;
  hboneAddr: string | undefined;
  dstAddr: string;
  /** Answer the downstream once the app is connected (HBONE 200); false if it is gone. */
  accept(): boolean;
  refuse(err: ZtError): void;
}

export class InboundProxy {
  private readonly ctx: ProxyContext;

  constructor(ctx: ProxyContext) {
    this.ctx = ctx;
  }

  /** One CONNECT stream on an authenticated HBONE connection. */
  handleStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, peer: HbonePeer): void {
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
    this.deliver({
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
    }).catch((err: unknown) => this.onUnexpected(err));
  }

  /** A bug, not an outcome: log it, keep serving. */
  private onUnexpected(err: unknown): void {
    this.ctx.telemetry.log.error({ scope: 'inbound', error: errorMessage(err), stack: (err as Error)?.stack }, 'unexpected error in a connection handler');
  }

  /** A plaintext connection captured on 15006, for origDst. */
  handlePlaintext(socket: net.Socket, origDst: { ip: string; port: number }): void {
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
    ctx.telemetry.socketOpened('destination');
    socket.once('close', () => ctx.telemetry.socketClosed('destination'));
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
    this.deliver({
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
    }).catch((err: unknown) => this.onUnexpected(err));
  }

  /** Deny → refuse the downstream and complete the record; returns the error, or undefined when allowed. */
  private checkPolicy(d: LocalDelivery, conn: AuthzConnection, policies: PolicyStore, record: ConnectionRecord): ZtError | undefined {
    const decision = policies.authorize(d.workload, conn);
    if (decision.kind !== 'deny') return undefined;
    const err = denialOf(decision);
    d.refuse(err);
    record.complete(err, { extraFields: decision.policy ? { policy: decision.policy } : {} });
    return err;
  }

  /** Authorize, connect the app, answer, copy, record. Shared by all inbound paths. */
  async deliver(d: LocalDelivery, outboundRecord?: ConnectionRecord): Promise<Error | undefined> {
    const { ctx } = this;
    const cctx: ConnectionContext = {
      direction: 'inbound',
      srcAddr: d.srcAddr,
      srcWorkload: d.srcWorkload,
      srcIdentity: d.srcIdentity,
      dstAddr: d.dstAddr,
      hboneAddr: d.hboneAddr,
      dstService: d.service,
      dstWorkload: d.workload,
      dstIdentity: spiffeIdOfWorkload(d.workload),
      securityPolicy: d.srcIdentity ? 'mutual_tls' : 'unknown',
    };
    const record = ctx.telemetry.open(cctx);
    const authzConn = buildAuthzConnection(d.srcIp, d.target.ip, d.target.port, d.srcIdentity);
    const view = ctx.view();
    const denied = this.checkPolicy(d, authzConn, view.policies, record);
    if (denied) return denied;
    let app: net.Socket;
    try {
      app = await connectTcp(d.target.ip, d.target.port, {
        sourceIp: ctx.inboundTransparent() ? d.srcIp : undefined,
        mark: ctx.config.packetMark,
        timeoutMs: ctx.config.connectTimeoutMs,
        onSpoofFailure: (err) => ctx.telemetry.log.warn({ scope: 'inbound', error: errorMessage(err) }, 'original source unavailable; connecting unspoofed'),
      });
    } catch (err) {
      const zerr = err instanceof ZtError ? err : new ZtError('ZT_ERR_CONNECT_FAILED', errorMessage(err));
      d.refuse(zerr);
      record.complete(zerr);
      return zerr;
    }
    app.on('error', () => undefined);
    // The policies may have changed while we were connecting: the tracker would not have seen us.
    const now = ctx.view();
    if (now !== view) {
      const deniedLate = this.checkPolicy(d, authzConn, now.policies, record);
      if (deniedLate) {
        app.destroy();
        return deniedLate;
      }
    }
    if (d.downstream.stream.destroyed || !d.accept()) {
      app.destroy();
      const err = new ZtError('ZT_ERR_CONNECT_FAILED', 'downstream closed before the app connection was up');
      d.downstream.reset();
      record.complete(err);
      return err;
    }
    let abortError: Error | undefined;
    const aborter = new AbortController();
    const untrack = ctx.tracker.add({
      direction: 'inbound',
      src: d.srcAddr,
      originalDst: formatHostPort(d.target.ip, d.target.port),
      actualDst: formatHostPort(d.target.ip, d.target.port),
      protocol: d.srcIdentity ? 'HBONE' : 'TCP',
      authz: { workload: d.workload, conn: authzConn },
      abort: (err) => {
        abortError = err;
        aborter.abort();
        d.downstream.reset();
        resetSocket(app);
      },
    });
    const outcome = await relay(d.downstream, socketSide(app), record.bytes, { splice: ctx.config.spliceEnabled, signal: aborter.signal });
    untrack();
    if (outboundRecord) {
      outboundRecord.bytes.clientToServer = record.bytes.clientToServer;
      outboundRecord.bytes.serverToClient = record.bytes.serverToClient;
    }
    const error = abortError ?? outcome.error;
    record.complete(error);
    return error;
  }
}

function denialOf(decision: { kind: 'deny'; reason: string }): ZtError {
  return new ZtError('ZT_ERR_AUTHZ_DENIED', `connection closed due to policy rejection: ${decision.reason}`);
}

function respond(stream: http2.ServerHttp2Stream, status: number): void {
  if (stream.destroyed || stream.headersSent) return;
  try {
    stream.respond({ ':status': status }, { endStream: true });
  } catch {
    stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
  }
}
