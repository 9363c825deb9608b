// istio.workload.Address (as istiod pushes it over delta xDS) → the Workload or Service record
// of src/config/types.ts, in exactly the shape the local YAML loader produces for the same
// mesh (canonical IP text, TCP/HBONE, `network/IP` or `namespace/hostname` gateways, port
// maps, the same defaults), so the state layer cannot tell the two sources apart.
// Pure: decoded message in, frozen record or a ResourceError value out.
// Must never: throw for bad input, or let through what the YAML loader would refuse
// (bad IP bytes, out-of-range ports, unknown enum values, duplicate ports).
// Deliberately left out (the model has no field for them yet): Port.app_protocol,
// Workload/Service.extensions, Service.ingress_use_waypoint. A Service's endpoints are not
// known here: they come from workloads' `services` maps, joined by the state layer.

import { deepFreeze } from '../config/freeze.js';
import type { GatewayAddress, HealthStatus, PortMap, Service, Workload } from '../config/types.js';
import { AddressCodec } from './protos.js';
import {
  cidrFromBytes,
  enumValue,
  ipFromBytes,
  MappingFailure,
  portValue,
  required,
  runMapping,
  type Mapped,
} from './resource-error.js';
import type { WireAddress, WireGatewayAddress, WirePort, WireService, WireWorkload } from './wire-types.js';

const DEFAULT_TRUST_DOMAIN = 'cluster.local';
const DEFAULT_SERVICE_ACCOUNT = 'default';
const DEFAULT_HBONE_MTLS_PORT = 15008;

export type AddressModel = { kind: 'workload'; workload: Workload } | { kind: 'service'; service: Service };

const TUNNEL: Record<'NONE' | 'HBONE', Workload['protocol']> = { NONE: 'TCP', HBONE: 'HBONE' };
const NETWORK_MODE: Record<'STANDARD' | 'HOST_NETWORK', Workload['networkMode']> = { STANDARD: 'Standard', HOST_NETWORK: 'HostNetwork' };
const STATUS: Record<'HEALTHY' | 'UNHEALTHY', HealthStatus> = { HEALTHY: 'Healthy', UNHEALTHY: 'Unhealthy' };
const WORKLOAD_TYPE = { DEPLOYMENT: 'deployment', CRONJOB: 'cronjob', POD: 'pod', JOB: 'job' } as const;
const APP_TUNNEL = { NONE: 'NONE', PROXY: 'PROXY' } as const;
const SCOPE = { REGION: 'Region', ZONE: 'Zone', SUBZONE: 'Subzone', NODE: 'Node', CLUSTER: 'Cluster', NETWORK: 'Network' } as const;
const LB_MODE = { UNSPECIFIED_MODE: 'Standard', STRICT: 'Strict', FAILOVER: 'Failover', PASSTHROUGH: 'Passthrough' } as const;
const HEALTH_POLICY = { ONLY_HEALTHY: 'OnlyHealthy', ALLOW_ALL: 'AllowAll' } as const;
const IP_FAMILIES = { AUTOMATIC: undefined, IPV4_ONLY: 'IPv4', IPV6_ONLY: 'IPv6', DUAL: 'Dual' } as const;
const VISIBILITY = { PUBLIC: 'Public', NAMESPACE: 'Namespace' } as const;

/** Maps one decoded Address resource named `resource` (the xDS resource name). */
export function addressToModel(resource: string, address: WireAddress): Mapped<AddressModel> {
  return runMapping(resource, () => {
    if (address.type === 'workload' && address.workload) return { kind: 'workload', workload: freezeWorkload(workload(address.workload)) };
    if (address.type === 'service' && address.service) return { kind: 'service', service: deepFreeze(service(address.service)) };
    throw new MappingFailure('type', 'neither workload nor service is set');
  });
}

/** Decodes the Any payload bytes of an Address resource and maps it; bad bytes are an error value too. */
export function addressBytesToModel(resource: string, bytes: Uint8Array): Mapped<AddressModel> {
  let decoded: WireAddress;
  try {
    decoded = AddressCodec.decode(bytes);
  } catch (err) {
    return { ok: false, error: { resource, field: '(message)', reason: (err as Error).message } };
  }
  return addressToModel(resource, decoded);
}

// ------------------------------------------------------------------ workloads

// Field paths are literals (or built only on failure): this runs for every pushed workload.
function workload(w: WireWorkload): Workload {
  const at = (f: string): string => `workload.${f}`;
  if (w.tunnel_protocol === 'LEGACY_ISTIO_MTLS') {
    throw new MappingFailure('workload.tunnel_protocol', 'LEGACY_ISTIO_MTLS is not supported (as upstream ztunnel)');
  }
  const services = new Map<string, PortMap>();
  for (const key in w.services) {
    if (!Object.hasOwn(w.services, key)) continue;
    const field = (): string => `workload.services[${JSON.stringify(key)}]`;
    if (!isSlashPair(key)) throw new MappingFailure(field(), `key '${key}' is not of the form namespace/hostname`);
    services.set(key, portMap((w.services[key] as { ports: WirePort[] }).ports, () => `${field()}.ports`));
  }
  return {
    uid: required(w.uid, 'workload.uid'),
    name: w.name,
    namespace: required(w.namespace, 'workload.namespace'),
    serviceAccount: w.service_account || DEFAULT_SERVICE_ACCOUNT,
    trustDomain: w.trust_domain || DEFAULT_TRUST_DOMAIN,
    workloadIps: w.addresses.map((b, i) => ipFromBytes(b, i === 0 ? 'workload.addresses[0]' : at(`addresses[${i}]`))),
    hostname: w.hostname,
    network: w.network,
    protocol: enumValue(w.tunnel_protocol, TUNNEL, 'workload.tunnel_protocol'),
    networkMode: enumValue(w.network_mode, NETWORK_MODE, 'workload.network_mode'),
    node: w.node,
    waypoint: w.waypoint ? gateway(w.waypoint, 'workload.waypoint') : undefined,
    networkGateway: w.network_gateway ? gateway(w.network_gateway, 'workload.network_gateway') : undefined,
    nativeTunnel: w.native_tunnel,
    applicationTunnel: w.application_tunnel
      ? {
          protocol: enumValue(w.application_tunnel.protocol, APP_TUNNEL, at('application_tunnel.protocol')),
          port: w.application_tunnel.port === 0 ? undefined : portValue(w.application_tunnel.port, at('application_tunnel.port')),
        }
      : undefined,
    authorizationPolicies: w.authorization_policies.map((p, i) => {
      if (!isSlashPair(p)) throw new MappingFailure(at(`authorization_policies[${i}]`), `'${p}' is not of the form namespace/name`);
      return p;
    }),
    status: enumValue(w.status, STATUS, 'workload.status'),
    clusterId: w.cluster_id,
    locality: w.locality ? { region: w.locality.region, zone: w.locality.zone, subzone: w.locality.subzone } : undefined,
    workloadName: w.workload_name,
    workloadType: enumValue(w.workload_type, WORKLOAD_TYPE, 'workload.workload_type'),
    canonicalName: w.canonical_name,
    canonicalRevision: w.canonical_revision,
    capacity: w.capacity ? w.capacity.value : 1,
    services,
  };
}

// ------------------------------------------------------------------ services

function service(s: WireService): Service {
  const at = (f: string): string => `service.${f}`;
  if (s.weighted_waypoints.length > 0) {
    throw new MappingFailure(at('weighted_waypoints'), 'is not supported by ztunnel-ts (use waypoint)');
  }
  const vips: Service['vips'] = [];
  const cidrVips: Service['cidrVips'] = [];
  s.addresses.forEach((a, i) => {
    const field = at(`addresses[${i}]`);
    const full = a.address.length === 4 ? 32 : 128;
    if (a.length === undefined || a.length === full) {
      vips.push({ network: a.network, address: ipFromBytes(a.address, `${field}.address`) });
      return;
    }
    const cidr = cidrFromBytes(a.address, a.length, `${field}.address`, `${field}.length`);
    cidrVips.push({ network: a.network, cidr });
  });
  const lb = s.load_balancing;
  return {
    name: required(s.name, at('name')),
    namespace: required(s.namespace, at('namespace')),
    hostname: required(s.hostname, at('hostname')),
    vips,
    cidrVips,
    ports: portMap(s.ports, () => at('ports')),
    endpoints: new Map(),
    subjectAltNames: [...s.subject_alt_names],
    waypoint: s.waypoint ? gateway(s.waypoint, at('waypoint')) : undefined,
    loadBalancer: lb
      ? {
          routingPreferences: lb.routing_preference.map((r, i) => enumValue(r, SCOPE, at(`load_balancing.routing_preference[${i}]`))),
          mode: enumValue(lb.mode, LB_MODE, at('load_balancing.mode')),
          healthPolicy: enumValue(lb.health_policy, HEALTH_POLICY, at('load_balancing.health_policy')),
        }
      : undefined,
    ipFamilies: enumValue(s.ip_families, IP_FAMILIES, at('ip_families')),
    canonical: s.canonical,
    visibility: enumValue(s.visibility, VISIBILITY, at('visibility')),
  };
}

// ------------------------------------------------------------------ shared

/**
 * servicePort → targetPort, as the YAML's `{9080: 9080}`; a service port given twice is refused.
 * `field` names the list, built only when a port is refused.
 */
function portMap(ports: WirePort[], field: () => string): PortMap {
  const out = new Map<number, number>();
  for (let i = 0; i < ports.length; i++) {
    const p = ports[i] as WirePort;
    const sp = p.service_port;
    const tp = p.target_port;
    // The common case checked inline; anything else goes through portValue for its message.
    const servicePort = Number.isInteger(sp) && sp >= 1 && sp <= 65535 ? sp : portValue(sp, `${field()}[${i}].service_port`);
    if (out.has(servicePort)) throw new MappingFailure(`${field()}[${i}].service_port`, `port ${servicePort} appears twice`);
    out.set(servicePort, Number.isInteger(tp) && tp >= 0 && tp <= 65535 ? tp : portValue(tp, `${field()}[${i}].target_port`, true));
  }
  return out;
}

/**
 * deepFreeze for a mapped Workload, written for its shape (deepFreeze's generic walk is a
 * large part of mapping a big response): the record, its lists, its maps and every value in them.
 */
function freezeWorkload(w: Workload): Workload {
  Object.freeze(w.workloadIps);
  Object.freeze(w.authorizationPolicies);
  for (const ports of w.services.values()) Object.freeze(ports);
  Object.freeze(w.services);
  if (w.waypoint) Object.freeze(w.waypoint);
  if (w.networkGateway) Object.freeze(w.networkGateway);
  if (w.applicationTunnel) Object.freeze(w.applicationTunnel);
  if (w.locality) Object.freeze(w.locality);
  return Object.freeze(w);
}

/** `network/IP` or `namespace/hostname`, plus the HBONE port (absent = 15008, as in the YAML). */
function gateway(g: WireGatewayAddress, field: string): GatewayAddress {
  const hboneMtlsPort = g.hbone_mtls_port === 0 ? DEFAULT_HBONE_MTLS_PORT : portValue(g.hbone_mtls_port, `${field}.hbone_mtls_port`);
  if (g.destination === 'address' && g.address) {
    return { destination: `${g.address.network}/${ipFromBytes(g.address.address, `${field}.address.address`)}`, hboneMtlsPort };
  }
  if (g.destination === 'hostname' && g.hostname) {
    const namespace = required(g.hostname.namespace, `${field}.hostname.namespace`);
    const hostname = required(g.hostname.hostname, `${field}.hostname.hostname`);
    return { destination: `${namespace}/${hostname}`, hboneMtlsPort };
  }
  throw new MappingFailure(field, 'neither hostname nor address is set');
}

function isSlashPair(text: string): boolean {
  const slash = text.indexOf('/');
  return slash > 0 && slash < text.length - 1 && text.indexOf('/', slash + 1) === -1;
}
