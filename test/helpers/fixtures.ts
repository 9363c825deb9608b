// Builders of complete local-config records (Workload, Service, Match, Authorization) for
// tests: every field set to a fixed value, the caller overrides only what its case is about.
// Pure; the default arrays and maps are new on every call, so results never share them.
// Must never be imported by src/ or bench/: the product build (tsconfig.build.json, the
// Dockerfile) does not contain test/.
// The defaults are test data, not the parser's defaults: a test that asserts what
// parseLocalConfig fills in spells the expected record out instead of using these.

import type { Authorization, Match, Service, Workload } from '../../src/config/types.js';

/** An HBONE server pod `default/server` on node-a with IP 10.0.0.2. */
export function buildWorkload(overrides: Partial<Workload> = {}): Workload {
  return {
    uid: 'cluster1//v1/Pod/default/server',
    name: 'server',
    namespace: 'default',
    serviceAccount: 'server',
    trustDomain: 'cluster.local',
    workloadIps: ['10.0.0.2'],
    hostname: '',
    network: '',
    protocol: 'HBONE',
    networkMode: 'Standard',
    node: 'node-a',
    waypoint: undefined,
    networkGateway: undefined,
    nativeTunnel: false,
    applicationTunnel: undefined,
    authorizationPolicies: [],
    status: 'Healthy',
    clusterId: 'cluster1',
    locality: undefined,
    workloadName: 'server',
    workloadType: 'deployment',
    canonicalName: 'server',
    canonicalRevision: 'latest',
    capacity: 1,
    services: new Map(),
    ...overrides,
  };
}

/** Service `default/server` with no VIPs, ports or endpoints. */
export function buildService(overrides: Partial<Service> = {}): Service {
  return {
    name: 'server',
    namespace: 'default',
    hostname: 'server.default.svc.cluster.local',
    vips: [],
    cidrVips: [],
    ports: new Map(),
    endpoints: new Map(),
    subjectAltNames: [],
    waypoint: undefined,
    loadBalancer: undefined,
    ipFamilies: undefined,
    canonical: false,
    visibility: 'Public',
    ...overrides,
  };
}

/** Every group empty unless overridden. */
export function buildMatch(overrides: Partial<Match> = {}): Match {
  return {
    namespaces: [],
    notNamespaces: [],
    principals: [],
    notPrincipals: [],
    serviceAccounts: [],
    notServiceAccounts: [],
    sourceIps: [],
    notSourceIps: [],
    destinationIps: [],
    notDestinationIps: [],
    destinationPorts: [],
    notDestinationPorts: [],
    ...overrides,
  };
}

/** An enforced Namespace-scoped Deny policy `default/p` with the given rules. */
export function buildPolicy(rules: Match[][][], overrides: Partial<Omit<Authorization, 'rules'>> = {}): Authorization {
  return { name: 'p', namespace: 'default', scope: 'Namespace', action: 'Deny', dryRun: false, ...overrides, rules };
}
