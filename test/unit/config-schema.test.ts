// schema.ts: the model types derived from the zod schema keep the exact shapes other modules
// build and read (checked at compile time below), and validateWorkload / validateService /
// validateAuthorization check records in model form (as the xDS mapping builds them) with the
// same schema the YAML loader uses: a valid record passes, a bad one is named by key path.

import t from 'tap';
import { fileURLToPath } from 'node:url';
import { loadLocalConfigFile } from '../../src/config/local-config.js';
import { validateAuthorization, validateService, validateWorkload } from '../../src/config/schema.js';
import type * as M from '../../src/config/types.js';
import { buildMatch, buildPolicy, buildService, buildWorkload } from '../helpers/fixtures.js';

// ---- compile time: the derived types are exactly these shapes (what the rest of the code,
// src/xds/*-to-model.ts included, was written against). A schema change that alters a shape
// fails `tsc --noEmit -p .` here.

type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;

type HealthStatus = 'Healthy' | 'Unhealthy';
interface GatewayAddress {
  destination: string;
  hboneMtlsPort: number;
}
type PortMap = ReadonlyMap<number, number>;
interface Workload {
  uid: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  trustDomain: string;
  workloadIps: string[];
  hostname: string;
  network: string;
  protocol: 'TCP' | 'HBONE';
  networkMode: 'Standard' | 'HostNetwork';
  node: string;
  waypoint: GatewayAddress | undefined;
  networkGateway: GatewayAddress | undefined;
  nativeTunnel: boolean;
  applicationTunnel: { protocol: 'NONE' | 'PROXY'; port: number | undefined } | undefined;
  authorizationPolicies: string[];
  status: HealthStatus;
  clusterId: string;
  locality: { region: string; zone: string; subzone: string } | undefined;
  workloadName: string;
  workloadType: string;
  canonicalName: string;
  canonicalRevision: string;
  capacity: number;
  services: ReadonlyMap<string, PortMap>;
}
interface Endpoint {
  workloadUid: string;
  port: PortMap;
  status: HealthStatus;
}
interface Service {
  name: string;
  namespace: string;
  hostname: string;
  vips: { network: string; address: string }[];
  cidrVips: { network: string; cidr: string }[];
  ports: PortMap;
  endpoints: ReadonlyMap<string, Endpoint>;
  subjectAltNames: string[];
  waypoint: GatewayAddress | undefined;
  loadBalancer:
    | { routingPreferences: string[]; mode: 'Standard' | 'Strict' | 'Failover' | 'Passthrough'; healthPolicy: 'OnlyHealthy' | 'AllowAll' }
    | undefined;
  ipFamilies: 'Dual' | 'IPv4' | 'IPv6' | undefined;
  canonical: boolean;
  visibility: 'Public' | 'Namespace';
}
type StringMatch = { kind: 'Exact'; value: string } | { kind: 'Prefix'; value: string } | { kind: 'Suffix'; value: string } | { kind: 'Presence' };
interface ServiceAccountMatch {
  namespace: string;
  serviceAccount: string;
}
interface Match {
  namespaces: StringMatch[];
  notNamespaces: StringMatch[];
  principals: StringMatch[];
  notPrincipals: StringMatch[];
  serviceAccounts: ServiceAccountMatch[];
  notServiceAccounts: ServiceAccountMatch[];
  sourceIps: string[];
  notSourceIps: string[];
  destinationIps: string[];
  notDestinationIps: string[];
  destinationPorts: number[];
  notDestinationPorts: number[];
}
interface Authorization {
  name: string;
  namespace: string;
  scope: 'Global' | 'Namespace' | 'WorkloadSelector';
  action: 'Allow' | 'Deny';
  dryRun: boolean;
  rules: Match[][][];
}
interface LocalConfig {
  workloads: Workload[];
  services: Service[];
  policies: Authorization[];
}

type Routing = NonNullable<M.Service['loadBalancer']>['routingPreferences'][number];
const shapes: [
  Equals<M.HealthStatus, HealthStatus>,
  Equals<M.GatewayAddress, GatewayAddress>,
  Equals<M.PortMap, PortMap>,
  Equals<M.Endpoint, Endpoint>,
  Equals<M.StringMatch, StringMatch>,
  Equals<M.ServiceAccountMatch, ServiceAccountMatch>,
  Equals<M.Match, Match>,
  Equals<M.Authorization, Authorization>,
  Equals<M.Workload, Workload>,
  // routingPreferences is narrower than string[] (the allowed names): assignable, not equal.
  Equals<Omit<M.Service, 'loadBalancer'>, Omit<Service, 'loadBalancer'>>,
  Equals<Routing, 'Region' | 'Zone' | 'Subzone' | 'Node' | 'Cluster' | 'Network'>,
  M.Service extends Service ? true : false,
  M.LocalConfig extends LocalConfig ? true : false,
] = [true, true, true, true, true, true, true, true, true, true, true, true, true];

t.test('derived model types equal the shapes other modules use (compile time)', async (t) => {
  t.equal(shapes.length, 13);
});

// ---- model-form validation

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/local-config/${name}`, import.meta.url));

t.test('every record the YAML loader makes is valid in model form', async (t) => {
  for (const file of [fixture('full.yaml'), fileURLToPath(new URL('../../examples/localhost.yaml', import.meta.url))]) {
    const c = loadLocalConfigFile(file);
    for (const w of c.workloads) t.equal(validateWorkload(w), undefined, `${file}: workload ${w.uid}`);
    for (const s of c.services) t.equal(validateService(s), undefined, `${file}: service ${s.hostname}`);
    for (const p of c.policies) t.equal(validateAuthorization(p), undefined, `${file}: policy ${p.name}`);
  }
  t.equal(validateWorkload(buildWorkload({ waypoint: { destination: 'ns/wp.ns.svc', hboneMtlsPort: 15008 }, locality: { region: 'r', zone: 'z', subzone: '' } })), undefined);
});

t.test('validateWorkload: the problem with its key path', async (t) => {
  const cases: [Partial<M.Workload>, string][] = [
    [{ workloadIps: ['10.0.0.300'] }, "workloadIps[0]: '10.0.0.300' is not an IP address"],
    [{ workloadIps: ['::ffff:10.0.0.2'] }, "workloadIps[0]: '::ffff:10.0.0.2' is not in model form (the schema makes it '10.0.0.2')"],
    [{ protocol: 'UDP' as M.TunnelProtocol }, "protocol: expected one of TCP, HBONE, got string 'UDP'"],
    [{ capacity: -1 }, 'capacity: expected an integer (0-4294967295), got number -1'],
    [{ namespace: undefined as unknown as string }, "missing required key 'namespace'"],
    [{ uid: '' }, "uid: '' is not in model form (the schema makes it 'cluster1//v1/Pod/default/server')"],
    [{ serviceAccount: '' }, "serviceAccount: '' is not in model form (the schema makes it 'default')"],
    [{ waypoint: { destination: '/not-an-ip', hboneMtlsPort: 15008 } }, "waypoint.destination: '/not-an-ip' is neither network/IP nor namespace/hostname"],
    [{ authorizationPolicies: ['no-namespace'] }, "authorizationPolicies[0]: 'no-namespace' is not of the form namespace/name"],
    [{ services: new Map([['ns/s.ns.svc', new Map([[80, 70000]])]]) }, 'services["ns/s.ns.svc"][80]: expected a target port number (0-65535), got number 70000'],
    [{ services: new Map([['ns/s.ns.svc', new Map([[0, 80]])]]) }, 'services["ns/s.ns.svc"]: key \'0\' is not a port number (1-65535)'],
    [{ services: new Map([['no-slash', new Map()]]) }, "services: key 'no-slash' is not of the form namespace/hostname"],
    [{ colour: 'red' } as Partial<M.Workload>, "unknown key 'colour' (allowed: uid, name"],
  ];
  for (const [override, want] of cases) {
    const got = validateWorkload(buildWorkload(override));
    t.ok(got?.startsWith(want), `${JSON.stringify(override, (_k, v: unknown) => (v instanceof Map ? [...v] : v))}\n  got:  ${got}\n  want: ${want}…`);
  }
});

t.test('validateService: the problem with its key path', async (t) => {
  const good = buildService({
    vips: [{ network: '', address: '10.96.0.1' }, { network: 'net1', address: 'fd00::1' }],
    cidrVips: [{ network: '', cidr: '10.97.0.0/16' }],
    ports: new Map([[80, 8080]]),
    endpoints: new Map([['u1', { workloadUid: 'u1', port: new Map([[80, 9080]]), status: 'Unhealthy' }]]),
    subjectAltNames: ['spiffe://cluster.local/ns/default/sa/server'],
    loadBalancer: { routingPreferences: ['Zone'], mode: 'Failover', healthPolicy: 'AllowAll' },
    ipFamilies: 'Dual',
  });
  t.equal(validateService(good), undefined);
  const cases: [Partial<M.Service>, string][] = [
    [{ vips: [{ network: '', address: '10.96.0.300' }] }, "vips[0]: '/10.96.0.300' is not of the form network/IP"],
    [{ vips: [{ network: '', address: 'FD00::1' }] }, "vips[0].address: 'FD00::1' is not in model form (the schema makes it 'fd00::1')"],
    [{ cidrVips: [{ network: '', cidr: '10.0.0.0/33' }] }, "cidrVips[0].cidr: '10.0.0.0/33' is not a CIDR"],
    [{ endpoints: new Map([['u1', { workloadUid: 'u2', port: new Map(), status: 'Healthy' as const }]]) }, "endpoints.u1.workloadUid: 'u2' differs from its key 'u1'"],
    [{ subjectAltNames: ['cluster.local/ns/a/sa/b'] }, "subjectAltNames[0]: 'cluster.local/ns/a/sa/b' is not a SPIFFE URI"],
    [{ visibility: 'Private' as M.Service['visibility'] }, 'visibility: expected one of Public, Namespace'],
    [{ hostname: 7 as unknown as string }, 'hostname: expected a string, got number 7'],
  ];
  for (const [override, want] of cases) {
    const got = validateService(buildService(override));
    t.ok(got?.startsWith(want), `got:  ${got}\n  want: ${want}…`);
  }
});

t.test('validateAuthorization: the problem with its key path', async (t) => {
  const good = buildPolicy([
    [
      [
        buildMatch({
          principals: [{ kind: 'Exact', value: 'cluster.local/ns/a/sa/b' }],
          notNamespaces: [{ kind: 'Presence' }, { kind: 'Prefix', value: 'kube-' }],
          serviceAccounts: [{ namespace: 'a', serviceAccount: 'b' }],
          sourceIps: ['10.0.0.0/8', '::1/128'],
          destinationPorts: [8080],
        }),
      ],
    ],
  ]);
  t.equal(validateAuthorization(good), undefined);
  const cases: [M.Authorization, string][] = [
    [buildPolicy([[[buildMatch({ sourceIps: ['10.0.0.0/40'] })]]]), "rules[0][0][0].sourceIps[0]: '10.0.0.0/40' is not a CIDR"],
    [buildPolicy([[[buildMatch({ sourceIps: ['10.1.2.3'] })]]]), "rules[0][0][0].sourceIps[0]: '10.1.2.3' is not in model form (the schema makes it '10.1.2.3/32')"],
    [buildPolicy([[[buildMatch({ destinationPorts: [0] })]]]), 'rules[0][0][0].destinationPorts[0]: expected a port number (1-65535), got number 0'],
    [buildPolicy([[[buildMatch({ principals: [{ kind: 'Exact', value: 5 as unknown as string }] })]]]), 'rules[0][0][0].principals[0].Exact: expected a string, got number 5'],
    [buildPolicy([], { scope: 'Cluster' as M.Authorization['scope'] }), 'scope: expected one of Global, Namespace, WorkloadSelector'],
  ];
  for (const [policy, want] of cases) {
    const got = validateAuthorization(policy);
    t.ok(got?.startsWith(want), `got:  ${got}\n  want: ${want}…`);
  }
});
