// One error class with a code, and one catalogue mapping each code to what the
// connection edge does with it: the response flag (metrics / access log), the HBONE
// status an inbound CONNECT is answered with, and the log level.
// Expected outcomes (routing decisions, authorization denials) are values, not errors;
// a ZtError is raised only where a connection cannot go on.

export type ResponseFlag =
  | '-'
  | 'DENY'
  | 'CONNECT'
  | 'TLS_FAILURE'
  | 'H2_HANDSHAKE_FAILURE'
  | 'NETWORK_POLICY'
  | 'IDENTITY_ERROR';

export interface CatalogueEntry {
  responseFlag: ResponseFlag;
  /** HTTP status for an inbound CONNECT failing with this code. */
  hboneStatus: number;
  summary: string;
}

export const ERROR_CATALOGUE = {
  ZT_ERR_CONFIG_INVALID: { responseFlag: '-', hboneStatus: 500, summary: 'configuration is invalid' },
  ZT_ERR_NATIVE: { responseFlag: '-', hboneStatus: 500, summary: 'a system call failed' },
  ZT_ERR_ROUTE_SELF_CALL: { responseFlag: '-', hboneStatus: 503, summary: 'attempted recursive call to ourselves' },
  ZT_ERR_ROUTE_NO_HEALTHY_UPSTREAM: { responseFlag: 'CONNECT', hboneStatus: 503, summary: 'no healthy upstream' },
  ZT_ERR_ROUTE_UNKNOWN_SOURCE: { responseFlag: '-', hboneStatus: 503, summary: 'unknown source workload' },
  ZT_ERR_INBOUND_BAD_METHOD: { responseFlag: '-', hboneStatus: 400, summary: 'method is not CONNECT' },
  ZT_ERR_INBOUND_BAD_AUTHORITY: { responseFlag: '-', hboneStatus: 400, summary: 'authority is not ip:port' },
  ZT_ERR_INBOUND_IP_MISMATCH: { responseFlag: '-', hboneStatus: 400, summary: 'ip mismatch' },
  ZT_ERR_INBOUND_UNKNOWN_WORKLOAD: { responseFlag: '-', hboneStatus: 503, summary: 'unknown local workload' },
  ZT_ERR_AUTHZ_DENIED: { responseFlag: 'DENY', hboneStatus: 401, summary: 'connection closed due to policy rejection' },
  ZT_ERR_CONNECT_FAILED: { responseFlag: 'CONNECT', hboneStatus: 503, summary: 'upstream connect failed' },
  ZT_ERR_CONNECT_TIMEOUT: { responseFlag: 'CONNECT', hboneStatus: 503, summary: 'upstream connect timed out' },
  ZT_ERR_HBONE_CONNECT_TIMEOUT: {
    responseFlag: 'NETWORK_POLICY',
    hboneStatus: 503,
    summary: 'HBONE connect timed out (maybe a NetworkPolicy is blocking HBONE port 15008)',
  },
  ZT_ERR_PEER_UNREACHABLE: {
    responseFlag: 'CONNECT',
    hboneStatus: 503,
    summary: 'the peer ztunnel did not answer recently; failing fast until the next attempt',
  },
  ZT_ERR_TLS_HANDSHAKE: { responseFlag: 'TLS_FAILURE', hboneStatus: 503, summary: 'TLS handshake failed' },
  ZT_ERR_IDENTITY_UNAVAILABLE: { responseFlag: 'IDENTITY_ERROR', hboneStatus: 503, summary: 'no usable certificate for the local identity (its CA failed or has not answered yet)' },
  ZT_ERR_IDENTITY_MISMATCH: { responseFlag: 'IDENTITY_ERROR', hboneStatus: 503, summary: 'peer identity is not one of the expected identities' },
  ZT_ERR_H2: { responseFlag: 'H2_HANDSHAKE_FAILURE', hboneStatus: 503, summary: 'HTTP/2 failure' },
  ZT_ERR_HBONE_STATUS: { responseFlag: 'CONNECT', hboneStatus: 503, summary: 'HBONE CONNECT was refused' },
  ZT_ERR_DRAINING: { responseFlag: '-', hboneStatus: 503, summary: 'ztunnel is draining' },
  ZT_ERR_INTERNAL: { responseFlag: 'CONNECT', hboneStatus: 500, summary: 'internal error (a bug): the connection was closed' },
  ZT_ERR_WORKLOAD_REMOVED: { responseFlag: '-', hboneStatus: 503, summary: 'the workload was removed from the config' },
  ZT_ERR_POLICY_CHANGED: { responseFlag: 'DENY', hboneStatus: 401, summary: 'connection closed due to policy change' },
} as const satisfies Record<string, CatalogueEntry>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export class ZtError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? ERROR_CATALOGUE[code].summary, options);
    this.name = 'ZtError';
    this.code = code;
  }
  get responseFlag(): ResponseFlag {
    return ERROR_CATALOGUE[this.code].responseFlag;
  }
  get hboneStatus(): number {
    return ERROR_CATALOGUE[this.code].hboneStatus;
  }
}

/** Response flag for any error reaching a connection's edge. */
export function responseFlagOf(err: unknown): ResponseFlag {
  if (err instanceof ZtError) return err.responseFlag;
  return 'CONNECT';
}

/** Human message for logs. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
