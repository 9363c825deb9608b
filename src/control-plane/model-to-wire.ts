// The config model (src/config/types.ts: what the YAML loader and the xDS mappers produce) →
// the protobuf messages istiod pushes (istio.workload.Address, istio.security.Authorization):
// the inverse of src/xds/address-to-model.ts and authorization-to-model.ts, so the local
// control plane can serve a YAML mesh over delta xDS. A round trip (model → bytes → model)
// gives back an equal model; test/unit/control-plane.test.ts checks that on every fixture.
// Resource names are upstream's: workloads by uid, services by `namespace/hostname`,
// policies by `namespace/name`.
// Pure. Must never: drop a field the mapper reads (the round trip would lose it).

import type { Authorization, GatewayAddress, Match, PortMap, Service, StringMatch, Workload } from '../config/types.js';
import { parseIp } from '../util/ip.js';
import { AddressCodec, AuthorizationCodec } from '../xds/protos.js';
import type {
  WireAuthorization,
  WireGatewayAddress,
  WireInit,
  WireMatch,
  WirePort,
  WireService,
  WireStringMatch,
  WireWorkload,
} from '../xds/wire-types.js';

/** A Workload's, Service's or policy's resource name, as upstream names them. */
export function workloadResourceName(w: Workload): string {
  return w.uid;
}
export function serviceResourceName(s: Service): string {
  return `${s.namespace}/${s.hostname}`;
}
export function policyResourceName(p: Authorization): string {
  return `${p.namespace}/${p.name}`;
}

/** IP text → 4 or 16 network-order bytes. Throws on text that is not an IP (the model holds canonical IPs). */
export function ipBytes(text: string): Buffer {
  const ip = parseIp(text);
  if (ip === undefined) throw new Error(`'${text}' is not an IP address`);
  if (ip.family === 4) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(ip.w0 >>> 0);
    return b;
  }
  const b = Buffer.alloc(16);
  b.writeUInt32BE(ip.w0 >>> 0, 0);
  b.writeUInt32BE(ip.w1 >>> 0, 4);
  b.writeUInt32BE(ip.w2 >>> 0, 8);
  b.writeUInt32BE(ip.w3 >>> 0, 12);
  return b;
}

function cidrParts(cidr: string): { address: Buffer; length: number } {
  const slash = cidr.indexOf('/');
  return { address: ipBytes(cidr.slice(0, slash)), length: Number(cidr.slice(slash + 1)) };
}

const TUNNEL = { TCP: 'NONE', HBONE: 'HBONE' } as const;
const NETWORK_MODE = { Standard: 'STANDARD', HostNetwork: 'HOST_NETWORK' } as const;
const STATUS = { Healthy: 'HEALTHY', Unhealthy: 'UNHEALTHY' } as const;
const WORKLOAD_TYPE: Record<string, WireWorkload['workload_type']> = { deployment: 'DEPLOYMENT', cronjob: 'CRONJOB', pod: 'POD', job: 'JOB' };
const SCOPE: Record<string, 'REGION' | 'ZONE' | 'SUBZONE' | 'NODE' | 'CLUSTER' | 'NETWORK'> = {
  Region: 'REGION',
  Zone: 'ZONE',
  Subzone: 'SUBZONE',
  Node: 'NODE',
  Cluster: 'CLUSTER',
  Network: 'NETWORK',
};
const LB_MODE = { Standard: 'UNSPECIFIED_MODE', Strict: 'STRICT', Failover: 'FAILOVER', Passthrough: 'PASSTHROUGH' } as const;
const HEALTH_POLICY = { OnlyHealthy: 'ONLY_HEALTHY', AllowAll: 'ALLOW_ALL' } as const;
const IP_FAMILIES = { IPv4: 'IPV4_ONLY', IPv6: 'IPV6_ONLY', Dual: 'DUAL' } as const;
const VISIBILITY = { Public: 'PUBLIC', Namespace: 'NAMESPACE' } as const;
const AUTHZ_SCOPE = { Global: 'GLOBAL', Namespace: 'NAMESPACE', WorkloadSelector: 'WORKLOAD_SELECTOR' } as const;
const ACTION = { Allow: 'ALLOW', Deny: 'DENY' } as const;

function ports(map: PortMap): WireInit<WirePort>[] {
  return [...map].map(([service_port, target_port]) => ({ service_port, target_port }));
}

/** `network/IP` (the last slash splits: the network may be empty) or `namespace/hostname`. */
function gateway(g: GatewayAddress): WireInit<WireGatewayAddress> {
  const slash = g.destination.lastIndexOf('/');
  const left = g.destination.slice(0, slash);
  const right = g.destination.slice(slash + 1);
  if (parseIp(right) !== undefined) return { address: { network: left, address: ipBytes(right) }, hbone_mtls_port: g.hboneMtlsPort };
  return { hostname: { namespace: left, hostname: right }, hbone_mtls_port: g.hboneMtlsPort };
}

export function workloadToWire(w: Workload): WireInit<WireWorkload> {
  const services: Record<string, { ports: WireInit<WirePort>[] }> = {};
  for (const [key, map] of w.services) services[key] = { ports: ports(map) };
  return {
    uid: w.uid,
    name: w.name,
    namespace: w.namespace,
    addresses: w.workloadIps.map(ipBytes),
    hostname: w.hostname,
    network: w.network,
    tunnel_protocol: TUNNEL[w.protocol],
    trust_domain: w.trustDomain,
    service_account: w.serviceAccount,
    waypoint: w.waypoint ? gateway(w.waypoint) : null,
    network_gateway: w.networkGateway ? gateway(w.networkGateway) : null,
    node: w.node,
    canonical_name: w.canonicalName,
    canonical_revision: w.canonicalRevision,
    workload_type: WORKLOAD_TYPE[w.workloadType] ?? 'DEPLOYMENT',
    workload_name: w.workloadName,
    native_tunnel: w.nativeTunnel,
    application_tunnel: w.applicationTunnel ? { protocol: w.applicationTunnel.protocol, port: w.applicationTunnel.port ?? 0 } : null,
    services,
    authorization_policies: [...w.authorizationPolicies],
    status: STATUS[w.status],
    cluster_id: w.clusterId,
    locality: w.locality ? { ...w.locality } : null,
    network_mode: NETWORK_MODE[w.networkMode],
    capacity: { value: w.capacity },
  };
}

/** A Service without its endpoints: those travel in the workloads' `services` maps, as istiod sends them. */
export function serviceToWire(s: Service): WireInit<WireService> {
  const lb = s.loadBalancer;
  return {
    name: s.name,
    namespace: s.namespace,
    hostname: s.hostname,
    addresses: [
      ...s.vips.map((v) => ({ network: v.network, address: ipBytes(v.address) })),
      ...s.cidrVips.map((c) => ({ network: c.network, ...cidrParts(c.cidr) })),
    ],
    ports: ports(s.ports),
    subject_alt_names: [...s.subjectAltNames],
    waypoint: s.waypoint ? gateway(s.waypoint) : null,
    load_balancing: lb
      ? {
          routing_preference: lb.routingPreferences.map((r) => SCOPE[r] ?? 'UNSPECIFIED_SCOPE'),
          mode: LB_MODE[lb.mode],
          health_policy: HEALTH_POLICY[lb.healthPolicy],
        }
      : null,
    ip_families: s.ipFamilies ? IP_FAMILIES[s.ipFamilies] : 'AUTOMATIC',
    canonical: s.canonical,
    visibility: VISIBILITY[s.visibility],
  };
}

function stringMatch(m: StringMatch): WireInit<WireStringMatch> {
  switch (m.kind) {
    case 'Exact':
      return { exact: m.value };
    case 'Prefix':
      return { prefix: m.value };
    case 'Suffix':
      return { suffix: m.value };
    case 'Presence':
      return { presence: {} };
  }
}

function match(m: Match): WireInit<WireMatch> {
  return {
    namespaces: m.namespaces.map(stringMatch),
    not_namespaces: m.notNamespaces.map(stringMatch),
    principals: m.principals.map(stringMatch),
    not_principals: m.notPrincipals.map(stringMatch),
    service_accounts: m.serviceAccounts.map((s) => ({ ...s })),
    not_service_accounts: m.notServiceAccounts.map((s) => ({ ...s })),
    source_ips: m.sourceIps.map(cidrParts),
    not_source_ips: m.notSourceIps.map(cidrParts),
    destination_ips: m.destinationIps.map(cidrParts),
    not_destination_ips: m.notDestinationIps.map(cidrParts),
    destination_ports: [...m.destinationPorts],
    not_destination_ports: [...m.notDestinationPorts],
  };
}

export function authorizationToWire(p: Authorization): WireInit<WireAuthorization> {
  return {
    name: p.name,
    namespace: p.namespace,
    scope: AUTHZ_SCOPE[p.scope],
    action: ACTION[p.action],
    dry_run: p.dryRun,
    rules: p.rules.map((clauses) => ({ clauses: clauses.map((matches) => ({ matches: matches.map(match) })) })),
  };
}

/** The Any payload bytes of an Address resource holding this workload or service. */
export function workloadBytes(w: Workload): Uint8Array {
  return AddressCodec.encode({ workload: workloadToWire(w) });
}
export function serviceBytes(s: Service): Uint8Array {
  return AddressCodec.encode({ service: serviceToWire(s) });
}
export function authorizationBytes(p: Authorization): Uint8Array {
  return AuthorizationCodec.encode(authorizationToWire(p));
}
