// SPIFFE identities as ztunnel uses them: spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>
// (upstream's Identity::Spiffe, https://github.com/istio/ztunnel/blob/master/src/identity/manager.rs). Pure string functions.
// Must never accept anything else as an identity: peers are identified solely by URI SANs of
// exactly this shape, so a lenient parser would widen who can claim an identity.

export interface SpiffeId {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

const PREFIX = 'spiffe://';

// Whitespace, control characters, '?' and '#' cannot appear in a SPIFFE ID path or trust domain.
const FORBIDDEN = /[\s\x00-\x1f\x7f?#]/;

/** undefined unless the prefix is present and the path is exactly ns/<ns>/sa/<sa> with no empty part. */
export function parseSpiffeId(uri: string): SpiffeId | undefined {
  if (!uri.startsWith(PREFIX) || FORBIDDEN.test(uri)) return undefined;
  const segments = uri.slice(PREFIX.length).split('/');
  if (segments.length !== 5) return undefined;
  const [trustDomain, ns, namespace, sa, serviceAccount] = segments;
  if (ns !== 'ns' || sa !== 'sa') return undefined;
  if (!trustDomain || !namespace || !serviceAccount) return undefined;
  return { trustDomain, namespace, serviceAccount };
}

export function formatSpiffeId(id: SpiffeId): string {
  return `${PREFIX}${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

export function spiffeIdOfWorkload(w: { trustDomain: string; namespace: string; serviceAccount: string }): string {
  return formatSpiffeId({ trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount });
}
