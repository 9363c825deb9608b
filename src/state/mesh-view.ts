// What the data path reads of the mesh, whichever source feeds it: ProxyState (built whole
// from the local config file) and MeshStore (updated one resource at a time by delta xDS)
// both implement it, so routing and the proxy handlers never depend on the source.
import type { LocalConfig, Service, Workload } from '../config/types.js';

export interface MeshReader {
  readonly workloadsByUid: ReadonlyMap<string, Workload>;
  readonly servicesByKey: ReadonlyMap<string, Service>;
  /** Everything as a LocalConfig (config_dump, listings). */
  readonly config: LocalConfig;
  findWorkloadByIp(network: string, ip: string): Workload | undefined;
  findServiceByVip(network: string, ip: string, clientNamespace: string | undefined): Service | undefined;
  findService(namespace: string, hostname: string): Service | undefined;
  servicesOf(workload: Workload): readonly Service[];
  localWorkloads(nodeName: string | undefined): Workload[];
}
