// The attributes of one inbound connection that authorization looks at, built once per
// connection so that PolicyStore.authorize() only compares prebuilt values.
// Must never be built from unverified identity text: `peerSpiffeUri` is the identity the
// TLS layer verified (HBONE, 15008) or undefined (plaintext, 15006).
// Invariant: every field is set (stable object shape); IPs are canonical (mapped v4 → v4).

import { parseIp, type ParsedIp } from '../util/ip.js';

export interface AuthzIdentity {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** The identity without `spiffe://`, e.g. `cluster.local/ns/default/sa/client` (what `principals` match). */
  readonly principal: string;
}

export interface AuthzConnection {
  readonly srcIp: ParsedIp;
  readonly dstIp: ParsedIp;
  /** Destination (target) port, after service-port translation. */
  readonly dstPort: number;
  /** Verified peer identity; undefined for plaintext. */
  readonly srcIdentity: AuthzIdentity | undefined;
}

const SPIFFE_PREFIX = 'spiffe://';

/**
 * The same text as V8's internalized (unique) string. Comparing or hashing two internalized
 * strings is a pointer operation, while a substring of the peer URI is compared byte by byte
 * on every policy (measured: a principal match ~65 ns → ~30 ns). Property keys are
 * internalized, which is the only portable way to ask for it. Call once per string, never
 * per check: it allocates.
 */
export function internalize(s: string): string {
  return Object.keys({ [s]: 0 })[0] ?? s;
}

/**
 * `spiffe://<td>/ns/<ns>/sa/<sa>` → identity, or undefined when the text is not exactly
 * that shape (ztunnel requires the prefix and five path segments with `ns` and `sa` literals).
 */
export function findAuthzIdentity(spiffeUri: string): AuthzIdentity | undefined {
  if (!spiffeUri.startsWith(SPIFFE_PREFIX)) return undefined;
  const principal = spiffeUri.slice(SPIFFE_PREFIX.length);
  const parts = principal.split('/');
  if (parts.length !== 5 || parts[1] !== 'ns' || parts[3] !== 'sa') return undefined;
  const [trustDomain, , namespace, , serviceAccount] = parts as [string, string, string, string, string];
  if (trustDomain === '' || namespace === '' || serviceAccount === '') return undefined;
  return {
    trustDomain: internalize(trustDomain),
    namespace: internalize(namespace),
    serviceAccount: internalize(serviceAccount),
    principal: internalize(principal),
  };
}

/**
 * Throws on an address that is not an IP: callers pass socket addresses, which always are,
 * so a failure here is a programming error rather than an outcome. A peer URI that is not a
 * valid SPIFFE id yields no identity; the TLS layer must already have rejected such peers.
 */
export function buildAuthzConnection(
  src: string | ParsedIp,
  dst: string | ParsedIp,
  dstPort: number,
  peerSpiffeUri: string | undefined,
): AuthzConnection {
  return {
    srcIp: toIp(src, 'source'),
    dstIp: toIp(dst, 'destination'),
    dstPort,
    srcIdentity: peerSpiffeUri === undefined ? undefined : findAuthzIdentity(peerSpiffeUri),
  };
}

function toIp(ip: string | ParsedIp, what: string): ParsedIp {
  if (typeof ip !== 'string') return ip;
  const parsed = parseIp(ip);
  if (parsed === undefined) throw new TypeError(`authorization: ${what} address is not an IP: ${JSON.stringify(ip)}`);
  return parsed;
}
