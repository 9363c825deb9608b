// The last leg of every connection that ends at a local app, shared by the three ways in:
// an HBONE CONNECT stream (15008), a plaintext connection (15006) and a same-node hand-over
// from the outbound side. One order, always: authorize → connect the app → re-check the
// policy if it changed meanwhile → answer the downstream → copy → record.
// Also the one place a proxied connection is tracked while it copies (trackedRelay), used
// by the outbound side too.
// Invariants, on every path including a bug (a throw anywhere below):
// - the record is completed exactly once (one access-log line, closed/failed counters);
// - the connection is untracked (drain and config_dump never see a ghost);
// - both sides are closed (a reset when it did not end cleanly);
// - a denied connection never reaches the app: no byte is sent.
import type http2 from 'node:http2';
import type net from 'node:net';
import type { Service, Workload } from '../config/types.js';
import { type AuthzConnection, type PolicyStore, buildAuthzConnection } from '../authorize/index.js';
import { type CopySide, resetSocket, socketSide } from '../copy/copy.js';
import { maySplice, relay } from '../copy/relay.js';
import { ZtError, errorMessage } from '../errors.js';
import { spiffeIdOfWorkload } from '../identity/spiffe.js';
import type { ConnectionRecord } from '../record/telemetry.js';
import type { ByteCounters, ConnectionContext } from '../record/types.js';
import { CANCEL, NO_ERROR } from '../tunnel/h2-settings.js';
import { connectTcp } from '../tunnel/tcp-connect.js';
import { formatHostPort } from '../util/ip.js';
import type { TrackedConnection } from './connection-tracker.js';
import type { ProxyContext } from './proxy-context.js';

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
  /** Same-node hand-over: the source is a workload of ours too (its removal closes the connection). */
  localSourceUid?: string | undefined;
  /** Answer the downstream once the app is connected (HBONE 200); false if it is gone. */
  accept(): boolean;
  refuse(err: ZtError): void;
}

/** An HTTP/2 CONNECT stream as one side of a relay (both directions use it); methods, not closures. */
class H2StreamSide implements CopySide {
  // Node drops stream.session before 'close': keep our own reference to the session.
  private readonly session: http2.Http2Session | undefined;
  constructor(readonly stream: http2.Http2Stream) {
    this.session = stream.session;
  }
  // destroy() sends RST_STREAM (INTERNAL_ERROR) alone; close(code) would first send an
  // END_STREAM that the peer would take for a clean half-close.
  reset(): void {
    if (!this.stream.destroyed) this.stream.destroy(new Error('connection reset'));
  }
  // RST_STREAM NO_ERROR/CANCEL counts as EOF (as upstream); a session that died under
  // the stream (connection lost, forced close) is a reset.
  closedCleanly(): boolean {
    const code = this.stream.rstCode;
    return (code === NO_ERROR || code === CANCEL) && !(this.session?.destroyed ?? true);
  }
}

export function h2StreamSide(stream: http2.Http2Stream): CopySide {
  return new H2StreamSide(stream);
}

/** What trackedRelay needs to know about a connection, besides its two sides. */
export type TrackedInfo = Omit<TrackedConnection, 'abort'>;

/**
 * Track the connection, copy both ways until both directions end, untrack — whatever
 * happens. The tracker can abort it (re-authorization, workload removal, drain): both
 * sides are reset and the abort reason is the outcome.
 */
export async function trackedRelay(
  ctx: ProxyContext,
  info: TrackedInfo,
  down: CopySide,
  up: CopySide,
  bytes: ByteCounters,
): Promise<Error | undefined> {
  let abortError: Error | undefined;
  // Only a spliced connection needs a signal (its sockets live in the splice worker); an
  // HBONE leg is reset directly, without an AbortController per connection.
  const splice = ctx.config.spliceEnabled && maySplice(down.stream, up.stream);
  const aborter = splice ? new AbortController() : undefined;
  const untrack = ctx.tracker.add({
    ...info,
    abort: (err) => {
      abortError ??= err;
      aborter?.abort();
      down.reset();
      up.reset();
    },
  });
  try {
    const outcome = await relay(down, up, bytes, { splice, signal: aborter?.signal });
    return abortError ?? outcome.error;
  } finally {
    untrack();
  }
}

/**
 * Deliver one connection to the local app at d.target. Never rejects: every failure,
 * expected or a bug, is the returned error (undefined when the connection ended cleanly)
 * and has been recorded. `sharedBytes`: the outbound record of a same-node hand-over, so
 * that both records count the same bytes while the connection is open.
 */
export async function deliverLocal(ctx: ProxyContext, d: LocalDelivery, sharedBytes?: ByteCounters): Promise<Error | undefined> {
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
  const record = ctx.telemetry.open(cctx, sharedBytes);
  // istio_tcp_sockets_open{reporter="destination"}: every inbound connection being delivered,
  // whichever way it came in (a 15006 socket, an HBONE stream, a same-node hand-over), until
  // its delivery is over (relay ended, both sides closed); the source side counts its captured
  // socket (outbound.ts), so one connection through two ztunnels is 1 on each side.
  ctx.telemetry.socketOpened('destination');
  let app: net.Socket | undefined;
  try {
    const error = await deliverSteps(ctx, d, record, (s) => {
      app = s;
    });
    record.complete(error);
    return error;
  } catch (err) {
    // A bug: count and log it once, close both sides, and still write the record.
    ctx.telemetry.unexpected('handler', 'inbound', err);
    const zerr = new ZtError('ZT_ERR_INTERNAL', `internal error: ${errorMessage(err)}`, { cause: err });
    try {
      d.refuse(zerr);
    } catch {
      /* the downstream is gone already */
    }
    d.downstream.reset();
    if (app) resetSocket(app);
    record.complete(zerr);
    return zerr;
  } finally {
    ctx.telemetry.socketClosed('destination');
  }
}

async function deliverSteps(
  ctx: ProxyContext,
  d: LocalDelivery,
  record: ConnectionRecord,
  onApp: (s: net.Socket) => void,
): Promise<Error | undefined> {
  const authzConn = buildAuthzConnection(d.srcIp, d.target.ip, d.target.port, d.srcIdentity);
  const view = ctx.view();
  const denied = checkPolicy(d, authzConn, view.policies, record);
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
    return zerr;
  }
  onApp(app);
  app.on('error', () => undefined);
  // The policies may have changed while we were connecting: the tracker would not have seen us.
  const now = ctx.view();
  if (now !== view) {
    const deniedLate = checkPolicy(d, authzConn, now.policies, record);
    if (deniedLate) {
      app.destroy();
      return deniedLate;
    }
  }
  if (d.downstream.stream.destroyed || !d.accept()) {
    app.destroy();
    d.downstream.reset();
    return new ZtError('ZT_ERR_CONNECT_FAILED', 'downstream closed before the app connection was up');
  }
  const addr = formatHostPort(d.target.ip, d.target.port);
  return trackedRelay(
    ctx,
    {
      direction: 'inbound',
      src: d.srcAddr,
      originalDst: addr,
      actualDst: addr,
      protocol: d.srcIdentity ? 'HBONE' : 'TCP',
      workloadUids: d.localSourceUid ? [d.workload.uid, d.localSourceUid] : [d.workload.uid],
      authz: { workload: d.workload, conn: authzConn },
    },
    d.downstream,
    socketSide(app),
    record.bytes,
  );
}

/** Deny → refuse the downstream; the decision's policy goes into the access log. */
function checkPolicy(d: LocalDelivery, conn: AuthzConnection, policies: PolicyStore, record: ConnectionRecord): ZtError | undefined {
  const decision = policies.authorize(d.workload, conn);
  if (decision.kind !== 'deny') return undefined;
  const err = new ZtError('ZT_ERR_AUTHZ_DENIED', `connection closed due to policy rejection: ${decision.reason}`);
  d.refuse(err);
  if (decision.policy) record.setExtraFields({ policy: decision.policy });
  return err;
}
