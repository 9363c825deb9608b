// The in-memory view of the mesh: workloads, services and their indexes, built once
// from a validated LocalConfig and then read-only. A config change builds a new
// ProxyState and swaps it in whole (see app.ts), so readers never see a half-updated
// index. Knows nothing of sockets.
import type { LocalConfig, Service, Workload } from '../config/types.js';
import { parseCidr } from '../util/ip.js';
import { type CidrEntry, addrKey, findServiceByVipIn, prefixOf } from './lookup.js';
import type { MeshReader } from './mesh-view.js';

interface CidrVip extends CidrEntry {
  prefix: number;
}


export class ProxyState implements MeshReader {
  readonly config: LocalConfig;
  readonly workloadsByUid: ReadonlyMap<string, Workload>;
  readonly servicesByKey: ReadonlyMap<string, Service>;
  private readonly workloadsByAddr: Map<string, Workload>;
  private readonly servicesByVip: Map<string, Service[]>;
  private readonly cidrVips: CidrVip[];
  /** service key → services the workload is an endpoint of, per workload uid. */
  private readonly servicesOfWorkload: Map<string, Service[]>;

  constructor(config: LocalConfig) {
    this.config = config;
    const byUid = new Map<string, Workload>();
    const byAddr = new Map<string, Workload>();
    for (const w of config.workloads) {
      byUid.set(w.uid, w);
      if (w.networkMode === 'HostNetwork') continue;
      for (const ip of w.workloadIps) {
        const key = addrKey(w.network, ip);
        const prev = byAddr.get(key);
        // Several workloads may share an IP: prefer pods, then HBONE (as upstream's outbound lookup).
        if (!prev || preferWorkload(w, prev)) byAddr.set(key, w);
      }
    }
    const byKey = new Map<string, Service>();
    const byVip = new Map<string, Service[]>();
    const cidrs: CidrVip[] = [];
    const ofWorkload = new Map<string, Service[]>();
    for (const s of config.services) {
      byKey.set(`${s.namespace}/${s.hostname}`, s);
      for (const vip of s.vips) {
        const key = addrKey(vip.network, vip.address);
        const list = byVip.get(key);
        if (list) list.push(s);
        else byVip.set(key, [s]);
      }
      for (const c of s.cidrVips) {
        const cidr = parseCidr(c.cidr);
        if (cidr) cidrs.push({ network: c.network, cidr, prefix: prefixOf(c.cidr), service: s });
      }
      for (const uid of s.endpoints.keys()) {
        const list = ofWorkload.get(uid);
        if (list) list.push(s);
        else ofWorkload.set(uid, [s]);
      }
    }
    cidrs.sort((a, b) => b.prefix - a.prefix);
    this.workloadsByUid = byUid;
    this.workloadsByAddr = byAddr;
    this.servicesByKey = byKey;
    this.servicesByVip = byVip;
    this.cidrVips = cidrs;
    this.servicesOfWorkload = ofWorkload;
  }

  findWorkloadByIp(network: string, ip: string): Workload | undefined {
    return this.workloadsByAddr.get(addrKey(network, ip));
  }

  /**
   * A service by VIP as seen from a client namespace: exact VIP first, then the
   * longest-prefix CIDR VIP. Ties: client namespace, then `canonical`, then first.
   * Namespace-visibility services are invisible to other namespaces.
   */
  findServiceByVip(network: string, ip: string, clientNamespace: string | undefined): Service | undefined {
    return findServiceByVipIn(this.servicesByVip, itself, this.cidrVips, network, ip, clientNamespace);
  }

  findService(namespace: string, hostname: string): Service | undefined {
    return this.servicesByKey.get(`${namespace}/${hostname}`);
  }

  /** Services this workload is an endpoint of (filled from both sides of the config). */
  servicesOf(workload: Workload): readonly Service[] {
    return this.servicesOfWorkload.get(workload.uid) ?? [];
  }

  /** Workloads served by a ztunnel on this node (`node` equals nodeName; all when unset). */
  localWorkloads(nodeName: string | undefined): Workload[] {
    return this.config.workloads.filter((w) => nodeName === undefined || w.node === nodeName);
  }
}

function preferWorkload(candidate: Workload, current: Workload): boolean {
  const cPod = candidate.uid.includes('//Pod/');
  const pPod = current.uid.includes('//Pod/');
  if (cPod !== pPod) return cPod;
  return candidate.protocol === 'HBONE' && current.protocol !== 'HBONE';
}

function itself(s: Service): Service {
  return s;
}
