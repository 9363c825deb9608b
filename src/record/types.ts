// What the data path hands to the record layer about one connection. Filled by the
// proxy handlers once routing (outbound) or request parsing (inbound) is done.
// Pure types; see telemetry.ts for what is done with them.
import type { Service, Workload } from '../config/types.js';

export type Direction = 'outbound' | 'inbound';
export type SecurityPolicy = 'mutual_tls' | 'unknown';

export interface ConnectionContext {
  /** outbound → reporter "source"; inbound → reporter "destination". */
  direction: Direction;
  /** Downstream client ip:port (inbound HBONE: the HBONE peer's ip:port). */
  srcAddr: string;
  srcWorkload: Workload | undefined;
  /** spiffe://… — only when proven by mTLS (outbound HBONE: our own; inbound HBONE: the peer's). */
  srcIdentity: string | undefined;
  /** The L4 next hop: podIP:15008 for HBONE, the plain target for TCP. Inbound HBONE: local ip:15008. */
  dstAddr: string;
  /** CONNECT authority, HBONE only. */
  hboneAddr: string | undefined;
  dstService: Service | undefined;
  dstWorkload: Workload | undefined;
  /** spiffe://… of the destination workload (also for TCP destinations, as upstream does). */
  dstIdentity: string | undefined;
  securityPolicy: SecurityPolicy;
}

/** Byte counts of one connection, incremented by the copy loop with plain integer adds. */
export interface ByteCounters {
  /** client → server ("received" in Istio metrics). */
  clientToServer: number;
  /** server → client ("sent" in Istio metrics). */
  serverToClient: number;
}
