// src/xds/address-to-model.ts and authorization-to-model.ts: the resources of the wire fixtures
// (test/fixtures/istio-wire) map to exactly the records parseLocalConfig makes from the same
// mesh written as YAML, and malformed resources give error values naming resource and field.

import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { parseLocalConfig } from '../../src/config/local-config.js';
import type { Authorization, Service, Workload } from '../../src/config/types.js';
import { addressBytesToModel, addressToModel, type AddressModel } from '../../src/xds/address-to-model.js';
import { authorizationBytesToModel, authorizationToModel } from '../../src/xds/authorization-to-model.js';
import { AddressCodec, AuthorizationCodec, DeltaDiscoveryResponseCodec } from '../../src/xds/protos.js';
import { resourceErrorText, type Mapped, type ResourceError } from '../../src/xds/resource-error.js';
import type { WireAddress, WireAuthorization, WireInit } from '../../src/xds/wire-types.js';

const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/istio-wire');
const response = (name: string) => DeltaDiscoveryResponseCodec.decode(fs.readFileSync(path.join(FIXTURES, `${name}.bin`)));

// The mesh of delta-response-addresses + delta-response-authorizations, as a local config file.
const YAML = `
workloads:
  - uid: Kubernetes//Pod/default/productpage-v1-7d6cfb7dfd-x2w9k
    name: productpage-v1-7d6cfb7dfd-x2w9k
    namespace: default
    workloadIps: [10.244.1.12, "fd00:10:244:1::c"]
    network: network1
    protocol: HBONE
    trustDomain: cluster.local
    serviceAccount: bookinfo-productpage
    node: worker-1
    canonicalName: productpage
    canonicalRevision: v1
    workloadType: pod
    workloadName: productpage-v1
    authorizationPolicies: [default/productpage-deny-external]
    clusterId: Kubernetes
    services:
      default/productpage.default.svc.cluster.local: {9080: 9080}
    locality: {region: us-east1, zone: us-east1-b, subzone: ""}
  - uid: Kubernetes//Pod/legacy/mysql-0
    name: mysql-0
    namespace: legacy
    workloadIps: [10.244.2.7]
    serviceAccount: mysql
    node: worker-2
    canonicalName: mysql
    canonicalRevision: latest
    workloadType: pod
    workloadName: mysql-0
    clusterId: Kubernetes
    services:
      legacy/mysql.legacy.svc.cluster.local: {3306: 3306}
    locality: {region: us-east1, zone: us-east1-c, subzone: ""}
services:
  - name: productpage
    namespace: default
    hostname: productpage.default.svc.cluster.local
    vips: [network1/10.96.120.15]
    ports: {9080: 9080}
    subjectAltNames: [spiffe://cluster.local/ns/default/sa/bookinfo-productpage]
    loadBalancer: {routingPreferences: [Network, Region, Zone], mode: Failover}
  - name: reviews
    namespace: default
    hostname: reviews.default.svc.cluster.local
    vips: [network1/10.96.33.7, "network1/fd00:10:96::2107"]
    ports: {9080: 9080}
    waypoint: {destination: default/waypoint.default.svc.cluster.local, hboneMtlsPort: 15008}
    ipFamilies: Dual
  - name: external-db
    namespace: legacy
    hostname: db.example.com
    vips: []
    cidrVips: [{network: network1, cidr: 192.168.50.0/24}]
    ports: {5432: 5432}
policies:
  - name: allow-sleep
    namespace: default
    scope: Namespace
    action: Allow
    rules:
      - [[{principals: [{Exact: cluster.local/ns/default/sa/sleep}]}], [{destinationPorts: [9080]}]]
      - [[{namespaces: [{Prefix: bookinfo-}]}, {serviceAccounts: [{namespace: frontend, serviceAccount: web}]}]]
  - name: productpage-deny-external
    namespace: default
    scope: WorkloadSelector
    action: Deny
    dryRun: true
    rules:
      - [[{notSourceIps: [10.244.0.0/16, "fd00:10:244::/48"]}]]
  - name: deny-sandbox
    namespace: istio-system
    scope: Global
    action: Deny
    rules:
      - [[{namespaces: [{Suffix: -sandbox}]}], [{principals: [{Presence: []}]}], [{notDestinationPorts: [15020, 15021]}]]
`;

function ok<T>(t: Test, m: Mapped<T>, what: string): T {
  if (!m.ok) {
    t.fail(`${what}: ${resourceErrorText(m.error)}`);
    throw new Error(resourceErrorText(m.error));
  }
  return m.value;
}

function err<T>(m: Mapped<T>): ResourceError | undefined {
  return m.ok ? undefined : m.error;
}

/** Endpoints from workloads' `services` maps, the join parseLocalConfig makes (the state layer's job for xDS). */
function withEndpoints(service: Service, workloads: readonly Workload[]): Service {
  const endpoints = new Map(service.endpoints);
  for (const w of workloads) {
    const port = w.services.get(`${service.namespace}/${service.hostname}`);
    if (port) endpoints.set(w.uid, { workloadUid: w.uid, port, status: w.status });
  }
  return { ...service, endpoints };
}

t.test('the fixture Address resources map to what the YAML loader makes of the same mesh', async (t) => {
  const yaml = parseLocalConfig(YAML, 'equivalent.yaml');
  const res = response('delta-response-addresses');
  const mapped: AddressModel[] = res.resources.map((r) => ok(t, addressBytesToModel(r.name, r.resource!.value), r.name));
  const workloads = mapped.flatMap((m) => (m.kind === 'workload' ? [m.workload] : []));
  const services = mapped.flatMap((m) => (m.kind === 'service' ? [m.service] : []));
  t.equal(workloads.length, 2);
  t.equal(services.length, 3);
  t.strictSame(workloads, yaml.workloads, 'workloads');
  for (const s of services) t.same(s.endpoints.size, 0, `${s.name}: endpoints are not in the Address resource`);
  t.strictSame(
    services.map((s) => withEndpoints(s, workloads)),
    yaml.services,
    'services (endpoints joined from the workloads as the loader does)',
  );
  // A few facts spelled out, so a shared mistake in both paths would still show.
  const [pod, mysql] = workloads;
  t.strictSame(pod?.workloadIps, ['10.244.1.12', 'fd00:10:244:1::c']);
  t.equal(pod?.protocol, 'HBONE');
  t.equal(mysql?.protocol, 'TCP');
  t.equal(pod?.workloadType, 'pod');
  t.equal(pod?.capacity, 1);
  t.strictSame(services[1]?.waypoint, { destination: 'default/waypoint.default.svc.cluster.local', hboneMtlsPort: 15008 });
  t.strictSame(services[2]?.cidrVips, [{ network: 'network1', cidr: '192.168.50.0/24' }]);
  t.ok(Object.isFrozen(pod) && Object.isFrozen(pod?.workloadIps), 'frozen like the loader output');
});

t.test('the fixture Authorization resources map to what the YAML loader makes of the same policies', async (t) => {
  const yaml = parseLocalConfig(YAML, 'equivalent.yaml');
  const res = response('delta-response-authorizations');
  const policies: Authorization[] = res.resources.map((r) => ok(t, authorizationBytesToModel(r.name, r.resource!.value), r.name));
  t.strictSame(policies, yaml.policies);
  t.strictSame(policies[1]?.rules[0]?.[0]?.[0]?.notSourceIps, ['10.244.0.0/16', 'fd00:10:244::/48']);
  t.strictSame(policies[2]?.rules[0]?.[1]?.[0]?.principals, [{ kind: 'Presence' }]);
  t.ok(Object.isFrozen(policies[0]?.rules[0]));
});

// ------------------------------------------------------------------ malformed resources

const NAME = 'Kubernetes//Pod/default/p';
const goodWorkload = (): WireInit<WireAddress> => ({
  workload: { uid: NAME, name: 'p', namespace: 'default', addresses: [Buffer.from([10, 0, 0, 1])], tunnel_protocol: 'HBONE' },
});
/** Encodes then decodes, so every case goes through the real wire form. */
const viaWire = (init: WireInit<WireAddress>): WireAddress => AddressCodec.decode(AddressCodec.encode(init));

t.test('a good minimal workload, defaults as the loader', async (t) => {
  const m = ok(t, addressToModel(NAME, viaWire(goodWorkload())), NAME);
  t.equal(m.kind, 'workload');
  if (m.kind !== 'workload') return;
  t.equal(m.workload.serviceAccount, 'default');
  t.equal(m.workload.trustDomain, 'cluster.local');
  t.equal(m.workload.workloadType, 'deployment', 'DEPLOYMENT is 0: absent on the wire');
  t.equal(m.workload.status, 'Healthy');
  t.equal(m.workload.locality, undefined);
  const mapped = ok(t, addressToModel(NAME, viaWire({ workload: { ...goodWorkload().workload, addresses: [Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 9])], capacity: { value: 3 } } })), NAME);
  t.strictSame(mapped.kind === 'workload' && mapped.workload.workloadIps, ['10.0.0.9'], 'an IPv4-mapped address becomes IPv4');
  t.equal(mapped.kind === 'workload' && mapped.workload.capacity, 3);
});

/** Every object reachable from `v` (through objects, arrays and Map keys/values) is frozen. */
function deeplyFrozen(v: unknown, path = '$'): string | undefined {
  if (v === null || typeof v !== 'object' || Buffer.isBuffer(v)) return undefined;
  if (!Object.isFrozen(v)) return path;
  const children: [string, unknown][] = v instanceof Map ? [...v].map(([k, x]) => [`${path}.get(${String(k)})`, x]) : Object.entries(v).map(([k, x]) => [`${path}.${k}`, x]);
  for (const [p, x] of children) {
    const bad = deeplyFrozen(x, p);
    if (bad) return bad;
  }
  return undefined;
}

t.test('a workload with every field set maps to a deeply frozen record', async (t) => {
  const gw = { address: { network: 'n', address: Buffer.from([10, 0, 0, 7]) }, hbone_mtls_port: 15009 };
  const m = ok(
    t,
    addressToModel(
      NAME,
      viaWire({
        workload: {
          ...goodWorkload().workload,
          addresses: [Buffer.from([10, 0, 0, 1]), Buffer.from([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])],
          waypoint: gw,
          network_gateway: { hostname: { namespace: 'gw', hostname: 'east.gw' }, hbone_mtls_port: 0 },
          application_tunnel: { protocol: 'PROXY', port: 15088 },
          services: { 'default/a.default.svc': { ports: [{ service_port: 80, target_port: 8080 }] }, 'default/b.default.svc': { ports: [] } },
          authorization_policies: ['default/p'],
          locality: { region: 'r', zone: 'z', subzone: 's' },
          capacity: { value: 2 },
        },
      }),
    ),
    NAME,
  );
  t.equal(m.kind, 'workload');
  t.equal(m.kind === 'workload' && deeplyFrozen(m.workload), undefined, 'nothing reachable is left mutable');
  if (m.kind === 'workload') {
    t.strictSame(m.workload.workloadIps, ['10.0.0.1', 'fd00::1']);
    t.equal(m.workload.waypoint?.destination, 'n/10.0.0.7');
    t.equal(m.workload.services.get('default/a.default.svc')?.get(80), 8080);
  }
});

t.test('malformed Address resources give an error naming the resource and the field', async (t) => {
  const w = goodWorkload().workload!;
  const cases: [string, WireInit<WireAddress>, string, RegExp][] = [
    ['5-byte IP', { workload: { ...w, addresses: [Buffer.from([10, 0, 0, 1, 2])] } }, 'workload.addresses[0]', /^failed to parse address, had 5 bytes$/],
    ['second IP empty', { workload: { ...w, addresses: [Buffer.from([10, 0, 0, 1]), Buffer.alloc(0)] } }, 'workload.addresses[1]', /had 0 bytes/],
    ['unknown tunnel protocol', { workload: { ...w, tunnel_protocol: 7 as never } }, 'workload.tunnel_protocol', /unsupported value 7/],
    ['legacy mTLS', { workload: { ...w, tunnel_protocol: 'LEGACY_ISTIO_MTLS' } }, 'workload.tunnel_protocol', /not supported/],
    ['unknown status', { workload: { ...w, status: 9 as never } }, 'workload.status', /unsupported value 9/],
    ['missing uid', { workload: { ...w, uid: '' } }, 'workload.uid', /missing/],
    ['missing namespace', { workload: { ...w, namespace: '' } }, 'workload.namespace', /missing/],
    ['bad services key', { workload: { ...w, services: { nohostname: { ports: [] } } } }, 'workload.services["nohostname"]', /namespace\/hostname/],
    [
      'service port 0',
      { workload: { ...w, services: { 'ns/h': { ports: [{ service_port: 0, target_port: 80 }] } } } },
      'workload.services["ns/h"].ports[0].service_port',
      /not a port/,
    ],
    [
      'waypoint without destination',
      { workload: { ...w, waypoint: { hbone_mtls_port: 15008 } } },
      'workload.waypoint',
      /neither hostname nor address/,
    ],
    [
      'waypoint with bad IP',
      { workload: { ...w, waypoint: { address: { network: '', address: Buffer.from([1, 2, 3]) } } } },
      'workload.waypoint.address.address',
      /had 3 bytes/,
    ],
    ['missing service name', { service: { namespace: 'ns', hostname: 'h.ns.svc' } }, 'service.name', /missing/],
    ['missing hostname', { service: { name: 'h', namespace: 'ns' } }, 'service.hostname', /missing/],
    [
      'CIDR VIP /40 on IPv4',
      { service: { name: 'h', namespace: 'ns', hostname: 'h', addresses: [{ network: '', address: Buffer.from([10, 0, 0, 0]), length: 40 }] } },
      'service.addresses[0].length',
      /40 is not a prefix length/,
    ],
    [
      'duplicate service port',
      { service: { name: 'h', namespace: 'ns', hostname: 'h', ports: [{ service_port: 80, target_port: 8080 }, { service_port: 80, target_port: 9090 }] } },
      'service.ports[1].service_port',
      /appears twice/,
    ],
    [
      'unknown routing preference',
      { service: { name: 'h', namespace: 'ns', hostname: 'h', load_balancing: { routing_preference: ['UNSPECIFIED_SCOPE'] } } },
      'service.load_balancing.routing_preference[0]',
      /unsupported value 'UNSPECIFIED_SCOPE'/,
    ],
    [
      'weighted waypoints',
      { service: { name: 'h', namespace: 'ns', hostname: 'h', weighted_waypoints: [{ weight: 1 }] } },
      'service.weighted_waypoints',
      /not supported/,
    ],
    ['neither workload nor service', {}, 'type', /neither workload nor service/],
  ];
  for (const [what, init, field, reason] of cases) {
    const e = err(addressToModel(NAME, viaWire(init)));
    t.equal(e?.resource, NAME, `${what}: resource`);
    t.equal(e?.field, field, `${what}: field`);
    t.match(e?.reason, reason, `${what}: reason`);
  }
  const bad = err(addressToModel(NAME, viaWire({ workload: { ...w, addresses: [Buffer.from([10, 0, 0, 1, 2])] } })));
  t.equal(bad && resourceErrorText(bad), `${NAME}: workload.addresses[0]: failed to parse address, had 5 bytes`, 'the NACK text');
  const garbage = err(addressBytesToModel(NAME, Uint8Array.from([0x0a, 0x09, 0x28])));
  t.equal(garbage?.field, '(message)');
  t.match(garbage?.reason, /cannot decode istio\.workload\.Address/);
});

t.test('malformed Authorization resources give an error naming the resource and the field', async (t) => {
  const P = 'default/p';
  const base = (m: WireInit<WireAuthorization>['rules']): WireInit<WireAuthorization> => ({ name: 'p', namespace: 'default', action: 'DENY', rules: m });
  const rule = (match: object): WireInit<WireAuthorization>['rules'] => [{ clauses: [{ matches: [match] }] }];
  const via = (init: WireInit<WireAuthorization>): WireAuthorization => AuthorizationCodec.decode(AuthorizationCodec.encode(init));
  const m0 = 'rules[0].clauses[0].matches[0]';
  const cases: [string, WireInit<WireAuthorization>, string, RegExp][] = [
    ['missing name', { ...base([]), name: '' }, 'name', /missing/],
    ['missing namespace', { ...base([]), namespace: '' }, 'namespace', /missing/],
    ['unknown action', { ...base([]), action: 5 as never }, 'action', /unsupported value 5/],
    ['unknown scope', { ...base([]), scope: 3 as never }, 'scope', /unsupported value 3/],
    ['empty string match', base(rule({ principals: [{}] })), `${m0}.principals[0]`, /no match type/],
    ['3-byte source IP', base(rule({ source_ips: [{ address: Buffer.from([10, 0, 0]), length: 8 }] })), `${m0}.source_ips[0].address`, /had 3 bytes/],
    ['prefix 33', base(rule({ destination_ips: [{ address: Buffer.from([10, 0, 0, 0]), length: 33 }] })), `${m0}.destination_ips[0].length`, /33 is not a prefix length/],
    ['port 0', base(rule({ destination_ports: [0] })), `${m0}.destination_ports[0]`, /not a port/],
    ['port 70000', base(rule({ not_destination_ports: [70000] })), `${m0}.not_destination_ports[0]`, /not a port/],
    ['policy extensions', { ...base([]), extensions: [{ name: 'x' }] }, 'extensions', /not supported/],
    ['match extensions', base(rule({ extensions: [{ name: 'x' }] })), `${m0}.extensions`, /not supported/],
  ];
  for (const [what, init, field, reason] of cases) {
    const e = err(authorizationToModel(P, via(init)));
    t.equal(e?.resource, P, `${what}: resource`);
    t.equal(e?.field, field, `${what}: field`);
    t.match(e?.reason, reason, `${what}: reason`);
  }
  const zero = ok(t, authorizationToModel(P, via(base(rule({ source_ips: [{ address: Buffer.from([10, 1, 2, 3]), length: 0 }] })))), P);
  t.strictSame(zero.rules[0]?.[0]?.[0]?.sourceIps, ['10.1.2.3/0'], 'length 0 is /0 (a plain uint32, as upstream)');
});
