// Outbound: a connection captured on 15001 (or entering through SOCKS5) for an original
// destination. Find the source workload (node mode: by the client's IP among this node's
// workloads; dedicated mode: the one workload), decide the route synchronously
// (route/outbound-route.ts), then do I/O: HBONE through the pool, plain TCP, or
// passthrough; HBONE to a workload this same ztunnel serves is handed to the inbound
// side in process (the node's routing would not bring it back to us).
// The source identity's certificate: SecretManager's synchronous fast path when held, else
// its (shared) fetch is awaited; failing that, the connection fails with
// ZT_ERR_IDENTITY_UNAVAILABLE.
// Outbound is never authorized by policy; the receiving side enforces it.
import type http2 from 'node:http2';
import type net from 'node:net';
import type { Workload } from '../config/types.js';
import { type CopySide, resetSocket, socketSide } from '../copy/copy.js';
import { ZtError, errorMessage } from '../errors.js';
import { spiffeIdOfWorkload } from '../identity/spiffe.js';
import type { ConnectionRecord } from '../record/telemetry.js';
import { buildOutboundRoute, type Destination, type OutboundRoute } from '../route/outbound-route.js';
import { buildBaggage, buildForwarded, buildTraceparent } from '../tunnel/hbone-headers.js';
import type { HbonePool } from '../tunnel/hbone-pool.js';
import { connectTcp } from '../tunnel/tcp-connect.js';
import { canonicalIp, formatHostPort } from '../util/ip.js';
import { deliverLocal, h2StreamSide, trackedRelay } from './deliver.js';
import { type ProxyContext, findDedicatedWorkload, isLocalWorkload } from './proxy-context.js';

/** Lets an entry protocol (SOCKS5) answer its client once the upstream is up or failed. */
export interface OutboundHooks {
  onEstablished?(): void;
  onFailed?(err: ZtError): void;
}

export class OutboundProxy {
  private readonly ctx: ProxyContext;
  private readonly pool: HbonePool;

  constructor(ctx: ProxyContext, pool: HbonePool) {
    this.ctx = ctx;
    this.pool = pool;
  }

  /** Never throws: a bug is counted, logged once and closes only this connection. */
  handle(socket: net.Socket, dst: Destination, hooks: OutboundHooks = {}): void {
    try {
      this.accept(socket, dst, hooks);
    } catch (err) {
      this.ctx.telemetry.unexpected('handler', 'outbound', err);
      resetSocket(socket);
    }
  }

  private accept(socket: net.Socket, dst: Destination, hooks: OutboundHooks): void {
    const { ctx } = this;
    ctx.telemetry.socketOpened('source');
    socket.on('close', () => ctx.telemetry.socketClosed('source'));
    socket.on('error', () => undefined);
    const srcIp = canonicalIp(socket.remoteAddress ?? '');
    // A client that reset right after the handshake has no peer address any more.
    if (!srcIp || !dst.ip) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const srcAddr = formatHostPort(srcIp, socket.remotePort ?? 0);
    const dstAddr = formatHostPort(dst.ip, dst.port);
    const fail = (err: ZtError): void => {
      ctx.telemetry.earlyDeny('outbound', srcAddr, dstAddr, err.message);
      hooks.onFailed?.(err);
      socket.destroy();
    };
    const source = this.findSource(srcIp);
    if (!source) return fail(new ZtError('ZT_ERR_ROUTE_UNKNOWN_SOURCE', `unknown source workload ${srcIp}: not a workload of this node`));
    const { state } = ctx.view();
    const route = buildOutboundRoute(state, source, dst, {
      network: ctx.config.network,
      illegalPorts: ctx.illegalPorts,
      hbonePort: ctx.config.ports.hboneTarget,
      random: Math.random,
    });
    if (route.kind === 'reject') {
      // A VIP with no healthy endpoint is a full connection failure (it had a service), else early deny.
      if (route.service) {
        const record = ctx.telemetry.open(this.contextOf(route, source, srcAddr));
        const err = new ZtError(route.code, route.reason);
        hooks.onFailed?.(err);
        socket.destroy();
        record.complete(err);
        return;
      }
      return fail(new ZtError(route.code, route.reason));
    }
    const record = ctx.telemetry.open(this.contextOf(route, source, srcAddr));
    let upstream: CopySide | undefined;
    this.run(socket, srcIp, srcAddr, dst, source, route, record, hooks, (u) => {
      upstream = u;
    }).then(
      (error) => record.complete(error),
      (err: unknown) => {
        // A bug: count and log it once, close both sides, and still write the record.
        ctx.telemetry.unexpected('handler', 'outbound', err);
        resetSocket(socket);
        upstream?.reset();
        record.complete(new ZtError('ZT_ERR_INTERNAL', `internal error: ${errorMessage(err)}`, { cause: err }));
      },
    );
  }

  /** Is this destination served by this very ztunnel (hand over in process)? */
  private servedHere(w: Workload): boolean {
    return isLocalWorkload(this.ctx.config, w);
  }

  private findSource(srcIp: string): Workload | undefined {
    const { ctx } = this;
    if (ctx.config.proxyMode === 'dedicated') return findDedicatedWorkload(ctx);
    const w = ctx.view().state.findWorkloadByIp(ctx.config.network, srcIp);
    return w && isLocalWorkload(ctx.config, w) ? w : undefined;
  }

  private contextOf(route: OutboundRoute, source: Workload, srcAddr: string) {
    const hbone = route.kind === 'hbone';
    const workload = route.kind === 'hbone' || route.kind === 'tcp' ? route.workload : undefined;
    const target = route.kind === 'hbone' ? route.actualDst : route.kind === 'reject' ? undefined : route.target;
    return {
      direction: 'outbound' as const,
      srcAddr,
      srcWorkload: source,
      srcIdentity: hbone ? spiffeIdOfWorkload(source) : undefined,
      dstAddr: target ? formatHostPort(target.ip, target.port) : '',
      hboneAddr: hbone ? route.hboneTarget : undefined,
      dstService: route.kind === 'passthrough' ? undefined : route.service,
      dstWorkload: workload,
      dstIdentity: workload ? spiffeIdOfWorkload(workload) : undefined,
      securityPolicy: hbone ? ('mutual_tls' as const) : ('unknown' as const),
    };
  }

  private async run(
    socket: net.Socket,
    srcIp: string,
    srcAddr: string,
    dst: Destination,
    source: Workload,
    route: Exclude<OutboundRoute, { kind: 'reject' }>,
    record: ConnectionRecord,
    hooks: OutboundHooks,
    onUpstream: (u: CopySide) => void,
  ): Promise<Error | undefined> {
    const { ctx } = this;
    const spoofIp = ctx.outboundTransparent() ? srcIp : undefined;
    const onSpoofFailure = (err: unknown): void =>
      ctx.telemetry.log.warn({ scope: 'outbound', error: errorMessage(err) }, 'original source unavailable; connecting unspoofed');

    if (route.kind === 'hbone' && this.servedHere(route.workload)) {
      // Same node: hand over in process, as the peer ztunnel would receive it. Both
      // records count the same bytes (flushed every interval, not only at close).
      return deliverLocal(
        ctx,
        {
          downstream: socketSide(socket),
          srcAddr,
          srcIp,
          srcWorkload: source,
          srcIdentity: spiffeIdOfWorkload(source),
          target: route.target,
          workload: route.workload,
          service: route.service,
          hboneAddr: route.hboneTarget,
          dstAddr: formatHostPort(route.actualDst.ip, route.actualDst.port),
          localSourceUid: source.uid,
          accept: () => {
            if (socket.destroyed) return false;
            hooks.onEstablished?.();
            return true;
          },
          refuse: (err) => {
            hooks.onFailed?.(err);
            resetSocket(socket);
          },
        },
        record.bytes,
      );
    }

    let upstream: CopySide;
    let actualDst: string;
    try {
      if (route.kind === 'hbone') {
        const identity = spiffeIdOfWorkload(source);
        const stream: http2.ClientHttp2Stream = await this.pool.connect(
          {
            sourceIdentity: identity,
            // Held certificate: no promise; else wait for the one in-flight issuance.
            tls: ctx.secrets.peekTlsOptions(identity) ?? (await ctx.secrets.fetch(identity)),
            expectedIdentities: route.expectedIdentities,
            dst: route.actualDst,
            sourceIp: spoofIp,
          },
          route.hboneTarget,
          {
            traceparent: buildTraceparent(),
            forwarded: buildForwarded(srcAddr, route.service?.hostname),
            baggage: buildBaggage(source),
          },
        );
        stream.on('error', () => undefined);
        upstream = h2StreamSide(stream);
        actualDst = formatHostPort(route.actualDst.ip, route.actualDst.port);
      } else {
        const sock = await connectTcp(route.target.ip, route.target.port, {
          sourceIp: spoofIp,
          mark: ctx.config.packetMark,
          timeoutMs: ctx.config.connectTimeoutMs,
          onSpoofFailure,
        });
        sock.on('error', () => undefined);
        upstream = socketSide(sock);
        actualDst = formatHostPort(route.target.ip, route.target.port);
      }
    } catch (err) {
      const zerr = err instanceof ZtError ? err : new ZtError('ZT_ERR_CONNECT_FAILED', errorMessage(err));
      hooks.onFailed?.(zerr);
      socket.destroy();
      return zerr;
    }
    onUpstream(upstream);
    if (socket.destroyed) {
      upstream.reset();
      return new ZtError('ZT_ERR_CONNECT_FAILED', 'downstream closed before the upstream was up');
    }
    hooks.onEstablished?.();
    return trackedRelay(
      ctx,
      {
        direction: 'outbound',
        src: srcAddr,
        originalDst: formatHostPort(dst.ip, dst.port),
        actualDst,
        protocol: route.kind === 'hbone' ? 'HBONE' : 'TCP',
        workloadUids: [source.uid],
        authz: undefined,
      },
      socketSide(socket),
      upstream,
      record.bytes,
    );
  }
}
