// The regular headers of an HBONE CONNECT (https://istio.io/latest/docs/ambient/architecture/hbone/): `traceparent`
// (W3C, new per downstream connection), `forwarded` (for="client ip:port"[;host=svc]) and
// `baggage` (source workload metadata, fixed key order, empty values omitted).
import { randomBytes } from 'node:crypto';
import type { Workload } from '../config/types.js';

export function buildTraceparent(): string {
  const r = randomBytes(24).toString('hex');
  return `00-${r.slice(0, 32)}-${r.slice(32, 48)}-00`;
}

/** True when the value is a well-formed 55-character traceparent. */
export function isTraceparent(v: unknown): v is string {
  return typeof v === 'string' && v.length === 55 && /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/.test(v);
}

export function buildForwarded(clientAddr: string, serviceHostname: string | undefined): string {
  return serviceHostname ? `for="${clientAddr}";host=${serviceHostname}` : `for="${clientAddr}"`;
}

export function buildBaggage(w: Workload | undefined): string {
  if (!w) return '';
  const parts: string[] = [];
  const add = (k: string, v: string): void => {
    if (v) parts.push(`${k}=${v}`);
  };
  add('k8s.cluster.name', w.clusterId);
  add('k8s.namespace.name', w.namespace);
  if (w.workloadType) add(`k8s.${w.workloadType.toLowerCase()}.name`, w.workloadName);
  add('service.name', w.canonicalName);
  add('service.version', w.canonicalRevision);
  add('cloud.region', w.locality?.region ?? '');
  add('cloud.availability_zone', w.locality?.zone ?? '');
  return parts.join(',');
}

/** The `host=` of a forwarded header, if any. */
export function forwardedHost(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /(?:^|;)\s*host=([^;,\s]+)/.exec(v);
  return m?.[1];
}
