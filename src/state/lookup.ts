// The lookups ProxyState and MeshStore share, so both sources of the mesh answer the same way:
// the address key, Namespace visibility, and "a service by VIP" (exact VIP first, then the
// longest-prefix CIDR VIP; ties: the client's namespace, then `canonical`, then first).
// Allocation-free: called per connection.
import type { Service } from '../config/types.js';
import { type Cidr, cidrContains, parseIp } from '../util/ip.js';

export function addrKey(network: string, ip: string): string {
  return `${network}/${ip}`;
}

/** The prefix length of "a.b.c.d/n" (a bare address counts as the longest). */
export function prefixOf(cidr: string): number {
  const slash = cidr.indexOf('/');
  return slash < 0 ? 128 : Number(cidr.slice(slash + 1));
}

export function visibleTo(s: Service, clientNamespace: string | undefined): boolean {
  return s.visibility !== 'Namespace' || s.namespace === clientNamespace;
}

/** A CIDR VIP index entry; lists are kept sorted longest prefix first. */
export interface CidrEntry {
  network: string;
  cidr: Cidr;
  service: Service;
}

/** `get` reads the service of one index entry (a module-level function: nothing allocated per call). */
export function findServiceByVipIn<T>(
  byVip: ReadonlyMap<string, readonly T[]>,
  get: (entry: T) => Service,
  cidrs: readonly CidrEntry[],
  network: string,
  ip: string,
  clientNamespace: string | undefined,
): Service | undefined {
  const exact = byVip.get(addrKey(network, ip));
  if (exact) {
    let best: Service | undefined;
    for (const e of exact) {
      const s = get(e);
      if (!visibleTo(s, clientNamespace)) continue;
      if (s.namespace === clientNamespace) return s;
      if (!best || (s.canonical && !best.canonical)) best = s;
    }
    return best;
  }
  if (cidrs.length === 0) return undefined;
  const parsed = parseIp(ip);
  if (!parsed) return undefined;
  for (const c of cidrs) {
    if (c.network === network && cidrContains(c.cidr, parsed) && visibleTo(c.service, clientNamespace)) return c.service;
  }
  return undefined;
}
